//! Minimal NATS JWT v2 issuing for the operator-mode tests: nkeys for operators, accounts and users,
//! claims encoded and signed by hand (`header.claims.signature`, all base64url without padding, the
//! signature an ed25519 signature by the issuer's nkey over `header.claims`), and `.creds` files.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A unique-enough JWT id (the real tools use a hash of the claims; servers do not check it).
fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("JTI{:X}{:X}{:X}", std::process::id(), nanos, n)
}

/// Encode and sign `claims` (a JSON object) with `issuer`.
pub fn encode(claims: &Value, issuer: &KeyPair) -> String {
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64(serde_json::to_string(claims).unwrap().as_bytes());
    let signing_input = format!("{header}.{body}");
    let sig = issuer.sign(signing_input.as_bytes()).expect("sign jwt");
    format!("{signing_input}.{}", b64(&sig))
}

/// Merge the keys of object `extra` into object `base`.
fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
}

/// The claims of a JWT: `{jti, iat, iss, name, sub, nats: {type, version: 2, ..nats}}`, plus the
/// top-level fields in `top` (e.g. `exp`).
pub fn claims(
    issuer: &str,
    subject: &str,
    name: &str,
    kind: &str,
    nats: Value,
    top: Value,
) -> Value {
    let mut n = json!({ "type": kind, "version": 2 });
    merge(&mut n, nats);
    let mut c = Value::Object(Map::new());
    merge(
        &mut c,
        json!({
            "jti": jti(),
            "iat": now(),
            "iss": issuer,
            "name": name,
            "sub": subject,
            "nats": n,
        }),
    );
    merge(&mut c, top);
    c
}

/// Unlimited account limits, as `nsc` writes them by default.
pub fn unlimited() -> Value {
    json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    })
}

/// A self-signed operator JWT; `nats` adds to its `nats` section (e.g. `system_account`).
pub fn operator_jwt(op: &KeyPair, name: &str, nats: Value) -> String {
    let pk = op.public_key();
    encode(&claims(&pk, &pk, name, "operator", nats, json!({})), op)
}

/// An account JWT for `account` signed by the operator (or an operator signing key) `signer`;
/// `nats` adds to (or overrides) the `nats` section, whose `limits` default to unlimited.
pub fn account_jwt(signer: &KeyPair, account: &str, name: &str, nats: Value) -> String {
    let mut n = json!({ "limits": unlimited() });
    merge(&mut n, nats);
    encode(
        &claims(&signer.public_key(), account, name, "account", n, json!({})),
        signer,
    )
}

/// A user JWT for `user` signed by its account (or an account signing key) `signer`; `nats` adds
/// to the `nats` section (defaults: unlimited subs/data/payload), `top` to the top level (`exp`).
pub fn user_jwt(signer: &KeyPair, user: &str, name: &str, nats: Value, top: Value) -> String {
    let mut n = json!({ "subs": -1, "data": -1, "payload": -1 });
    merge(&mut n, nats);
    encode(
        &claims(&signer.public_key(), user, name, "user", n, top),
        signer,
    )
}

/// The text of a `.creds` file holding `jwt` and the user's `seed`.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// An account with its key pair and a handy way to mint users.
pub struct Account {
    pub kp: KeyPair,
    pub name: String,
    pub jwt: String,
}

impl Account {
    /// A fresh account whose JWT `signer` (an operator or operator signing key) issued; `nats`
    /// adds to its `nats` claims.
    pub fn signed_by(signer: &KeyPair, name: &str, nats: Value) -> Account {
        let kp = KeyPair::new_account();
        let jwt = account_jwt(signer, &kp.public_key(), name, nats);
        Account {
            kp,
            name: name.into(),
            jwt,
        }
    }

    pub fn public_key(&self) -> String {
        self.kp.public_key()
    }

    /// `.creds` text for a fresh user of this account with the given extra `nats` claims.
    pub fn user_creds(&self, name: &str, nats: Value) -> String {
        let user = KeyPair::new_user();
        let jwt = user_jwt(&self.kp, &user.public_key(), name, nats, json!({}));
        creds(&jwt, &user.seed().unwrap())
    }
}

/// An operator with a system account and any number of ordinary accounts, all preloaded into a
/// memory resolver.
pub struct Operator {
    pub kp: KeyPair,
    pub jwt: String,
    pub system: Account,
}

impl Operator {
    /// A fresh operator whose JWT names a fresh system account `SYS`.
    pub fn new() -> Operator {
        let kp = KeyPair::new_operator();
        let system = Account::signed_by(&kp, "SYS", json!({}));
        let jwt = operator_jwt(&kp, "OP", json!({ "system_account": system.public_key() }));
        Operator { kp, jwt, system }
    }

    /// A fresh account signed by this operator; `nats` adds to its `nats` claims.
    pub fn account(&self, name: &str, nats: Value) -> Account {
        Account::signed_by(&self.kp, name, nats)
    }

    /// Server config text: this operator inline, a memory resolver preloaded with the system
    /// account and `accounts`, and `system_account` set.
    pub fn config(&self, accounts: &[&Account]) -> String {
        let mut preload = format!("  {}: \"{}\"\n", self.system.public_key(), self.system.jwt);
        for a in accounts {
            preload.push_str(&format!("  {}: \"{}\"\n", a.public_key(), a.jwt));
        }
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            self.jwt,
            self.system.public_key()
        )
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator::new()
    }
}
