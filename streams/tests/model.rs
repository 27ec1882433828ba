//! Property test: random appends (single and in concurrent batches), deletes (single and runs
//! dense enough to trigger compaction), purges of every kind, clean restarts, disk-full appends
//! and simulated power cuts against an in-memory model.
//!
//! Power cuts come two ways: a crash while appends are in flight (racing the writer thread), and
//! a cut after a random number of file-system mutations inside one operation (any step of a
//! group commit, tombstone write, segment removal, sequence-floor write or compaction). After
//! every crash: each acknowledged message is present and intact, each acknowledged removal is
//! durable, unacknowledged changes are all-or-nothing per message, nothing else appears,
//! recovery reports no corruption, and no acknowledged sequence is handed out again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use natter_streams::fs::SimFs;
use natter_streams::{
    Append, FileStore, FileStoreConfig, MemoryStore, Pending, PurgeRequest, Result, StoreState,
    StoredMsg,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    /// Appends submitted together (one group commit, or a few).
    Append {
        n: u8,
        subj: u8,
        len: u16,
    },
    /// Deletes of `n` consecutive stored messages, submitted together.
    Delete {
        pick: u16,
        n: u8,
    },
    PurgeAll,
    PurgeUpTo {
        pick: u16,
        past_end: bool,
    },
    PurgeFilter {
        subj: u8,
        wildcard: bool,
        keep: Option<u8>,
    },
    PurgeKeep {
        keep: u8,
    },
    Restart,
    /// Power cut with this many appends in flight.
    Crash {
        inflight: u8,
    },
    /// Power cut after `after` file-system mutations of `op` (or after it, if it needs fewer).
    CutPower {
        after: u8,
        op: Box<Action>,
    },
    /// An append with only `room` bytes of disk left; it may fail with `StorageFull`.
    DiskFull {
        room: u16,
        len: u16,
    },
}

fn payload_len() -> impl Strategy<Value = u16> {
    // Mostly small records, some large enough that a few deletes make a sealed segment mostly
    // garbage (compaction needs >= 4 KiB and >= half of the segment).
    prop_oneof![6 => 0u16..300, 1 => 1000u16..2500]
}

fn mutation() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (1u8..4, 0u8..4, payload_len()).prop_map(|(n, subj, len)| Action::Append { n, subj, len }),
        4 => (any::<u16>(), 1u8..8).prop_map(|(pick, n)| Action::Delete { pick, n }),
        1 => Just(Action::PurgeAll),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(pick, past_end)| Action::PurgeUpTo { pick, past_end }),
        1 => (0u8..4, any::<bool>(), proptest::option::of(0u8..4))
            .prop_map(|(subj, wildcard, keep)| Action::PurgeFilter { subj, wildcard, keep }),
        1 => (0u8..6).prop_map(|keep| Action::PurgeKeep { keep }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        20 => mutation(),
        1 => Just(Action::Restart),
        2 => (0u8..5).prop_map(|inflight| Action::Crash { inflight }),
        3 => (0u8..16, mutation()).prop_map(|(after, op)| Action::CutPower { after, op: Box::new(op) }),
        1 => (0u16..600, 0u16..400).prop_map(|(room, len)| Action::DiskFull { room, len }),
    ]
}

fn subject(i: u8) -> String {
    format!("m.{}.x", i % 4)
}

fn payload(seq: u64, len: u16) -> Bytes {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect::<Vec<u8>>()
        .into()
}

/// One mutation made concrete against the model's current state.
#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u64, String, Bytes)>),
    Delete(Vec<u64>),
    Purge(PurgeRequest),
}

#[derive(Default, Clone)]
struct Model {
    msgs: BTreeMap<u64, (String, Bytes)>,
    /// What `next_seq()` must say while the store stays open.
    next_seq: u64,
    /// The least `next_seq()` may be after a restart: past every acknowledged sequence and
    /// every acknowledged purge floor.
    durable_next: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            next_seq: 1,
            durable_next: 1,
            ..Default::default()
        }
    }

    fn pick_seq(&self, pick: u16) -> u64 {
        if self.msgs.is_empty() || pick % 5 == 0 {
            return 1 + pick as u64 % (self.next_seq + 1);
        }
        *self
            .msgs
            .keys()
            .nth(pick as usize % self.msgs.len())
            .expect("key")
    }

    fn concrete(&self, a: &Action) -> Op {
        match *a {
            Action::Append { n, subj, len } => Op::Append(
                (0..n as u64)
                    .map(|i| {
                        let seq = self.next_seq + i;
                        let s = subject(subj.wrapping_add(i as u8));
                        (seq, s, payload(seq, len.wrapping_add(i as u16 * 7)))
                    })
                    .collect(),
            ),
            Action::Delete { pick, n } => {
                let first = self.pick_seq(pick);
                let mut seqs: Vec<u64> = self
                    .msgs
                    .range(first..)
                    .map(|(&q, _)| q)
                    .take(n as usize)
                    .collect();
                if seqs.is_empty() {
                    seqs.push(first); // not stored: a no-op delete
                }
                Op::Delete(seqs)
            }
            Action::PurgeAll => Op::Purge(PurgeRequest::default()),
            Action::PurgeUpTo { pick, past_end } => Op::Purge(PurgeRequest {
                up_to_seq: Some(if past_end {
                    self.next_seq + pick as u64 % 50
                } else {
                    self.pick_seq(pick)
                }),
                ..Default::default()
            }),
            Action::PurgeFilter {
                subj,
                wildcard,
                keep,
            } => Op::Purge(PurgeRequest {
                filter: Some(if wildcard {
                    format!("m.{}.*", subj % 4)
                } else {
                    subject(subj)
                }),
                keep: keep.map(u64::from),
                ..Default::default()
            }),
            Action::PurgeKeep { keep } => Op::Purge(PurgeRequest {
                keep: Some(keep as u64),
                ..Default::default()
            }),
            _ => unreachable!("not a mutation: {a:?}"),
        }
    }

    /// Applies `op` as if acknowledged; returns per-item results (append: sequence, delete:
    /// 1 if it existed, purge: how many removed).
    fn apply(&mut self, op: &Op) -> Vec<u64> {
        match op {
            Op::Append(items) => items
                .iter()
                .map(|(seq, s, d)| {
                    self.msgs.insert(*seq, (s.clone(), d.clone()));
                    self.next_seq = seq + 1;
                    self.durable_next = seq + 1;
                    *seq
                })
                .collect(),
            Op::Delete(seqs) => seqs
                .iter()
                .map(|q| self.msgs.remove(q).is_some() as u64)
                .collect(),
            Op::Purge(req) => {
                let before = req.up_to_seq.unwrap_or(u64::MAX);
                let matching: Vec<u64> = self
                    .msgs
                    .range(..before)
                    .filter(|(_, (s, _))| {
                        req.filter
                            .as_deref()
                            .is_none_or(|f| natter_streams::subject::matches(f, s))
                    })
                    .map(|(&q, _)| q)
                    .collect();
                let n = match req.keep {
                    Some(k) => matching.len().saturating_sub(k as usize),
                    None => matching.len(),
                };
                for q in &matching[..n] {
                    self.msgs.remove(q);
                }
                if let (None, Some(up)) = (&req.filter, req.up_to_seq) {
                    self.next_seq = self.next_seq.max(up);
                    self.durable_next = self.durable_next.max(up);
                }
                vec![n as u64]
            }
        }
    }
}

/// The file and memory stores through one interface.
trait Store {
    fn append(&self, subject: &str, payload: Bytes) -> Append;
    fn delete(&self, seq: u64) -> Pending<bool>;
    fn purge(&self, req: PurgeRequest) -> Pending<u64>;
    fn get(&self, seq: u64) -> Result<Option<StoredMsg>>;
    fn state(&self) -> StoreState;
    fn next_seq(&self) -> u64;
    fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>>;
}

macro_rules! store_impl {
    ($t:ty) => {
        impl Store for $t {
            fn append(&self, subject: &str, payload: Bytes) -> Append {
                <$t>::append(self, subject, Bytes::new(), payload, 0)
            }
            fn delete(&self, seq: u64) -> Pending<bool> {
                <$t>::delete(self, seq)
            }
            fn purge(&self, req: PurgeRequest) -> Pending<u64> {
                <$t>::purge(self, req)
            }
            fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
                <$t>::get(self, seq)
            }
            fn state(&self) -> StoreState {
                <$t>::state(self)
            }
            fn next_seq(&self) -> u64 {
                <$t>::next_seq(self)
            }
            fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>> {
                <$t>::last_for_subject(self, subject)
            }
        }
    };
}
store_impl!(FileStore);
store_impl!(MemoryStore);

/// Submits every item of `op` at once, then waits for each: per-item results.
fn submit(store: &dyn Store, op: &Op) -> Vec<Result<u64>> {
    match op {
        Op::Append(items) => {
            let pending: Vec<_> = items
                .iter()
                .map(|(seq, s, d)| {
                    let a = store.append(s, d.clone());
                    assert_eq!(a.seq(), *seq, "sequences are assigned in call order");
                    a
                })
                .collect();
            pending.into_iter().map(Append::wait).collect()
        }
        Op::Delete(seqs) => {
            let pending: Vec<_> = seqs.iter().map(|&q| store.delete(q)).collect();
            pending
                .into_iter()
                .map(|p| p.wait().map(u64::from))
                .collect()
        }
        Op::Purge(req) => vec![store.purge(req.clone()).wait()],
    }
}

fn check_msg(m: &StoredMsg, subj: &str, data: &Bytes) {
    assert_eq!(
        (m.subject.as_str(), &m.payload),
        (subj, data),
        "message {} differs",
        m.seq
    );
}

/// Compares every message, the counters and the per-subject lookups.
fn full_check(store: &dyn Store, model: &Model) {
    let st = store.state();
    assert_eq!(st.msgs, model.msgs.len() as u64);
    let first = model.msgs.keys().next().copied().unwrap_or(st.last_seq + 1);
    assert_eq!(st.first_seq, first);
    assert_eq!(store.next_seq(), model.next_seq);
    assert!(st.last_seq < model.next_seq);
    if let Some((&last, _)) = model.msgs.iter().next_back() {
        assert!(st.last_seq >= last);
    }
    for seq in 1..model.next_seq + 2 {
        match (store.get(seq).expect("read"), model.msgs.get(&seq)) {
            (Some(m), Some((s, d))) => check_msg(&m, s, d),
            (None, None) => {}
            (g, e) => panic!(
                "seq {seq}: store has {:?}, model has {:?}",
                g.map(|m| m.seq),
                e.map(|e| &e.0)
            ),
        }
    }
    for i in 0..4u8 {
        let want = model
            .msgs
            .iter()
            .rev()
            .find(|(_, (s, _))| *s == subject(i))
            .map(|(q, _)| *q);
        let got = store.last_for_subject(&subject(i)).unwrap().map(|m| m.seq);
        assert_eq!(got, want, "last for {}", subject(i));
    }
}

fn cfg() -> FileStoreConfig {
    FileStoreConfig {
        block_size: 8192,
        ..Default::default()
    }
}

fn open(fs: &SimFs) -> FileStore {
    let (s, rep) =
        FileStore::open_with(Arc::new(fs.clone()), Path::new("/st"), cfg()).expect("open");
    assert!(rep.corrupt.is_empty(), "{rep:?}");
    s
}

/// After a power cut and reopen: every message the store holds must be one the model allows,
/// every acknowledged one must be there; the model becomes what survived.
fn reconcile(
    store: &FileStore,
    before: &Model,
    after: &Model,
    acked_adds: &BTreeSet<u64>,
    acked_removes: &BTreeSet<u64>,
    all_acked: bool,
) -> Model {
    let top = before.next_seq.max(after.next_seq) + 2;
    let mut msgs = BTreeMap::new();
    for seq in 1..top {
        let got = store.get(seq).expect("read");
        let (b, a) = (before.msgs.get(&seq), after.msgs.get(&seq));
        let must = match (b, a) {
            (Some(_), Some(_)) => Some(true),
            (None, None) => Some(false),
            (None, Some(_)) => (all_acked || acked_adds.contains(&seq)).then_some(true),
            (Some(_), None) => (all_acked || acked_removes.contains(&seq)).then_some(false),
        };
        match (&got, must) {
            (Some(_), Some(false)) => panic!("seq {seq}: present but must not be"),
            (None, Some(true)) => panic!("seq {seq}: acknowledged but lost"),
            _ => {}
        }
        if let Some(m) = got {
            let (s, d) = a.or(b).expect("allowed");
            check_msg(&m, s, d);
            msgs.insert(seq, (s.clone(), d.clone()));
        }
    }
    let durable_next = if all_acked {
        after.durable_next
    } else {
        before
            .durable_next
            .max(acked_adds.last().map_or(0, |q| q + 1))
    };
    let next = store.next_seq();
    assert!(
        next >= durable_next,
        "sequence went backwards: next {next} < {durable_next}"
    );
    if let Some((&last, _)) = msgs.iter().next_back() {
        assert!(next > last);
    }
    Model {
        msgs,
        next_seq: next,
        durable_next: next,
    }
}

fn run(actions: Vec<Action>, file: bool) {
    let mut fs = SimFs::new();
    let mem = MemoryStore::default();
    let mut fstore = file.then(|| open(&fs));
    let mut model = Model::new();
    for a in actions {
        let store: &dyn Store = match &fstore {
            Some(s) => s,
            None => &mem,
        };
        match &a {
            Action::Restart
            | Action::Crash { .. }
            | Action::CutPower { .. }
            | Action::DiskFull { .. }
                if !file =>
            {
                if let Action::CutPower { op, .. } = &a {
                    let op = model.concrete(op);
                    let want = model.apply(&op);
                    let got: Vec<u64> =
                        submit(store, &op).into_iter().map(|r| r.unwrap()).collect();
                    assert_eq!(got, want, "{op:?}");
                }
            }
            Action::Restart => {
                let s = fstore.take().expect("file store");
                s.close().unwrap();
                drop(s);
                let s = open(&fs);
                assert!(s.next_seq() >= model.durable_next);
                model.next_seq = s.next_seq();
                model.durable_next = model.next_seq;
                fstore = Some(s);
            }
            Action::Crash { inflight } => {
                let s = fstore.take().expect("file store");
                let before = model.clone();
                let op = model.concrete(&Action::Append {
                    n: *inflight,
                    subj: 0,
                    len: 100,
                });
                let mut after = model.clone();
                after.apply(&op);
                let Op::Append(items) = &op else {
                    unreachable!()
                };
                let pending: Vec<_> = items
                    .iter()
                    .map(|(_, subj, d)| Store::append(&s, subj, d.clone()))
                    .collect();
                fs = fs.crash();
                let acked: BTreeSet<u64> =
                    pending.into_iter().filter_map(|p| p.wait().ok()).collect();
                drop(s);
                let s = open(&fs);
                model = reconcile(&s, &before, &after, &acked, &BTreeSet::new(), false);
                fstore = Some(s);
            }
            Action::CutPower { after: n, op } => {
                let s = fstore.take().expect("file store");
                let op = model.concrete(op);
                let before = model.clone();
                let mut after = model.clone();
                let want = after.apply(&op);
                fs.cut_power_after(*n as u64);
                let got = submit(&s, &op);
                let mut acked_adds = BTreeSet::new();
                let mut acked_removes = BTreeSet::new();
                for (i, r) in got.iter().enumerate() {
                    let Ok(v) = r else { continue };
                    assert_eq!(*v, want[i], "{op:?}");
                    match &op {
                        Op::Append(items) => {
                            acked_adds.insert(items[i].0);
                        }
                        Op::Delete(seqs) => {
                            acked_removes.insert(seqs[i]);
                        }
                        Op::Purge(_) => {}
                    }
                }
                let all_acked = got.iter().all(Result::is_ok);
                if !fs.power_is_cut() {
                    assert!(all_acked, "{op:?}: {got:?}");
                }
                fs = fs.crash();
                drop(s);
                let s = open(&fs);
                model = reconcile(&s, &before, &after, &acked_adds, &acked_removes, all_acked);
                fstore = Some(s);
            }
            Action::DiskFull { room, len } => {
                let s = fstore.as_ref().expect("file store");
                fs.set_capacity(Some(fs.used_bytes() + *room as u64));
                let seq = model.next_seq;
                let data = payload(seq, *len);
                let r = Store::append(s, &subject(1), data.clone()).wait();
                fs.set_capacity(None);
                match r {
                    Ok(q) => {
                        assert_eq!(q, seq);
                        model.apply(&Op::Append(vec![(seq, subject(1), data)]));
                    }
                    Err(natter_streams::Error::StorageFull) => {
                        // Not acknowledged; its sequence is not reused while the store is open.
                        model.next_seq += 1;
                    }
                    Err(e) => panic!("disk full gave {e:?}"),
                }
            }
            mutation => {
                let op = model.concrete(mutation);
                let want = model.apply(&op);
                let got: Vec<u64> = submit(store, &op).into_iter().map(|r| r.unwrap()).collect();
                assert_eq!(got, want, "{op:?}");
            }
        }
        let store: &dyn Store = match &fstore {
            Some(s) => s,
            None => &mem,
        };
        full_check(store, &model);
    }
    if let Some(s) = fstore {
        s.close().unwrap();
        drop(s);
        let s = open(&fs);
        assert!(s.next_seq() >= model.durable_next);
        model.next_seq = s.next_seq();
        full_check(&s, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn file_store_agrees_with_model_across_crashes(actions in proptest::collection::vec(action(), 1..80)) {
        run(actions, true);
    }

    #[test]
    fn memory_store_agrees_with_model(actions in proptest::collection::vec(action(), 1..80)) {
        run(actions, false);
    }
}
