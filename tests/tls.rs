//! TLS: server certificates, client certificates (verify), mapping certificates to users
//! (verify_and_map) and TLS before INFO (handshake_first). Certificates come from a throwaway CA
//! made per test (tests/common/certs.rs).

mod common;

use async_nats::{ConnectErrorKind, ConnectOptions};
use bytes::Bytes;
use common::certs::{Ca, CertFiles};
use common::{connect_with, is_natter, next_event_containing, with_events, within, Events, Server};
use futures::StreamExt;
use rcgen::DnType;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A CA with a server certificate in its directory.
fn pki() -> (Ca, CertFiles) {
    let ca = Ca::new("root");
    let server = ca.server_cert("server");
    (ca, server)
}

fn tls_block(server: &CertFiles, extra: &str) -> String {
    format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  {extra}\n}}\n",
        server.cert_conf(),
        server.key_conf()
    )
}

fn tls_opts(ca: &Ca) -> ConnectOptions {
    ConnectOptions::new()
        .add_root_certificates(ca.cert.clone())
        .require_tls(true)
}

fn with_client_cert(opts: ConnectOptions, cert: &CertFiles) -> ConnectOptions {
    opts.add_client_certificate(cert.cert.clone(), cert.key.clone())
}

async fn assert_pub_sub(client: &async_nats::Client) {
    let mut sub = client.subscribe("tls.check").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("tls.check", Bytes::from_static(b"secure"))
        .await
        .unwrap();
    let m = within("message", sub.next())
        .await
        .expect("subscription open");
    assert_eq!(m.payload, Bytes::from_static(b"secure"));
}

/// Reads the raw socket until the server closes it (panics if it stays open past `timeout`);
/// returns everything that arrived.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "connection still open after {timeout:?}; got {}",
            common::escaped(&got)
        );
        stream.set_read_timeout(Some(deadline - now)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return got, // reset
        }
    }
}

/// What a TLS server may send a client that is not speaking TLS before hanging up: nothing
/// (nats-server) or a TLS alert record; certainly no plaintext protocol.
fn assert_no_plaintext_reply(bytes: &[u8]) {
    if is_natter() {
        assert!(
            bytes.is_empty() || bytes[0] == 0x15,
            "only a TLS alert may precede the close, got {}",
            common::escaped(bytes)
        );
    } else {
        assert!(bytes.is_empty(), "got {}", common::escaped(bytes));
    }
}

/// Reads the plaintext INFO line a TLS server sends before the handshake.
fn read_info(stream: &mut TcpStream) -> serde_json::Value {
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = stream.read(&mut byte).expect("read INFO");
        assert!(n == 1, "closed before INFO; got {}", common::escaped(&line));
        line.push(byte[0]);
    }
    let text = String::from_utf8(line).unwrap();
    assert!(text.starts_with("INFO "), "{text}");
    serde_json::from_str(text["INFO ".len()..].trim()).expect("INFO is JSON")
}

// ---------------------------------------------------------------------------------------------
// Server TLS

#[test]
fn info_says_tls_required() {
    let (_ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, ""));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let info = read_info(&mut s);
    assert_eq!(info["tls_required"], true, "{info}");
    assert!(info.get("tls_verify").is_none(), "{info}");
    assert!(info.get("auth_required").is_none(), "{info}");
}

#[tokio::test]
async fn async_nats_over_tls() {
    let (ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, ""));
    let client = connect_with(&server, tls_opts(&ca))
        .await
        .expect("TLS connect");
    assert!(client.server_info().tls_required);
    assert_pub_sub(&client).await;
    // A second client sees the first one's messages over its own TLS session.
    let other = connect_with(&server, tls_opts(&ca))
        .await
        .expect("second TLS connect");
    let mut sub = other.subscribe("cross").await.unwrap();
    // A round trip through the server, so the SUB is in place before the other client publishes.
    let inbox = other.new_inbox();
    let mut probe = other.subscribe(inbox.clone()).await.unwrap();
    other.publish(inbox, Bytes::new()).await.unwrap();
    within("probe", probe.next()).await.unwrap();
    client
        .publish("cross", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let m = within("cross message", sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"x"));
}

#[tokio::test]
async fn client_that_does_not_trust_the_server_fails() {
    let (_ca, cert) = pki();
    let other_ca = Ca::new("other");
    let server = Server::with_config(&tls_block(&cert, ""));
    let err = connect_with(&server, tls_opts(&other_ca))
        .await
        .expect_err("the server's certificate is not from a trusted CA");
    // async-nats reports rustls' verdict as an I/O error.
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn plain_client_is_refused() {
    let (_ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, ""));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let info = read_info(&mut s);
    assert_eq!(info["tls_required"], true);
    s.write_all(b"CONNECT {}\r\nPING\r\n").unwrap();
    let got = read_until_closed(&mut s, common::TIMEOUT);
    assert_no_plaintext_reply(&got);
    // The server is fine afterwards.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    read_info(&mut s);
}

#[test]
fn silent_client_is_dropped_after_the_tls_timeout() {
    let (_ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, "timeout: 1"));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    read_info(&mut s);
    let start = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        start.elapsed()
    );
    assert_no_plaintext_reply(&got);
}

#[tokio::test]
async fn tls_and_token_together() {
    let (ca, cert) = pki();
    let server = Server::with_config(&format!(
        "{}authorization {{ token: \"t0k\" }}\n",
        tls_block(&cert, "")
    ));
    let client = connect_with(&server, tls_opts(&ca).token("t0k".into()))
        .await
        .expect("TLS + token");
    assert!(client.server_info().auth_required);
    assert_pub_sub(&client).await;
    let err = connect_with(&server, tls_opts(&ca).token("bad".into()))
        .await
        .expect_err("wrong token over TLS");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Client certificates

fn verify_conf(ca: &Ca, cert: &CertFiles, mode: &str) -> String {
    tls_block(cert, &format!("ca_file: {}\n  {mode}", ca.cert_conf()))
}

#[test]
fn verify_is_announced_in_info() {
    let (ca, cert) = pki();
    let server = Server::with_config(&verify_conf(&ca, &cert, "verify: true"));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let info = read_info(&mut s);
    assert_eq!(info["tls_required"], true, "{info}");
    assert_eq!(info["tls_verify"], true, "{info}");
}

#[tokio::test]
async fn verify_accepts_a_client_certificate_from_the_ca() {
    let (ca, cert) = pki();
    let server = Server::with_config(&verify_conf(&ca, &cert, "verify: true"));
    let alice = ca.client_cert(
        "alice",
        &[
            (DnType::OrganizationName, "natter"),
            (DnType::CommonName, "alice"),
        ],
        &[],
    );
    let client = connect_with(&server, with_client_cert(tls_opts(&ca), &alice))
        .await
        .expect("client certificate accepted");
    assert_pub_sub(&client).await;
}

#[tokio::test]
async fn verify_refuses_a_client_without_a_certificate() {
    let (ca, cert) = pki();
    let server = Server::with_config(&verify_conf(&ca, &cert, "verify: true"));
    let result = connect_with(&server, tls_opts(&ca)).await;
    assert!(result.is_err(), "no client certificate must not connect");
}

#[tokio::test]
async fn verify_refuses_a_certificate_from_another_ca() {
    let (ca, cert) = pki();
    let server = Server::with_config(&verify_conf(&ca, &cert, "verify: true"));
    let rogue_ca = Ca::new("rogue");
    let mallory = rogue_ca.client_cert("mallory", &[(DnType::CommonName, "mallory")], &[]);
    let result = connect_with(&server, with_client_cert(tls_opts(&ca), &mallory)).await;
    assert!(
        result.is_err(),
        "a certificate from an unknown CA must not connect"
    );
}

// ---------------------------------------------------------------------------------------------
// verify_and_map

/// A verify_and_map server with one user per entry of `users` (name, publish allow).
fn map_conf(ca: &Ca, cert: &CertFiles, users: &[(&str, &str)]) -> String {
    let list: Vec<String> = users
        .iter()
        .map(|(name, publish)| {
            format!("{{ user: \"{name}\", permissions: {{ publish: \"{publish}\", subscribe: \">\" }} }}")
        })
        .collect();
    format!(
        "{}authorization {{ users = [\n  {}\n] }}\n",
        verify_conf(ca, cert, "verify_and_map: true"),
        list.join("\n  ")
    )
}

/// Connects with `cert` and returns the client plus its events.
async fn connect_mapped(
    server: &Server,
    ca: &Ca,
    cert: &CertFiles,
) -> Result<(async_nats::Client, Events), async_nats::ConnectError> {
    let (opts, events) = with_events(with_client_cert(tls_opts(ca), cert));
    let client = connect_with(server, opts).await?;
    Ok((client, events))
}

/// `subject` is denied to this client: the server reports a publish Permissions Violation.
async fn assert_publish_denied(client: &async_nats::Client, events: &mut Events, subject: &str) {
    client
        .publish(subject.to_string(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let event = next_event_containing(events, "Permissions Violation").await;
    assert!(event.contains(subject), "{event}");
}

/// `subject` is allowed: a message published there comes back to our own subscription.
async fn assert_publish_allowed(client: &async_nats::Client, subject: &str) {
    let mut sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    client
        .publish(subject.to_string(), Bytes::from_static(b"ok"))
        .await
        .unwrap();
    let m = within("allowed message", sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"ok"));
}

#[tokio::test]
async fn verify_and_map_by_subject_dn() {
    let (ca, cert) = pki();
    // The certificate subject in ASN.1 order is O=natter, OU=dev, CN=alice; its RFC 2253
    // string is "CN=alice,OU=dev,O=natter".
    let server = Server::with_config(&map_conf(
        &ca,
        &cert,
        &[
            ("CN=alice,OU=dev,O=natter", "alice.>"),
            ("CN=bob,O=natter", "bob.>"),
        ],
    ));
    let alice = ca.client_cert(
        "alice",
        &[
            (DnType::OrganizationName, "natter"),
            (DnType::OrganizationalUnitName, "dev"),
            (DnType::CommonName, "alice"),
        ],
        &[],
    );
    let (client, mut events) = connect_mapped(&server, &ca, &alice)
        .await
        .expect("alice's certificate maps to a user");
    assert!(client.server_info().auth_required);
    assert_publish_allowed(&client, "alice.x").await;
    assert_publish_denied(&client, &mut events, "bob.x").await;

    let bob = ca.client_cert(
        "bob",
        &[
            (DnType::OrganizationName, "natter"),
            (DnType::CommonName, "bob"),
        ],
        &[],
    );
    let (client, mut events) = connect_mapped(&server, &ca, &bob)
        .await
        .expect("bob maps too");
    assert_publish_allowed(&client, "bob.x").await;
    assert_publish_denied(&client, &mut events, "alice.x").await;
}

#[tokio::test]
async fn verify_and_map_matches_dn_regardless_of_order_and_spacing() {
    let (ca, cert) = pki();
    let server = Server::with_config(&map_conf(
        &ca,
        &cert,
        &[("O=natter, OU=dev, CN=carol", "carol.>")],
    ));
    let carol = ca.client_cert(
        "carol",
        &[
            (DnType::OrganizationName, "natter"),
            (DnType::OrganizationalUnitName, "dev"),
            (DnType::CommonName, "carol"),
        ],
        &[],
    );
    let (client, mut events) = connect_mapped(&server, &ca, &carol)
        .await
        .expect("same RDNs in another order and with spaces still map");
    assert_publish_denied(&client, &mut events, "other").await;
}

#[tokio::test]
async fn verify_and_map_by_email_san() {
    let (ca, cert) = pki();
    let server = Server::with_config(&map_conf(&ca, &cert, &[("dave@example.com", "dave.>")]));
    let dave = ca.client_cert(
        "dave",
        &[(DnType::CommonName, "Dave")],
        &["dave@example.com"],
    );
    let (client, mut events) = connect_mapped(&server, &ca, &dave)
        .await
        .expect("the e-mail SAN maps to a user");
    assert_publish_allowed(&client, "dave.x").await;
    assert_publish_denied(&client, &mut events, "x").await;
}

#[tokio::test]
async fn verify_and_map_refuses_unmapped_certificates() {
    let (ca, cert) = pki();
    let server = Server::with_config(&map_conf(&ca, &cert, &[("CN=alice,O=natter", ">")]));
    // Same CA, unknown subject; and a bare CN that is only part of a configured DN.
    for (stem, subject) in [
        (
            "eve",
            vec![
                (DnType::OrganizationName, "natter"),
                (DnType::CommonName, "eve"),
            ],
        ),
        ("alice-cn", vec![(DnType::CommonName, "alice")]),
    ] {
        let cert = ca.client_cert(stem, &subject, &[]);
        let err = connect_mapped(&server, &ca, &cert)
            .await
            .err()
            .unwrap_or_else(|| panic!("{stem} must not connect"));
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{stem}: {err}"
        );
    }
    // Credentials in CONNECT do not stand in for the certificate mapping.
    let eve = ca.client_cert(
        "eve2",
        &[
            (DnType::OrganizationName, "natter"),
            (DnType::CommonName, "eve"),
        ],
        &[],
    );
    let opts = with_client_cert(tls_opts(&ca), &eve)
        .user_and_password("CN=alice,O=natter".into(), "x".into());
    let err = connect_with(&server, opts)
        .await
        .expect_err("eve claiming alice");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    // Without any certificate there is no handshake to begin with.
    assert!(connect_with(&server, tls_opts(&ca)).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// handshake_first

#[tokio::test]
async fn handshake_first_with_async_nats() {
    let (ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, "handshake_first: true"));
    let client = connect_with(&server, tls_opts(&ca).tls_first())
        .await
        .expect("TLS-first connect");
    assert!(client.server_info().tls_required);
    assert_pub_sub(&client).await;
    // A client that waits for INFO first never gets one.
    let result = within(
        "connect without tls_first",
        tls_opts(&ca)
            .connection_timeout(Duration::from_millis(1500))
            .connect(server.url()),
    )
    .await;
    assert!(
        result.is_err(),
        "a client waiting for INFO must not connect"
    );
}

#[test]
fn handshake_first_sends_no_plaintext_info() {
    let (_ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, "handshake_first: true\n  timeout: 1"));
    // Nothing arrives unprompted; the connection is dropped when the TLS timeout runs out.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let start = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        start.elapsed()
    );
    assert_no_plaintext_reply(&got);
    // A plaintext CONNECT is not TLS: the connection ends without a plaintext answer.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"CONNECT {}\r\nPING\r\n").unwrap();
    let got = read_until_closed(&mut s, common::TIMEOUT);
    assert_no_plaintext_reply(&got);
}

#[test]
fn handshake_first_with_a_fallback_delay_sends_info_to_plain_clients() {
    let (_ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, "handshake_first: \"300ms\""));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let start = Instant::now();
    let info = read_info(&mut s);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "INFO only after the delay, got it after {:?}",
        start.elapsed()
    );
    assert_eq!(info["tls_required"], true, "{info}");
}

#[tokio::test]
async fn handshake_first_with_a_fallback_delay_still_takes_tls_first_clients() {
    let (ca, cert) = pki();
    let server = Server::with_config(&tls_block(&cert, "handshake_first: \"300ms\""));
    let client = connect_with(&server, tls_opts(&ca).tls_first())
        .await
        .expect("TLS-first connect");
    assert_pub_sub(&client).await;
    // ... and, after the delay, clients that wait for INFO.
    let client = connect_with(&server, tls_opts(&ca))
        .await
        .expect("INFO-first connect after the fallback delay");
    assert_pub_sub(&client).await;
}
