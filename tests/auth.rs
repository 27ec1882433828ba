//! Authentication (token, user/password, bcrypt, nkeys) and authorization (publish/subscribe
//! permissions, allow_responses, default_permissions), over raw TCP and through async-nats.
//!
//! Every test starts its own server. Raw transcripts stay well inside the ~2 s before nats-server
//! sends its first PING, or use the PING-aware helpers.

mod common;

use async_nats::ConnectErrorKind;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::{
    connect_with, is_natter, next_event_containing, with_events, within, Client, Msg, Server,
};
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::json;
use std::time::{Duration, Instant};

const AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";

/// bcrypt (cost 4) of "password".
const BCRYPT_PASSWORD: &str = "$2a$04$/uaF/uaF/uaF/uaF/uaF/uDoLTv0.GKuyIUIWMpfQvuOZKorP5RFK";
/// bcrypt (cost 4) of "s3cr3t".
const BCRYPT_S3CR3T: &str = "$2a$04$AOiHAOiHAOiHAOiHAOiHAOej1xaT9npZg4Gz6UkcxdegLt4QIdMrG";

/// `CONNECT <json>\r\n`.
fn connect_line(fields: serde_json::Value) -> Vec<u8> {
    format!("CONNECT {fields}\r\n").into_bytes()
}

/// A raw client that authenticated with the given CONNECT fields (quiet, synchronised by PONG).
fn login(server: &Server, mut fields: serde_json::Value) -> Client {
    fields["verbose"] = json!(false);
    let mut c = server.client();
    c.send(&connect_line(fields));
    c.ping_pong_within(common::TIMEOUT);
    c
}

fn user(server: &Server, name: &str, pass: &str) -> Client {
    login(server, json!({ "user": name, "pass": pass }))
}

/// Sends CONNECT with `fields` and expects exactly the Authorization Violation, then the close.
fn assert_refused(server: &Server, fields: serde_json::Value) {
    let mut c = server.client();
    assert_eq!(c.info["auth_required"], true, "{}", c.info);
    c.send(&connect_line(fields.clone()));
    c.expect(AUTH_VIOLATION);
    let rest = c.expect_closed();
    assert!(
        rest.is_empty(),
        "{fields}: nothing after the violation, got {rest:?}"
    );
}

/// Sends CONNECT (verbose) with `fields` and expects `+OK`, then PING/PONG.
fn assert_accepted(server: &Server, mut fields: serde_json::Value) -> Client {
    fields["verbose"] = json!(true);
    let mut c = server.client();
    assert_eq!(c.info["auth_required"], true, "{}", c.info);
    c.send(&connect_line(fields));
    c.expect(b"+OK\r\n");
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
    c
}

/// Publishes `y` to `subject` from `publisher` until `sub` (on another connection, whose SUB may
/// still be on its way to the server) receives it.
async fn publish_until_received(
    publisher: &async_nats::Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
) -> async_nats::Message {
    for _ in 0..50 {
        publisher
            .publish(subject.to_string(), Bytes::from_static(b"y"))
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return m.expect("subscription open");
        }
    }
    panic!("nothing arrived on {subject}");
}

async fn assert_pub_sub(client: &async_nats::Client) {
    let mut sub = client.subscribe("auth.check").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("auth.check", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let m = within("message", sub.next())
        .await
        .expect("subscription open");
    assert_eq!(m.payload, Bytes::from_static(b"hello"));
}

// ---------------------------------------------------------------------------------------------
// Token

const TOKEN_CONF: &str = "authorization { token: \"s3cr3t\" }\n";

#[test]
fn token_info_says_auth_required() {
    let server = Server::with_config(TOKEN_CONF);
    let c = server.client();
    assert_eq!(c.info["auth_required"], true, "{}", c.info);
    // A nonce is only offered when someone could sign it (nkeys, JWT).
    assert!(c.info.get("nonce").is_none(), "{}", c.info);
}

#[test]
fn token_right_is_accepted() {
    let server = Server::with_config(TOKEN_CONF);
    let mut c = assert_accepted(&server, json!({ "auth_token": "s3cr3t" }));
    c.send(b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n");
    c.expect(b"+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn token_wrong_or_missing_is_refused() {
    let server = Server::with_config(TOKEN_CONF);
    assert_refused(&server, json!({ "auth_token": "wrong" }));
    assert_refused(&server, json!({ "auth_token": "" }));
    assert_refused(&server, json!({}));
    assert_refused(&server, json!({ "verbose": true }));
    // A user/password is not a token.
    assert_refused(&server, json!({ "user": "s3cr3t", "pass": "s3cr3t" }));
}

#[test]
fn protocol_before_connect_is_refused() {
    let server = Server::with_config(TOKEN_CONF);
    for first in [&b"PING\r\n"[..], b"SUB foo 1\r\n", b"PUB foo 1\r\nx\r\n"] {
        let mut c = server.client();
        c.send(first);
        c.expect(AUTH_VIOLATION);
        c.expect_closed();
    }
}

/// Regression: a PUB header before CONNECT once made the server wait for (and buffer) its
/// payload, up to max_payload per unauthenticated connection. The header alone is refused at once.
#[test]
fn unfinished_pub_before_connect_is_refused_at_once() {
    let server = Server::with_config(TOKEN_CONF);
    for first in [
        &b"PUB foo 1000000\r\n"[..],
        b"PUB foo _INBOX.x 1000000\r\n",
        b"HPUB foo 10 1000000\r\n",
        // Beyond max_payload too: still the authorization violation.
        b"PUB foo 1000000000\r\n",
    ] {
        let mut c = server.client();
        let start = Instant::now();
        c.send(first);
        // Well before the (2 s) authentication timeout, without a byte of the payload.
        c.expect_within(AUTH_VIOLATION, Duration::from_secs(1));
        let errs = c.expect_closed();
        assert!(errs.is_empty(), "{}: {errs:?}", first.escape_ascii());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{}: took {:?}",
            first.escape_ascii(),
            start.elapsed()
        );
    }
}

/// An unknown verb before CONNECT is an authorization violation (as nats-server has it), not a
/// parser error.
#[test]
fn unknown_verb_before_connect_is_an_authorization_violation() {
    let server = Server::with_config(TOKEN_CONF);
    for first in [&b"FOO\r\n"[..], b"FOO bar baz\r\n", b"PONG\r\n", b"+OK\r\n"] {
        let mut c = server.client();
        c.send(first);
        c.expect_within(AUTH_VIOLATION, Duration::from_secs(1));
        let errs = c.expect_closed();
        assert!(errs.is_empty(), "{}: {errs:?}", first.escape_ascii());
    }
}

#[test]
fn missing_connect_times_out() {
    let server = Server::with_config("authorization { token: \"s3cr3t\", timeout: 1 }\n");
    let mut c = server.client();
    let start = Instant::now();
    c.expect_within(b"-ERR 'Authentication Timeout'\r\n", Duration::from_secs(4));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "timed out too early: {waited:?}"
    );
    c.expect_closed();
}

#[test]
fn partial_connect_line_times_out_too() {
    let server = Server::with_config("authorization { token: \"s3cr3t\", timeout: 1 }\n");
    let mut c = server.client();
    c.send(b"CONNECT {\"auth_token\":\"s3cr3t\"");
    c.expect_within(b"-ERR 'Authentication Timeout'\r\n", Duration::from_secs(4));
    c.expect_closed();
}

#[test]
fn authenticated_client_is_not_timed_out() {
    let server = Server::with_config("authorization { token: \"s3cr3t\", timeout: 1 }\n");
    let mut c = login(&server, json!({ "auth_token": "s3cr3t" }));
    c.expect_nothing(Duration::from_millis(1300));
    c.ping_pong_within(common::TIMEOUT);
}

#[test]
fn auth_flag_sets_a_token() {
    let server = Server::start_with(None, &["--auth", "fl4g"]);
    assert_accepted(&server, json!({ "auth_token": "fl4g" }));
    assert_refused(&server, json!({ "auth_token": "s3cr3t" }));
}

#[test]
fn bcrypt_token() {
    let server = Server::with_config(&format!("authorization {{ token: \"{BCRYPT_S3CR3T}\" }}\n"));
    assert_accepted(&server, json!({ "auth_token": "s3cr3t" }));
    // The hash itself is not the secret.
    assert_refused(&server, json!({ "auth_token": BCRYPT_S3CR3T }));
    assert_refused(&server, json!({ "auth_token": "S3CR3T" }));
}

#[tokio::test]
async fn token_with_async_nats() {
    let server = Server::with_config(TOKEN_CONF);
    let client = connect_with(
        &server,
        async_nats::ConnectOptions::with_token("s3cr3t".into()),
    )
    .await
    .expect("connect with the right token");
    assert!(client.server_info().auth_required);
    assert_pub_sub(&client).await;

    let err = connect_with(
        &server,
        async_nats::ConnectOptions::with_token("nope".into()),
    )
    .await
    .expect_err("a wrong token must not connect");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// User and password

#[test]
fn single_user_password() {
    let server = Server::with_config("authorization { user: alice, password: \"pa ss\" }\n");
    assert_accepted(&server, json!({ "user": "alice", "pass": "pa ss" }));
    assert_refused(&server, json!({ "user": "alice", "pass": "pass" }));
    assert_refused(&server, json!({ "user": "alice" }));
    assert_refused(&server, json!({ "user": "bob", "pass": "pa ss" }));
    assert_refused(&server, json!({ "user": "Alice", "pass": "pa ss" }));
    assert_refused(&server, json!({ "auth_token": "pa ss" }));
}

#[test]
fn user_and_pass_flags() {
    let server = Server::start_with(None, &["--user", "u", "--pass", "p"]);
    assert_accepted(&server, json!({ "user": "u", "pass": "p" }));
    assert_refused(&server, json!({ "user": "u", "pass": "x" }));
}

const USERS_CONF: &str = r#"
authorization {
  users = [
    { user: alice, password: "BCRYPT" }
    { user: bob, password: plain }
  ]
}
"#;

fn users_conf() -> String {
    USERS_CONF.replace("BCRYPT", BCRYPT_PASSWORD)
}

#[test]
fn users_list_with_plain_and_bcrypt_passwords() {
    let server = Server::with_config(&users_conf());
    assert_accepted(&server, json!({ "user": "alice", "pass": "password" }));
    assert_accepted(&server, json!({ "user": "bob", "pass": "plain" }));
    // Wrong password, unknown user, another user's password, the hash itself: all the same error.
    assert_refused(&server, json!({ "user": "alice", "pass": "wrong" }));
    assert_refused(&server, json!({ "user": "alice", "pass": BCRYPT_PASSWORD }));
    assert_refused(&server, json!({ "user": "alice", "pass": "plain" }));
    assert_refused(&server, json!({ "user": "carol", "pass": "plain" }));
    assert_refused(&server, json!({ "user": "bob" }));
    assert_refused(&server, json!({ "pass": "plain" }));
}

#[tokio::test]
async fn user_password_with_async_nats() {
    let server = Server::with_config(&users_conf());
    let client = connect_with(
        &server,
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "password".into()),
    )
    .await
    .expect("alice connects");
    assert_pub_sub(&client).await;

    let err = connect_with(
        &server,
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "nope".into()),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// NKeys

fn nkey_conf(users: &[&KeyPair]) -> String {
    let list: Vec<String> = users
        .iter()
        .map(|kp| format!("{{ nkey: {} }}", kp.public_key()))
        .collect();
    format!("authorization {{ users: [ {} ] }}\n", list.join(", "))
}

fn sign_nonce(kp: &KeyPair, nonce: &str) -> String {
    URL_SAFE_NO_PAD.encode(kp.sign(nonce.as_bytes()).unwrap())
}

#[test]
fn nkey_info_has_a_fresh_nonce() {
    let kp = KeyPair::new_user();
    let server = Server::with_config(&nkey_conf(&[&kp]));
    let a = server.client();
    let b = server.client();
    assert_eq!(a.info["auth_required"], true, "{}", a.info);
    let na = a.info["nonce"].as_str().expect("INFO.nonce").to_string();
    let nb = b.info["nonce"].as_str().expect("INFO.nonce").to_string();
    assert!(na.len() >= 11, "nonce {na:?}");
    assert_ne!(na, nb, "each connection gets its own nonce");
}

#[test]
fn nkey_signed_nonce_is_accepted() {
    let kp = KeyPair::new_user();
    let other = KeyPair::new_user();
    let server = Server::with_config(&nkey_conf(&[&kp, &other]));
    let mut c = server.client();
    let nonce = c.info["nonce"].as_str().unwrap().to_string();
    let sig = sign_nonce(&kp, &nonce);
    c.send(&connect_line(
        json!({ "nkey": kp.public_key(), "sig": sig, "verbose": true }),
    ));
    c.expect(b"+OK\r\n");
    c.send(b"SUB n 1\r\nPUB n 1\r\nx\r\nPING\r\n");
    c.expect(b"+OK\r\n+OK\r\nMSG n 1 1\r\nx\r\nPONG\r\n");
}

#[test]
fn nkey_bad_signatures_are_refused() {
    let kp = KeyPair::new_user();
    let stranger = KeyPair::new_user();
    let server = Server::with_config(&nkey_conf(&[&kp]));

    // Signed by someone else.
    let mut c = server.client();
    let nonce = c.info["nonce"].as_str().unwrap().to_string();
    c.send(&connect_line(
        json!({ "nkey": kp.public_key(), "sig": sign_nonce(&stranger, &nonce) }),
    ));
    c.expect(AUTH_VIOLATION);
    c.expect_closed();

    // Signature over another connection's nonce.
    let old = server.client();
    let old_nonce = old.info["nonce"].as_str().unwrap().to_string();
    let mut c = server.client();
    c.send(&connect_line(
        json!({ "nkey": kp.public_key(), "sig": sign_nonce(&kp, &old_nonce) }),
    ));
    c.expect(AUTH_VIOLATION);
    c.expect_closed();

    // No signature, garbage signature.
    assert_refused(&server, json!({ "nkey": kp.public_key() }));
    assert_refused(
        &server,
        json!({ "nkey": kp.public_key(), "sig": "not-base64!" }),
    );

    // A well-signed nkey that is not configured.
    let mut c = server.client();
    let nonce = c.info["nonce"].as_str().unwrap().to_string();
    c.send(&connect_line(
        json!({ "nkey": stranger.public_key(), "sig": sign_nonce(&stranger, &nonce) }),
    ));
    c.expect(AUTH_VIOLATION);
    c.expect_closed();
}

#[tokio::test]
async fn nkey_with_async_nats() {
    let kp = KeyPair::new_user();
    let server = Server::with_config(&nkey_conf(&[&kp]));
    let client = connect_with(
        &server,
        async_nats::ConnectOptions::with_nkey(kp.seed().unwrap()),
    )
    .await
    .expect("connect with nkey");
    assert_pub_sub(&client).await;

    let stranger = KeyPair::new_user();
    let err = connect_with(
        &server,
        async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap()),
    )
    .await
    .expect_err("unknown nkey");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[test]
fn nkeys_and_passwords_together() {
    let kp = KeyPair::new_user();
    let conf = format!(
        "authorization {{ users: [ {{ nkey: {} }}, {{ user: bob, password: plain }} ] }}\n",
        kp.public_key()
    );
    let server = Server::with_config(&conf);
    assert_accepted(&server, json!({ "user": "bob", "pass": "plain" }));
    let mut c = server.client();
    let nonce = c.info["nonce"].as_str().expect("nonce offered").to_string();
    c.send(&connect_line(
        json!({ "nkey": kp.public_key(), "sig": sign_nonce(&kp, &nonce), "verbose": true }),
    ));
    c.expect(b"+OK\r\n");
}

// ---------------------------------------------------------------------------------------------
// Permissions

const PERMS_CONF: &str = r#"
authorization {
  default_permissions = { publish: "def.>", subscribe: ["def.>", "_INBOX.>"] }
  users = [
    { user: p, password: p, permissions: {
        publish: { allow: ["foo.>"], deny: ["foo.secret"] }
        subscribe: { allow: ["bar.*", "_INBOX.>"], deny: ["bar.hidden"] }
    } }
    { user: w, password: w, permissions: {
        publish: { deny: ">" }
        subscribe: { allow: ">", deny: ["secret.>", "baz"] }
    } }
    { user: admin, password: admin, permissions: { publish: ">", subscribe: ">" } }
    { user: d, password: d }
    { user: r, password: r, permissions: {
        publish: { deny: ">" }, subscribe: "svc", allow_responses: true
    } }
    { user: r2, password: r2, permissions: {
        publish: { deny: ">" }, subscribe: "svc2", allow_responses: { max: 2, expires: "1m" }
    } }
    { user: r3, password: r3, permissions: { subscribe: "svc3", allow_responses: true } }
  ]
}
"#;

fn pub_violation(subject: &str) -> Vec<u8> {
    format!("-ERR 'Permissions Violation for Publish to \"{subject}\"'\r\n").into_bytes()
}

fn sub_violation(subject: &str) -> Vec<u8> {
    format!("-ERR 'Permissions Violation for Subscription to \"{subject}\"'\r\n").into_bytes()
}

#[test]
fn denied_publish_is_reported_and_not_delivered() {
    let server = Server::with_config(PERMS_CONF);
    let mut admin = user(&server, "admin", "admin");
    admin.send(b"SUB foo.> 1\r\n");
    admin.ping_pong_within(common::TIMEOUT);

    let mut p = login(
        &server,
        json!({ "user": "p", "pass": "p", "headers": true }),
    );
    p.send(b"PUB foo.secret 2\r\nno\r\nPING\r\n");
    p.expect(&pub_violation("foo.secret"));
    p.expect(b"PONG\r\n");
    // Not allowed at all (outside foo.>), with headers too.
    p.send(b"PUB other 2\r\nno\r\nHPUB other 12 14\r\nNATS/1.0\r\n\r\nno\r\nPING\r\n");
    p.expect(&pub_violation("other"));
    p.expect(&pub_violation("other"));
    p.expect(b"PONG\r\n");
    // The connection is still usable: an allowed publish goes through.
    p.send(b"PUB foo.ok 3\r\nyes\r\nPING\r\n");
    p.expect(b"PONG\r\n");

    assert_eq!(
        admin.msgs_until_pong(),
        vec![Msg::new("foo.ok", "1", b"yes")]
    );
}

#[test]
fn verbose_client_gets_the_violation_instead_of_ok() {
    let server = Server::with_config(PERMS_CONF);
    let mut p = assert_accepted(&server, json!({ "user": "p", "pass": "p" }));
    p.send(b"PUB foo.secret 1\r\nx\r\nPUB foo.ok 1\r\nx\r\nSUB baz 1\r\nSUB bar.x 2\r\nPING\r\n");
    p.expect(&pub_violation("foo.secret"));
    p.expect(b"+OK\r\n");
    p.expect(&sub_violation("baz"));
    p.expect(b"+OK\r\nPONG\r\n");
}

#[test]
fn denied_subscription_is_reported_and_gets_nothing() {
    let server = Server::with_config(PERMS_CONF);
    let mut p = user(&server, "p", "p");
    p.send(b"SUB baz 1\r\nPING\r\n");
    p.expect(&sub_violation("baz"));
    p.expect(b"PONG\r\n");
    // Explicitly denied inside an allowed wildcard.
    p.send(b"SUB bar.hidden 2\r\nSUB bar.ok 3\r\nPING\r\n");
    p.expect(&sub_violation("bar.hidden"));
    p.expect(b"PONG\r\n");
    // Wildcards that reach outside what is allowed.
    p.send(b"SUB > 4\r\nSUB *.ok 5\r\nPING\r\n");
    p.expect(&sub_violation(">"));
    p.expect(&sub_violation("*.ok"));
    p.expect(b"PONG\r\n");

    let mut admin = user(&server, "admin", "admin");
    admin.send(b"PUB baz 1\r\nx\r\nPUB bar.hidden 1\r\ny\r\nPUB bar.ok 1\r\nz\r\nPING\r\n");
    admin.expect(b"PONG\r\n");
    assert_eq!(p.msgs_until_pong(), vec![Msg::new("bar.ok", "3", b"z")]);
}

#[test]
fn denied_queue_subscription_names_the_queue() {
    let server = Server::with_config(PERMS_CONF);
    let mut p = user(&server, "p", "p");
    p.send(b"SUB baz q 1\r\nSUB bar.hidden workers 2\r\nSUB bar.ok workers 3\r\nPING\r\n");
    p.expect(b"-ERR 'Permissions Violation for Subscription to \"baz\" using queue \"q\"'\r\n");
    p.expect(
        b"-ERR 'Permissions Violation for Subscription to \"bar.hidden\" using queue \"workers\"'\r\n",
    );
    p.expect(b"PONG\r\n");
}

#[test]
fn wildcard_subscription_does_not_receive_denied_subjects() {
    let server = Server::with_config(PERMS_CONF);
    let mut w = user(&server, "w", "w");
    // Subscribing to the broad wildcard is allowed; the narrower denials still apply.
    w.send(b"SUB > 1\r\nSUB secret.* 2\r\nPING\r\n");
    w.expect(&sub_violation("secret.*"));
    w.expect(b"PONG\r\n");

    let mut admin = user(&server, "admin", "admin");
    admin.send(
        b"PUB secret.x 1\r\na\r\nPUB baz 1\r\nb\r\nPUB secret 1\r\nc\r\nPUB public.x 1\r\nd\r\nPING\r\n",
    );
    admin.expect(b"PONG\r\n");
    assert_eq!(
        w.msgs_until_pong(),
        vec![
            Msg::new("secret", "1", b"c"),
            Msg::new("public.x", "1", b"d")
        ]
    );
    // Publishing is denied for w altogether.
    w.send(b"PUB public.x 1\r\nx\r\nPING\r\n");
    w.expect(&pub_violation("public.x"));
    w.expect(b"PONG\r\n");
}

#[test]
fn default_permissions_apply_to_users_without_their_own() {
    let server = Server::with_config(PERMS_CONF);
    let mut d = user(&server, "d", "d");
    d.send(b"PUB any 1\r\nx\r\nPING\r\n");
    d.expect(&pub_violation("any"));
    d.expect(b"PONG\r\n");
    d.send(b"SUB nope 1\r\nSUB def.x 2\r\nPUB def.x 1\r\ny\r\nPING\r\n");
    d.expect(&sub_violation("nope"));
    d.expect(b"MSG def.x 2 1\r\ny\r\nPONG\r\n");
    // A user with own permissions does not get the defaults on top.
    let mut p = user(&server, "p", "p");
    p.send(b"SUB def.x 1\r\nPING\r\n");
    p.expect(&sub_violation("def.x"));
    p.expect(b"PONG\r\n");
}

#[test]
fn allow_responses_permits_one_reply_per_request() {
    let server = Server::with_config(PERMS_CONF);
    let mut r = user(&server, "r", "r");
    r.send(b"SUB svc 1\r\nPING\r\n");
    r.expect(b"PONG\r\n");

    let mut admin = user(&server, "admin", "admin");
    admin.send(b"SUB _INBOX.req1 9\r\nPUB svc _INBOX.req1 3\r\nreq\r\nPING\r\n");
    admin.expect(b"PONG\r\n");

    let m = r.read_msg();
    assert_eq!(m.subject, "svc");
    assert_eq!(m.reply.as_deref(), Some("_INBOX.req1"));
    // The first reply goes through; the second to the same reply subject does not, nor does a
    // publish to a reply subject nobody asked for.
    r.send(b"PUB _INBOX.req1 2\r\nr1\r\nPING\r\n");
    r.expect(b"PONG\r\n");
    r.send(b"PUB _INBOX.req1 2\r\nr2\r\nPING\r\n");
    r.expect(&pub_violation("_INBOX.req1"));
    r.expect(b"PONG\r\n");
    r.send(b"PUB _INBOX.other 2\r\nr3\r\nPING\r\n");
    r.expect(&pub_violation("_INBOX.other"));
    r.expect(b"PONG\r\n");

    assert_eq!(
        admin.msgs_until_pong(),
        vec![Msg::new("_INBOX.req1", "9", b"r1")]
    );
}

#[test]
fn allow_responses_max_allows_that_many_replies() {
    let server = Server::with_config(PERMS_CONF);
    let mut r = user(&server, "r2", "r2");
    r.send(b"SUB svc2 1\r\nPING\r\n");
    r.expect(b"PONG\r\n");
    let mut admin = user(&server, "admin", "admin");
    admin.send(b"SUB _INBOX.q 9\r\nPUB svc2 _INBOX.q 3\r\nreq\r\nPING\r\n");
    admin.expect(b"PONG\r\n");
    let m = r.read_msg();
    assert_eq!(m.reply.as_deref(), Some("_INBOX.q"));
    r.send(b"PUB _INBOX.q 2\r\nr1\r\nPUB _INBOX.q 2\r\nr2\r\nPUB _INBOX.q 2\r\nr3\r\nPING\r\n");
    r.expect(&pub_violation("_INBOX.q"));
    r.expect(b"PONG\r\n");
    assert_eq!(
        admin.msgs_until_pong(),
        vec![
            Msg::new("_INBOX.q", "9", b"r1"),
            Msg::new("_INBOX.q", "9", b"r2")
        ]
    );
}

/// Regression: `allow_responses` without any publish rule once let the user publish anywhere. It
/// allows replies to requests the user received (one each), and nothing else.
#[test]
fn allow_responses_without_a_publish_rule_allows_only_replies() {
    let server = Server::with_config(PERMS_CONF);
    let mut r = user(&server, "r3", "r3");
    r.send(b"SUB svc3 1\r\nPING\r\n");
    r.expect(b"PONG\r\n");
    let mut admin = user(&server, "admin", "admin");
    admin.send(b"SUB anything 8\r\nSUB _INBOX.> 9\r\nPING\r\n");
    admin.expect(b"PONG\r\n");

    // Before any request, not even an inbox is open.
    r.send(b"PUB anything 1\r\nx\r\nPUB _INBOX.early 1\r\nx\r\nPING\r\n");
    r.expect(&pub_violation("anything"));
    r.expect(&pub_violation("_INBOX.early"));
    r.expect(b"PONG\r\n");

    admin.send(b"PUB svc3 _INBOX.req3 3\r\nreq\r\nPING\r\n");
    admin.expect(b"PONG\r\n");
    let m = r.read_msg();
    assert_eq!(m.subject, "svc3");
    assert_eq!(m.reply.as_deref(), Some("_INBOX.req3"));
    // With a request outstanding, other subjects are still refused; the reply goes through
    // once.
    r.send(b"PUB anything 1\r\nx\r\nPUB _INBOX.req3 2\r\nr1\r\nPING\r\n");
    r.expect(&pub_violation("anything"));
    r.expect(b"PONG\r\n");
    r.send(b"PUB _INBOX.req3 2\r\nr2\r\nPING\r\n");
    r.expect(&pub_violation("_INBOX.req3"));
    r.expect(b"PONG\r\n");

    assert_eq!(
        admin.msgs_until_pong(),
        vec![Msg::new("_INBOX.req3", "9", b"r1")]
    );
}

#[tokio::test]
async fn allow_responses_with_async_nats_request() {
    let server = Server::with_config(PERMS_CONF);
    let responder = connect_with(
        &server,
        async_nats::ConnectOptions::with_user_and_password("r".into(), "r".into()),
    )
    .await
    .expect("responder connects");
    let mut requests = responder.subscribe("svc").await.unwrap();
    responder.flush().await.unwrap();
    let task = tokio::spawn(async move {
        let m = requests.next().await.expect("request");
        responder
            .publish(m.reply.expect("reply subject"), Bytes::from_static(b"pong"))
            .await
            .unwrap();
        responder.flush().await.unwrap();
        responder
    });
    let requester = connect_with(
        &server,
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into()),
    )
    .await
    .expect("requester connects");
    // The responder's SUB may not have reached the server yet: retry while nobody answers.
    let reply = within("request", async {
        loop {
            match requester.request("svc", Bytes::from_static(b"ping")).await {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
    })
    .await
    .expect("reply allowed by allow_responses");
    assert_eq!(reply.payload, Bytes::from_static(b"pong"));
    within("responder task", task).await.unwrap();
}

#[tokio::test]
async fn permission_errors_reach_async_nats_as_events() {
    let server = Server::with_config(PERMS_CONF);
    let (opts, mut events) = with_events(async_nats::ConnectOptions::with_user_and_password(
        "p".into(),
        "p".into(),
    ));
    let client = connect_with(&server, opts).await.expect("connect");
    client
        .publish("foo.secret", Bytes::from_static(b"x"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let event = next_event_containing(&mut events, "Permissions Violation").await;
    assert!(event.contains("foo.secret"), "{event}");
    // Still connected and usable.
    let mut sub = client.subscribe("bar.ok").await.unwrap();
    client.flush().await.unwrap();
    let admin = connect_with(
        &server,
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into()),
    )
    .await
    .unwrap();
    let m = publish_until_received(&admin, "bar.ok", &mut sub).await;
    assert_eq!(m.payload, Bytes::from_static(b"y"));
}

/// Connects as `p` (allowed `foo.>` but not `foo.secret`) with `headers` absent or as given,
/// sends an HPUB to `subject` and returns the lines before the server hung up.
fn hpub_without_headers(server: &Server, headers: Option<bool>, subject: &str) -> Vec<String> {
    let mut fields = json!({ "user": "p", "pass": "p" });
    if let Some(h) = headers {
        fields["headers"] = json!(h);
    }
    let mut p = login(server, fields);
    p.send(format!("HPUB {subject} 12 14\r\nNATS/1.0\r\n\r\nno\r\nPING\r\n").as_bytes());
    p.expect_closed()
}

/// Regression: an HPUB from a client that did not ask for headers ends the connection before any
/// permission check, so a denied subject gets no `Permissions Violation` and the connection does
/// not survive it.
#[test]
fn hpub_without_headers_to_a_denied_subject_closes_the_connection() {
    let server = Server::with_config(PERMS_CONF);
    let mut admin = user(&server, "admin", "admin");
    admin.send(b"SUB > 1\r\nPING\r\n");
    admin.expect(b"PONG\r\n");
    for headers in [None, Some(false)] {
        for subject in ["other", "foo.secret", "foo.ok"] {
            let errs = hpub_without_headers(&server, headers, subject);
            assert!(
                errs.len() <= 1 && !errs.iter().any(|e| e.contains("Permissions Violation")),
                "headers {headers:?}, {subject}: {errs:?}"
            );
        }
    }
    assert_eq!(admin.msgs_until_pong(), vec![]);
}

/// nats-server hangs up on an HPUB without headers support without an `-ERR` (it logs "message
/// headers not supported" and closes for a protocol violation).
#[test]
fn hpub_without_headers_closes_without_an_error() {
    let server = Server::with_config(PERMS_CONF);
    for headers in [None, Some(false)] {
        for subject in ["other", "foo.ok"] {
            let errs = hpub_without_headers(&server, headers, subject);
            assert_eq!(
                errs,
                expected_hpub_errors(),
                "headers {headers:?}, {subject}: before the close"
            );
        }
    }
}

/// The HPUB header line alone is enough for the server to hang up on a client without headers:
/// nats-server does not wait for the payload.
#[test]
fn hpub_without_headers_closes_before_the_payload() {
    let server = Server::with_config(PERMS_CONF);
    let mut p = user(&server, "p", "p");
    p.send(b"HPUB other 12 1000000\r\n");
    let errs = p.expect_closed();
    assert_eq!(errs, expected_hpub_errors(), "before the close");
}

/// nats-server closes silently; natter says why first (a deliberate difference, see README).
fn expected_hpub_errors() -> Vec<String> {
    if is_natter() {
        vec!["-ERR 'Message Headers Not Supported'".to_string()]
    } else {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol trace

/// The server's stderr once it holds `lines` CONNECT trace lines (the log may lag the socket).
fn wait_for_connect_traces(server: &Server, lines: usize) -> String {
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let log = server.output("stderr");
        if log.matches("<<- [CONNECT ").count() >= lines {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "expected {lines} CONNECT trace lines, log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression: `-V` traced CONNECT verbatim, password and token included. Both the accepted and
/// the refused attempts are traced with the secret replaced by `[REDACTED]`.
#[test]
fn protocol_trace_redacts_passwords_and_tokens() {
    const PASS: &str = "pw-Sekr1t-Xyzzy";
    const WRONG_PASS: &str = "pw-Wr0ng-Frotz";
    let server = Server::start_with(
        Some(&format!(
            "authorization {{ users: [ {{ user: alice, password: \"{PASS}\" }} ] }}\n"
        )),
        &["-DV"],
    );
    login(&server, json!({ "user": "alice", "pass": PASS }));
    let mut c = server.client();
    c.send(&connect_line(
        json!({ "user": "alice", "pass": WRONG_PASS }),
    ));
    c.expect(AUTH_VIOLATION);
    let log = wait_for_connect_traces(&server, 2);
    for secret in [PASS, WRONG_PASS] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("[REDACTED]"), "{log}");
    assert!(
        log.contains("alice"),
        "the user name is not a secret:\n{log}"
    );

    const TOKEN: &str = "tok-Sekr1t-Plugh";
    const WRONG_TOKEN: &str = "tok-Wr0ng-Gnusto";
    let server = Server::start_with(
        Some(&format!("authorization {{ token: \"{TOKEN}\" }}\n")),
        &["-DV"],
    );
    login(&server, json!({ "auth_token": TOKEN }));
    let mut c = server.client();
    c.send(&connect_line(json!({ "auth_token": WRONG_TOKEN })));
    c.expect(AUTH_VIOLATION);
    let log = wait_for_connect_traces(&server, 2);
    for secret in [TOKEN, WRONG_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("[REDACTED]"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Odd CONNECT payloads

#[test]
fn connect_json_quirks_with_auth() {
    let server = Server::with_config(&users_conf());
    // Unknown fields are ignored; a null verbose keeps the (verbose) default.
    assert_accepted(
        &server,
        json!({ "user": "bob", "pass": "plain", "foo": { "a": [1, 2, {}] }, "verbose": null }),
    );
    // With a duplicated key, the last one counts.
    for (text, ok) in [
        (r#"{"user":"carol","pass":"plain","user":"bob"}"#, true),
        (r#"{"user":"bob","pass":"plain","user":"carol"}"#, false),
    ] {
        let mut c = server.client();
        c.send(format!("CONNECT {text}\r\nPING\r\n").as_bytes());
        if ok {
            c.expect(b"+OK\r\nPONG\r\n");
        } else {
            c.expect(AUTH_VIOLATION);
            c.expect_closed();
        }
    }
    // JSON null is an empty CONNECT: no credentials.
    let mut c = server.client();
    c.send(b"CONNECT null\r\n");
    c.expect(AUTH_VIOLATION);
    c.expect_closed();
}

#[test]
fn malformed_connect_closes_the_connection() {
    let server = Server::with_config(&users_conf());
    for arg in [
        r#"{"user":5,"pass":[]}"#,
        r#"{"user":"bob","pass":{"x":1}}"#,
        r#"{"user":"bob","pass":"plain","verbose":"yes"}"#,
        r#"{"user":"bob","pass":"plain","#,
        r#"{"user":"bob","pass":"plain"} trailing"#,
        "[1,2]",
        "{{{{",
        "",
    ] {
        let mut c = server.client();
        c.send(format!("CONNECT {arg}\r\nPING\r\n").as_bytes());
        // nats-server hangs up without a word; an -ERR first would be fine too, a PONG is not.
        let errs = c.expect_closed();
        assert!(errs.len() <= 1, "{arg}: {errs:?}");
    }
    let mut c = server.client();
    c.send(b"CONNECT {\"user\":\"bob\",\"pass\":\"plain\"}\r\nPING\r\n");
    c.expect(b"+OK\r\nPONG\r\n");
}

// ---------------------------------------------------------------------------------------------
// Arbitrary CONNECT payloads never take the server down.

mod connect_fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    fn fuzz_server() -> Server {
        Server::with_config(&format!(
            "max_control_line: 262144\nauthorization {{ users = [ {{ user: alice, password: \"{BCRYPT_PASSWORD}\" }}, {{ user: bob, password: plain }} ] }}\n"
        ))
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
            (1usize..100_000).prop_map(|n| serde_json::Value::from("x".repeat(n))),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("user".to_string()),
                        Just("pass".to_string()),
                        Just("auth_token".to_string()),
                        Just("nkey".to_string()),
                        Just("sig".to_string()),
                        Just("jwt".to_string()),
                        Just("verbose".to_string()),
                        Just("protocol".to_string()),
                        Just("headers".to_string()),
                        "[a-z_]{1,12}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A CONNECT argument: valid JSON of any shape, or text that is not JSON at all.
    fn connect_arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            json_value().prop_map(|v| {
                let mut s = v.to_string().into_bytes();
                let cut = s.len() / 2;
                s.truncate(cut);
                s
            }),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
                v.retain(|b| *b != b'\r' && *b != b'\n');
                v
            }),
            Just(b"{\"user\":5,\"pass\":[]}".to_vec()),
            Just(b"{\"user\":\"bob\",\"pass\":\"plain\",\"user\":\"alice\"}".to_vec()),
            Just(b"{\"user\":\"bob\",\"pass\":{\"x\":1}}".to_vec()),
            Just(b"{{{{".to_vec()),
            Just(b"".to_vec()),
        ]
    }

    /// One case: the bad client is refused (an -ERR and a close, or just a close; never a PONG),
    /// and afterwards the server is alive and still authenticates properly.
    fn one_case(server: &Server, arg: &[u8]) -> Result<(), TestCaseError> {
        let mut bad = server.client();
        let mut line = b"CONNECT ".to_vec();
        line.extend_from_slice(arg);
        line.extend_from_slice(b"\r\n");
        bad.try_send(&line);
        bad.try_send(b"PING\r\n");
        let errs = bad.expect_closed();
        prop_assert!(errs.len() <= 1, "{errs:?}");
        let mut good = server.client();
        good.send(b"CONNECT {\"user\":\"bob\",\"pass\":\"plain\",\"verbose\":false}\r\nPING\r\n");
        good.expect(b"PONG\r\n");
        Ok(())
    }

    #[test]
    fn arbitrary_connect_never_hurts_the_server() {
        // One server for all cases, owned here so it is stopped when the test ends.
        let server = fuzz_server();
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&connect_arg(), |arg| one_case(&server, &arg)) {
            panic!("{e}");
        }
    }
}
