//! `MemoryStore`: the store API without persistence (`storage: memory`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    msg_size, subject, Append, Error, Limits, Pending, PurgeRequest, Result, StoreState, StoredMsg,
};

#[derive(Default)]
struct Mem {
    msgs: BTreeMap<u64, StoredMsg>,
    subjects: HashMap<String, BTreeSet<u64>>,
    bytes: u64,
    last_seq: u64,
    last_ts: i64,
    limits: Limits,
    closed: bool,
}

impl Mem {
    fn remove(&mut self, seq: u64) -> bool {
        let Some(m) = self.msgs.remove(&seq) else {
            return false;
        };
        self.bytes -= msg_size(&m.subject, &m.headers, &m.payload);
        if let Some(set) = self.subjects.get_mut(&m.subject) {
            set.remove(&seq);
            if set.is_empty() {
                self.subjects.remove(&m.subject);
            }
        }
        true
    }

    fn remove_all(&mut self, seqs: Vec<u64>) -> u64 {
        seqs.into_iter().filter(|&q| self.remove(q)).count() as u64
    }

    fn enforce(&mut self, subject: Option<&str>) -> u64 {
        let mut n = 0;
        if let Some(max) = self.limits.max_msgs_per_subject {
            let subjects: Vec<String> = match subject {
                Some(s) => vec![s.to_string()],
                None => self.subjects.keys().cloned().collect(),
            };
            for s in subjects {
                let seqs: Vec<u64> = match self.subjects.get(&s) {
                    Some(set) if set.len() as u64 > max => {
                        set.iter().take(set.len() - max as usize).copied().collect()
                    }
                    _ => continue,
                };
                n += self.remove_all(seqs);
            }
        }
        while self
            .limits
            .max_msgs
            .is_some_and(|m| self.msgs.len() as u64 > m)
            || self.limits.max_bytes.is_some_and(|m| self.bytes > m)
        {
            let first = *self.msgs.keys().next().expect("non-empty");
            self.remove(first);
            n += 1;
        }
        if let Some(age) = self.limits.max_age {
            n += self.expire(now_nanos().saturating_sub(age.as_nanos() as i64), 0, &[]);
        }
        n
    }

    fn expire(&mut self, cutoff: i64, from: u64, keep: &[u64]) -> u64 {
        let seqs: Vec<u64> = self
            .msgs
            .range(from..)
            .map(|(_, m)| m)
            .take_while(|m| m.timestamp < cutoff)
            .map(|m| m.seq)
            .filter(|q| keep.binary_search(q).is_err())
            .collect();
        self.remove_all(seqs)
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// An in-memory store with the same API and semantics as [`crate::FileStore`] (operations
/// complete immediately; nothing survives a restart). Limits are enforced on every append, age
/// included. Cheap to clone; clones share one store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Mem>>,
}

impl MemoryStore {
    /// An empty store with these limits.
    pub fn new(limits: Limits) -> MemoryStore {
        let store = MemoryStore::default();
        store.lock().limits = limits;
        store
    }

    fn lock(&self) -> MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> Result<MutexGuard<'_, Mem>> {
        let g = self.lock();
        if g.closed {
            return Err(Error::Closed);
        }
        Ok(g)
    }

    /// Appends a message (see [`crate::FileStore::append`]).
    pub fn append(&self, subject: &str, headers: Bytes, payload: Bytes, timestamp: i64) -> Append {
        let r = crate::validate(subject, &headers, &payload).and_then(|_| self.open());
        let mut m = match r {
            Ok(m) => m,
            Err(e) => {
                return Append {
                    seq: 0,
                    done: Pending::ready(Err(e)),
                }
            }
        };
        m.last_seq += 1;
        let seq = m.last_seq;
        m.last_ts = timestamp;
        m.bytes += msg_size(subject, &headers, &payload);
        m.subjects
            .entry(subject.to_string())
            .or_default()
            .insert(seq);
        m.msgs.insert(
            seq,
            StoredMsg {
                seq,
                subject: subject.to_string(),
                headers,
                payload,
                timestamp,
            },
        );
        m.enforce(Some(subject));
        Append {
            seq,
            done: Pending::ready(Ok(seq)),
        }
    }

    /// The sequence the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().last_seq + 1
    }

    /// Reads message `seq`.
    pub fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
        Ok(self.lock().msgs.get(&seq).cloned())
    }

    /// Whether message `seq` is stored.
    pub fn contains(&self, seq: u64) -> bool {
        self.lock().msgs.contains_key(&seq)
    }

    /// The first stored sequence `>= start`.
    pub fn next_stored(&self, start: u64) -> Option<u64> {
        self.lock().msgs.range(start..).next().map(|(&q, _)| q)
    }

    /// The last sequence appended.
    pub fn last_written(&self) -> u64 {
        self.lock().last_seq
    }

    /// The last sequence stored on the literal `subject`.
    pub fn last_seq_for(&self, subject: &str) -> Option<u64> {
        self.lock().subjects.get(subject)?.last().copied()
    }

    /// Whether any message on the literal `subject` is stored.
    pub fn holds_subject(&self, subject: &str) -> bool {
        self.lock()
            .subjects
            .get(subject)
            .is_some_and(|s| !s.is_empty())
    }

    /// The first message with sequence `>= start` matching `filter`.
    pub fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>> {
        let m = self.lock();
        Ok(m.msgs
            .range(start..)
            .map(|(_, v)| v)
            .find(|v| filter.is_none_or(|f| subject::matches(f, &v.subject)))
            .cloned())
    }

    /// Up to `max` messages with sequence `>= start` matching `filter`, in order.
    pub fn get_run(&self, start: u64, filter: Option<&str>, max: usize) -> Result<Vec<StoredMsg>> {
        let m = self.lock();
        Ok(m.msgs
            .range(start..)
            .map(|(_, v)| v)
            .filter(|v| filter.is_none_or(|f| subject::matches(f, &v.subject)))
            .take(max.max(1))
            .cloned()
            .collect())
    }

    /// The newest message on `subject` (or matching it, with wildcards).
    pub fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>> {
        let m = self.lock();
        let seq = m
            .subjects
            .iter()
            .filter(|(s, _)| subject::matches(subject, s))
            .filter_map(|(_, set)| set.last().copied())
            .max();
        Ok(seq.and_then(|q| m.msgs.get(&q).cloned()))
    }

    /// Deletes message `seq`; true if it was stored.
    pub fn delete(&self, seq: u64) -> Pending<bool> {
        Pending::ready(self.open().map(|mut m| m.remove(seq)))
    }

    /// Purges messages (see [`PurgeRequest`]).
    pub fn purge(&self, req: PurgeRequest) -> Pending<u64> {
        if req.up_to_seq.is_some() && req.keep.is_some() {
            return Pending::ready(Err(Error::Invalid(
                "up_to_seq and keep are exclusive".into(),
            )));
        }
        let mut m = match self.open() {
            Ok(m) => m,
            Err(e) => return Pending::ready(Err(e)),
        };
        let before = req.up_to_seq.unwrap_or(u64::MAX);
        let matching: Vec<u64> = m
            .msgs
            .range(..before)
            .filter(|(_, v)| {
                req.filter
                    .as_deref()
                    .is_none_or(|f| subject::matches(f, &v.subject))
            })
            .map(|(&q, _)| q)
            .collect();
        let take = match req.keep {
            Some(k) => matching.len().saturating_sub(k as usize),
            None => matching.len(),
        };
        let n = m.remove_all(matching.into_iter().take(take).collect());
        if req.filter.is_none() {
            if let Some(s) = req.up_to_seq {
                if s > m.last_seq + 1 {
                    m.last_seq = s - 1;
                }
            }
        }
        Pending::ready(Ok(n))
    }

    /// Removes messages older than `cutoff` (Unix nanoseconds).
    pub fn expire(&self, cutoff: i64) -> Pending<u64> {
        self.expire_keeping(cutoff, 0, Vec::new())
    }

    /// [`MemoryStore::expire`] from sequence `from` on, except for the sequences in `keep`
    /// (sorted).
    pub fn expire_keeping(&self, cutoff: i64, from: u64, keep: Vec<u64>) -> Pending<u64> {
        Pending::ready(self.open().map(|mut m| m.expire(cutoff, from, &keep)))
    }

    /// Replaces the limits and enforces them.
    pub fn set_limits(&self, limits: Limits) -> Pending<u64> {
        Pending::ready(self.open().map(|mut m| {
            m.limits = limits;
            m.enforce(None)
        }))
    }

    /// Completes at once (nothing to sync).
    pub fn sync(&self) -> Pending<()> {
        Pending::ready(self.open().map(|_| ()))
    }

    /// Counters (see [`StoreState`]).
    pub fn state(&self) -> StoreState {
        let m = self.lock();
        let first = m.msgs.values().next();
        let msgs = m.msgs.len() as u64;
        let first_seq = first.map_or(m.last_seq + 1, |f| f.seq);
        StoreState {
            msgs,
            bytes: m.bytes,
            first_seq,
            first_ts: first.map_or(0, |f| f.timestamp),
            last_seq: m.last_seq,
            last_ts: m.last_ts,
            num_deleted: if msgs == 0 {
                0
            } else {
                m.last_seq - first_seq + 1 - msgs
            },
            num_subjects: m.subjects.len() as u64,
        }
    }

    /// Message counts per subject matching `filter`.
    pub fn subject_counts(&self, filter: Option<&str>) -> HashMap<String, u64> {
        self.lock()
            .subjects
            .iter()
            .filter(|(s, _)| filter.is_none_or(|f| subject::matches(f, s)))
            .map(|(s, set)| (s.clone(), set.len() as u64))
            .collect()
    }

    /// Drops the contents; later operations fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        let mut m = self.lock();
        *m = Mem {
            closed: true,
            ..Mem::default()
        };
        Ok(())
    }
}
