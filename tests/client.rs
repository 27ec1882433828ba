//! The server as a real client library sees it: async-nats 0.51 against a fresh server per test.

mod common;

use async_nats::{Client, HeaderMap, RequestErrorKind, Subscriber};
use bytes::Bytes;
use common::{sync, within, Server};
use futures::StreamExt;
use std::time::Duration;

async fn connect(server: &Server) -> Client {
    within("connect", async_nats::connect(server.url()))
        .await
        .expect("connect")
}

async fn next(sub: &mut Subscriber) -> async_nats::Message {
    within("next message", sub.next())
        .await
        .expect("subscription ended")
}

/// Nothing more arrives on `sub` for a short while (the stream may have ended, though).
async fn assert_quiet(sub: &mut Subscriber) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("unexpected message on {}: {:?}", m.subject, m.payload);
    }
}

#[tokio::test]
async fn server_info_is_seen_by_the_client() {
    let server = Server::start();
    let client = connect(&server).await;
    let info = client.server_info();
    assert_eq!(info.max_payload, 1024 * 1024);
    assert!(info.headers);
    assert_eq!(info.proto, 1);
    assert_eq!(info.port, server.port);
}

#[tokio::test]
async fn publish_subscribe() {
    let server = Server::start();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let mut sub = client.subscribe("greet.joe").await.unwrap();
    sync(&client).await;

    other.publish("greet.joe", "hello".into()).await.unwrap();
    other.publish("greet.sue", "nope".into()).await.unwrap();
    within("flush", other.flush()).await.unwrap();

    let m = next(&mut sub).await;
    assert_eq!(m.subject.as_str(), "greet.joe");
    assert_eq!(m.payload, Bytes::from_static(b"hello"));
    assert_eq!(m.reply, None);
    assert_eq!(m.headers, None);
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn wildcard_subscriptions() {
    let server = Server::start();
    let client = connect(&server).await;
    let mut star = client.subscribe("a.*").await.unwrap();
    let mut tail = client.subscribe("a.>").await.unwrap();
    within("flush", client.flush()).await.unwrap();

    for subject in ["a.b", "a.b.c", "b", "a", "a.end"] {
        client.publish(subject, subject.into()).await.unwrap();
    }
    within("flush", client.flush()).await.unwrap();

    for want in ["a.b", "a.end"] {
        let m = next(&mut star).await;
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            (want, want.as_bytes())
        );
    }
    for want in ["a.b", "a.b.c", "a.end"] {
        let m = next(&mut tail).await;
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            (want, want.as_bytes())
        );
    }
    assert_quiet(&mut star).await;
    assert_quiet(&mut tail).await;
}

#[tokio::test]
async fn queue_subscribers_share_messages() {
    const N: usize = 50;
    let server = Server::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let publisher = connect(&server).await;
    let mut qa = a.queue_subscribe("work", "g".into()).await.unwrap();
    let mut qb = b.queue_subscribe("work", "g".into()).await.unwrap();
    sync(&a).await;
    sync(&b).await;

    for i in 0..N {
        publisher
            .publish("work", i.to_string().into())
            .await
            .unwrap();
    }
    within("flush", publisher.flush()).await.unwrap();

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    while got_a.len() + got_b.len() < N {
        within("queue delivery", async {
            tokio::select! {
                Some(m) = qa.next() => got_a.push(m.payload),
                Some(m) = qb.next() => got_b.push(m.payload),
            }
        })
        .await;
    }
    assert_quiet(&mut qa).await;
    assert_quiet(&mut qb).await;
    assert!(!got_a.is_empty() && !got_b.is_empty(), "not spread");
    let mut all: Vec<usize> = got_a
        .iter()
        .chain(&got_b)
        .map(|p| std::str::from_utf8(p).unwrap().parse().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
}

#[tokio::test]
async fn request_reply() {
    let server = Server::start();
    let responder = connect(&server).await;
    let requester = connect(&server).await;
    let mut service = responder.subscribe("svc.echo").await.unwrap();
    sync(&responder).await;
    let task = tokio::spawn(async move {
        for _ in 0..2 {
            let m = service.next().await.expect("request");
            let reply = m.reply.expect("request has a reply subject");
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&m.payload);
            responder.publish(reply, answer.into()).await.unwrap();
        }
        responder.flush().await.unwrap();
    });

    for text in ["one", "two"] {
        let answer = within("request", requester.request("svc.echo", text.into()))
            .await
            .expect("answer");
        assert_eq!(answer.payload, Bytes::from(format!("re: {text}")));
    }
    within("responder", task).await.unwrap();
}

#[tokio::test]
async fn headers_round_trip() {
    let server = Server::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe("h").await.unwrap();
    within("flush", client.flush()).await.unwrap();

    let mut headers = HeaderMap::new();
    headers.insert("X-Trace", "abc-123");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    client
        .publish_with_headers("h", headers.clone(), "body".into())
        .await
        .unwrap();
    client
        .publish_with_headers("h", headers.clone(), Bytes::new())
        .await
        .unwrap();
    within("flush", client.flush()).await.unwrap();

    let m = next(&mut sub).await;
    assert_eq!(m.payload, Bytes::from_static(b"body"));
    let got = m.headers.expect("headers");
    assert_eq!(got.get("X-Trace").map(|v| v.as_str()), Some("abc-123"));
    let multi: Vec<&str> = got.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(got, headers);
    assert_eq!(m.status, None);

    let m = next(&mut sub).await;
    assert!(m.payload.is_empty());
    assert_eq!(m.headers, Some(headers));
}

#[tokio::test]
async fn request_without_responders_fails_fast() {
    let server = Server::start();
    let client = connect(&server).await;
    let started = std::time::Instant::now();
    let err = within("request", client.request("nobody.home", "hi".into()))
        .await
        .expect_err("no one answers");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no-responders must not wait for the request timeout"
    );
}

#[tokio::test]
async fn flushed_messages_all_arrive_in_order() {
    const N: usize = 1000;
    let server = Server::start();
    let publisher = connect(&server).await;
    let subscriber = connect(&server).await;
    let mut sub = subscriber.subscribe("seq").await.unwrap();
    sync(&subscriber).await;

    for i in 0..N {
        publisher
            .publish("seq", i.to_string().into())
            .await
            .unwrap();
    }
    within("flush", publisher.flush()).await.unwrap();
    for i in 0..N {
        let m = next(&mut sub).await;
        assert_eq!(m.payload, Bytes::from(i.to_string()), "in order");
    }
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn unsubscribe_after_a_count() {
    let server = Server::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe("few").await.unwrap();
    sub.unsubscribe_after(3).await.unwrap();
    for i in 0..5 {
        client.publish("few", i.to_string().into()).await.unwrap();
    }
    within("flush", client.flush()).await.unwrap();
    let got: Vec<Bytes> = within("three then end", sub.map(|m| m.payload).collect()).await;
    assert_eq!(got, [&b"0"[..], b"1", b"2"].map(Bytes::from_static));
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = Server::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe("x").await.unwrap();
    let mut keep = client.subscribe("x").await.unwrap();
    client.publish("x", "1".into()).await.unwrap();
    within("flush", client.flush()).await.unwrap();
    assert_eq!(next(&mut sub).await.payload, "1");
    sub.unsubscribe().await.unwrap();
    client.publish("x", "2".into()).await.unwrap();
    within("flush", client.flush()).await.unwrap();
    assert!(within("end", sub.next()).await.is_none());
    assert_eq!(next(&mut keep).await.payload, "1");
    assert_eq!(next(&mut keep).await.payload, "2");
}

#[tokio::test]
async fn drain_a_subscription() {
    let server = Server::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe("d").await.unwrap();
    let mut sync = client.subscribe("sync").await.unwrap();
    for i in 0..10 {
        client.publish("d", i.to_string().into()).await.unwrap();
    }
    // async-nats ends a drained subscription with what has already arrived, and flush() does
    // not wait for the server. A message to ourselves after the ten, received, proves the ten
    // are in (one connection's messages arrive in order).
    client.publish("sync", "".into()).await.unwrap();
    next(&mut sync).await;
    sub.drain().await.unwrap();
    let got: Vec<Bytes> = within("drained", sub.map(|m| m.payload).collect()).await;
    let want: Vec<Bytes> = (0..10).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(got, want);

    // The client itself carries on.
    let mut again = client.subscribe("d").await.unwrap();
    client.publish("d", "after".into()).await.unwrap();
    within("flush", client.flush()).await.unwrap();
    assert_eq!(next(&mut again).await.payload, "after");
}

#[tokio::test]
async fn drain_the_client() {
    let server = Server::start();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let sub = client.subscribe("d").await.unwrap();
    let mut mark = client.subscribe("mark").await.unwrap();
    sync(&client).await;
    for i in 0..5 {
        other.publish("d", i.to_string().into()).await.unwrap();
    }
    // async-nats ends a drain with what has already arrived: once the mark sent after the five
    // is in, so are they (one connection's messages arrive in order).
    other.publish("mark", "".into()).await.unwrap();
    next(&mut mark).await;

    client.drain().await.unwrap();
    let got: Vec<Bytes> = within("drained", sub.map(|m| m.payload).collect()).await;
    let want: Vec<Bytes> = (0..5).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(got, want);
    let after = within("subscribe after drain", client.subscribe("d")).await;
    assert!(after.is_err(), "commands after drain must fail");

    // The server is fine for everyone else.
    let mut still = other.subscribe("e").await.unwrap();
    other.publish("e", "ok".into()).await.unwrap();
    within("flush", other.flush()).await.unwrap();
    assert_eq!(next(&mut still).await.payload, "ok");
}

#[tokio::test]
async fn no_echo_option() {
    let server = Server::start();
    let client = within(
        "connect",
        async_nats::ConnectOptions::new()
            .no_echo()
            .connect(server.url()),
    )
    .await
    .unwrap();
    let other = connect(&server).await;
    let mut sub = client.subscribe("e").await.unwrap();
    client.publish("e", "mine".into()).await.unwrap();
    // `sync` relies on echo; a request nobody answers is a round trip that does not.
    let err = within("request", client.request("nobody", Bytes::new()))
        .await
        .expect_err("no responders");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    other.publish("e", "theirs".into()).await.unwrap();
    within("flush", other.flush()).await.unwrap();
    assert_eq!(next(&mut sub).await.payload, "theirs");
    assert_quiet(&mut sub).await;
}
