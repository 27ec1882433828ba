//! Operator (decentralized JWT) mode: the configuration trusts operator JWTs; accounts are
//! account JWTs the operator signed (preloaded into the `MEMORY` resolver); users connect
//! with a user JWT their account signed plus a signature of the server's nonce made with the
//! user's nkey (what a `.creds` file holds).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
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
        let l = &c.nats.limits;
        let limits = AccountLimits {
            connections: usize::try_from(l.conn).ok(),
            subscriptions: usize::try_from(l.subs).ok(),
            payload: usize::try_from(l.payload).ok(),
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

/// The accounts whose JWTs give them JetStream (memory or file storage other than 0; -1 is
/// unlimited), with their JetStream limits: the claims' own when they give storage, else their
/// `R1` tier's (the only tier a single server has), as nsc writes with `--js-tier`. Never the
/// system account (`system`, or the operator JWT's).
pub fn jetstream_accounts(
    op: &Operator,
    system: Option<&str>,
) -> Result<Vec<(String, natter_streams::AccountLimits)>, String> {
    let mut systems: Vec<String> = system.map(String::from).into_iter().collect();
    for token in &op.jwts {
        if let Ok(c) = jwt::decode::<OperatorClaims>(token) {
            systems.push(c.nats.system_account.clone());
        }
    }
    let claims = verified_accounts(op)?;
    Ok(claims
        .iter()
        .filter(|c| !systems.contains(&c.sub))
        .filter_map(|c| Some((c.sub.clone(), js_limits(&c.nats.limits)?)))
        .collect())
}

/// An account JWT's JetStream limits; `None` if they give it no storage.
fn js_limits(l: &jwt::AccountLimits) -> Option<natter_streams::AccountLimits> {
    let own = l.mem_storage != 0 || l.disk_storage != 0;
    let tier = l.tiered_limits.get("R1").filter(|_| !own);
    let num = |key: &str, v: i64| match tier {
        Some(t) => t.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0),
        None => v,
    };
    let (mem, disk) = (
        num("mem_storage", l.mem_storage),
        num("disk_storage", l.disk_storage),
    );
    if mem == 0 && disk == 0 {
        return None;
    }
    // Counts and per-stream sizes of 0 are no limit; storage of 0 is none.
    let count = |key: &str, v: i64| Some(num(key, v)).filter(|v| *v > 0).unwrap_or(-1);
    let required = match tier {
        Some(t) => t
            .get("max_bytes_required")
            .and_then(serde_json::Value::as_bool),
        None => Some(l.max_bytes_required),
    };
    Some(natter_streams::AccountLimits {
        max_memory: mem.max(-1),
        max_storage: disk.max(-1),
        max_streams: count("streams", l.streams),
        max_consumers: count("consumer", l.consumer),
        max_ack_pending: count("max_ack_pending", l.max_ack_pending),
        memory_max_stream_bytes: count("mem_max_stream_bytes", l.mem_max_stream_bytes),
        storage_max_stream_bytes: count("disk_max_stream_bytes", l.disk_max_stream_bytes),
        max_bytes_required: required == Some(true),
    })
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
        let mut window_end = None;
        if !claims.src.is_empty()
            && !p
                .ip
                .is_some_and(|ip| claims.src.iter().any(|c| in_cidr(c, ip)))
        {
            return Err(Denied(format!(
                "user {} may not connect from {:?}",
                user.sub, p.ip
            )));
        }
        if !claims.times.is_empty() {
            let now = match claims.times_location.as_str() {
                "" | "Local" => chrono::Local::now().time(),
                "UTC" | "Etc/UTC" | "GMT" => chrono::Utc::now().time(),
                zone => {
                    // No time-zone database here: refuse rather than guess the window.
                    return Err(Denied(format!(
                        "user {}: connection times in zone {zone:?} cannot be checked",
                        user.sub
                    )));
                }
            };
            // The connection may last until the end of the window it came in.
            let left = claims
                .times
                .iter()
                .filter_map(|t| window_left(t, now))
                .max();
            let Some(left) = left else {
                return Err(Denied(format!(
                    "user {} may not connect at this time of day",
                    user.sub
                )));
            };
            window_end = Some(SystemTime::now() + left);
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
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .into_iter()
                .chain(window_end)
                .min(),
            // nats-server applies the account's `subs` to each connection, not the account.
            max_subscriptions: match (limit(claims.subs), trusted.account.limits.subscriptions) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_payload: match (limit(claims.payload), trusted.account.limits.payload) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
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

/// Whether `ip` is in `cidr` (`10.0.0.0/8`, `::1/128`). A bare address is not a CIDR block
/// and matches nothing, as in nats-server.
fn in_cidr(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.trim().parse::<IpAddr>(), bits.trim().parse::<u32>()) else {
        return false;
    };
    // An IPv4 client on a dual-stack socket shows up as an IPv4-mapped IPv6 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = bits.min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = bits.min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// How long until a daily window ends, if `now` falls in it; a window whose end is before its
/// start spans midnight.
fn window_left(t: &jwt::TimeRange, now: chrono::NaiveTime) -> Option<Duration> {
    let parse = |s: &str| chrono::NaiveTime::parse_from_str(s, "%H:%M:%S").ok();
    let (start, end) = (parse(&t.start)?, parse(&t.end)?);
    let inside = if start <= end {
        start <= now && now <= end
    } else {
        now >= start || now <= end
    };
    if !inside {
        return None;
    }
    let mut left = end.signed_duration_since(now);
    if left < chrono::TimeDelta::zero() {
        left += chrono::TimeDelta::days(1);
    }
    left.to_std().ok()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {

    /// JetStream limits come whole from the claims when they give storage, else from the R1
    /// tier; none without storage.
    #[test]
    fn jetstream_limits_of_account_claims() {
        let mut l = jwt::AccountLimits::default();
        assert_eq!(js_limits(&l), None);
        l.mem_storage = -1;
        l.streams = 3;
        l.tiered_limits = serde_json::json!({"R1": {"disk_storage": 1000, "streams": 5}});
        let own = js_limits(&l).unwrap();
        assert_eq!(
            (own.max_memory, own.max_storage, own.max_streams),
            (-1, 0, 3)
        );
        l.mem_storage = 0;
        let tier = js_limits(&l).unwrap();
        assert_eq!(
            (
                tier.max_memory,
                tier.max_storage,
                tier.max_streams,
                tier.max_consumers
            ),
            (0, 1000, 5, -1)
        );
    }

    use super::*;

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_cidr("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!in_cidr("10.0.0.0/8", ip("11.1.2.3")));
        assert!(in_cidr("127.0.0.1/32", ip("127.0.0.1")));
        assert!(!in_cidr("127.0.0.1", ip("127.0.0.1")));
        assert!(in_cidr("0.0.0.0/0", ip("8.8.8.8")));
        assert!(in_cidr("127.0.0.0/8", ip("::ffff:127.0.0.1")));
        assert!(in_cidr("::1/128", ip("::1")));
        assert!(!in_cidr("garbage", ip("::1")));
    }

    #[test]
    fn windows() {
        let t = |a: &str, b: &str| jwt::TimeRange {
            start: a.into(),
            end: b.into(),
        };
        let at = |s: &str| chrono::NaiveTime::parse_from_str(s, "%H:%M:%S").unwrap();
        let hours = |h: u64| Some(Duration::from_secs(h * 3600));
        assert_eq!(
            window_left(&t("08:00:00", "17:00:00"), at("12:00:00")),
            hours(5)
        );
        assert_eq!(
            window_left(&t("08:00:00", "17:00:00"), at("18:00:00")),
            None
        );
        assert_eq!(
            window_left(&t("22:00:00", "02:00:00"), at("23:00:00")),
            hours(3)
        );
        assert_eq!(
            window_left(&t("22:00:00", "02:00:00"), at("01:00:00")),
            hours(1)
        );
        assert_eq!(
            window_left(&t("22:00:00", "02:00:00"), at("12:00:00")),
            None
        );
        assert_eq!(window_left(&t("bad", "02:00:00"), at("01:00:00")), None);
    }
}
