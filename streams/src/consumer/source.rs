//! What a consumer reads: its stream, behind a trait so the engine does not depend on the
//! stream layer's internals (and tests can drive a bare store).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;

use crate::config::{Retention, StorageType, StreamConfig};
use crate::stream::Stream;
use crate::{FileStore, FileStoreConfig, MemoryStore, Pending, Result, StoreState, StoredMsg};

/// A stream as consumers see it.
pub trait MsgSource: Send + Sync {
    /// The stream's name.
    fn name(&self) -> &str;
    /// The current configuration (retention, subjects, storage, consumer limits).
    fn config(&self) -> StreamConfig;
    /// The retention policy (what [`MsgSource::config`] says, without copying it).
    fn retention(&self) -> Retention {
        self.config().retention
    }
    /// The stream's directory (consumer state lives under `obs/`).
    fn dir(&self) -> PathBuf;
    /// The first message at or after `start` matching `filter`.
    fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>>;
    /// Up to `max` messages from `start` on matching `filter`, in order (a run read at once
    /// where the store can); empty only when [`MsgSource::get_next`] finds nothing.
    fn get_run(&self, start: u64, filter: Option<&str>, max: usize) -> Result<Vec<StoredMsg>> {
        let _ = max;
        Ok(self.get_next(start, filter)?.into_iter().collect())
    }
    /// Message `seq`.
    fn get(&self, seq: u64) -> Result<Option<StoredMsg>>;
    /// The last message on a subject (wildcards allowed).
    fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>>;
    /// Removes a message (interest and workqueue retention).
    fn delete(&self, seq: u64) -> Pending<bool>;
    /// Counters.
    fn state(&self) -> StoreState;
    /// Messages per subject matching `filter`.
    fn subject_counts(&self, filter: Option<&str>) -> HashMap<String, u64>;
}

impl MsgSource for Stream {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> StreamConfig {
        Stream::config(self)
    }
    fn retention(&self) -> Retention {
        Stream::retention(self)
    }
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>> {
        self.store.get_next(start, filter)
    }
    fn get_run(&self, start: u64, filter: Option<&str>, max: usize) -> Result<Vec<StoredMsg>> {
        self.store.get_run(start, filter, max)
    }
    fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
        self.store.get(seq)
    }
    fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>> {
        self.store.last_for_subject(subject)
    }
    fn delete(&self, seq: u64) -> Pending<bool> {
        self.store.delete(seq)
    }
    fn state(&self) -> StoreState {
        self.store.state()
    }
    fn subject_counts(&self, filter: Option<&str>) -> HashMap<String, u64> {
        self.store.subject_counts(filter)
    }
}

enum Kind {
    File(FileStore),
    Mem(MemoryStore),
}

macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.store {
            Kind::File($s) => $e,
            Kind::Mem($s) => $e,
        }
    };
}

/// A bare store with a stream config: a [`MsgSource`] without the stream layer (tools, tests).
pub struct StoreSource {
    name: String,
    config: Mutex<StreamConfig>,
    dir: PathBuf,
    store: Kind,
}

impl StoreSource {
    /// Opens a file store in `dir` (or a memory store for `storage: memory`).
    pub fn open(config: StreamConfig, dir: PathBuf) -> Result<StoreSource> {
        let store = match config.storage {
            StorageType::Memory => Kind::Mem(MemoryStore::new(Default::default())),
            StorageType::File => Kind::File(FileStore::open(&dir, FileStoreConfig::default())?.0),
        };
        Ok(StoreSource {
            name: config.name.clone(),
            config: Mutex::new(config),
            dir,
            store,
        })
    }

    /// Appends a message and waits until it is durable; returns its sequence. Call
    /// [`super::Consumers::stored`] afterwards, as the stream layer does.
    pub async fn append(&self, subject: &str, headers: &[u8], payload: &[u8]) -> Result<u64> {
        let ts = crate::util::now_nanos();
        let (h, p) = (
            Bytes::copy_from_slice(headers),
            Bytes::copy_from_slice(payload),
        );
        on!(self, s => s.append(subject, h, p, ts).await)
    }

    /// Purges everything.
    pub async fn purge(&self) -> Result<u64> {
        on!(self, s => s.purge(Default::default()).await)
    }

    /// Closes the store.
    pub fn close(&self) -> Result<()> {
        on!(self, s => s.close())
    }
}

impl MsgSource for StoreSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> StreamConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn get_next(&self, start: u64, filter: Option<&str>) -> Result<Option<StoredMsg>> {
        on!(self, s => s.get_next(start, filter))
    }
    fn get_run(&self, start: u64, filter: Option<&str>, max: usize) -> Result<Vec<StoredMsg>> {
        on!(self, s => s.get_run(start, filter, max))
    }
    fn get(&self, seq: u64) -> Result<Option<StoredMsg>> {
        on!(self, s => s.get(seq))
    }
    fn last_for_subject(&self, subject: &str) -> Result<Option<StoredMsg>> {
        on!(self, s => s.last_for_subject(subject))
    }
    fn delete(&self, seq: u64) -> Pending<bool> {
        on!(self, s => s.delete(seq))
    }
    fn state(&self) -> StoreState {
        on!(self, s => s.state())
    }
    fn subject_counts(&self, filter: Option<&str>) -> HashMap<String, u64> {
        on!(self, s => s.subject_counts(filter))
    }
}
