//! A file stream at the server's `max_file_store`: publishes past it get JetStream's
//! insufficient-resources error (503, 10023, as nats-server 2.15.1 answers), what is stored stays
//! intact (also across a restart), core pub/sub keeps working meanwhile, and a purge frees the
//! space for publishing to resume. `NATTER_TEST_SERVER=.venv/bin/nats-server` runs the same
//! tests against nats-server.
//!
//! A real full disk is made too: a 1 MiB tmpfs (mounting needs root; without it that test says
//! so and skips, unless `NATTER_REQUIRE_MOUNT` is set, as `make test` sets it). The store's
//! ENOSPC handling at every point of a write is covered with a simulated disk in
//! `streams/tests/store.rs` (`disk_full_fails_appends_and_recovers_when_space_frees` and
//! `segment_created_by_a_failed_append_is_durable_before_later_acks`).

mod common;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::{temp_dir, Server};
use futures::StreamExt;
use serde_json::{json, Value};

const LIMIT: u64 = 64 * 1024;
const PAYLOAD: usize = 1000;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

/// The store directory, removed on drop (the harness removes only the server's own directory).
struct Store(std::path::PathBuf);

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(store: &Store) -> Server {
    Server::with_config(&format!(
        "jetstream {{ store_dir: \"{}\", max_file_store: 64KB }}\n",
        store.0.display()
    ))
}

async fn connect(server: &Server) -> async_nats::Client {
    within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect")
}

async fn request(c: &async_nats::Client, subject: &str, body: impl Into<Bytes>) -> Value {
    let r = within(subject, c.request(subject.to_string(), body.into()))
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&r.payload).expect("JSON reply")
}

fn payload(i: u64) -> Bytes {
    let mut p = format!("{i:08}").into_bytes();
    p.resize(PAYLOAD, b'a' + (i % 26) as u8);
    p.into()
}

fn full_error() -> Value {
    json!({
        "error": {"code": 503, "err_code": 10023, "description": "insufficient resources"},
        "stream": "L",
        "seq": 0
    })
}

async fn create_stream(c: &async_nats::Client) {
    let r = request(
        c,
        "$JS.API.STREAM.CREATE.L",
        r#"{"name":"L","subjects":["l.>"],"storage":"file"}"#,
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
}

/// Publishes until the stream is full; returns the acknowledged sequences (1, 2, ...).
async fn fill(c: &async_nats::Client, first: u64) -> u64 {
    fill_up_to(c, first, 200).await
}

/// [`fill`], failing if more than `most` fit.
async fn fill_up_to(c: &async_nats::Client, first: u64, most: u64) -> u64 {
    let mut seq = first;
    loop {
        let r = request(c, &format!("l.{}", seq % 7), payload(seq)).await;
        if r.get("error").is_some() {
            assert_eq!(r, full_error());
            return seq - first;
        }
        assert_eq!(r, json!({"stream": "L", "seq": seq}));
        seq += 1;
        assert!(seq - first <= most, "never full");
    }
}

/// Every stored message is intact.
async fn check_stored(c: &async_nats::Client, first: u64, n: u64) {
    let js = jetstream::new(c.clone());
    let s = within("stream", js.get_stream("L")).await.expect("stream");
    for seq in first..first + n {
        let m = within("get", s.get_raw_message(seq))
            .await
            .unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert_eq!(m.payload, payload(seq), "seq {seq} damaged");
        assert_eq!(m.subject.as_str(), format!("l.{}", seq % 7));
    }
}

async fn stream_state(c: &async_nats::Client) -> Value {
    request(c, "$JS.API.STREAM.INFO.L", "").await["state"].clone()
}

/// Core messaging on a connection of its own: a subscriber gets what is published and
/// request-reply answers.
async fn core_works(server: &Server) {
    let a = connect(server).await;
    let b = connect(server).await;
    let mut svc = b.subscribe("svc").await.unwrap();
    let mut sub = b.subscribe("core.>").await.unwrap();
    // async-nats' flush does not wait for the server: probe until the subscription is live.
    loop {
        a.publish("core.probe", "".into()).await.unwrap();
        a.flush().await.unwrap();
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
            assert_eq!(m.expect("probe").subject.as_str(), "core.probe");
            break;
        }
    }
    let responder = tokio::spawn({
        let b = b.clone();
        async move {
            let m = svc.next().await.expect("request");
            b.publish(m.reply.expect("reply subject"), "pong".into())
                .await
                .unwrap();
            b.flush().await.unwrap();
        }
    });
    for i in 0..20u8 {
        a.publish(format!("core.{i}"), vec![i; 2000].into())
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    let mut i = 0u8;
    while i < 20 {
        let m = within("core message", sub.next()).await.expect("message");
        if m.subject.as_str() == "core.probe" {
            continue; // a late duplicate probe
        }
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            (&*format!("core.{i}"), &[i; 2000][..])
        );
        i += 1;
    }
    let r = within("request", a.request("svc", "ping".into()))
        .await
        .expect("reply");
    assert_eq!(&r.payload[..], b"pong");
    responder.await.unwrap();
}

#[tokio::test]
async fn file_store_full_rejects_publishes_and_damages_nothing() {
    let store = Store(temp_dir());
    let server = start(&store);
    let c = connect(&server).await;
    create_stream(&c).await;

    let n = fill(&c, 1).await;
    // About LIMIT / message size fit (nats-server lets the last one cross the limit).
    let per = (PAYLOAD + 40) as u64;
    assert!(
        (LIMIT / per - 2..=LIMIT / per + 2).contains(&n),
        "{n} messages fit"
    );
    // Still full, every time; core messaging is unaffected.
    for i in 0..5 {
        let r = request(&c, &format!("l.x{i}"), payload(0)).await;
        assert_eq!(r, full_error());
    }
    core_works(&server).await;
    let st = stream_state(&c).await;
    assert_eq!((&st["messages"], &st["last_seq"]), (&json!(n), &json!(n)));
    assert!(st["bytes"].as_u64().unwrap() <= LIMIT + per, "{st}");
    check_stored(&c, 1, n).await;

    // Across a restart on the same store: intact, still full.
    drop(c);
    drop(server);
    let server = start(&store);
    let c = connect(&server).await;
    check_stored(&c, 1, n).await;
    assert_eq!(request(&c, "l.again", payload(0)).await, full_error());
    core_works(&server).await;

    // A purge frees the space: the stream fills up again after its old last sequence.
    let r = request(&c, "$JS.API.STREAM.PURGE.L", "").await;
    assert_eq!(
        (&r["success"], &r["purged"]),
        (&json!(true), &json!(n)),
        "{r}"
    );
    let m = fill(&c, n + 1).await;
    assert!(
        m + 1 >= n && m <= n + 1,
        "{m} fit after the purge, {n} before"
    );
    check_stored(&c, n + 1, m).await;
}

/// The publish right after a purge is admitted (the account usage natter caches for the
/// limit check is dropped by the purge).
#[tokio::test]
async fn publishing_resumes_right_after_purge() {
    let store = Store(temp_dir());
    let server = start(&store);
    let c = connect(&server).await;
    create_stream(&c).await;
    let n = fill(&c, 1).await;
    let r = request(&c, "$JS.API.STREAM.PURGE.L", "").await;
    assert_eq!(r["success"], json!(true), "{r}");
    // nats-server accepts the very next publish.
    let r = request(&c, "l.after", payload(n + 1)).await;
    assert_eq!(r, json!({"stream": "L", "seq": n + 1}));
}

/// A small filesystem of its own, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs, or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The disk itself fills (no `max_file_store` in the way): publishes get the same
/// insufficient-resources error, nothing stored is damaged (no torn record is left behind by
/// the write that did not fit, also across a restart), core messaging carries on, and a purge
/// frees the space for publishing to resume. natter's behaviour only: nats-server 2.15.1 stops
/// answering publishes there (a request times out).
#[tokio::test]
async fn real_full_disk_rejects_publishes_and_damages_nothing() {
    if !common::is_natter() {
        eprintln!("SKIPPED: nats-server does not answer publishes on a full disk");
        return;
    }
    let disk = match Tmpfs::mount("1m") {
        Ok(d) => d,
        Err(why) if std::env::var_os("NATTER_REQUIRE_MOUNT").is_none() => {
            eprintln!(
                "SKIPPED: cannot mount a small tmpfs ({why}); run as root to test a full disk"
            );
            return;
        }
        Err(why) => panic!("NATTER_REQUIRE_MOUNT is set but mounting a tmpfs failed: {why}"),
    };
    let start = || {
        Server::with_config(&format!(
            "jetstream {{ store_dir: \"{}\", max_file_store: 1GB }}\n",
            disk.0.display()
        ))
    };
    let server = start();
    let c = connect(&server).await;
    create_stream(&c).await;
    let n = fill_up_to(&c, 1, 2000).await;
    assert!(n > 500, "only {n} messages fit on 1 MiB");
    for i in 0..3 {
        assert_eq!(
            request(&c, &format!("l.x{i}"), payload(0)).await,
            full_error()
        );
    }
    core_works(&server).await;
    check_stored(&c, 1, n).await;

    let r = request(&c, "$JS.API.STREAM.PURGE.L", "").await;
    assert_eq!(
        (&r["success"], &r["purged"]),
        (&json!(true), &json!(n)),
        "{r}"
    );
    // The sequences of the publishes the disk refused (four) are not handed out again.
    let first = n + 5;
    let r = request(&c, &format!("l.{}", first % 7), payload(first)).await;
    assert_eq!(
        r,
        json!({"stream": "L", "seq": first}),
        "publishing resumes"
    );
    let m = 1 + fill_up_to(&c, first + 1, 2000).await;
    assert!(m > n / 2, "{m} fit after the purge, {n} before");
    check_stored(&c, first, m).await;

    drop(c);
    drop(server);
    let server = start();
    let c = connect(&server).await;
    check_stored(&c, first, m).await;
    let st = stream_state(&c).await;
    assert_eq!(
        (&st["messages"], &st["last_seq"]),
        (&json!(m), &json!(first + m - 1)),
        "{st}"
    );
}
