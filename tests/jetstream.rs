//! JetStream over TCP with the async-nats JetStream client: streams, publish acks, dedupe,
//! expected-* headers, limits, message get/delete, purge, persistence across restarts.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::{temp_dir, Server};

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

#[tokio::test]
async fn create_publish_and_get() {
    let store = temp_dir();
    let server = js_server(&store);
    let js = js(&server).await;
    let mut s = within(
        "create",
        js.create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        }),
    )
    .await
    .expect("create stream");
    for i in 1..=3u64 {
        let ack = within("publish", async {
            js.publish(format!("orders.{i}"), "hello".into())
                .await
                .unwrap()
                .await
        })
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
