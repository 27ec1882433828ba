//! The client subcommands (`natter pub/sub/req/reply/server check`), run as the real binary
//! against the harness's server. The client is always natter's own binary; the server is
//! whatever the harness starts (natter, or nats-server through `NATTER_TEST_SERVER`).

mod common;

use common::Server;
use std::io::{BufRead, BufReader};
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

#[test]
fn tls_options_are_refused_not_ignored() {
    let server = Server::start();
    let mut sub = raw_subscriber(&server, "foo");
    for flag in ["--tls-ca", "--creds"] {
        let out = run(&mut client(&[
            "pub",
            "-s",
            &server.url(),
            "foo",
            "x",
            flag,
            "/nonexistent",
        ]));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains("not supported yet"),
            "{err}"
        );
    }
    assert!(sub.msgs_until_pong().is_empty());
}
