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
