//! System events in the system account: connects, disconnects and authentication failures,
//! on nats-server's subjects with its event types and fields.

mod common;

use common::{Client, Server};
use serde_json::Value;

const CONF: &str = r#"
accounts {
  SYS: { users: [ { user: sys, password: sys } ] }
  A: { users: [ { user: a, password: a } ] }
}
system_account: SYS
"#;

fn login(server: &Server, user: &str, pass: &str) -> Client {
    let mut c = server.client();
    let connect = format!(
        "CONNECT {{\"user\":\"{user}\",\"pass\":\"{pass}\",\"verbose\":false,\"name\":\"probe\"}}\r\n"
    );
    c.send(connect.as_bytes());
    c
}

/// The next event on a subject ending in `suffix`, skipping others (nats-server also sends
/// account connection counts, and the system user's own connect event, asynchronously).
fn next_event(sys: &mut Client, suffix: &str) -> (String, Value) {
    loop {
        let msg = sys.read_msg();
        if msg.subject.ends_with(suffix) {
            let json = serde_json::from_slice(&msg.payload).expect("event is JSON");
            return (msg.subject, json);
        }
    }
}

#[test]
fn connects_disconnects_and_auth_failures_are_published() {
    let server = Server::with_config(CONF);
    let mut sys = login(&server, "sys", "sys");
    sys.send(b"SUB $SYS.> 1\r\n");
    sys.ping_pong_within(common::TIMEOUT);

    let mut a = login(&server, "a", "a");
    a.ping_pong_within(common::TIMEOUT);
    let (subject, event) = next_event(&mut sys, "ACCOUNT.A.CONNECT");
    assert_eq!(subject, "$SYS.ACCOUNT.A.CONNECT");
    assert_eq!(event["type"], "io.nats.server.advisory.v1.client_connect");
    assert_eq!(event["client"]["acc"], "A");
    assert_eq!(event["client"]["user"], "a");
    assert_eq!(event["client"]["kind"], "Client");
    assert!(event["server"]["id"].is_string(), "{event}");
    let id = event["client"]["id"].clone();

    a.send(b"PUB x 2\r\nhi\r\n");
    a.ping_pong_within(common::TIMEOUT);
    drop(a);
    let (subject, event) = next_event(&mut sys, "ACCOUNT.A.DISCONNECT");
    assert_eq!(subject, "$SYS.ACCOUNT.A.DISCONNECT");
    assert_eq!(
        event["type"],
        "io.nats.server.advisory.v1.client_disconnect"
    );
    assert_eq!(event["client"]["id"], id);
    assert_eq!(event["reason"], "Client Closed");
    // Counted from the client's side: what it sent.
    assert_eq!(event["sent"]["msgs"], 1);
    assert_eq!(event["sent"]["bytes"], 2);
    assert!(event["client"]["stop"].is_string(), "{event}");

    let mut bad = login(&server, "a", "wrong");
    bad.expect_closed();
    let (subject, event) = next_event(&mut sys, ".CLIENT.AUTH.ERR");
    let server_id = event["server"]["id"]
        .as_str()
        .expect("server id")
        .to_string();
    assert_eq!(subject, format!("$SYS.SERVER.{server_id}.CLIENT.AUTH.ERR"));
    assert_eq!(
        event["type"],
        "io.nats.server.advisory.v1.client_disconnect"
    );
    assert_eq!(event["reason"], "Authentication Failure");
    assert_eq!(event["client"]["user"], "a");
}

#[test]
fn other_accounts_cannot_see_system_events() {
    let server = Server::with_config(CONF);
    let mut a = login(&server, "a", "a");
    a.send(b"SUB $SYS.> 1\r\n");
    a.ping_pong_within(common::TIMEOUT);
    let mut other = login(&server, "a", "a");
    other.ping_pong_within(common::TIMEOUT);
    drop(other);
    let mut bad = login(&server, "a", "wrong");
    bad.expect_closed();
    // A PING round trip after the events would have been sent: nothing arrived before it.
    let msgs = a.msgs_until_pong();
    assert!(msgs.is_empty(), "{msgs:?}");
}

/// `$JS.API.<api>` with `body` on a raw client subscribed to `_INBOX.r` (sid 9): the reply,
/// skipping advisories (sid 1) that arrive meanwhile, which are returned too.
fn js_api(c: &mut Client, api: &str, body: &str, seen: &mut Vec<(String, Value)>) -> Value {
    c.send(format!("PUB $JS.API.{api} _INBOX.r {}\r\n{body}\r\n", body.len()).as_bytes());
    loop {
        let msg = c.read_msg();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        if msg.sid == "9" {
            return v;
        }
        seen.push((msg.subject, v));
    }
}

#[test]
fn jetstream_actions_are_advised_and_logged() {
    let store = common::temp_dir();
    let server = Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()]);
    let mut c = server.quiet_client();
    c.send(b"SUB $JS.EVENT.ADVISORY.> 1\r\nSUB _INBOX.r 9\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    let mut seen = Vec::new();
    js_api(
        &mut c,
        "STREAM.CREATE.S",
        r#"{"name":"S","subjects":["s.>"]}"#,
        &mut seen,
    );
    js_api(
        &mut c,
        "CONSUMER.CREATE.S.C",
        r#"{"stream_name":"S","config":{"durable_name":"C","ack_policy":"explicit"}}"#,
        &mut seen,
    );
    js_api(&mut c, "CONSUMER.DELETE.S.C", "", &mut seen);
    js_api(&mut c, "STREAM.DELETE.S", "", &mut seen);
    // The advisories of the last request may trail its reply.
    c.send(b"PING\r\n");
    for m in c.msgs_until_pong() {
        seen.push((m.subject, serde_json::from_slice(&m.payload).unwrap()));
    }
    let actions: Vec<(String, String)> = seen
        .iter()
        .filter(|(s, _)| s != "$JS.EVENT.ADVISORY.API")
        .map(|(s, v)| {
            (
                s.clone(),
                v["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (
                "$JS.EVENT.ADVISORY.STREAM.CREATED.S",
                "io.nats.jetstream.advisory.v1.stream_action"
            ),
            (
                "$JS.EVENT.ADVISORY.CONSUMER.CREATED.S.C",
                "io.nats.jetstream.advisory.v1.consumer_action"
            ),
            (
                "$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.C",
                "io.nats.jetstream.advisory.v1.consumer_action"
            ),
            (
                "$JS.EVENT.ADVISORY.STREAM.DELETED.S",
                "io.nats.jetstream.advisory.v1.stream_action"
            ),
        ]
        .map(|(s, t)| (s.to_string(), t.to_string())),
        "{seen:?}"
    );
    let created = &seen
        .iter()
        .find(|(s, _)| s.ends_with("STREAM.CREATED.S"))
        .unwrap()
        .1;
    assert_eq!(
        (&created["stream"], &created["action"]),
        (&"S".into(), &"create".into())
    );
    let audits: Vec<&Value> = seen
        .iter()
        .filter(|(s, _)| s == "$JS.EVENT.ADVISORY.API")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(audits.len(), 4, "one api_audit per request: {seen:?}");
    assert_eq!(audits[0]["type"], "io.nats.jetstream.advisory.v1.api_audit");
    assert_eq!(audits[0]["subject"], "$JS.API.STREAM.CREATE.S");
    if common::is_natter() {
        let log = server.output("stderr");
        for line in [
            "JetStream stream create: S",
            "JetStream consumer create: S > C",
            "JetStream stream delete: S",
        ] {
            assert!(log.contains(line), "audit log line {line:?} in:\n{log}");
        }
    }
}
