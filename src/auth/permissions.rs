//! What a user may publish and subscribe to, checked as nats-server checks it: deny wins over
//! allow; a subscription is allowed when its subject lies within an allowed pattern and not
//! within a denied one; a wildcard subscription that merely overlaps a denied pattern is
//! allowed, and the denied subjects are filtered out when delivering to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::security::{self, ResponsePermission};
use crate::subject;

/// Publish-decision cache entries kept per connection (subjects repeat; lists are short).
const CACHE_MAX: usize = 256;
/// Open reply permissions past which expired ones are pruned.
const PRUNE_AT: usize = 4096;
/// Most open reply permissions one connection keeps.
const OPEN_MAX: usize = 64 * 1024;

/// Compiled allow/deny lists.
#[derive(Debug, Clone, Default)]
struct Rules {
    /// `None`: everything not denied is allowed.
    allow: Option<Vec<Rule>>,
    deny: Vec<Rule>,
}

/// A subject pattern, and for subscriptions an optional queue-group pattern
/// (`"foo.> workers"`, as nats-server writes queue permissions).
#[derive(Debug, Clone)]
struct Rule {
    subject: Bytes,
    queue: Option<Bytes>,
}

impl Rule {
    fn parse(text: &str) -> Rule {
        let mut parts = text.split_whitespace();
        let subject = parts.next().unwrap_or_default();
        Rule {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            queue: parts.next().map(|q| Bytes::copy_from_slice(q.as_bytes())),
        }
    }

    fn queue_ok(&self, queue: Option<&[u8]>) -> bool {
        match (&self.queue, queue) {
            (None, _) => true,
            (Some(want), Some(q)) => subject::matches(want, q),
            (Some(_), None) => false,
        }
    }
}

impl Rules {
    fn compile(p: &security::SubjectPermission) -> Rules {
        let rules = |list: &[String]| list.iter().map(|s| Rule::parse(s)).collect::<Vec<_>>();
        Rules {
            allow: (!p.allow.is_empty()).then(|| rules(&p.allow)),
            deny: rules(&p.deny),
        }
    }

    fn allows_literal(&self, subject: &[u8]) -> bool {
        let allowed = self
            .allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|r| subject::matches(&r.subject, subject)));
        allowed
            && !self
                .deny
                .iter()
                .any(|r| subject::matches(&r.subject, subject))
    }
}

/// A user's permissions, ready to check.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    publish: Option<Rules>,
    subscribe: Option<Rules>,
    /// `allow_responses`: replies permitted to requests the user received.
    pub responses: Option<ResponsePermission>,
}

impl Permissions {
    /// Compiles configured permissions.
    pub fn new(p: &security::Permissions) -> Permissions {
        let publish = match (&p.publish, p.allow_responses) {
            (Some(rules), _) => Some(Rules::compile(rules)),
            // A responder with no publish rule may publish replies and nothing else, as
            // nats-server reads it: an empty allow list.
            (None, Some(_)) => Some(Rules {
                allow: Some(Vec::new()),
                deny: Vec::new(),
            }),
            (None, None) => None,
        };
        Permissions {
            publish,
            subscribe: p.subscribe.as_ref().map(Rules::compile),
            responses: p.allow_responses,
        }
    }

    /// Whether publishing is restricted at all.
    pub fn restricts_publish(&self) -> bool {
        self.publish.is_some()
    }

    /// Whether the user may publish to `subject` by its lists alone (responses aside).
    pub fn may_publish(&self, subject: &[u8]) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|r| r.allows_literal(subject))
    }

    /// Whether the user may subscribe to `subject` (in `queue`).
    pub fn may_subscribe(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let Some(rules) = &self.subscribe else {
            return true;
        };
        let allowed = rules.allow.as_ref().is_none_or(|a| {
            a.iter()
                .any(|r| subject::is_subset(subject, &r.subject) && r.queue_ok(queue))
        });
        let denied = rules.deny.iter().any(|r| {
            subject::is_subset(subject, &r.subject) && (r.queue.is_none() || r.queue_ok(queue))
        });
        allowed && !denied
    }

    /// Whether deliveries must be filtered: some subscribe-deny pattern may overlap a
    /// wildcard subscription the user was allowed.
    pub fn filters_deliveries(&self) -> bool {
        self.subscribe.as_ref().is_some_and(|r| !r.deny.is_empty())
    }

    /// Whether a message on `subject` may be delivered to this user.
    pub fn may_receive(&self, subject: &[u8]) -> bool {
        self.subscribe.as_ref().is_none_or(|r| {
            !r.deny
                .iter()
                .any(|d| d.queue.is_none() && subject::matches(&d.subject, subject))
        })
    }
}

/// One connection's memory of publish decisions, and of the reply subjects it may answer.
#[derive(Debug, Default)]
pub struct PublishCheck {
    decided: HashMap<Box<[u8]>, bool>,
}

impl PublishCheck {
    /// Whether `perms` let the connection publish to `subject`, from cache when possible.
    pub fn allowed(&mut self, perms: &Permissions, subject: &[u8]) -> bool {
        if let Some(&ok) = self.decided.get(subject) {
            return ok;
        }
        let ok = perms.may_publish(subject);
        if self.decided.len() >= CACHE_MAX {
            self.decided.clear();
        }
        self.decided.insert(subject.into(), ok);
        ok
    }
}

/// Reply subjects a user with `allow_responses` may publish to: one entry per request it
/// received, spent after `max` replies or when it expires.
#[derive(Debug, Default)]
pub struct Responses {
    open: HashMap<Bytes, (usize, Instant)>,
    /// Size at which to prune next; doubles with the live entries so pruning stays
    /// amortized O(1) per request.
    prune_at: usize,
}

impl Responses {
    /// Records a request received with reply subject `reply`.
    pub fn open(&mut self, reply: &[u8], perm: ResponsePermission, now: Instant) {
        if self.open.len() >= self.prune_at.max(PRUNE_AT) {
            self.open.retain(|_, (_, expires)| *expires > now);
            if self.open.len() >= OPEN_MAX {
                // Requests arriving faster than they expire must not grow memory without
                // bound: forget half. A responder that late gets a permissions error.
                let mut n = 0;
                self.open.retain(|_, _| {
                    n += 1;
                    n % 2 == 0
                });
            }
            self.prune_at = self.open.len() * 2;
        }
        let expires = now + nonzero(perm.expires);
        self.open
            .insert(Bytes::copy_from_slice(reply), (perm.max.max(1), expires));
    }

    /// Spends one reply to `reply`; false if there is none to spend.
    pub fn spend(&mut self, reply: &[u8], now: Instant) -> bool {
        let Some((left, expires)) = self.open.get_mut(reply) else {
            return false;
        };
        if *expires <= now {
            self.open.remove(reply);
            return false;
        }
        *left -= 1;
        if *left == 0 {
            self.open.remove(reply);
        }
        true
    }
}

/// nats-server reads a zero expiry as "no expiry"; a very long one stands in for it.
fn nonzero(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::{Permissions as Conf, SubjectPermission};

    fn perm(allow: &[&str], deny: &[&str]) -> Option<SubjectPermission> {
        Some(SubjectPermission {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn publish_allow_and_deny() {
        let p = Permissions::new(&Conf {
            publish: perm(&["foo.>"], &["foo.secret"]),
            ..Conf::default()
        });
        assert!(p.may_publish(b"foo.bar"));
        assert!(!p.may_publish(b"foo.secret"));
        assert!(!p.may_publish(b"bar"));
        let deny_only = Permissions::new(&Conf {
            publish: perm(&[], &["secret.>"]),
            ..Conf::default()
        });
        assert!(deny_only.may_publish(b"anything"));
        assert!(!deny_only.may_publish(b"secret.x"));
    }

    #[test]
    fn subscribe_subsets_and_overlaps() {
        let p = Permissions::new(&Conf {
            subscribe: perm(&["bar.>", "q.* workers"], &["bar.secret.>"]),
            ..Conf::default()
        });
        assert!(p.may_subscribe(b"bar.*", None));
        assert!(p.may_subscribe(b"bar.>", None));
        assert!(!p.may_subscribe(b">", None));
        assert!(!p.may_subscribe(b"bar.secret.x", None));
        assert!(p.may_subscribe(b"q.a", Some(b"workers")));
        assert!(!p.may_subscribe(b"q.a", None));
        assert!(!p.may_subscribe(b"q.a", Some(b"other")));
        // bar.> overlaps the deny: allowed, but those messages are filtered out.
        assert!(p.filters_deliveries());
        assert!(!p.may_receive(b"bar.secret.x"));
        assert!(p.may_receive(b"bar.open"));
    }

    #[test]
    fn responses_are_spent() {
        let mut r = Responses::default();
        let now = Instant::now();
        r.open(b"_INBOX.1", ResponsePermission::default(), now);
        assert!(r.spend(b"_INBOX.1", now));
        assert!(!r.spend(b"_INBOX.1", now));
        let two = ResponsePermission {
            max: 2,
            expires: Duration::from_secs(1),
        };
        r.open(b"_INBOX.2", two, now);
        assert!(r.spend(b"_INBOX.2", now));
        assert!(!r.spend(b"_INBOX.2", now + Duration::from_secs(2)));
    }

    #[test]
    fn responders_without_publish_rules_may_only_reply() {
        let p = Permissions::new(&Conf {
            allow_responses: Some(ResponsePermission::default()),
            ..Conf::default()
        });
        assert!(p.restricts_publish());
        assert!(!p.may_publish(b"anything"));
    }

    #[test]
    fn publish_cache_agrees() {
        let p = Permissions::new(&Conf {
            publish: perm(&["a.*"], &[]),
            ..Conf::default()
        });
        let mut c = PublishCheck::default();
        for _ in 0..2 {
            assert!(c.allowed(&p, b"a.b"));
            assert!(!c.allowed(&p, b"b.b"));
        }
    }
}
