//! Operator (decentralized JWT) mode: the configuration trusts operator JWTs; accounts are
//! account JWTs the operator signed (preloaded into the `MEMORY` resolver); users connect
//! with a user JWT their account signed plus a signature of the server's nonce made with the
//! user's nkey (what a `.creds` file holds).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::account::{self, Account, AccountLimits, Accounts, ExportSpec, ImportSpec, SubjectMap};
use crate::config::security::{
    self, ExportKind, Operator, ResponsePermission, ResponseType, SubjectPermission,
};

use super::jwt::{self, AccountClaims, Claims, ExportType, OperatorClaims, UserClaims};
use super::{Denied, Identity, Permissions, Presented};

/// The operators' keys and the accounts they signed.
#[derive(Debug)]
pub struct Trust {
    accounts: HashMap<String, Trusted>,
}

#[derive(Debug)]
struct Trusted {
    claims: Claims<AccountClaims>,
    account: Arc<Account>,
    default_permissions: Option<Arc<Permissions>>,
}

/// Verified account JWTs by account public key.
fn verified_accounts(op: &Operator) -> Result<Vec<Claims<AccountClaims>>, String> {
    let mut operator_keys = HashSet::new();
    for token in &op.jwts {
        let claims =
            jwt::decode::<OperatorClaims>(token).map_err(|e| format!("operator JWT: {e}"))?;
        if claims.is_expired_at(now()) {
            return Err(format!("operator JWT {} has expired", claims.sub));
        }
        operator_keys.insert(claims.sub.clone());
        operator_keys.extend(claims.nats.signing_keys.iter().cloned());
    }
    let mut accounts = Vec::new();
    for (key, token) in &op.preload {
        let claims = jwt::decode::<AccountClaims>(token)
            .map_err(|e| format!("resolver_preload {key}: {e}"))?;
        if &claims.sub != key {
            return Err(format!(
                "resolver_preload {key}: the JWT is for account {}",
                claims.sub
            ));
        }
        if !operator_keys.contains(&claims.iss) {
            return Err(format!(
                "resolver_preload {key}: the JWT is not signed by a trusted operator (issuer {})",
                claims.iss
            ));
        }
        accounts.push(claims);
    }
    Ok(accounts)
}

/// The accounts the operator's preloaded JWTs define, their imports wired.
pub fn accounts(op: &Operator) -> Result<Accounts, String> {
    let claims = verified_accounts(op)?;
    let all = Accounts::with_accounts(claims.iter().map(|c| {
        let limits = AccountLimits {
            connections: usize::try_from(c.nats.limits.conn).ok(),
        };
        (c.sub.as_str(), limits)
    }));
    let exports_of = |key: &str| -> Vec<ExportSpec> {
        claims
            .iter()
            .find(|c| c.sub == key)
            .map(|c| {
                c.nats
                    .exports
                    .iter()
                    .map(|e| ExportSpec {
                        kind: kind(&e.kind),
                        subject: e.subject.clone(),
                        // Exports needing an activation token are not importable without
                        // one, and natter does not take activation tokens yet.
                        accounts: e.token_req.then(Vec::new),
                        response_type: match e.response_type.as_str() {
                            "Stream" => ResponseType::Stream,
                            "Chunked" => ResponseType::Chunked,
                            _ => ResponseType::Singleton,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for c in &claims {
        let imports: Vec<ImportSpec> = c
            .nats
            .imports
            .iter()
            .map(|i| {
                let local = if i.local_subject.is_empty() {
                    &i.to
                } else {
                    &i.local_subject
                };
                ImportSpec {
                    kind: kind(&i.kind),
                    account: i.account.clone(),
                    subject: i.subject.clone(),
                    map: if local.is_empty() || local == &i.subject {
                        SubjectMap::Same
                    } else {
                        SubjectMap::To {
                            from: Bytes::copy_from_slice(i.subject.as_bytes()),
                            to: Bytes::copy_from_slice(local.as_bytes()),
                        }
                    },
                }
            })
            .collect();
        all.wire_imports(&c.sub, &imports, exports_of)
            .map_err(|e: account::WiringError| e.0)?;
    }
    Ok(all)
}

fn kind(k: &ExportType) -> ExportKind {
    match k {
        ExportType::Service => ExportKind::Service,
        _ => ExportKind::Stream,
    }
}

impl Trust {
    /// Verifies the operator and preloaded account JWTs against `accounts` (built by
    /// [`accounts`] from the same configuration).
    pub fn new(op: &Operator, accounts: &Accounts) -> Result<Trust, String> {
        let mut trusted = HashMap::new();
        for claims in verified_accounts(op)? {
            let account = accounts
                .get(&claims.sub)
                .ok_or_else(|| format!("account {} was not loaded", claims.sub))?
                .clone();
            let defaults = &claims.nats.default_permissions;
            let default_permissions =
                (!defaults.pub_.is_empty() || !defaults.sub.is_empty()).then(|| {
                    Arc::new(Permissions::new(&permissions(
                        &defaults.pub_,
                        &defaults.sub,
                        defaults.resp.as_ref(),
                    )))
                });
            trusted.insert(
                claims.sub.clone(),
                Trusted {
                    claims,
                    account,
                    default_permissions,
                },
            );
        }
        Ok(Trust { accounts: trusted })
    }

    /// Checks a user JWT and its nonce signature.
    pub fn authenticate(&self, p: Presented<'_>) -> Result<Identity, Denied> {
        let token = p.connect.jwt.as_deref().unwrap_or_default();
        let user =
            jwt::decode::<UserClaims>(token).map_err(|e| Denied(format!("user JWT: {e}")))?;
        let now = now();
        if !user.is_valid_at(now) {
            return Err(Denied(format!(
                "user JWT for {} is expired or not yet valid",
                user.sub
            )));
        }
        let key = user.issuer_account().to_string();
        let trusted = self
            .accounts
            .get(&key)
            .ok_or_else(|| Denied(format!("user {} is in unknown account {key}", user.sub)))?;
        let account = &trusted.claims;
        if !account.is_valid_at(now) {
            return Err(Denied(format!("account {key} JWT has expired")));
        }
        let mut claims = user.nats.clone();
        if user.iss != key {
            let signer = account.nats.signing_key(&user.iss).ok_or_else(|| {
                Denied(format!(
                    "user {} signed by {}, not a signing key of account {key}",
                    user.sub, user.iss
                ))
            })?;
            if let Some(scope) = signer.scope() {
                if claims.has_permission_limits() {
                    return Err(Denied(format!(
                        "user {} issued by scoped signing key {} sets its own permissions",
                        user.sub, user.iss
                    )));
                }
                // A scoped signing key's template is what the user may do.
                claims = UserClaims {
                    bearer_token: claims.bearer_token,
                    issuer_account: claims.issuer_account.clone(),
                    ..UserClaims::from_template(&scope.template)
                };
            }
        }
        if account.nats.is_user_revoked(&user.sub, user.iat) {
            return Err(Denied(format!("user {} is revoked", user.sub)));
        }
        let bearer = claims.bearer_token && !account.nats.limits.disallow_bearer;
        if !bearer {
            let sig = p.connect.sig.as_deref().unwrap_or_default();
            if !jwt::verify_nonce_signature(&user.sub, p.nonce, sig) {
                return Err(Denied(format!("bad nonce signature for user {}", user.sub)));
            }
        }
        let permissions = if claims.has_permissions() {
            Some(Arc::new(Permissions::new(&permissions(
                &claims.pub_,
                &claims.sub,
                claims.resp.as_ref(),
            ))))
        } else {
            trusted.default_permissions.clone()
        };
        let limit = |n: i64| usize::try_from(n).ok();
        Ok(Identity {
            user: Some(user.sub.clone()),
            account: trusted.account.clone(),
            permissions,
            expires: user
                .expires()
                .and_then(|exp| u64::try_from(exp).ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            max_subscriptions: limit(claims.subs),
            max_payload: limit(claims.payload),
        })
    }
}

/// JWT permissions in the configuration's terms.
fn permissions(
    publish: &jwt::Permission,
    subscribe: &jwt::Permission,
    resp: Option<&jwt::ResponsePermission>,
) -> security::Permissions {
    let list = |p: &jwt::Permission| {
        (!p.is_empty()).then(|| SubjectPermission {
            allow: p.allow.clone(),
            deny: p.deny.clone(),
        })
    };
    security::Permissions {
        publish: list(publish),
        subscribe: list(subscribe),
        allow_responses: resp.map(|r| ResponsePermission {
            max: usize::try_from(r.max).unwrap_or(1).max(1),
            expires: Duration::from_nanos(u64::try_from(r.ttl).unwrap_or(0)),
        }),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
