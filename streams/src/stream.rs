//! One stream: its store (file or memory), configuration and the publish path (dedupe,
//! expected-* headers, rollups, discard-new limits).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::config::{Discard, Retention, StorageType, StreamConfig, StreamState};
use crate::errors::ApiError;
use crate::util::{self, header, now_nanos};
use crate::{
    msg_size, Append, FileStore, FileStoreConfig, Limits, MemoryStore, Pending, PurgeRequest,
    Result, StoreState, StoredMsg, SyncPolicy,
};

/// The store under a stream.
#[derive(Clone)]
pub(crate) enum Store {
    File(FileStore),
    Mem(MemoryStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::File($s) => $e,
            Store::Mem($s) => $e,
        }
    };
}

impl Store {
    pub(crate) fn append(&self, subj: &str, h: Bytes, p: Bytes, ts: i64) -> Append {
        delegate!(self, s => s.append(subj, h, p, ts))
    }
    pub(crate) fn next_seq(&self) -> u64 {
        delegate!(self, s => s.next_seq())
    }
    pub(crate) fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
        delegate!(self, s => s.get(seq))
    }
    pub(crate) fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>> {
        delegate!(self, s => s.get_next(start, filter))
    }
    pub(crate) fn get_run(
        &self,
        start: u64,
        filter: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMsg>> {
        delegate!(self, s => s.get_run(start, filter, max))
    }
    pub(crate) fn last_for_subject(&self, subj: &str) -> Result<Option<StoredMsg>> {
        delegate!(self, s => s.last_for_subject(subj))
    }
    pub(crate) fn delete(&self, seq: u64) -> Pending<bool> {
        delegate!(self, s => s.delete(seq))
    }
    pub(crate) fn purge(&self, req: PurgeRequest) -> Pending<u64> {
        delegate!(self, s => s.purge(req))
    }
    pub(crate) fn set_limits(&self, l: Limits) -> Pending<u64> {
        delegate!(self, s => s.set_limits(l))
    }
    pub(crate) fn sync(&self) -> Pending<()> {
        delegate!(self, s => s.sync())
    }
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            Store::File(s) => s.failure(),
            Store::Mem(_) => None,
        }
    }
    pub(crate) fn close(&self) -> Result<()> {
        delegate!(self, s => s.close())
    }
    pub(crate) fn state(&self) -> StoreState {
        delegate!(self, s => s.state())
    }
    pub(crate) fn subject_counts(&self, f: Option<&str>) -> HashMap<String, u64> {
        delegate!(self, s => s.subject_counts(f))
    }
}

/// The store limits for a config: the store enforces discard-old limits; discard-new limits are
/// checked by the stream before appending.
pub(crate) fn store_limits(c: &StreamConfig) -> Limits {
    let pos = |v: i64| (v > 0).then_some(v as u64);
    let old = c.discard == Discard::Old;
    Limits {
        max_msgs: pos(c.max_msgs).filter(|_| old),
        max_bytes: pos(c.max_bytes).filter(|_| old),
        max_age: (c.max_age > 0).then(|| Duration::from_nanos(c.max_age as u64)),
        max_msgs_per_subject: pos(c.max_msgs_per_subject).filter(|_| !c.discard_new_per_subject),
    }
}

/// Mutable per-stream state, behind one lock so publish checks and the append are atomic.
pub(crate) struct Mutable {
    pub(crate) config: StreamConfig,
    /// `Nats-Msg-Id` -> sequence, within the duplicate window.
    dedupe: HashMap<String, u64>,
    dedupe_order: VecDeque<(i64, String)>,
    /// `Nats-Msg-Id` of the last message ("" if it had none).
    last_msg_id: String,
    /// Appends not yet durable: count and bytes...
    inflight_msgs: u64,
    inflight_bytes: u64,
    /// ...and per subject: (last sequence, count).
    inflight_subj: HashMap<String, (u64, u64)>,
}

impl Mutable {
    fn prune_dedupe(&mut self, now: i64) {
        let window = self.config.duplicate_window;
        while let Some((ts, _)) = self.dedupe_order.front() {
            if now - *ts <= window {
                break;
            }
            let (_, id) = self.dedupe_order.pop_front().expect("front");
            self.dedupe.remove(&id);
        }
    }
}

pub(crate) struct Stream {
    pub(crate) name: String,
    pub(crate) created: i64,
    /// Fixed for the stream's life (updates may not change it).
    pub(crate) storage: StorageType,
    pub(crate) dir: PathBuf,
    pub(crate) store: Store,
    m: Mutex<Mutable>,
}

/// The outcome of a publish, before durability.
pub(crate) enum Admit {
    /// Rejected: the error.
    Reject(ApiError),
    /// A duplicate of `seq`; `wait` is set if the original may not be durable yet.
    Duplicate { seq: u64, wait: Option<Pending<()>> },
    /// Appended.
    Stored {
        append: Append,
        rollup: Option<bool>,
    },
}

impl Stream {
    /// Opens (or creates) the store for `config` in `dir`.
    pub(crate) fn open(
        config: StreamConfig,
        created: i64,
        dir: PathBuf,
        sync: SyncPolicy,
        block_size: u64,
    ) -> Result<Stream> {
        let limits = store_limits(&config);
        let store = match config.storage {
            StorageType::Memory => Store::Mem(MemoryStore::new(limits)),
            StorageType::File => {
                let cfg = FileStoreConfig {
                    block_size,
                    sync,
                    limits,
                };
                let (store, report) = FileStore::open(&dir, cfg)?;
                // Damage is loud; a torn final record (a crash mid-write, never acknowledged)
                // is routine and only noted.
                if !report.corrupt.is_empty() {
                    tracing::warn!(stream = %config.name, corrupt = ?report.corrupt, truncated_bytes = report.truncated_bytes, "stream store recovered; damaged records are not served");
                } else if report.truncated_bytes > 0 {
                    tracing::info!(stream = %config.name, truncated_bytes = report.truncated_bytes, "stream store recovered; a torn final record was cut off");
                }
                Store::File(store)
            }
        };
        let stream = Stream {
            name: config.name.clone(),
            created,
            storage: config.storage,
            dir,
            store,
            m: Mutex::new(Mutable {
                config,
                dedupe: HashMap::new(),
                dedupe_order: VecDeque::new(),
                last_msg_id: String::new(),
                inflight_msgs: 0,
                inflight_bytes: 0,
                inflight_subj: HashMap::new(),
            }),
        };
        stream.rebuild_dedupe();
        Ok(stream)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config(&self) -> StreamConfig {
        self.lock().config.clone()
    }

    /// The retention policy, without copying the whole configuration.
    pub(crate) fn retention(&self) -> Retention {
        self.lock().config.retention
    }

    /// After a restart: the message ids within the duplicate window (found by binary search on
    /// timestamps, then a forward scan) and the last message's id.
    fn rebuild_dedupe(&self) {
        let st = self.store.state();
        if st.msgs == 0 {
            return;
        }
        let mut m = self.lock();
        let cutoff = now_nanos() - m.config.duplicate_window;
        let (mut lo, mut hi) = (st.first_seq, st.last_seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.store.get_next(mid, None) {
                Ok(Some(msg)) if msg.timestamp < cutoff => lo = msg.seq + 1,
                _ => hi = mid,
            }
        }
        let mut next = lo;
        while let Ok(Some(msg)) = self.store.get_next(next, None) {
            next = msg.seq + 1;
            if let Some(id) = header(&msg.headers, "Nats-Msg-Id").filter(|i| !i.is_empty()) {
                m.dedupe.insert(id.to_string(), msg.seq);
                m.dedupe_order.push_back((msg.timestamp, id.to_string()));
            }
        }
        if let Ok(Some(last)) = self.store.get(st.last_seq) {
            m.last_msg_id = header(&last.headers, "Nats-Msg-Id")
                .unwrap_or_default()
                .to_string();
        }
    }

    /// Checks a publish against the config and headers and appends it. `over_account` says
    /// whether `size` more bytes would exceed the account's storage for this stream's type.
    pub(crate) fn admit(
        &self,
        subject: &str,
        headers: Bytes,
        payload: Bytes,
        over_account: impl FnOnce(u64) -> bool,
    ) -> Admit {
        let mut m = self.lock();
        let cfg = &m.config;
        if cfg.sealed {
            return Admit::Reject(ApiError::sealed());
        }
        if cfg.max_msg_size >= 0 && (headers.len() + payload.len()) as i64 > cfg.max_msg_size {
            return Admit::Reject(ApiError::message_too_big());
        }
        let now = now_nanos();
        let h: &[u8] = &headers;
        // An empty header value counts as absent, as in nats-server.
        let hdr = |name: &str| header(h, name).filter(|v| !v.is_empty());
        let msg_id = hdr("Nats-Msg-Id");
        let mut rollup = None;
        if !h.is_empty() {
            // nats-server's order: expected stream and sequences and the TTL header are checked
            // before dedupe (a duplicate failing them is an error), the expected last msg id
            // and the rollup after it (a duplicate wins).
            if let Some(exp) = hdr("Nats-Expected-Stream") {
                if exp != self.name {
                    return Admit::Reject(ApiError::expected_stream_mismatch());
                }
            }
            if let Some(exp) = hdr("Nats-Expected-Last-Sequence") {
                let last = self.store.next_seq() - 1;
                if exp.parse::<u64>().ok() != Some(last) {
                    return Admit::Reject(ApiError::wrong_last_sequence(last));
                }
            }
            if let Some(exp) = hdr("Nats-Expected-Last-Subject-Sequence") {
                let key = hdr("Nats-Expected-Last-Subject-Sequence-Subject").unwrap_or(subject);
                let pending = m
                    .inflight_subj
                    .iter()
                    .filter(|(s, _)| crate::subject::matches(key, s))
                    .map(|(_, (q, _))| *q)
                    .max();
                let last = match pending {
                    Some(q) => q,
                    None => match self.store.last_for_subject(key) {
                        Ok(msg) => msg.map_or(0, |x| x.seq),
                        Err(e) => return Admit::Reject(e.into()),
                    },
                };
                if exp.parse::<u64>().ok() != Some(last) {
                    return Admit::Reject(ApiError::wrong_last_sequence(last));
                }
            }
            // natter has no per-message TTL (`allow_msg_ttl` is always false).
            if hdr("Nats-TTL").is_some() {
                return Admit::Reject(ApiError::msg_ttl_disabled());
            }
            if let Some(id) = msg_id {
                m.prune_dedupe(now);
                if let Some(&seq) = m.dedupe.get(id) {
                    let wait = (m.inflight_msgs > 0).then(|| self.store.sync());
                    return Admit::Duplicate { seq, wait };
                }
            }
            if let Some(exp) = hdr("Nats-Expected-Last-Msg-Id") {
                if exp != m.last_msg_id {
                    return Admit::Reject(ApiError::wrong_last_msg_id(&m.last_msg_id));
                }
            }
            if let Some(r) = hdr("Nats-Rollup") {
                let cfg = &m.config;
                if !cfg.allow_rollup_hdrs || cfg.deny_purge {
                    return Admit::Reject(ApiError::rollup_failed("rollup not permitted"));
                }
                rollup = if r.eq_ignore_ascii_case("sub") {
                    Some(true)
                } else if r.eq_ignore_ascii_case("all") {
                    Some(false)
                } else {
                    return Admit::Reject(ApiError::rollup_failed(format!(
                        "rollup value invalid: \"{r}\""
                    )));
                };
            }
        }
        let size = msg_size(subject, &headers, &payload);
        let cfg = &m.config;
        if cfg.discard == Discard::New && rollup.is_none() {
            if cfg.max_msgs > 0 || cfg.max_bytes > 0 {
                let st = self.store.state();
                if cfg.max_msgs > 0 && st.msgs + m.inflight_msgs >= cfg.max_msgs as u64 {
                    return Admit::Reject(ApiError::store_failed("maximum messages exceeded"));
                }
                if cfg.max_bytes > 0 && st.bytes + m.inflight_bytes + size > cfg.max_bytes as u64 {
                    return Admit::Reject(ApiError::store_failed("maximum bytes exceeded"));
                }
            }
            if cfg.discard_new_per_subject && cfg.max_msgs_per_subject > 0 {
                let stored = self
                    .store
                    .subject_counts(Some(subject))
                    .get(subject)
                    .copied()
                    .unwrap_or(0);
                let pending = m.inflight_subj.get(subject).map_or(0, |p| p.1);
                if stored + pending >= cfg.max_msgs_per_subject as u64 {
                    return Admit::Reject(ApiError::store_failed(
                        "maximum messages per subject exceeded",
                    ));
                }
            }
        }
        if over_account(size) {
            return Admit::Reject(ApiError::insufficient_resources());
        }
        let append = self.store.append(subject, headers.clone(), payload, now);
        let seq = append.seq();
        m.inflight_msgs += 1;
        m.inflight_bytes += size;
        // Looked up before inserting: the key is allocated once per subject, not per message.
        match m.inflight_subj.get_mut(subject) {
            Some(e) => *e = (seq, e.1 + 1),
            None => {
                m.inflight_subj.insert(subject.to_string(), (seq, 1));
            }
        }
        let id = header(&headers, "Nats-Msg-Id").unwrap_or_default();
        if !id.is_empty() {
            m.dedupe.insert(id.to_string(), seq);
            m.dedupe_order.push_back((now, id.to_string()));
        }
        m.last_msg_id = id.to_string();
        Admit::Stored { append, rollup }
    }

    /// Bookkeeping once an append completed (`ok` or not).
    pub(crate) fn settle(
        &self,
        subject: &str,
        seq: u64,
        size: u64,
        msg_id: Option<&str>,
        ok: bool,
    ) {
        let mut m = self.lock();
        m.inflight_msgs = m.inflight_msgs.saturating_sub(1);
        m.inflight_bytes = m.inflight_bytes.saturating_sub(size);
        if let Some(e) = m.inflight_subj.get_mut(subject) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                m.inflight_subj.remove(subject);
            }
        }
        if !ok {
            if let Some(id) = msg_id {
                if m.dedupe.get(id) == Some(&seq) {
                    m.dedupe.remove(id);
                }
            }
        }
    }

    /// Replaces the config (already validated) and applies its limits to the store.
    pub(crate) fn set_config(&self, config: StreamConfig) -> Pending<u64> {
        let limits = store_limits(&config);
        self.lock().config = config;
        self.store.set_limits(limits)
    }

    /// The deleted sequences between the first and the last (for `deleted_details`): a walk
    /// over the stored messages, as costly as the stream is long.
    pub(crate) fn deleted_seqs(&self) -> Vec<u64> {
        let st = self.store.state();
        let mut out = Vec::new();
        if st.msgs == 0 {
            return out;
        }
        let mut expect = st.first_seq;
        while let Ok(Some(m)) = self.store.get_next(expect, None) {
            out.extend(expect..m.seq);
            expect = m.seq + 1;
        }
        out.extend(expect..=st.last_seq);
        out
    }

    /// The JSON state, with per-subject counts for `subjects_filter`.
    pub(crate) fn state(&self, subjects_filter: Option<&str>) -> StreamState {
        let st = self.store.state();
        let never = st.last_seq == 0 && st.msgs == 0;
        StreamState {
            messages: st.msgs,
            bytes: st.bytes,
            first_seq: if never { 0 } else { st.first_seq },
            first_ts: util::rfc3339(if st.msgs == 0 { 0 } else { st.first_ts }),
            last_seq: st.last_seq,
            last_ts: util::rfc3339(if st.last_seq == 0 { 0 } else { st.last_ts }),
            num_deleted: st.num_deleted,
            deleted: None,
            num_subjects: st.num_subjects,
            subjects: subjects_filter.map(|f| {
                let f = if f.is_empty() { ">" } else { f };
                self.store.subject_counts(Some(f)).into_iter().collect()
            }),
            consumer_count: 0,
        }
    }
}
