//! Operator mode (decentralised JWT auth): an operator JWT in the config, account JWTs in a
//! preloaded memory resolver, users presenting signed user JWTs (`.creds`). The JWTs are minted by
//! tests/common/jwt.rs.

mod common;

use async_nats::{ConnectErrorKind, ConnectOptions};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::jwt::{self as nj, Account, Operator};
use common::{is_natter, Client, Server};
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::json;
use std::future::Future;
use std::time::Duration;

const AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn connect_creds(
    server: &Server,
    creds: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let opts = ConnectOptions::with_credentials(creds).expect("parse creds");
    within("connect", opts.connect(server.url())).await
}

/// A round trip through the server for `client`, so its earlier SUBs are in place.
async fn sync(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, Bytes::new()).await.unwrap();
    within("sync", probe.next()).await.expect("probe");
}

/// A user JWT and key pair signed by `signer` (the account or one of its signing keys).
fn user(signer: &KeyPair, nats: serde_json::Value, top: serde_json::Value) -> (String, KeyPair) {
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
    let other_op = KeyPair::new_operator();
    let rogue_kp = KeyPair::new_account();
    let rogue = Account {
        jwt: nj::account_jwt(&other_op, &rogue_kp.public_key(), "ROGUE", json!({})),
        kp: rogue_kp,
        name: "ROGUE".into(),
    };
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
    let op = Operator::new();
    let signing = KeyPair::new_account();
    let a = op.account("A", json!({ "signing_keys": [signing.public_key()] }));
    let server = Server::with_config(&op.config(&[&a]));
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
    let sys_kp = KeyPair::new_account();
    let op = Operator {
        jwt: nj::operator_jwt(
            &op_kp,
            "OP",
            json!({ "system_account": sys_kp.public_key(), "signing_keys": [op_signing.public_key()] }),
        ),
        system: Account {
            jwt: nj::account_jwt(&op_signing, &sys_kp.public_key(), "SYS", json!({})),
            kp: sys_kp,
            name: "SYS".into(),
        },
        kp: op_kp,
    };
    let a_kp = KeyPair::new_account();
    let a = Account {
        jwt: nj::account_jwt(&op_signing, &a_kp.public_key(), "A", json!({})),
        kp: a_kp,
        name: "A".into(),
    };
    let server = Server::with_config(&op.config(&[&a]));
    connect_creds(&server, &a.user_creds("u", json!({})))
        .await
        .expect("user of an account signed by an operator signing key");
}

#[tokio::test]
async fn jwt_stream_export_and_import() {
    let op = Operator::new();
    let a_kp = KeyPair::new_account();
    let b_kp = KeyPair::new_account();
    let a = Account {
        jwt: nj::account_jwt(
            &op.kp,
            &a_kp.public_key(),
            "A",
            json!({ "exports": [ { "name": "ev", "subject": "events.>", "type": "stream" } ] }),
        ),
        kp: a_kp,
        name: "A".into(),
    };
    let b = Account {
        jwt: nj::account_jwt(
            &op.kp,
            &b_kp.public_key(),
            "B",
            json!({ "imports": [ {
                "name": "ev", "subject": "events.>", "account": a.public_key(), "type": "stream"
            } ] }),
        ),
        kp: b_kp,
        name: "B".into(),
    };
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
    let a_kp = KeyPair::new_account();
    let b_kp = KeyPair::new_account();
    let a = Account {
        jwt: nj::account_jwt(
            &op.kp,
            &a_kp.public_key(),
            "A",
            json!({ "exports": [ { "name": "help", "subject": "help", "type": "service" } ] }),
        ),
        kp: a_kp,
        name: "A".into(),
    };
    let b = Account {
        jwt: nj::account_jwt(
            &op.kp,
            &b_kp.public_key(),
            "B",
            json!({ "imports": [ {
                "name": "help", "subject": "help", "account": a.public_key(),
                "local_subject": "a.help", "type": "service"
            } ] }),
        ),
        kp: b_kp,
        name: "B".into(),
    };
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
    let op = Operator::new();
    let mut limits = nj::unlimited();
    limits["conn"] = json!(1);
    let a = op.account("A", json!({ "limits": limits }));
    let server = Server::with_config(&op.config(&[&a]));
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let _first = raw_login(&server, &jwt, &kp);
    let (jwt, kp) = user(&a.kp, json!({}), json!({}));
    let mut c = raw_connect(&server, &jwt, &kp, true);
    c.expect(b"-ERR 'maximum account active connections exceeded'\r\n");
    c.expect_closed();
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
    let out = run_to_exit(&config);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
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

/// Runs the server binary on `config` until it exits by itself (within 5 s).
fn run_to_exit(config: &str) -> std::process::Output {
    use std::process::{Command, Stdio};
    let dir = common::temp_dir();
    let path = dir.join("server.conf");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(common::server_bin())
        .arg("-c")
        .arg(&path)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "server kept running\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
    child.wait_with_output().unwrap()
}
