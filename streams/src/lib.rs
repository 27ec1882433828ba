//! `natter-streams`: persistence for natter's JetStream-compatible streams.
//!
//! This crate has no networking. Today it holds the message store; streams, consumers and the
//! JetStream API build on it.
//!
//! * [`FileStore`]: append-only segment files with checksummed records, an in-memory index (no
//!   message bodies in RAM), tombstone files for deletes, whole-segment retention, compaction,
//!   crash recovery, and **group commit**: one writer thread batches every pending append into one
//!   write and one `fdatasync`, and acknowledges each append only after that (with
//!   [`SyncPolicy::Always`], the default). With [`SyncPolicy::Interval`] appenders write their
//!   own appends (batched by [`DeferredWrites`]) and the thread only syncs on the interval.
//! * [`MemoryStore`]: the same API, in memory (`storage: memory`).
//! * [`fs`]: the file-system seam, with [`fs::SimFs`], a power-loss simulator for tests.
//!
//! See `streams/README.md` for the on-disk format and the durability promise.

pub mod config;
pub mod consumer;
pub mod errors;
pub mod fs;
mod jetstream;
mod memory;
pub mod metrics;
pub mod record;
pub mod republish;
mod store;
mod stream;
pub mod subject;
pub mod util;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

pub use config::{StreamConfig, StreamInfo, StreamState};
pub use errors::ApiError;
pub use jetstream::{
    AccountLimits, ApiFuture, ApiReply, JetStream, JsConfig, OpenError, PubAckFuture, Route,
    ServerUsage,
};
pub use memory::MemoryStore;
pub use store::{DeferredWrites, FileStore, FileStoreConfig};

/// Store errors. Cloneable so one failed group commit can fail every append in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The disk (or quota) is full; nothing stored was damaged and later writes may succeed.
    StorageFull,
    /// Any other I/O error.
    Io(std::io::ErrorKind, String),
    /// A stored record failed its checksum; it is never served.
    Corrupt {
        /// The sequence asked for.
        seq: u64,
        /// What was wrong.
        detail: String,
    },
    /// A sync or rollback failed, so what is on disk is unknown; the store refuses writes until
    /// it is reopened (recovery then establishes the truth).
    Poisoned(String),
    /// The store was closed.
    Closed,
    /// An invalid argument or configuration.
    Invalid(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::StorageFull => write!(f, "insufficient storage"),
            Error::Io(k, m) => write!(f, "i/o error ({k:?}): {m}"),
            Error::Corrupt { seq, detail } => write!(f, "message {seq} is corrupt: {detail}"),
            Error::Poisoned(m) => write!(f, "store stopped after a failed sync: {m}"),
            Error::Closed => write!(f, "store closed"),
            Error::Invalid(m) => write!(f, "invalid: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull | K::QuotaExceeded => Error::StorageFull,
            k => Error::Io(k, e.to_string()),
        }
    }
}

/// Store result.
pub type Result<T> = std::result::Result<T, Error>;

/// When appended data is fsynced before being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Acknowledge only after `fdatasync` (group commit shares one sync among all waiting
    /// appends). The default: an acknowledged message survives power loss.
    #[default]
    Always,
    /// Acknowledge after the write reaches the OS; sync at this interval (nats-server's
    /// `sync_interval`). A power cut can lose up to one interval of acknowledged messages.
    Interval(Duration),
}

/// Retention limits enforced by the store with discard-old semantics after every append
/// (`discard: new` is the stream layer's job: check [`StoreState`] before appending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Keep at most this many messages.
    pub max_msgs: Option<u64>,
    /// Keep at most this many bytes (as counted by [`StoreState::bytes`]).
    pub max_bytes: Option<u64>,
    /// Remove messages older than this (checked about once a second and on [`FileStore::expire`]).
    pub max_age: Option<Duration>,
    /// Keep at most this many messages per subject.
    pub max_msgs_per_subject: Option<u64>,
}

/// What to purge; all fields empty purges everything. Mirrors the JetStream purge request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeRequest {
    /// Only messages whose subject matches this filter (wildcards allowed).
    pub filter: Option<String>,
    /// Only messages with a sequence below this. Without a filter, a value past the last
    /// sequence moves the sequence forward: the next append gets exactly this sequence.
    pub up_to_seq: Option<u64>,
    /// Keep this many of the newest (matching) messages.
    pub keep: Option<u64>,
}

/// A stored message as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was published to.
    pub subject: String,
    /// NATS header block (empty if none).
    pub headers: Bytes,
    /// Payload.
    pub payload: Bytes,
    /// Store timestamp, nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A snapshot of a store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreState {
    /// Messages stored.
    pub msgs: u64,
    /// Bytes stored: the sum of each message's record size (subject + headers + payload +
    /// 34 bytes of framing).
    pub bytes: u64,
    /// First stored sequence (`last_seq + 1` when empty).
    pub first_seq: u64,
    /// Timestamp of the first message (0 when empty).
    pub first_ts: i64,
    /// Last sequence ever assigned and stored (survives purges and restarts).
    pub last_seq: u64,
    /// Timestamp of the last message appended (0 if unknown).
    pub last_ts: i64,
    /// Sequences between first and last that are not stored (deleted).
    pub num_deleted: u64,
    /// Distinct subjects stored.
    pub num_subjects: u64,
}

/// Size in bytes a message is accounted as (see [`StoreState::bytes`]).
pub fn msg_size(subject: &str, headers: &[u8], payload: &[u8]) -> u64 {
    record::record_len(subject, headers, payload) as u64
}

/// Completion of a store operation: await it, or [`Pending::wait`] from a plain thread.
#[must_use = "the operation is only durable once this completes"]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> Pending<T> {
    pub(crate) fn channel() -> (oneshot::Sender<Result<T>>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Pending { rx })
    }

    pub(crate) fn ready(r: Result<T>) -> Pending<T> {
        let (tx, p) = Self::channel();
        let _ = tx.send(r);
        p
    }

    /// Blocks until the operation completes. Do not call from inside an async runtime.
    pub fn wait(self) -> Result<T> {
        self.rx.blocking_recv().unwrap_or(Err(Error::Closed))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// An append in flight: its sequence is known at once; it is acknowledged (durable per the
/// sync policy) when it completes. Sequences are assigned in call order.
#[must_use = "the message is only durable once this completes"]
pub struct Append {
    seq: u64,
    done: Pending<u64>,
}

impl Append {
    /// The sequence this message gets if the append succeeds.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Blocks until durable; returns the sequence. Do not call from inside an async runtime.
    pub fn wait(self) -> Result<u64> {
        self.done.wait()
    }
}

impl Future for Append {
    type Output = Result<u64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        Pin::new(&mut self.done).poll(cx)
    }
}

/// What [`FileStore::open`] found and repaired.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files loaded.
    pub segments: usize,
    /// Messages recovered (live, after tombstones).
    pub msgs: u64,
    /// Bytes of a torn final record (an interrupted, never-acknowledged write) cut off the end
    /// of the last segment.
    pub truncated_bytes: u64,
    /// Damaged regions found: skipped, never served.
    pub corrupt: Vec<Corruption>,
    /// Leftover files removed (temporary files, empty or fully deleted segments, orphan
    /// tombstone files).
    pub removed_files: Vec<String>,
    /// How long recovery took.
    pub duration: Duration,
}

/// A damaged region of a store file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// File name within the store directory.
    pub file: String,
    /// Byte offset of the damage.
    pub offset: u64,
    /// Bytes skipped.
    pub len: u64,
    /// Description.
    pub detail: String,
}

fn validate(subject: &str, headers: &[u8], payload: &[u8]) -> Result<()> {
    if subject.is_empty() || subject.len() > u16::MAX as usize {
        return Err(Error::Invalid("subject must be 1..=65535 bytes".into()));
    }
    if record::record_len(subject, headers, payload) > record::MAX_RECORD {
        return Err(Error::Invalid("message too large".into()));
    }
    Ok(())
}
