//! The client subcommands (`natter pub/sub/req/reply/server check/stream`), run as the real binary
//! against the harness's server. The client is always natter's own binary; the server is
//! whatever the harness starts (natter, or nats-server through `NATTER_TEST_SERVER`).

mod common;

use common::certs::Ca;
use common::jwt::{self as nj, Account, Operator};
use common::Server;
use nkeys::KeyPair;
use rcgen::DnType;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a client command may run before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// natter's binary as a client, with no `$NATS_URL` from the environment.
fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter"));
    cmd.args(args)
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a client command to completion, killing it if it outlives [`LIMIT`].
fn run(cmd: &mut Command) -> Output {
    let child = cmd.spawn().expect("spawn natter client");
    wait_output(child, LIMIT)
}

/// Waits for a child to exit by itself, killing it (and failing) after `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("client still running after {limit:?}\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A long-running client (sub, reply) that is killed if the test ends before it does.
struct Running {
    child: Option<Child>,
}

impl Running {
    /// Spawns the command and waits until its standard error has a line containing `ready`
    /// (printed once its subscription is in place). The rest of its standard error is dropped.
    fn start(cmd: &mut Command, ready: &str) -> Running {
        let mut child = cmd.spawn().expect("spawn natter client");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut running = Running { child: Some(child) };
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => return running,
                Ok(_) => {}
                Err(_) => {
                    let out = running.finish(Duration::ZERO);
                    panic!("client never printed {ready:?}\n{}", text(&out));
                }
            }
        }
    }

    /// Waits up to `limit` for the client to exit by itself; its output (stdout only).
    fn finish(&mut self, limit: Duration) -> Output {
        let child = self.child.take().expect("already finished");
        wait_output(child, limit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw connection that asked for headers and subscribed to `subject` as sid 1.
fn raw_subscriber(server: &Server, subject: &str) -> common::Client {
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n");
    c.send(format!("SUB {subject} 1\r\n").as_bytes());
    c.ping_pong_within(common::TIMEOUT);
    c
}

#[test]
fn pub_reaches_a_subscriber_byte_exact() {
    let server = Server::start();
    let url = server.url();
    let mut sub = raw_subscriber(&server, "foo");

    let out = run(&mut client(&["pub", "-s", &url, "foo", "hello"]));
    assert!(out.status.success(), "{}", text(&out));
    let msg = sub.read_msg();
    assert_eq!((msg.subject.as_str(), msg.sid.as_str()), ("foo", "1"));
    assert_eq!((msg.reply, msg.headers), (None, None));
    assert_eq!(msg.payload, b"hello");

    let out = run(&mut client(&[
        "pub",
        "--server",
        &url,
        "foo",
        "hi there",
        "-H",
        "a:1",
        "-H",
        "Trace-Id: x y",
        "--reply",
        "bar",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let msg = sub.read_msg();
    assert_eq!(msg.reply.as_deref(), Some("bar"));
    assert_eq!(
        msg.headers.as_deref(),
        Some(&b"NATS/1.0\r\na: 1\r\nTrace-Id: x y\r\n\r\n"[..])
    );
    assert_eq!(msg.payload, b"hi there");

    let out = run(client(&["pub", "foo", "n", "--count", "3"]).env("NATS_URL", &url));
    assert!(out.status.success(), "{}", text(&out));
    let msgs = sub.msgs_until_pong();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs.iter().all(|m| m.payload == b"n"));
}

#[test]
fn sub_prints_messages_and_stops_after_count() {
    let server = Server::start();
    let mut sub = Running::start(
        &mut client(&["sub", "-s", &server.url(), "foo.*", "--count", "2"]),
        "Subscribing on",
    );
    let mut publisher = server.quiet_client();
    publisher.send(b"PUB foo.a 5\r\nhello\r\nPUB foo.b r 5\r\nworld\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    let out = sub.finish(LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[#1] Received on \"foo.a\"\nhello\n\n\
         [#2] Received on \"foo.b\" with reply \"r\"\nworld\n\n"
    );
}

#[test]
fn sub_shows_headers() {
    let server = Server::start();
    let mut sub = Running::start(
        &mut client(&["sub", "-s", &server.url(), "foo", "--count", "1"]),
        "Subscribing on",
    );
    let mut publisher = raw_subscriber(&server, "unused");
    publisher.send(b"HPUB foo 18 20\r\nNATS/1.0\r\nk: v\r\n\r\nhi\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    let out = sub.finish(LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[#1] Received on \"foo\"\nk: v\n\nhi\n\n"
    );
}

#[test]
fn req_gets_the_reply_of_reply() {
    let server = Server::start();
    let url = server.url();
    let mut replier = Running::start(
        &mut client(&["reply", "-s", &url, "svc", "pong", "--count", "1"]),
        "Listening on",
    );
    let out = run(&mut client(&[
        "req",
        "-s",
        &url,
        "svc",
        "ping",
        "--timeout",
        "5s",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong\n");
    let out = replier.finish(LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("[#1] Received on \"svc\" with reply \"_INBOX."),
        "{shown}"
    );
    assert!(shown.ends_with("\nping\n\n"), "{shown}");
}

#[test]
fn req_without_responders_fails() {
    let server = Server::start();
    let out = run(&mut client(&[
        "request",
        "-s",
        &server.url(),
        "nobody",
        "hi",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No responders available for request"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[test]
fn req_times_out_when_nobody_answers() {
    let server = Server::start();
    let _silent = raw_subscriber(&server, "quiet");
    let out = run(&mut client(&[
        "req",
        "-s",
        &server.url(),
        "quiet",
        "hi",
        "--timeout",
        "200ms",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no reply"),
        "{}",
        text(&out)
    );
}

#[test]
fn stream_add_ls_info_view_rm() {
    let store = common::temp_dir();
    let server = Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()]);
    let url = server.url();
    let ok = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-s", &url]);
        let out = run(&mut client(&all));
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = ok(&[
        "stream",
        "add",
        "ORDERS",
        "--subjects",
        "orders.>",
        "--max-msgs",
        "100",
    ]);
    assert!(shown.starts_with("Stream ORDERS was created"), "{shown}");
    assert!(shown.contains("Subjects: orders.>"), "{shown}");
    assert!(shown.contains("Maximum Messages: 100"), "{shown}");

    ok(&["pub", "orders.1", "first", "-H", "k:v"]);
    ok(&["pub", "orders.2", "second", "--count", "2"]);
    let listed = ok(&["stream", "ls"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("ORDERS"))
        .expect(&listed);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["ORDERS", "orders.>", "3"], "{listed}");
    assert_eq!(ok(&["stream", "ls", "--names"]), "ORDERS\n");

    let info = ok(&["stream", "info", "ORDERS"]);
    assert!(info.contains("Messages: 3"), "{info}");
    assert!(info.contains("Last Sequence: 3"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["stream", "info", "ORDERS", "--json"])).unwrap();
    assert_eq!(json["state"]["messages"], 3);

    let view = ok(&["stream", "view", "ORDERS", "-n", "2"]);
    assert!(
        view.starts_with("[1] Subject: orders.1 Received: "),
        "{view}"
    );
    assert!(view.contains("k: v\n\nfirst\n"), "{view}");
    assert!(view.contains("[2] Subject: orders.2"), "{view}");
    assert!(!view.contains("[3]"), "{view}");
    assert_eq!(
        ok(&["stream", "view", "ORDERS", "--raw", "--id", "2"]),
        "second\nsecond\n"
    );

    let refused = run(&mut client(&["stream", "rm", "ORDERS", "-s", &url]));
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("confirm with -f"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        ok(&["stream", "rm", "ORDERS", "-f"]),
        "Deleted stream ORDERS\n"
    );
    assert_eq!(ok(&["stream", "ls"]), "No streams defined\n");
    let missing = run(&mut client(&["stream", "info", "ORDERS", "-s", &url]));
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("stream not found"),
        "{}",
        text(&missing)
    );
}

#[test]
fn consumer_and_kv_commands() {
    let store = common::temp_dir();
    let server = Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()]);
    let url = server.url();
    let ok = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-s", &url]);
        let out = run(&mut client(&all));
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["stream", "add", "ORDERS", "--subjects", "orders.>"]);
    ok(&["pub", "orders.1", "one"]);
    ok(&["pub", "orders.2", "two"]);
    let added = ok(&[
        "consumer", "add", "ORDERS", "worker", "--filter", "orders.>",
    ]);
    assert!(
        added.starts_with("Consumer ORDERS > worker was created"),
        "{added}"
    );
    let listed = ok(&["consumer", "ls", "ORDERS"]);
    let row: Vec<&str> = listed
        .lines()
        .find(|l| l.starts_with("worker"))
        .expect(&listed)
        .split_whitespace()
        .collect();
    assert_eq!(row, ["worker", "pull", "2", "0", "0"], "{listed}");

    let first = ok(&["consumer", "next", "ORDERS", "worker"]);
    assert!(
        first
            .starts_with("[#1] Received on \"orders.1\" with reply \"$JS.ACK.ORDERS.worker.1.1.1."),
        "{first}"
    );
    assert!(first.contains("\none\n"), "{first}");
    assert_eq!(
        ok(&[
            "consumer",
            "next",
            "ORDERS",
            "worker",
            "--raw",
            "--count",
            "5",
            "--timeout",
            "1s"
        ]),
        "two\n"
    );
    let info = ok(&["consumer", "info", "ORDERS", "worker"]);
    assert!(
        info.contains("Acknowledgment Floor: consumer sequence 2 stream sequence 2"),
        "{info}"
    );
    assert!(info.contains("Outstanding Acks: 0"), "{info}");
    let empty = run(&mut client(&[
        "consumer",
        "next",
        "ORDERS",
        "worker",
        "--timeout",
        "500ms",
        "-s",
        &url,
    ]));
    assert!(!empty.status.success(), "nothing left: {}", text(&empty));
    assert_eq!(
        ok(&["consumer", "rm", "ORDERS", "worker", "-f"]),
        "Deleted consumer ORDERS > worker\n"
    );
    assert_eq!(ok(&["consumer", "ls", "ORDERS", "--names"]), "");

    assert_eq!(
        ok(&["kv", "add", "config", "--history", "5"]),
        "Created bucket config\n"
    );
    assert_eq!(ok(&["kv", "put", "config", "color", "red"]), "1\n");
    assert_eq!(ok(&["kv", "put", "config", "color", "blue"]), "2\n");
    assert_eq!(ok(&["kv", "get", "config", "color", "--raw"]), "blue\n");
    let shown = ok(&["kv", "get", "config", "color"]);
    assert!(
        shown.starts_with("config > color revision: 2 created @ "),
        "{shown}"
    );
    let watch = client(&["kv", "watch", "config", "--count", "3", "-s", &url])
        .spawn()
        .unwrap();
    // The watcher first gets the current value of each key, then changes.
    std::thread::sleep(Duration::from_millis(300));
    ok(&["kv", "put", "config", "size", "L"]);
    ok(&["kv", "del", "config", "size"]);
    let out = wait_output(watch, LIMIT);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "PUT config > color: blue",
            "PUT config > size: L",
            "DEL config > size"
        ],
        "{}",
        text(&out)
    );
    let gone = run(&mut client(&["kv", "get", "config", "size", "-s", &url]));
    assert!(text(&gone).contains("key not found"), "{}", text(&gone));
}

#[test]
fn stream_commands_say_when_jetstream_is_off() {
    let server = Server::start();
    let out = run(&mut client(&["stream", "ls", "-s", &server.url()]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("JetStream is not enabled"),
        "{}",
        text(&out)
    );
}

#[test]
fn server_check_reports_the_server() {
    let server = Server::start();
    let version = server.client().info["version"]
        .as_str()
        .expect("version in INFO")
        .to_string();
    let out = run(&mut client(&["server", "check", "-s", &server.url()]));
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("OK"), "{shown}");
    assert!(shown.contains(&format!("version {version}")), "{shown}");
    assert!(shown.contains("rtt "), "{shown}");

    let out = run(client(&["server", "check"]).env("NATS_URL", server.url()));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn server_check_fails_on_a_closed_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let out = run(&mut client(&["server", "check", "-s", &url]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication and TLS. The servers here need credentials or TLS, so both ends of every check
// are natter client subcommands: `sub` + `pub`, then `reply` + `req`.

/// A path as a command-line argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `natter <args> -s url <opts...>`.
fn client_with(url: &str, opts: &[&str], args: &[&str]) -> Command {
    let mut all = args.to_vec();
    all.extend(["-s", url]);
    all.extend_from_slice(opts);
    client(&all)
}

/// With the connection options `opts`: a message published with `pub` reaches `sub`, and `req`
/// gets the answer of `reply`.
fn round_trip(url: &str, opts: &[&str]) {
    let mut sub = Running::start(
        &mut client_with(url, opts, &["sub", "secure.msg", "--count", "1"]),
        "Subscribing on",
    );
    let out = run(&mut client_with(url, opts, &["pub", "secure.msg", "hello"]));
    assert!(out.status.success(), "pub {opts:?}\n{}", text(&out));
    let out = sub.finish(LIMIT);
    assert!(out.status.success(), "sub {opts:?}\n{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[#1] Received on \"secure.msg\"\nhello\n\n"
    );

    let mut replier = Running::start(
        &mut client_with(url, opts, &["reply", "secure.svc", "pong", "--count", "1"]),
        "Listening on",
    );
    let out = run(&mut client_with(
        url,
        opts,
        &["req", "secure.svc", "ping", "--timeout", "5s"],
    ));
    assert!(out.status.success(), "req {opts:?}\n{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong\n");
    let out = replier.finish(LIMIT);
    assert!(out.status.success(), "reply {opts:?}\n{}", text(&out));
}

/// `pub` (and `sub`, which must not start listening) with `opts` fail with exit status 1 and a
/// message containing `expected`; the error text of `pub`.
fn refused(url: &str, opts: &[&str], expected: &str) -> String {
    let out = run(&mut client_with(url, opts, &["pub", "secure.msg", "x"]));
    assert_eq!(out.status.code(), Some(1), "pub {opts:?}\n{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(expected),
        "pub {opts:?}: want {expected:?}\n{}",
        text(&out)
    );
    let out = run(&mut client_with(url, opts, &["sub", "secure.msg"]));
    assert_eq!(out.status.code(), Some(1), "sub {opts:?}\n{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(expected),
        "sub {opts:?}: want {expected:?}\n{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    err
}

/// What a refused CONNECT prints, as both servers word it.
const AUTH_VIOLATION: &str = "natter: server said: Authorization Violation";

#[test]
fn token_and_user_password_flags() {
    let server = Server::with_config("authorization { token: \"s3cr3t\" }\n");
    let url = server.url();
    round_trip(&url, &["--token", "s3cr3t"]);
    round_trip(&format!("nats://s3cr3t@{}", server.addr()), &[]);
    refused(&url, &["--token", "wrong"], AUTH_VIOLATION);
    refused(&url, &[], AUTH_VIOLATION);

    let server = Server::with_config(
        "authorization { users: [ {user: alice, password: \"pw1\"}, {user: bob, password: \"pw2\"} ] }\n",
    );
    let url = server.url();
    round_trip(&url, &["--user", "alice", "--password", "pw1"]);
    round_trip(&format!("nats://bob:pw2@{}", server.addr()), &[]);
    let err = refused(
        &url,
        &["--user", "alice", "--password", "pw2"],
        AUTH_VIOLATION,
    );
    assert_eq!(err.trim_end(), AUTH_VIOLATION, "only the server's words");
}

/// An operator-mode server with account `A`, and a directory for creds files.
fn operator_server() -> (Server, Account, PathBuf) {
    let op = Operator::new();
    let account = op.account("A", json!({}));
    let server = Server::with_config(&op.config(&[&account]));
    (server, account, common::temp_dir())
}

#[test]
fn creds_in_operator_mode() {
    let (server, account, dir) = operator_server();
    let creds = dir.join("alice.creds");
    std::fs::write(&creds, account.user_creds("alice", json!({}))).expect("write creds");
    round_trip(&server.url(), &["--creds", arg(&creds)]);
}

#[test]
fn wrong_creds_are_refused_with_the_server_error() {
    let (server, account, dir) = operator_server();
    let url = server.url();
    // A user of an account this server's operator never signed.
    let stranger = Operator::new().account("X", json!({}));
    let creds = dir.join("stranger.creds");
    std::fs::write(&creds, stranger.user_creds("mallory", json!({}))).expect("write creds");
    refused(&url, &["--creds", arg(&creds)], AUTH_VIOLATION);
    // A real user's JWT with someone else's seed: the nonce signature does not match.
    let real = account.user_creds("alice", json!({}));
    let jwt = real.lines().nth(1).expect("jwt line");
    let forged = dir.join("forged.creds");
    let seed = KeyPair::new_user().seed().expect("seed");
    std::fs::write(&forged, nj::creds(jwt, &seed)).expect("write creds");
    refused(&url, &["--creds", arg(&forged)], AUTH_VIOLATION);
    // No credentials at all, and an unreadable creds file (refused before connecting).
    refused(&url, &[], AUTH_VIOLATION);
    refused(
        &url,
        &["--creds", arg(&dir.join("missing.creds"))],
        "--creds",
    );
}

#[test]
fn nkey_seed_file() {
    let user = KeyPair::new_user();
    let server = Server::with_config(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    let url = server.url();
    let dir = common::temp_dir();
    let seed = dir.join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().expect("seed"))).expect("write seed");
    round_trip(&url, &["--nkey", arg(&seed)]);

    let other = dir.join("other.nk");
    std::fs::write(&other, KeyPair::new_user().seed().expect("seed")).expect("write seed");
    refused(&url, &["--nkey", arg(&other)], AUTH_VIOLATION);
}

/// A server that requires TLS with a certificate from `ca`; `extra` goes into the `tls` block.
fn tls_server(ca: &Ca, extra: &str) -> Server {
    let cert = ca.server_cert("server");
    Server::with_config(&format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  {extra}\n}}\n",
        cert.cert_conf(),
        cert.key_conf()
    ))
}

#[test]
fn tls_with_a_ca() {
    let ca = Ca::new("root");
    let server = tls_server(&ca, "");
    let url = server.url();
    // The server's INFO asks for TLS; a tls:// URL asks for it too. Both spellings of the flag.
    round_trip(&url, &["--tlsca", arg(&ca.cert)]);
    round_trip(
        &format!("tls://127.0.0.1:{}", server.port),
        &["--tls-ca", arg(&ca.cert)],
    );
    round_trip(
        &format!("tls://localhost:{}", server.port),
        &["--tlsca", arg(&ca.cert)],
    );
    let out = run(&mut client_with(
        &url,
        &["--tlsca", arg(&ca.cert)],
        &["server", "check"],
    ));
    assert!(out.status.success(), "{}", text(&out));

    // No CA to verify the server with, or the wrong one: no connection.
    refused(&url, &[], "--tlsca");
    refused(&format!("tls://{}", server.addr()), &[], "--tlsca");
    let stranger = Ca::new("stranger");
    refused(&url, &["--tlsca", arg(&stranger.cert)], "certificate");
}

#[test]
fn tls_asked_for_is_never_plain_text() {
    let server = Server::start();
    let ca = Ca::new("root");
    let err = refused(
        &format!("tls://{}", server.addr()),
        &["--tlsca", arg(&ca.cert)],
        "does not offer TLS",
    );
    assert!(err.contains("tls://"), "{err}");
    refused(
        &server.url(),
        &["--tlsca", arg(&ca.cert)],
        "does not offer TLS",
    );
    refused(
        &format!("tls://{}", server.addr()),
        &[],
        "does not offer TLS",
    );
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let ca = Ca::new("root");
    let server = tls_server(&ca, &format!("ca_file: {}\n  verify: true", ca.cert_conf()));
    let url = server.url();
    let alice = ca.client_cert("alice", &[(DnType::CommonName, "alice")], &[]);
    round_trip(
        &url,
        &[
            "--tlsca",
            arg(&ca.cert),
            "--tlscert",
            arg(&alice.cert),
            "--tlskey",
            arg(&alice.key),
        ],
    );
    round_trip(
        &url,
        &[
            "--tls-ca",
            arg(&ca.cert),
            "--tls-cert",
            arg(&alice.cert),
            "--tls-key",
            arg(&alice.key),
        ],
    );

    // Without a client certificate, or with one from another CA, the server refuses.
    let stranger = Ca::new("stranger");
    let mallory = stranger.client_cert("mallory", &[(DnType::CommonName, "mallory")], &[]);
    let without = ["--tlsca", arg(&ca.cert)];
    let foreign = [
        "--tlsca",
        arg(&ca.cert),
        "--tlscert",
        arg(&mallory.cert),
        "--tlskey",
        arg(&mallory.key),
    ];
    for opts in [&without[..], &foreign[..]] {
        let out = run(&mut client_with(&url, opts, &["pub", "secure.msg", "x"]));
        assert_eq!(out.status.code(), Some(1), "{opts:?}\n{}", text(&out));
    }
}

#[test]
fn tls_handshake_first() {
    let ca = Ca::new("root");
    let server = tls_server(&ca, "handshake_first: true");
    round_trip(&server.url(), &["--tlsca", arg(&ca.cert), "--tlsfirst"]);
    round_trip(
        &format!("tls://{}", server.addr()),
        &["--tls-ca", arg(&ca.cert), "--tls-first"],
    );
}
