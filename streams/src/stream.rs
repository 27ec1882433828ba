//! One stream: its store (file or memory), configuration and the publish path (dedupe,
//! expected-* headers, rollups, discard-new limits).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::config::{Discard, Retention, StorageType, StreamConfig, StreamState};
use crate::errors::ApiError;
use crate::republish::{self, Outgoing, Republished, Transform};
use crate::util::{self, header, now_nanos, MsgTtl};
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
    pub(crate) fn contains(&self, seq: u64) -> bool {
        delegate!(self, s => s.contains(seq))
    }
    pub(crate) fn next_stored(&self, start: u64) -> Option<u64> {
        delegate!(self, s => s.next_stored(start))
    }
    pub(crate) fn last_written(&self) -> u64 {
        delegate!(self, s => s.last_written())
    }
    pub(crate) fn last_seq_for(&self, subject: &str) -> Option<u64> {
        delegate!(self, s => s.last_seq_for(subject))
    }
    pub(crate) fn holds_subject(&self, subject: &str) -> bool {
        delegate!(self, s => s.holds_subject(subject))
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
    pub(crate) fn expire_keeping(&self, cutoff: i64, from: u64, keep: Vec<u64>) -> Pending<u64> {
        delegate!(self, s => s.expire_keeping(cutoff, from, keep))
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
/// checked by the stream before appending. With per-message TTLs the stream enforces `max_age`
/// itself ([`Stream::expire_due`]), as messages marked `never` are exempt from it.
pub(crate) fn store_limits(c: &StreamConfig) -> Limits {
    let pos = |v: i64| (v > 0).then_some(v as u64);
    let old = c.discard == Discard::Old;
    Limits {
        max_msgs: pos(c.max_msgs).filter(|_| old),
        max_bytes: pos(c.max_bytes).filter(|_| old),
        max_age: (c.max_age > 0 && !c.allow_msg_ttl)
            .then(|| Duration::from_nanos(c.max_age as u64)),
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
    ttls: Ttls,
    /// `config.republish`'s mapping, parsed once.
    republish: Option<Transform>,
}

/// What `Nats-TTL` headers asked for: when each message expires, and which never do. An entry
/// whose message was removed otherwise stays until it is due or a sweep finds it gone
/// ([`Ttls::prune_if_grown`]); deleting a missing message does nothing.
struct Ttls {
    /// (deadline in Unix nanoseconds, sequence).
    due: BTreeSet<(i64, u64)>,
    never: BTreeSet<u64>,
    /// When [`Stream::expire_due`] last applied `max_age` (Unix nanoseconds).
    age_pass: i64,
    /// Entries (of both kinds) past which stale ones are swept out.
    sweep_at: usize,
}

/// The fewest entries worth sweeping.
const SWEEP_MIN: usize = 1024;

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            due: BTreeSet::new(),
            never: BTreeSet::new(),
            age_pass: 0,
            sweep_at: SWEEP_MIN,
        }
    }
}

impl Ttls {
    fn add(&mut self, seq: u64, stored: i64, ttl: MsgTtl) {
        match ttl {
            MsgTtl::Never => {
                self.never.insert(seq);
            }
            MsgTtl::After(d) => {
                let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
                self.due.insert((stored.saturating_add(nanos), seq));
            }
        }
    }

    /// The first stored message not marked `never` (index lookups only).
    fn first_mortal(&self, store: &Store) -> Option<u64> {
        let mut q = store.next_stored(0)?;
        while self.never.contains(&q) {
            q = store.next_stored(q + 1)?;
        }
        Some(q)
    }

    /// Drops the entries of messages removed otherwise (deleted, purged, rolled up, over a
    /// limit), which would pile up, once the entries have doubled since the last sweep: a sweep
    /// costs one index lookup per entry, so about one per entry added.
    fn prune_if_grown(&mut self, store: &Store) {
        if self.due.len() + self.never.len() <= self.sweep_at {
            return;
        }
        // Appends still on their way to the index are kept.
        let written = store.last_written();
        self.due.retain(|&(_, q)| q > written || store.contains(q));
        self.never.retain(|&q| q > written || store.contains(q));
        self.sweep_at = (2 * (self.due.len() + self.never.len())).max(SWEEP_MIN);
    }

    /// Takes the sequences due at `now`.
    fn take_due(&mut self, now: i64) -> Vec<u64> {
        let later = self.due.split_off(&(now.saturating_add(1), 0));
        std::mem::replace(&mut self.due, later)
            .into_iter()
            .map(|(_, q)| q)
            .collect()
    }
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
    /// Republishes waiting for their messages.
    republishes: Outgoing,
}

/// The header naming why the server placed a delete marker.
const MARKER_REASON: &str = "Nats-Marker-Reason";

/// The outcome of a publish, before durability.
pub(crate) enum Admit {
    /// Rejected: the error.
    Reject(ApiError),
    /// A duplicate of `seq`; `wait` is set if the original may not be durable yet.
    Duplicate { seq: u64, wait: Option<Pending<()>> },
    /// Appended, `size` bytes as stored (a clamped `Nats-TTL` may change it); whether it is
    /// to be republished (see [`Stream::republish`]).
    Stored {
        append: Append,
        rollup: Option<bool>,
        size: u64,
        republish: bool,
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
                ttls: Ttls::default(),
                republish: None,
            }),
            republishes: Outgoing::default(),
        };
        {
            let mut m = stream.lock();
            m.republish = m.config.republish.as_ref().and_then(|r| r.transform());
        }
        stream.rebuild_dedupe();
        stream.rebuild_ttls()?;
        Ok(stream)
    }

    /// After a restart: the TTLs of stored messages, read from their headers. A walk over the
    /// whole stream, made only for streams that allow per-message TTLs.
    fn rebuild_ttls(&self) -> Result<()> {
        let mut m = self.lock();
        if !m.config.allow_msg_ttl {
            return Ok(());
        }
        let mut next = self.store.state().first_seq;
        loop {
            let run = self.store.get_run(next, None, 256)?;
            let Some(last) = run.last() else {
                return Ok(());
            };
            next = last.seq + 1;
            for msg in &run {
                if let Some(ttl) = header(&msg.headers, "Nats-TTL").and_then(util::msg_ttl) {
                    m.ttls.add(msg.seq, msg.timestamp, ttl);
                }
            }
        }
    }

    /// Removes what is due at `now` (Unix nanoseconds): messages whose `Nats-TTL` ran out, and
    /// messages older than `max_age` where the store does not remove them itself, sparing those
    /// marked `never`. That is in streams with per-message TTLs, and in memory streams, which
    /// would otherwise expire by age only when appended to.
    ///
    /// Where the stream places delete markers, it reads what it removes and waits for the
    /// removals, and returns the subjects they may have emptied (for [`Stream::place_marker`]);
    /// call it where blocking is fine. Otherwise nothing is waited for and nothing returned.
    pub(crate) fn expire_due(&self, now: i64) -> Vec<String> {
        let (due, age, markers) = {
            let mut m = self.lock();
            m.ttls.prune_if_grown(&self.store);
            let due = m.ttls.take_due(now);
            let markers = m.config.marker_ttl().is_some();
            let cfg = &m.config;
            // Once a second, as the file store does it.
            let age = (cfg.max_age > 0
                && (cfg.allow_msg_ttl || self.storage == StorageType::Memory)
                && now.saturating_sub(m.ttls.age_pass) >= 1_000_000_000)
                .then(|| now.saturating_sub(cfg.max_age));
            let age = age.and_then(|cutoff| {
                m.ttls.age_pass = now;
                // From the oldest message that can age out (found in the index, past the
                // `never` ones). What is appended later is younger than the cutoff.
                let from = m.ttls.first_mortal(&self.store)?;
                let keep = m.ttls.never.range(from..).copied().collect::<Vec<u64>>();
                Some((cutoff, from, keep))
            });
            (due, age, markers)
        };
        // Nothing to do if that message is young enough (read without the stream locked).
        let age = age.filter(|&(cutoff, from, _)| {
            matches!(self.store.get(from), Ok(Some(msg)) if msg.timestamp < cutoff)
        });
        if !markers {
            // Removals finish on the store's own time; nothing here waits for them.
            for seq in due {
                drop(self.store.delete(seq));
            }
            if let Some((cutoff, from, keep)) = age {
                drop(self.store.expire_keeping(cutoff, from, keep));
            }
            return Vec::new();
        }
        // A marker's own removal places none.
        let mut emptied = BTreeSet::new();
        let mut note = |msg: &StoredMsg| {
            if header(&msg.headers, MARKER_REASON).is_none() {
                emptied.insert(msg.subject.clone());
            }
        };
        let mut deletes = Vec::new();
        for seq in due {
            if let Ok(Some(msg)) = self.store.get(seq) {
                note(&msg);
                deletes.push(self.store.delete(seq));
            }
        }
        let mut expiry = None;
        if let Some((cutoff, from, keep)) = age {
            let mut next = from;
            'scan: while let Ok(run) = self.store.get_run(next, None, 256) {
                let Some(last) = run.last() else { break };
                next = last.seq + 1;
                for msg in &run {
                    if msg.timestamp >= cutoff {
                        break 'scan;
                    }
                    if keep.binary_search(&msg.seq).is_err() {
                        note(msg);
                    }
                }
            }
            expiry = Some(self.store.expire_keeping(cutoff, from, keep));
        }
        for d in deletes {
            let _ = d.wait();
        }
        if let Some(e) = expiry {
            let _ = e.wait();
        }
        emptied.into_iter().collect()
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

    /// Checks a publish against the config and headers and appends it. `over_limits` says
    /// whether `size` more bytes would pass a storage limit for this stream's type, and which.
    pub(crate) fn admit(
        &self,
        subject: &str,
        headers: Bytes,
        payload: Bytes,
        over_limits: impl FnOnce(u64) -> Option<ApiError>,
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
        let mut ttl = None;
        let mut clamped = None;
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
            if let Some(v) = hdr("Nats-TTL") {
                // nats-server's order: a bad value is invalid even where TTLs are off.
                match util::msg_ttl(v) {
                    Some(t) => ttl = Some(t),
                    None => return Admit::Reject(ApiError::msg_ttl_invalid()),
                }
                if !m.config.allow_msg_ttl {
                    return Admit::Reject(ApiError::msg_ttl_disabled());
                }
                // With delete markers, a TTL is at least the markers' (unless a subject holds
                // one message), as nats-server does; the stored header says so.
                let floor = m
                    .config
                    .marker_ttl()
                    .filter(|_| m.config.max_msgs_per_subject != 1);
                if let (Some(floor), Some(MsgTtl::After(d))) = (floor, ttl) {
                    if d < floor {
                        // Whole seconds, as the rewritten header says (and a restart reads).
                        let secs = floor.as_secs().max(1);
                        ttl = Some(MsgTtl::After(Duration::from_secs(secs)));
                        clamped = Some(secs);
                    }
                }
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
        if let Some(e) = over_limits(size) {
            return Admit::Reject(e);
        }
        let headers = match clamped {
            Some(secs) => util::replace_header(&headers, "Nats-TTL", &secs.to_string()).into(),
            None => headers,
        };
        let size = msg_size(subject, &headers, &payload);
        // Where to republish, and the subject's previous message (before this append counts).
        // Not a message this stream republished before (it says so in a header): a cycle of
        // streams republishing into each other ends after one round, where nats-server loops.
        let again = || !headers.is_empty() && util::has_header(&headers, "Nats-Stream", &self.name);
        let republish = m
            .republish
            .as_ref()
            .filter(|_| !again())
            .and_then(|t| t.apply(subject))
            .map(|dest| {
                let last = m.inflight_subj.get(subject).map(|e| e.0);
                let last = last.or_else(|| self.store.last_seq_for(subject));
                (dest, last.unwrap_or(0), headers.clone(), payload.clone())
            });
        let append = self.append_locked(&mut m, subject, headers, payload, now);
        if let Some(t) = ttl {
            m.ttls.add(append.seq(), now, t);
        }
        let republish = republish.map(|(dest, last, headers, payload)| {
            let only = m.config.republish.as_ref().is_some_and(|r| r.headers_only);
            let (name, seq) = (&self.name, append.seq());
            let size_only = only.then_some(payload.len());
            // Queued in sequence order: the stream is locked.
            self.republishes.push(
                seq,
                Republished {
                    dest,
                    headers: republish::headers(&headers, name, subject, seq, now, last, size_only),
                    payload: if only { Bytes::new() } else { payload },
                },
            );
        });
        Admit::Stored {
            append,
            rollup,
            size,
            republish: republish.is_some(),
        }
    }

    /// The append of `seq`, queued for republishing by [`Stream::admit`], completed (`ok` or
    /// not): republishes what is ready, in sequence order, through `send`.
    pub(crate) fn republish(&self, seq: u64, ok: bool, send: impl FnMut(&Republished)) {
        self.republishes.settle(seq, ok, send);
    }

    /// Appends with the stream locked (checks done), counting the append in flight until
    /// [`Stream::settle`] and noting its message id.
    fn append_locked(
        &self,
        m: &mut Mutable,
        subject: &str,
        headers: Bytes,
        payload: Bytes,
        now: i64,
    ) -> Append {
        let size = msg_size(subject, &headers, &payload);
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
        append
    }

    /// Places a delete marker on `subject` if it holds no message (now, under the lock, so no
    /// publish can slip in and be rolled up by it) and the stream places markers. Complete it
    /// as a publish: await, then [`Stream::settle`] with the returned size.
    pub(crate) fn place_marker(&self, subject: &str) -> Option<(Append, u64)> {
        let mut m = self.lock();
        let ttl = m.config.marker_ttl()?;
        // Not in a sealed stream, nor on a subject the stream no longer takes.
        if m.config.sealed
            || !m
                .config
                .subjects
                .iter()
                .any(|f| crate::subject::matches(f, subject))
            || m.inflight_subj.contains_key(subject)
            || self.store.holds_subject(subject)
        {
            return None;
        }
        let headers = format!(
            "NATS/1.0\r\n{MARKER_REASON}: MaxAge\r\nNats-TTL: {}\r\nNats-Rollup: sub\r\n\r\n",
            crate::consumer::config::go_duration(ttl)
        );
        let headers = Bytes::from(headers);
        let size = msg_size(subject, &headers, &[]);
        let now = now_nanos();
        let append = self.append_locked(&mut m, subject, headers, Bytes::new(), now);
        m.ttls.add(append.seq(), now, MsgTtl::After(ttl));
        Some((append, size))
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
        let mut m = self.lock();
        m.republish = config.republish.as_ref().and_then(|r| r.transform());
        m.config = config;
        drop(m);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The TTL index does not keep entries of messages removed otherwise (here each one by
    /// the next on its subject, with `max_msgs_per_subject: 1`).
    #[test]
    fn ttl_entries_of_removed_messages_are_swept() {
        let mut cfg = StreamConfig::new("T", &["t.*"]);
        cfg.allow_msg_ttl = true;
        cfg.max_msgs_per_subject = 1;
        cfg.storage = StorageType::Memory;
        cfg.normalize().unwrap();
        let s = Stream::open(cfg, 0, PathBuf::new(), SyncPolicy::Always, 1 << 20).unwrap();
        for i in 0..3000 {
            let (subject, ttl) = if i % 2 == 0 {
                ("t.never", "never")
            } else {
                ("t.later", "1h")
            };
            let h = Bytes::from(format!("NATS/1.0\r\nNats-TTL: {ttl}\r\n\r\n"));
            match s.admit(subject, h, Bytes::from_static(b"x"), |_| None) {
                Admit::Stored { append, .. } => {
                    append.wait().unwrap();
                }
                _ => panic!("not stored"),
            }
        }
        let entries = |s: &Stream| {
            let m = s.lock();
            (m.ttls.due.len(), m.ttls.never.len())
        };
        assert_eq!(entries(&s), (1500, 1500));
        s.expire_due(now_nanos());
        assert_eq!(entries(&s), (1, 1));
        assert_eq!(s.lock().ttls.never.first(), Some(&2999));
    }

    /// A sweep keeps the entries of appends not yet written (a file store in interval mode
    /// holds a batch's appends until the batch ends).
    #[test]
    fn ttl_sweep_keeps_appends_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StreamConfig::new("F", &["f.*"]);
        cfg.allow_msg_ttl = true;
        cfg.normalize().unwrap();
        let sync = SyncPolicy::Interval(Duration::from_secs(120));
        let s = Stream::open(cfg, 0, dir.path().to_path_buf(), sync, 1 << 20).unwrap();
        let batch = crate::DeferredWrites::open();
        let appends: Vec<Append> = (0..1500)
            .map(|_| {
                let h = Bytes::from_static(b"NATS/1.0\r\nNats-TTL: never\r\n\r\n");
                match s.admit("f.a", h, Bytes::from_static(b"x"), |_| None) {
                    Admit::Stored { append, .. } => append,
                    _ => panic!("not stored"),
                }
            })
            .collect();
        s.expire_due(now_nanos());
        drop(batch);
        for a in appends {
            a.wait().unwrap();
        }
        assert_eq!(s.lock().ttls.never.len(), 1500);
    }
}
