//! The routing table: a trie of subject tokens holding subscriptions, with `*`/`>` wildcard
//! branches and queue groups, plus caches of match results.
//!
//! Match results are shared, immutable [`Cached`] values. The table keeps one per recently
//! matched subject and marks it stale when a SUB/UNSUB could change it, so unrelated changes
//! leave it alone. Each publisher keeps a [`MatchCache`] of its own pointing at them: a hit
//! costs a hash lookup and one atomic load, with no lock shared with other publishers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::subject::{self, FWC, PWC, SEP};

/// Subjects the table's shared cache remembers (nats-server's size too): a wildcard SUB/UNSUB
/// scans them all under the write lock, so bigger is not better.
const SHARED_CACHE_MAX: usize = 1024;
/// Hash maps keyed by subject: foldhash is several times faster than SipHash on short keys,
/// and its per-process random seed keeps some resistance to crafted collisions.
type SubjectMap<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// Subjects one publisher's cache remembers before it starts over; bounds a publisher that
/// cycles through endless distinct subjects.
const CACHE_MAX: usize = 1024;

/// Subjects each published to once, as a rule: every JetStream ack has its own, and so has
/// every reply to a request (clients make a reply subject per request under `_INBOX.`).
/// Caching their results would only evict useful entries, so they are matched afresh and not
/// remembered.
fn used_once(subject: &[u8]) -> bool {
    subject.starts_with(b"$JS.ACK.") || subject.starts_with(b"_INBOX.")
}

/// A subject trie of `Arc<T>` subscriptions.
pub struct Sublist<T> {
    root: RwLock<Level<T>>,
    /// Lock order: `root` before `cache`, always.
    cache: Mutex<SubjectMap<Arc<Cached<T>>>>,
    count: AtomicUsize,
    inserts: AtomicU64,
    removes: AtomicU64,
    lookups: AtomicU64,
    hits: AtomicU64,
}

/// Counters for `/subsz`. Lookups are those that reached the table: publishers' own caches
/// answer most repeats before that, and are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SublistStats {
    /// Subscriptions in the table.
    pub count: usize,
    /// Subjects in the shared cache.
    pub cache_entries: usize,
    /// Subscriptions ever added.
    pub inserts: u64,
    /// Subscriptions ever removed.
    pub removes: u64,
    /// Lookups that reached the table.
    pub matches: u64,
    /// Of those, answered from the shared cache.
    pub cache_hits: u64,
    /// Most subscribers (plain plus one per queue group) behind one cached subject.
    pub max_fanout: usize,
    /// Average of the same over the cached subjects.
    pub avg_fanout: f64,
}

impl SublistStats {
    /// Adds another table's counters (the averages weighted by cache entries).
    pub fn add(&mut self, other: &SublistStats) {
        let entries = self.cache_entries + other.cache_entries;
        if entries > 0 {
            self.avg_fanout = (self.avg_fanout * self.cache_entries as f64
                + other.avg_fanout * other.cache_entries as f64)
                / entries as f64;
        }
        self.count += other.count;
        self.cache_entries = entries;
        self.inserts += other.inserts;
        self.removes += other.removes;
        self.matches += other.matches;
        self.cache_hits += other.cache_hits;
        self.max_fanout = self.max_fanout.max(other.max_fanout);
    }
}

/// A match result shared by every cache that looked the subject up, until a SUB/UNSUB that
/// could change it marks it stale.
pub struct Cached<T> {
    /// What matched when the result was computed.
    pub matches: Matches<T>,
    valid: AtomicBool,
}

impl<T> Cached<T> {
    /// Whether no SUB/UNSUB has changed this result since it was computed.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    fn invalidate(&self) {
        self.valid.store(false, Ordering::Release);
    }
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
            cache: Mutex::new(SubjectMap::default()),
            count: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            removes: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
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
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.invalidate(subject);
    }

    /// Removes `item` from `subject`/`queue`; false if it was not there.
    pub fn remove(&self, subject: &[u8], queue: Option<&[u8]>, item: &Arc<T>) -> bool {
        let tokens: Vec<&[u8]> = subject.split(|&b| b == SEP).collect();
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let removed = remove_at(&mut root, &tokens, queue, item);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.removes.fetch_add(1, Ordering::Relaxed);
            self.invalidate(subject);
        }
        removed
    }

    /// Everything subscribed to a subject matching the literal `subject`, read from the trie.
    pub fn matches(&self, subject: &[u8]) -> Matches<T> {
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        collect(&root, subject)
    }

    /// The shared, cached result for `subject`, computed and cached if missing or stale.
    pub fn lookup(&self, subject: &[u8]) -> Arc<Cached<T>> {
        if used_once(subject) {
            return self.lookup_once(subject);
        }
        // The read lock is held until the result is cached, so a SUB/UNSUB (which needs the
        // write lock) cannot slip between computing it and caching it unseen.
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(found) = cache.get(subject).filter(|c| c.is_valid()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found.clone();
        }
        let found = Arc::new(Cached {
            matches: collect(&root, subject),
            valid: AtomicBool::new(true),
        });
        if cache.len() >= SHARED_CACHE_MAX {
            // Evict a quarter (the map's order is as good as random), not everything, so busy
            // subjects rarely all miss at once. Evicted results must go stale too: publishers'
            // caches still point at them.
            let mut evict = SHARED_CACHE_MAX / 4;
            cache.retain(|_, c| {
                if evict == 0 {
                    return true;
                }
                evict -= 1;
                c.invalidate();
                false
            });
        }
        cache.insert(subject.into(), found.clone());
        found
    }

    /// [`Sublist::lookup`] for a subject not worth caching: the result is already stale
    /// (no cache may reuse it).
    fn lookup_once(&self, subject: &[u8]) -> Arc<Cached<T>> {
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Arc::new(Cached {
            matches: collect(&root, subject),
            valid: AtomicBool::new(false),
        })
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> SublistStats {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fanouts: Vec<usize> = cache
            .values()
            .map(|c| c.matches.plain.len() + c.matches.groups.len())
            .collect();
        SublistStats {
            count: self.count(),
            cache_entries: cache.len(),
            inserts: self.inserts.load(Ordering::Relaxed),
            removes: self.removes.load(Ordering::Relaxed),
            matches: self.lookups.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
            max_fanout: fanouts.iter().copied().max().unwrap_or(0),
            avg_fanout: if fanouts.is_empty() {
                0.0
            } else {
                fanouts.iter().sum::<usize>() as f64 / fanouts.len() as f64
            },
        }
    }

    /// How many subscriptions the table holds.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Marks stale every cached result a subscription on `pattern` could change. Called with
    /// the trie's write lock held.
    fn invalidate(&self, pattern: &[u8]) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !subject::has_wildcard(pattern) {
            if let Some(c) = cache.remove(pattern) {
                c.invalidate();
            }
            return;
        }
        cache.retain(|subject, c| {
            let hit = subject::matches(pattern, subject);
            if hit {
                c.invalidate();
            }
            !hit
        });
    }
}

fn collect<T>(root: &Level<T>, subject: &[u8]) -> Matches<T> {
    let tokens: Vec<&[u8]> = subject.split(|&b| b == SEP).collect();
    let mut out = Matches::default();
    root.collect(&tokens, &mut out);
    out
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

/// One publisher's memory of recent match results: pointers to the table's shared results,
/// each checked for staleness on use.
pub struct MatchCache<T> {
    entries: SubjectMap<Arc<Cached<T>>>,
    /// The last subject looked up and its result: a publisher repeating a subject (the common
    /// case) pays a memcmp, not a hash.
    last_subject: Vec<u8>,
    last: Option<Arc<Cached<T>>>,
}

impl<T> Default for MatchCache<T> {
    fn default() -> Self {
        MatchCache {
            entries: SubjectMap::default(),
            last_subject: Vec::new(),
            last: None,
        }
    }
}

impl<T> MatchCache<T> {
    /// The matches for `subject`: from this cache while still valid, else from the table.
    pub fn get(&mut self, list: &Sublist<T>, subject: &[u8]) -> &Matches<T> {
        let repeat =
            self.last_subject == subject && self.last.as_ref().is_some_and(|c| c.is_valid());
        if !repeat && used_once(subject) {
            self.last_subject.clear();
            return &self.last.insert(list.lookup_once(subject)).matches;
        }
        if !repeat {
            let found = match self.entries.get(subject) {
                Some(c) if c.is_valid() => c.clone(),
                _ => {
                    if self.entries.len() >= CACHE_MAX {
                        self.entries.clear();
                    }
                    let c = list.lookup(subject);
                    // Keys are copied so the cache never pins a connection's read buffer.
                    self.entries.insert(subject.into(), c.clone());
                    c
                }
            };
            self.last_subject.clear();
            self.last_subject.extend_from_slice(subject);
            self.last = Some(found);
        }
        &self.last.as_ref().expect("set above").matches
    }

    /// Drops stale results, which may be all that keeps closed connections in memory.
    pub fn prune(&mut self) {
        self.entries.retain(|_, c| c.is_valid());
        if self.last.as_ref().is_some_and(|c| !c.is_valid()) {
            self.last = None;
            self.last_subject = Vec::new();
        }
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
    fn remove_prunes_empty_branches() {
        let s = Sublist::new();
        let a = Arc::new(1u32);
        let b = Arc::new(2u32);
        s.insert(b"a.b.c", None, a.clone());
        s.insert(b"a.b.c", Some(b"q"), b.clone());
        assert!(!s.remove(b"a.b.c", None, &b), "wrong group");
        assert!(s.remove(b"a.b.c", None, &a));
        assert!(!s.remove(b"a.b.c", None, &a), "already gone");
        assert!(s.remove(b"a.b.c", Some(b"q"), &b));
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
        s.remove(b"x", None, &a);
        assert!(cache.get(&s, b"x").is_empty());
        s.insert(b"*", None, a.clone());
        assert_eq!(cache.get(&s, b"x").plain.len(), 1, "wildcard invalidates");
    }

    #[test]
    fn stats_count_what_happened() {
        let s = Sublist::new();
        let a = Arc::new(1u32);
        s.insert(b"a", None, a.clone());
        s.insert(b"*", Some(b"q"), Arc::new(2));
        s.lookup(b"a");
        s.lookup(b"a");
        s.remove(b"a", None, &a);
        let st = s.stats();
        assert_eq!((st.count, st.inserts, st.removes), (1, 2, 1));
        assert_eq!((st.matches, st.cache_hits), (2, 1));
        assert_eq!(
            st.cache_entries, 0,
            "the remove made the cached result stale"
        );
        s.lookup(b"b");
        assert_eq!((s.stats().max_fanout, s.stats().avg_fanout), (1, 1.0));
    }

    #[test]
    fn unrelated_changes_keep_cached_results() {
        let s = Sublist::new();
        let a = Arc::new(1u32);
        s.insert(b"a.b", None, a.clone());
        let first = s.lookup(b"a.b");
        s.insert(b"c.d", None, Arc::new(2));
        s.insert(b"a.*.c", None, Arc::new(3));
        assert!(first.is_valid(), "unrelated SUBs leave the result alone");
        assert!(Arc::ptr_eq(&first, &s.lookup(b"a.b")), "and it is shared");
        s.insert(b"a.>", None, Arc::new(4));
        assert!(!first.is_valid(), "a SUB that matches makes it stale");
        assert_eq!(s.lookup(b"a.b").matches.plain.len(), 2);
    }

    #[test]
    fn shared_cache_eviction_marks_results_stale() {
        let s: Sublist<u32> = Sublist::new();
        let results: Vec<_> = (0..=SHARED_CACHE_MAX)
            .map(|i| s.lookup(format!("s.{i}").as_bytes()))
            .collect();
        let cache = s.cache.lock().unwrap();
        assert!(cache.len() < SHARED_CACHE_MAX, "part was evicted");
        assert!(cache.len() > SHARED_CACHE_MAX / 2, "only part was evicted");
        for (i, r) in results.iter().enumerate() {
            let kept = cache
                .get(format!("s.{i}").as_bytes())
                .is_some_and(|c| Arc::ptr_eq(c, r));
            // An evicted result can no longer be invalidated by SUB/UNSUB, so it must be stale.
            assert_eq!(r.is_valid(), kept, "s.{i}");
        }
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

    #[derive(Debug, Clone)]
    enum Step {
        Sub(String),
        Unsub(prop::sample::Index),
        Publish(String),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            pattern().prop_map(Step::Sub),
            any::<prop::sample::Index>().prop_map(Step::Unsub),
            literal().prop_map(Step::Publish),
            literal().prop_map(Step::Publish),
        ]
    }

    proptest! {
        /// Two publishers' caches, interleaved with SUB/UNSUB, always agree with the trie.
        #[test]
        fn caches_never_serve_stale_results(steps in prop::collection::vec(step(), 1..80)) {
            let s = Sublist::new();
            let mut caches = [MatchCache::default(), MatchCache::default()];
            let mut live: Vec<(String, Arc<u32>)> = Vec::new();
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Sub(p) if subject::is_valid_subscription(p.as_bytes()) => {
                        let item = Arc::new(i as u32);
                        s.insert(p.as_bytes(), None, item.clone());
                        live.push((p, item));
                    }
                    Step::Sub(_) => {}
                    Step::Unsub(ix) if !live.is_empty() => {
                        let (p, item) = live.swap_remove(ix.index(live.len()));
                        prop_assert!(s.remove(p.as_bytes(), None, &item));
                    }
                    Step::Unsub(_) => {}
                    Step::Publish(subj) => {
                        let mut want: Vec<u32> = live
                            .iter()
                            .filter(|(p, _)| subject::matches(p.as_bytes(), subj.as_bytes()))
                            .map(|(_, i)| **i)
                            .collect();
                        want.sort();
                        let cache = &mut caches[i % 2];
                        let got = ids(cache.get(&s, subj.as_bytes()));
                        prop_assert_eq!(got, want, "subject {}", subj);
                    }
                }
            }
        }
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
