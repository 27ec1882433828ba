//! The file store: segments, index, group-commit writer, recovery.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::fs::{FileHandle, Fs, RealFs};
use crate::record::{self, HEADER_LEN, MAGIC, TOMBSTONE_LEN};
use crate::{
    subject, Append, Corruption, Error, Limits, Pending, PurgeRequest, RecoveryReport, Result,
    StoreState, StoredMsg, SyncPolicy,
};

/// Upper bound of one group commit's encoded bytes; more pending appends wait for the next one.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How long the writer thread looks for more work before it sleeps, while appends come in
/// faster than it writes them: publishers with many appends in flight send the next ones within
/// microseconds, and looking again spares them and it a futex wake per batch.
const SPIN: Duration = Duration::from_micros(50);
/// A sealed segment is rewritten once at least this share of its bytes is deleted...
const COMPACT_GARBAGE_RATIO: f64 = 0.5;
/// ...and at least this many bytes would be reclaimed.
const COMPACT_MIN_GARBAGE: u64 = 4096;
/// Largest allowed segment (offsets in the index are 32-bit).
const MAX_BLOCK_SIZE: u64 = 1 << 30;
/// A damaged record's header is trusted for its sequence only this far past the last good one
/// (a bit flip in the sequence field must not push the stream's sequence to near `u64::MAX`).
const MAX_SEQ_JUMP: u64 = 1 << 32;

/// File store configuration.
#[derive(Debug, Clone)]
pub struct FileStoreConfig {
    /// A segment is sealed and a new one started once it would grow past this (default 8 MiB).
    pub block_size: u64,
    /// When appends are fsynced relative to their acknowledgement.
    pub sync: SyncPolicy,
    /// Retention limits (discard old).
    pub limits: Limits,
}

impl Default for FileStoreConfig {
    fn default() -> Self {
        FileStoreConfig {
            block_size: 8 << 20,
            sync: SyncPolicy::Always,
            limits: Limits::default(),
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The index.

/// Where one message lives. `len == 0` marks an absent (deleted or never written) sequence.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    off: u32,
    len: u32,
    subj: u32,
}

struct Seg {
    /// First sequence the segment was created for; its file is `<id>.blk`.
    id: u64,
    file: Arc<dyn FileHandle>,
    /// Valid bytes in the file (where the next record goes).
    size: u64,
    /// Sequence of `slots[0]`.
    base: u64,
    slots: Vec<Slot>,
    live: u64,
    live_bytes: u64,
    /// Newest timestamp of any record in the segment.
    max_ts: i64,
    dlt: Option<Arc<dyn FileHandle>>,
    dlt_size: u64,
}

impl Seg {
    fn slot(&self, seq: u64) -> Option<Slot> {
        let i = seq.checked_sub(self.base)? as usize;
        self.slots.get(i).copied().filter(|s| s.len > 0)
    }
    fn last_seq(&self) -> u64 {
        self.base + self.slots.len() as u64 - 1
    }
    fn live_seqs(&self) -> impl DoubleEndedIterator<Item = (u64, Slot)> + '_ {
        self.live_seqs_from(self.base)
    }

    /// [`Seg::live_seqs`] from sequence `start` on: indexed, not scanned, so reading a stream
    /// message by message costs O(1) per message, not O(segment).
    fn live_seqs_from(&self, start: u64) -> impl DoubleEndedIterator<Item = (u64, Slot)> + '_ {
        let skip = (start.saturating_sub(self.base) as usize).min(self.slots.len());
        let base = self.base + skip as u64;
        self.slots[skip..]
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len > 0)
            .map(move |(i, s)| (base + i as u64, *s))
    }
}

struct SubjInfo {
    name: Arc<str>,
    count: u64,
    first: u64,
    last: u64,
}

#[derive(Default)]
struct Index {
    segs: Vec<Seg>,
    ids: HashMap<Arc<str>, u32>,
    subjs: Vec<SubjInfo>,
    free_ids: Vec<u32>,
    msgs: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    last_ts: i64,
}

impl Index {
    fn seg_pos(&self, seq: u64) -> Option<usize> {
        let p = self.segs.partition_point(|s| s.id <= seq);
        p.checked_sub(1)
    }

    fn locate(&self, seq: u64) -> Option<(&Seg, Slot)> {
        let seg = &self.segs[self.seg_pos(seq)?];
        seg.slot(seq).map(|s| (seg, s))
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = name.into();
        let info = SubjInfo {
            name: name.clone(),
            count: 0,
            first: 0,
            last: 0,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.subjs[id as usize] = info;
                id
            }
            None => {
                self.subjs.push(info);
                (self.subjs.len() - 1) as u32
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// Records a live message in segment `pos`.
    fn add(&mut self, pos: usize, seq: u64, slot: Slot, ts: i64) {
        let seg = &mut self.segs[pos];
        if seg.slots.is_empty() {
            seg.base = seq;
        }
        let i = (seq - seg.base) as usize;
        if seg.slots.len() <= i {
            seg.slots.resize(i + 1, Slot::default());
        }
        seg.slots[i] = slot;
        seg.live += 1;
        seg.live_bytes += slot.len as u64;
        seg.max_ts = seg.max_ts.max(ts);
        let info = &mut self.subjs[slot.subj as usize];
        if info.count == 0 {
            info.first = seq;
        }
        info.count += 1;
        info.last = seq;
        if self.msgs == 0 {
            self.first_seq = seq;
        }
        self.msgs += 1;
        self.bytes += slot.len as u64;
    }

    /// Marks one live message absent; returns its subject id.
    fn unlink(&mut self, pos: usize, seq: u64) -> Option<u32> {
        let seg = &mut self.segs[pos];
        let i = (seq - seg.base) as usize;
        let slot = std::mem::take(&mut seg.slots[i]);
        if slot.len == 0 {
            return None;
        }
        seg.live -= 1;
        seg.live_bytes -= slot.len as u64;
        self.msgs -= 1;
        self.bytes -= slot.len as u64;
        self.subjs[slot.subj as usize].count -= 1;
        Some(slot.subj)
    }

    /// Re-establishes first/last of subjects that lost messages, and the store's first sequence.
    fn fix_after_removal(&mut self, touched: &HashSet<u32>) {
        for &id in touched {
            let info = &self.subjs[id as usize];
            if info.count == 0 {
                let name = info.name.clone();
                self.ids.remove(&name);
                self.free_ids.push(id);
                continue;
            }
            let (first, last) = (info.first, info.last);
            let first_live = self.locate(first).is_some_and(|(_, s)| s.subj == id);
            let last_live = self.locate(last).is_some_and(|(_, s)| s.subj == id);
            let new_first = if first_live {
                first
            } else {
                self.scan(first, last, id, true).unwrap_or(last)
            };
            let new_last = if last_live {
                last
            } else if info.count == 1 {
                new_first
            } else {
                self.scan(new_first, last, id, false).unwrap_or(new_first)
            };
            let info = &mut self.subjs[id as usize];
            info.first = new_first;
            info.last = new_last;
        }
        // The first sequence only moves forward: look from where it was, not from the
        // segment's start (removing from the head, as a work queue does, stays O(1) each).
        let from = self.first_seq;
        self.first_seq = self
            .segs
            .iter()
            .filter(|s| s.live > 0)
            .find_map(|s| s.live_seqs_from(from).next().map(|(q, _)| q))
            .unwrap_or(self.last_seq + 1);
    }

    /// First (forward) or last (backward) live sequence of subject `id` within `[from, to]`.
    fn scan(&self, from: u64, to: u64, id: u32, forward: bool) -> Option<u64> {
        let start = self.seg_pos(from).unwrap_or(0);
        let end = self.seg_pos(to)?;
        let in_range = |q: &u64| *q >= from && *q <= to;
        if forward {
            self.segs[start..=end].iter().find_map(|seg| {
                seg.live_seqs_from(from)
                    .find(|(q, s)| s.subj == id && in_range(q))
                    .map(|(q, _)| q)
            })
        } else {
            self.segs[start..=end].iter().rev().find_map(|seg| {
                seg.live_seqs()
                    .rev()
                    .find(|(q, s)| s.subj == id && in_range(q))
                    .map(|(q, _)| q)
            })
        }
    }

    fn matching_ids(&self, filter: &str) -> HashSet<u32> {
        if !subject::has_wildcard(filter) {
            return self.ids.get(filter).copied().into_iter().collect();
        }
        self.ids
            .iter()
            .filter(|(n, _)| subject::matches(filter, n))
            .map(|(_, &id)| id)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Deletion plans.

/// What to remove from one segment.
struct SegPlan {
    id: u64,
    /// Remove the whole segment file.
    whole: bool,
    /// Otherwise: these live sequences (ascending).
    seqs: Vec<u64>,
}

/// Removes live messages from the front while fewer than `n` messages or `bytes` bytes have
/// been removed, only below `before`.
fn plan_front(idx: &Index, mut n: u64, mut bytes: u64, before: u64) -> Vec<SegPlan> {
    let mut plan = Vec::new();
    for seg in &idx.segs {
        if n == 0 && bytes == 0 {
            break;
        }
        if seg.live == 0 {
            continue;
        }
        if seg.last_seq() < before && (n >= seg.live || bytes >= seg.live_bytes) {
            n = n.saturating_sub(seg.live);
            bytes = bytes.saturating_sub(seg.live_bytes);
            plan.push(SegPlan {
                id: seg.id,
                whole: true,
                seqs: Vec::new(),
            });
            continue;
        }
        let mut seqs = Vec::new();
        for (q, s) in seg.live_seqs() {
            if (n == 0 && bytes == 0) || q >= before {
                break;
            }
            seqs.push(q);
            n = n.saturating_sub(1);
            bytes = bytes.saturating_sub(s.len as u64);
        }
        let stop = seqs.len() < seg.live as usize;
        if !seqs.is_empty() {
            plan.push(SegPlan {
                id: seg.id,
                whole: false,
                seqs,
            });
        }
        if stop {
            break;
        }
    }
    plan
}

/// Removes the first `max` live messages (ascending) below `before` whose subject is in `ids`.
fn plan_subjects(
    idx: &Index,
    ids: &HashSet<u32>,
    from: u64,
    before: u64,
    mut max: u64,
) -> Vec<SegPlan> {
    let mut plan = Vec::new();
    let start = idx.seg_pos(from).unwrap_or(0);
    for seg in idx.segs.get(start..).unwrap_or(&[]) {
        if max == 0 || seg.base >= before {
            break;
        }
        let mut seqs = Vec::new();
        for (q, s) in seg.live_seqs() {
            if max == 0 || q >= before {
                break;
            }
            if q < from {
                continue;
            }
            if ids.contains(&s.subj) {
                seqs.push(q);
                max -= 1;
            }
        }
        if !seqs.is_empty() {
            let whole = seqs.len() as u64 == seg.live;
            plan.push(SegPlan {
                id: seg.id,
                whole,
                seqs,
            });
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// The public handle.

enum Op {
    Append(AppendOp),
    Delete {
        seq: u64,
        done: oneshot::Sender<Result<bool>>,
    },
    Purge {
        req: PurgeRequest,
        done: oneshot::Sender<Result<u64>>,
    },
    Expire {
        cutoff: i64,
        from: u64,
        keep: Vec<u64>,
        done: oneshot::Sender<Result<u64>>,
    },
    SetLimits {
        limits: Limits,
        done: oneshot::Sender<Result<u64>>,
    },
    Sync {
        done: oneshot::Sender<Result<()>>,
    },
}

struct Alloc {
    next_seq: u64,
    tx: Option<mpsc::Sender<Op>>,
}

struct Shared {
    alloc: Mutex<Alloc>,
    index: Arc<Mutex<Index>>,
    /// Why the writer stopped writing, once it did (see [`FileStore::failure`]).
    failed: Arc<std::sync::OnceLock<String>>,
    engine: Arc<Engine>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

thread_local! {
    /// Interval-mode stores this thread queued appends for while a [`DeferredWrites`] is open;
    /// `None` while none is.
    static DEFERRED: RefCell<Option<Vec<Arc<Engine>>>> = const { RefCell::new(None) };
}

/// While this guard lives, appends the current thread makes to interval-mode stores are queued
/// and carried out together when it drops: a connection's batch of publishes becomes one
/// `pwrite` per stream rather than one each. Guards nest (the outermost one writes). When the
/// guard drops, its appends are carried out then, or, if another thread is writing to that
/// store at that moment, by that thread (each writer looks for more work whenever it lets
/// go). Either may also get to them first.
#[must_use = "appends are written when the guard drops"]
pub struct DeferredWrites {
    outer: bool,
    /// Bound to the thread whose appends it defers.
    _thread: std::marker::PhantomData<*const ()>,
}

impl DeferredWrites {
    /// Opens a batch on the current thread.
    pub fn open() -> DeferredWrites {
        let outer = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            d.is_none() && {
                *d = Some(Vec::new());
                true
            }
        });
        DeferredWrites {
            outer,
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for DeferredWrites {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let engines = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for engine in engines {
            engine.help();
        }
    }
}

impl Shared {
    /// Has what was just sent carried out: by the sender itself for an append in interval mode
    /// (nothing to wait for but a `pwrite`, and no thread to wake), at the end of its batch if
    /// one is open, else by the writer thread.
    fn kick(&self, append: bool) {
        if append && self.engine.inline {
            let engine = &self.engine;
            let later = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
                Some(list) => {
                    if !list.iter().any(|e| Arc::ptr_eq(e, engine)) {
                        list.push(engine.clone());
                    }
                    true
                }
                None => false,
            });
            if !later {
                engine.help();
            }
        } else if let Some(h) = lock(&self.writer).as_ref() {
            h.thread().unpark();
        }
    }

    /// Stops the writer thread once it has carried out what was sent.
    fn stop(&self) {
        lock(&self.alloc).tx = None;
        let handle = lock(&self.writer).take();
        if let Some(h) = handle {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer and how work reaches it. Every operation is sent on the channel, in sequence
/// order (under the `Alloc` lock), and counted in `queued`; whoever holds `writer` takes them
/// off and carries them out, so they are carried out in that order: the writer thread, or in
/// interval mode an appender helping itself.
struct Engine {
    writer: Mutex<Writer>,
    /// Operations sent and not yet taken off the channel (counted before they are sent).
    queued: AtomicUsize,
    /// Interval mode: appenders carry out their own appends.
    inline: bool,
    /// The writer thread, to wake when an appender's write makes an interval sync due.
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Engine {
    /// Carries out what is queued unless someone else is at it. Whoever holds the lock looks
    /// at `queued` again after releasing it, so nothing sent is left behind.
    fn help(&self) {
        loop {
            let mut w = match self.writer.try_lock() {
                Ok(w) => w,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            w.appender = true;
            w.work(&self.queued);
            w.appender = false;
            if std::mem::take(&mut w.wake_thread) {
                // Work for the thread: an interval sync now due (it sleeps until its next
                // timer), an operation other than an append, or a compaction.
                if let Some(t) = self.thread.get() {
                    t.unpark();
                }
            }
            drop(w);
            if self.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }

    /// The writer thread: carries out what appenders do not (everything in `Always` mode, where
    /// it is the group commit), the periodic work (interval syncs, age expiry) and the final
    /// sync once the store is closed.
    fn run(&self) {
        // Whether looking again before sleeping pays: appends arrive while others are written
        // (several per batch, or found by the last look), not one at a time, each after an ack.
        let mut busy = false;
        loop {
            let timeout = {
                let mut w = lock(&self.writer);
                busy |= w.work(&self.queued) > 1;
                w.compact_deferred();
                w.tick();
                if w.closed {
                    let _ = w.sync_dirty();
                    let _ = w.sync_msgs_dir();
                    return;
                }
                w.wake_thread = false;
                w.next_timeout()
            };
            if self.queued.load(Ordering::SeqCst) > 0 {
                continue;
            }
            if !self.inline && busy {
                let spin = Instant::now();
                while spin.elapsed() < SPIN && self.queued.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                busy = self.queued.load(Ordering::SeqCst) > 0;
                if busy {
                    continue;
                }
            }
            match timeout {
                Some(t) => std::thread::park_timeout(t),
                None => std::thread::park(),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A durable, file-backed message store. Cheap to clone (all clones share one store); the
/// writer thread stops when the last clone is dropped or [`FileStore::close`] is called.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` on the real file system, recovering
    /// whatever a crash left behind.
    pub fn open(
        dir: impl AsRef<Path>,
        config: FileStoreConfig,
    ) -> Result<(FileStore, RecoveryReport)> {
        Self::open_with(Arc::new(RealFs), dir.as_ref(), config)
    }

    /// Opens the store through a file-system implementation (e.g. [`crate::fs::SimFs`]).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: FileStoreConfig,
    ) -> Result<(FileStore, RecoveryReport)> {
        if config.block_size < 1024 || config.block_size > MAX_BLOCK_SIZE {
            return Err(Error::Invalid(format!(
                "block_size must be between 1 KiB and {MAX_BLOCK_SIZE} bytes"
            )));
        }
        let started = Instant::now();
        let msgs_dir = dir.join("msgs");
        fs.create_dir_all(&msgs_dir)?;
        let mut report = RecoveryReport::default();
        let index = recover(&*fs, dir, &msgs_dir, &mut report)?;
        report.duration = started.elapsed();
        report.segments = index.segs.len();
        report.msgs = index.msgs;
        let next_seq = index.last_seq + 1;
        let index = Arc::new(Mutex::new(index));
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(std::sync::OnceLock::new());
        let inline = matches!(config.sync, SyncPolicy::Interval(_));
        // Best effort: on a full disk the store still opens (and a purge can free space).
        let floor_slot = prepare_floor(&*fs, dir).unwrap_or_else(|e| {
            tracing::warn!(dir = %dir.display(), error = %e, "store: cannot prepare the sequence floor file");
            0
        });
        let writer = Writer {
            failed: failed.clone(),
            fs,
            root: dir.to_path_buf(),
            dir: msgs_dir,
            index: index.clone(),
            cfg: config,
            rx,
            dirty: Vec::new(),
            last_sync: Instant::now(),
            poisoned: None,
            last_expire: Instant::now(),
            dir_unsynced: false,
            queue: VecDeque::new(),
            floor_slot,
            appender: false,
            wake_thread: false,
            to_compact: Vec::new(),
            closed: false,
        };
        let engine = Arc::new(Engine {
            writer: Mutex::new(writer),
            queued: AtomicUsize::new(0),
            inline,
            thread: std::sync::OnceLock::new(),
        });
        let run = engine.clone();
        let handle = std::thread::Builder::new()
            .name("natter-store".into())
            .spawn(move || run.run())
            .map_err(Error::from)?;
        let _ = engine.thread.set(handle.thread().clone());
        let store = FileStore {
            shared: Arc::new(Shared {
                alloc: Mutex::new(Alloc {
                    next_seq,
                    tx: Some(tx),
                }),
                index,
                failed,
                engine,
                writer: Mutex::new(Some(handle)),
            }),
        };
        Ok((store, report))
    }

    fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Pending<T> {
        let (done, pending) = Pending::channel();
        if self.push(make(done)) {
            self.shared.kick(false);
        }
        pending
    }

    /// Sends `op` to the writer (counted in `queued` first); false if the store is closed.
    fn push(&self, op: Op) -> bool {
        let alloc = lock(&self.shared.alloc);
        self.push_locked(&alloc, op)
    }

    fn push_locked(&self, alloc: &Alloc, op: Op) -> bool {
        let Some(tx) = &alloc.tx else {
            return false;
        };
        let queued = &self.shared.engine.queued;
        queued.fetch_add(1, Ordering::SeqCst);
        if tx.send(op).is_err() {
            queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Appends a message. The sequence is assigned now, in call order; the returned [`Append`]
    /// completes once the message is durable per the sync policy (with `Always`, after the
    /// group commit's fsync). A failed append's sequence is not reused while the store is open.
    pub fn append(&self, subject: &str, headers: Bytes, payload: Bytes, timestamp: i64) -> Append {
        if let Err(e) = crate::validate(subject, &headers, &payload) {
            return Append {
                seq: 0,
                done: Pending::ready(Err(e)),
            };
        }
        let (done, pending) = Pending::channel();
        let mut alloc = lock(&self.shared.alloc);
        let seq = alloc.next_seq;
        if alloc.tx.is_none() {
            return Append {
                seq,
                done: Pending::ready(Err(Error::Closed)),
            };
        }
        let op = Op::Append(AppendOp {
            seq,
            subject: subject.to_string(),
            headers,
            payload,
            ts: timestamp,
            done,
        });
        if self.push_locked(&alloc, op) {
            alloc.next_seq += 1;
        }
        drop(alloc);
        self.shared.kick(true);
        Append { seq, done: pending }
    }

    /// The sequence the next append will get.
    pub fn next_seq(&self) -> u64 {
        lock(&self.shared.alloc).next_seq
    }

    /// Reads the message with sequence `seq`; `Ok(None)` if it is not stored. A record that fails
    /// its checksum is an error, never returned as data.
    pub fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
        let found = {
            let idx = lock(&self.shared.index);
            idx.locate(seq).map(|(seg, s)| (seg.file.clone(), s))
        };
        match found {
            None => Ok(None),
            Some((file, slot)) => read_msg(&*file, seq, slot).map(Some),
        }
    }

    /// The first stored message with sequence `>= start` whose subject matches `filter`
    /// (any subject if `None`).
    pub fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>> {
        let found = {
            let idx = lock(&self.shared.index);
            let ids = filter.map(|f| idx.matching_ids(f));
            let from = idx.seg_pos(start).unwrap_or(0);
            idx.segs.get(from..).unwrap_or(&[]).iter().find_map(|seg| {
                seg.live_seqs_from(start)
                    .find(|(_, s)| ids.as_ref().is_none_or(|i| i.contains(&s.subj)))
                    .map(|(q, s)| (seg.file.clone(), q, s))
            })
        };
        match found {
            None => Ok(None),
            Some((file, q, slot)) => read_msg(&*file, q, slot).map(Some),
        }
    }

    /// Up to `max` stored messages with sequence `>= start` matching `filter`, in order, read
    /// with one `pread` (those of one segment whose records lie within `RUN_SPAN` bytes of the
    /// first): a consumer streaming a backlog pays one system call and one allocation per run,
    /// not per message. Never empty while [`FileStore::get_next`] would find something.
    pub fn get_run(&self, start: u64, filter: Option<&str>, max: usize) -> Result<Vec<StoredMsg>> {
        let (file, run) = {
            let idx = lock(&self.shared.index);
            let ids = filter.map(|f| idx.matching_ids(f));
            let wanted = |s: &Slot| ids.as_ref().is_none_or(|i| i.contains(&s.subj));
            let from = idx.seg_pos(start).unwrap_or(0);
            let Some((seg, first)) = idx.segs.get(from..).unwrap_or(&[]).iter().find_map(|seg| {
                seg.live_seqs_from(start)
                    .find(|(_, s)| wanted(s))
                    .map(|found| (seg, found))
            }) else {
                return Ok(Vec::new());
            };
            let begin = first.1.off as u64;
            let mut end = begin + first.1.len as u64;
            let mut run = vec![first];
            for (q, s) in seg.live_seqs_from(first.0 + 1) {
                if run.len() >= max.max(1) {
                    break;
                }
                let s_end = s.off as u64 + s.len as u64;
                // Records are laid out in sequence order; anything else ends the run.
                if (s.off as u64) < end || s_end - begin > RUN_SPAN {
                    break;
                }
                if wanted(&s) {
                    end = s_end;
                    run.push((q, s));
                }
            }
            (seg.file.clone(), run)
        };
        let begin = run[0].1.off as u64;
        let last = run[run.len() - 1].1;
        let mut buf = vec![0u8; (last.off as u64 + last.len as u64 - begin) as usize];
        file.read_exact_at(&mut buf, begin)?;
        let buf = Bytes::from(buf);
        run.into_iter()
            .map(|(q, s)| {
                let at = (s.off as u64 - begin) as usize;
                decode_msg(buf.slice(at..at + s.len as usize), q)
            })
            .collect()
    }

    /// The newest message whose subject is `subject` (or matches it, if it has wildcards).
    pub fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>> {
        let seq = {
            let idx = lock(&self.shared.index);
            idx.matching_ids(subject)
                .iter()
                .map(|&id| idx.subjs[id as usize].last)
                .max()
        };
        match seq {
            None => Ok(None),
            Some(q) => self.get(q),
        }
    }

    /// Whether message `seq` is stored (from the index: no read).
    pub fn contains(&self, seq: u64) -> bool {
        lock(&self.shared.index).locate(seq).is_some()
    }

    /// The first stored sequence `>= start` (from the index: no read).
    pub fn next_stored(&self, start: u64) -> Option<u64> {
        let idx = lock(&self.shared.index);
        let from = idx.seg_pos(start).unwrap_or(0);
        idx.segs
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .find_map(|seg| seg.live_seqs_from(start).next().map(|(q, _)| q))
    }

    /// The last sequence written (from the index: appends still on their way to it are later).
    pub fn last_written(&self) -> u64 {
        lock(&self.shared.index).last_seq
    }

    /// The last sequence stored on the literal `subject` (from the index: no read).
    pub fn last_seq_for(&self, subject: &str) -> Option<u64> {
        let idx = lock(&self.shared.index);
        let info = &idx.subjs[*idx.ids.get(subject)? as usize];
        (info.count > 0).then_some(info.last)
    }

    /// Whether any message on the literal `subject` is stored (from the index: no read).
    pub fn holds_subject(&self, subject: &str) -> bool {
        let idx = lock(&self.shared.index);
        idx.ids
            .get(subject)
            .is_some_and(|&id| idx.subjs[id as usize].count > 0)
    }

    /// Deletes one message; `Ok(true)` if it was stored. Durable (tombstone fsynced) on completion.
    pub fn delete(&self, seq: u64) -> Pending<bool> {
        self.send(|done| Op::Delete { seq, done })
    }

    /// Purges messages; completes with how many were removed.
    pub fn purge(&self, req: PurgeRequest) -> Pending<u64> {
        if req.up_to_seq.is_some() && req.keep.is_some() {
            return Pending::ready(Err(Error::Invalid(
                "up_to_seq and keep are exclusive".into(),
            )));
        }
        let (done, pending) = Pending::channel();
        let mut alloc = lock(&self.shared.alloc);
        let bump = match (&req.filter, req.up_to_seq) {
            (None, Some(s)) if s > alloc.next_seq => Some(s),
            _ => None,
        };
        if self.push_locked(&alloc, Op::Purge { req, done }) {
            if let Some(s) = bump {
                alloc.next_seq = s;
            }
        }
        drop(alloc);
        self.shared.kick(false);
        pending
    }

    /// Removes messages with a timestamp before `cutoff` (Unix nanoseconds).
    pub fn expire(&self, cutoff: i64) -> Pending<u64> {
        self.expire_keeping(cutoff, 0, Vec::new())
    }

    /// [`FileStore::expire`] of the messages from sequence `from` on, except those in `keep`
    /// (sorted): messages that never expire (`Nats-TTL: never`).
    pub fn expire_keeping(&self, cutoff: i64, from: u64, keep: Vec<u64>) -> Pending<u64> {
        self.send(|done| Op::Expire {
            cutoff,
            from,
            keep,
            done,
        })
    }

    /// Replaces the retention limits and enforces them at once; completes with how many
    /// messages were removed.
    pub fn set_limits(&self, limits: Limits) -> Pending<u64> {
        self.send(|done| Op::SetLimits { limits, done })
    }

    /// Completes once everything written so far is fsynced (useful with `SyncPolicy::Interval`).
    pub fn sync(&self) -> Pending<()> {
        self.send(|done| Op::Sync { done })
    }

    /// Counters: messages, bytes, first/last sequence and timestamps, deleted count.
    pub fn state(&self) -> StoreState {
        let (mut st, first) = {
            let idx = lock(&self.shared.index);
            let st = StoreState {
                msgs: idx.msgs,
                bytes: idx.bytes,
                first_seq: idx.first_seq,
                first_ts: 0,
                last_seq: idx.last_seq,
                last_ts: idx.last_ts,
                num_deleted: if idx.msgs == 0 {
                    0
                } else {
                    idx.last_seq - idx.first_seq + 1 - idx.msgs
                },
                num_subjects: idx.ids.len() as u64,
            };
            (
                st,
                idx.locate(idx.first_seq)
                    .map(|(s, slot)| (s.file.clone(), slot)),
            )
        };
        if let Some((file, slot)) = first {
            let mut h = [0u8; HEADER_LEN];
            if file.read_exact_at(&mut h, slot.off as u64).is_ok() {
                st.first_ts = record::parse_header(&h).map_or(0, |h| h.ts);
            }
        }
        st
    }

    /// Message counts per subject, for subjects matching `filter` (all if `None`).
    pub fn subject_counts(&self, filter: Option<&str>) -> HashMap<String, u64> {
        let idx = lock(&self.shared.index);
        idx.ids
            .iter()
            .filter(|(n, _)| filter.is_none_or(|f| subject::matches(f, n)))
            .map(|(n, &id)| (n.to_string(), idx.subjs[id as usize].count))
            .collect()
    }

    /// Why the store stopped accepting writes (a failed sync or rollback left what is on disk
    /// unknown until it is reopened); `None` while it is healthy.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    /// Syncs everything and stops the writer. Later operations fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        let r = self.sync();
        self.shared.stop();
        match r.wait() {
            Err(Error::Closed) => Ok(()),
            r => r,
        }
    }
}

/// The most bytes [`FileStore::get_run`] reads at once.
const RUN_SPAN: u64 = 256 << 10;

fn read_msg(file: &dyn FileHandle, seq: u64, slot: Slot) -> Result<StoredMsg> {
    let mut buf = vec![0u8; slot.len as usize];
    file.read_exact_at(&mut buf, slot.off as u64)?;
    decode_msg(Bytes::from(buf), seq)
}

/// Checks and decodes the record of message `seq`.
fn decode_msg(buf: Bytes, seq: u64) -> Result<StoredMsg> {
    let corrupt = |d: &str| Error::Corrupt {
        seq,
        detail: d.into(),
    };
    let d = record::decode(buf).ok_or_else(|| corrupt("checksum mismatch"))?;
    if d.header.seq != seq {
        return Err(corrupt("sequence mismatch"));
    }
    Ok(StoredMsg {
        seq,
        subject: d.subject,
        headers: d.headers,
        payload: d.payload,
        timestamp: d.header.ts,
    })
}

// ---------------------------------------------------------------------------------------------
// The writer thread: the only mutator of files and index.

struct Writer {
    fs: Arc<dyn Fs>,
    root: PathBuf,
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
    cfg: FileStoreConfig,
    rx: mpsc::Receiver<Op>,
    /// Files written but not yet synced (interval mode).
    dirty: Vec<Arc<dyn FileHandle>>,
    last_sync: Instant,
    poisoned: Option<String>,
    /// Shared with the store's handles, so health checks see a poisoned writer.
    failed: Arc<std::sync::OnceLock<String>>,
    last_expire: Instant,
    /// A file was created in `dir` whose entry may not be durable yet (e.g. a segment created by
    /// a batch that then failed): the next successful write syncs the directory before acking.
    dir_unsynced: bool,
    /// Operations taken off the channel and not yet carried out.
    queue: VecDeque<Op>,
    /// The slot of the sequence floor file the next floor goes to (see `write_floor`).
    floor_slot: u64,
    /// Carrying out work for an appender (interval mode) rather than on the thread: only
    /// appends, and no compaction; what it leaves is the thread's.
    appender: bool,
    /// An appender left work to the thread, or made an interval sync due (`dirty` went from
    /// empty to not: the thread sleeps without a timer then): the thread must be woken.
    wake_thread: bool,
    /// Segments to compact, found by an appender.
    to_compact: Vec<u64>,
    /// The channel is closed and empty: the store was closed.
    closed: bool,
}

/// One append, as sent to the writer.
struct AppendOp {
    seq: u64,
    subject: String,
    headers: Bytes,
    payload: Bytes,
    ts: i64,
    done: oneshot::Sender<Result<u64>>,
}

impl Writer {
    /// Takes what was sent off the channel and carries it out, one run at a time, until
    /// nothing is left (the periodic work is the thread's: no fsync on an appender); returns how
    /// many operations it took. Only ever called with the writer's lock held,
    /// so operations are carried out in the order they were sent (their sequence order).
    fn work(&mut self, queued: &AtomicUsize) -> usize {
        let mut taken = 0;
        loop {
            // Group commit: take everything that is pending now.
            let mut bytes = 0usize;
            while bytes < MAX_BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(op) => {
                        queued.fetch_sub(1, Ordering::SeqCst);
                        taken += 1;
                        if let Op::Append(a) = &op {
                            bytes += a.payload.len() + 64;
                        }
                        self.queue.push_back(op)
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.closed = true;
                        break;
                    }
                }
            }
            if self.queue.is_empty() {
                return taken;
            }
            if self.appender && !matches!(self.queue.front(), Some(Op::Append(_))) {
                // Deletes, purges, syncs and limit changes may fsync or rewrite files: not on
                // an appender's (async) task. They and what follows them wait for the thread.
                self.wake_thread = true;
                return taken;
            }
            self.step();
        }
    }

    /// Compacts the segments appenders found worth it.
    fn compact_deferred(&mut self) {
        for id in std::mem::take(&mut self.to_compact) {
            if let Err(e) = self.compact(id) {
                tracing::warn!("store: compaction of segment {id} failed: {e}");
                if matches!(e, Error::Poisoned(_)) {
                    break;
                }
            }
        }
    }

    /// Carries out one run of consecutive appends, or of consecutive deletes, or one other op.
    fn step(&mut self) {
        match self.queue.front() {
            Some(Op::Append(_)) => {
                let mut run = Vec::new();
                while let Some(Op::Append(_)) = self.queue.front() {
                    if let Some(Op::Append(a)) = self.queue.pop_front() {
                        run.push(a);
                    }
                }
                self.append_run(run);
            }
            Some(Op::Delete { .. }) => {
                let mut run = Vec::new();
                while let Some(Op::Delete { .. }) = self.queue.front() {
                    if let Some(Op::Delete { seq, done }) = self.queue.pop_front() {
                        run.push((seq, done));
                    }
                }
                self.delete_run(run);
            }
            Some(_) => {
                let op = self.queue.pop_front().expect("non-empty");
                self.other(op);
            }
            None => {}
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let mut t: Option<Duration> = None;
        if let SyncPolicy::Interval(iv) = self.cfg.sync {
            if !self.dirty.is_empty() {
                t = Some(iv.saturating_sub(self.last_sync.elapsed()));
            }
        }
        if self.cfg.limits.max_age.is_some() {
            let a = Duration::from_secs(1).saturating_sub(self.last_expire.elapsed());
            t = Some(t.map_or(a, |t| t.min(a)));
        }
        t
    }

    /// Periodic work: interval syncs and age expiry.
    fn tick(&mut self) {
        if let SyncPolicy::Interval(iv) = self.cfg.sync {
            if !self.dirty.is_empty() && self.last_sync.elapsed() >= iv {
                if let Err(e) = self.sync_dirty() {
                    self.poison(&e);
                }
            }
        }
        if let Some(age) = self.cfg.limits.max_age {
            if self.last_expire.elapsed() >= Duration::from_secs(1) {
                self.last_expire = Instant::now();
                let cutoff = now_nanos().saturating_sub(age.as_nanos() as i64);
                if let Err(e) = self.expire(cutoff, 0, &[]) {
                    tracing::warn!("store: age expiry failed: {e}");
                }
            }
        }
    }

    fn poison(&mut self, e: &Error) {
        tracing::error!("store: stopping writes after failure: {e}");
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
            let _ = self.failed.set(e.to_string());
        }
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(m) => Err(Error::Poisoned(m.clone())),
            None => Ok(()),
        }
    }

    fn sync_dirty(&mut self) -> Result<()> {
        for f in std::mem::take(&mut self.dirty) {
            f.sync()?;
        }
        self.sync_msgs_dir()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs `files` now (Always) or remembers them for the next interval sync.
    fn sync_files(&mut self, files: Vec<Arc<dyn FileHandle>>) -> Result<()> {
        match self.cfg.sync {
            SyncPolicy::Always => {
                for f in files {
                    f.sync()?;
                }
                Ok(())
            }
            SyncPolicy::Interval(_) => {
                self.wake_thread |= self.dirty.is_empty() && !files.is_empty();
                for f in files {
                    if !self.dirty.iter().any(|d| Arc::ptr_eq(d, &f)) {
                        self.dirty.push(f);
                    }
                }
                Ok(())
            }
        }
    }

    /// Fsyncs the segment directory if an entry in it changed since the last time.
    fn sync_msgs_dir(&mut self) -> Result<()> {
        if self.dir_unsynced {
            self.fs.sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    fn blk_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.blk"))
    }
    fn dlt_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.dlt"))
    }

    fn append_run(&mut self, run: Vec<AppendOp>) {
        if let Err(e) = self.check() {
            for op in run {
                let _ = op.done.send(Err(e.clone()));
            }
            return;
        }
        match self.write_appends(&run) {
            Ok(()) => {
                // The subjects touched matter only to a per-subject limit: no set otherwise.
                let ids: HashSet<String> = if self.cfg.limits.max_msgs_per_subject.is_some() {
                    run.iter().map(|o| o.subject.clone()).collect()
                } else {
                    HashSet::new()
                };
                if let Err(e) = self.enforce_limits(Some(&ids)) {
                    tracing::warn!("store: limit enforcement failed: {e}");
                }
                for op in run {
                    let _ = op.done.send(Ok(op.seq));
                }
            }
            Err(e) => {
                for op in run {
                    let _ = op.done.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes a run of appends with one write per touched segment and one sync each, then
    /// publishes them in the index.
    fn write_appends(&mut self, run: &[AppendOp]) -> Result<()> {
        struct Chunk {
            id: u64,
            file: Arc<dyn FileHandle>,
            start: u64,
            buf: Vec<u8>,
            new: bool,
        }
        let mut chunks: Vec<Chunk> = Vec::new();
        {
            let idx = lock(&self.index);
            if let Some(seg) = idx.segs.last() {
                chunks.push(Chunk {
                    id: seg.id,
                    file: seg.file.clone(),
                    start: seg.size,
                    buf: Vec::new(),
                    new: false,
                });
            }
        }
        // Slot placement per op: (chunk index, offset).
        let mut placed = Vec::with_capacity(run.len());
        let mut result = Ok(());
        for op in run {
            let len = record::record_len(&op.subject, &op.headers, &op.payload) as u64;
            let need_new = match chunks.last() {
                None => true,
                Some(c) => {
                    let used = c.start + c.buf.len() as u64;
                    used > 0 && used + len > self.cfg.block_size
                }
            };
            if need_new {
                match self.fs.open(&self.blk_path(op.seq), true) {
                    Ok(file) => {
                        self.dir_unsynced = true;
                        chunks.push(Chunk {
                            id: op.seq,
                            file,
                            start: 0,
                            buf: Vec::new(),
                            new: true,
                        });
                    }
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let c = chunks.last_mut().expect("chunk");
            let off = c.start + c.buf.len() as u64;
            record::encode(
                &mut c.buf,
                op.seq,
                op.ts,
                &op.subject,
                &op.headers,
                &op.payload,
            );
            placed.push((chunks.len() - 1, off as u32, len as u32));
        }
        // Write.
        if result.is_ok() {
            for (i, c) in chunks.iter().enumerate() {
                if c.buf.is_empty() {
                    continue;
                }
                if let Err(e) = c.file.write_all_at(&c.buf, c.start) {
                    // Roll back what this run wrote so a failed (e.g. disk full) batch leaves
                    // no partial records behind.
                    for c in &chunks[..=i] {
                        if let Err(e2) = c.file.set_len(c.start) {
                            self.poison(&e2.into());
                        }
                    }
                    result = Err(e.into());
                    break;
                }
            }
        }
        // Register new (possibly empty) segments even on failure: their files exist.
        let register_new = |idx: &mut Index| {
            for c in chunks.iter().filter(|c| c.new) {
                if idx.segs.iter().all(|s| s.id != c.id) {
                    idx.segs.push(Seg {
                        id: c.id,
                        file: c.file.clone(),
                        size: 0,
                        base: c.id,
                        slots: Vec::new(),
                        live: 0,
                        live_bytes: 0,
                        max_ts: i64::MIN,
                        dlt: None,
                        dlt_size: 0,
                    });
                }
            }
        };
        if let Err(e) = result {
            register_new(&mut lock(&self.index));
            return Err(e);
        }
        // Sync: data files, then the directory if a segment was created (by this batch or by
        // an earlier one that failed after creating it: its entry must be durable before any
        // message in it is acknowledged).
        let files: Vec<_> = chunks
            .iter()
            .filter(|c| !c.buf.is_empty() || c.new)
            .map(|c| c.file.clone())
            .collect();
        let synced = self.sync_files(files).and_then(|_| match self.cfg.sync {
            SyncPolicy::Always => self.sync_msgs_dir(),
            // Acknowledged unsynced anyway: the new segment's entry is synced with the data.
            SyncPolicy::Interval(_) => Ok(()),
        });
        if let Err(e) = synced {
            self.poison(&e);
            register_new(&mut lock(&self.index));
            return Err(e);
        }
        // Publish in the index.
        let mut idx = lock(&self.index);
        register_new(&mut idx);
        for c in &chunks {
            if let Some(seg) = idx.segs.iter_mut().rev().find(|s| s.id == c.id) {
                seg.size = c.start + c.buf.len() as u64;
            }
        }
        let first_pos = idx.segs.len() - chunks.len();
        for (op, (ci, off, len)) in run.iter().zip(placed) {
            let subj = idx.intern(&op.subject);
            idx.add(first_pos + ci, op.seq, Slot { off, len, subj }, op.ts);
            idx.last_seq = op.seq;
            idx.last_ts = op.ts;
        }
        Ok(())
    }

    fn enforce_limits(&mut self, subjects: Option<&HashSet<String>>) -> Result<u64> {
        let limits = self.cfg.limits;
        let mut removed = 0;
        if let Some(max) = limits.max_msgs_per_subject {
            let plan = {
                let idx = lock(&self.index);
                let ids: Vec<u32> = match subjects {
                    Some(s) => s
                        .iter()
                        .filter_map(|n| idx.ids.get(n.as_str()).copied())
                        .collect(),
                    None => idx.ids.values().copied().collect(),
                };
                let mut plan: Vec<SegPlan> = Vec::new();
                for id in ids {
                    let info = &idx.subjs[id as usize];
                    if info.count > max {
                        let set = HashSet::from([id]);
                        merge_plans(
                            &mut plan,
                            plan_subjects(&idx, &set, info.first, u64::MAX, info.count - max),
                        );
                    }
                }
                plan
            };
            removed += self.execute(plan)?;
        }
        if limits.max_msgs.is_some() || limits.max_bytes.is_some() {
            let plan = {
                let idx = lock(&self.index);
                let n = limits.max_msgs.map_or(0, |m| idx.msgs.saturating_sub(m));
                let b = limits.max_bytes.map_or(0, |m| idx.bytes.saturating_sub(m));
                plan_front(&idx, n, b, u64::MAX)
            };
            removed += self.execute(plan)?;
        }
        Ok(removed)
    }

    fn delete_run(&mut self, run: Vec<(u64, oneshot::Sender<Result<bool>>)>) {
        if let Err(e) = self.check() {
            for (_, d) in run {
                let _ = d.send(Err(e.clone()));
            }
            return;
        }
        let (plan, present) = {
            let idx = lock(&self.index);
            let mut by_seg: Vec<SegPlan> = Vec::new();
            let mut present = Vec::with_capacity(run.len());
            let mut seen = HashSet::new();
            for (seq, _) in &run {
                let live = idx.locate(*seq).is_some() && seen.insert(*seq);
                present.push(live);
                if live {
                    let id = idx.segs[idx.seg_pos(*seq).expect("located")].id;
                    merge_plans(
                        &mut by_seg,
                        vec![SegPlan {
                            id,
                            whole: false,
                            seqs: vec![*seq],
                        }],
                    );
                }
            }
            for p in &mut by_seg {
                let seg = idx.segs.iter().find(|s| s.id == p.id).expect("seg");
                p.whole = p.seqs.len() as u64 == seg.live;
            }
            (by_seg, present)
        };
        let r = self.execute(plan);
        for ((_, done), was) in run.into_iter().zip(present) {
            let _ = done.send(r.clone().map(|_| was));
        }
    }

    fn other(&mut self, op: Op) {
        match op {
            Op::Purge { req, done } => {
                let r = self.check().and_then(|_| self.purge(&req));
                let _ = done.send(r);
            }
            Op::Expire {
                cutoff,
                from,
                keep,
                done,
            } => {
                let r = self.check().and_then(|_| self.expire(cutoff, from, &keep));
                let _ = done.send(r);
            }
            Op::SetLimits { limits, done } => {
                self.cfg.limits = limits;
                let r = self.check().and_then(|_| self.enforce_limits(None));
                let _ = done.send(r);
            }
            Op::Sync { done } => {
                let r = self.check().and_then(|_| self.sync_dirty());
                if let Err(e) = &r {
                    self.poison(e);
                }
                let _ = done.send(r);
            }
            Op::Append(_) | Op::Delete { .. } => unreachable!("handled in runs"),
        }
    }

    fn purge(&mut self, req: &PurgeRequest) -> Result<u64> {
        let (plan, floor) = {
            let idx = lock(&self.index);
            let before = req.up_to_seq.unwrap_or(u64::MAX);
            match &req.filter {
                None => {
                    let n = match req.keep {
                        Some(k) => idx.msgs.saturating_sub(k),
                        None => u64::MAX,
                    };
                    let floor = req
                        .up_to_seq
                        .filter(|&s| s > idx.last_seq + 1)
                        .map(|s| s - 1);
                    (plan_front(&idx, n, 0, before), floor)
                }
                Some(f) => {
                    let ids = idx.matching_ids(f);
                    let total: u64 = ids.iter().map(|&i| idx.subjs[i as usize].count).sum();
                    let max = match req.keep {
                        Some(k) => total.saturating_sub(k),
                        None => u64::MAX,
                    };
                    (plan_subjects(&idx, &ids, 0, before, max), None)
                }
            }
        };
        if let Some(floor) = floor {
            // Moving the sequence forward: persist it before anything depends on it.
            self.write_floor(floor)?;
            let mut idx = lock(&self.index);
            idx.last_seq = floor;
        }
        let n = self.execute(plan)?;
        if floor.is_some() {
            let mut idx = lock(&self.index);
            idx.fix_after_removal(&HashSet::new());
        }
        Ok(n)
    }

    /// Removes messages older than `cutoff` from sequence `from` on, except those in `keep`
    /// (sorted).
    fn expire(&mut self, cutoff: i64, from: u64, keep: &[u64]) -> Result<u64> {
        let kept = |q: u64| q < from || keep.binary_search(&q).is_ok();
        // Whole segments whose newest message is older than the cutoff go at once (unless they
        // hold a kept message); within the first remaining segment, timestamps are read from
        // the record headers.
        let (mut plan, partial) = {
            let idx = lock(&self.index);
            let mut plan = Vec::new();
            let mut partial = None;
            for seg in &idx.segs {
                if seg.live == 0 || seg.last_seq() < from {
                    continue;
                }
                if seg.max_ts < cutoff {
                    let k = keep.partition_point(|&q| q < seg.base);
                    if seg.base < from || keep.get(k).is_some_and(|&q| q <= seg.last_seq()) {
                        let seqs: Vec<u64> = seg
                            .live_seqs()
                            .map(|(q, _)| q)
                            .filter(|&q| !kept(q))
                            .collect();
                        if !seqs.is_empty() {
                            plan.push(SegPlan {
                                id: seg.id,
                                whole: false,
                                seqs,
                            });
                        }
                    } else {
                        plan.push(SegPlan {
                            id: seg.id,
                            whole: true,
                            seqs: Vec::new(),
                        });
                    }
                } else {
                    let slots: Vec<(u64, Slot)> = seg.live_seqs().collect();
                    partial = Some((seg.id, seg.file.clone(), slots, seg.live));
                    break;
                }
            }
            (plan, partial)
        };
        if let Some((id, file, slots, live)) = partial {
            let mut seqs = Vec::new();
            for (q, s) in slots {
                if kept(q) {
                    continue;
                }
                let mut h = [0u8; HEADER_LEN];
                file.read_exact_at(&mut h, s.off as u64)?;
                match record::parse_header(&h) {
                    Some(h) if h.ts < cutoff => seqs.push(q),
                    _ => break,
                }
            }
            if !seqs.is_empty() {
                let whole = seqs.len() as u64 == live;
                plan.push(SegPlan { id, whole, seqs });
            }
        }
        self.execute(plan)
    }

    /// Persists the sequence floor: overwritten in place, in the slot not holding the newest
    /// value, so it needs no new disk space (a purge must work on a full disk) and a torn write
    /// leaves the previous floor readable.
    fn write_floor(&mut self, last_seq: u64) -> Result<()> {
        let path = self.root.join("floor");
        let (f, fresh) = match self.fs.open(&path, false) {
            Ok(f) => (f, false),
            Err(_) => (self.fs.open(&path, true)?, true),
        };
        let slot = self.floor_slot;
        f.write_all_at(&record::tombstone(last_seq), slot * TOMBSTONE_LEN as u64)?;
        f.sync()?;
        if fresh {
            self.fs.sync_dir(&self.root)?;
        }
        self.floor_slot = 1 - slot;
        Ok(())
    }

    /// Carries out a deletion plan: tombstones (synced per policy) for partial segments, file
    /// removal (directory fsynced) for whole ones; then the index; then compaction.
    fn execute(&mut self, mut plan: Vec<SegPlan>) -> Result<u64> {
        if plan.is_empty() {
            return Ok(0);
        }
        {
            // A partial plan that covers every live message of its segment removes the file.
            let idx = lock(&self.index);
            for p in plan.iter_mut().filter(|p| !p.whole) {
                if let Some(seg) = idx.segs.iter().find(|s| s.id == p.id) {
                    p.whole = p.seqs.len() as u64 >= seg.live;
                }
            }
        }
        // 1. Tombstones.
        let mut written: Vec<(u64, Arc<dyn FileHandle>, u64, u64)> = Vec::new(); // id, file, old, new size
        for p in plan.iter().filter(|p| !p.whole) {
            let (existing, size) = {
                let idx = lock(&self.index);
                let seg = idx
                    .segs
                    .iter()
                    .find(|s| s.id == p.id)
                    .expect("planned segment");
                (seg.dlt.clone(), seg.dlt_size)
            };
            let file = match existing {
                Some(f) => f,
                None => {
                    let f = self.fs.open(&self.dlt_path(p.id), true)?;
                    self.dir_unsynced = true;
                    f
                }
            };
            let mut buf = Vec::with_capacity(p.seqs.len() * TOMBSTONE_LEN);
            for &q in &p.seqs {
                buf.extend_from_slice(&record::tombstone(q));
            }
            if let Err(e) = file.write_all_at(&buf, size) {
                let _ = file.set_len(size);
                for (_, f, old, _) in &written {
                    if let Err(e2) = f.set_len(*old) {
                        self.poison(&e2.into());
                    }
                }
                return Err(e.into());
            }
            written.push((p.id, file, size, size + buf.len() as u64));
        }
        let files = written.iter().map(|w| w.1.clone()).collect();
        if let Err(e) = self.sync_files(files) {
            self.poison(&e);
            return Err(e);
        }
        // 2. Whole segments. Removing the newest segment would lose the last sequence: persist
        //    it first.
        let whole: Vec<u64> = plan.iter().filter(|p| p.whole).map(|p| p.id).collect();
        let io = (|| -> Result<()> {
            let (last_id, last_seq) = {
                let idx = lock(&self.index);
                (idx.segs.last().map(|s| s.id), idx.last_seq)
            };
            if whole.iter().any(|&id| Some(id) == last_id) {
                self.write_floor(last_seq)?;
            }
            for &id in &whole {
                self.fs.remove(&self.blk_path(id))?;
                // The tombstone file may exist even if unknown to the index (a failed write).
                let _ = self.fs.remove(&self.dlt_path(id));
                self.dir_unsynced = true;
            }
            self.sync_msgs_dir()
        })();
        if let Err(e) = io {
            self.poison(&e);
            return Err(e);
        }
        // 3. Index.
        let mut removed = 0;
        let mut compact = Vec::new();
        {
            let mut idx = lock(&self.index);
            let mut touched = HashSet::new();
            for (id, file, _, new_size) in written {
                let pos = idx.segs.iter().position(|s| s.id == id).expect("seg");
                idx.segs[pos].dlt = Some(file);
                idx.segs[pos].dlt_size = new_size;
            }
            for p in &plan {
                let pos = idx.segs.iter().position(|s| s.id == p.id).expect("seg");
                if p.whole {
                    let seqs: Vec<u64> = idx.segs[pos].live_seqs().map(|(q, _)| q).collect();
                    for q in seqs {
                        touched.extend(idx.unlink(pos, q));
                        removed += 1;
                    }
                    idx.segs.remove(pos);
                } else {
                    for &q in &p.seqs {
                        if let Some(s) = idx.unlink(pos, q) {
                            touched.insert(s);
                            removed += 1;
                        }
                    }
                    let seg = &idx.segs[pos];
                    let garbage = seg.size - seg.live_bytes;
                    let sealed = pos + 1 < idx.segs.len();
                    if sealed
                        && garbage >= COMPACT_MIN_GARBAGE
                        && garbage as f64 >= seg.size as f64 * COMPACT_GARBAGE_RATIO
                    {
                        compact.push(seg.id);
                    }
                }
            }
            idx.fix_after_removal(&touched);
        }
        // 4. Compaction (a failure leaves the old segment in place, which is still correct),
        //    left to the thread when an appender got here.
        if self.appender {
            self.wake_thread |= !compact.is_empty();
            self.to_compact.extend(compact);
            return Ok(removed);
        }
        for id in compact {
            if let Err(e) = self.compact(id) {
                tracing::warn!("store: compaction of segment {id} failed: {e}");
                if matches!(e, Error::Poisoned(_)) {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Rewrites a sealed segment with only its live records: new file, fsync, rename over the
    /// old one, fsync the directory, then drop its tombstone file.
    fn compact(&mut self, id: u64) -> Result<()> {
        let (file, slots) = {
            let idx = lock(&self.index);
            let Some(seg) = idx.segs.iter().find(|s| s.id == id) else {
                return Ok(());
            };
            (seg.file.clone(), seg.live_seqs().collect::<Vec<_>>())
        };
        let tmp = self.dir.join(format!("{id}.blk.tmp"));
        let out = self.fs.open(&tmp, true)?;
        out.set_len(0)?;
        let mut buf = Vec::new();
        let mut new_slots = Vec::with_capacity(slots.len());
        let mut pos = 0u64;
        for (q, s) in &slots {
            let mut rec = vec![0u8; s.len as usize];
            file.read_exact_at(&mut rec, s.off as u64)?;
            if !record::verify(&rec) {
                // Keep it out of the new file; reads of it already fail.
                tracing::error!("store: corrupt record {q} dropped during compaction");
                continue;
            }
            new_slots.push((
                *q,
                Slot {
                    off: (pos + buf.len() as u64) as u32,
                    ..*s
                },
            ));
            buf.extend_from_slice(&rec);
            if buf.len() >= 1 << 20 {
                out.write_all_at(&buf, pos)?;
                pos += buf.len() as u64;
                buf.clear();
            }
        }
        out.write_all_at(&buf, pos)?;
        let new_size = pos + buf.len() as u64;
        out.sync()?;
        let commit = (|| -> Result<()> {
            self.fs.rename(&tmp, &self.blk_path(id))?;
            self.dir_unsynced = true;
            self.sync_msgs_dir()
        })();
        if let Err(e) = commit {
            self.poison(&e);
            return Err(e);
        }
        let had_dlt = {
            let mut idx = lock(&self.index);
            let pos = idx.segs.iter().position(|s| s.id == id).expect("seg");
            let dropped: Vec<u64> = {
                let kept: HashSet<u64> = new_slots.iter().map(|(q, _)| *q).collect();
                slots
                    .iter()
                    .map(|(q, _)| *q)
                    .filter(|q| !kept.contains(q))
                    .collect()
            };
            let mut touched = HashSet::new();
            for q in dropped {
                touched.extend(idx.unlink(pos, q));
            }
            let seg = &mut idx.segs[pos];
            seg.file = out;
            seg.size = new_size;
            seg.base = new_slots.first().map_or(seg.base, |(q, _)| *q);
            let span = new_slots.last().map_or(0, |(q, _)| q - seg.base + 1) as usize;
            seg.slots = vec![Slot::default(); span];
            for (q, s) in &new_slots {
                seg.slots[(q - seg.base) as usize] = *s;
            }
            let had = seg.dlt.take().is_some();
            seg.dlt_size = 0;
            idx.fix_after_removal(&touched);
            had
        };
        if had_dlt {
            self.fs.remove(&self.dlt_path(id))?;
            self.dir_unsynced = true;
            self.sync_msgs_dir()?;
        }
        Ok(())
    }
}

fn merge_plans(into: &mut Vec<SegPlan>, from: Vec<SegPlan>) {
    for p in from {
        match into.iter_mut().find(|q| q.id == p.id) {
            Some(q) => {
                q.whole |= p.whole;
                q.seqs.extend(p.seqs);
                q.seqs.sort_unstable();
                q.seqs.dedup();
            }
            None => into.push(p),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery.

fn io_read_all(file: &dyn FileHandle) -> Result<Vec<u8>> {
    let len = file.size()? as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Parses a complete, checksum-valid record at `off`; returns (header, length).
fn valid_at(data: &[u8], off: usize) -> Option<record::Header> {
    let h = record::parse_header(data.get(off..)?)?;
    let end = off.checked_add(h.len as usize)?;
    (end <= data.len() && record::verify(&data[off..end])).then_some(h)
}

/// The valid values in the sequence floor file's two slots, with their slot numbers.
fn floor_slots(data: &[u8]) -> [Option<(u64, u64)>; 2] {
    let slot = |i: u64| {
        let at = (i as usize) * TOMBSTONE_LEN;
        let value = record::parse_tombstone(data.get(at..at + TOMBSTONE_LEN)?)?;
        Some((value, i))
    };
    [slot(0), slot(1)]
}

/// Makes sure the sequence floor file exists, so that writing it later takes no new space, and
/// returns the slot to write next (the one not holding the newest value).
fn prepare_floor(fs: &dyn Fs, root: &Path) -> Result<u64> {
    let path = root.join("floor");
    match fs.open(&path, false) {
        Ok(f) => {
            let data = io_read_all(&*f)?;
            let newest = floor_slots(&data).into_iter().flatten().max();
            return Ok(newest.map_or(0, |(_, slot)| 1 - slot));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let f = fs.open(&path, true)?;
    let zero = record::tombstone(0);
    f.write_all_at(&[zero, zero].concat(), 0)?;
    f.sync()?;
    fs.sync_dir(root)?;
    Ok(0)
}

fn recover(fs: &dyn Fs, root: &Path, dir: &Path, report: &mut RecoveryReport) -> Result<Index> {
    let mut idx = Index::default();
    let mut floor = 0u64;
    // The sequence floor, written when the newest segment was removed (purge, retention). One
    // slot may be torn by a crash while it was rewritten; the other then holds the floor.
    if let Ok(f) = fs.open(&root.join("floor"), false) {
        let data = io_read_all(&*f)?;
        match floor_slots(&data).into_iter().flatten().max() {
            Some((s, _)) => floor = s,
            None => report.corrupt.push(Corruption {
                file: "floor".into(),
                offset: 0,
                len: data.len() as u64,
                detail: "sequence floor checksum mismatch".into(),
            }),
        }
    }
    let mut blks = Vec::new();
    let mut dlts = HashSet::new();
    for name in fs.list(dir)? {
        if let Some(id) = name
            .strip_suffix(".blk")
            .and_then(|s| s.parse::<u64>().ok())
        {
            blks.push(id);
        } else if let Some(id) = name
            .strip_suffix(".dlt")
            .and_then(|s| s.parse::<u64>().ok())
        {
            dlts.insert(id);
        } else if name.ends_with(".tmp") {
            fs.remove(&dir.join(&name))?;
            report.removed_files.push(name);
        }
    }
    blks.sort_unstable();
    let mut prev_seq = 0u64;
    // Highest sequence named by a damaged (skipped) record at the end of the newest segment.
    let mut damaged_seq = 0u64;
    let n = blks.len();
    for (i, &id) in blks.iter().enumerate() {
        let name = format!("{id}.blk");
        let file = fs.open(&dir.join(&name), false)?;
        let data = io_read_all(&*file)?;
        let is_last = i + 1 == n;
        idx.segs.push(Seg {
            id,
            file: file.clone(),
            size: 0,
            base: id,
            slots: Vec::new(),
            live: 0,
            live_bytes: 0,
            max_ts: i64::MIN,
            dlt: None,
            dlt_size: 0,
        });
        let pos = idx.segs.len() - 1;
        let mut off = 0usize;
        let ok = |h: &record::Header, prev: u64| h.seq > prev && h.seq >= id;
        while off < data.len() {
            match valid_at(&data, off) {
                Some(h) if ok(&h, prev_seq) => {
                    let end = off + h.len as usize;
                    let s0 = off + HEADER_LEN;
                    let subject =
                        String::from_utf8_lossy(&data[s0..s0 + h.subj_len as usize]).into_owned();
                    let subj = idx.intern(&subject);
                    idx.add(
                        pos,
                        h.seq,
                        Slot {
                            off: off as u32,
                            len: h.len,
                            subj,
                        },
                        h.ts,
                    );
                    idx.last_ts = h.ts;
                    prev_seq = h.seq;
                    off = end;
                }
                _ => {
                    // Find the next valid record; everything in between is damaged.
                    let next = (off + 1..data.len().saturating_sub(HEADER_LEN - 1)).find(|&o| {
                        data[o..o + 4] == MAGIC
                            && valid_at(&data, o).is_some_and(|h| ok(&h, prev_seq))
                    });
                    match next {
                        Some(o) => {
                            report.corrupt.push(Corruption {
                                file: name.clone(),
                                offset: off as u64,
                                len: (o - off) as u64,
                                detail: "record failed checksum or framing; skipped".into(),
                            });
                            off = o;
                        }
                        None if is_last => {
                            // A record whose full length is on disk but whose checksum fails
                            // was completely written, so it may have been acknowledged: it is
                            // damage, reported and kept (never served), and its sequence must
                            // not be handed out again.
                            if let Some(h) = record::parse_header(&data[off..]).filter(|h| {
                                ok(h, prev_seq)
                                    && h.seq - prev_seq <= MAX_SEQ_JUMP
                                    && off + h.len as usize <= data.len()
                            }) {
                                report.corrupt.push(Corruption {
                                    file: name.clone(),
                                    offset: off as u64,
                                    len: h.len as u64,
                                    detail: format!(
                                        "record {} failed its checksum; skipped",
                                        h.seq
                                    ),
                                });
                                damaged_seq = damaged_seq.max(h.seq);
                                off += h.len as usize;
                                continue;
                            }
                            // A torn final write: it was never acknowledged. Cut it off.
                            report.truncated_bytes += (data.len() - off) as u64;
                            file.set_len(off as u64)?;
                            file.sync()?;
                            break;
                        }
                        None => {
                            report.corrupt.push(Corruption {
                                file: name.clone(),
                                offset: off as u64,
                                len: (data.len() - off) as u64,
                                detail: "damaged tail of a sealed segment; skipped".into(),
                            });
                            break;
                        }
                    }
                }
            }
        }
        idx.segs[pos].size = if is_last { off } else { data.len() } as u64;
        floor = floor.max(id - 1);
        // Tombstones.
        if dlts.remove(&id) {
            let dname = format!("{id}.dlt");
            let dfile = fs.open(&dir.join(&dname), false)?;
            let ddata = io_read_all(&*dfile)?;
            let whole = ddata.len() / TOMBSTONE_LEN * TOMBSTONE_LEN;
            if whole != ddata.len() {
                // A torn tombstone write (never acknowledged).
                dfile.set_len(whole as u64)?;
                dfile.sync()?;
            }
            for (k, t) in ddata[..whole].chunks(TOMBSTONE_LEN).enumerate() {
                match record::parse_tombstone(t) {
                    Some(q) => {
                        if idx.segs[pos].slot(q).is_some() {
                            idx.unlink(pos, q);
                        }
                    }
                    None => report.corrupt.push(Corruption {
                        file: dname.clone(),
                        offset: (k * TOMBSTONE_LEN) as u64,
                        len: TOMBSTONE_LEN as u64,
                        detail: "tombstone checksum mismatch; skipped".into(),
                    }),
                }
            }
            idx.segs[pos].dlt = Some(dfile);
            idx.segs[pos].dlt_size = whole as u64;
        }
    }
    // Orphan tombstone files (their segment was removed).
    for id in dlts {
        let name = format!("{id}.dlt");
        fs.remove(&dir.join(&name))?;
        report.removed_files.push(name);
    }
    idx.last_seq = floor.max(prev_seq).max(damaged_seq);
    // Segments with nothing live, other than the newest, are removed.
    let n = idx.segs.len();
    let mut i = 0;
    let mut seen = 0;
    while i < idx.segs.len() {
        seen += 1;
        let damaged = {
            let name = format!("{}.blk", idx.segs[i].id);
            report.corrupt.iter().any(|c| c.file == name)
        };
        if idx.segs[i].live == 0 && seen < n && !damaged {
            let id = idx.segs[i].id;
            fs.remove(&dir.join(format!("{id}.blk")))?;
            report.removed_files.push(format!("{id}.blk"));
            if idx.segs[i].dlt.is_some() {
                fs.remove(&dir.join(format!("{id}.dlt")))?;
                report.removed_files.push(format!("{id}.dlt"));
            }
            idx.segs.remove(i);
        } else {
            i += 1;
        }
    }
    // Always: besides the removals above, a previous run may have created a file here and
    // stopped (cleanly or not) before syncing the directory; whatever is adopted now must have
    // a durable entry before anything written into it is acknowledged.
    fs.sync_dir(dir)?;
    let all: HashSet<u32> = idx.ids.values().copied().collect();
    idx.fix_after_removal(&all);
    Ok(idx)
}
