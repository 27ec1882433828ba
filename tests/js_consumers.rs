//! JetStream consumers, KV and the object store over TCP with the async-nats client: pull and
//! push consumers, acks and redelivery, durable consumers across a restart, and the KV and
//! object-store APIs built on them.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use bytes::Bytes;
use common::{temp_dir, Server};
use futures::StreamExt;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

fn js_server(store: &std::path::Path) -> Server {
    Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()])
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
    let store = temp_dir();
    let server = js_server(&store);
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
    let store = temp_dir();
    let server = js_server(&store);
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
    let store = temp_dir();
    let server = js_server(&store);
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
}

#[tokio::test]
async fn kv_put_get_update_delete_history_keys_and_watch() {
    let store = temp_dir();
    let server = js_server(&store);
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
    let store = temp_dir();
    let server = js_server(&store);
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
