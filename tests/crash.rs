//! Crash durability over real TCP: a JetStream server process is killed with SIGKILL while
//! four publishers (async-nats JetStream client, up to 64 acks in flight each) are mid-stream,
//! then restarted on the same store, several times over. Every acknowledged message must come
//! back at its acknowledged sequence with its exact payload, stored messages must be exactly
//! ones that were sent, each publisher's messages in publish order, no sequence handed out
//! twice, and the stream definition intact.
//!
//! A SIGKILL loses nothing the kernel already has, so this checks the acknowledgement protocol
//! (ack only after the store wrote and synced) and recovery of a store left mid-write; power
//! loss (unsynced data lost, torn writes) is covered by `streams/tests/model.rs` with SimFs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream, Context};
use bytes::Bytes;
use common::{is_natter, temp_dir, Server};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

const STREAM: &str = "CRASH";
const PUBLISHERS: u32 = 4;
const IN_FLIGHT: usize = 64;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

/// The store directory, removed on drop (the harness removes only the server's own directory),
/// and the `sync_interval` the server runs with (`None`: the default, fsync before every ack).
struct Store(std::path::PathBuf, Option<&'static str>);

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(store: &Store) -> Server {
    let config = store
        .1
        .map(|every| format!("jetstream {{ sync_interval: \"{every}\" }}"));
    Server::start_with(
        config.as_deref(),
        &["-js", "-sd", store.0.to_str().unwrap()],
    )
}

async fn connect(server: &Server) -> Context {
    let client = within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect");
    jetstream::new(client)
}

fn kill(server: &mut Server) {
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
    server
        .wait_exit(Duration::from_secs(5))
        .expect("killed server exits");
}

fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        description: Some("crash test".into()),
        subjects: vec!["crash.>".into()],
        storage: stream::StorageType::File,
        max_message_size: 8192,
        max_messages_per_subject: 1_000_000,
        ..Default::default()
    }
}

/// Who sent a message: round, publisher, index within the publisher's run.
type Id = (u32, u32, u64);

/// A payload that names its sender and whose every byte follows from that name, so a stored
/// message can be checked byte for byte without remembering what was sent.
fn payload(id: Id) -> Bytes {
    let (round, task, i) = id;
    let mut p = format!("{round}:{task}:{i}:").into_bytes();
    let len = 16 + (i as usize * 37 + task as usize * 101) % 700;
    let mut x = (round as u64) << 40 ^ (task as u64) << 32 ^ i;
    while p.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        p.push((x >> 56) as u8);
    }
    p.into()
}

fn parse_id(p: &[u8]) -> Option<Id> {
    let mut it = p.splitn(4, |&c| c == b':');
    let mut num = || std::str::from_utf8(it.next()?).ok()?.parse::<u64>().ok();
    Some((num()? as u32, num()? as u32, num()?))
}

fn subject(task: u32) -> String {
    format!("crash.t{task}")
}

#[derive(Default)]
struct Acked {
    /// Acknowledged sequence -> sender.
    by_seq: BTreeMap<u64, Id>,
}

/// Publishes from `PUBLISHERS` tasks (each up to `IN_FLIGHT` unacknowledged) and SIGKILLs the
/// server as the `kill_after`-th acknowledgement arrives; returns what was acknowledged.
async fn publish_and_kill(server: &mut Server, round: u32, kill_after: u64) -> Vec<(u64, Id)> {
    let js = connect(server).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(tokio::sync::Notify::new());
    let pid = server.pid() as i32;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..PUBLISHERS {
        let (js, acked, count, killed) = (js.clone(), acked.clone(), count.clone(), killed.clone());
        tasks.spawn(async move {
            let mut inflight = FuturesUnordered::new();
            let mut i = 0u64;
            loop {
                while inflight.len() < IN_FLIGHT {
                    let id = (round, task, i);
                    let Ok(ack) = js.publish(subject(task), payload(id)).await else {
                        return;
                    };
                    inflight.push(async move { (id, ack.await) });
                    i += 1;
                }
                match inflight.next().await {
                    Some((id, Ok(ack))) => {
                        assert_eq!(ack.stream, STREAM);
                        acked.lock().unwrap().push((ack.sequence, id));
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                            let pid = nix::unistd::Pid::from_raw(pid);
                            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                            killed.notify_one();
                        }
                    }
                    Some((_, Err(_))) | None => return,
                }
            }
        });
    }
    within("kill point", killed.notified()).await;
    // Acks the server sent before it died may still be in the socket: take them too.
    tokio::time::sleep(Duration::from_millis(150)).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    server
        .wait_exit(Duration::from_secs(5))
        .expect("killed server exits");
    let got = acked.lock().unwrap().clone();
    assert!(got.len() as u64 >= kill_after);
    got
}

/// Checks the restarted server's stream against everything acknowledged so far; returns the
/// stream's last sequence.
async fn verify(js: &Context, acked: &Acked) -> u64 {
    let mut s = within("get stream", js.get_stream(STREAM))
        .await
        .expect("stream survived");
    let info = within("info", s.info()).await.expect("info").clone();
    let want = stream_config();
    let c = &info.config;
    assert_eq!(
        (
            &c.name,
            &c.description,
            &c.subjects,
            c.storage,
            c.max_message_size,
            c.max_messages_per_subject
        ),
        (
            &want.name,
            &want.description,
            &want.subjects,
            want.storage,
            want.max_message_size,
            want.max_messages_per_subject
        ),
        "stream definition survived"
    );
    let st = info.state;
    if let Some((&max, _)) = acked.by_seq.iter().next_back() {
        assert!(
            st.last_sequence >= max,
            "last seq {} < acked {max}",
            st.last_sequence
        );
    }
    if st.messages == 0 {
        assert!(acked.by_seq.is_empty());
        return st.last_sequence;
    }
    // Nothing is ever deleted here, and a killed process loses nothing the kernel had: the
    // stored sequences are contiguous.
    assert_eq!(st.first_sequence, 1);
    assert_eq!(st.messages, st.last_sequence, "holes in the stream");
    let stored: Vec<(u64, Id)> = futures::stream::iter(1..=st.last_sequence)
        .map(|seq| {
            let s = s.clone();
            async move {
                let m = within("get", s.get_raw_message(seq))
                    .await
                    .unwrap_or_else(|e| panic!("seq {seq} unreadable: {e}"));
                assert_eq!(m.sequence, seq);
                let id = parse_id(&m.payload)
                    .unwrap_or_else(|| panic!("seq {seq}: not a payload we sent"));
                assert_eq!(m.payload, payload(id), "seq {seq}: payload differs");
                assert_eq!(m.subject.as_str(), subject(id.1), "seq {seq}: subject");
                (seq, id)
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    // Each acknowledged message is stored at its acknowledged sequence.
    let at: HashMap<u64, Id> = stored.iter().copied().collect();
    for (seq, id) in &acked.by_seq {
        assert_eq!(
            at.get(seq),
            Some(id),
            "acknowledged seq {seq} lost or changed"
        );
    }
    // Each message stored once, each publisher's messages in publish order.
    let mut last: HashMap<(u32, u32), u64> = HashMap::new();
    for (seq, (round, task, i)) in stored {
        if let Some(prev) = last.insert((round, task), i) {
            assert!(
                i > prev,
                "seq {seq}: publisher {round}/{task} message {i} after {prev}"
            );
        }
    }
    st.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_publish_loses_no_acknowledged_message() {
    sigkill_rounds(None).await;
}

/// Syncing on an interval (as nats-server does), natter still acknowledges only what it has
/// written (the publisher writes its own batch, then acks it), so a SIGKILL loses nothing
/// acknowledged either; only a power cut can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_interval_sync_mode_loses_no_acknowledged_message() {
    sigkill_rounds(Some("2m")).await;
}

async fn sigkill_rounds(sync_interval: Option<&'static str>) {
    let started = std::time::Instant::now();
    let store = Store(temp_dir(), sync_interval);
    let mut acked = Acked::default();

    // Kill right after the stream is created: the definition alone must survive.
    let mut server = start(&store);
    let js = connect(&server).await;
    within("create", js.create_stream(stream_config()))
        .await
        .expect("create");
    kill(&mut server);
    drop(server);

    for (round, kill_after) in [1u64, 40, 700, 3000].into_iter().enumerate() {
        let mut server = start(&store);
        let js = connect(&server).await;
        let last = verify(&js, &acked).await;
        let got = publish_and_kill(&mut server, round as u32, kill_after).await;
        eprintln!(
            "round {round}: killed after {kill_after} acks, {} acknowledged in all",
            got.len()
        );
        for (seq, id) in got {
            assert!(
                seq > last,
                "seq {seq} reused: the restarted stream already ended at {last}"
            );
            assert!(
                acked.by_seq.insert(seq, id).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
        drop(server);
    }

    // A final restart: everything is there and the next publish continues after it.
    let server = start(&store);
    let js = connect(&server).await;
    let last = verify(&js, &acked).await;
    let ack = within("publish", async {
        js.publish(subject(0), payload((99, 0, 0)))
            .await
            .unwrap()
            .await
    })
    .await
    .expect("publish after restarts");
    assert_eq!(ack.sequence, last + 1);
    assert!(ack.sequence > *acked.by_seq.keys().next_back().unwrap());
    if is_natter() {
        // Recovery of a store left mid-write is silent about torn writes but loud about damage.
        assert!(
            !server.output("stderr").contains("corrupt"),
            "{}",
            server.output("stderr")
        );
    }
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
