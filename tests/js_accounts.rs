//! Which accounts have JetStream, as nats-server decides it: the global account when no
//! accounts are configured; otherwise each account with `jetstream: enabled`, while the others
//! get "JetStream not enabled for account" from the API. Raw sockets, as telnet would.

mod common;

use common::{temp_dir, Client, Server};

const CONF: &str = "accounts {
  A: { users: [{user: a, password: a}], jetstream: enabled }
  B: { users: [{user: b, password: b}] }
}
";

fn login(server: &Server, user: &str) -> Client {
    let mut c = server.client();
    c.send(
        format!(
            "CONNECT {{\"user\":\"{user}\",\"pass\":\"{user}\",\"verbose\":false,\"headers\":true}}\r\nPING\r\n"
        )
        .as_bytes(),
    );
    c.expect(b"PONG\r\n");
    c
}

/// `$JS.API.<api>` with `body`, answered on an inbox: the reply's JSON.
fn api(c: &mut Client, api: &str, body: &str) -> serde_json::Value {
    c.send(
        format!(
            "SUB _INBOX.r 9\r\nPUB $JS.API.{api} _INBOX.r {}\r\n{body}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let msg = c.read_msg();
    c.send(b"UNSUB 9\r\n");
    serde_json::from_slice(&msg.payload).expect("API reply is JSON")
}

fn js_server() -> (Server, std::path::PathBuf) {
    let store = temp_dir();
    let s = Server::start_with(Some(CONF), &["-js", "-sd", store.to_str().unwrap()]);
    (s, store)
}

#[test]
fn only_accounts_that_enable_jetstream_have_it() {
    let (server, _store) = js_server();
    let mut a = login(&server, "a");
    let info = api(&mut a, "INFO", "");
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
    assert!(info.get("error").is_none(), "{info}");
    assert_eq!(info["streams"], 0);

    let mut b = login(&server, "b");
    let info = api(&mut b, "INFO", "");
    assert_eq!(
        info,
        serde_json::json!({
            "type": "io.nats.jetstream.api.v1.account_info_response",
            "error": {"code": 503, "err_code": 10039, "description": "JetStream not enabled for account"}
        })
    );
    let created = api(
        &mut b,
        "STREAM.CREATE.S",
        r#"{"name":"S","subjects":["s"]}"#,
    );
    assert_eq!(created["error"]["err_code"], 10039, "{created}");
    assert_eq!(
        created["type"],
        "io.nats.jetstream.api.v1.stream_create_response"
    );
}

#[test]
fn streams_belong_to_their_account() {
    let (server, _store) = js_server();
    let mut a = login(&server, "a");
    let created = api(
        &mut a,
        "STREAM.CREATE.S",
        r#"{"name":"S","subjects":["s.>"]}"#,
    );
    assert_eq!(created["config"]["name"], "S", "{created}");
    a.send(b"SUB _INBOX.ack 1\r\nPUB s.1 _INBOX.ack 2\r\nhi\r\n");
    let ack: serde_json::Value = serde_json::from_slice(&a.read_msg().payload).unwrap();
    assert_eq!(ack, serde_json::json!({"stream": "S", "seq": 1}));

    // The same subject in account B is plain core NATS: stored nowhere, no responders.
    let mut b = login(&server, "b");
    b.send(b"SUB s.> 1\r\nPUB s.1 2\r\nhi\r\nPING\r\n");
    let got = b.read_msg();
    assert_eq!(got.subject, "s.1");
    b.expect(b"PONG\r\n");
    let info = api(&mut a, "STREAM.INFO.S", "");
    assert_eq!(info["state"]["messages"], 1, "{info}");
}

#[test]
fn global_account_has_jetstream_without_configured_accounts() {
    let store = temp_dir();
    let server = Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()]);
    let mut c = server.quiet_client();
    let info = api(&mut c, "INFO", "");
    assert!(info.get("error").is_none(), "{info}");
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
}

/// Accounts with their own JetStream limits (nats-server's keys and aliases), enforced with
/// nats-server's errors and reported by `$JS.API.INFO`.
#[test]
fn account_jetstream_limits_are_enforced() {
    const LIMITED: &str = "accounts {
  L: { users: [{user: l, password: l}], jetstream: { max_streams: 2, consumers: 2, max_mem: 1K, store: 3000, max_ack_pending: 10 } }
  R: { users: [{user: r, password: r}], jetstream: { max_bytes_required: true, store_max_stream_bytes: 1000, mem_max_stream_bytes: 500 } }
}
";
    let store = temp_dir();
    let server = Server::start_with(Some(LIMITED), &["-js", "-sd", store.to_str().unwrap()]);
    let mut l = login(&server, "l");
    let info = api(&mut l, "INFO", "");
    assert_eq!(
        info["limits"],
        serde_json::json!({"max_memory": 1000, "max_storage": 3000, "max_streams": 2,
            "max_consumers": 2, "max_ack_pending": 10, "memory_max_stream_bytes": -1,
            "storage_max_stream_bytes": -1, "max_bytes_required": false}),
        "{info}"
    );
    let err = |v: &serde_json::Value| {
        (
            v["error"]["err_code"].clone(),
            v["error"]["description"].clone(),
        )
    };
    let code = |n: u64, d: &str| (serde_json::json!(n), serde_json::json!(d));

    // Reservations count against the account's storage, not the server's.
    let r = api(
        &mut l,
        "STREAM.CREATE.BIG",
        r#"{"name":"BIG","subjects":["big"],"max_bytes":5000}"#,
    );
    assert_eq!(
        err(&r),
        code(10047, "insufficient storage resources available")
    );
    let r = api(
        &mut l,
        "STREAM.CREATE.M",
        r#"{"name":"M","subjects":["m"],"storage":"memory"}"#,
    );
    assert!(r.get("error").is_none(), "{r}");
    let r = api(
        &mut l,
        "STREAM.CREATE.F",
        r#"{"name":"F","subjects":["f"]}"#,
    );
    assert!(r.get("error").is_none(), "{r}");
    let r = api(
        &mut l,
        "STREAM.CREATE.X",
        r#"{"name":"X","subjects":["x"]}"#,
    );
    assert_eq!(err(&r), code(10027, "maximum number of streams reached"));
    let r = api(
        &mut l,
        "STREAM.UPDATE.F",
        r#"{"name":"F","subjects":["f"],"max_consumers":5}"#,
    );
    assert_eq!(err(&r), code(10026, "maximum consumers limit reached"));

    // Publishing past the account's memory: its own error, not the server's.
    l.send(b"SUB _INBOX.ack 1\r\n");
    let payload = "x".repeat(100);
    let mut refused = None;
    for i in 0..20 {
        l.send(format!("PUB m _INBOX.ack 100\r\n{payload}\r\n").as_bytes());
        let ack: serde_json::Value = serde_json::from_slice(&l.read_msg().payload).unwrap();
        if ack.get("error").is_some() {
            refused = Some((i, ack));
            break;
        }
    }
    let (n, ack) = refused.expect("the account's memory limit is reached");
    assert!((5..=10).contains(&n), "{n} messages of 100 B fit in 1000 B");
    assert_eq!(
        err(&ack),
        code(10002, "resource limits exceeded for account")
    );

    // Consumers: the account's max_ack_pending is the default and the most; two in all.
    let create = |c: &mut Client, name: &str, extra: &str| {
        api(
            c,
            &format!("CONSUMER.CREATE.F.{name}"),
            &format!(
                r#"{{"stream_name":"F","config":{{"durable_name":"{name}","ack_policy":"explicit"{extra}}}}}"#
            ),
        )
    };
    let r = create(&mut l, "C1", "");
    assert_eq!(r["config"]["max_ack_pending"], 10, "{r}");
    let r = create(&mut l, "C2", r#","max_ack_pending":50"#);
    assert_eq!(
        err(&r),
        code(10121, "consumer max ack pending exceeds system limit of 10")
    );
    let r = create(&mut l, "C2", r#","max_ack_pending":5"#);
    assert_eq!(r["config"]["max_ack_pending"], 5, "{r}");
    let r = create(&mut l, "C3", "");
    assert_eq!(err(&r), code(10026, "maximum consumers limit reached"));

    // Per-stream byte limits.
    let mut r_ = login(&server, "r");
    let too_big = Some((
        10122,
        "stream max bytes exceeds account limit max stream bytes",
    ));
    for (call, body, want) in [
        (
            "STREAM.CREATE.S",
            r#"{"name":"S","subjects":["s"]}"#,
            Some((
                10113,
                "account requires a stream config to have max bytes set",
            )),
        ),
        (
            "STREAM.CREATE.S",
            r#"{"name":"S","subjects":["s"],"max_bytes":2000}"#,
            too_big,
        ),
        (
            "STREAM.CREATE.M",
            r#"{"name":"M","subjects":["m"],"storage":"memory","max_bytes":1000}"#,
            too_big,
        ),
        (
            "STREAM.CREATE.S",
            r#"{"name":"S","subjects":["s"],"max_bytes":1000}"#,
            None,
        ),
        (
            "STREAM.UPDATE.S",
            r#"{"name":"S","subjects":["s"],"max_bytes":5000}"#,
            too_big,
        ),
    ] {
        let r = api(&mut r_, call, body);
        match want {
            Some((n, d)) => assert_eq!(err(&r), code(n, d), "{call} {body}"),
            None => assert!(r.get("error").is_none(), "{call} {body}: {r}"),
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}

/// The server-wide `max_file_store` bounds all accounts together: once one account fills it,
/// another's publishes are refused too (and stream reservations count across accounts), until
/// space frees.
#[test]
fn server_storage_limit_is_shared_by_accounts() {
    const SHARED: &str = "accounts {
  A: { users: [{user: a, password: a}], jetstream: enabled }
  B: { users: [{user: b, password: b}], jetstream: enabled }
}
";
    let store = temp_dir();
    let config = format!(
        "{SHARED}jetstream {{ store_dir: {:?}, max_file_store: 3000 }}\n",
        store.to_str().unwrap()
    );
    let server = Server::with_config(&config);
    let mut a = login(&server, "a");
    let mut b = login(&server, "b");
    for (c, name) in [(&mut a, "SA"), (&mut b, "SB")] {
        let subject = name.to_lowercase();
        let r = api(
            c,
            &format!("STREAM.CREATE.{name}"),
            &format!(r#"{{"name":"{name}","subjects":["{subject}"]}}"#),
        );
        assert!(r.get("error").is_none(), "{r}");
    }
    let r = api(
        &mut b,
        "STREAM.CREATE.RB",
        r#"{"name":"RB","subjects":["rb"],"max_bytes":2000}"#,
    );
    assert!(r.get("error").is_none(), "{r}");
    let r = api(
        &mut a,
        "STREAM.CREATE.RA",
        r#"{"name":"RA","subjects":["ra"],"max_bytes":2000}"#,
    );
    assert_eq!(
        r["error"]["err_code"], 10047,
        "B's reservation counts for A: {r}"
    );

    let publish = |c: &mut Client, subject: &str| -> serde_json::Value {
        let body = "x".repeat(100);
        c.send(format!("SUB _INBOX.p 7\r\nPUB {subject} _INBOX.p 100\r\n{body}\r\n").as_bytes());
        let ack = serde_json::from_slice(&c.read_msg().payload).unwrap();
        c.send(b"UNSUB 7\r\n");
        ack
    };
    let mut stored = 0;
    loop {
        let ack = publish(&mut a, "sa");
        if ack.get("error").is_some() {
            assert_eq!(ack["error"]["err_code"], 10023, "{ack}");
            break;
        }
        stored += 1;
        assert!(
            stored < 40,
            "3000 bytes hold fewer than 40 messages of 100 B"
        );
    }
    let ack = publish(&mut b, "sb");
    assert_eq!(
        ack["error"]["err_code"], 10023,
        "A's usage counts for B: {ack}"
    );
    let r = api(&mut a, "STREAM.PURGE.SA", "");
    assert_eq!(r["success"], true, "{r}");
    let ack = publish(&mut b, "sb");
    assert_eq!(ack["seq"], 1, "space freed in A is B's: {ack}");
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}
