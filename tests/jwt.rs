//! Operator mode (decentralised JWT auth): an operator JWT in the config, account JWTs in a
//! preloaded memory resolver, users presenting signed user JWTs (`.creds`). The JWTs are minted by
//! tests/common/jwt.rs.

mod common;

use async_nats::{ConnectErrorKind, ConnectOptions};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::jwt::{self as nj, Account, Operator};
use common::{is_natter, sync, within, Client, Server};
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";

async fn connect_creds(
    server: &Server,
    creds: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let opts = ConnectOptions::with_credentials(creds).expect("parse creds");
    common::connect_with(server, opts).await
}

/// A user JWT and key pair signed by `signer` (the account or one of its signing keys).
fn user(signer: &KeyPair, nats: Value, top: Value) -> (String, KeyPair) {
    let kp = KeyPair::new_user();
    let jwt = nj::user_jwt(signer, &kp.public_key(), "u", nats, top);
    (jwt, kp)
}

/// Raw login with a user JWT: read INFO's nonce, sign it, send CONNECT; returns the client
/// before reading any reply.
fn raw_connect(server: &Server, jwt: &str, kp: &KeyPair, verbose: bool) -> Client {
    let mut c = server.client();
    let nonce = c.info["nonce"].as_str().expect("INFO.nonce").to_string();
    let sig = URL_SAFE_NO_PAD.encode(kp.sign(nonce.as_bytes()).unwrap());
    let connect = json!({ "jwt": jwt, "sig": sig, "verbose": verbose, "pedantic": false });
    c.send(format!("CONNECT {connect}\r\n").as_bytes());
    c
}

fn raw_login(server: &Server, jwt: &str, kp: &KeyPair) -> Client {
    let mut c = raw_connect(server, jwt, kp, false);
    c.ping_pong_within(common::TIMEOUT);
    c
}

fn assert_raw_refused(server: &Server, jwt: &str, kp: &KeyPair) {
    let mut c = raw_connect(server, jwt, kp, true);
    c.expect(AUTH_VIOLATION);
    let rest = c.expect_closed();
    assert!(rest.is_empty(), "{rest:?}");
}

struct Setup {
    #[allow(dead_code)]
    op: Operator,
    a: Account,
    b: Account,
    server: Server,
}

fn setup() -> Setup {
    let op = Operator::new();
    let a = op.account("A", json!({}));
    let b = op.account("B", json!({}));
    let server = Server::with_config(&op.config(&[&a, &b]));
    Setup { op, a, b, server }
}

/// A server trusting one account `A` with the given `nats` claims.
fn serve_one(nats: Value) -> (Account, Server) {
    let op = Operator::new();
    let a = op.account("A", nats);
    let server = Server::with_config(&op.config(&[&a]));
    (a, server)
}

/// Account `limits` claims: unlimited except for `overrides`.
fn limits(overrides: Value) -> Value {
    let mut limits = nj::unlimited();
    for (k, v) in overrides.as_object().expect("an object") {
        limits[k] = v.clone();
    }
    limits
}

/// Reads until the server closes `c` for an expired user (answering its PINGs on the way);
/// returns how long that took from `since`.
fn expect_expired(c: &mut Client, since: Instant) -> Duration {
    let mut line = c.read_line();
    while line == "PING" {
        c.send(b"PONG\r\n");
        line = c.read_line();
    }
    let waited = since.elapsed();
    assert_eq!(line, "-ERR 'User Authentication Expired'");
    let rest = c.expect_closed();
    assert!(rest.is_empty(), "{rest:?}");
    waited
}

// ---------------------------------------------------------------------------------------------

#[test]
fn info_offers_a_nonce_and_requires_auth() {
    let s = setup();
    let c = s.server.client();
    assert_eq!(c.info["auth_required"], true, "{}", c.info);
    assert!(
        c.info["nonce"].as_str().is_some_and(|n| !n.is_empty()),
        "{}",
        c.info
    );
}

#[tokio::test]
async fn creds_connect_and_pub_sub() {
    let s = setup();
    let client = connect_creds(&s.server, &s.a.user_creds("alice", json!({})))
        .await
        .expect("user of A connects");
    let mut sub = client.subscribe("jwt.x").await.unwrap();
    client
        .publish("jwt.x", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let m = within("message", sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"hi"));

    // Another user of the same account shares the subject space.
    let other = connect_creds(&s.server, &s.a.user_creds("bob", json!({})))
        .await
        .expect("second user of A");
    sync(&client).await;
    other
        .publish("jwt.x", Bytes::from_static(b"from bob"))
        .await
        .unwrap();
    let m = within("message from bob", sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"from bob"));
}

#[test]
fn raw_jwt_login() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));
    let mut c = raw_connect(&s.server, &jwt, &kp, true);
    c.expect(b"+OK\r\n");
    c.send(b"SUB x 1\r\nPUB x 2\r\nok\r\nPING\r\n");
    c.expect(b"+OK\r\n+OK\r\nMSG x 1 2\r\nok\r\nPONG\r\n");
}

#[test]
fn bad_user_credentials_are_refused() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));

    // The nonce signed by another key than the JWT's subject.
    let (_, stranger) = user(&s.a.kp, json!({}), json!({}));
    assert_raw_refused(&s.server, &jwt, &stranger);

    // No JWT at all, and a JWT without a signature of the nonce.
    let mut c = s.server.client();
    c.send(b"CONNECT {\"verbose\":true}\r\n");
    c.expect(AUTH_VIOLATION);
    c.expect_closed();
    let mut c = s.server.client();
    c.send(format!("CONNECT {}\r\n", json!({ "jwt": jwt })).as_bytes());
    c.expect(AUTH_VIOLATION);
    c.expect_closed();

    // A tampered JWT: the claims changed after signing.
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["name"] = json!("mallory");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_raw_refused(&s.server, &tampered, &kp);

    // Not a JWT.
    assert_raw_refused(&s.server, "not.a.jwt", &kp);

    // Password-style credentials mean nothing in operator mode.
    let mut c = s.server.client();
    c.send(b"CONNECT {\"user\":\"a\",\"pass\":\"a\"}\r\n");
    c.expect(AUTH_VIOLATION);
    c.expect_closed();

    // The good one still works.
    raw_login(&s.server, &jwt, &kp);
}

#[tokio::test]
async fn user_signed_by_another_account_is_refused() {
    let s = setup();
    // Signed by an account the operator never issued (unknown to the resolver).
    let rogue = KeyPair::new_account();
    let (jwt, kp) = user(&rogue, json!({}), json!({}));
    assert_raw_refused(&s.server, &jwt, &kp);
    let err = connect_creds(&s.server, &nj::creds(&jwt, &kp.seed().unwrap()))
        .await
        .expect_err("unknown account");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );

    // Claiming account A as issuer_account while signed by a key A does not list.
    let (jwt, kp) = user(
        &rogue,
        json!({ "issuer_account": s.a.public_key() }),
        json!({}),
    );
    assert_raw_refused(&s.server, &jwt, &kp);
}

#[test]
fn account_signed_by_another_operator_is_not_loaded() {
    let op = Operator::new();
    let a = op.account("A", json!({}));
    // An account JWT signed by a different operator, preloaded anyway.
    let rogue = Account::signed_by(&KeyPair::new_operator(), "ROGUE", json!({}));
    let config = op.config(&[&a, &rogue]);
    // nats-server starts and just never trusts that account. Refusing to start, naming it, is
    // acceptable too (natter does so); the harness reports an early exit by panicking.
    let started = std::panic::catch_unwind(|| Server::with_config(&config));
    let server = match started {
        Ok(server) => server,
        Err(panic) if is_natter() => {
            let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(text.contains("exited early"), "{text}");
            assert!(text.contains(&rogue.public_key()), "{text}");
            return;
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let (jwt, kp) = user(&rogue.kp, json!({}), json!({}));
    assert_raw_refused(&server, &jwt, &kp);
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    raw_login(&server, &jwt, &kp);
}

#[tokio::test]
async fn expired_user_is_refused() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({ "exp": nj::now() - 60 }));
    assert_raw_refused(&s.server, &jwt, &kp);
    let err = connect_creds(&s.server, &nj::creds(&jwt, &kp.seed().unwrap()))
        .await
        .expect_err("expired");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    // Not yet expired is fine.
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({ "exp": nj::now() + 3600 }));
    raw_login(&s.server, &jwt, &kp);
}

#[test]
fn user_not_yet_valid_is_refused() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({ "nbf": nj::now() + 3600 }));
    assert_raw_refused(&s.server, &jwt, &kp);
}

#[test]
fn user_jwt_permissions_apply() {
    let s = setup();
    let (jwt, kp) = user(
        &s.a.kp,
        json!({
            "pub": { "allow": ["ok.>"], "deny": ["ok.secret"] },
            "sub": { "allow": ["ok.>", "_INBOX.>"], "deny": ["ok.hidden"] }
        }),
        json!({}),
    );
    let mut c = raw_login(&s.server, &jwt, &kp);
    c.send(b"PUB ok.secret 1\r\nx\r\nPUB nope 1\r\nx\r\nPING\r\n");
    c.expect(b"-ERR 'Permissions Violation for Publish to \"ok.secret\"'\r\n");
    c.expect(b"-ERR 'Permissions Violation for Publish to \"nope\"'\r\n");
    c.expect(b"PONG\r\n");
    c.send(b"SUB ok.hidden 1\r\nSUB nope q 2\r\nSUB ok.fine 3\r\nPUB ok.fine 1\r\ny\r\nPING\r\n");
    c.expect(b"-ERR 'Permissions Violation for Subscription to \"ok.hidden\"'\r\n");
    c.expect(b"-ERR 'Permissions Violation for Subscription to \"nope\" using queue \"q\"'\r\n");
    c.expect(b"MSG ok.fine 3 1\r\ny\r\nPONG\r\n");
}

#[test]
fn user_jwt_allow_responses() {
    let s = setup();
    let (jwt, kp) = user(
        &s.a.kp,
        json!({ "pub": { "deny": [">"] }, "sub": { "allow": ["svc"] }, "resp": { "max": 1, "ttl": 0 } }),
        json!({}),
    );
    let mut r = raw_login(&s.server, &jwt, &kp);
    r.send(b"SUB svc 1\r\nPING\r\n");
    r.expect(b"PONG\r\n");
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));
    let mut asker = raw_login(&s.server, &jwt, &kp);
    asker.send(b"SUB _INBOX.r 9\r\nPUB svc _INBOX.r 1\r\n?\r\nPING\r\n");
    asker.expect(b"PONG\r\n");
    let m = r.read_msg();
    assert_eq!(m.reply.as_deref(), Some("_INBOX.r"));
    r.send(b"PUB _INBOX.r 1\r\n!\r\nPING\r\n");
    r.expect(b"PONG\r\n");
    r.send(b"PUB _INBOX.r 1\r\n!\r\nPING\r\n");
    r.expect(b"-ERR 'Permissions Violation for Publish to \"_INBOX.r\"'\r\n");
    r.expect(b"PONG\r\n");
    let got = asker.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
}

/// Regression: `resp` with an empty `pub` once let the user publish anywhere. It allows one reply
/// to each request the user received, and nothing else.
#[test]
fn user_jwt_allow_responses_without_pub_permissions() {
    let s = setup();
    let (jwt, kp) = user(
        &s.a.kp,
        json!({ "pub": {}, "sub": { "allow": ["svc"] }, "resp": { "max": 1, "ttl": 0 } }),
        json!({}),
    );
    let mut r = raw_login(&s.server, &jwt, &kp);
    r.send(b"SUB svc 1\r\nPUB anything 1\r\nx\r\nPUB _INBOX.r 1\r\nx\r\nPING\r\n");
    r.expect(b"-ERR 'Permissions Violation for Publish to \"anything\"'\r\n");
    r.expect(b"-ERR 'Permissions Violation for Publish to \"_INBOX.r\"'\r\n");
    r.expect(b"PONG\r\n");
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));
    let mut asker = raw_login(&s.server, &jwt, &kp);
    asker.send(b"SUB _INBOX.r 9\r\nSUB anything 8\r\nPUB svc _INBOX.r 1\r\n?\r\nPING\r\n");
    asker.expect(b"PONG\r\n");
    let m = r.read_msg();
    assert_eq!(m.reply.as_deref(), Some("_INBOX.r"));
    r.send(b"PUB anything 1\r\nx\r\nPUB _INBOX.r 1\r\n!\r\nPING\r\n");
    r.expect(b"-ERR 'Permissions Violation for Publish to \"anything\"'\r\n");
    r.expect(b"PONG\r\n");
    r.send(b"PUB _INBOX.r 1\r\n!\r\nPING\r\n");
    r.expect(b"-ERR 'Permissions Violation for Publish to \"_INBOX.r\"'\r\n");
    r.expect(b"PONG\r\n");
    let got = asker.msgs_until_pong();
    assert_eq!(got, vec![common::Msg::new("_INBOX.r", "9", b"!")]);
}

/// Regression: before CONNECT, a PUB header alone is refused at once in operator mode too,
/// without waiting for its payload.
#[test]
fn unfinished_pub_before_connect_is_refused_at_once() {
    let s = setup();
    for first in [&b"PUB foo 1000000\r\n"[..], b"FOO\r\n"] {
        let mut c = s.server.client();
        c.send(first);
        c.expect_within(AUTH_VIOLATION, Duration::from_secs(1));
        let errs = c.expect_closed();
        assert!(errs.is_empty(), "{}: {errs:?}", first.escape_ascii());
    }
}

/// Regression: `-V` traced CONNECT verbatim. The nonce signature is shown as `[REDACTED]` (the
/// JWT itself is public and may be traced).
#[test]
fn protocol_trace_redacts_the_nonce_signature() {
    let op = Operator::new();
    let a = op.account("A", json!({}));
    let server = Server::start_with(Some(&op.config(&[&a])), &["-DV"]);
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let c = raw_login(&server, &jwt, &kp);
    // ed25519 signatures are deterministic: this is the signature raw_login sent.
    let nonce = c.info["nonce"].as_str().expect("INFO.nonce");
    let sig = URL_SAFE_NO_PAD.encode(kp.sign(nonce.as_bytes()).unwrap());
    let deadline = Instant::now() + common::TIMEOUT;
    let log = loop {
        let log = server.output("stderr");
        if log.contains("<<- [CONNECT ") {
            break log;
        }
        assert!(Instant::now() < deadline, "no CONNECT trace:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!log.contains(&sig), "the signature is in the log:\n{log}");
    assert!(log.contains(r#""sig":"[REDACTED]""#), "{log}");
}

#[test]
fn accounts_are_isolated() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));
    let mut a = raw_login(&s.server, &jwt, &kp);
    let (jwt, kp) = user(&s.b.kp, json!({}), json!({}));
    let mut b = raw_login(&s.server, &jwt, &kp);
    a.send(b"SUB foo 1\r\nPING\r\n");
    a.expect(b"PONG\r\n");
    b.send(b"SUB foo 1\r\nPUB foo 2\r\nbb\r\nPING\r\n");
    b.expect(b"MSG foo 1 2\r\nbb\r\nPONG\r\n");
    assert_eq!(a.msgs_until_pong(), vec![]);
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({}));
    let mut a2 = raw_login(&s.server, &jwt, &kp);
    a2.send(b"PUB foo 2\r\naa\r\nPING\r\n");
    a2.expect(b"PONG\r\n");
    let got = a.msgs_until_pong();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].payload, b"aa");
    assert_eq!(b.msgs_until_pong(), vec![]);
}

#[tokio::test]
async fn user_signed_by_an_account_signing_key() {
    let signing = KeyPair::new_account();
    let (a, server) = serve_one(json!({ "signing_keys": [signing.public_key()] }));
    let (jwt, kp) = user(
        &signing,
        json!({ "issuer_account": a.public_key() }),
        json!({}),
    );
    let client = connect_creds(&server, &nj::creds(&jwt, &kp.seed().unwrap()))
        .await
        .expect("signing-key user connects");
    // It lands in account A: a user signed by A's own key sees its messages.
    let direct = connect_creds(&server, &a.user_creds("direct", json!({})))
        .await
        .expect("direct user");
    let mut sub = direct.subscribe("shared").await.unwrap();
    sync(&direct).await;
    client
        .publish("shared", Bytes::from_static(b"via signing key"))
        .await
        .unwrap();
    let m = within("message", sub.next()).await.unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"via signing key"));

    // Without issuer_account the signing key is taken for the account itself: unknown.
    let (jwt, kp) = user(&signing, json!({}), json!({}));
    assert_raw_refused(&server, &jwt, &kp);
}

#[tokio::test]
async fn account_signed_by_an_operator_signing_key() {
    let op_kp = KeyPair::new_operator();
    let op_signing = KeyPair::new_operator();
    let system = Account::signed_by(&op_signing, "SYS", json!({}));
    let op = Operator {
        jwt: nj::operator_jwt(
            &op_kp,
            "OP",
            json!({ "system_account": system.public_key(), "signing_keys": [op_signing.public_key()] }),
        ),
        system,
        kp: op_kp,
    };
    let a = Account::signed_by(&op_signing, "A", json!({}));
    let server = Server::with_config(&op.config(&[&a]));
    connect_creds(&server, &a.user_creds("u", json!({})))
        .await
        .expect("user of an account signed by an operator signing key");
}

#[tokio::test]
async fn jwt_stream_export_and_import() {
    let op = Operator::new();
    let a = op.account(
        "A",
        json!({ "exports": [ { "name": "ev", "subject": "events.>", "type": "stream" } ] }),
    );
    let b = op.account(
        "B",
        json!({ "imports": [ {
            "name": "ev", "subject": "events.>", "account": a.public_key(), "type": "stream"
        } ] }),
    );
    let server = Server::with_config(&op.config(&[&a, &b]));
    let pa = connect_creds(&server, &a.user_creds("pa", json!({})))
        .await
        .unwrap();
    let sb = connect_creds(&server, &b.user_creds("sb", json!({})))
        .await
        .unwrap();
    let mut sub = sb.subscribe("events.>").await.unwrap();
    sync(&sb).await;
    pa.publish("events.one", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let m = within("imported event", sub.next()).await.unwrap();
    assert_eq!(m.subject.as_str(), "events.one");
}

#[tokio::test]
async fn jwt_service_export_and_import() {
    let op = Operator::new();
    let a = op.account(
        "A",
        json!({ "exports": [ { "name": "help", "subject": "help", "type": "service" } ] }),
    );
    let b = op.account(
        "B",
        json!({ "imports": [ {
            "name": "help", "subject": "help", "account": a.public_key(),
            "local_subject": "a.help", "type": "service"
        } ] }),
    );
    let server = Server::with_config(&op.config(&[&a, &b]));
    let responder = connect_creds(&server, &a.user_creds("responder", json!({})))
        .await
        .unwrap();
    let mut requests = responder.subscribe("help").await.unwrap();
    sync(&responder).await;
    let task = tokio::spawn(async move {
        let m = requests.next().await.expect("request");
        responder
            .publish(m.reply.clone().unwrap(), Bytes::from_static(b"helped"))
            .await
            .unwrap();
        responder.flush().await.unwrap();
        (m.subject.to_string(), responder)
    });
    let requester = connect_creds(&server, &b.user_creds("requester", json!({})))
        .await
        .unwrap();
    let answer = within(
        "request",
        requester.request("a.help", Bytes::from_static(b"?")),
    )
    .await
    .expect("answered");
    assert_eq!(answer.payload, Bytes::from_static(b"helped"));
    let (subject, _responder) = within("responder", task).await.unwrap();
    assert_eq!(subject, "help");
}

// ---------------------------------------------------------------------------------------------
// Limits from the JWTs.

#[test]
fn user_jwt_limits_apply() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({ "subs": 1, "payload": 4 }), json!({}));
    let mut c = raw_login(&s.server, &jwt, &kp);
    c.send(b"SUB a 1\r\nSUB b 2\r\nPING\r\n");
    c.expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
    c.send(b"PUB a 4\r\nfour\r\nPING\r\n");
    c.expect(b"MSG a 1 4\r\nfour\r\nPONG\r\n");
    c.send(b"PUB a 5\r\nfive!\r\n");
    c.expect(b"-ERR 'Maximum Payload Violation'\r\n");
    c.expect_closed();
}

#[test]
fn account_connection_limit() {
    let (a, server) = serve_one(json!({ "limits": limits(json!({ "conn": 1 })) }));
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let _first = raw_login(&server, &jwt, &kp);
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let mut c = raw_connect(&server, &jwt, &kp, true);
    c.expect(b"-ERR 'maximum account active connections exceeded'\r\n");
    c.expect_closed();
}

#[test]
fn account_subscription_limit_applies_to_each_connection() {
    let (a, server) = serve_one(json!({ "limits": limits(json!({ "subs": 2 })) }));
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let mut c1 = raw_login(&server, &jwt, &kp);
    c1.send(b"SUB a 1\r\nSUB b 2\r\nPING\r\n");
    c1.expect(b"PONG\r\n");
    // nats-server counts the account's `subs` per connection: a second connection gets its own
    // two, so the account holds four.
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let mut c2 = raw_login(&server, &jwt, &kp);
    c2.send(b"SUB c 1\r\nSUB d 2\r\nPING\r\n");
    c2.expect(b"PONG\r\n");
    // A third on either is refused; the connection stays open.
    c1.send(b"SUB e 3\r\nPING\r\n");
    c1.expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
    c2.send(b"SUB e 3\r\nPING\r\n");
    c2.expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
    // An UNSUB makes room again.
    c1.send(b"UNSUB 1\r\nSUB e 3\r\nPUB e 1\r\n!\r\nPING\r\n");
    c1.expect(b"MSG e 3 1\r\n!\r\nPONG\r\n");
    // A user JWT allowing more does not lift the account's limit.
    let (jwt, kp) = user(&a.kp, json!({ "subs": 5 }), json!({}));
    let mut c3 = raw_login(&server, &jwt, &kp);
    c3.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n");
    c3.expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
}

#[test]
fn account_payload_limit() {
    let (a, server) = serve_one(json!({ "limits": limits(json!({ "payload": 8 })) }));
    // Unlimited in the user JWT, and more than the account allows: the account's 8 bytes hold.
    for nats in [json!({}), json!({ "payload": 100 })] {
        let (jwt, kp) = user(&a.kp, nats, json!({}));
        let mut c = raw_login(&server, &jwt, &kp);
        c.send(b"SUB a 1\r\nPUB a 8\r\n12345678\r\nPING\r\n");
        c.expect(b"MSG a 1 8\r\n12345678\r\nPONG\r\n");
        c.send(b"PUB a 9\r\n123456789\r\n");
        c.expect(b"-ERR 'Maximum Payload Violation'\r\n");
        let rest = c.expect_closed();
        assert!(rest.is_empty(), "{rest:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Who may connect, from where, when and for how long: user `src`, `times` and `exp`, account
// `revocations`.

#[test]
fn user_src_limits_client_addresses() {
    let s = setup();
    // The test clients connect from 127.0.0.1.
    for src in [
        json!(["127.0.0.0/8"]),
        json!(["10.0.0.0/8", "127.0.0.1/32"]),
    ] {
        let (jwt, kp) = user(&s.a.kp, json!({ "src": src }), json!({}));
        raw_login(&s.server, &jwt, &kp);
    }
    for src in [
        json!(["10.0.0.0/8"]),
        json!(["10.0.0.0/8", "192.168.0.0/16"]),
    ] {
        let (jwt, kp) = user(&s.a.kp, json!({ "src": src }), json!({}));
        assert_raw_refused(&s.server, &jwt, &kp);
    }
}

#[test]
fn user_src_entries_must_be_cidr_blocks() {
    let s = setup();
    // nats-server parses each entry as a CIDR block: a bare address matches nothing.
    let (jwt, kp) = user(&s.a.kp, json!({ "src": ["127.0.0.1"] }), json!({}));
    assert_raw_refused(&s.server, &jwt, &kp);
}

/// `HH:MM:SS` of a second of the day.
fn hms(second_of_day: i64) -> String {
    let t = second_of_day.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// The current second of the day in UTC, at least 10 s away from midnight (waits if need be), so
/// that windows near now need not wrap.
fn utc_second_of_day() -> i64 {
    loop {
        let t = nj::now().rem_euclid(86_400);
        if (10..86_390).contains(&t) {
            return t;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn user_times_limit_connection_hours() {
    let s = setup();
    let now = utc_second_of_day();
    let inside = json!({ "start": hms((now - 3600).max(0)), "end": hms((now + 3600).min(86_399)) });
    let outside = if now >= 7200 {
        json!({ "start": "00:00:00", "end": hms(now - 3600) })
    } else {
        json!({ "start": hms(now + 3600), "end": "23:59:59" })
    };
    for zone in ["UTC", "Etc/UTC"] {
        let times = |windows: Value| json!({ "times": windows, "times_location": zone });
        let (jwt, kp) = user(&s.a.kp, times(json!([inside])), json!({}));
        raw_login(&s.server, &jwt, &kp);
        // Any one window containing now will do.
        let (jwt, kp) = user(&s.a.kp, times(json!([outside, inside])), json!({}));
        raw_login(&s.server, &jwt, &kp);
        let (jwt, kp) = user(&s.a.kp, times(json!([outside])), json!({}));
        assert_raw_refused(&s.server, &jwt, &kp);
    }
    // No location (or "Local") means the server's local time; the whole day is safe to check.
    for zone in ["", "Local"] {
        let (jwt, kp) = user(
            &s.a.kp,
            json!({ "times": [{ "start": "00:00:00", "end": "23:59:59" }], "times_location": zone }),
            json!({}),
        );
        raw_login(&s.server, &jwt, &kp);
    }
    // A location the server does not know refuses the user.
    let (jwt, kp) = user(
        &s.a.kp,
        json!({ "times": [inside], "times_location": "Mars/Olympus_Mons" }),
        json!({}),
    );
    assert_raw_refused(&s.server, &jwt, &kp);
}

#[test]
fn connection_closes_when_its_time_window_ends() {
    let s = setup();
    let now = utc_second_of_day();
    let window = json!({ "start": hms(now - 10), "end": hms(now + 2) });
    let (jwt, kp) = user(
        &s.a.kp,
        json!({ "times": [window], "times_location": "UTC" }),
        json!({}),
    );
    let since = Instant::now();
    let mut c = raw_login(&s.server, &jwt, &kp);
    let waited = expect_expired(&mut c, since);
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn connection_closes_when_the_user_jwt_expires() {
    let s = setup();
    let (jwt, kp) = user(&s.a.kp, json!({}), json!({ "exp": nj::now() + 2 }));
    let since = Instant::now();
    let mut c = raw_login(&s.server, &jwt, &kp);
    c.send(b"SUB x 1\r\nPUB x 1\r\n!\r\nPING\r\n");
    c.expect(b"MSG x 1 1\r\n!\r\nPONG\r\n");
    // `exp` is whole seconds: between one and two seconds away. (nats-server rounds the wait to
    // whole seconds too and closes at two.)
    let waited = expect_expired(&mut c, since);
    assert!(
        waited > Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn revoked_user_is_refused() {
    let revoked = KeyPair::new_user();
    let at = nj::now();
    let (a, server) = serve_one(json!({ "revocations": { revoked.public_key(): at } }));
    let issued_at = |iat: i64| {
        nj::user_jwt(
            &a.kp,
            &revoked.public_key(),
            "r",
            json!({}),
            json!({ "iat": iat }),
        )
    };
    // Issued before the revocation, or in the same second: refused.
    assert_raw_refused(&server, &issued_at(at - 60), &revoked);
    assert_raw_refused(&server, &issued_at(at), &revoked);
    // Reissued after it: fine.
    raw_login(&server, &issued_at(at + 1), &revoked);
    // Other users of the account are not affected.
    let (jwt, kp) = user(&a.kp, json!({}), json!({ "iat": at - 60 }));
    raw_login(&server, &jwt, &kp);
}

#[test]
fn revoking_all_users_issued_before_a_time() {
    let at = nj::now();
    let (a, server) = serve_one(json!({ "revocations": { "*": at } }));
    for iat in [at - 60, at] {
        let (jwt, kp) = user(&a.kp, json!({}), json!({ "iat": iat }));
        assert_raw_refused(&server, &jwt, &kp);
    }
    let (jwt, kp) = user(&a.kp, json!({}), json!({ "iat": at + 1 }));
    raw_login(&server, &jwt, &kp);
}

// ---------------------------------------------------------------------------------------------
// Scoped signing keys: the account's template, not the user JWT, says what such users may do.

/// A user JWT issued by `signing_key` on behalf of `account`, with exactly the `nats` claims
/// given (no default limits, unlike [`user`]).
fn scoped_user(signing_key: &KeyPair, account: &Account, mut nats: Value) -> (String, KeyPair) {
    let kp = KeyPair::new_user();
    nats["issuer_account"] = json!(account.public_key());
    let claims = nj::claims(
        &signing_key.public_key(),
        &kp.public_key(),
        "scoped",
        "user",
        nats,
        json!({}),
    );
    (nj::encode(&claims, signing_key), kp)
}

/// An account whose signing keys are scoped: each `(key, template)` a `user_scope` key.
fn scoped_account(scopes: &[(&KeyPair, Value)]) -> (Account, Server) {
    let keys: Vec<Value> = scopes
        .iter()
        .enumerate()
        .map(|(i, (key, template))| {
            json!({
                "kind": "user_scope", "key": key.public_key(), "role": format!("role{i}"),
                "template": template
            })
        })
        .collect();
    serve_one(json!({ "signing_keys": keys }))
}

#[test]
fn scoped_signing_key_users_get_the_template() {
    let no_secrets = KeyPair::new_account();
    let one_sub = KeyPair::new_account();
    let (a, server) = scoped_account(&[
        (
            &no_secrets,
            json!({ "pub": { "deny": ["secret"] }, "subs": -1, "data": -1, "payload": -1 }),
        ),
        (&one_sub, json!({ "subs": 1, "data": -1, "payload": -1 })),
    ]);
    let (jwt, kp) = scoped_user(&no_secrets, &a, json!({}));
    let mut c = raw_login(&server, &jwt, &kp);
    c.send(b"SUB secret 1\r\nSUB open 2\r\nPUB secret 1\r\nx\r\nPUB open 1\r\ny\r\nPING\r\n");
    c.expect(b"-ERR 'Permissions Violation for Publish to \"secret\"'\r\n");
    c.expect(b"MSG open 2 1\r\ny\r\nPONG\r\n");

    let (jwt, kp) = scoped_user(&one_sub, &a, json!({}));
    let mut c = raw_login(&server, &jwt, &kp);
    c.send(b"SUB a 1\r\nSUB b 2\r\nPING\r\n");
    c.expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
}

#[test]
fn scoped_signing_key_users_may_not_bring_their_own_permissions() {
    let sk = KeyPair::new_account();
    let (a, server) = scoped_account(&[(
        &sk,
        json!({ "pub": { "deny": ["secret"] }, "subs": -1, "data": -1, "payload": -1 }),
    )]);
    for nats in [
        json!({ "pub": { "allow": ["secret"] } }),
        json!({ "sub": { "deny": ["x"] } }),
        json!({ "subs": 5 }),
        // Even the unlimited limits an unscoped user JWT carries.
        json!({ "subs": -1, "data": -1, "payload": -1 }),
    ] {
        let (jwt, kp) = scoped_user(&sk, &a, nats.clone());
        let mut c = raw_connect(&server, &jwt, &kp, true);
        c.expect(AUTH_VIOLATION);
        let rest = c.expect_closed();
        assert!(rest.is_empty(), "{nats}: {rest:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Operator configuration

#[test]
fn operator_jwt_from_a_file() {
    let op = Operator::new();
    let a = op.account("A", json!({}));
    let dir = common::temp_dir();
    let path = dir.join("op.jwt");
    std::fs::write(&path, &op.jwt).unwrap();
    let config = op.config(&[&a]).replace(
        &format!("operator: \"{}\"", op.jwt),
        &format!("operator: \"{}\"", path.display()),
    );
    assert!(config.contains("op.jwt"), "{config}");
    let server = Server::with_config(&config);
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    raw_login(&server, &jwt, &kp);
}

#[test]
fn operator_without_a_system_account_still_serves() {
    let op_kp = KeyPair::new_operator();
    let a_kp = KeyPair::new_account();
    let a_jwt = nj::account_jwt(&op_kp, &a_kp.public_key(), "A", json!({}));
    let config = format!(
        "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{a_jwt}\"\n}}\n",
        nj::operator_jwt(&op_kp, "OP", json!({})),
        a_kp.public_key()
    );
    let server = Server::with_config(&config);
    let (jwt, kp) = user(&a_kp, json!({}), json!({}));
    let mut c = raw_login(&server, &jwt, &kp);
    c.send(b"SUB x 1\r\nPUB x 1\r\n!\r\nPING\r\n");
    c.expect(b"MSG x 1 1\r\n!\r\nPONG\r\n");
}

#[test]
fn system_account_must_be_resolvable() {
    let op = Operator::new();
    let a = op.account("A", json!({}));
    // The system account named by the operator is not among the preloaded accounts.
    let config = op.config(&[&a]).replace(
        &format!("  {}: \"{}\"\n", op.system.public_key(), op.system.jwt),
        "",
    );
    assert!(!config.contains(&op.system.jwt));
    let out = common::run_config(&config, &[]);
    assert!(!out.status.success());
    let text = common::all_output(&out);
    assert!(
        text.contains("system account") || text.contains("system_account"),
        "{text}"
    );
    if !is_natter() {
        assert!(
            text.contains("error resolving system account: account missing"),
            "{text}"
        );
    }
}

/// JetStream in operator mode: an account whose JWT limits give it JetStream storage has
/// JetStream, bounded by those limits; an account without has none (10039).
#[tokio::test]
async fn jetstream_for_accounts_whose_jwt_gives_storage() {
    let op = Operator::new();
    let js_limits =
        json!({"mem_storage": -1, "disk_storage": 100000, "streams": 1, "consumer": -1});
    let a = op.account("A", json!({ "limits": limits(js_limits) }));
    let b = op.account("B", json!({}));
    // Tiered, as nsc writes with --js-tier: a single server has only R1. No memory storage.
    let tiered = json!({"tiered_limits": {"R1": {"mem_storage": 0, "disk_storage": -1}}});
    let c = op.account("C", json!({ "limits": limits(tiered) }));
    let store = common::temp_dir();
    let config = format!(
        "{}jetstream {{ store_dir: {:?} }}\n",
        op.config(&[&a, &b, &c]),
        store.to_str().unwrap()
    );
    let server = Server::with_config(&config);
    let client = connect_creds(&server, &a.user_creds("u", json!({})))
        .await
        .expect("user of A");
    let js = async_nats::jetstream::new(client);
    let info = within("account info", js.query_account()).await.unwrap();
    assert_eq!(
        (info.limits.max_storage, info.limits.max_streams),
        (Some(100000), Some(1)),
        "{info:?}"
    );
    let cfg = |name: &str| async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![name.to_lowercase()],
        ..Default::default()
    };
    within("create", js.create_stream(cfg("S1"))).await.unwrap();
    let ack = within("publish", async {
        js.publish("s1", "x".into()).await.unwrap().await
    })
    .await
    .unwrap();
    assert_eq!(ack.sequence, 1);
    let err = within("create", js.create_stream(cfg("S2")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("10027"), "{err}");

    let other = connect_creds(&server, &b.user_creds("u", json!({})))
        .await
        .expect("user of B");
    let js = async_nats::jetstream::new(other);
    let err = within("create", js.create_stream(cfg("S3")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("10039"), "{err}");

    let third = connect_creds(&server, &c.user_creds("u", json!({})))
        .await
        .expect("user of C");
    let js = async_nats::jetstream::new(third);
    within("create", js.create_stream(cfg("S4"))).await.unwrap();
    let mut mem = cfg("S5");
    mem.storage = async_nats::jetstream::stream::StorageType::Memory;
    let err = within("create", js.create_stream(mem))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("10028"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}
