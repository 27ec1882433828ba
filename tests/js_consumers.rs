//! JetStream consumers, KV and the object store over TCP. With the async-nats JetStream client:
//! pull and push consumers, acks and redelivery, durable consumers across a restart, and the KV
//! and object-store APIs built on them. With raw `$JS.API.CONSUMER.*` requests over the core
//! client (and raw sockets for exact frames), so that statuses, headers and reply subjects are
//! visible: every CREATE form, INFO, DELETE, NAMES, LIST, PAUSE, inactive ephemerals, deliver,
//! ack and replay policies, ack_wait/max_deliver/backoff, filters, max_ack_pending,
//! headers_only, pull request options and statuses, push groups, heartbeats and flow control,
//! every ack kind and retention by interest and work queue. Each test passes against
//! nats-server 2.15 as well (`NATTER_TEST_SERVER`).

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use async_nats::{HeaderMap, Message, Subscriber};
use bytes::Bytes;
use common::{temp_dir, Server};
use futures::StreamExt;
use serde_json::{json, Value};

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

fn js_server(store: &std::path::Path) -> Server {
    Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()])
}

/// A JetStream server on a fresh store that is removed with it.
struct Js {
    server: Option<Server>,
    store: std::path::PathBuf,
}

impl Js {
    fn start() -> Js {
        let store = temp_dir();
        Js {
            server: Some(js_server(&store)),
            store,
        }
    }
}

impl std::ops::Deref for Js {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server.as_ref().expect("running")
    }
}

impl Drop for Js {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

async fn js(server: &Server) -> jetstream::Context {
    let client = within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect");
    jetstream::new(client)
}

async fn orders(js: &jetstream::Context, n: u64) -> stream::Stream {
    let s = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("create stream");
    for i in 1..=n {
        js.publish(format!("orders.{i}"), format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    s
}

#[tokio::test]
async fn pull_consumer_fetches_acks_and_redelivers() {
    let server = Js::start();
    let js = js(&server).await;
    let s = orders(&js, 5).await;
    let c = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("worker".into()),
            ack_wait: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut batch = within("fetch", c.fetch().max_messages(3).messages())
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = within("message", batch.next()).await {
        let m = m.unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
        if got.len() != 2 {
            m.ack().await.unwrap();
        }
    }
    assert_eq!(got, ["order 1", "order 2", "order 3"]);
    // Message 2 was not acked: it comes back after ack_wait, before 4 and 5.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut batch = within("fetch", c.fetch().max_messages(3).messages())
        .await
        .unwrap();
    let mut again = Vec::new();
    while let Some(m) = within("message", batch.next()).await {
        let m = m.unwrap();
        let info = m.info().unwrap();
        again.push((
            String::from_utf8(m.payload.to_vec()).unwrap(),
            info.delivered,
        ));
        // Confirmed by the server, so the consumer info below sees every ack.
        m.double_ack().await.unwrap();
    }
    assert_eq!(
        again,
        [
            ("order 2".to_string(), 2),
            ("order 4".to_string(), 1),
            ("order 5".to_string(), 1)
        ]
    );
    let mut c = c;
    let info = within("info", c.info()).await.unwrap();
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test]
async fn push_consumer_delivers_to_its_subject() {
    let server = Js::start();
    let js = js(&server).await;
    let s = orders(&js, 3).await;
    let c = s
        .create_consumer(consumer::push::Config {
            durable_name: Some("pusher".into()),
            deliver_subject: "deliver.orders".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create push consumer");
    let mut msgs = c.messages().await.unwrap();
    for i in 1..=3 {
        let m = within("push message", msgs.next()).await.unwrap().unwrap();
        assert_eq!(m.subject.as_str(), format!("orders.{i}"));
        m.ack().await.unwrap();
    }
}

#[tokio::test]
async fn ordered_consumer_reads_everything_in_order() {
    let server = Js::start();
    let js = js(&server).await;
    let s = orders(&js, 10).await;
    let c = s
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: "_INBOX.ordered".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    for i in 1..=10 {
        let m = within("ordered message", msgs.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload, Bytes::from(format!("order {i}")));
    }
}

#[tokio::test]
async fn durable_consumer_resumes_after_a_restart() {
    let store = temp_dir();
    {
        let server = js_server(&store);
        let js = js(&server).await;
        let s = orders(&js, 4).await;
        let c = s
            .create_consumer(consumer::pull::Config {
                durable_name: Some("resume".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = c.fetch().max_messages(2).messages().await.unwrap();
        while let Some(m) = within("message", batch.next()).await {
            m.unwrap().double_ack().await.unwrap();
        }
        if !common::is_natter() {
            // nats-server confirms a double ack once applied in memory and writes the consumer
            // state a moment later; natter confirms it after writing, so it is killed at once.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(server); // SIGKILL
    }
    let server = js_server(&store);
    let js = js(&server).await;
    let s = js.get_stream("ORDERS").await.unwrap();
    let c: consumer::PullConsumer = s.get_consumer("resume").await.expect("consumer survived");
    let mut batch = c.fetch().max_messages(5).messages().await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = within("message", batch.next()).await {
        let m = m.unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
        m.ack().await.unwrap();
    }
    assert_eq!(
        got,
        ["order 3", "order 4"],
        "acked messages never come back"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn kv_put_get_update_delete_history_keys_and_watch() {
    let server = Js::start();
    let js = js(&server).await;
    let kv = within(
        "create bucket",
        js.create_key_value(kv::Config {
            bucket: "config".into(),
            history: 5,
            ..Default::default()
        }),
    )
    .await
    .expect("create bucket");
    let mut watch = within("watch", kv.watch_all()).await.unwrap();
    let r1 = kv.put("color", "red".into()).await.unwrap();
    assert_eq!(kv.get("color").await.unwrap(), Some(Bytes::from("red")));
    let r2 = kv.update("color", "blue".into(), r1).await.unwrap();
    assert!(
        kv.update("color", "green".into(), r1).await.is_err(),
        "stale revision refused"
    );
    assert!(
        kv.create("color", "x".into()).await.is_err(),
        "create of an existing key refused"
    );
    kv.create("size", "L".into()).await.unwrap();
    let entry = kv.entry("color").await.unwrap().unwrap();
    assert_eq!((entry.revision, &entry.value[..]), (r2, &b"blue"[..]));
    let mut keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.sort();
    assert_eq!(keys, ["color", "size"]);
    let history: Vec<_> = kv
        .history("color")
        .await
        .unwrap()
        .map(|e| e.unwrap().value)
        .collect()
        .await;
    assert_eq!(history, [Bytes::from("red"), Bytes::from("blue")]);
    kv.delete("size").await.unwrap();
    assert_eq!(kv.get("size").await.unwrap(), None);
    kv.purge("color").await.unwrap();
    assert_eq!(kv.get("color").await.unwrap(), None);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = within("watch entry", watch.next()).await.unwrap().unwrap();
        seen.push((e.key, e.operation, e.value));
    }
    use kv::Operation::{Delete, Purge, Put};
    let expect = [
        ("color", Put, "red"),
        ("color", Put, "blue"),
        ("size", Put, "L"),
        ("size", Delete, ""),
        ("color", Purge, ""),
    ];
    let seen: Vec<(&str, kv::Operation, &[u8])> = seen
        .iter()
        .map(|(k, o, v)| (k.as_str(), *o, &v[..]))
        .collect();
    let expect: Vec<(&str, kv::Operation, &[u8])> = expect
        .iter()
        .map(|(k, o, v)| (*k, *o, v.as_bytes()))
        .collect();
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn object_store_put_get_info_list_delete() {
    let server = Js::start();
    let js = js(&server).await;
    let bucket = within(
        "create object store",
        js.create_object_store(object_store::Config {
            bucket: "files".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("create object store");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let info = within("put", bucket.put("big.bin", &mut &data[..]))
        .await
        .unwrap();
    assert_eq!(info.size, data.len());
    let mut obj = within("get", bucket.get("big.bin")).await.unwrap();
    let mut back = Vec::new();
    use tokio::io::AsyncReadExt;
    within("read", obj.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, data);
    let info = bucket.info("big.bin").await.unwrap();
    assert_eq!(info.name, "big.bin");
    let names: Vec<String> = bucket
        .list()
        .await
        .unwrap()
        .map(|i| i.unwrap().name)
        .collect()
        .await;
    assert_eq!(names, ["big.bin"]);
    bucket.delete("big.bin").await.unwrap();
    assert!(bucket.get("big.bin").await.is_err());
}

// ---------------------------------------------------------------------------------------------
// The consumer API and delivery semantics, driven with raw JSON requests over the core client so
// that statuses, headers and reply subjects are visible.
// ---------------------------------------------------------------------------------------------

async fn core(server: &Server) -> async_nats::Client {
    within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect")
}

/// A JetStream API request; the JSON reply.
async fn api(nc: &async_nats::Client, subject: &str, body: Value) -> Value {
    let payload = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let m = within(subject, nc.request(subject.to_string(), payload))
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&m.payload).expect("API reply is JSON")
}

/// `api`, which must succeed.
async fn api_ok(nc: &async_nats::Client, subject: &str, body: Value) -> Value {
    let r = api(nc, subject, body).await;
    assert!(r.get("error").is_none(), "{subject}: {r}");
    r
}

async fn add_stream(nc: &async_nats::Client, config: Value) {
    let name = config["name"].as_str().unwrap().to_string();
    api_ok(nc, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
}

/// Publishes through JetStream; the stream sequence.
async fn publish(nc: &async_nats::Client, subject: &str, payload: &str) -> u64 {
    let m = within(
        "publish",
        nc.request(subject.to_string(), Bytes::from(payload.to_string())),
    )
    .await
    .unwrap();
    let ack: Value = serde_json::from_slice(&m.payload).unwrap();
    ack["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("PubAck: {ack}"))
}

/// Creates a consumer with `$JS.API.CONSUMER.CREATE.<stream>[.<name>]`; its info.
async fn add_consumer(nc: &async_nats::Client, stream: &str, config: Value) -> Value {
    let name = config
        .get("durable_name")
        .or(config.get("name"))
        .and_then(Value::as_str);
    let subject = match name {
        Some(n) => format!("$JS.API.CONSUMER.CREATE.{stream}.{n}"),
        None => format!("$JS.API.CONSUMER.CREATE.{stream}"),
    };
    api_ok(
        nc,
        &subject,
        json!({"stream_name": stream, "config": config}),
    )
    .await
}

async fn consumer_info(nc: &async_nats::Client, stream: &str, name: &str) -> Value {
    api(
        nc,
        &format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
        Value::Null,
    )
    .await
}

/// Consumer info once `field` (a top-level key) is `want`, polled for up to 2 s: nats-server
/// applies publishes and pull requests to its consumers asynchronously.
async fn info_when(
    nc: &async_nats::Client,
    stream: &str,
    name: &str,
    field: &str,
    want: Value,
) -> Value {
    let start = Instant::now();
    loop {
        let info = consumer_info(nc, stream, name).await;
        if info[field] == want || start.elapsed() > Duration::from_secs(2) {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends a pull request; the subscription its answers arrive on.
async fn pull(nc: &async_nats::Client, stream: &str, consumer: &str, req: Value) -> Subscriber {
    let inbox = nc.new_inbox();
    let sub = nc.subscribe(inbox.clone()).await.unwrap();
    nc.publish_with_reply(
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        inbox,
        Bytes::from(req.to_string()),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();
    sub
}

/// The next message within `d`, or None.
async fn recv(sub: &mut Subscriber, d: Duration) -> Option<Message> {
    tokio::time::timeout(d, sub.next()).await.ok().flatten()
}

/// A raw client that announced header support (statuses are header-only messages).
fn raw_client(server: &Server) -> common::Client {
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    c
}

/// A raw `PUB` frame.
fn pub_frame(subject: &str, reply: &str, payload: &str) -> Vec<u8> {
    format!("PUB {subject} {reply} {}\r\n{payload}\r\n", payload.len()).into_bytes()
}

fn status_of(m: &Message) -> Option<u16> {
    m.status.map(|s| s.as_u16())
}

fn header(m: &Message, name: &str) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// Messages (skipping idle heartbeats) until a terminal status or `d` of silence; the
/// messages and the terminal status message if any.
async fn collect(sub: &mut Subscriber, d: Duration) -> (Vec<Message>, Option<Message>) {
    let mut msgs = Vec::new();
    while let Some(m) = recv(sub, d).await {
        match status_of(&m) {
            None => msgs.push(m),
            Some(100) => {}
            Some(_) => return (msgs, Some(m)),
        }
    }
    (msgs, None)
}

/// The stream sequence of a delivery, from its reply subject.
fn sseq(m: &Message) -> u64 {
    ack_tokens(m)[5].parse().unwrap()
}

/// The delivery count of a delivery, from its reply subject.
fn delivered(m: &Message) -> u64 {
    ack_tokens(m)[4].parse().unwrap()
}

fn ack_tokens(m: &Message) -> Vec<String> {
    let r = m.reply.as_ref().expect("delivery has a reply subject");
    r.split('.').map(str::to_string).collect()
}

fn seqs(msgs: &[Message]) -> Vec<u64> {
    msgs.iter().map(sseq).collect()
}

async fn ack(nc: &async_nats::Client, m: &Message, body: &str) {
    nc.publish(m.reply.clone().unwrap(), Bytes::from(body.to_string()))
        .await
        .unwrap();
}

/// An acknowledgement the server confirms (double ack): it has been applied on return.
async fn ack_sync(nc: &async_nats::Client, m: &Message, body: &str) {
    within(
        "double ack",
        nc.request(m.reply.clone().unwrap(), Bytes::from(body.to_string())),
    )
    .await
    .expect("ack confirmed");
}

/// RFC 3339 (UTC, nanoseconds) of Unix nanoseconds.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

const MS: u64 = 1_000_000;

/// A server with a stream `S` on `s.>` holding `subjects` in order (payloads `m<seq>`).
async fn s_with(subjects: &[&str]) -> (Js, async_nats::Client) {
    let server = Js::start();
    let nc = core(&server).await;
    add_stream(&nc, json!({"name": "S", "subjects": ["s.>"]})).await;
    for (i, s) in subjects.iter().enumerate() {
        publish(&nc, s, &format!("m{}", i + 1)).await;
    }
    (server, nc)
}

#[tokio::test]
async fn consumer_api_create_forms_info_names_list_pause_delete() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.a"]).await;
    // Without a name in the subject: an ephemeral with a generated name.
    let eph = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name": "S", "config": {"ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(
        eph["type"],
        "io.nats.jetstream.api.v1.consumer_create_response"
    );
    let eph_name = eph["name"].as_str().unwrap().to_string();
    assert!(!eph_name.is_empty());
    assert!(eph["config"].get("durable_name").is_none(), "{eph}");
    assert_eq!(eph["num_pending"], 3);
    // A durable named in the subject and the config.
    let named = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.named",
        json!({"stream_name": "S", "config": {"durable_name": "named", "ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(
        (&named["name"], &named["config"]["durable_name"]),
        (&json!("named"), &json!("named"))
    );
    // A different durable name in the subject than in the config is refused; a different
    // `name` gives way to the subject's.
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.other",
        json!({"stream_name": "S", "config": {"durable_name": "named"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10017, "{r}");
    let r = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.subj",
        json!({"stream_name": "S", "config": {"name": "cfg", "inactive_threshold": 60_000 * MS}}),
    )
    .await;
    assert_eq!(r["name"], "subj", "{r}");
    // The stream in the body must be the subject's.
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.x",
        json!({"stream_name": "T", "config": {"durable_name": "x"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10056, "{r}");
    // The durable name sent to the ephemeral form is refused.
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name": "S", "config": {"durable_name": "x"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10020, "{r}");
    // action: create of an existing one with another config; update of a missing one;
    // an update that changes what may not change; an allowed update.
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.named",
        json!({"stream_name": "S", "action": "create",
               "config": {"durable_name": "named", "ack_policy": "all"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10148, "{r}");
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.ghost",
        json!({"stream_name": "S", "action": "update", "config": {"durable_name": "ghost"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10149, "{r}");
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.named",
        json!({"stream_name": "S", "config": {"durable_name": "named", "ack_policy": "all"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10012, "{r}");
    let r = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.named",
        json!({"stream_name": "S", "config": {"durable_name": "named", "ack_policy": "explicit",
                                             "max_deliver": 5}}),
    )
    .await;
    assert_eq!(r["config"]["max_deliver"], 5, "{r}");
    api_ok(&nc, "$JS.API.CONSUMER.DELETE.S.subj", Value::Null).await;
    // The filtered-subject form: the filter in the subject must be the config's.
    let filt = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.filt.s.a",
        json!({"stream_name": "S", "config": {"durable_name": "filt", "filter_subject": "s.a"}}),
    )
    .await;
    assert_eq!(filt["num_pending"], 2);
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.filt2.s.b",
        json!({"stream_name": "S", "config": {"durable_name": "filt2", "filter_subject": "s.a"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10131, "{r}");
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.filt3.s.a",
        json!({"stream_name": "S", "config": {"durable_name": "filt3", "filter_subjects": ["s.a"]}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10137, "{r}");
    // The legacy DURABLE.CREATE, which needs durable_name.
    let dur = api_ok(
        &nc,
        "$JS.API.CONSUMER.DURABLE.CREATE.S.dur",
        json!({"stream_name": "S", "config": {"durable_name": "dur", "ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(dur["name"], "dur");
    let r = api(
        &nc,
        "$JS.API.CONSUMER.DURABLE.CREATE.S.dur2",
        json!({"stream_name": "S", "config": {"ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10018, "{r}");
    // INFO.
    let info = consumer_info(&nc, "S", "dur").await;
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.consumer_info_response"
    );
    assert_eq!(
        (&info["stream_name"], &info["name"], &info["num_pending"]),
        (&json!("S"), &json!("dur"), &json!(3))
    );
    for subject in [
        "$JS.API.CONSUMER.INFO.S.dur",
        "$JS.API.CONSUMER.DELETE.S.dur",
    ] {
        let r = within("request", nc.request(subject, Bytes::from_static(b"null")))
            .await
            .unwrap();
        let r: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(r["error"]["err_code"], 10038, "a body is refused: {r}");
    }
    let missing = consumer_info(&nc, "S", "nope").await;
    assert_eq!(
        (&missing["error"]["code"], &missing["error"]["err_code"]),
        (&json!(404), &json!(10014)),
        "{missing}"
    );
    // NAMES and LIST.
    let mut want = vec![
        eph_name.clone(),
        "dur".into(),
        "filt".into(),
        "named".into(),
    ];
    want.sort();
    let names = api_ok(&nc, "$JS.API.CONSUMER.NAMES.S", Value::Null).await;
    assert_eq!(
        names["type"],
        "io.nats.jetstream.api.v1.consumer_names_response"
    );
    let mut got: Vec<String> = serde_json::from_value(names["consumers"].clone()).unwrap();
    got.sort();
    assert_eq!((got, &names["total"]), (want.clone(), &json!(4)));
    let list = api_ok(&nc, "$JS.API.CONSUMER.LIST.S", json!({})).await;
    assert_eq!(
        list["type"],
        "io.nats.jetstream.api.v1.consumer_list_response"
    );
    let mut got: Vec<String> = list["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!((got, &list["total"]), (want, &json!(4)));
    // PAUSE: a paused consumer delivers nothing until it is resumed.
    let until = rfc3339(now_ns() + 60_000_000_000);
    let p = api_ok(
        &nc,
        "$JS.API.CONSUMER.PAUSE.S.dur",
        json!({"pause_until": until}),
    )
    .await;
    assert_eq!(
        p["type"],
        "io.nats.jetstream.api.v1.consumer_pause_response"
    );
    assert_eq!(p["paused"], true, "{p}");
    assert!(
        p["pause_remaining"].as_i64().unwrap() > 50_000_000_000,
        "{p}"
    );
    let info = consumer_info(&nc, "S", "dur").await;
    assert_eq!(info["paused"], true, "{info}");
    let mut sub = pull(&nc, "S", "dur", json!({"batch": 1, "expires": 300 * MS})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(2)).await;
    assert!(msgs.is_empty(), "paused consumer delivered");
    assert_eq!(end.as_ref().and_then(status_of), Some(408));
    let p = api_ok(&nc, "$JS.API.CONSUMER.PAUSE.S.dur", json!({})).await;
    assert_eq!(p["paused"], false, "{p}");
    let p = api(&nc, "$JS.API.CONSUMER.PAUSE.S.nope", json!({})).await;
    assert_eq!(
        (&p["error"]["err_code"], &p["paused"]),
        (&json!(10014), &json!(false)),
        "{p}"
    );
    let mut sub = pull(&nc, "S", "dur", json!({"batch": 1, "expires": 1000 * MS})).await;
    let (msgs, _) = collect(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(seqs(&msgs), [1], "resumed consumer delivers");
    // DELETE.
    for name in [eph_name.as_str(), "dur"] {
        let d = api_ok(
            &nc,
            &format!("$JS.API.CONSUMER.DELETE.S.{name}"),
            Value::Null,
        )
        .await;
        assert_eq!(
            d["type"],
            "io.nats.jetstream.api.v1.consumer_delete_response"
        );
        assert_eq!(d["success"], true);
        let gone = consumer_info(&nc, "S", name).await;
        assert_eq!(gone["error"]["err_code"], 10014, "{gone}");
    }
    let d = api(&nc, "$JS.API.CONSUMER.DELETE.S.dur", Value::Null).await;
    assert_eq!(d["error"]["code"], 404, "{d}");
    let names = api_ok(&nc, "$JS.API.CONSUMER.NAMES.S", Value::Null).await;
    assert_eq!(names["total"], 2);
}

#[tokio::test]
async fn ephemeral_consumer_is_removed_after_inactive_threshold() {
    let (_server, nc) = s_with(&["s.a"]).await;
    let short = add_consumer(
        &nc,
        "S",
        json!({"ack_policy": "explicit", "inactive_threshold": 300 * MS}),
    )
    .await;
    let short = short["name"].as_str().unwrap().to_string();
    let long = add_consumer(
        &nc,
        "S",
        json!({"ack_policy": "explicit", "inactive_threshold": 30_000 * MS}),
    )
    .await;
    let long = long["name"].as_str().unwrap().to_string();
    assert!(consumer_info(&nc, "S", &short).await.get("error").is_none());
    let start = Instant::now();
    loop {
        let info = consumer_info(&nc, "S", &short).await;
        if info["error"]["err_code"] == 10014 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "ephemeral still there: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
    let info = consumer_info(&nc, "S", &long).await;
    assert!(info.get("error").is_none(), "{info}");
}

/// Stream sequences a new consumer with `config` delivers (all it has, `no_wait`).
async fn delivers(nc: &async_nats::Client, config: Value) -> Vec<u64> {
    let info = add_consumer(nc, "S", config).await;
    let name = info["name"].as_str().unwrap();
    let mut sub = pull(nc, "S", name, json!({"batch": 20, "no_wait": true})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(end.as_ref().and_then(status_of), Some(404));
    seqs(&msgs)
}

#[tokio::test]
async fn deliver_policies() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.a"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = now_ns();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&nc, "s.a", "m5").await;
    publish(&nc, "s.b", "m6").await;
    let all = json!({"ack_policy": "none"});
    let with = |extra: Value| {
        let mut c = all.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    assert_eq!(delivers(&nc, all.clone()).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        delivers(&nc, with(json!({"deliver_policy": "last"}))).await,
        [6]
    );
    assert_eq!(
        delivers(
            &nc,
            with(json!({"deliver_policy": "last", "filter_subject": "s.c"}))
        )
        .await,
        [3]
    );
    assert_eq!(
        delivers(
            &nc,
            with(json!({"deliver_policy": "by_start_sequence", "opt_start_seq": 4}))
        )
        .await,
        [4, 5, 6]
    );
    assert_eq!(
        delivers(
            &nc,
            with(json!({"deliver_policy": "by_start_time", "opt_start_time": rfc3339(between)}))
        )
        .await,
        [5, 6]
    );
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name": "S", "config": with(json!({"deliver_policy": "last_per_subject"}))}),
    )
    .await;
    assert_eq!(
        r["error"]["err_code"], 10094,
        "last_per_subject needs a filter: {r}"
    );
    assert_eq!(
        delivers(
            &nc,
            with(json!({"deliver_policy": "last_per_subject", "filter_subject": "s.>"}))
        )
        .await,
        [3, 5, 6]
    );
    assert_eq!(
        delivers(
            &nc,
            with(json!({"deliver_policy": "last_per_subject", "filter_subject": "s.a"}))
        )
        .await,
        [5]
    );
    // New: only what is stored after the consumer was created.
    let info = add_consumer(
        &nc,
        "S",
        with(json!({"deliver_policy": "new", "name": "new"})),
    )
    .await;
    assert_eq!(info["num_pending"], 0);
    let mut sub = pull(&nc, "S", "new", json!({"batch": 20, "expires": 600 * MS})).await;
    publish(&nc, "s.d", "m7").await;
    let (msgs, _) = collect(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(seqs(&msgs), [7]);
}

#[tokio::test]
async fn ack_policies_explicit_all_none() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.d"]).await;
    for (policy, acked, pending, floor) in [
        ("explicit", 2u64, 2u64, 0u64),
        ("all", 2, 1, 2),
        ("none", 0, 0, 3),
    ] {
        add_consumer(
            &nc,
            "S",
            json!({"durable_name": policy, "ack_policy": policy}),
        )
        .await;
        let mut sub = pull(&nc, "S", policy, json!({"batch": 3, "expires": 2000 * MS})).await;
        let (msgs, _) = collect(&mut sub, Duration::from_millis(300)).await;
        assert_eq!(seqs(&msgs), [1, 2, 3], "{policy}");
        if acked > 0 {
            ack_sync(&nc, &msgs[acked as usize - 1], "+ACK").await;
        }
        let info = consumer_info(&nc, "S", policy).await;
        assert_eq!(
            (
                info["num_ack_pending"].as_u64().unwrap(),
                info["ack_floor"]["stream_seq"].as_u64().unwrap(),
                info["delivered"]["stream_seq"].as_u64().unwrap(),
                info["num_pending"].as_u64().unwrap(),
            ),
            (pending, floor, 3, 1),
            "{policy}: {info}"
        );
    }
}

#[tokio::test]
async fn ack_wait_then_max_deliver_advisory() {
    let (_server, nc) = s_with(&["s.a", "s.b"]).await;
    let mut adv = nc
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.md")
        .await
        .unwrap();
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "md", "ack_policy": "explicit", "ack_wait": 200 * MS, "max_deliver": 2}),
    )
    .await;
    let t0 = Instant::now();
    let mut sub = pull(&nc, "S", "md", json!({"batch": 10, "expires": 1500 * MS})).await;
    let mut got = Vec::new();
    while let Some(m) = recv(&mut sub, Duration::from_millis(1000)).await {
        if status_of(&m).is_some() {
            break;
        }
        got.push((sseq(&m), delivered(&m), t0.elapsed()));
        if sseq(&m) == 2 {
            ack(&nc, &m, "+ACK").await;
        }
    }
    let pairs: Vec<(u64, u64)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(pairs, [(1, 1), (2, 1), (1, 2)], "{got:?}");
    assert!(
        got[2].2 >= Duration::from_millis(180) && got[2].2 < Duration::from_millis(800),
        "redelivered after the ack wait: {got:?}"
    );
    let a = within("max deliveries advisory", adv.next()).await.unwrap();
    let a: Value = serde_json::from_slice(&a.payload).unwrap();
    assert_eq!(a["type"], "io.nats.jetstream.advisory.v1.max_deliver");
    assert_eq!(
        (
            &a["stream"],
            &a["consumer"],
            &a["stream_seq"],
            &a["deliveries"]
        ),
        (&json!("S"), &json!("md"), &json!(1), &json!(2)),
        "{a}"
    );
    // Given up: no longer pending, and the ack floor stays below it until the next ack.
    let info = consumer_info(&nc, "S", "md").await;
    assert_eq!(
        (&info["num_ack_pending"], &info["ack_floor"]["stream_seq"]),
        (&json!(0), &json!(0)),
        "{info}"
    );
}

#[tokio::test]
async fn backoff_spaces_redeliveries() {
    let (_server, nc) = s_with(&["s.a"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "bo", "ack_policy": "explicit", "max_deliver": 3,
               "backoff": [100 * MS, 500 * MS]}),
    )
    .await;
    let t0 = Instant::now();
    let mut sub = pull(&nc, "S", "bo", json!({"batch": 10, "expires": 1500 * MS})).await;
    let mut at = Vec::new();
    while let Some(m) = recv(&mut sub, Duration::from_secs(2)).await {
        if status_of(&m).is_some() {
            break;
        }
        at.push((delivered(&m), t0.elapsed()));
    }
    let dcs: Vec<u64> = at.iter().map(|a| a.0).collect();
    assert_eq!(dcs, [1, 2, 3], "{at:?}");
    let first = at[1].1 - at[0].1;
    let second = at[2].1 - at[1].1;
    assert!(
        first >= Duration::from_millis(80) && first < Duration::from_millis(400),
        "{at:?}"
    );
    assert!(
        second >= Duration::from_millis(450) && second < Duration::from_millis(1000),
        "{at:?}"
    );
}

#[tokio::test]
async fn filter_subject_and_filter_subjects() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.a.x", "s.b"]).await;
    let one = add_consumer(&nc, "S", json!({"name": "one", "filter_subject": "s.b"})).await;
    assert_eq!(one["num_pending"], 2);
    let many = add_consumer(
        &nc,
        "S",
        json!({"name": "many", "filter_subjects": ["s.a.>", "s.c"]}),
    )
    .await;
    assert_eq!(many["num_pending"], 2);
    for (name, want) in [("one", vec![2, 5]), ("many", vec![3, 4])] {
        let mut sub = pull(&nc, "S", name, json!({"batch": 10, "no_wait": true})).await;
        let (msgs, _) = collect(&mut sub, Duration::from_secs(1)).await;
        assert_eq!(seqs(&msgs), want, "{name}");
        for m in &msgs {
            ack(&nc, m, "+ACK").await;
        }
    }
    // New messages are filtered too.
    publish(&nc, "s.c", "m6").await;
    publish(&nc, "s.b", "m7").await;
    let info = info_when(&nc, "S", "one", "num_pending", json!(1)).await;
    assert_eq!(info["num_pending"], 1, "{info}");
    let mut sub = pull(&nc, "S", "many", json!({"batch": 10, "no_wait": true})).await;
    let (msgs, _) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [6]);
}

#[tokio::test]
async fn replay_original_keeps_the_publish_timing() {
    let server = Js::start();
    let nc = core(&server).await;
    add_stream(&nc, json!({"name": "S", "subjects": ["s.>"]})).await;
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        publish(&nc, "s.a", &format!("m{i}")).await;
    }
    let mut sub = nc.subscribe("replay.here").await.unwrap();
    nc.flush().await.unwrap();
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "rp", "deliver_subject": "replay.here", "replay_policy": "original"}),
    )
    .await;
    let mut at = Vec::new();
    for _ in 0..3 {
        within("replayed message", sub.next()).await.unwrap();
        at.push(Instant::now());
    }
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(200) && gap < Duration::from_millis(600),
            "gap {gap:?}"
        );
    }
}

#[tokio::test]
async fn max_ack_pending_holds_back_deliveries() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.d"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "map", "ack_policy": "explicit", "max_ack_pending": 2}),
    )
    .await;
    let mut sub = pull(&nc, "S", "map", json!({"batch": 4, "expires": 2000 * MS})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_millis(400)).await;
    assert!(end.is_none());
    assert_eq!(seqs(&msgs), [1, 2], "only max_ack_pending outstanding");
    ack(&nc, &msgs[0], "+ACK").await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(sseq(&m), 3);
    assert!(recv(&mut sub, Duration::from_millis(300)).await.is_none());
    let info = consumer_info(&nc, "S", "map").await;
    assert_eq!(info["num_ack_pending"], 2, "{info}");
}

#[tokio::test]
async fn headers_only_sends_the_size_instead_of_the_payload() {
    let (_server, nc) = s_with(&[]).await;
    let mut h = HeaderMap::new();
    h.insert("X-Kind", "order");
    within(
        "publish",
        nc.request_with_headers("s.a", h, Bytes::from_static(b"hello world")),
    )
    .await
    .unwrap();
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "ho", "headers_only": true}),
    )
    .await;
    let mut sub = pull(&nc, "S", "ho", json!({"batch": 1})).await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert!(m.payload.is_empty());
    assert_eq!(header(&m, "Nats-Msg-Size").as_deref(), Some("11"));
    assert_eq!(header(&m, "X-Kind").as_deref(), Some("order"));
    assert_eq!(m.subject.as_str(), "s.a");
}

#[tokio::test]
async fn pull_requests_batch_expires_no_wait_max_bytes_heartbeat_and_statuses() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "p", "ack_policy": "explicit", "max_batch": 5}),
    )
    .await;
    // batch: two of three, each with the pending count left in its reply subject.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 2})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_millis(300)).await;
    assert!(end.is_none());
    assert_eq!(seqs(&msgs), [1, 2]);
    let pend: Vec<String> = msgs.iter().map(|m| ack_tokens(m)[8].clone()).collect();
    assert_eq!(pend, ["2", "1"]);
    // no_wait with fewer messages than the batch: what there is, then a 404 or 408 end.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 3, "no_wait": true})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [3]);
    assert_eq!(end.as_ref().and_then(status_of), Some(404));
    // no_wait with nothing: 404 No Messages.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 1, "no_wait": true})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(status_of(&m), Some(404));
    assert_eq!(m.description.as_deref(), Some("No Messages"));
    // no_wait with expires and nothing yet: it waits for a message instead, and ends once it
    // had some.
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 3, "no_wait": true, "expires": 2000 * MS}),
    )
    .await;
    assert!(recv(&mut sub, Duration::from_millis(200)).await.is_none());
    publish(&nc, "s.late", "late").await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [4]);
    assert_eq!(end.as_ref().and_then(status_of), Some(404));
    // A negative expires: 408 at once.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 2, "expires": -5})).await;
    let m = recv(&mut sub, Duration::from_millis(500)).await.unwrap();
    assert_eq!(status_of(&m), Some(408));
    assert_eq!(header(&m, "Nats-Pending-Messages").as_deref(), Some("2"));
    // expires with nothing: 408 Request Timeout with what the request had left.
    let t0 = Instant::now();
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 4, "expires": 300 * MS, "max_bytes": 5000}),
    )
    .await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(status_of(&m), Some(408));
    assert_eq!(m.description.as_deref(), Some("Request Timeout"));
    assert_eq!(header(&m, "Nats-Pending-Messages").as_deref(), Some("4"));
    assert_eq!(header(&m, "Nats-Pending-Bytes").as_deref(), Some("5000"));
    // idle_heartbeat: 100 Idle Heartbeat while waiting.
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 1, "expires": 700 * MS, "idle_heartbeat": 100 * MS}),
    )
    .await;
    let mut beats = 0;
    let mut last = None;
    while let Some(m) = recv(&mut sub, Duration::from_secs(2)).await {
        match status_of(&m) {
            Some(100) => {
                assert_eq!(m.description.as_deref(), Some("Idle Heartbeat"));
                beats += 1;
            }
            s => {
                last = s;
                break;
            }
        }
    }
    assert!(beats >= 3, "{beats} heartbeats");
    assert_eq!(last, Some(408));
    // max_bytes smaller than the next message: 409 Message Size Exceeds MaxBytes.
    publish(&nc, "s.d", &"x".repeat(200)).await;
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 2, "expires": 1000 * MS, "max_bytes": 50}),
    )
    .await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert_eq!(status_of(&m), Some(409));
    assert_eq!(
        m.description.as_deref(),
        Some("Message Size Exceeds MaxBytes")
    );
    assert_eq!(header(&m, "Nats-Pending-Messages").as_deref(), Some("2"));
    assert_eq!(header(&m, "Nats-Pending-Bytes").as_deref(), Some("50"));
    // Limits of the consumer: 409 Exceeded MaxRequestBatch.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 6})).await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert_eq!(status_of(&m), Some(409));
    assert_eq!(
        m.description.as_deref(),
        Some("Exceeded MaxRequestBatch of 5")
    );
    // A request still waiting when its consumer is deleted: 409 Consumer Deleted.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 5, "expires": 5000 * MS})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(sseq(&m), 5);
    api_ok(&nc, "$JS.API.CONSUMER.DELETE.S.p", Value::Null).await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert_eq!(status_of(&m), Some(409));
    assert_eq!(m.description.as_deref(), Some("Consumer Deleted"));
}

#[tokio::test]
async fn pull_statuses_on_the_wire() {
    // The raw frame of a 408, as a client library parses it.
    let (server, nc) = s_with(&[]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "raw", "ack_policy": "explicit"}),
    )
    .await;
    let mut c = raw_client(&server);
    c.send(b"SUB in 1\r\n");
    c.send(&pub_frame(
        "$JS.API.CONSUMER.MSG.NEXT.S.raw",
        "in",
        r#"{"batch":3,"expires":200000000}"#,
    ));
    let m = c.read_msg();
    assert_eq!((m.subject.as_str(), m.reply.as_deref()), ("in", None));
    assert_eq!(
        String::from_utf8(m.headers.unwrap()).unwrap(),
        "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"
    );
    assert!(m.payload.is_empty());
    c.send(&pub_frame(
        "$JS.API.CONSUMER.MSG.NEXT.S.raw",
        "in",
        r#"{"batch":1,"no_wait":true}"#,
    ));
    let m = c.read_msg();
    assert_eq!(
        String::from_utf8(m.headers.unwrap()).unwrap(),
        "NATS/1.0 404 No Messages\r\n\r\n"
    );
}

#[tokio::test]
async fn push_consumer_deliver_group_shares_the_messages() {
    let (_server, nc) = s_with(&[]).await;
    let mut a = nc
        .queue_subscribe("grp.deliver", "workers".into())
        .await
        .unwrap();
    let mut b = nc
        .queue_subscribe("grp.deliver", "workers".into())
        .await
        .unwrap();
    nc.flush().await.unwrap();
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "grp", "deliver_subject": "grp.deliver",
               "deliver_group": "workers", "ack_policy": "explicit"}),
    )
    .await;
    for i in 1..=40 {
        publish(&nc, "s.x", &format!("m{i}")).await;
    }
    let mut seen = Vec::new();
    let (mut na, mut nb) = (0, 0);
    while seen.len() < 40 {
        let m = tokio::select! {
            m = a.next() => { na += 1; m }
            m = b.next() => { nb += 1; m }
            _ = tokio::time::sleep(Duration::from_secs(3)) => panic!("only {} delivered", seen.len()),
        }
        .unwrap();
        seen.push(sseq(&m));
        ack(&nc, &m, "+ACK").await;
    }
    seen.sort();
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>(), "each exactly once");
    assert!(na > 0 && nb > 0, "both members got some: {na} {nb}");
    let info = consumer_info(&nc, "S", "grp").await;
    assert_eq!(info["config"]["deliver_group"], "workers");
}

#[tokio::test]
async fn push_consumer_idle_heartbeats_and_flow_control() {
    let (server, nc) = s_with(&["s.a"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "fc", "deliver_subject": "fc.deliver", "ack_policy": "none",
               "idle_heartbeat": 200 * MS, "flow_control": true}),
    )
    .await;
    let mut c = raw_client(&server);
    c.send(b"SUB fc.deliver 1\r\n");
    let m = c.read_msg();
    assert_eq!(m.subject, "s.a");
    // Idle: heartbeats with the last delivered sequences.
    let t0 = Instant::now();
    let hb = c.read_msg();
    assert!(t0.elapsed() < Duration::from_millis(1000));
    assert_eq!(hb.subject, "fc.deliver");
    let h = String::from_utf8(hb.headers.unwrap()).unwrap();
    assert!(h.starts_with("NATS/1.0 100 Idle Heartbeat\r\n"), "{h:?}");
    assert!(h.contains("Nats-Last-Consumer: 1\r\n"), "{h:?}");
    assert!(h.contains("Nats-Last-Stream: 1\r\n"), "{h:?}");
    assert!(hb.payload.is_empty());
    // Flow control: with megabytes in flight the server asks; unanswered, delivery stalls and
    // heartbeats name the pending request; answered, the rest follows.
    let big = "y".repeat(100_000);
    for _ in 0..40 {
        publish(&nc, "s.b", &big).await;
    }
    let mut msgs = 0;
    let mut fc = None;
    let stalled_hb = loop {
        let m = c.read_msg();
        let Some(h) = m.headers.as_ref().filter(|_| m.payload.is_empty()) else {
            msgs += 1;
            continue;
        };
        let h = String::from_utf8_lossy(h).to_string();
        if h.starts_with("NATS/1.0 100 FlowControl Request") {
            let reply = m.reply.expect("flow control has a reply");
            assert!(reply.starts_with("$JS.FC.S.fc."), "{reply}");
            assert!(
                fc.is_none(),
                "a second request before the first was answered"
            );
            fc = Some(reply);
        } else {
            assert!(h.starts_with("NATS/1.0 100 Idle Heartbeat"), "{h:?}");
            break h;
        }
    };
    let fc = fc.expect("no flow control request");
    assert!(msgs < 40, "delivery did not stall: {msgs}");
    assert!(
        stalled_hb.contains(&format!("Nats-Consumer-Stalled: {fc}\r\n")),
        "{stalled_hb:?}"
    );
    c.send(format!("PUB {fc} 0\r\n\r\n").as_bytes());
    while msgs < 40 {
        let m = c.read_msg();
        let Some(h) = m.headers.as_ref().filter(|_| m.payload.is_empty()) else {
            msgs += 1;
            continue;
        };
        let h = String::from_utf8_lossy(h).to_string();
        if h.starts_with("NATS/1.0 100 FlowControl Request") {
            c.send(format!("PUB {} 0\r\n\r\n", m.reply.unwrap()).as_bytes());
        }
    }
}

#[tokio::test]
async fn acks_nak_delay_progress_term_next_and_double_ack() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.d", "s.e"]).await;
    let one = |name: &str, filter: &str, ack_wait: u64| {
        json!({"durable_name": name, "ack_policy": "explicit", "ack_wait": ack_wait * MS,
               "filter_subject": filter})
    };
    let next = |nc: &async_nats::Client, name: &'static str| {
        let nc = nc.clone();
        async move { pull(&nc, "S", name, json!({"batch": 1, "expires": 3000 * MS})).await }
    };
    // The reply subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "a", "ack_policy": "explicit", "ack_wait": 5000 * MS}),
    )
    .await;
    let before = now_ns();
    let mut sub = next(&nc, "a").await;
    let m1 = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    let t = ack_tokens(&m1);
    assert_eq!(t.len(), 9, "{t:?}");
    assert_eq!(&t[..7], ["$JS", "ACK", "S", "a", "1", "1", "1"]);
    let ts: i64 = t[7].parse().unwrap();
    assert!(
        ts <= before && ts > before - 10_000_000_000,
        "{ts} {before}"
    );
    assert_eq!(t[8], "4", "messages left after this one");
    // -NAK: redelivered at once (before the messages not yet delivered), with a new
    // consumer sequence.
    ack_sync(&nc, &m1, "-NAK").await;
    let mut sub = next(&nc, "a").await;
    let m1b = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    let t = ack_tokens(&m1b);
    assert_eq!(&t[4..7], ["2", "1", "2"]);
    // Double ack: the empty reply comes once the ack is applied.
    let r = within(
        "double ack",
        nc.request(m1b.reply.clone().unwrap(), Bytes::from_static(b"+ACK")),
    )
    .await
    .unwrap();
    assert!(r.payload.is_empty());
    let info = consumer_info(&nc, "S", "a").await;
    assert_eq!(
        (&info["num_ack_pending"], &info["ack_floor"]["stream_seq"]),
        (&json!(0), &json!(1)),
        "{info}"
    );

    // -NAK with a delay: redelivered after the delay, not the (long) ack wait.
    add_consumer(&nc, "S", one("d", "s.b", 5000)).await;
    let mut sub = next(&nc, "d").await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    let t0 = Instant::now();
    ack(&nc, &m, &format!("-NAK {{\"delay\": {}}}", 300 * MS)).await;
    let mut sub = next(&nc, "d").await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    let waited = t0.elapsed();
    assert_eq!((sseq(&m), delivered(&m)), (2, 2));
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );

    // +WPI: each one restarts the 400 ms ack wait.
    add_consumer(&nc, "S", one("w", "s.d", 400)).await;
    let mut sub = next(&nc, "w").await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    let t0 = Instant::now();
    let mut sub = next(&nc, "w").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ack_sync(&nc, &m, "+WPI").await;
    }
    assert!(
        recv(&mut sub, Duration::from_millis(200)).await.is_none(),
        "redelivered despite +WPI"
    );
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!((sseq(&m), delivered(&m)), (4, 2));
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    // +NXT: acks it and asks for the next one on the ack's reply subject.
    let inbox = nc.new_inbox();
    let mut more = nc.subscribe(inbox.clone()).await.unwrap();
    nc.publish_with_reply(m.reply.clone().unwrap(), inbox, Bytes::from_static(b"+NXT"))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    publish(&nc, "s.d", "m6").await;
    let m6 = recv(&mut more, Duration::from_secs(1)).await.unwrap();
    assert_eq!((sseq(&m6), delivered(&m6)), (6, 1));
    ack_sync(&nc, &m6, "+ACK").await;
    let info = consumer_info(&nc, "S", "w").await;
    assert_eq!(
        (&info["num_ack_pending"], &info["ack_floor"]["stream_seq"]),
        (&json!(0), &json!(6)),
        "{info}"
    );

    // +TERM: never redelivered, with an advisory.
    let mut term_adv = nc
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.S.t")
        .await
        .unwrap();
    add_consumer(&nc, "S", one("t", "s.e", 200)).await;
    let mut sub = next(&nc, "t").await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    ack_sync(&nc, &m, "+TERM").await;
    let a = within("terminated advisory", term_adv.next())
        .await
        .unwrap();
    let a: Value = serde_json::from_slice(&a.payload).unwrap();
    assert_eq!(a["type"], "io.nats.jetstream.advisory.v1.terminated", "{a}");
    assert_eq!(
        (&a["stream_seq"], &a["consumer"]),
        (&json!(5), &json!("t")),
        "{a}"
    );
    let mut sub = pull(&nc, "S", "t", json!({"batch": 1, "expires": 600 * MS})).await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(2)).await;
    assert!(msgs.is_empty(), "terminated message redelivered");
    assert_eq!(end.as_ref().and_then(status_of), Some(408));
    let info = consumer_info(&nc, "S", "t").await;
    assert_eq!(info["num_ack_pending"], 0, "{info}");
}

async fn stream_msgs(nc: &async_nats::Client, name: &str) -> u64 {
    let info = api_ok(nc, &format!("$JS.API.STREAM.INFO.{name}"), Value::Null).await;
    info["state"]["messages"].as_u64().unwrap()
}

#[tokio::test]
async fn workqueue_and_interest_retention_remove_acked_messages() {
    let server = Js::start();
    let nc = core(&server).await;
    add_stream(
        &nc,
        json!({"name": "WQ", "subjects": ["wq.>"], "retention": "workqueue"}),
    )
    .await;
    for i in 1..=4 {
        publish(&nc, "wq.job", &format!("j{i}")).await;
    }
    add_consumer(
        &nc,
        "WQ",
        json!({"durable_name": "w", "ack_policy": "explicit"}),
    )
    .await;
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.WQ.w2",
        json!({"stream_name": "WQ", "config": {"durable_name": "w2", "ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(
        r["error"]["err_code"], 10099,
        "a second unfiltered workqueue consumer: {r}"
    );
    let mut sub = pull(&nc, "WQ", "w", json!({"batch": 3, "expires": 1000 * MS})).await;
    let (msgs, _) = collect(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(seqs(&msgs), [1, 2, 3]);
    ack_sync(&nc, &msgs[0], "+ACK").await;
    ack_sync(&nc, &msgs[2], "+ACK").await;
    assert_eq!(stream_msgs(&nc, "WQ").await, 2, "acked work is removed");

    add_stream(
        &nc,
        json!({"name": "IN", "subjects": ["in.>"], "retention": "interest"}),
    )
    .await;
    publish(&nc, "in.nobody", "no consumer wants this").await;
    assert_eq!(stream_msgs(&nc, "IN").await, 0, "kept without interest");
    for name in ["c1", "c2"] {
        api_ok(
            &nc,
            &format!("$JS.API.CONSUMER.CREATE.IN.{name}"),
            json!({"stream_name": "IN", "config": {"durable_name": name, "ack_policy": "explicit"}}),
        )
        .await;
    }
    publish(&nc, "in.a", "x").await; // 2
    publish(&nc, "in.b", "y").await; // 3
    let mut got = Vec::new();
    for name in ["c1", "c2"] {
        let mut sub = pull(&nc, "IN", name, json!({"batch": 2, "expires": 1000 * MS})).await;
        let (msgs, _) = collect(&mut sub, Duration::from_millis(300)).await;
        assert_eq!(seqs(&msgs), [2, 3]);
        got.push(msgs);
    }
    ack_sync(&nc, &got[0][0], "+ACK").await;
    ack_sync(&nc, &got[0][1], "+ACK").await;
    assert_eq!(stream_msgs(&nc, "IN").await, 2, "c2 still needs both");
    ack_sync(&nc, &got[1][0], "+ACK").await;
    assert_eq!(stream_msgs(&nc, "IN").await, 1, "both acked message 2");
    // Deleting the consumer that still needs message 3 releases it.
    api_ok(&nc, "$JS.API.CONSUMER.DELETE.IN.c2", Value::Null).await;
    assert_eq!(stream_msgs(&nc, "IN").await, 0);
}

#[tokio::test]
async fn kv_watch_of_one_key_and_revision_conflicts() {
    let server = Js::start();
    let js = js(&server).await;
    let kv = within(
        "create bucket",
        js.create_key_value(kv::Config {
            bucket: "cfg".into(),
            history: 3,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let mut watch = within("watch", kv.watch("a")).await.unwrap();
    let r1 = kv.create("a", "1".into()).await.unwrap();
    kv.put("b", "other".into()).await.unwrap();
    let err = kv.create("a", "again".into()).await.unwrap_err();
    assert_eq!(err.kind(), kv::CreateErrorKind::AlreadyExists, "{err}");
    let r2 = kv.update("a", "2".into(), r1).await.unwrap();
    assert!(r2 > r1);
    let err = kv.update("a", "stale".into(), r1).await.unwrap_err();
    assert_eq!(err.kind(), kv::UpdateErrorKind::WrongLastRevision, "{err}");
    kv.delete("a").await.unwrap();
    // Create succeeds again on a deleted key.
    let r3 = kv.create("a", "3".into()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = within("watch entry", watch.next()).await.unwrap().unwrap();
        seen.push((e.key.clone(), e.operation, e.revision));
    }
    use kv::Operation::{Delete, Put};
    assert_eq!(seen[0], ("a".to_string(), Put, r1));
    assert_eq!(seen[1], ("a".to_string(), Put, r2));
    assert_eq!((seen[2].0.as_str(), seen[2].1), ("a", Delete));
    assert_eq!(seen[3], ("a".to_string(), Put, r3));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watch.next())
            .await
            .is_err(),
        "nothing about other keys"
    );
}

#[tokio::test]
async fn pull_partial_batches_waiting_count_and_refusals() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "p", "ack_policy": "explicit"}),
    )
    .await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "push", "deliver_subject": "pd"}),
    )
    .await;
    // max_bytes reached part-way: what fits, then a 409 with what is left of the request.
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 3, "max_bytes": 70, "expires": 500 * MS}),
    )
    .await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [1]);
    let end = end.unwrap();
    assert_eq!(
        (status_of(&end), end.description.as_deref()),
        (Some(409), Some("Message Size Exceeds MaxBytes"))
    );
    assert_eq!(header(&end, "Nats-Pending-Messages").as_deref(), Some("2"));
    let used = 70
        - header(&end, "Nats-Pending-Bytes")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    assert!(used > 2 && used < 70, "bytes counted for message 1: {used}");
    // Expiry after a partial batch: the 408 carries the messages and bytes still owed.
    let mut sub = pull(
        &nc,
        "S",
        "p",
        json!({"batch": 3, "max_bytes": 5000, "expires": 300 * MS}),
    )
    .await;
    let (msgs, end) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [2, 3]);
    let end = end.unwrap();
    assert_eq!(status_of(&end), Some(408));
    assert_eq!(header(&end, "Nats-Pending-Messages").as_deref(), Some("1"));
    assert_eq!(
        header(&end, "Nats-Pending-Bytes").unwrap(),
        (5000 - 2 * used).to_string(),
        "both messages have the same size"
    );
    // A pull from a push consumer; from a consumer that does not exist (no responders).
    let mut sub = pull(&nc, "S", "push", json!({"batch": 1})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        (status_of(&m), m.description.as_deref()),
        (Some(409), Some("Consumer is push based"))
    );
    let mut sub = pull(&nc, "S", "nope", json!({"batch": 1})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(status_of(&m), Some(503));
    // num_waiting counts requests still waiting, not those whose requester went away.
    let mut sub = pull(&nc, "S", "p", json!({"batch": 3, "expires": 5000 * MS})).await;
    let info = info_when(&nc, "S", "p", "num_waiting", json!(1)).await;
    assert_eq!(info["num_waiting"], 1, "{info}");
    sub.unsubscribe().await.unwrap();
    common::sync(&nc).await;
    let info = info_when(&nc, "S", "p", "num_waiting", json!(0)).await;
    assert_eq!(info["num_waiting"], 0, "{info}");
    // A pause in the past is no pause; a deliver subject inside the stream is refused.
    let r = api_ok(
        &nc,
        "$JS.API.CONSUMER.PAUSE.S.p",
        json!({"pause_until": rfc3339(now_ns() - 1_000_000_000)}),
    )
    .await;
    assert_eq!(r["paused"], false, "{r}");
    assert!(r.get("pause_remaining").is_none(), "{r}");
    let r = api(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.cyc",
        json!({"stream_name": "S", "config": {"durable_name": "cyc", "deliver_subject": "s.x"}}),
    )
    .await;
    assert_eq!(r["error"]["err_code"], 10081, "{r}");
    // A NAK delay in Go duration form.
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "n", "ack_policy": "explicit", "filter_subject": "s.a"}),
    )
    .await;
    let mut sub = pull(&nc, "S", "n", json!({"batch": 1})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    let t0 = Instant::now();
    ack_sync(&nc, &m, "-NAK 300ms").await;
    let mut sub = pull(&nc, "S", "n", json!({"batch": 1, "expires": 2000 * MS})).await;
    let m = recv(&mut sub, Duration::from_secs(2)).await.unwrap();
    assert_eq!((sseq(&m), delivered(&m)), (1, 2));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
}

/// The next `n` push deliveries (skipping heartbeats): (stream seq, delivery count, message).
async fn push_take(sub: &mut Subscriber, n: usize) -> Vec<(u64, u64, Message)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = within("push delivery", sub.next()).await.unwrap();
        if m.status.is_none() {
            out.push((sseq(&m), delivered(&m), m));
        }
    }
    out
}

#[tokio::test]
async fn push_consumer_redelivers_after_ack_wait_within_max_ack_pending() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.d"]).await;
    let mut sub = nc.subscribe("pd").await.unwrap();
    nc.flush().await.unwrap();
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "push", "deliver_subject": "pd", "ack_policy": "explicit",
               "ack_wait": 300 * MS, "max_ack_pending": 2}),
    )
    .await;
    let first = push_take(&mut sub, 2).await;
    let t0 = Instant::now();
    let pairs: Vec<(u64, u64)> = first.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(pairs, [(1, 1), (2, 1)]);
    assert!(
        recv(&mut sub, Duration::from_millis(150)).await.is_none(),
        "max_ack_pending holds 3 back"
    );
    let again = push_take(&mut sub, 2).await;
    let pairs: Vec<(u64, u64)> = again.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(pairs, [(1, 2), (2, 2)]);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    for (_, _, m) in &again {
        ack_sync(&nc, m, "+ACK").await;
    }
    let rest = push_take(&mut sub, 2).await;
    let pairs: Vec<(u64, u64)> = rest.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(pairs, [(3, 1), (4, 1)]);
    let info = consumer_info(&nc, "S", "push").await;
    assert_eq!(
        (
            &info["num_ack_pending"],
            &info["ack_floor"]["stream_seq"],
            &info["push_bound"]
        ),
        (&json!(2), &json!(2), &json!(true)),
        "{info}"
    );
}

#[tokio::test]
async fn consumer_config_defaults_and_validation() {
    let (_server, nc) = s_with(&["s.a"]).await;
    // (config, Ok(fields the stored config must have) or Err(err_code))
    let cases: Vec<(Value, Result<Value, u64>)> = vec![
        (
            json!({}),
            Ok(
                json!({"ack_policy": "none", "deliver_policy": "all", "max_deliver": -1,
                              "max_waiting": 512, "replay_policy": "instant",
                              "inactive_threshold": 5_000_000_000u64}),
            ),
        ),
        (
            json!({"ack_policy": "explicit"}),
            Ok(json!({"ack_wait": 30_000_000_000u64, "max_ack_pending": 1000})),
        ),
        (
            json!({"deliver_subject": "d1", "deliver_group": "g", "flow_control": true,
                "idle_heartbeat": 1000 * MS}),
            Ok(json!({"deliver_group": "g"})),
        ),
        (
            json!({"deliver_subject": "d1", "deliver_group": "g", "idle_heartbeat": 1000 * MS}),
            Ok(json!({"deliver_group": "g"})),
        ),
        (json!({"flow_control": true}), Err(10089)),
        (json!({"idle_heartbeat": 1000 * MS}), Err(10088)),
        (
            json!({"deliver_subject": "d1", "flow_control": true}),
            Err(10108),
        ),
        (
            json!({"deliver_subject": "d1", "idle_heartbeat": 50 * MS}),
            Err(10083),
        ),
        (json!({"deliver_subject": "d.*"}), Err(10079)),
        (json!({"deliver_subject": "s.x"}), Err(10081)),
        (
            json!({"deliver_subject": "d1", "max_waiting": 3}),
            Err(10080),
        ),
        // Accepted on push consumers (and unused).
        (
            json!({"deliver_subject": "d1", "max_batch": 3, "max_expires": 3, "max_bytes": 3}),
            Ok(json!({"max_batch": 3, "max_expires": 3, "max_bytes": 3})),
        ),
        (
            json!({"deliver_subject": "d1", "max_waiting": -3}),
            Ok(json!({"max_waiting": null})),
        ),
        // Negative limits fall back to defaults.
        (
            json!({"max_waiting": -3, "max_batch": -2, "max_bytes": -1, "max_expires": -5,
                "max_deliver": -5}),
            Ok(
                json!({"max_waiting": 512, "max_batch": null, "max_bytes": null,
                   "max_expires": null, "max_deliver": -1}),
            ),
        ),
        (
            json!({"ack_policy": "all", "max_ack_pending": -7}),
            Ok(json!({"max_ack_pending": -1})),
        ),
        (json!({"max_expires": MS / 2}), Err(10115)),
        // Backoff: the first value is the ack wait; no more than max_deliver values.
        (
            json!({"ack_policy": "explicit", "backoff": [MS, 2 * MS], "max_deliver": 2}),
            Ok(json!({"ack_wait": MS})),
        ),
        (
            json!({"ack_policy": "explicit", "backoff": [MS, 2 * MS], "max_deliver": 1}),
            Err(10116),
        ),
        (
            json!({"ack_policy": "explicit", "backoff": [MS], "ack_wait": 5 * MS}),
            Ok(json!({"ack_wait": MS})),
        ),
        (
            json!({"ack_policy": "none", "backoff": [MS]}),
            Ok(json!({"ack_wait": MS})),
        ),
        (
            json!({"filter_subject": "t.a"}),
            Ok(json!({"filter_subject": "t.a"})),
        ),
        (
            json!({"filter_subject": "s.a", "filter_subjects": ["s.b"]}),
            Err(10136),
        ),
        (json!({"filter_subjects": ["s.>", "s.a"]}), Err(10138)),
        (json!({"rate_limit_bps": 1000}), Err(10086)),
        (json!({"name": "a.b"}), Err(10052)),
        (json!({"deliver_policy": "by_start_sequence"}), Err(10094)),
        (
            json!({"deliver_policy": "all", "opt_start_seq": 3}),
            Err(10094),
        ),
        (
            json!({"deliver_policy": "by_start_time", "opt_start_time": "garbage"}),
            Err(10025),
        ),
        (json!({"ack_wait": -1}), Err(10183)),
        (json!({"num_replicas": 3}), Err(10074)),
        (
            json!({"sample_freq": "200%"}),
            Ok(json!({"sample_freq": "200%"})),
        ),
        (json!({"sample_freq": "x%"}), Err(10095)),
        (json!({"sample_freq": "-5%"}), Err(10095)),
        (json!({"description": "x".repeat(5000)}), Err(10107)),
    ];
    for (config, want) in cases {
        let r = api(
            &nc,
            "$JS.API.CONSUMER.CREATE.S",
            json!({"stream_name": "S", "config": config}),
        )
        .await;
        match want {
            Err(code) => assert_eq!(r["error"]["err_code"], code, "{config}: {r}"),
            Ok(fields) => {
                assert!(r.get("error").is_none(), "{config}: {r}");
                for (k, v) in fields.as_object().unwrap() {
                    assert_eq!(&r["config"][k], v, "{config}: {k} in {r}");
                }
                let name = r["name"].as_str().unwrap();
                api_ok(
                    &nc,
                    &format!("$JS.API.CONSUMER.DELETE.S.{name}"),
                    Value::Null,
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn consumer_updates_take_effect_or_are_refused() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.a"]).await;
    let base = json!({"durable_name": "u", "ack_policy": "explicit", "filter_subject": "s.a"});
    add_consumer(&nc, "S", base.clone()).await;
    let update = |change: Value| {
        let mut cfg = base.clone();
        cfg.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        json!({"stream_name": "S", "action": "update", "config": cfg})
    };
    for (change, refusal) in [
        (
            json!({"deliver_policy": "new"}),
            "deliver policy can not be updated",
        ),
        (
            json!({"ack_policy": "all"}),
            "ack policy can not be updated",
        ),
        (
            json!({"replay_policy": "original"}),
            "replay policy can not be updated",
        ),
        (json!({"max_waiting": 10}), "max waiting can not be updated"),
        (
            json!({"mem_storage": true}),
            "storage type can not be updated",
        ),
        (
            json!({"deliver_subject": "x"}),
            "can not update pull consumer to push based",
        ),
    ] {
        let r = api(&nc, "$JS.API.CONSUMER.CREATE.S.u", update(change.clone())).await;
        assert_eq!(
            (&r["error"]["err_code"], &r["error"]["description"]),
            (&json!(10012), &json!(refusal)),
            "{change}: {r}"
        );
    }
    // A new filter and a short ack wait apply from then on.
    let r = api_ok(
        &nc,
        "$JS.API.CONSUMER.CREATE.S.u",
        update(json!({"filter_subject": "s.b", "ack_wait": 200 * MS, "description": "d"})),
    )
    .await;
    assert_eq!(r["config"]["description"], "d");
    assert_eq!(r["num_pending"], 1, "{r}");
    let mut sub = pull(&nc, "S", "u", json!({"batch": 5, "expires": 1000 * MS})).await;
    let t0 = Instant::now();
    let first = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!((sseq(&first), delivered(&first)), (2, 1));
    let again = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!((sseq(&again), delivered(&again)), (2, 2));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
}

/// (ack floor, delivered, ack pending, pending) stream-sequence view of a consumer.
fn counts(info: &Value) -> (u64, u64, u64, u64) {
    let n = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a number in {info}"))
    };
    (
        n(&info["ack_floor"]["stream_seq"]),
        n(&info["delivered"]["stream_seq"]),
        n(&info["num_ack_pending"]),
        n(&info["num_pending"]),
    )
}

#[tokio::test]
async fn stream_deletes_purges_and_limits_reach_the_consumers() {
    let (_server, nc) = s_with(&["s.a", "s.b", "s.c", "s.d", "s.e"]).await;
    add_consumer(
        &nc,
        "S",
        json!({"durable_name": "c", "ack_policy": "explicit", "ack_wait": 30_000 * MS}),
    )
    .await;
    let mut sub = pull(&nc, "S", "c", json!({"batch": 2})).await;
    let (msgs, _) = collect(&mut sub, Duration::from_millis(200)).await;
    assert_eq!(seqs(&msgs), [1, 2]);
    // Deleting a pending message (1) and an undelivered one (4).
    for seq in [1, 4] {
        api_ok(&nc, "$JS.API.STREAM.MSG.DELETE.S", json!({"seq": seq})).await;
    }
    let info = info_when(&nc, "S", "c", "num_ack_pending", json!(1)).await;
    assert_eq!(counts(&info), (1, 2, 1, 2), "{info}");
    let mut sub = pull(&nc, "S", "c", json!({"batch": 5, "no_wait": true})).await;
    let (msgs, _) = collect(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(seqs(&msgs), [3, 5]);
    // A purge drops every pending ack.
    api_ok(&nc, "$JS.API.STREAM.PURGE.S", json!({})).await;
    let info = info_when(&nc, "S", "c", "num_ack_pending", json!(0)).await;
    assert_eq!(counts(&info), (5, 5, 0, 0), "{info}");
    // A purge that removes the next message to deliver moves the consumer past it.
    publish(&nc, "s.f", "6").await;
    publish(&nc, "s.g", "7").await;
    publish(&nc, "s.f", "8").await;
    api_ok(&nc, "$JS.API.STREAM.PURGE.S", json!({"filter": "s.f"})).await;
    let info = consumer_info(&nc, "S", "c").await;
    assert_eq!(counts(&info), (6, 6, 0, 1), "{info}");
    // Deleting the stream ends waiting pulls.
    let mut sub = pull(&nc, "S", "c", json!({"batch": 5, "expires": 3000 * MS})).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(sseq(&m), 7);
    api_ok(&nc, "$JS.API.STREAM.DELETE.S", Value::Null).await;
    let m = recv(&mut sub, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        (status_of(&m), m.description.as_deref()),
        (Some(409), Some("Consumer Deleted"))
    );
    // Limits: messages pushed out of the stream are no longer pending, acked or not.
    add_stream(
        &nc,
        json!({"name": "L", "subjects": ["l.>"], "max_msgs": 3}),
    )
    .await;
    for i in 0..3 {
        publish(&nc, "l.x", &i.to_string()).await;
    }
    add_consumer(
        &nc,
        "L",
        json!({"durable_name": "c", "ack_policy": "explicit"}),
    )
    .await;
    let mut sub = pull(&nc, "L", "c", json!({"batch": 1})).await;
    assert_eq!(
        seqs(&collect(&mut sub, Duration::from_millis(200)).await.0),
        [1]
    );
    for i in 3..6 {
        publish(&nc, "l.x", &i.to_string()).await;
    }
    let info = info_when(&nc, "L", "c", "num_pending", json!(3)).await;
    assert_eq!(counts(&info), (1, 1, 0, 3), "{info}");
}

#[tokio::test]
async fn consumer_definitions_and_state_survive_a_restart() {
    let store = temp_dir();
    let eph;
    {
        let server = js_server(&store);
        let nc = core(&server).await;
        add_stream(&nc, json!({"name": "S", "subjects": ["s.>"]})).await;
        for i in 0..4 {
            publish(&nc, "s.a", &i.to_string()).await;
        }
        let r = add_consumer(
            &nc,
            "S",
            json!({"ack_policy": "explicit", "inactive_threshold": 60_000 * MS}),
        )
        .await;
        eph = r["name"].as_str().unwrap().to_string();
        add_consumer(
            &nc,
            "S",
            json!({"durable_name": "d", "ack_policy": "explicit"}),
        )
        .await;
        api_ok(
            &nc,
            "$JS.API.CONSUMER.CREATE.S.d",
            json!({"stream_name": "S", "config": {"durable_name": "d", "ack_policy": "explicit",
                   "max_deliver": 7, "description": "updated"}}),
        )
        .await;
        api_ok(
            &nc,
            "$JS.API.CONSUMER.PAUSE.S.d",
            json!({"pause_until": rfc3339(now_ns() + 60_000_000_000)}),
        )
        .await;
        add_consumer(
            &nc,
            "S",
            json!({"durable_name": "m", "ack_policy": "explicit", "mem_storage": true}),
        )
        .await;
        let mut sub = pull(&nc, "S", &eph, json!({"batch": 2})).await;
        let (msgs, _) = collect(&mut sub, Duration::from_millis(200)).await;
        ack_sync(&nc, &msgs[0], "+ACK").await;
        if !common::is_natter() {
            // nats-server writes consumer state a moment after confirming (see the crash test).
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(server); // SIGKILL
    }
    let server = js_server(&store);
    let nc = core(&server).await;
    // The ephemeral is back with its acks and pending message.
    let info = consumer_info(&nc, "S", &eph).await;
    assert_eq!(counts(&info), (1, 2, 1, 2), "{info}");
    // The durable with its updated config and its pause.
    let info = consumer_info(&nc, "S", "d").await;
    assert_eq!(
        (
            &info["config"]["max_deliver"],
            &info["config"]["description"],
            &info["paused"]
        ),
        (&json!(7), &json!("updated"), &json!(true)),
        "{info}"
    );
    // A consumer kept in memory is gone.
    let info = consumer_info(&nc, "S", "m").await;
    assert_eq!(info["error"]["err_code"], 10014, "{info}");
    let names = api_ok(&nc, "$JS.API.CONSUMER.NAMES.S", Value::Null).await;
    assert_eq!(names["total"], 2);
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn kv_watch_with_history_from_revision_history_and_keys() {
    let server = Js::start();
    let js = js(&server).await;
    let kv = within(
        "create bucket",
        js.create_key_value(kv::Config {
            bucket: "b".into(),
            history: 3,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    assert!(keys.is_empty());
    kv.put("a.1", "x".into()).await.unwrap();
    kv.put("a.2", "y".into()).await.unwrap();
    kv.put("b.1", "z".into()).await.unwrap();
    kv.put("a.1", "x2".into()).await.unwrap();
    async fn drain(w: &mut kv::Watch) -> Vec<(String, u64, u64, kv::Operation)> {
        let mut seen = vec![];
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), w.next()).await {
            let e = e.unwrap();
            seen.push((e.key, e.revision, e.delta, e.operation));
        }
        seen
    }
    use kv::Operation::{Delete, Put};
    // The latest value of each matching key, with what is left to catch up (delta).
    let mut w = kv.watch_with_history("a.*").await.unwrap();
    assert_eq!(
        drain(&mut w).await,
        [("a.2".into(), 2, 1, Put), ("a.1".into(), 4, 0, Put)]
    );
    let mut w = kv.watch_all_from_revision(2).await.unwrap();
    assert_eq!(
        drain(&mut w).await,
        [
            ("a.2".into(), 2, 2, Put),
            ("b.1".into(), 3, 1, Put),
            ("a.1".into(), 4, 0, Put)
        ]
    );
    let mut w = kv.watch("a.1").await.unwrap();
    kv.delete("a.1").await.unwrap();
    kv.put("a.1", "x3".into()).await.unwrap();
    assert_eq!(
        drain(&mut w).await,
        [("a.1".into(), 5, 0, Delete), ("a.1".into(), 6, 0, Put)]
    );
    // history and keys read through short-lived push consumers: they answer at once.
    let t0 = Instant::now();
    let h: Vec<(u64, kv::Operation)> = kv
        .history("a.1")
        .await
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.revision, e.operation)
        })
        .collect()
        .await;
    assert_eq!(h, [(4, Put), (5, Delete), (6, Put)]);
    let mut keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.sort();
    assert_eq!(keys, ["a.1", "a.2", "b.1"]);
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
}

/// Keys with their own TTL, in a bucket with limit markers (per-message TTLs and subject
/// delete markers underneath): the key goes, watchers see it purged, other keys stay.
#[tokio::test]
async fn kv_key_ttls_and_limit_markers() {
    let server = Js::start();
    let js = js(&server).await;
    let kv = within(
        "create bucket",
        js.create_key_value(kv::Config {
            bucket: "sessions".into(),
            limit_markers: Some(Duration::from_secs(1)),
            ..Default::default()
        }),
    )
    .await
    .expect("create bucket");
    let mut watch = within("watch", kv.watch_all()).await.unwrap();
    kv.create_with_ttl("token", "abc".into(), Duration::from_secs(1))
        .await
        .unwrap();
    kv.put("user", "ann".into()).await.unwrap();
    assert_eq!(kv.get("token").await.unwrap(), Some(Bytes::from("abc")));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = within("watch entry", watch.next()).await.unwrap().unwrap();
        seen.push((e.key, e.operation));
    }
    use kv::Operation::{Purge, Put};
    let seen: Vec<(&str, kv::Operation)> = seen.iter().map(|(k, o)| (k.as_str(), *o)).collect();
    assert_eq!(seen, [("token", Put), ("user", Put), ("token", Purge)]);
    assert_eq!(kv.get("token").await.unwrap(), None);
    assert_eq!(kv.get("user").await.unwrap(), Some(Bytes::from("ann")));
}
