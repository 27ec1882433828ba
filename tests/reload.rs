//! Configuration reload on SIGHUP, as nats-server does it: permissions, users, log levels and
//! TLS certificates change without dropping the connections that stay valid; a change that
//! needs a restart is refused and the server runs on unchanged.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Server};

const BEFORE: &str = r#"
authorization {
  users: [
    { user: alice, password: a, permissions: { publish: "foo.>", subscribe: ["foo.>", "bar", "_INBOX.>"] } }
    { user: bob, password: b }
    { user: carol, password: c }
  ]
}
"#;

/// Writes `config` over the server's file and sends SIGHUP; returns once the server logged the
/// outcome (`Reloaded server configuration` or `Failed to reload`), with that log text.
fn reload(server: &Server, config: &str) -> String {
    let before = reloads(server);
    std::fs::write(server.dir().join("server.conf"), config).unwrap();
    let status = Command::new("kill")
        .args(["-s", "HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        if reloads(server) > before {
            return server.output("stderr");
        }
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            server.output("stderr")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reloads(server: &Server) -> usize {
    let log = server.output("stderr");
    log.matches("Reloaded server configuration").count() + log.matches("Failed to reload").count()
}

fn login(server: &Server, user: &str, pass: &str) -> Client {
    let mut c = server.client();
    c.send(
        format!(
            "CONNECT {{\"user\":\"{user}\",\"pass\":\"{pass}\",\"verbose\":false}}\r\nPING\r\n"
        )
        .as_bytes(),
    );
    c.expect(b"PONG\r\n");
    c
}

#[test]
fn a_reload_changes_permissions_without_dropping_anyone() {
    let server = Server::with_config(BEFORE);
    let mut alice = login(&server, "alice", "a");
    let mut bob = login(&server, "bob", "b");
    bob.send(b"SUB bar 1\r\nPING\r\n");
    bob.expect(b"PONG\r\n");
    alice.send(b"PUB bar 2\r\nhi\r\nPING\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Publish to \"bar\"'\r\nPONG\r\n");

    let log = reload(
        &server,
        &BEFORE.replace(r#"publish: "foo.>""#, r#"publish: ["foo.>", "bar"]"#),
    );
    assert!(log.contains("Reloaded server configuration"), "{log}");

    // The same connections: alice may now publish to bar, bob receives it.
    alice.send(b"PUB bar 2\r\nhi\r\nPING\r\n");
    alice.expect(b"PONG\r\n");
    let msg = bob.read_msg();
    assert_eq!(
        (msg.subject.as_str(), &msg.payload[..]),
        ("bar", &b"hi"[..])
    );
    bob.send(b"PING\r\n");
    bob.expect(b"PONG\r\n");
}

#[test]
fn a_reload_removes_users_and_subscriptions_it_no_longer_allows() {
    let server = Server::with_config(BEFORE);
    let mut alice = login(&server, "alice", "a");
    alice.send(b"SUB bar 1\r\nSUB foo.x 2\r\nPING\r\n");
    alice.expect(b"PONG\r\n");
    let mut carol = login(&server, "carol", "c");
    let mut bob = login(&server, "bob", "b");

    // carol goes; alice may no longer subscribe to bar.
    let after = BEFORE
        .replace("    { user: carol, password: c }\n", "")
        .replace(
            r#"["foo.>", "bar", "_INBOX.>"]"#,
            r#"["foo.>", "_INBOX.>"]"#,
        );
    reload(&server, &after);

    if common::is_natter() {
        // natter says why; nats-server closes without a word.
        carol.expect(b"-ERR 'Authorization Violation'\r\n");
    }
    carol.expect_closed();
    alice.expect(b"-ERR 'Permissions Violation for Subscription to \"bar\" (sid \"1\")'\r\n");
    bob.send(b"PUB bar 1\r\nx\r\nPUB foo.x 1\r\ny\r\nPING\r\n");
    bob.expect(b"PONG\r\n");
    // Only the subscription still allowed delivers.
    let msg = alice.read_msg();
    assert_eq!(msg.subject, "foo.x");
    alice.send(b"PING\r\n");
    alice.expect(b"PONG\r\n");
    let mut again = server.client();
    again.send(b"CONNECT {\"user\":\"carol\",\"pass\":\"c\",\"verbose\":false}\r\nPING\r\n");
    again.expect(b"-ERR 'Authorization Violation'\r\n");
}

#[test]
fn a_change_that_needs_a_restart_is_refused_and_nothing_changes() {
    let server = Server::with_config(BEFORE);
    let mut alice = login(&server, "alice", "a");
    let changed = format!(
        "server_name: renamed\n{}",
        BEFORE.replace(r#"publish: "foo.>""#, r#"publish: ">""#)
    );
    let log = reload(&server, &changed);
    assert!(log.contains("Failed to reload"), "{log}");
    assert!(log.contains("not supported for"), "{log}");
    // The old permissions still hold.
    alice.send(b"PUB bar 2\r\nhi\r\nPING\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Publish to \"bar\"'\r\nPONG\r\n");
}

#[test]
fn a_reload_turns_debug_logging_on() {
    let server = Server::with_config(BEFORE);
    let _ = login(&server, "bob", "b");
    assert!(!server.output("stderr").contains("[DBG]"));
    reload(&server, &format!("debug: true\n{BEFORE}"));
    let _ = login(&server, "bob", "b");
    let deadline = Instant::now() + common::TIMEOUT;
    while !server.output("stderr").contains("[DBG]") {
        assert!(Instant::now() < deadline, "{}", server.output("stderr"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_tls_certificate_without_dropping_connections() {
    use common::certs::Ca;
    let (old_ca, new_ca) = (Ca::new("old"), Ca::new("new"));
    let (old, new) = (old_ca.server_cert("old"), new_ca.server_cert("new"));
    let dir = common::temp_dir();
    let (cert, key) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let config = format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n}}\n",
        common::certs::quoted(&cert),
        common::certs::quoted(&key)
    );
    let server = Server::with_config(&config);
    let trusting = |ca: &Ca| {
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.cert.clone())
            .require_tls(true)
    };
    let before = common::connect_with(&server, trusting(&old_ca))
        .await
        .expect("connect with the old certificate");

    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    let log = tokio::task::block_in_place(|| reload(&server, &config));
    assert!(log.contains("Reloaded server configuration"), "{log}");

    let after = common::connect_with(&server, trusting(&new_ca))
        .await
        .expect("new handshakes use the new certificate");
    let err = common::connect_with(&server, trusting(&old_ca))
        .await
        .expect_err("the old certificate is gone");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_eq!(
        before.connection_state(),
        async_nats::connection::State::Connected,
        "{}",
        server.output("stderr")
    );
    // The connection made before the rotation still works, and reaches the new one.
    use futures::StreamExt;
    let mut sub = after.subscribe("rotated").await.unwrap();
    // A round trip through the server, so the SUB is in place before the publish.
    let inbox = after.new_inbox();
    let mut probe = after.subscribe(inbox.clone()).await.unwrap();
    after.publish(inbox, "".into()).await.unwrap();
    common::within("probe", probe.next()).await.unwrap();
    before
        .publish("rotated", "still here".into())
        .await
        .unwrap();
    before.flush().await.unwrap();
    let msg = common::within("message", sub.next()).await.unwrap();
    assert_eq!(&msg.payload[..], b"still here");
}
