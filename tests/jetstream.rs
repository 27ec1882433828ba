//! JetStream over TCP with the async-nats JetStream client: streams, publish acks, dedupe,
//! expected-* headers, limits, message get/delete, purge, direct get, account info,
//! persistence across restarts, and the API through a raw socket. Every expectation was
//! observed from nats-server 2.15.1 (`NATTER_TEST_SERVER=.venv/bin/nats-server` runs the same
//! tests against it); the few deliberate differences are marked with `is_natter()`.

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream, Context};
use common::{is_natter, temp_dir, Server};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

fn js_server(store: &std::path::Path) -> Server {
    Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()])
}

async fn js(server: &Server) -> Context {
    let client = within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect");
    jetstream::new(client)
}

/// A store directory, removed on drop (after the server: bind it first).
struct Store(std::path::PathBuf);

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh store, a server on it and a JetStream context.
async fn setup() -> (Store, Server, Context) {
    let store = Store(temp_dir());
    let server = js_server(&store.0);
    let js = js(&server).await;
    (store, server, js)
}

fn config(name: &str, subjects: &[&str]) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn create(js: &Context, cfg: stream::Config) -> stream::Stream {
    let name = cfg.name.clone();
    within("create", js.create_stream(cfg))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Publishes and waits for the ack.
async fn publish(
    js: &Context,
    subject: &str,
    payload: &'static str,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    within("publish", async {
        js.publish(subject.to_string(), payload.into())
            .await
            .expect("send")
            .await
    })
    .await
}

/// Publishes with headers (built by `f`) and waits for the ack.
async fn publish_with(
    js: &Context,
    subject: &str,
    payload: &'static str,
    f: impl FnOnce(jetstream::message::PublishMessage) -> jetstream::message::PublishMessage,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let msg = f(jetstream::message::PublishMessage::build().payload(payload.into()));
    within("publish", async {
        js.send_publish(subject.to_string(), msg)
            .await
            .expect("send")
            .await
    })
    .await
}

async fn seq(js: &Context, subject: &str) -> u64 {
    publish(js, subject, "x")
        .await
        .unwrap_or_else(|e| panic!("publish {subject}: {e}"))
        .sequence
}

/// Asserts a JetStream API error as the client reports it: `<description> (code <code>,
/// error code <err_code>)` at the end of the error's text.
#[track_caller]
fn assert_js_err<T, E: std::fmt::Display>(
    r: Result<T, E>,
    code: u16,
    err_code: u32,
    description: &str,
) {
    let Err(e) = r else {
        panic!("expected a JetStream error, got a success")
    };
    let e = e.to_string();
    let want = format!("{description} (code {code}, error code {err_code})");
    assert!(e.ends_with(&want), "got {e:?}, want ...{want:?}");
}

/// For the errors the client reports by kind alone (no codes): the kind's text.
#[track_caller]
fn assert_err_text<T, E: std::fmt::Display>(r: Result<T, E>, text: &str) {
    let Err(e) = r else {
        panic!("expected an error, got a success")
    };
    assert_eq!(e.to_string(), text);
}

/// A raw `$JS.API.<api>` request through the client; the reply as JSON.
async fn raw(js: &Context, api: &str, body: Value) -> Value {
    within(api, js.request::<_, _, Value>(api.to_string(), &body))
        .await
        .unwrap_or_else(|e| panic!("{api}: {e}"))
}

/// The bytes a stored message is accounted as in stream state. nats-server counts 30 bytes of
/// overhead in a file store (4 more and the headers with headers) and 16 in a memory store;
/// natter reports its record size (34 bytes of framing), whichever the storage.
fn stored_size(storage: stream::StorageType, subject: &str, headers: usize, payload: usize) -> u64 {
    let base = (subject.len() + payload) as u64;
    if is_natter() {
        return base + headers as u64 + 34;
    }
    match storage {
        stream::StorageType::File if headers == 0 => base + 30,
        stream::StorageType::File => base + headers as u64 + 34,
        stream::StorageType::Memory => base + headers as u64 + 16,
    }
}

#[tokio::test]
async fn create_publish_and_get() {
    let (_store, _server, js) = setup().await;
    let mut s = create(&js, config("ORDERS", &["orders.>"])).await;
    for i in 1..=3u64 {
        let ack = publish(&js, &format!("orders.{i}"), "hello")
            .await
            .expect("ack");
        assert_eq!(ack.stream, "ORDERS");
        assert_eq!(ack.sequence, i);
        assert!(!ack.duplicate);
    }
    let info = within("info", s.info()).await.expect("info");
    assert_eq!(info.state.messages, 3);
    assert_eq!(info.state.first_sequence, 1);
    assert_eq!(info.state.last_sequence, 3);
    let msg = within("get", s.get_raw_message(2)).await.expect("get");
    assert_eq!(msg.subject.as_str(), "orders.2");
    assert_eq!(&msg.payload[..], b"hello");
}

#[tokio::test]
async fn stream_info_state_file_and_memory() {
    let (_store, _server, js) = setup().await;
    for (name, storage) in [
        ("F", stream::StorageType::File),
        ("M", stream::StorageType::Memory),
    ] {
        let lower = name.to_lowercase();
        let mut cfg = config(name, &[&format!("{lower}.>")]);
        cfg.storage = storage;
        cfg.description = Some("a stream".into());
        let mut s = create(&js, cfg.clone()).await;
        let fresh = s.cached_info().clone();
        assert_eq!(fresh.config.storage, storage);
        assert_eq!(fresh.config.description.as_deref(), Some("a stream"));
        assert_eq!(fresh.config.max_messages, -1);
        assert_eq!(fresh.config.num_replicas, 1);
        assert_eq!(fresh.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(fresh.state.messages, 0);
        assert_eq!(fresh.state.first_sequence, 0);
        assert_eq!(fresh.state.last_sequence, 0);

        let before = now_nanos();
        let subjects = [
            format!("{lower}.a"),
            format!("{lower}.b"),
            format!("{lower}.a"),
            format!("{lower}.c.d"),
        ];
        for (i, subj) in subjects.iter().enumerate() {
            assert_eq!(seq(&js, subj).await, i as u64 + 1);
        }
        let after = now_nanos();

        let info = within("info", s.info()).await.expect("info").clone();
        let st = &info.state;
        assert_eq!(st.messages, 4);
        let bytes: u64 = subjects.iter().map(|s| stored_size(storage, s, 0, 1)).sum();
        assert_eq!(st.bytes, bytes, "{name}");
        assert_eq!((st.first_sequence, st.last_sequence), (1, 4));
        let (first, last) = (
            st.first_timestamp.unix_timestamp_nanos(),
            st.last_timestamp.unix_timestamp_nanos(),
        );
        assert!(before <= first && first < last && last <= after, "{st:?}");
        assert_eq!(st.consumer_count, 0);
        assert_eq!(st.subjects_count, 3);

        // Per-subject counts, all and filtered.
        let counts: std::collections::HashMap<String, usize> = within(
            "subjects",
            s.info_with_subjects(">").await.unwrap().try_collect(),
        )
        .await
        .unwrap();
        let want = [
            (format!("{lower}.a"), 2),
            (format!("{lower}.b"), 1),
            (format!("{lower}.c.d"), 1),
        ];
        assert_eq!(counts, want.into_iter().collect());
        let counts: std::collections::HashMap<String, usize> = within(
            "subjects",
            s.info_with_subjects(format!("{lower}.a"))
                .await
                .unwrap()
                .try_collect(),
        )
        .await
        .unwrap();
        assert_eq!(counts, [(format!("{lower}.a"), 2)].into_iter().collect());

        // The same config again is fine; a different one is not.
        create(&js, cfg.clone()).await;
        let mut other = cfg.clone();
        other.max_messages = 10;
        assert_js_err(
            within("create", js.create_stream(other)).await,
            400,
            10058,
            "stream name already in use with a different configuration",
        );
    }
}

#[tokio::test]
async fn stream_create_and_update_errors() {
    let (_store, _server, js) = setup().await;
    create(&js, config("A", &["a.>"])).await;
    assert_js_err(
        within("overlap", js.create_stream(config("B", &["a.b"]))).await,
        400,
        10065,
        "subjects overlap with an existing stream",
    );
    // Without clustering nats-server refuses replicas just as natter does.
    let mut r3 = config("R3", &["r3"]);
    r3.num_replicas = 3;
    assert_js_err(
        within("r3", js.create_stream(r3)).await,
        500,
        10074,
        "replicas > 1 not supported in non-clustered mode",
    );
    let mut r6 = config("R6", &["r6"]);
    r6.num_replicas = 6;
    assert_js_err(
        within("r6", js.create_stream(r6)).await,
        500,
        10052,
        "maximum replicas is 5",
    );
    let mut age = config("AGE", &["age"]);
    age.max_age = Duration::from_millis(1);
    assert_js_err(
        within("age", js.create_stream(age)).await,
        500,
        10052,
        "max age needs to be >= 100ms",
    );

    // Names the client would refuse to send, as raw requests.
    let r = raw(&js, "STREAM.CREATE.a*b", json!({"name": "a*b"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 500, "err_code": 10052,
            "description": "stream name is required and can not contain '.', '*', '>', '\\', '/'"})
    );
    let r = raw(&js, "STREAM.CREATE.a\\b", json!({"name": "a\\b"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 400, "err_code": 10128,
            "description": "Stream name can not contain path separators"})
    );
    let r = raw(&js, "STREAM.CREATE.X", json!({"name": "Y"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 400, "err_code": 10056,
            "description": "stream name in subject does not match request"})
    );
    let r = raw(
        &js,
        "STREAM.CREATE.X",
        json!({"name": "X", "subjects": ["x.>.y"]}),
    )
    .await;
    assert_eq!(r["error"]["description"], "invalid subject");
    let r = raw(&js, "STREAM.CREATE.X", json!({"name": "X", "bogus": 1})).await;
    assert_eq!(
        r["error"],
        json!({"code": 400, "err_code": 10025,
            "description": "invalid JSON: json: unknown field \"bogus\""})
    );

    // Updates: mutable limits change, immutable fields are refused.
    let mut cfg = config("A", &["a.>"]);
    cfg.max_messages = 5;
    cfg.deny_delete = true;
    let info = within("update", js.update_stream(cfg.clone()))
        .await
        .unwrap();
    assert_eq!(info.config.max_messages, 5);
    assert!(info.config.deny_delete);
    let mut storage = cfg.clone();
    storage.storage = stream::StorageType::Memory;
    assert_js_err(
        within("update", js.update_stream(storage)).await,
        500,
        10052,
        "stream configuration update can not change storage type",
    );
    let mut undeny = cfg.clone();
    undeny.deny_delete = false;
    assert_js_err(
        within("update", js.update_stream(undeny)).await,
        500,
        10052,
        "stream configuration update can not cancel deny message deletes",
    );
    let mut overlap = cfg.clone();
    overlap.subjects.push("r3".into());
    create(&js, config("R", &["r3"])).await;
    assert_js_err(
        within("update", js.update_stream(overlap)).await,
        400,
        10065,
        "subjects overlap with an existing stream",
    );
    assert_err_text(
        within("update", js.update_stream(config("NOPE", &["nope"]))).await,
        "stream not found",
    );
    let r = raw(&js, "STREAM.UPDATE.NOPE", json!({"name": "NOPE"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 404, "err_code": 10059, "description": "stream not found"})
    );
}

#[tokio::test]
async fn names_list_and_delete() {
    let (_store, _server, js) = setup().await;
    // One more than a LIST page (256): memory streams are cheap to create.
    const N: usize = 257;
    for i in 0..N {
        let mut cfg = config(&format!("S{i:03}"), &[&format!("s.{i:03}")]);
        cfg.storage = stream::StorageType::Memory;
        create(&js, cfg).await;
    }
    let mut names: Vec<String> = within("names", js.stream_names().try_collect())
        .await
        .unwrap();
    names.sort();
    assert_eq!(names.len(), N);
    assert_eq!(names[0], "S000");
    assert_eq!(names[N - 1], format!("S{:03}", N - 1));
    let listed: Vec<stream::Info> = within("list", js.streams().try_collect()).await.unwrap();
    assert_eq!(listed.len(), N);

    // The pages themselves.
    let page = raw(&js, "STREAM.LIST", json!({})).await;
    assert_eq!(
        (page["total"].as_u64(), page["limit"].as_u64()),
        (Some(N as u64), Some(256))
    );
    assert_eq!(page["streams"].as_array().unwrap().len(), 256);
    let page = raw(&js, "STREAM.LIST", json!({"offset": 256})).await;
    assert_eq!(page["offset"], 256);
    assert_eq!(page["streams"][0]["config"]["name"], "S256");
    let page = raw(&js, "STREAM.NAMES", json!({"offset": 250})).await;
    assert_eq!(page["limit"], 1024);
    assert_eq!(page["streams"].as_array().unwrap().len(), N - 250);
    // An offset past the end is clamped to the total.
    let page = raw(&js, "STREAM.NAMES", json!({"offset": 1000})).await;
    assert_eq!(
        (page["offset"].as_u64(), page["streams"].is_null()),
        (Some(N as u64), true)
    );
    // Filtered by subject.
    let page = raw(&js, "STREAM.NAMES", json!({"subject": "s.007"})).await;
    assert_eq!(page["streams"], json!(["S007"]));
    assert_eq!(page["total"], 1);
    let page = raw(&js, "STREAM.NAMES", json!({"subject": "nothing"})).await;
    assert_eq!(
        (page["total"].as_u64(), page["streams"].is_null()),
        (Some(0), true)
    );

    // Delete: gone from names, its subject has no stream, a second delete is not found.
    assert!(
        within("delete", js.delete_stream("S007"))
            .await
            .unwrap()
            .success
    );
    let page = raw(&js, "STREAM.NAMES", json!({"subject": "s.007"})).await;
    assert_eq!(page["total"], 0);
    assert_js_err(
        within("delete", js.delete_stream("S007")).await,
        404,
        10059,
        "stream not found",
    );
    assert_js_err(
        within("info", js.get_stream("S007")).await,
        404,
        10059,
        "stream not found",
    );
    let err = publish(&js, "s.007", "x").await.unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::StreamNotFound);
}

#[tokio::test]
async fn publish_acks_dedupe_and_window() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("D", &["d.*"]);
    cfg.duplicate_window = Duration::from_millis(300);
    let mut s = create(&js, cfg).await;
    let ack = publish_with(&js, "d.a", "1", |p| p.message_id("m1"))
        .await
        .unwrap();
    assert_eq!(
        (ack.stream.as_str(), ack.sequence, ack.duplicate),
        ("D", 1, false)
    );
    let dup = publish_with(&js, "d.b", "2", |p| p.message_id("m1"))
        .await
        .unwrap();
    assert_eq!((dup.sequence, dup.duplicate), (1, true));
    let ack = publish_with(&js, "d.a", "3", |p| p.message_id("m2"))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.duplicate), (2, false));
    assert_eq!(within("info", s.info()).await.unwrap().state.messages, 2);
    // Past the window the id is new again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ack = publish_with(&js, "d.a", "4", |p| p.message_id("m1"))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.duplicate), (3, false));
}

#[tokio::test]
async fn expected_headers() {
    let (_store, _server, js) = setup().await;
    create(&js, config("E", &["e.*"])).await;
    assert_eq!(seq(&js, "e.a").await, 1);
    assert_eq!(seq(&js, "e.b").await, 2);

    let r = publish_with(&js, "e.a", "x", |p| p.expected_stream("OTHER")).await;
    assert_js_err(r, 400, 10060, "expected stream does not match");
    let ack = publish_with(&js, "e.a", "x", |p| p.expected_stream("E"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 3);

    let r = publish_with(&js, "e.a", "x", |p| p.expected_last_sequence(1)).await;
    assert_eq!(
        r.as_ref().unwrap_err().kind(),
        PublishErrorKind::WrongLastSequence
    );
    assert_js_err(r, 400, 10071, "wrong last sequence: 3");
    let ack = publish_with(&js, "e.a", "x", |p| p.expected_last_sequence(3))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 4);

    // Per subject: e.b was last stored at 2; a subject never seen is at 0.
    let r = publish_with(&js, "e.b", "x", |p| p.expected_last_subject_sequence(1)).await;
    assert_js_err(r, 400, 10071, "wrong last sequence: 2");
    let ack = publish_with(&js, "e.b", "x", |p| p.expected_last_subject_sequence(2))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 5);
    let ack = publish_with(&js, "e.new", "x", |p| p.expected_last_subject_sequence(0))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 6);

    let ack = publish_with(&js, "e.a", "x", |p| p.message_id("id-7"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 7);
    let r = publish_with(&js, "e.a", "x", |p| p.expected_last_message_id("id-6")).await;
    assert_eq!(
        r.as_ref().unwrap_err().kind(),
        PublishErrorKind::WrongLastMessageId
    );
    assert_js_err(r, 400, 10070, "wrong last msg ID: id-7");
    let ack = publish_with(&js, "e.a", "x", |p| p.expected_last_message_id("id-7"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 8);

    // A duplicate still fails an expected sequence (checked first) but wins over an expected
    // last msg id (checked after).
    let r = publish_with(&js, "e.a", "x", |p| {
        p.message_id("id-7").expected_last_sequence(1)
    })
    .await;
    assert_js_err(r, 400, 10071, "wrong last sequence: 8");
    let dup = publish_with(&js, "e.a", "x", |p| {
        p.message_id("id-7").expected_last_message_id("nope")
    })
    .await
    .unwrap();
    assert_eq!((dup.sequence, dup.duplicate), (7, true));

    // No per-message TTL on this stream; a bad value is reported as such first.
    let r = publish_with(&js, "e.a", "x", |p| p.header("Nats-TTL", "5s")).await;
    assert_js_err(r, 400, 10166, "per-message TTL is disabled");
    let r = publish_with(&js, "e.a", "x", |p| p.header("Nats-TTL", "soon")).await;
    assert_js_err(r, 400, 10165, "invalid per-message TTL");
}

#[tokio::test]
async fn rollups() {
    let (_store, _server, js) = setup().await;
    create(&js, config("NR", &["nr"])).await;
    let r = publish_with(&js, "nr", "x", |p| p.header("Nats-Rollup", "all")).await;
    assert_js_err(r, 500, 10111, "rollup not permitted");

    let mut cfg = config("R", &["r.*"]);
    cfg.allow_rollup = true;
    let mut s = create(&js, cfg).await;
    for subj in ["r.a", "r.a", "r.b", "r.b"] {
        seq(&js, subj).await;
    }
    let ack = publish_with(&js, "r.a", "sum", |p| p.header("Nats-Rollup", "sub"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 5);
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (3, 3, 5)
    );
    let r = publish_with(&js, "r.a", "x", |p| p.header("Nats-Rollup", "bad")).await;
    assert_js_err(r, 500, 10111, "rollup value invalid: \"bad\"");
    let ack = publish_with(&js, "r.c", "all", |p| p.header("Nats-Rollup", "all"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 6);
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (1, 6, 6)
    );
}

#[tokio::test]
async fn limits_discard_old() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("MSGS", &["msgs"]);
    cfg.max_messages = 2;
    let mut s = create(&js, cfg).await;
    for _ in 0..3 {
        seq(&js, "msgs").await;
    }
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (2, 2, 3)
    );

    let one = stored_size(stream::StorageType::File, "bytes", 0, 10);
    let mut cfg = config("BYTES", &["bytes"]);
    cfg.max_bytes = (2 * one) as i64;
    let mut s = create(&js, cfg).await;
    for _ in 0..3 {
        publish(&js, "bytes", "0123456789").await.unwrap();
    }
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!((st.messages, st.bytes, st.first_sequence), (2, 2 * one, 2));

    let mut cfg = config("PER", &["per.*"]);
    cfg.max_messages_per_subject = 2;
    let mut s = create(&js, cfg).await;
    for subj in ["per.a", "per.a", "per.a", "per.b"] {
        seq(&js, subj).await;
    }
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!((st.messages, st.first_sequence), (3, 2));

    let mut cfg = config("AGE", &["age"]);
    cfg.max_age = Duration::from_millis(500);
    let mut s = create(&js, cfg).await;
    seq(&js, "age").await;
    seq(&js, "age").await;
    assert_eq!(within("info", s.info()).await.unwrap().state.messages, 2);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (0, 3, 2)
    );
}

#[tokio::test]
async fn limits_discard_new_and_message_size() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("N", &["n"]);
    cfg.max_messages = 2;
    cfg.discard = stream::DiscardPolicy::New;
    create(&js, cfg).await;
    seq(&js, "n").await;
    seq(&js, "n").await;
    assert_js_err(
        publish(&js, "n", "x").await,
        503,
        10077,
        "maximum messages exceeded",
    );

    let mut cfg = config("NB", &["nb"]);
    cfg.max_bytes = 100;
    cfg.discard = stream::DiscardPolicy::New;
    create(&js, cfg).await;
    publish(&js, "nb", "01234567890123456789").await.unwrap();
    assert_js_err(
        publish(&js, "nb", "01234567890123456789").await,
        503,
        10077,
        "maximum bytes exceeded",
    );

    let mut cfg = config("PS", &["ps.*"]);
    cfg.max_messages_per_subject = 1;
    cfg.discard = stream::DiscardPolicy::New;
    cfg.discard_new_per_subject = true;
    create(&js, cfg).await;
    seq(&js, "ps.a").await;
    seq(&js, "ps.b").await;
    assert_js_err(
        publish(&js, "ps.a", "x").await,
        503,
        10077,
        "maximum messages per subject exceeded",
    );

    let mut cfg = config("SZ", &["sz"]);
    cfg.max_message_size = 10;
    create(&js, cfg).await;
    publish(&js, "sz", "0123456789").await.unwrap();
    assert_js_err(
        publish(&js, "sz", "0123456789a").await,
        400,
        10054,
        "message size exceeds maximum allowed",
    );
}

#[tokio::test]
async fn deny_delete_and_purge() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("DENY", &["deny"]);
    cfg.deny_delete = true;
    cfg.deny_purge = true;
    let s = create(&js, cfg).await;
    seq(&js, "deny").await;
    assert_js_err(
        within("delete", s.delete_message(1)).await,
        500,
        10057,
        "message delete not permitted",
    );
    assert_js_err(
        within("purge", s.purge().into_future()).await,
        500,
        10110,
        "stream purge not permitted",
    );
    let mut rollup = config("DENY", &["deny"]);
    rollup.deny_delete = true;
    rollup.deny_purge = true;
    rollup.allow_rollup = true;
    assert_js_err(
        within("update", js.update_stream(rollup)).await,
        500,
        10052,
        "roll-ups require the purge permission",
    );
}

#[tokio::test]
async fn get_and_delete_messages() {
    let (_store, _server, js) = setup().await;
    let s = create(&js, config("G", &["g.*"])).await;
    publish_with(&js, "g.a", "one", |p| p.header("Foo", "bar"))
        .await
        .unwrap();
    publish(&js, "g.b", "two").await.unwrap();
    publish(&js, "g.a", "three").await.unwrap();

    let m = within("get", s.get_raw_message(1)).await.unwrap();
    assert_eq!((m.subject.as_str(), m.sequence), ("g.a", 1));
    assert_eq!(&m.payload[..], b"one");
    assert_eq!(m.headers.get("Foo").map(|v| v.as_str()), Some("bar"));
    let m = within("last", s.get_last_raw_message_by_subject("g.a"))
        .await
        .unwrap();
    assert_eq!((m.sequence, &m.payload[..]), (3, &b"three"[..]));
    let m = within(
        "next",
        s.raw_message_builder()
            .sequence(2)
            .next_by_subject("g.a")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(m.sequence, 3);
    assert_err_text(
        within("get", s.get_raw_message(9)).await,
        "no message found",
    );
    assert_err_text(
        within("last", s.get_last_raw_message_by_subject("g.zz")).await,
        "no message found",
    );
    let r = raw(&js, "STREAM.MSG.GET.G", json!({"seq": 9})).await;
    assert_eq!(
        r["error"],
        json!({"code": 404, "err_code": 10037, "description": "no message found"})
    );

    assert!(within("delete", s.delete_message(2)).await.unwrap());
    assert_err_text(
        within("get", s.get_raw_message(2)).await,
        "no message found",
    );
    // A second delete, and one past the end, as a file store answers them.
    assert_js_err(
        within("delete", s.delete_message(2)).await,
        400,
        10043,
        "sequence 2 not found",
    );
    assert_js_err(
        within("delete", s.delete_message(9)).await,
        500,
        10057,
        "stream store EOF",
    );
    let info = within("info", s.info_builder().with_deleted(true).fetch())
        .await
        .unwrap();
    let st = &info.info.state;
    assert_eq!(
        (st.messages, st.deleted_count, st.deleted.clone()),
        (2, Some(1), Some(vec![2]))
    );
}

#[tokio::test]
async fn purge_variants() {
    let (_store, _server, js) = setup().await;
    let mut s = create(&js, config("P", &["p.*"])).await;
    for subj in ["p.a", "p.b", "p.a", "p.b", "p.a", "p.b"] {
        seq(&js, subj).await;
    }
    let r = within("purge", s.purge().filter("p.a").keep(1).into_future())
        .await
        .unwrap();
    assert_eq!((r.success, r.purged), (true, 2));
    // Below 4: only 2 is left there (1 and 3 went above).
    let r = within("purge", s.purge().sequence(4).into_future())
        .await
        .unwrap();
    assert_eq!(r.purged, 1);
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!((st.messages, st.first_sequence), (3, 4));
    let r = within("purge", s.purge().filter("p.b").into_future())
        .await
        .unwrap();
    assert_eq!(r.purged, 2);
    let r = within("purge", s.purge().into_future()).await.unwrap();
    assert_eq!(r.purged, 1);
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (0, 7, 6)
    );
    assert_eq!(seq(&js, "p.a").await, 7);
    // Both a sequence and a keep: a bad request.
    let r = raw(&js, "STREAM.PURGE.P", json!({"seq": 5, "keep": 1})).await;
    assert_eq!(
        r["error"],
        json!({"code": 400, "err_code": 10003, "description": "bad request"})
    );
    let r = raw(&js, "STREAM.PURGE.NOPE", json!({})).await;
    assert_eq!(r["error"]["err_code"], 10059);
}

#[tokio::test]
async fn direct_get() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("DG", &["dg.*"]);
    cfg.allow_direct = true;
    let s = create(&js, cfg).await;
    publish_with(&js, "dg.a", "one", |p| p.header("Foo", "bar"))
        .await
        .unwrap();
    publish(&js, "dg.b", "two").await.unwrap();
    publish(&js, "dg.a", "three").await.unwrap();

    let m = within("direct", s.direct_get(1)).await.unwrap();
    assert_eq!(
        (m.subject.as_str(), m.sequence, &m.payload[..]),
        ("dg.a", 1, &b"one"[..])
    );
    assert_eq!(m.headers.get("Foo").map(|v| v.as_str()), Some("bar"));
    assert_eq!(m.headers.get("Nats-Stream").map(|v| v.as_str()), Some("DG"));
    let m = within("last", s.direct_get_last_for_subject("dg.a"))
        .await
        .unwrap();
    assert_eq!((m.sequence, &m.payload[..]), (3, &b"three"[..]));
    let m = within("next", s.direct_get_next_for_subject("dg.b", Some(1)))
        .await
        .unwrap();
    assert_eq!(m.sequence, 2);
    let e = within("missing", s.direct_get(9)).await.unwrap_err();
    assert_eq!(e.kind(), stream::DirectGetErrorKind::NotFound);
    let e = within("missing", s.direct_get_last_for_subject("dg.zz"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), stream::DirectGetErrorKind::NotFound);

    // Without allow_direct nothing answers.
    let plain = create(&js, config("PLAIN", &["plain"])).await;
    seq(&js, "plain").await;
    assert!(within("direct", plain.direct_get(1)).await.is_err());
}

#[tokio::test]
async fn account_info() {
    let (_store, _server, js) = setup().await;
    let mut mem = config("MEM", &["mem"]);
    mem.storage = stream::StorageType::Memory;
    mem.max_bytes = 1000;
    create(&js, mem).await;
    create(&js, config("FILE", &["file"])).await;
    publish(&js, "file", "hello").await.unwrap();
    publish(&js, "mem", "hello").await.unwrap();
    let a = within("account", js.query_account()).await.unwrap();
    assert_eq!((a.streams, a.consumers), (2, 0));
    assert_eq!(
        a.storage,
        stored_size(stream::StorageType::File, "file", 0, 5)
    );
    assert_eq!(
        a.memory,
        stored_size(stream::StorageType::Memory, "mem", 0, 5)
    );
    assert_eq!((a.reserved_memory, a.reserved_storage), (1000, 0));
    let raw_info = raw(&js, "INFO", json!({})).await;
    assert_eq!(
        raw_info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
    assert_eq!(raw_info["limits"]["max_streams"], -1);
    assert_eq!(raw_info["limits"]["max_memory"], -1);
    assert_eq!(raw_info["limits"]["max_storage"], -1);
    // A counted error moves both counters.
    let before = within("account", js.query_account())
        .await
        .unwrap()
        .requests;
    assert!(within("info", js.get_stream("NOPE")).await.is_err());
    let after = within("account", js.query_account())
        .await
        .unwrap()
        .requests;
    assert_eq!(after.total, before.total + 2, "the INFO and this query");
    assert_eq!(after.errors, before.errors + 1);
}

#[tokio::test]
async fn no_stream_means_no_responders_and_core_routing_is_unaffected() {
    let (_store, _server, js) = setup().await;
    let err = publish(&js, "nowhere", "x").await.unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::StreamNotFound);

    create(&js, config("C", &["c.>"])).await;
    let client = js.client();
    let mut sub = within("sub", client.subscribe("c.*")).await.unwrap();
    common::sync(&client).await;
    let ack = publish(&js, "c.one", "both").await.unwrap();
    assert_eq!(ack.sequence, 1);
    let m = within("core delivery", sub.next()).await.unwrap();
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("c.one", &b"both"[..])
    );
    // A plain core publish (no reply) is stored as well.
    client.publish("c.two", "plain".into()).await.unwrap();
    let m = within("core delivery", sub.next()).await.unwrap();
    assert_eq!(m.subject.as_str(), "c.two");
    let mut s = js.get_stream("C").await.unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = within("info", s.info()).await.unwrap().state.messages;
        if stored == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn streams_messages_and_dedupe_survive_restart() {
    let store = Store(temp_dir());
    let store = &store.0;
    let created = {
        let server = js_server(store);
        let js = js(&server).await;
        let mut mem = config("MEM", &["mem"]);
        mem.storage = stream::StorageType::Memory;
        create(&js, mem).await;
        let mut cfg = config("KEEP", &["keep.*"]);
        cfg.max_messages = 100;
        let s = create(&js, cfg).await;
        for i in 1..=3 {
            let id = format!("id-{i}");
            publish_with(&js, "keep.a", "x", |p| p.message_id(id))
                .await
                .unwrap();
        }
        assert!(within("delete", s.delete_message(2)).await.unwrap());
        s.cached_info().created
        // The server is killed here (SIGKILL): only what was acknowledged counts.
    };
    let server = js_server(store);
    let js = js(&server).await;
    let mut s = within("get", js.get_stream("KEEP")).await.unwrap();
    let info = within("info", s.info()).await.unwrap().clone();
    assert_eq!(info.config.max_messages, 100);
    assert_eq!(info.created, created);
    let st = &info.state;
    assert_eq!(
        (st.messages, st.first_sequence, st.last_sequence),
        (2, 1, 3)
    );
    assert_eq!(st.deleted_count, Some(1));
    let m = within("get", s.get_raw_message(3)).await.unwrap();
    assert_eq!(
        m.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("id-3")
    );
    let dup = publish_with(&js, "keep.a", "x", |p| p.message_id("id-1"))
        .await
        .unwrap();
    assert_eq!((dup.sequence, dup.duplicate), (1, true));
    let ack = publish_with(&js, "keep.a", "x", |p| p.expected_last_message_id("id-3"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 4);
    // Deliberate difference: natter keeps a memory stream's definition (not its messages)
    // across a restart; a standalone nats-server forgets memory streams.
    let names: Vec<String> = within("names", js.stream_names().try_collect())
        .await
        .unwrap();
    assert_eq!(names.contains(&"MEM".to_string()), is_natter(), "{names:?}");
}

/// The API and a publish through a raw socket, as `telnet` would.
#[test]
fn raw_socket_api_and_puback() {
    let store = Store(temp_dir());
    let server = js_server(&store.0);
    let mut c = server.client();
    // Headers on, for the HPUB below.
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB _INBOX.> 1\r\n");
    let body = br#"{"name":"X","subjects":["x.>"]}"#;
    c.send(format!("PUB $JS.API.STREAM.CREATE.X _INBOX.1 {}\r\n", body.len()).as_bytes());
    c.send(body);
    c.send(b"\r\n");
    let m = c.read_msg();
    assert_eq!(
        (m.subject.as_str(), m.headers.is_none()),
        ("_INBOX.1", true)
    );
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["type"], "io.nats.jetstream.api.v1.stream_create_response");
    assert_eq!(v["did_create"], true);
    assert_eq!(v["config"]["name"], "X");
    assert_eq!(v["config"]["subjects"], json!(["x.>"]));
    assert_eq!(v["state"]["messages"], 0);

    c.send(b"PUB x.y _INBOX.2 5\r\nhello\r\n");
    let m = c.read_msg();
    assert_eq!(m.subject, "_INBOX.2");
    assert_eq!(
        serde_json::from_slice::<Value>(&m.payload).unwrap(),
        json!({"stream": "X", "seq": 1})
    );
    let hdr = "NATS/1.0\r\nNats-Msg-Id: a\r\n\r\n";
    for inbox in ["_INBOX.3", "_INBOX.4"] {
        let n = hdr.len();
        c.send(format!("HPUB x.y {inbox} {n} {}\r\n{hdr}!\r\n", n + 1).as_bytes());
        if inbox == "_INBOX.3" {
            c.read_msg();
        }
    }
    let m = c.read_msg();
    assert_eq!(
        serde_json::from_slice::<Value>(&m.payload).unwrap(),
        json!({"stream": "X", "seq": 2, "duplicate": true})
    );

    c.send(b"PUB $JS.API.STREAM.INFO.NOPE _INBOX.5 0\r\n\r\n");
    let m = c.read_msg();
    assert_eq!(
        serde_json::from_slice::<Value>(&m.payload).unwrap(),
        json!({"type": "io.nats.jetstream.api.v1.stream_info_response",
            "total": 0, "offset": 0, "limit": 0,
            "error": {"code": 404, "err_code": 10059, "description": "stream not found"}})
    );
    // A publish to a subject no stream has gets no ack: with headers enabled a requester would
    // see "no responders"; this one sees nothing.
    c.send(b"PUB nowhere _INBOX.6 1\r\nx\r\n");
    assert!(c.msgs_until_pong().is_empty());
}

/// Polls the stream's per-subject counts until `done` holds for them (10 s at most); the
/// counts then.
async fn wait_subjects(
    s: &mut stream::Stream,
    what: &str,
    done: impl Fn(&std::collections::HashMap<String, usize>) -> bool,
) -> std::collections::HashMap<String, usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let subjects = within("info", s.info_with_subjects(">")).await.unwrap();
        let counts: std::collections::HashMap<String, usize> =
            within("subjects", subjects.try_collect()).await.unwrap();
        if done(&counts) {
            return counts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn per_message_ttl() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("TTL", &["ttl.>"]);
    cfg.allow_message_ttl = true;
    cfg.max_age = Duration::from_secs(4);
    let mut s = create(&js, cfg).await;
    for (subject, ttl) in [
        ("ttl.short", "1s"),
        ("ttl.secs", "2"),
        ("ttl.long", "1h"),
        ("ttl.never", "never"),
    ] {
        publish_with(&js, subject, "x", |p| p.header("Nats-TTL", ttl))
            .await
            .unwrap_or_else(|e| panic!("Nats-TTL {ttl}: {e}"));
    }
    seq(&js, "ttl.plain").await;
    for bad in ["0", "500ms", "-1", "soon"] {
        let r = publish_with(&js, "ttl.bad", "x", |p| p.header("Nats-TTL", bad)).await;
        assert_js_err(r, 400, 10165, "invalid per-message TTL");
    }
    let m = within("get", s.get_last_raw_message_by_subject("ttl.short"))
        .await
        .unwrap();
    assert_eq!(m.headers.get("Nats-TTL").map(|v| v.as_str()), Some("1s"));

    // max_age also bounds the hour-long TTL.
    ttl_then_age(&mut s, "ttl.short", "ttl.plain", "ttl.never").await;
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(st.first_sequence, 4);

    let mut off = config("TTL", &["ttl.>"]);
    off.max_age = Duration::from_secs(4);
    let r = within("update", js.update_stream(off)).await;
    assert_js_err(r, 500, 10052, "message TTL status can not be disabled");
}

/// The TTLs of stored messages are read back after a crash: a TTL still removes its message
/// before max_age would, and `never` still outlives max_age.
#[tokio::test]
async fn message_ttls_survive_restart() {
    let store = Store(temp_dir());
    let store = &store.0;
    {
        let server = js_server(store);
        let js = js(&server).await;
        let mut cfg = config("TR", &["tr.>"]);
        cfg.allow_message_ttl = true;
        // Room for a slow restart between the TTL and max_age.
        cfg.max_age = Duration::from_secs(6);
        create(&js, cfg).await;
        for (subject, ttl) in [("tr.ttl", "2s"), ("tr.never", "never")] {
            publish_with(&js, subject, "x", |p| p.header("Nats-TTL", ttl))
                .await
                .unwrap();
        }
        seq(&js, "tr.plain").await;
        // SIGKILL here.
    }
    let server = js_server(store);
    let js = js(&server).await;
    let mut s = within("get", js.get_stream("TR")).await.unwrap();
    ttl_then_age(&mut s, "tr.ttl", "tr.plain", "tr.never").await;
}

/// A TTL shorter than max_age removes its message (`short`) while a plain one is still there;
/// then max_age leaves only the message marked `never`, which stays.
async fn ttl_then_age(s: &mut stream::Stream, short: &str, plain: &str, never: &str) {
    let counts = wait_subjects(s, "the TTL", |c| !c.contains_key(short)).await;
    assert!(counts.contains_key(plain), "{counts:?}");
    wait_subjects(s, "max_age", |c| c.len() == 1 && c.contains_key(never)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!(st.messages, 1, "{never} outlives max_age");
}

#[tokio::test]
async fn subject_delete_markers() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("SDM", &["sdm.>"]);
    cfg.subject_delete_marker_ttl = Some(Duration::from_millis(500));
    let r = within("create", js.create_stream(cfg.clone())).await;
    assert_js_err(
        r,
        500,
        10052,
        "subject delete marker TTL must be at least 1 second",
    );
    cfg.subject_delete_marker_ttl = Some(Duration::from_secs(3));
    cfg.deny_purge = true;
    cfg.allow_rollup = true;
    let r = within("create", js.create_stream(cfg.clone())).await;
    assert_js_err(r, 500, 10052, "roll-ups require the purge permission");
    // Markers imply per-message TTLs and roll-ups, and so purges.
    cfg.allow_rollup = false;
    cfg.max_age = Duration::from_secs(2);
    let mut s = create(&js, cfg).await;
    let c = &s.cached_info().config;
    assert!(
        c.allow_message_ttl && c.allow_rollup && !c.deny_purge,
        "implied: {c:?}"
    );

    seq(&js, "sdm.aged").await;
    publish_with(&js, "sdm.ttl", "x", |p| p.header("Nats-TTL", "1s"))
        .await
        .unwrap();
    seq(&js, "sdm.both").await;
    seq(&js, "sdm.both").await;
    // Under the markers' TTL (and with more than one message per subject allowed) a TTL is
    // raised to it, and the stored header says so in seconds.
    let m = within("get", s.get_last_raw_message_by_subject("sdm.ttl"))
        .await
        .unwrap();
    assert_eq!(m.headers.get("Nats-TTL").map(|v| v.as_str()), Some("3"));

    // Each emptied subject gets one marker, after the four messages they replace.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = within("info", s.info()).await.unwrap().state.clone();
        if st.first_sequence > 4 && st.messages == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "markers: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for subject in ["sdm.aged", "sdm.ttl", "sdm.both"] {
        let m = within("get", s.get_last_raw_message_by_subject(subject))
            .await
            .unwrap();
        assert!(m.sequence > 4, "{subject}: a marker, not the message");
        assert!(m.payload.is_empty());
        let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string());
        assert_eq!(h("Nats-Marker-Reason").as_deref(), Some("MaxAge"));
        assert_eq!(h("Nats-TTL").as_deref(), Some("3s"));
        assert_eq!(h("Nats-Rollup").as_deref(), Some("sub"));
    }
    // Markers expire in turn and leave no markers behind.
    wait_subjects(&mut s, "markers expire", |c| c.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = within("info", s.info()).await.unwrap().state.clone();
    assert_eq!((st.messages, st.last_sequence), (0, 7));
}

/// Age limits hold for a memory stream nobody publishes to (not only on the next append).
#[tokio::test]
async fn idle_memory_stream_expires_by_age() {
    let (_store, _server, js) = setup().await;
    let mut cfg = config("MAGE", &["mage.>"]);
    cfg.storage = stream::StorageType::Memory;
    cfg.max_age = Duration::from_secs(1);
    let mut s = create(&js, cfg).await;
    seq(&js, "mage.a").await;
    seq(&js, "mage.b").await;
    wait_subjects(&mut s, "max_age", |c| c.is_empty()).await;
}

fn republish_to(source: &str, destination: &str, headers_only: bool) -> Option<stream::Republish> {
    Some(stream::Republish {
        source: source.into(),
        destination: destination.into(),
        headers_only,
    })
}

/// Stored messages published again, mapped, with where they are stored in headers; before
/// the PubAck, as nats-server does it.
#[tokio::test]
async fn republish() {
    let (_store, server, js) = setup().await;
    let mut cfg = config("RC", &["rc.>"]);
    cfg.republish = republish_to("rc.>", "rc.x.>", false);
    let r = within("create", js.create_stream(cfg.clone())).await;
    assert_js_err(
        r,
        500,
        10052,
        "stream configuration for republish destination forms a cycle",
    );
    // The destination as written overlaps, before it is looked at as a mapping.
    cfg.republish = republish_to("rc.*", "rc.*", false);
    let r = within("create", js.create_stream(cfg.clone())).await;
    assert_js_err(
        r,
        500,
        10052,
        "stream configuration for republish destination forms a cycle",
    );
    cfg.republish = republish_to("rc.*", "out.*", false);
    let r = within("create", js.create_stream(cfg)).await;
    assert_js_err(
        r,
        500,
        10052,
        "stream configuration for republish with transform from 'rc.*' to 'out.*' not valid",
    );

    let client = within("connect", async_nats::connect(server.url()))
        .await
        .unwrap();
    let mut out = within("sub", client.subscribe("out.>")).await.unwrap();
    let mut hh = within("sub", client.subscribe("hh.>")).await.unwrap();
    within("flush", client.flush()).await.unwrap();
    let mut cfg = config("RP", &["rp.>"]);
    cfg.republish = republish_to("rp.*.x", "out.$1", false);
    create(&js, cfg).await;
    let mut cfg = config("HO", &["ho.>"]);
    cfg.republish = republish_to("", "hh.>", true);
    create(&js, cfg).await;

    publish_with(&js, "rp.a.x", "hello", |p| p.header("Foo", "bar"))
        .await
        .unwrap();
    seq(&js, "rp.b.y").await;
    publish_with(&js, "rp.a.x", "again", |p| p).await.unwrap();
    seq(&js, "ho.1").await;
    let got = |m: &async_nats::Message, k: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(k))
            .map(|v| v.as_str().to_string())
    };
    let m = within("republished", out.next()).await.unwrap();
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("out.a", &b"hello"[..])
    );
    for (k, v) in [
        ("Foo", "bar"),
        ("Nats-Stream", "RP"),
        ("Nats-Subject", "rp.a.x"),
        ("Nats-Sequence", "1"),
        ("Nats-Last-Sequence", "0"),
    ] {
        assert_eq!(got(&m, k).as_deref(), Some(v), "{k}");
    }
    assert!(got(&m, "Nats-Time-Stamp").is_some_and(|t| t.ends_with('Z')));
    // rp.b.y is not republished; the next one's previous message on its subject is 1.
    let m = within("republished", out.next()).await.unwrap();
    assert_eq!(&m.payload[..], b"again");
    assert_eq!(got(&m, "Nats-Sequence").as_deref(), Some("3"));
    assert_eq!(got(&m, "Nats-Last-Sequence").as_deref(), Some("1"));
    let m = within("headers only", hh.next()).await.unwrap();
    assert_eq!(m.subject.as_str(), "hh.ho.1");
    assert!(m.payload.is_empty());
    assert_eq!(got(&m, "Nats-Msg-Size").as_deref(), Some("1"));
    assert_eq!(got(&m, "Nats-Stream").as_deref(), Some("HO"));
}

/// Two streams republishing into each other: each message goes round once (a message that
/// says it was republished by a stream is not republished by it again), where nats-server
/// would loop for ever. The server stays up and answers.
#[tokio::test]
async fn republish_cycle_between_streams_ends() {
    if !is_natter() {
        return;
    }
    let (_store, _server, js) = setup().await;
    let mut a = config("A", &["a.>"]);
    a.storage = stream::StorageType::Memory;
    a.republish = republish_to(">", "b.>", false);
    let mut a = create(&js, a).await;
    let mut b = config("B", &["b.>"]);
    b.storage = stream::StorageType::Memory;
    b.republish = republish_to(">", "a.>", false);
    let mut b = create(&js, b).await;
    for _ in 0..3 {
        seq(&js, "a.1").await;
    }
    // a.1 -> b.a.1 -> a.b.a.1, which A does not republish again.
    let counts = wait_subjects(&mut a, "A", |c| c.get("a.b.a.1") == Some(&3)).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    let counts = wait_subjects(&mut b, "B", |c| c.get("b.a.1") == Some(&3)).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = within("info", a.info()).await.unwrap().state.clone();
    assert_eq!(st.messages, 6);
}
