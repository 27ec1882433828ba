//! Multi-tenancy with config-file accounts: isolation, stream exports/imports (plain, `prefix`,
//! `to`), service exports/imports (request/reply across accounts) and config errors.

mod common;

use bytes::Bytes;
use common::{all_output, is_natter, run_config, sync, within, Client, Msg, Server};
use futures::StreamExt;
use std::io::{Read, Write};
use std::time::Duration;

const ACCOUNTS_CONF: &str = r#"
accounts {
  A: {
    users: [ { user: a, password: a }, { user: a2, password: a2 } ]
    exports: [
      { stream: "events.>" }
      { service: "help" }
    ]
  }
  B: {
    users: [ { user: b, password: b } ]
    imports: [
      { stream: { account: A, subject: "events.>" } }
      { service: { account: A, subject: "help" }, to: "a.help" }
    ]
  }
  C: {
    users: [ { user: c, password: c } ]
    imports: [
      { stream: { account: A, subject: "events.>" }, prefix: "from_a" }
      { service: { account: A, subject: "help" } }
    ]
  }
  D: {
    users: [ { user: d, password: d } ]
    imports: [
      { stream: { account: A, subject: "events.>" }, to: "ev.>" }
    ]
  }
  E: {
    users: [ { user: e, password: e } ]
  }
}
"#;

fn login(server: &Server, user: &str) -> Client {
    let mut c = server.client();
    c.send(
        format!("CONNECT {{\"user\":\"{user}\",\"pass\":\"{user}\",\"verbose\":false}}\r\n")
            .as_bytes(),
    );
    c.ping_pong_within(common::TIMEOUT);
    c
}

/// `SUB` lines, then a PING/PONG so they are in place.
fn subscribe(c: &mut Client, subs: &str) {
    c.send(subs.as_bytes());
    c.ping_pong_within(common::TIMEOUT);
}

/// Messages in (subject, sid) order: the order across one client's subscriptions is not defined.
fn sorted(mut msgs: Vec<Msg>) -> Vec<Msg> {
    msgs.sort_by(|x, y| (&x.subject, &x.sid).cmp(&(&y.subject, &y.sid)));
    msgs
}

async fn connect(server: &Server, user: &str) -> async_nats::Client {
    within(
        "connect",
        async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
            .connect(server.url()),
    )
    .await
    .unwrap_or_else(|e| panic!("{user} connects: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Isolation

#[test]
fn accounts_are_isolated() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut a = login(&server, "a");
    let mut a2 = login(&server, "a2");
    let mut e = login(&server, "e");
    subscribe(&mut a, "SUB foo 1\r\nSUB > 2\r\n");
    subscribe(&mut a2, "SUB foo 1\r\n");
    subscribe(&mut e, "SUB foo 1\r\nSUB > 2\r\n");

    a2.send(b"PUB foo 2\r\nin\r\n");
    e.send(b"PUB foo 3\r\nout\r\nPUB bar 3\r\nout\r\n");
    // The publishers get their own messages back (echo) before their PONG.
    assert_eq!(a2.msgs_until_pong(), vec![Msg::new("foo", "1", b"in")]);
    // E only sees E.
    assert_eq!(
        sorted(e.msgs_until_pong()),
        vec![
            Msg::new("bar", "2", b"out"),
            Msg::new("foo", "1", b"out"),
            Msg::new("foo", "2", b"out"),
        ]
    );
    // Users of the same account share it.
    assert_eq!(
        sorted(a.msgs_until_pong()),
        vec![Msg::new("foo", "1", b"in"), Msg::new("foo", "2", b"in")]
    );
}

#[test]
fn same_subject_same_queue_group_in_two_accounts_each_get_a_copy() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut a = login(&server, "a");
    let mut e = login(&server, "e");
    subscribe(&mut a, "SUB work q 1\r\n");
    subscribe(&mut e, "SUB work q 1\r\n");
    let mut pa = login(&server, "a2");
    pa.send(b"PUB work 1\r\nx\r\n");
    pa.ping_pong_within(common::TIMEOUT);
    assert_eq!(a.msgs_until_pong(), vec![Msg::new("work", "1", b"x")]);
    assert_eq!(e.msgs_until_pong(), vec![]);
}

#[tokio::test]
async fn accounts_are_isolated_for_async_nats() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let a = connect(&server, "a").await;
    let e = connect(&server, "e").await;
    let mut a_sub = a.subscribe("foo").await.unwrap();
    let mut e_sub = e.subscribe("foo").await.unwrap();
    sync(&a).await;
    sync(&e).await;
    e.publish("foo", Bytes::from_static(b"from e"))
        .await
        .unwrap();
    a.publish("foo", Bytes::from_static(b"from a"))
        .await
        .unwrap();
    let m = within("a's own message", a_sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"from a"));
    let m = within("e's own message", e_sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"from e"));
    // Nothing else turns up on either side.
    sync(&a).await;
    sync(&e).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a_sub.next())
            .await
            .is_err(),
        "A got a message from E"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), e_sub.next())
            .await
            .is_err(),
        "E got a message from A"
    );
}

// ---------------------------------------------------------------------------------------------
// Streams

#[test]
fn stream_import_delivers_exported_subjects() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut b = login(&server, "b");
    let mut c = login(&server, "c");
    let mut d = login(&server, "d");
    let mut e = login(&server, "e");
    subscribe(&mut b, "SUB > 1\r\n");
    subscribe(&mut c, "SUB > 1\r\n");
    subscribe(&mut d, "SUB > 1\r\n");
    subscribe(&mut e, "SUB > 1\r\n");

    let mut a = login(&server, "a");
    a.send(b"PUB events.x 1\r\n1\r\nPUB events.y.z 1\r\n2\r\nPUB other 1\r\n3\r\n");
    a.ping_pong_within(common::TIMEOUT);

    // Plain import: the exporter's subjects as they are.
    assert_eq!(
        b.msgs_until_pong(),
        vec![
            Msg::new("events.x", "1", b"1"),
            Msg::new("events.y.z", "1", b"2")
        ]
    );
    // `prefix`: prepended as a token.
    assert_eq!(
        c.msgs_until_pong(),
        vec![
            Msg::new("from_a.events.x", "1", b"1"),
            Msg::new("from_a.events.y.z", "1", b"2")
        ]
    );
    // `to`: the subject mapped onto the new one, wildcard for wildcard.
    assert_eq!(
        d.msgs_until_pong(),
        vec![Msg::new("ev.x", "1", b"1"), Msg::new("ev.y.z", "1", b"2")]
    );
    // No import, nothing.
    assert_eq!(e.msgs_until_pong(), vec![]);
}

#[test]
fn stream_import_is_one_way() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut a = login(&server, "a");
    subscribe(&mut a, "SUB > 1\r\n");
    for user in ["b", "c", "d"] {
        let mut x = login(&server, user);
        x.send(b"PUB events.x 1\r\nx\r\nPUB from_a.events.x 1\r\nx\r\nPUB ev.x 1\r\nx\r\n");
        x.ping_pong_within(common::TIMEOUT);
    }
    assert_eq!(a.msgs_until_pong(), vec![]);
}

#[test]
fn stream_import_keeps_the_reply_subject() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut b = login(&server, "b");
    subscribe(&mut b, "SUB events.* 1\r\n");
    let mut a = login(&server, "a");
    a.send(b"PUB events.x reply.here 2\r\nhi\r\n");
    a.ping_pong_within(common::TIMEOUT);
    let got = b.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].subject, "events.x");
    assert_eq!(got[0].payload, b"hi");
    assert!(got[0].reply.is_some(), "{got:?}");
}

#[tokio::test]
async fn stream_import_with_async_nats() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let a = connect(&server, "a").await;
    let c = connect(&server, "c").await;
    let mut sub = c.subscribe("from_a.events.>").await.unwrap();
    sync(&c).await;
    a.publish("events.login", Bytes::from_static(b"joe"))
        .await
        .unwrap();
    let m = within("imported event", sub.next()).await.unwrap();
    assert_eq!(m.subject.as_str(), "from_a.events.login");
    assert_eq!(m.payload, Bytes::from_static(b"joe"));
}

// ---------------------------------------------------------------------------------------------
// Services

#[test]
fn service_import_routes_requests_and_one_reply() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut a = login(&server, "a");
    subscribe(&mut a, "SUB help 1\r\nSUB a.help 2\r\n");
    let mut b = login(&server, "b");
    subscribe(&mut b, "SUB _INBOX.b 9\r\n");
    b.send(b"PUB a.help _INBOX.b 3\r\nreq\r\n");
    b.ping_pong_within(common::TIMEOUT);

    // A sees the request on its own exported subject, with a reply subject of its own.
    let got = a.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = &got[0];
    assert_eq!(req.subject, "help");
    assert_eq!(req.sid, "1");
    assert_eq!(req.payload, b"req");
    let reply = req.reply.clone().expect("a reply subject");
    assert!(reply.starts_with("_R_."), "{reply}");
    assert_eq!(reply.split('.').count(), 3, "{reply}");
    assert!(
        !reply.contains("_INBOX"),
        "B's inbox is not shown to A: {reply}"
    );

    // The reply goes back to B's inbox; a second reply to the same request does not.
    a.send(format!("PUB {reply} 3\r\nans\r\n").as_bytes());
    a.ping_pong_within(common::TIMEOUT);
    assert_eq!(b.msgs_until_pong(), vec![Msg::new("_INBOX.b", "9", b"ans")]);
    a.send(format!("PUB {reply} 4\r\nans2\r\n").as_bytes());
    a.ping_pong_within(common::TIMEOUT);
    assert_eq!(b.msgs_until_pong(), vec![]);

    // Each request gets its own reply subject.
    b.send(b"PUB a.help _INBOX.b 4\r\nreq2\r\n");
    b.ping_pong_within(common::TIMEOUT);
    let got = a.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_ne!(got[0].reply.as_deref(), Some(reply.as_str()));
}

#[test]
fn service_import_without_to_uses_the_exported_subject() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let mut a = login(&server, "a");
    subscribe(&mut a, "SUB help 1\r\n");
    let mut c = login(&server, "c");
    subscribe(&mut c, "SUB _INBOX.c 9\r\n");
    c.send(b"PUB help _INBOX.c 3\r\nreq\r\n");
    c.ping_pong_within(common::TIMEOUT);
    let got = a.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].subject, "help");
    let reply = got[0].reply.clone().unwrap();
    a.send(format!("PUB {reply} 2\r\nok\r\n").as_bytes());
    a.ping_pong_within(common::TIMEOUT);
    assert_eq!(c.msgs_until_pong(), vec![Msg::new("_INBOX.c", "9", b"ok")]);
}

#[test]
fn service_import_is_one_way() {
    let server = Server::with_config(ACCOUNTS_CONF);
    // Nobody in A may call B's "a.help" subject or anything of B.
    let mut b = login(&server, "b");
    subscribe(&mut b, "SUB > 1\r\n");
    let mut a = login(&server, "a");
    a.send(b"PUB a.help _INBOX.a 1\r\nx\r\nPUB help 1\r\nx\r\n");
    a.ping_pong_within(common::TIMEOUT);
    assert_eq!(b.msgs_until_pong(), vec![]);
    // An account without the import reaches nothing.
    let mut a_sub = login(&server, "a2");
    subscribe(&mut a_sub, "SUB help 1\r\n");
    let mut e = login(&server, "e");
    e.send(b"PUB help _INBOX.e 1\r\nx\r\nPUB a.help _INBOX.e 1\r\nx\r\n");
    e.ping_pong_within(common::TIMEOUT);
    assert_eq!(a_sub.msgs_until_pong(), vec![]);
}

#[tokio::test]
async fn service_import_request_with_async_nats() {
    let server = Server::with_config(ACCOUNTS_CONF);
    let a = connect(&server, "a").await;
    let mut requests = a.subscribe("help").await.unwrap();
    sync(&a).await;
    let responder = tokio::spawn(async move {
        let m = requests.next().await.expect("request");
        let reply = m.reply.clone().expect("reply subject");
        a.publish(reply.clone(), Bytes::from_static(b"here to help"))
            .await
            .unwrap();
        a.flush().await.unwrap();
        (m.subject.to_string(), reply.to_string(), a)
    });
    let b = connect(&server, "b").await;
    let answer = within(
        "request",
        b.request("a.help", Bytes::from_static(b"please")),
    )
    .await
    .expect("answered across accounts");
    assert_eq!(answer.payload, Bytes::from_static(b"here to help"));
    let (subject, reply, _a) = within("responder", responder).await.unwrap();
    assert_eq!(subject, "help");
    assert!(reply.starts_with("_R_."), "{reply}");
}

/// `GET path` over HTTP/1.0 from the monitoring port, as JSON.
fn monitor_json(addr: &str, path: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to monitoring port");
    stream
        .set_read_timeout(Some(common::TIMEOUT))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// (`/varz` subscriptions, `/subsz` num_subscriptions): the server's subscription count.
fn subscription_counts(addr: &str) -> (u64, u64) {
    let varz = monitor_json(addr, "/varz");
    let subsz = monitor_json(addr, "/subsz");
    (
        varz["subscriptions"].as_u64().expect("varz.subscriptions"),
        subsz["num_subscriptions"]
            .as_u64()
            .expect("subsz.num_subscriptions"),
    )
}

/// Regression: every request through a service import once opened a reply path, even when nobody
/// in the exporting account could answer, so a flood of unanswerable requests grew the server
/// without bound. Each request gets its no-responders status (503), and the subscription count
/// stays put (nats-server adds one wildcard for the import's replies, nothing per request).
#[test]
fn service_import_flood_without_responders_opens_no_reply_paths() {
    const N: usize = 2000;
    let server = Server::start_with(
        Some(
            r#"
accounts {
  A: { users: [ { user: a, password: a } ], exports: [ { service: "svc.>" } ] }
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { service: { account: A, subject: "svc.>" } } ]
  }
}
"#,
        ),
        &["-m", "-1"],
    );
    let addr = server.monitor_addr();
    let mut b = server.client();
    b.send(
        b"CONNECT {\"user\":\"b\",\"pass\":\"b\",\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\n\
          SUB _INBOX.> 1\r\n",
    );
    b.ping_pong_within(common::TIMEOUT);
    let before = subscription_counts(&addr);

    let mut flood = Vec::new();
    for i in 0..N {
        flood.extend_from_slice(format!("PUB svc.x _INBOX.{i} 0\r\n\r\n").as_bytes());
    }
    b.send(&flood);
    let got = b.msgs_until_pong();
    assert_eq!(got.len(), N, "one no-responders status per request");
    let mut inboxes: Vec<usize> = got
        .iter()
        .map(|m| {
            assert_eq!(m.sid, "1", "{m:?}");
            assert_eq!(m.reply, None, "{m:?}");
            assert_eq!(
                m.headers.as_deref(),
                Some(&b"NATS/1.0 503\r\nNats-Subject: svc.x\r\n\r\n"[..]),
                "{m:?}"
            );
            assert!(m.payload.is_empty(), "{m:?}");
            m.subject
                .strip_prefix("_INBOX.")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("status to an inbox of ours: {m:?}"))
        })
        .collect();
    inboxes.sort_unstable();
    assert_eq!(inboxes, (0..N).collect::<Vec<_>>());

    let after = subscription_counts(&addr);
    assert!(
        after.0 <= before.0 + 5 && after.1 <= before.1 + 5,
        "subscriptions (varz, subsz) grew from {before:?} to {after:?} for {N} unanswerable requests"
    );
    // Nor did the connection get in trouble for it.
    b.ping_pong_within(common::TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// Config errors

/// The server must refuse `config` (both when starting and with `-t`), naming each of
/// `mentions`; nats-server's own wording, `nats_server_says`, is checked only against nats-server.
fn assert_refuses(config: &str, mentions: &[&str], nats_server_says: &str) {
    for extra in [&[][..], &["-t"][..]] {
        let out = run_config(config, extra);
        let text = all_output(&out);
        assert!(!out.status.success(), "{extra:?}: must fail\n{text}");
        for m in mentions {
            assert!(text.contains(m), "{extra:?}: should mention {m:?}:\n{text}");
        }
        if !is_natter() {
            assert!(text.contains(nats_server_says), "{extra:?}: {text}");
        }
    }
}

#[test]
fn import_from_an_unknown_account_is_a_config_error() {
    assert_refuses(
        r#"
accounts {
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { stream: { account: NOPE, subject: "events.>" } } ]
  }
}
"#,
        &["NOPE"],
        "\"NOPE\" account not defined for stream import",
    );
    assert_refuses(
        r#"
accounts {
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { service: { account: NOWHERE, subject: "help" } } ]
  }
}
"#,
        &["NOWHERE"],
        "\"NOWHERE\" account not defined for service import",
    );
}

#[test]
fn import_of_something_not_exported_is_a_config_error() {
    assert_refuses(
        r#"
accounts {
  A: { users: [ { user: a, password: a } ] }
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { stream: { account: A, subject: "events.>" } } ]
  }
}
"#,
        &["events.>"],
        "Error adding stream import \"events.>\": stream import not authorized",
    );
    assert_refuses(
        r#"
accounts {
  A: { users: [ { user: a, password: a } ], exports: [ { service: "other" } ] }
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { service: { account: A, subject: "help" } } ]
  }
}
"#,
        &["help"],
        "Error adding service import \"help\": service import not authorized",
    );
}

#[test]
fn export_restricted_to_other_accounts_cannot_be_imported() {
    assert_refuses(
        r#"
accounts {
  A: { users: [ { user: a, password: a } ], exports: [ { stream: "events.>", accounts: [C] } ] }
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { stream: { account: A, subject: "events.>" } } ]
  }
  C: { users: [ { user: c, password: c } ] }
}
"#,
        &["events.>"],
        "stream import not authorized",
    );
}

#[test]
fn export_restricted_to_an_account_can_be_imported_by_it() {
    let server = Server::with_config(
        r#"
accounts {
  A: { users: [ { user: a, password: a } ], exports: [ { stream: "events.>", accounts: [C] } ] }
  C: {
    users: [ { user: c, password: c } ]
    imports: [ { stream: { account: A, subject: "events.>" } } ]
  }
}
"#,
    );
    let mut c = login(&server, "c");
    subscribe(&mut c, "SUB events.> 1\r\n");
    let mut a = login(&server, "a");
    a.send(b"PUB events.1 1\r\nx\r\n");
    a.ping_pong_within(common::TIMEOUT);
    assert_eq!(c.msgs_until_pong(), vec![Msg::new("events.1", "1", b"x")]);
}

#[test]
fn the_same_user_in_two_accounts_is_a_config_error() {
    assert_refuses(
        r#"
accounts {
  A: { users: [ { user: x, password: a } ] }
  B: { users: [ { user: x, password: b } ] }
}
"#,
        &["\"x\""],
        "Duplicate user \"x\" detected",
    );
}
