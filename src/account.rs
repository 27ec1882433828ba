//! Accounts: isolated subject spaces. Every connection belongs to one; a message published in
//! one account reaches only that account's subscribers, plus whoever imported it.
//!
//! Imports are forwarding subscriptions in the routing table, so the publish path needs no
//! extra lookup: a stream import subscribes in the exporting account and re-publishes into the
//! importer; a service import subscribes in the importing account and re-publishes the request
//! into the exporter with a fresh reply subject, whose one-shot response subscription carries
//! the reply back.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::security::{self, ExportKind, ResponseType, GLOBAL_ACCOUNT};
use crate::outbound::Client;
use crate::subject;
use crate::sublist::{Sublist, SublistStats};
use crate::subscription::Subscription;

/// How long a service import waits for the reply to one request, as nats-server's default
/// response threshold.
pub const RESPONSE_TTL: Duration = Duration::from_secs(120);

/// Most service-import requests one account may have awaiting replies: requests beyond it
/// are forwarded without a reply subject rather than grow memory without bound.
pub const RESPONSES_MAX: usize = 64 * 1024;

/// Prefix of the reply subjects service imports hand to the exporting account.
const REPLY_PREFIX: &str = "_R_.";

/// Limits an account (from its JWT) puts on its connections; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// Most connections at once.
    pub connections: Option<usize>,
    /// Most subscriptions per connection in the account (nats-server applies the account
    /// JWT's `subs` per connection).
    pub subscriptions: Option<usize>,
    /// Largest payload a connection in the account may publish.
    pub payload: Option<usize>,
}

/// One account: its routing table and what it shares.
pub struct Account {
    /// The account's name (in operator mode, its public key).
    pub name: String,
    /// The account's routing table.
    pub sublist: Sublist<Subscription>,
    /// Owns the forwarding subscriptions this account's imports put into routing tables.
    internal: Arc<Client>,
    /// The limits the account's JWT sets.
    pub limits: AccountLimits,
    connections: AtomicUsize,
    /// Service requests from this account awaiting a reply in some exporter.
    awaiting: AtomicUsize,
    /// Reply paths in this account's table, oldest first, for expiry.
    paths: Mutex<ReplyPaths>,
    /// Back to the `Arc` this lives in, so response subscriptions can name it.
    me: Weak<Account>,
}

/// Reply paths by deadline; weak, so a path closed by its reply frees its subscription.
#[derive(Default)]
struct ReplyPaths {
    queue: VecDeque<(Instant, Weak<Subscription>)>,
    /// Queue length at which to drop closed paths next.
    compact_at: usize,
}

impl ReplyPaths {
    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A part of the server that takes messages from the routing table itself (the streams
/// module, for its API and its streams' subjects).
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// A message matched the sink's subscription. Called on the publisher's task, so it must
    /// not block: hand the message to a queue.
    fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, header_len: usize, payload: &[u8]);
}

/// Where a forwarding subscription sends what it matches.
#[derive(Debug)]
pub enum Forward {
    /// To a part of the server (see [`Sink`]).
    Internal(Arc<dyn Sink>),
    /// A stream import: re-publish into `to`, the subject rewritten by `map`.
    Stream {
        /// The importing account.
        to: Arc<Account>,
        /// How the exporter's subject becomes the importer's.
        map: SubjectMap,
    },
    /// A service import: the request goes on into `to` (the exporter) on `map`'s subject, with
    /// a reply subject that leads back here.
    Service {
        /// The exporting account.
        to: Arc<Account>,
        /// The importer's subject to the exporter's.
        map: SubjectMap,
        /// How many replies a request may get.
        response: ResponseType,
    },
    /// The way back for one service request: deliver into `to` on `reply`.
    Response {
        /// The requesting (importing) account.
        to: Arc<Account>,
        /// The requester's own reply subject.
        reply: Bytes,
        /// The account whose table holds this subscription, to leave it after the reply.
        home: Weak<Account>,
    },
}

/// Rewrites subjects from one account's naming to another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectMap {
    /// Unchanged.
    Same,
    /// `prefix.` + subject.
    Prefix(Bytes),
    /// The tokens `from`'s wildcards match fill `to`'s wildcards, in order (`events.>` to
    /// `imported.>`: `events.a.b` becomes `imported.a.b`).
    To {
        /// The pattern subjects are matched by.
        from: Bytes,
        /// The pattern they are rewritten to.
        to: Bytes,
    },
}

impl SubjectMap {
    /// `subject` as the other side names it.
    pub fn apply(&self, subject: &[u8]) -> Bytes {
        match self {
            SubjectMap::Same => Bytes::copy_from_slice(subject),
            SubjectMap::Prefix(p) => {
                let mut out = Vec::with_capacity(p.len() + 1 + subject.len());
                out.extend_from_slice(p);
                out.push(b'.');
                out.extend_from_slice(subject);
                out.into()
            }
            SubjectMap::To { from, to } => {
                // Tokens the source pattern's wildcards stand for, in order.
                let mut captured: Vec<&[u8]> = Vec::new();
                let mut tokens = subject.split(|&b| b == subject::SEP);
                for p in from.split(|&b| b == subject::SEP) {
                    if p == subject::FWC {
                        let rest: Vec<&[u8]> = tokens.by_ref().collect();
                        captured.extend(rest);
                        break;
                    }
                    let t = tokens.next().unwrap_or_default();
                    if p == subject::PWC {
                        captured.push(t);
                    }
                }
                let mut captured = captured.into_iter();
                let mut out = Vec::with_capacity(to.len().max(subject.len()));
                for t in to.split(|&b| b == subject::SEP) {
                    let parts: Vec<&[u8]> = if t == subject::FWC {
                        captured.by_ref().collect()
                    } else if t == subject::PWC {
                        captured.next().into_iter().collect()
                    } else {
                        vec![t]
                    };
                    for part in parts {
                        if !out.is_empty() {
                            out.push(b'.');
                        }
                        out.extend_from_slice(part);
                    }
                }
                out.into()
            }
        }
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// A new, empty account.
    pub fn new(name: &str, limits: AccountLimits) -> Arc<Account> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Arc::new_cyclic(|me| Account {
            name: name.to_string(),
            sublist: Sublist::new(),
            internal: Arc::new(Client::new(0, addr, 0, false)),
            limits,
            connections: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            paths: Mutex::new(ReplyPaths::default()),
            me: me.clone(),
        })
    }

    /// Takes one connection slot; false when the account's connection limit is reached.
    pub fn add_connection(&self) -> bool {
        let max = self.limits.connections.unwrap_or(usize::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by [`Account::add_connection`].
    pub fn remove_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections in the account now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Puts a forwarding subscription on `pattern` into this account's table.
    fn add_forward(&self, pattern: &[u8], forward: Forward) -> Arc<Subscription> {
        let mut sub = Subscription::new(self.internal.clone(), pattern, None, b"import");
        sub.forward = Some(Box::new(forward));
        let sub = Arc::new(sub);
        self.sublist.insert(pattern, None, sub.clone());
        sub
    }

    /// Subscribes `sink` to `pattern` in this account; remove it with [`Account::remove`].
    pub fn subscribe_internal(&self, pattern: &[u8], sink: Arc<dyn Sink>) -> Arc<Subscription> {
        self.add_forward(pattern, Forward::Internal(sink))
    }

    /// Makes the reply path for one service request forwarded into this (the exporting)
    /// account: a fresh reply subject here whose replies go to `reply` in `requester`.
    /// Returns the new reply subject, or `None` when `requester` already has
    /// [`RESPONSES_MAX`] requests awaiting replies (the quota is the requesting account's, so
    /// one importer cannot use up another's). The path closes after one reply (singleton
    /// services) or after [`RESPONSE_TTL`] (see [`Account::sweep_responses`]).
    pub fn response_path(
        &self,
        requester: &Arc<Account>,
        reply: &[u8],
        response: ResponseType,
    ) -> Option<Bytes> {
        let open = requester.awaiting.fetch_add(1, Ordering::AcqRel);
        if open >= RESPONSES_MAX {
            requester.awaiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let subject = format!("{REPLY_PREFIX}{}.{}", random_token(10), random_token(12));
        let forward = Forward::Response {
            to: requester.clone(),
            reply: Bytes::copy_from_slice(reply),
            home: self.me.clone(),
        };
        let sub = self.add_forward(subject.as_bytes(), forward);
        if response == ResponseType::Singleton {
            sub.set_max(1);
        }
        let mut paths = self.lock_paths();
        // Closed paths linger as dead weak pointers until their deadline; when they
        // outnumber the live ones, drop them (amortized: the queue at least doubles first).
        if paths.len() >= paths.compact_at.max(1024) {
            paths.queue.retain(|(_, p)| p.strong_count() > 0);
            paths.compact_at = paths.queue.len() * 2;
        }
        paths
            .queue
            .push_back((Instant::now() + RESPONSE_TTL, Arc::downgrade(&sub)));
        Some(subject.into())
    }

    /// Closes a reply path opened by [`Account::response_path`] (once, however often called).
    pub fn close_response(&self, sub: &Arc<Subscription>) {
        if self.sublist.remove(&sub.subject, sub.queue.as_deref(), sub) {
            if let Some(Forward::Response { to, .. }) = sub.forward.as_deref() {
                to.awaiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Closes the reply paths whose [`RESPONSE_TTL`] has run out. The server calls this
    /// periodically; one sweep per account instead of a timer per request.
    pub fn sweep_responses(&self, now: Instant) {
        let expired: Vec<Arc<Subscription>> = {
            let mut paths = self.lock_paths();
            let mut out = Vec::new();
            while paths.queue.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, path)) = paths.queue.pop_front() {
                    out.extend(path.upgrade());
                }
            }
            out
        };
        for sub in expired {
            self.close_response(&sub);
        }
    }

    fn lock_paths(&self) -> std::sync::MutexGuard<'_, ReplyPaths> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a subscription from this account's table (and from its owner's list).
    pub fn remove(&self, sub: &Arc<Subscription>) {
        self.sublist.remove(&sub.subject, sub.queue.as_deref(), sub);
        let mut subs = sub.client.subs();
        if subs.get(&sub.sid).is_some_and(|s| Arc::ptr_eq(s, sub)) {
            subs.remove(&sub.sid);
        }
    }
}

/// A random alphanumeric token (reply subjects, event ids).
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Every account, by name; fixed once the server starts.
#[derive(Debug)]
pub struct Accounts {
    by_name: HashMap<String, Arc<Account>>,
    global: Arc<Account>,
}

impl Default for Accounts {
    fn default() -> Self {
        let global = Account::new(GLOBAL_ACCOUNT, AccountLimits::default());
        let mut by_name = HashMap::new();
        by_name.insert(GLOBAL_ACCOUNT.to_string(), global.clone());
        Accounts { by_name, global }
    }
}

/// A stream or service export, as the account graph is wired from it.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// Stream or service.
    pub kind: ExportKind,
    /// Exported subject pattern.
    pub subject: String,
    /// Accounts allowed to import; `None` is all.
    pub accounts: Option<Vec<String>>,
    /// Replies per request, for services.
    pub response_type: ResponseType,
}

/// An import, as the account graph is wired from it.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    /// Stream or service.
    pub kind: ExportKind,
    /// The exporting account's name.
    pub account: String,
    /// The subject in the exporting account.
    pub subject: String,
    /// How the subject is named in the importing account.
    pub map: SubjectMap,
}

/// Why the account graph cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiringError(pub String);

impl Accounts {
    /// The accounts named in `names` (plus the global account), each with `limits`.
    pub fn with_accounts<'a>(
        names: impl IntoIterator<Item = (&'a str, AccountLimits)>,
    ) -> Accounts {
        let mut accounts = Accounts::default();
        for (name, limits) in names {
            if name != GLOBAL_ACCOUNT {
                accounts
                    .by_name
                    .insert(name.to_string(), Account::new(name, limits));
            }
        }
        accounts
    }

    /// The default account of connections without one.
    pub fn global(&self) -> &Arc<Account> {
        &self.global
    }

    /// The account called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Account>> {
        self.by_name.get(name)
    }

    /// Every account.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_name.values()
    }

    /// Subscriptions across all accounts.
    pub fn subscription_count(&self) -> usize {
        self.iter().map(|a| a.sublist.count()).sum()
    }

    /// Routing-table statistics summed across accounts.
    pub fn sublist_stats(&self) -> SublistStats {
        let mut total = SublistStats::default();
        for account in self.iter() {
            total.add(&account.sublist.stats());
        }
        total
    }

    /// Wires `importer`'s imports, checking each against the exporter's `exports`.
    pub fn wire_imports(
        &self,
        importer: &str,
        imports: &[ImportSpec],
        exports_of: impl Fn(&str) -> Vec<ExportSpec>,
    ) -> Result<(), WiringError> {
        let to = self
            .get(importer)
            .ok_or_else(|| WiringError(format!("unknown account {importer:?}")))?;
        for import in imports {
            let from = self.get(&import.account).ok_or_else(|| {
                WiringError(format!(
                    "import from unknown account {:?} in account {importer:?}",
                    import.account
                ))
            })?;
            let exports = exports_of(&import.account);
            let export = exports.iter().find(|e| {
                e.kind == import.kind
                    && subject::is_subset(import.subject.as_bytes(), e.subject.as_bytes())
            });
            let Some(export) = export else {
                return Err(WiringError(format!(
                    "account {:?} has no {} export matching {:?} for account {importer:?}",
                    import.account,
                    kind_name(import.kind),
                    import.subject
                )));
            };
            if let Some(allowed) = &export.accounts {
                if !allowed.iter().any(|a| a == importer) {
                    return Err(WiringError(format!(
                        "account {importer:?} is not allowed to import {:?} from account {:?}",
                        import.subject, import.account
                    )));
                }
            }
            match import.kind {
                ExportKind::Stream => {
                    from.add_forward(
                        import.subject.as_bytes(),
                        Forward::Stream {
                            to: to.clone(),
                            map: import.map.clone(),
                        },
                    );
                }
                ExportKind::Service => {
                    // The importer publishes on the local name; map it back to the
                    // exporter's subject.
                    let local = match &import.map {
                        SubjectMap::To { to, .. } => to.clone(),
                        _ => Bytes::copy_from_slice(import.subject.as_bytes()),
                    };
                    let back = if local == import.subject.as_bytes() {
                        SubjectMap::Same
                    } else {
                        SubjectMap::To {
                            from: local.clone(),
                            to: Bytes::copy_from_slice(import.subject.as_bytes()),
                        }
                    };
                    to.add_forward(
                        &local,
                        Forward::Service {
                            to: from.clone(),
                            map: back,
                            response: export.response_type,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Builds the accounts a configuration file declares, imports wired.
    pub fn from_config(accounts: &[security::Account]) -> Result<Accounts, WiringError> {
        let all = Accounts::with_accounts(
            accounts
                .iter()
                .map(|a| (a.name.as_str(), AccountLimits::default())),
        );
        let exports_of = |name: &str| -> Vec<ExportSpec> {
            accounts
                .iter()
                .find(|a| a.name == name)
                .map(|a| {
                    a.exports
                        .iter()
                        .map(|e| ExportSpec {
                            kind: e.kind,
                            subject: e.subject.clone(),
                            accounts: e.accounts.clone(),
                            response_type: e.response_type,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for account in accounts {
            let imports: Vec<ImportSpec> = account
                .imports
                .iter()
                .map(|i| ImportSpec {
                    kind: i.kind,
                    account: i.account.clone(),
                    subject: i.subject.clone(),
                    map: match (&i.prefix, &i.to) {
                        (Some(p), _) => SubjectMap::Prefix(Bytes::copy_from_slice(p.as_bytes())),
                        (None, Some(t)) if t != &i.subject => SubjectMap::To {
                            from: Bytes::copy_from_slice(i.subject.as_bytes()),
                            to: Bytes::copy_from_slice(t.as_bytes()),
                        },
                        _ => SubjectMap::Same,
                    },
                })
                .collect();
            all.wire_imports(&account.name, &imports, exports_of)?;
        }
        Ok(all)
    }
}

fn kind_name(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Stream => "stream",
        ExportKind::Service => "service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_maps() {
        assert_eq!(&SubjectMap::Same.apply(b"a.b")[..], b"a.b");
        assert_eq!(
            &SubjectMap::Prefix(Bytes::from_static(b"p")).apply(b"a.b")[..],
            b"p.a.b"
        );
        let map = |from: &'static [u8], to: &'static [u8]| SubjectMap::To {
            from: Bytes::from_static(from),
            to: Bytes::from_static(to),
        };
        assert_eq!(
            &map(b"events.>", b"imported.>").apply(b"events.a.b")[..],
            b"imported.a.b"
        );
        assert_eq!(&map(b"a.*.c", b"x.*.y").apply(b"a.b.c")[..], b"x.b.y");
        assert_eq!(&map(b"help", b"a.help").apply(b"help")[..], b"a.help");
        assert_eq!(&map(b"a.svc.*", b"svc.*").apply(b"a.svc.x")[..], b"svc.x");
    }

    #[test]
    fn reply_paths_close_on_reply_or_expiry() {
        let exporter = Account::new("A", AccountLimits::default());
        let importer = Account::new("B", AccountLimits::default());
        let first = exporter
            .response_path(&importer, b"_INBOX.1", ResponseType::Singleton)
            .unwrap();
        exporter
            .response_path(&importer, b"_INBOX.2", ResponseType::Stream)
            .unwrap();
        assert!(first.starts_with(b"_R_."));
        assert_eq!(exporter.sublist.count(), 2);
        assert_eq!(importer.awaiting.load(Ordering::Relaxed), 2);
        // The reply closes the first path; closing twice counts once.
        let sub = exporter.sublist.matches(&first).plain[0].clone();
        exporter.close_response(&sub);
        exporter.close_response(&sub);
        assert_eq!(importer.awaiting.load(Ordering::Relaxed), 1);
        exporter.sweep_responses(Instant::now());
        assert_eq!(exporter.sublist.count(), 1, "not expired yet");
        exporter.sweep_responses(Instant::now() + RESPONSE_TTL + Duration::from_secs(1));
        assert_eq!(exporter.sublist.count(), 0);
        assert_eq!(importer.awaiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn each_requesting_account_has_its_own_quota() {
        let exporter = Account::new("A", AccountLimits::default());
        let greedy = Account::new("B", AccountLimits::default());
        let other = Account::new("C", AccountLimits::default());
        greedy.awaiting.store(RESPONSES_MAX, Ordering::Relaxed);
        assert!(exporter
            .response_path(&greedy, b"_INBOX.x", ResponseType::Singleton)
            .is_none());
        assert!(exporter
            .response_path(&other, b"_INBOX.y", ResponseType::Singleton)
            .is_some());
    }

    #[test]
    fn connection_limits() {
        let a = Account::new(
            "A",
            AccountLimits {
                connections: Some(1),
                ..AccountLimits::default()
            },
        );
        assert!(a.add_connection());
        assert!(!a.add_connection());
        a.remove_connection();
        assert!(a.add_connection());
    }
}
