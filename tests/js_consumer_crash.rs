//! A consumer survives a crash: a server with a pull consumer mid-flight (some messages acked,
//! some delivered and not acked, some never delivered, a pull request waiting) is killed with
//! SIGKILL and restarted on the same store. Nothing acked comes back; every unacked message is
//! delivered again. Likewise for an ack-all consumer's floor.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{temp_dir, Server};
use futures::StreamExt;
use serde_json::{json, Value};

const MS: u64 = 1_000_000;
const TOTAL: u64 = 300;

fn js_server(store: &std::path::Path) -> Server {
    Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()])
}

async fn connect(server: &Server) -> async_nats::Client {
    common::within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect")
}

async fn api(nc: &async_nats::Client, subject: &str, body: Value) -> Value {
    let payload = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let m = common::within(subject, nc.request(subject.to_string(), payload))
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(v.get("error").is_none(), "{subject}: {v}");
    v
}

/// Creates the stream `CR` on `cr.>` and stores `n` messages (`m<i>` on `subject(i)`), then the
/// durable consumer `w` with `config` added.
async fn stream_and_consumer(
    nc: &async_nats::Client,
    n: u64,
    subject: impl Fn(u64) -> String,
    config: Value,
) {
    api(
        nc,
        "$JS.API.STREAM.CREATE.CR",
        json!({"name": "CR", "subjects": ["cr.>"]}),
    )
    .await;
    let js = async_nats::jetstream::new(nc.clone());
    let mut acks = Vec::new();
    for i in 1..=n {
        acks.push(
            js.publish(subject(i), format!("m{i}").into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        common::within("PubAck", std::future::IntoFuture::into_future(a))
            .await
            .unwrap();
    }
    let mut config = config;
    config["durable_name"] = json!("w");
    api(
        nc,
        "$JS.API.CONSUMER.CREATE.CR.w",
        json!({"stream_name": "CR", "config": config}),
    )
    .await;
}

/// A pull request; the subscription its deliveries arrive on.
async fn pull(nc: &async_nats::Client, req: Value) -> async_nats::Subscriber {
    let inbox = nc.new_inbox();
    let sub = nc.subscribe(inbox.clone()).await.unwrap();
    nc.publish_with_reply(
        "$JS.API.CONSUMER.MSG.NEXT.CR.w",
        inbox,
        req.to_string().into(),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();
    sub
}

/// (stream sequence, delivery count) from a delivery's `$JS.ACK` reply subject.
fn seq_and_count(m: &async_nats::Message) -> (u64, u64) {
    let r = m.reply.as_ref().expect("reply subject");
    let t: Vec<&str> = r.split('.').collect();
    (t[5].parse().unwrap(), t[4].parse().unwrap())
}

/// `n` deliveries from `sub` (no statuses expected in between).
async fn take(sub: &mut async_nats::Subscriber, n: usize) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = common::within("delivery", sub.next()).await.unwrap();
        assert!(
            m.status.is_none(),
            "status {:?} {:?}",
            m.status,
            m.description
        );
        out.push(m);
    }
    out
}

async fn double_ack(nc: &async_nats::Client, m: &async_nats::Message) {
    common::within(
        "double ack",
        nc.request(m.reply.clone().unwrap(), Bytes::from_static(b"+ACK")),
    )
    .await
    .expect("ack confirmed");
}

#[tokio::test]
async fn sigkill_with_a_consumer_mid_flight_loses_no_ack_and_no_message() {
    let store = temp_dir();
    let mut acked = BTreeSet::new();
    {
        let server = js_server(&store);
        let nc = connect(&server).await;
        stream_and_consumer(
            &nc,
            TOTAL,
            |i| format!("cr.{}", i % 7),
            json!({"ack_policy": "explicit", "ack_wait": 1000 * MS}),
        )
        .await;
        // 1..=200 delivered; two in three acked (confirmed), the rest left pending.
        let mut sub = pull(&nc, json!({"batch": 200, "expires": 5000 * MS})).await;
        for m in take(&mut sub, 200).await {
            let (seq, dc) = seq_and_count(&m);
            assert_eq!(dc, 1);
            if seq % 3 != 0 {
                double_ack(&nc, &m).await;
                acked.insert(seq);
            }
        }
        // 201..=260 delivered and not acked, the last ten to a request whose subscriber
        // never looks at them.
        let mut sub = pull(&nc, json!({"batch": 50, "expires": 5000 * MS})).await;
        take(&mut sub, 50).await;
        let _unread = pull(&nc, json!({"batch": 10, "expires": 30_000 * MS})).await;
        let start = Instant::now();
        loop {
            let info = api(&nc, "$JS.API.CONSUMER.INFO.CR.w", Value::Null).await;
            if info["delivered"]["stream_seq"] == 260 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(2), "{info}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !common::is_natter() {
            // nats-server confirms a double ack once applied in memory and writes the consumer
            // state a moment later; natter confirms it only after the state is written, so it
            // is killed at once.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(server); // SIGKILL
    }
    assert_eq!(acked.len(), 134);

    let server = js_server(&store);
    let nc = connect(&server).await;
    let info = api(&nc, "$JS.API.STREAM.INFO.CR", Value::Null).await;
    assert_eq!(info["state"]["messages"], TOTAL, "{info}");
    let info = api(&nc, "$JS.API.CONSUMER.INFO.CR.w", Value::Null).await;
    assert_eq!(info["ack_floor"]["stream_seq"], 2, "{info}");
    assert_eq!(
        info["num_pending"], 40,
        "never delivered: 261..=300 ({info})"
    );
    let want: BTreeSet<u64> = (1..=TOTAL).filter(|s| !acked.contains(s)).collect();
    let mut got = BTreeSet::new();
    let start = Instant::now();
    // Redeliveries come once the 1 s ack wait of the deliveries before the crash has run out.
    while got.len() < want.len() && start.elapsed() < Duration::from_secs(5) {
        let mut sub = pull(&nc, json!({"batch": 300, "expires": 1500 * MS})).await;
        while let Some(m) = common::within("pull answer", sub.next()).await {
            if m.status.is_some() {
                break;
            }
            let (seq, dc) = seq_and_count(&m);
            assert!(!acked.contains(&seq), "acked message {seq} came back");
            assert!(got.insert(seq), "{seq} delivered twice after the restart");
            let before_crash = seq <= 260;
            assert_eq!(dc > 1, before_crash, "delivery count {dc} of {seq}");
            double_ack(&nc, &m).await;
        }
    }
    assert_eq!(got, want, "every unacked message is delivered again");
    let info = api(&nc, "$JS.API.CONSUMER.INFO.CR.w", Value::Null).await;
    assert_eq!(
        (
            &info["num_ack_pending"],
            &info["num_pending"],
            &info["ack_floor"]["stream_seq"]
        ),
        (&json!(0), &json!(0), &json!(TOTAL)),
        "{info}"
    );
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn sigkill_keeps_an_ack_all_floor_and_redelivers_above_it() {
    let store = temp_dir();
    {
        let server = js_server(&store);
        let nc = connect(&server).await;
        stream_and_consumer(
            &nc,
            100,
            |_| "cr.x".into(),
            json!({"ack_policy": "all", "ack_wait": 500 * MS}),
        )
        .await;
        let mut sub = pull(&nc, json!({"batch": 80, "expires": 5000 * MS})).await;
        let got = take(&mut sub, 80).await;
        // One ack covers 1..=50.
        double_ack(&nc, &got[49]).await;
        if !common::is_natter() {
            // As above: nats-server writes the consumer state after confirming.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(server); // SIGKILL
    }
    let server = js_server(&store);
    let nc = connect(&server).await;
    let info = api(&nc, "$JS.API.CONSUMER.INFO.CR.w", Value::Null).await;
    assert_eq!(info["ack_floor"]["stream_seq"], 50, "{info}");
    assert_eq!(info["num_ack_pending"], 30, "{info}");
    // 81..=100 at once, 51..=80 once their ack wait has run out; nothing at or below 50.
    let mut got = BTreeSet::new();
    let mut sub = pull(&nc, json!({"batch": 50, "expires": 4000 * MS})).await;
    for m in take(&mut sub, 50).await {
        let (seq, dc) = seq_and_count(&m);
        assert!(seq > 50, "acked message {seq} came back");
        assert!(got.insert(seq), "{seq} twice");
        assert_eq!(dc > 1, seq <= 80, "delivery count {dc} of {seq}");
    }
    assert_eq!(got, (51..=100).collect::<BTreeSet<u64>>());
    let _ = std::fs::remove_dir_all(&store);
}

/// Plain acks (no reply, nothing confirms them) are written right after they are read, a
/// burst at a time: once the server has read them, a SIGKILL does not bring them back.
#[tokio::test]
async fn sigkill_after_plain_acks_were_read_keeps_them() {
    let store = temp_dir();
    {
        let server = js_server(&store);
        let nc = connect(&server).await;
        stream_and_consumer(
            &nc,
            60,
            |_| "cr.x".into(),
            json!({"ack_policy": "explicit", "ack_wait": 30_000 * MS}),
        )
        .await;
        let mut sub = pull(&nc, json!({"batch": 60, "expires": 5000 * MS})).await;
        for m in &take(&mut sub, 60).await[..50] {
            nc.publish(m.reply.clone().unwrap(), Bytes::from_static(b"+ACK"))
                .await
                .unwrap();
        }
        // The PONG comes after the server has read every ack before the PING.
        nc.flush().await.unwrap();
        let grace = if common::is_natter() { 50 } else { 500 };
        tokio::time::sleep(Duration::from_millis(grace)).await;
        drop(server); // SIGKILL
    }
    let server = js_server(&store);
    let nc = connect(&server).await;
    let info = api(&nc, "$JS.API.CONSUMER.INFO.CR.w", Value::Null).await;
    assert_eq!(info["ack_floor"]["stream_seq"], 50, "{info}");
    assert_eq!(info["num_ack_pending"], 10, "{info}");
    let _ = std::fs::remove_dir_all(&store);
}
