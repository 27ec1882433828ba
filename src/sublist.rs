//! The routing table: a trie of subject tokens holding subscriptions, with `*`/`>` wildcard
//! branches and queue groups, plus a per-publisher cache of match results.
//!
//! Writers (SUB/UNSUB) take the trie's write lock and bump a generation counter. Publishers
//! keep a [`MatchCache`] of their own: a hit costs one atomic load of the generation and a
//! hash lookup, with no shared lock; only a miss takes the trie's read lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::subject::{FWC, PWC, SEP};

/// Subjects a [`MatchCache`] remembers before it starts over; bounds a publisher that
/// cycles through endless distinct subjects.
const CACHE_MAX: usize = 1024;

/// A subject trie of `Arc<T>` subscriptions.
pub struct Sublist<T> {
    root: RwLock<Level<T>>,
    generation: AtomicU64,
    count: AtomicUsize,
}

struct Level<T> {
    literal: HashMap<Box<[u8]>, Node<T>>,
    pwc: Option<Box<Node<T>>>,
    fwc: Option<Box<Node<T>>>,
}

struct Node<T> {
    next: Option<Box<Level<T>>>,
    plain: Vec<Arc<T>>,
    groups: Vec<QueueGroup<T>>,
}

/// The members of one queue group that match a subject; a message goes to one of them.
pub struct QueueGroup<T> {
    /// The queue group's name.
    pub name: Box<[u8]>,
    /// The subscriptions in the group.
    pub members: Vec<Arc<T>>,
}

/// Everything that matches one subject.
pub struct Matches<T> {
    /// Subscriptions outside any queue group: each gets the message.
    pub plain: Vec<Arc<T>>,
    /// Queue groups, merged by name across matching subjects: one member of each gets it.
    pub groups: Vec<QueueGroup<T>>,
}

impl<T> Matches<T> {
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn add_node(&mut self, node: &Node<T>) {
        self.plain.extend(node.plain.iter().cloned());
        for group in &node.groups {
            match self.groups.iter_mut().find(|g| g.name == group.name) {
                Some(g) => g.members.extend(group.members.iter().cloned()),
                None => self.groups.push(QueueGroup {
                    name: group.name.clone(),
                    members: group.members.clone(),
                }),
            }
        }
    }
}

impl<T> Default for Matches<T> {
    fn default() -> Self {
        Matches {
            plain: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            literal: HashMap::new(),
            pwc: None,
            fwc: None,
        }
    }
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            next: None,
            plain: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty() && self.next.is_none()
    }
}

impl<T> Level<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }

    fn child_mut(&mut self, token: &[u8]) -> &mut Node<T> {
        if token == PWC {
            self.pwc.get_or_insert_with(Default::default)
        } else if token == FWC {
            self.fwc.get_or_insert_with(Default::default)
        } else {
            self.literal.entry(token.into()).or_default()
        }
    }

    fn child_get_mut(&mut self, token: &[u8]) -> Option<&mut Node<T>> {
        if token == PWC {
            self.pwc.as_deref_mut()
        } else if token == FWC {
            self.fwc.as_deref_mut()
        } else {
            self.literal.get_mut(token)
        }
    }

    fn prune(&mut self, token: &[u8]) {
        if token == PWC {
            if self.pwc.as_ref().is_some_and(|n| n.is_empty()) {
                self.pwc = None;
            }
        } else if token == FWC {
            if self.fwc.as_ref().is_some_and(|n| n.is_empty()) {
                self.fwc = None;
            }
        } else if self.literal.get(token).is_some_and(Node::is_empty) {
            self.literal.remove(token);
        }
    }

    fn collect(&self, tokens: &[&[u8]], out: &mut Matches<T>) {
        let Some((token, rest)) = tokens.split_first() else {
            return;
        };
        if let Some(fwc) = &self.fwc {
            out.add_node(fwc);
        }
        if let Some(pwc) = &self.pwc {
            Self::descend(pwc, rest, out);
        }
        if let Some(node) = self.literal.get(*token) {
            Self::descend(node, rest, out);
        }
    }

    fn descend(node: &Node<T>, rest: &[&[u8]], out: &mut Matches<T>) {
        if rest.is_empty() {
            out.add_node(node);
        } else if let Some(next) = &node.next {
            next.collect(rest, out);
        }
    }
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: RwLock::new(Level::default()),
            generation: AtomicU64::new(0),
            count: AtomicUsize::new(0),
        }
    }
}

impl<T> Sublist<T> {
    /// An empty routing table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `item` under `subject` (already validated), in `queue` if given.
    pub fn insert(&self, subject: &[u8], queue: Option<&[u8]>, item: Arc<T>) {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let mut tokens = subject.split(|&b| b == SEP).peekable();
        let mut level = &mut *root;
        loop {
            let token = tokens.next().unwrap_or_default();
            let node = level.child_mut(token);
            if tokens.peek().is_none() {
                match queue {
                    None => node.plain.push(item),
                    Some(q) => match node.groups.iter_mut().find(|g| &*g.name == q) {
                        Some(g) => g.members.push(item),
                        None => node.groups.push(QueueGroup {
                            name: q.into(),
                            members: vec![item],
                        }),
                    },
                }
                break;
            }
            level = node.next.get_or_insert_with(Default::default);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes `item` from `subject`/`queue`; false if it was not there.
    pub fn remove(&self, subject: &[u8], queue: Option<&[u8]>, item: &Arc<T>) -> bool {
        let tokens: Vec<&[u8]> = subject.split(|&b| b == SEP).collect();
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let removed = remove_at(&mut root, &tokens, queue, item);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Everything subscribed to a subject matching the literal `subject`, read from the trie.
    pub fn matches(&self, subject: &[u8]) -> Matches<T> {
        let tokens: Vec<&[u8]> = subject.split(|&b| b == SEP).collect();
        let mut out = Matches::default();
        self.root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .collect(&tokens, &mut out);
        out
    }

    /// How many subscriptions the table holds.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Changes on every insert and remove; caches compare it to know they are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

fn remove_at<T>(
    level: &mut Level<T>,
    tokens: &[&[u8]],
    queue: Option<&[u8]>,
    item: &Arc<T>,
) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return false;
    };
    let Some(node) = level.child_get_mut(token) else {
        return false;
    };
    let removed = if rest.is_empty() {
        remove_from_node(node, queue, item)
    } else {
        let Some(next) = node.next.as_deref_mut() else {
            return false;
        };
        let removed = remove_at(next, rest, queue, item);
        if next.is_empty() {
            node.next = None;
        }
        removed
    };
    if removed {
        level.prune(token);
    }
    removed
}

fn remove_from_node<T>(node: &mut Node<T>, queue: Option<&[u8]>, item: &Arc<T>) -> bool {
    let list = match queue {
        None => &mut node.plain,
        Some(q) => match node.groups.iter_mut().find(|g| &*g.name == q) {
            Some(g) => &mut g.members,
            None => return false,
        },
    };
    let Some(pos) = list.iter().position(|s| Arc::ptr_eq(s, item)) else {
        return false;
    };
    list.swap_remove(pos);
    node.groups.retain(|g| !g.members.is_empty());
    true
}

/// One publisher's memory of recent match results, valid while the table's generation holds.
pub struct MatchCache<T> {
    generation: u64,
    entries: HashMap<Box<[u8]>, Arc<Matches<T>>>,
}

impl<T> Default for MatchCache<T> {
    fn default() -> Self {
        MatchCache {
            generation: u64::MAX,
            entries: HashMap::new(),
        }
    }
}

impl<T> MatchCache<T> {
    /// The matches for `subject`, from the cache when the table has not changed since.
    pub fn get(&mut self, list: &Sublist<T>, subject: &[u8]) -> Arc<Matches<T>> {
        let generation = list.generation();
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
        } else if let Some(found) = self.entries.get(subject) {
            return found.clone();
        }
        let found = Arc::new(list.matches(subject));
        if self.entries.len() >= CACHE_MAX {
            self.entries.clear();
        }
        // Keys are copied so the cache never pins a connection's read buffer.
        self.entries.insert(subject.into(), found.clone());
        found
    }

    /// Forgets every cached result (an idle connection returning its memory).
    pub fn clear(&mut self) {
        self.entries = HashMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject;
    use proptest::prelude::*;

    fn ids(m: &Matches<u32>) -> Vec<u32> {
        let mut v: Vec<u32> = m.plain.iter().map(|a| **a).collect();
        v.sort();
        v
    }

    #[test]
    fn literal_and_wildcards() {
        let s = Sublist::new();
        for (i, subj) in [
            "foo.bar",
            "foo.*",
            "foo.>",
            ">",
            "*.bar",
            "foo",
            "foo.bar.baz",
        ]
        .iter()
        .enumerate()
        {
            s.insert(subj.as_bytes(), None, Arc::new(i as u32));
        }
        assert_eq!(ids(&s.matches(b"foo.bar")), vec![0, 1, 2, 3, 4]);
        assert_eq!(ids(&s.matches(b"foo")), vec![3, 5]);
        assert_eq!(ids(&s.matches(b"foo.bar.baz")), vec![2, 3, 6]);
        assert_eq!(ids(&s.matches(b"x.bar")), vec![3, 4]);
        assert_eq!(s.count(), 7);
    }

    #[test]
    fn queue_groups_merge_by_name() {
        let s = Sublist::new();
        s.insert(b"a.b", Some(b"q"), Arc::new(1u32));
        s.insert(b"a.*", Some(b"q"), Arc::new(2u32));
        s.insert(b"a.>", Some(b"r"), Arc::new(3u32));
        let m = s.matches(b"a.b");
        assert!(m.plain.is_empty());
        assert_eq!(m.groups.len(), 2);
        let q = m.groups.iter().find(|g| &*g.name == b"q").unwrap();
        assert_eq!(q.members.len(), 2);
    }

    #[test]
    fn remove_prunes_and_bumps_generation() {
        let s = Sublist::new();
        let a = Arc::new(1u32);
        let b = Arc::new(2u32);
        s.insert(b"a.b.c", None, a.clone());
        s.insert(b"a.b.c", Some(b"q"), b.clone());
        let g = s.generation();
        assert!(!s.remove(b"a.b.c", None, &b), "wrong group");
        assert!(s.remove(b"a.b.c", None, &a));
        assert!(!s.remove(b"a.b.c", None, &a), "already gone");
        assert!(s.remove(b"a.b.c", Some(b"q"), &b));
        assert!(s.generation() > g);
        assert_eq!(s.count(), 0);
        assert!(s.root.read().unwrap().is_empty(), "trie pruned to nothing");
    }

    #[test]
    fn cache_sees_changes() {
        let s = Sublist::new();
        let mut cache = MatchCache::default();
        assert!(cache.get(&s, b"x").is_empty());
        let a = Arc::new(7u32);
        s.insert(b"x", None, a.clone());
        assert_eq!(cache.get(&s, b"x").plain.len(), 1);
        assert!(
            Arc::ptr_eq(&cache.get(&s, b"x"), &cache.get(&s, b"x")),
            "hit"
        );
        s.remove(b"x", None, &a);
        assert!(cache.get(&s, b"x").is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just(">")].prop_map(String::from)
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    fn literal() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..5)
            .prop_map(|t| t.join("."))
    }

    proptest! {
        /// The trie agrees with a direct token-by-token matcher, through inserts and removes.
        #[test]
        fn agrees_with_naive_matcher(
            patterns in prop::collection::vec((pattern(), prop::option::of(Just("q"))), 0..40),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            subjects in prop::collection::vec(literal(), 1..20),
        ) {
            let s = Sublist::new();
            let mut live: Vec<(String, Option<&str>, Arc<u32>)> = Vec::new();
            for (i, (p, q)) in patterns.iter().enumerate() {
                if !subject::is_valid_subscription(p.as_bytes()) {
                    continue;
                }
                let item = Arc::new(i as u32);
                s.insert(p.as_bytes(), q.map(str::as_bytes), item.clone());
                live.push((p.clone(), *q, item));
            }
            for r in removals {
                if live.is_empty() {
                    break;
                }
                let (p, q, item) = live.swap_remove(r.index(live.len()));
                prop_assert!(s.remove(p.as_bytes(), q.map(str::as_bytes), &item));
            }
            prop_assert_eq!(s.count(), live.len());
            for subj in &subjects {
                let m = s.matches(subj.as_bytes());
                let mut got: Vec<u32> = m.plain.iter().map(|a| **a).collect();
                got.extend(m.groups.iter().flat_map(|g| g.members.iter().map(|a| **a)));
                got.sort();
                let mut want: Vec<u32> = live
                    .iter()
                    .filter(|(p, _, _)| subject::matches(p.as_bytes(), subj.as_bytes()))
                    .map(|(_, _, i)| **i)
                    .collect();
                want.sort();
                prop_assert_eq!(got, want, "subject {}", subj);
            }
        }
    }
}
