//! Property test: random appends, deletes, purges, clean restarts and simulated power cuts
//! (with appends in flight) against an in-memory model. After every crash each acknowledged
//! message is present, intact and in order, and sequences never go backwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use natter_streams::fs::SimFs;
use natter_streams::{FileStore, FileStoreConfig, MemoryStore, PurgeRequest, Result, StoredMsg};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Append {
        subj: u8,
        len: u16,
    },
    Delete {
        pick: u16,
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
    Crash {
        inflight: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (0u8..4, 0u16..400).prop_map(|(subj, len)| Action::Append { subj, len }),
        3 => any::<u16>().prop_map(|pick| Action::Delete { pick }),
        1 => Just(Action::PurgeAll),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(pick, past_end)| Action::PurgeUpTo { pick, past_end }),
        1 => (0u8..4, any::<bool>(), proptest::option::of(0u8..4))
            .prop_map(|(subj, wildcard, keep)| Action::PurgeFilter { subj, wildcard, keep }),
        1 => (0u8..6).prop_map(|keep| Action::PurgeKeep { keep }),
        1 => Just(Action::Restart),
        2 => (0u8..5).prop_map(|inflight| Action::Crash { inflight }),
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

#[derive(Default)]
struct Model {
    msgs: BTreeMap<u64, (String, Bytes)>,
    next_seq: u64,
}

impl Model {
    fn purge(&mut self, filter: Option<&str>, before: u64, keep: Option<u64>) -> u64 {
        let matching: Vec<u64> = self
            .msgs
            .range(..before)
            .filter(|(_, (s, _))| filter.is_none_or(|f| natter_streams::subject::matches(f, s)))
            .map(|(&q, _)| q)
            .collect();
        let n = match keep {
            Some(k) => matching.len().saturating_sub(k as usize),
            None => matching.len(),
        };
        for q in &matching[..n] {
            self.msgs.remove(q);
        }
        n as u64
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

/// Compares every message and the counters.
fn full_check(
    get: impl Fn(u64) -> Result<Option<StoredMsg>>,
    st: natter_streams::StoreState,
    model: &Model,
) {
    assert_eq!(st.msgs, model.msgs.len() as u64);
    let first = model.msgs.keys().next().copied().unwrap_or(model.next_seq);
    assert_eq!(st.first_seq, first);
    assert_eq!(st.last_seq + 1, model.next_seq);
    for seq in 1..model.next_seq + 2 {
        let got = get(seq).expect("read");
        match (got, model.msgs.get(&seq)) {
            (Some(m), Some((s, d))) => check_msg(&m, s, d),
            (None, None) => {}
            (g, e) => panic!(
                "seq {seq}: store has {:?}, model has {:?}",
                g.map(|m| m.seq),
                e.map(|e| &e.0)
            ),
        }
    }
}

fn cfg() -> FileStoreConfig {
    FileStoreConfig {
        block_size: 2048,
        ..Default::default()
    }
}

fn open(fs: &SimFs) -> FileStore {
    let (s, rep) =
        FileStore::open_with(Arc::new(fs.clone()), Path::new("/st"), cfg()).expect("open");
    assert!(rep.corrupt.is_empty(), "{rep:?}");
    s
}

fn run_file(actions: Vec<Action>) {
    let mut fs = SimFs::new();
    let mut store = open(&fs);
    let mut model = Model {
        next_seq: 1,
        ..Default::default()
    };
    for a in actions {
        match a {
            Action::Append { subj, len } => {
                let seq = model.next_seq;
                let data = payload(seq, len);
                let got = store
                    .append(&subject(subj), Bytes::new(), data.clone(), seq as i64)
                    .wait()
                    .unwrap();
                assert_eq!(got, seq);
                model.msgs.insert(seq, (subject(subj), data));
                model.next_seq += 1;
            }
            Action::Delete { pick } => {
                let seq = pick_seq(&model, pick);
                let existed = store.delete(seq).wait().unwrap();
                assert_eq!(existed, model.msgs.remove(&seq).is_some());
            }
            Action::PurgeAll => {
                let n = store.purge(PurgeRequest::default()).wait().unwrap();
                assert_eq!(n, model.purge(None, u64::MAX, None));
            }
            Action::PurgeUpTo { pick, past_end } => {
                let up_to = if past_end {
                    model.next_seq + pick as u64 % 50
                } else {
                    pick_seq(&model, pick)
                };
                let req = PurgeRequest {
                    up_to_seq: Some(up_to),
                    ..Default::default()
                };
                let n = store.purge(req).wait().unwrap();
                assert_eq!(n, model.purge(None, up_to, None));
                model.next_seq = model.next_seq.max(up_to);
            }
            Action::PurgeFilter {
                subj,
                wildcard,
                keep,
            } => {
                let filter = if wildcard {
                    format!("m.{}.*", subj % 4)
                } else {
                    subject(subj)
                };
                let keep = keep.map(u64::from);
                let req = PurgeRequest {
                    filter: Some(filter.clone()),
                    keep,
                    ..Default::default()
                };
                let n = store.purge(req).wait().unwrap();
                assert_eq!(n, model.purge(Some(&filter), u64::MAX, keep));
            }
            Action::PurgeKeep { keep } => {
                let req = PurgeRequest {
                    keep: Some(keep as u64),
                    ..Default::default()
                };
                let n = store.purge(req).wait().unwrap();
                assert_eq!(n, model.purge(None, u64::MAX, Some(keep as u64)));
            }
            Action::Restart => {
                store.close().unwrap();
                drop(store);
                store = open(&fs);
                full_check(|q| store.get(q), store.state(), &model);
            }
            Action::Crash { inflight } => {
                let pending: Vec<_> = (0..inflight)
                    .map(|i| {
                        let seq = model.next_seq + i as u64;
                        let data = payload(seq, 100 + i as u16 * 50);
                        (
                            store.append(&subject(i), Bytes::new(), data.clone(), 0),
                            subject(i),
                            data,
                        )
                    })
                    .collect();
                fs = fs.crash();
                let mut acked = Vec::new();
                let mut maybe = Vec::new();
                for (p, s, d) in pending {
                    let seq = p.seq();
                    match p.wait() {
                        Ok(_) => acked.push((seq, s, d)),
                        Err(_) => maybe.push((seq, s, d)),
                    }
                }
                drop(store);
                store = open(&fs);
                // Acknowledged in-flight appends must have survived; the others may have.
                for (seq, s, d) in acked {
                    let m = store.get(seq).unwrap().expect("acknowledged message lost");
                    check_msg(&m, &s, &d);
                    model.msgs.insert(seq, (s, d));
                }
                for (seq, s, d) in maybe {
                    if let Some(m) = store.get(seq).unwrap() {
                        check_msg(&m, &s, &d);
                        model.msgs.insert(seq, (s, d));
                    }
                }
                let next = store.next_seq();
                assert!(
                    next >= model.next_seq,
                    "sequence went backwards: {next} < {}",
                    model.next_seq
                );
                model.next_seq = next;
                full_check(|q| store.get(q), store.state(), &model);
            }
        }
        let st = store.state();
        assert_eq!(st.msgs, model.msgs.len() as u64);
        assert_eq!(
            st.first_seq,
            model.msgs.keys().next().copied().unwrap_or(model.next_seq)
        );
        for i in 0..4u8 {
            let want = model
                .msgs
                .iter()
                .rev()
                .find(|(_, (s, _))| *s == subject(i))
                .map(|(q, _)| *q);
            assert_eq!(
                store.last_for_subject(&subject(i)).unwrap().map(|m| m.seq),
                want
            );
        }
    }
    full_check(|q| store.get(q), store.state(), &model);
    store.close().unwrap();
    drop(store);
    let store = open(&fs);
    full_check(|q| store.get(q), store.state(), &model);
}

fn pick_seq(model: &Model, pick: u16) -> u64 {
    if model.msgs.is_empty() || pick % 5 == 0 {
        return 1 + pick as u64 % (model.next_seq + 1);
    }
    *model
        .msgs
        .keys()
        .nth(pick as usize % model.msgs.len())
        .expect("key")
}

fn run_memory(actions: Vec<Action>) {
    let store = MemoryStore::default();
    let mut model = Model {
        next_seq: 1,
        ..Default::default()
    };
    for a in actions {
        match a {
            Action::Append { subj, len } => {
                let seq = model.next_seq;
                let data = payload(seq, len);
                assert_eq!(
                    store
                        .append(&subject(subj), Bytes::new(), data.clone(), 0)
                        .wait()
                        .unwrap(),
                    seq
                );
                model.msgs.insert(seq, (subject(subj), data));
                model.next_seq += 1;
            }
            Action::Delete { pick } => {
                let seq = pick_seq(&model, pick);
                assert_eq!(
                    store.delete(seq).wait().unwrap(),
                    model.msgs.remove(&seq).is_some()
                );
            }
            Action::PurgeUpTo { pick, past_end } => {
                let up_to = if past_end {
                    model.next_seq + pick as u64 % 50
                } else {
                    pick_seq(&model, pick)
                };
                let req = PurgeRequest {
                    up_to_seq: Some(up_to),
                    ..Default::default()
                };
                assert_eq!(
                    store.purge(req).wait().unwrap(),
                    model.purge(None, up_to, None)
                );
                model.next_seq = model.next_seq.max(up_to);
            }
            Action::PurgeFilter {
                subj,
                wildcard,
                keep,
            } => {
                let filter = if wildcard {
                    format!("m.{}.*", subj % 4)
                } else {
                    subject(subj)
                };
                let keep = keep.map(u64::from);
                let req = PurgeRequest {
                    filter: Some(filter.clone()),
                    keep,
                    ..Default::default()
                };
                assert_eq!(
                    store.purge(req).wait().unwrap(),
                    model.purge(Some(&filter), u64::MAX, keep)
                );
            }
            Action::PurgeAll | Action::PurgeKeep { .. } => {
                let keep = match a {
                    Action::PurgeKeep { keep } => Some(keep as u64),
                    _ => None,
                };
                let req = PurgeRequest {
                    keep,
                    ..Default::default()
                };
                assert_eq!(
                    store.purge(req).wait().unwrap(),
                    model.purge(None, u64::MAX, keep)
                );
            }
            Action::Restart | Action::Crash { .. } => {}
        }
    }
    full_check(|q| store.get(q), store.state(), &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn file_store_agrees_with_model_across_crashes(actions in proptest::collection::vec(action(), 1..80)) {
        run_file(actions);
    }

    #[test]
    fn memory_store_agrees_with_model(actions in proptest::collection::vec(action(), 1..80)) {
        run_memory(actions);
    }
}
