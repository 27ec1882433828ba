//! Who a connection is: checks the credentials a client presents in CONNECT (token,
//! user/password, bcrypt hashes, nkey signatures of the server's nonce, a mapped TLS
//! certificate, or a user JWT in operator mode) and yields the account and permissions it
//! gets. A failure never says which part was wrong; the client only sees
//! `Authorization Violation`.

pub mod jwt;
pub mod operator;
pub mod permissions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use crate::account::Accounts;
use crate::config::security::{Secret, Security};
use crate::proto::ConnectOptions;

pub use permissions::Permissions;

/// Who a connection authenticated as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name (a public nkey for nkey and JWT users), as monitoring shows it.
    pub user: Option<String>,
    /// The account the connection belongs to.
    pub account: Arc<crate::account::Account>,
    /// What the user may do; `None` is everything.
    pub permissions: Option<Arc<Permissions>>,
    /// When the credentials expire (a user JWT's `exp`): the connection is closed then.
    pub expires: Option<SystemTime>,
    /// Most subscriptions (a user JWT's `subs` limit).
    pub max_subscriptions: Option<usize>,
    /// Largest payload (a user JWT's `payload` limit).
    pub max_payload: Option<usize>,
}

/// What a client presented: its CONNECT, the nonce it was sent, and its verified TLS
/// certificate.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The CONNECT options.
    pub connect: &'a ConnectOptions,
    /// The nonce this connection's INFO carried, if any.
    pub nonce: &'a [u8],
    /// The client's verified certificate (for `verify_and_map`).
    pub cert: Option<&'a rustls::pki_types::CertificateDer<'static>>,
    /// The client's address (user JWTs may limit where users connect from).
    pub ip: Option<std::net::IpAddr>,
}

/// Why authentication failed: for the server log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl Denied {
    fn new(reason: impl Into<String>) -> Denied {
        Denied(reason.into())
    }
}

#[derive(Debug)]
struct UserEntry {
    password: Option<Secret>,
    nkey: bool,
    permissions: Option<Arc<Permissions>>,
    account: String,
}

/// Checks credentials against the configuration; built once at startup.
#[derive(Debug, Default)]
pub struct Authenticator {
    token: Option<Secret>,
    users: HashMap<String, UserEntry>,
    /// User names in configuration order: certificate mapping prefers the first match.
    order: Vec<String>,
    no_auth_user: Option<String>,
    map_certificates: bool,
    operator: Option<operator::Trust>,
    /// How long a client has to authenticate.
    pub timeout: Duration,
}

impl Authenticator {
    /// Builds the checks `security` asks for; the accounts it names must be in `accounts`.
    pub fn new(security: &Security, accounts: &Accounts) -> Result<Authenticator, String> {
        let default_permissions = security
            .default_permissions
            .as_ref()
            .map(|p| Arc::new(Permissions::new(p)));
        let mut users = HashMap::new();
        let mut order = Vec::new();
        for user in &security.users {
            order.push(user.name.clone());
            if accounts.get(&user.account).is_none() {
                return Err(format!(
                    "user {:?} belongs to unknown account {:?}",
                    user.name, user.account
                ));
            }
            let permissions = match &user.permissions {
                Some(p) => Some(Arc::new(Permissions::new(p))),
                None => default_permissions.clone(),
            };
            users.insert(
                user.name.clone(),
                UserEntry {
                    password: user.password.clone(),
                    nkey: user.nkey,
                    permissions,
                    account: user.account.clone(),
                },
            );
        }
        let operator = match &security.operator {
            Some(op) => Some(operator::Trust::new(op, accounts)?),
            None => None,
        };
        Ok(Authenticator {
            token: security.token.clone(),
            users,
            order,
            no_auth_user: security.no_auth_user.clone(),
            map_certificates: security.tls.as_ref().is_some_and(|t| t.verify_and_map),
            operator,
            timeout: security.auth_timeout.unwrap_or(Duration::from_secs(2)),
        })
    }

    /// Whether clients must present credentials (INFO `auth_required`).
    pub fn required(&self) -> bool {
        self.token.is_some()
            || !self.users.is_empty()
            || self.operator.is_some()
            || self.map_certificates
    }

    /// Whether INFO must carry a nonce for the client to sign (nkey users, operator mode).
    pub fn wants_nonce(&self) -> bool {
        self.operator.is_some() || self.users.values().any(|u| u.nkey)
    }

    /// Whether checking `connect` may run bcrypt, which takes milliseconds of CPU: the caller
    /// should move it off the async worker.
    pub fn is_slow(&self, connect: &ConnectOptions) -> bool {
        let bcrypt = |s: &Option<Secret>| matches!(s, Some(Secret::Bcrypt(_)));
        (connect.auth_token.is_some() && bcrypt(&self.token))
            || connect
                .user
                .as_ref()
                .and_then(|u| self.users.get(u))
                .is_some_and(|u| bcrypt(&u.password))
    }

    /// Checks what a client presented; the identity it gets, or why not.
    pub fn authenticate(&self, p: Presented<'_>, accounts: &Accounts) -> Result<Identity, Denied> {
        let c = p.connect;
        if let Some(trust) = &self.operator {
            if c.jwt.is_some() {
                return trust.authenticate(p);
            }
            return match &self.no_auth_user {
                Some(name) if no_credentials(c) => self.identity_of(name, accounts),
                _ => Err(Denied::new("no user JWT presented")),
            };
        }
        if let Some(nkey) = &c.nkey {
            let user = self
                .users
                .get(nkey)
                .filter(|u| u.nkey)
                .ok_or_else(|| Denied::new(format!("unknown nkey {nkey}")))?;
            let sig = c.sig.as_deref().unwrap_or_default();
            if !jwt::verify_nonce_signature(nkey, p.nonce, sig) {
                return Err(Denied::new(format!("bad nonce signature for {nkey}")));
            }
            return self.identity(nkey, user, accounts);
        }
        if self.map_certificates {
            let cert = p
                .cert
                .ok_or_else(|| Denied::new("no client certificate to map"))?;
            let names = self
                .order
                .iter()
                .filter(|n| self.users.get(*n).is_some_and(|u| !u.nkey))
                .map(String::as_str);
            let name = crate::tls::map_user(cert, names)
                .ok_or_else(|| Denied::new("no user for the client certificate"))?;
            return self.identity(name, &self.users[name], accounts);
        }
        if let Some(token) = &self.token {
            if let Some(given) = &c.auth_token {
                return if secret_matches(token, given) {
                    Ok(Identity::anonymous(accounts))
                } else {
                    Err(Denied::new("bad token"))
                };
            }
        }
        if let Some(name) = &c.user {
            let user = self
                .users
                .get(name)
                .filter(|u| !u.nkey)
                .ok_or_else(|| Denied::new(format!("unknown user {name:?}")))?;
            let given = c.pass.as_deref().unwrap_or_default();
            let ok = user
                .password
                .as_ref()
                .is_some_and(|p| secret_matches(p, given));
            return if ok {
                self.identity(name, user, accounts)
            } else {
                Err(Denied::new(format!("bad password for user {name:?}")))
            };
        }
        match &self.no_auth_user {
            Some(name) if no_credentials(c) => self.identity_of(name, accounts),
            _ if !self.required() => Ok(Identity::anonymous(accounts)),
            _ => Err(Denied::new("no credentials presented")),
        }
    }

    /// A configured user's account and permissions (for bringing connected clients in line
    /// after a reload); `None` if no such user is configured.
    pub fn user_grant(&self, name: &str) -> Option<(&str, Option<Arc<Permissions>>)> {
        let user = self.users.get(name)?;
        Some((user.account.as_str(), user.permissions.clone()))
    }

    /// Whether users come from JWTs (operator mode) rather than the configuration.
    pub fn operator_mode(&self) -> bool {
        self.operator.is_some()
    }

    fn identity_of(&self, name: &str, accounts: &Accounts) -> Result<Identity, Denied> {
        let user = self
            .users
            .get(name)
            .ok_or_else(|| Denied::new(format!("no_auth_user {name:?} is not a user")))?;
        self.identity(name, user, accounts)
    }

    fn identity(
        &self,
        name: &str,
        user: &UserEntry,
        accounts: &Accounts,
    ) -> Result<Identity, Denied> {
        let account = accounts
            .get(&user.account)
            .ok_or_else(|| Denied::new(format!("unknown account {:?}", user.account)))?;
        Ok(Identity {
            user: Some(name.to_string()),
            account: account.clone(),
            permissions: user.permissions.clone(),
            expires: None,
            max_subscriptions: None,
            max_payload: None,
        })
    }
}

impl Identity {
    /// A connection in the global account with no restrictions (no auth, or a shared token).
    pub fn anonymous(accounts: &Accounts) -> Identity {
        Identity {
            user: None,
            account: accounts.global().clone(),
            permissions: None,
            expires: None,
            max_subscriptions: None,
            max_payload: None,
        }
    }
}

fn no_credentials(c: &ConnectOptions) -> bool {
    c.user.is_none()
        && c.pass.is_none()
        && c.auth_token.is_none()
        && c.nkey.is_none()
        && c.jwt.is_none()
}

/// Compares a presented secret with the configured one: bcrypt for hashes, otherwise in
/// constant time.
fn secret_matches(configured: &Secret, given: &str) -> bool {
    match configured {
        Secret::Plain(want) => bool::from(want.as_bytes().ct_eq(given.as_bytes())),
        Secret::Bcrypt(hash) => bcrypt::verify(given, hash).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::{User, GLOBAL_ACCOUNT};

    fn user(name: &str, password: Secret) -> User {
        User {
            name: name.into(),
            password: Some(password),
            nkey: false,
            permissions: None,
            account: GLOBAL_ACCOUNT.into(),
            pos: None,
        }
    }

    fn connect(json: &str) -> ConnectOptions {
        serde_json::from_str(json).unwrap()
    }

    fn check(auth: &Authenticator, json: &str) -> Result<Identity, Denied> {
        let accounts = Accounts::default();
        let c = connect(json);
        auth.authenticate(
            Presented {
                connect: &c,
                nonce: b"nonce",
                cert: None,
                ip: None,
            },
            &accounts,
        )
    }

    #[test]
    fn passwords_plain_and_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let sec = Security {
            users: vec![
                user("alice", Secret::Plain("pw".into())),
                user("bob", Secret::Bcrypt(hash)),
            ],
            ..Security::default()
        };
        let auth = Authenticator::new(&sec, &Accounts::default()).unwrap();
        assert!(auth.required());
        assert!(check(&auth, r#"{"user":"alice","pass":"pw"}"#).is_ok());
        assert!(check(&auth, r#"{"user":"alice","pass":"px"}"#).is_err());
        assert!(check(&auth, r#"{"user":"bob","pass":"s3cret"}"#).is_ok());
        assert!(auth.is_slow(&connect(r#"{"user":"bob","pass":"x"}"#)));
        assert!(check(&auth, r#"{"user":"bob","pass":"wrong"}"#).is_err());
        assert!(check(&auth, r#"{"user":"carol","pass":"pw"}"#).is_err());
        assert!(check(&auth, r#"{}"#).is_err());
    }

    #[test]
    fn tokens() {
        let sec = Security {
            token: Some(Secret::Plain("t0k".into())),
            ..Security::default()
        };
        let auth = Authenticator::new(&sec, &Accounts::default()).unwrap();
        assert!(check(&auth, r#"{"auth_token":"t0k"}"#).is_ok());
        assert!(check(&auth, r#"{"auth_token":"t0x"}"#).is_err());
        assert!(check(&auth, r#"{}"#).is_err());
    }

    #[test]
    fn nkeys_sign_the_nonce() {
        let kp = nkeys::KeyPair::new_user();
        let sec = Security {
            users: vec![User {
                name: kp.public_key(),
                password: None,
                nkey: true,
                permissions: None,
                account: GLOBAL_ACCOUNT.into(),
                pos: None,
            }],
            ..Security::default()
        };
        let auth = Authenticator::new(&sec, &Accounts::default()).unwrap();
        assert!(auth.wants_nonce());
        use base64::Engine;
        let sig =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.sign(b"nonce").unwrap());
        let good = format!(r#"{{"nkey":"{}","sig":"{sig}"}}"#, kp.public_key());
        assert!(check(&auth, &good).is_ok());
        let other =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.sign(b"other").unwrap());
        let bad = format!(r#"{{"nkey":"{}","sig":"{other}"}}"#, kp.public_key());
        assert!(check(&auth, &bad).is_err());
    }

    #[test]
    fn no_auth_user_takes_anonymous_clients() {
        let sec = Security {
            users: vec![user("guest", Secret::Plain("x".into()))],
            no_auth_user: Some("guest".into()),
            ..Security::default()
        };
        let auth = Authenticator::new(&sec, &Accounts::default()).unwrap();
        let id = check(&auth, "{}").unwrap();
        assert_eq!(id.user.as_deref(), Some("guest"));
        assert!(check(&auth, r#"{"user":"guest","pass":"y"}"#).is_err());
    }
}
