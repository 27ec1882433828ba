//! [`JetStream`]: every stream of one account, the publish path and the `$JS.API` handlers.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::{ClusterInfo, StorageType, StreamConfig, StreamInfo};
use crate::consumer::{Consumers, MsgSource, Outbox};
use crate::errors::ApiError;
use crate::stream::{Admit, Stream};
use crate::util::{self, now_nanos};
use crate::{PurgeRequest, StoredMsg, SyncPolicy};

/// JetStream settings (from `-js`, `-sd` and the `jetstream {}` config block).
#[derive(Debug, Clone)]
pub struct JsConfig {
    /// `store_dir`: streams live under `<store_dir>/<account>/streams/<name>/`.
    pub store_dir: PathBuf,
    /// `max_memory_store` in bytes; negative means unlimited.
    pub max_memory: i64,
    /// `max_file_store` in bytes; negative means unlimited.
    pub max_file: i64,
    /// `sync_interval`: `always` (the default) or an interval.
    pub sync: SyncPolicy,
    /// The account these streams belong to (`$G` without accounts).
    pub account: String,
    /// Segment size of file stores.
    pub block_size: u64,
    /// Server name, reported as the stream leader in `STREAM.INFO` when set.
    pub server_name: Option<String>,
    /// The account's own limits (`accounts { A: { jetstream { ... } } }`).
    pub limits: AccountLimits,
    /// Shared by the accounts of one server, so that `max_memory` and `max_file` bound them
    /// together; `None`: this account alone.
    pub server_usage: Option<Arc<ServerUsage>>,
}

/// An account's JetStream limits, as configured and as `$JS.API.INFO` reports them; -1 is
/// unlimited, and so is 0 but for `max_memory` and `max_storage`, where it allows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AccountLimits {
    /// Bytes of memory streams.
    pub max_memory: i64,
    /// Bytes of file streams.
    pub max_storage: i64,
    /// Streams.
    pub max_streams: i64,
    /// Consumers, over all streams.
    pub max_consumers: i64,
    /// The highest `max_ack_pending` a consumer may have (and its default).
    pub max_ack_pending: i64,
    /// The highest `max_bytes` of a memory stream.
    pub memory_max_stream_bytes: i64,
    /// The highest `max_bytes` of a file stream.
    pub storage_max_stream_bytes: i64,
    /// Every stream must set `max_bytes`.
    pub max_bytes_required: bool,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            max_memory: -1,
            max_storage: -1,
            max_streams: -1,
            max_consumers: -1,
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            storage_max_stream_bytes: -1,
            max_bytes_required: false,
        }
    }
}

/// A limit, if it is one (`v` > 0).
fn limit(v: i64) -> Option<i64> {
    (v > 0).then_some(v)
}

/// An account's storage limit, if it has one: 0 is none at all, as in nats-server; below 0
/// is unlimited.
fn storage_cap(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

impl Default for JsConfig {
    fn default() -> Self {
        JsConfig {
            store_dir: PathBuf::from("./data"),
            max_memory: -1,
            max_file: -1,
            sync: SyncPolicy::Always,
            account: "$G".into(),
            block_size: 8 << 20,
            server_name: None,
            limits: AccountLimits::default(),
            server_usage: None,
        }
    }
}

/// Errors from [`JetStream::open`].
#[derive(Debug)]
pub enum OpenError {
    /// The store directory could not be read or created.
    Io(io::Error),
    /// A stream's store failed to open.
    Store(String, crate::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "jetstream store directory: {e}"),
            OpenError::Store(s, e) => write!(f, "stream {s}: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The reply to a `$JS.API` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReply {
    /// A JSON body (no headers).
    Json(Vec<u8>),
    /// A message (DIRECT.GET): a complete `NATS/1.0` header block (a status line such as
    /// `NATS/1.0 404 Message Not Found` when nothing was found) and the payload.
    Msg {
        /// The header block, ending in `\r\n\r\n`.
        headers: Vec<u8>,
        /// The payload.
        payload: Bytes,
    },
    /// nats-server would have no responder for this subject (unknown API, DIRECT.GET on a
    /// stream without `allow_direct`): behave as for no subscribers (503 no responders).
    NoResponse,
}

impl ApiReply {
    /// The JSON body, if this is one.
    pub fn json(&self) -> Option<&[u8]> {
        match self {
            ApiReply::Json(b) => Some(b),
            _ => None,
        }
    }
}

/// One subject of one stream (see [`JetStream::routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The stream's name.
    pub stream: String,
    /// One of its subjects (may hold wildcards).
    pub subject: String,
    /// The stream's `no_ack`: publishes get no PubAck.
    pub no_ack: bool,
}

/// Completes with the PubAck (or JetStream error) JSON once the message is durable.
pub type PubAckFuture = Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'static>>;
/// Completes with the API reply (after any store operation it started is durable).
pub type ApiFuture = Pin<Box<dyn Future<Output = ApiReply> + Send + 'static>>;

#[derive(Serialize, Deserialize)]
struct Meta {
    config: StreamConfig,
    created: i64,
}

/// How often the account usage used by the publish-time limit check is recomputed.
const USAGE_REFRESH: Duration = Duration::from_millis(100);

/// Drops the cached account usage when it goes out of scope (after a delete completed).
struct ForgetUsage<'a>(&'a JetStream);

impl Drop for ForgetUsage<'_> {
    fn drop(&mut self) {
        self.0.forget_usage();
    }
}

#[derive(Debug, Default)]
struct UsageCache {
    at: Option<Instant>,
    mem: u64,
    file: u64,
}

impl UsageCache {
    /// The bytes of `storage` in use, by `usage` recomputed once the cache is stale.
    fn get(&mut self, storage: StorageType, usage: impl FnOnce() -> (u64, u64)) -> &mut u64 {
        if self.at.is_none_or(|t| t.elapsed() >= USAGE_REFRESH) {
            let (mem, file) = usage();
            *self = UsageCache {
                at: Some(Instant::now()),
                mem,
                file,
            };
        }
        match storage {
            StorageType::Memory => &mut self.mem,
            StorageType::File => &mut self.file,
        }
    }
}

/// What all accounts of a server store together, for the server-wide limits
/// (`max_memory_store`, `max_file_store`, and reservations against them): each account's
/// [`JetStream`] registers here when it opens.
#[derive(Debug, Default)]
pub struct ServerUsage {
    accounts: Mutex<Vec<Weak<Inner>>>,
    cache: Mutex<UsageCache>,
    /// Held (after the account's own) while a stream's reservation is checked and the stream
    /// created or updated, so that two accounts cannot both take the last of the server.
    admin: Mutex<()>,
}

impl ServerUsage {
    fn accounts(&self) -> Vec<JetStream> {
        let mut list = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter()
            .filter_map(|w| {
                Some(JetStream {
                    inner: w.upgrade()?,
                })
            })
            .collect()
    }

    /// Whether `add` more bytes of `storage` would pass `limit` over all accounts; if not,
    /// they are counted.
    fn over(&self, storage: StorageType, add: u64, limit: i64) -> bool {
        // Recomputed under the lock, so that no admitted bytes or forgetting is lost: the
        // accounts' usage takes only their stream lists and stores, never this.
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let v = c.get(storage, || {
            let (mut mem, mut file) = (0, 0);
            for js in self.accounts() {
                let (m, f) = js.usage();
                mem += m;
                file += f;
            }
            (mem, file)
        });
        if (*v + add) as i64 > limit {
            return true;
        }
        *v += add;
        false
    }

    /// Bytes reserved (`max_bytes`) by streams of `storage` in all accounts, but `except` in
    /// the account of `me`.
    fn reserved(&self, storage: StorageType, me: &Arc<Inner>, except: &str) -> i64 {
        self.accounts()
            .iter()
            .map(|js| {
                let skip = Arc::ptr_eq(&js.inner, me).then_some(except);
                js.reserved(storage, skip)
            })
            .sum()
    }

    fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).at = None;
    }
}

struct Inner {
    usage: Mutex<UsageCache>,
    cfg: JsConfig,
    dir: PathBuf,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// The same streams as a plain list, for what runs with a stream locked (a publish's usage
    /// check) or locks streams (reservations): the lock is held only to clone it, so it never
    /// waits behind a writer of `streams` that waits for such a caller.
    list: Mutex<Arc<Vec<Arc<Stream>>>>,
    /// Serializes create/update/delete.
    admin: Mutex<()>,
    api_total: AtomicU64,
    api_errors: AtomicU64,
    /// Consumers, once [`JetStream::attach`] gave them a way out.
    consumers: std::sync::OnceLock<Consumers>,
}

/// All streams of one account. Cheap to clone.
#[derive(Clone)]
pub struct JetStream {
    inner: Arc<Inner>,
}

const META: &str = "meta.json";

/// How often [`JetStream::expire_due`] runs: a `Nats-TTL` is honoured to within this.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to `dir/name` atomically and durably: tmp file, fsync, rename, fsync dir.
fn write_durable(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Creates `dir` and its missing parents, fsyncing each parent whose entries changed.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        if !p.as_os_str().is_empty() {
            create_dir_durable(p)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(p) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(p)?;
    }
    Ok(())
}

fn ready<T: Send + 'static>(v: T) -> Pin<Box<dyn Future<Output = T> + Send>> {
    Box::pin(std::future::ready(v))
}

/// Serializes a response: `{"type": ty, "error"?: .., ...body}`.
/// An API reply: `{"type":"io.nats.jetstream.api.v1.<ty>", "error"?, ...body}` (the
/// consumers' handlers use it too).
pub(crate) fn resp<T: Serialize>(ty: &str, error: Option<&ApiError>, body: T) -> Vec<u8> {
    #[derive(Serialize)]
    struct R<'a, T: Serialize> {
        #[serde(rename = "type")]
        ty: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a ApiError>,
        #[serde(flatten)]
        body: T,
    }
    serde_json::to_vec(&R {
        ty: format!("io.nats.jetstream.api.v1.{ty}"),
        error,
        body,
    })
    .expect("serializable")
}

#[derive(Serialize)]
struct Empty {}

fn err_json(ty: &str, e: &ApiError) -> Vec<u8> {
    resp(ty, Some(e), Empty {})
}

/// The JSON for a publish error: `{"error":{..},"stream":"S","seq":0}`.
fn pub_err(stream: &str, e: &ApiError) -> Vec<u8> {
    #[derive(Serialize)]
    struct P<'a> {
        error: &'a ApiError,
        stream: &'a str,
        seq: u64,
    }
    serde_json::to_vec(&P {
        error: e,
        stream,
        seq: 0,
    })
    .expect("serializable")
}

/// The PubAck JSON, in one allocation: one is made per stored message.
fn pub_ack(stream: &str, seq: u64, duplicate: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() + 64);
    out.extend_from_slice(b"{\"stream\":");
    serde_json::to_writer(&mut out, stream).expect("a string serializes");
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(if duplicate {
        b",\"duplicate\": true}"
    } else {
        b"}"
    });
    out
}

fn parse_req<T: serde::de::DeserializeOwned + Default>(payload: &[u8]) -> Result<T, ApiError> {
    if util::is_empty_json(payload) {
        return Ok(T::default());
    }
    util::from_json(payload).map_err(ApiError::invalid_json)
}

/// For the requests nats-server parses leniently (STREAM.INFO, NAMES, LIST, PURGE): a body
/// that is not valid JSON is the same as an empty one.
fn parse_lenient<T: serde::de::DeserializeOwned + Default>(payload: &[u8]) -> T {
    parse_req(payload).unwrap_or_default()
}

#[derive(Deserialize, Default)]
struct InfoReq {
    #[serde(default)]
    subjects_filter: Option<String>,
    #[serde(default)]
    deleted_details: bool,
    #[serde(default)]
    offset: usize,
}

#[derive(Deserialize, Default)]
struct ListReq {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Deserialize, Default)]
struct PurgeReq {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    keep: Option<u64>,
}

#[derive(Deserialize, Default)]
struct MsgGetReq {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    last_by_subj: Option<String>,
    #[serde(default)]
    next_by_subj: Option<String>,
}

#[derive(Deserialize, Default)]
struct MsgDeleteReq {
    /// Absent (a bad request) differs from 0 (not found) for file streams.
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Serialize)]
struct Paged<T: Serialize> {
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(flatten)]
    body: T,
}

impl JetStream {
    /// Opens the account's JetStream: creates the directory if needed and loads every persisted
    /// stream (metadata and store, recovering what a crash left behind).
    pub fn open(config: JsConfig) -> Result<JetStream, OpenError> {
        let dir = config.store_dir.join(&config.account).join("streams");
        create_dir_durable(&dir).map_err(OpenError::Io)?;
        let mut streams = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(OpenError::Io)? {
            let entry = entry.map_err(OpenError::Io)?;
            let sdir = entry.path();
            if !sdir.is_dir() {
                continue;
            }
            let meta = match fs::read(sdir.join(META)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A stream deleted (metadata removed first) or never fully created.
                    tracing::warn!(dir = %sdir.display(), "removing stream directory without metadata");
                    let _ = fs::remove_dir_all(&sdir);
                    continue;
                }
                Err(e) => return Err(OpenError::Io(e)),
            };
            let meta: Meta = match serde_json::from_slice(&meta) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(dir = %sdir.display(), error = %e, "unreadable stream metadata; stream skipped");
                    continue;
                }
            };
            let mut cfg = meta.config;
            cfg.other.clear();
            let name = cfg.name.clone();
            let stream = Stream::open(cfg, meta.created, sdir, config.sync, config.block_size)
                .map_err(|e| OpenError::Store(name.clone(), e))?;
            streams.insert(name, Arc::new(stream));
        }
        let js = JetStream {
            inner: Arc::new(Inner {
                usage: Mutex::new(UsageCache::default()),
                cfg: config,
                dir,
                list: Mutex::new(Arc::new(streams.values().cloned().collect())),
                streams: RwLock::new(streams),
                admin: Mutex::new(()),
                api_total: AtomicU64::new(0),
                api_errors: AtomicU64::new(0),
                consumers: std::sync::OnceLock::new(),
            }),
        };
        if let Some(s) = &js.inner.cfg.server_usage {
            let mut list = s.accounts.lock().unwrap_or_else(|e| e.into_inner());
            list.push(Arc::downgrade(&js.inner));
        }
        Ok(js)
    }

    fn streams(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.inner.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams().get(name).cloned()
    }

    fn stream_for(&self, subject: &str) -> Option<Arc<Stream>> {
        self.streams()
            .values()
            .find(|s| {
                s.lock()
                    .config
                    .subjects
                    .iter()
                    .any(|f| crate::subject::matches(f, subject))
            })
            .cloned()
    }

    /// The stream whose subjects match `subject` (the core routes such publishes here).
    pub fn stream_for_subject(&self, subject: &str) -> Option<String> {
        self.stream_for(subject).map(|s| s.name.clone())
    }

    /// Every stream's subjects (changes after create/update/delete), for the core to
    /// subscribe to.
    pub fn subjects(&self) -> Vec<String> {
        self.streams()
            .values()
            .flat_map(|s| s.lock().config.subjects.clone())
            .collect()
    }

    /// Every stream subject with the stream it belongs to and whether that stream sends no
    /// acks (`no_ack`): what the core subscribes to on the streams' behalf. Changes after
    /// create, update and delete.
    pub fn routes(&self) -> Vec<Route> {
        self.streams()
            .values()
            .flat_map(|s| {
                let m = s.lock();
                let no_ack = m.config.no_ack;
                m.config
                    .subjects
                    .iter()
                    .map(|subject| Route {
                        stream: s.name.clone(),
                        subject: subject.clone(),
                        no_ack,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Starts the consumers: they publish (deliveries, statuses, advisories) through `outbox`
    /// and run their timers on `handle`. Loads every stream's saved consumers. Until this is
    /// called, consumer API requests get no answer.
    pub fn attach(&self, outbox: Arc<dyn Outbox>, handle: tokio::runtime::Handle) {
        let weak = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // It reads and waits for the store: off the async workers.
                let js = JetStream { inner };
                let _ = tokio::task::spawn_blocking(move || js.expire_due()).await;
            }
        });
        let l = &self.inner.cfg.limits;
        let consumers = Consumers::with_limits(outbox, handle, l.max_consumers, l.max_ack_pending);
        for s in self.streams().values() {
            let failed = consumers.load(s.clone() as Arc<dyn MsgSource>);
            for name in failed {
                tracing::error!(stream = %s.name, consumer = %name, "consumer could not be loaded");
            }
        }
        let _ = self.inner.consumers.set(consumers);
    }

    /// Removes what is due: messages whose `Nats-TTL` ran out, and messages past `max_age`
    /// that their store does not remove itself; then places delete markers on the subjects that
    /// emptied, in streams that want them. Runs every 250 ms once attached. Blocks on the
    /// stores (markers are published as messages are, durably).
    pub fn expire_due(&self) {
        let now = now_nanos();
        let streams: Vec<Arc<Stream>> = self.streams().values().cloned().collect();
        for s in streams {
            for subject in s.expire_due(now) {
                let Some((append, size)) = s.place_marker(&subject) else {
                    continue;
                };
                let seq = append.seq();
                let r = append.wait();
                s.settle(&subject, seq, size, None, r.is_ok());
                match r {
                    Ok(_) => {
                        if let Some(dropped) = self.consumers().and_then(|c| c.stored(&s.name, seq))
                        {
                            let _ = dropped.wait();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %s.name, %subject, error = %e, "delete marker not placed");
                    }
                }
            }
        }
    }

    /// The consumers (after [`JetStream::attach`]): acks (`$JS.ACK.>`) and flow-control
    /// replies (`$JS.FC.>`) go to them.
    pub fn consumers(&self) -> Option<&Consumers> {
        self.inner.consumers.get()
    }

    /// Syncs and closes every stream's store (a clean shutdown: with an interval sync policy,
    /// what was acknowledged but not yet synced reaches the disk now).
    pub fn close(&self) {
        if let Some(c) = self.consumers() {
            c.close();
        }
        for s in self.streams().values() {
            if let Err(e) = s.store.close() {
                tracing::error!(stream = %s.name, error = %e, "closing stream store");
            }
        }
    }

    /// Streams whose store stopped accepting writes, with why (for health checks); empty when
    /// all is well.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.streams()
            .values()
            .filter_map(|s| Some((s.name.clone(), s.store.failure()?)))
            .collect()
    }

    /// Names of all streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams().keys().cloned().collect()
    }

    /// Whether `name` has `no_ack` set (the core then sends no reply to publishes).
    pub fn no_ack(&self, name: &str) -> bool {
        self.stream(name).is_some_and(|s| s.lock().config.no_ack)
    }

    /// Bytes stored per storage type: (memory, file).
    fn usage(&self) -> (u64, u64) {
        let mut mem = 0;
        let mut file = 0;
        for s in self.stream_list().iter() {
            let b = s.store.state().bytes;
            match s.storage {
                StorageType::Memory => mem += b,
                StorageType::File => file += b,
            }
        }
        (mem, file)
    }

    /// Whether `add` more bytes of `storage` would pass the account's limit (10002) or the
    /// server's (10023, counting every account sharing [`JsConfig::server_usage`]); if
    /// neither, they are counted as used. Usage is recomputed at most every [`USAGE_REFRESH`],
    /// plus the bytes admitted since (so a burst between refreshes cannot overshoot).
    fn over_limits(&self, storage: StorageType, add: u64) -> Option<ApiError> {
        let cfg = &self.inner.cfg;
        let (account, server) = match storage {
            StorageType::Memory => (cfg.limits.max_memory, cfg.max_memory),
            StorageType::File => (cfg.limits.max_storage, cfg.max_file),
        };
        let account = storage_cap(account);
        let server = (server >= 0).then_some(server);
        // The server's limit is the account's own when no other accounts share it.
        let shared = cfg.server_usage.as_ref().filter(|_| server.is_some());
        let own_server = server.filter(|_| shared.is_none());
        if account.is_some() || own_server.is_some() {
            let mut c = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
            let v = c.get(storage, || self.usage());
            let after = (*v + add) as i64;
            if account.is_some_and(|l| after > l) {
                return Some(ApiError::account_resources_exceeded());
            }
            if own_server.is_some_and(|l| after > l) {
                return Some(ApiError::insufficient_resources());
            }
            if let (Some(shared), Some(l)) = (shared, server) {
                if shared.over(storage, add, l) {
                    return Some(ApiError::insufficient_resources());
                }
            }
            *v += add;
            return None;
        }
        match (shared, server) {
            (Some(shared), Some(l)) if shared.over(storage, add, l) => {
                Some(ApiError::insufficient_resources())
            }
            _ => None,
        }
    }

    /// Drops the cached usage after something freed space (purge, delete), so publishes are
    /// admitted again at once rather than after the next refresh.
    fn forget_usage(&self) {
        self.inner
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .at = None;
        if let Some(s) = &self.inner.cfg.server_usage {
            s.forget();
        }
    }

    /// The server's lock on reservations (see `ServerUsage::admin`), taken after the
    /// account's own.
    fn server_admin(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        let s = self.inner.cfg.server_usage.as_ref()?;
        Some(s.admin.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every stream, from the plain list (see `Inner::list`).
    fn stream_list(&self) -> Arc<Vec<Arc<Stream>>> {
        self.inner
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds (`Some`) or removes a stream by name; returns what was there. Keeps the plain list
    /// in step.
    fn put_stream(&self, name: &str, stream: Option<Arc<Stream>>) -> Option<Arc<Stream>> {
        let mut map = self
            .inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let old = match stream {
            Some(s) => map.insert(name.to_string(), s),
            None => map.remove(name),
        };
        let list = Arc::new(map.values().cloned().collect());
        *self.inner.list.lock().unwrap_or_else(|e| e.into_inner()) = list;
        old
    }

    /// Bytes reserved (`max_bytes`) by this account's streams of `storage`, but `except`.
    fn reserved(&self, storage: StorageType, except: Option<&str>) -> i64 {
        self.stream_list()
            .iter()
            .filter(|s| Some(s.name.as_str()) != except)
            .map(|s| {
                let c = s.lock();
                if c.config.storage == storage && c.config.max_bytes > 0 {
                    c.config.max_bytes
                } else {
                    0
                }
            })
            .sum()
    }

    /// A message published to a stream subject. Completes with the PubAck JSON once the message
    /// is durable, or with a JetStream error JSON. `headers` is the raw `NATS/1.0` block.
    pub fn publish(&self, subject: &str, headers: Option<&[u8]>, payload: &[u8]) -> PubAckFuture {
        self.publish_bytes(
            subject,
            headers.map(Bytes::copy_from_slice),
            Bytes::copy_from_slice(payload),
        )
    }

    /// [`JetStream::publish`] without copying the message.
    pub fn publish_bytes(
        &self,
        subject: &str,
        headers: Option<Bytes>,
        payload: Bytes,
    ) -> PubAckFuture {
        let Some(stream) = self.stream_for(subject) else {
            return ready(pub_err("", &ApiError::stream_not_found()));
        };
        let headers = headers.unwrap_or_default();
        let storage = stream.storage;
        let over = |size: u64| self.over_limits(storage, size);
        let msg_id = util::header(&headers, "Nats-Msg-Id")
            .filter(|i| !i.is_empty())
            .map(str::to_string);
        match stream.admit(subject, headers, payload, over) {
            Admit::Reject(e) => ready(pub_err(&stream.name, &e)),
            Admit::Duplicate { seq, wait } => {
                let name = stream.name.clone();
                Box::pin(async move {
                    if let Some(w) = wait {
                        if let Err(e) = w.await {
                            return pub_err(&name, &e.into());
                        }
                    }
                    pub_ack(&name, seq, true)
                })
            }
            Admit::Stored {
                append,
                rollup,
                size,
                republish,
            } => {
                let subject = subject.to_string();
                let consumers = self.inner.consumers.get().cloned();
                Box::pin(async move {
                    let seq = append.seq();
                    let r = append.await;
                    stream.settle(&subject, seq, size, msg_id.as_deref(), r.is_ok());
                    if republish {
                        // Sent in sequence order, once durable (before the PubAck unless
                        // another task is sending this stream's republishes just now).
                        stream.republish(seq, r.is_ok(), |m| {
                            if let Some(c) = &consumers {
                                c.outbox().send(&m.dest, None, Some(&m.headers), &m.payload);
                            }
                        });
                    }
                    if let Err(e) = r {
                        return pub_err(&stream.name, &e.into());
                    }
                    if let Some(sub) = rollup {
                        let req = PurgeRequest {
                            filter: sub.then(|| subject.clone()),
                            up_to_seq: Some(seq),
                            keep: None,
                        };
                        if let Err(e) = stream.store.purge(req).await {
                            return pub_err(&stream.name, &e.into());
                        }
                        if let Some(c) = &consumers {
                            c.purged(&stream.name);
                        }
                    }
                    if let Some(c) = &consumers {
                        if let Some(dropped) = c.stored(&stream.name, seq) {
                            let _ = dropped.await;
                        }
                    }
                    pub_ack(&stream.name, seq, false)
                })
            }
        }
    }

    /// A request to `$JS.API.<...>`. Completes with the reply once any store operation it
    /// started (purge, delete, limits) is durable. Metadata changes (create, update, delete)
    /// are written and fsynced synchronously inside this call.
    pub fn api(&self, subject: &str, payload: &[u8]) -> ApiFuture {
        self.request(subject, None, payload)
            .unwrap_or_else(|| ready(ApiReply::NoResponse))
    }

    /// [`JetStream::api`] with the request's reply subject, which consumers need
    /// (`CONSUMER.MSG.NEXT` answers there with messages, through the [`Outbox`]). `None`:
    /// nothing to send now.
    pub fn request(&self, subject: &str, reply: Option<&str>, payload: &[u8]) -> Option<ApiFuture> {
        let Some(rest) = subject.strip_prefix("$JS.API.") else {
            return Some(ready(ApiReply::NoResponse));
        };
        if rest.starts_with("CONSUMER.") {
            let consumers = self.inner.consumers.get()?;
            let stream = crate::consumer::stream_of(subject)
                .and_then(|n| self.stream(n))
                .map(|s| s as Arc<dyn MsgSource>);
            let (answer, released) = consumers.api_then(subject, reply, payload, stream)?;
            self.inner.api_total.fetch_add(1, Ordering::Relaxed);
            if answer.json().is_some_and(is_error) {
                self.inner.api_errors.fetch_add(1, Ordering::Relaxed);
            }
            if released.is_empty() {
                return Some(ready(answer));
            }
            return Some(Box::pin(async move {
                for d in released {
                    let _ = d.await;
                }
                answer
            }));
        }
        let toks: Vec<&str> = rest.split('.').collect();
        let fut: Pin<Box<dyn Future<Output = ApiReply> + Send>> = match toks.as_slice() {
            ["INFO"] => ready(ApiReply::Json(self.account_info())),
            ["STREAM", "CREATE", n] => self.create(n, payload),
            ["STREAM", "UPDATE", n] => self.update(n, payload),
            ["STREAM", "INFO", n] => ready(self.info(n, payload)),
            ["STREAM", "DELETE", n] => ready(self.delete_stream(n, payload)),
            ["STREAM", "NAMES"] => ready(self.names(payload)),
            ["STREAM", "LIST"] => ready(self.list(payload)),
            ["STREAM", "PURGE", n] => self.purge(n, payload),
            ["STREAM", "MSG", "GET", n] => ready(self.msg_get(n, payload)),
            ["STREAM", "MSG", "DELETE", n] => self.msg_delete(n, payload),
            ["DIRECT", "GET", n] => return Some(ready(self.direct_get(n, None, payload))),
            ["DIRECT", "GET", n, ..] => {
                let subj = toks[3..].join(".");
                return Some(ready(self.direct_get(n, Some(&subj), payload)));
            }
            _ => return Some(ready(ApiReply::NoResponse)),
        };
        let inner = self.inner.clone();
        Some(Box::pin(async move {
            let reply = fut.await;
            inner.api_total.fetch_add(1, Ordering::Relaxed);
            if let ApiReply::Json(b) = &reply {
                if is_error(b) {
                    inner.api_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            reply
        }))
    }

    fn info_of(&self, s: &Stream, subjects_filter: Option<&str>, cluster: bool) -> StreamInfo {
        let mut state = s.state(subjects_filter);
        state.consumer_count = self.consumers().map_or(0, |c| c.count(&s.name)) as u64;
        StreamInfo {
            config: s.config(),
            created: util::rfc3339(s.created),
            state,
            cluster: self
                .inner
                .cfg
                .server_name
                .clone()
                .filter(|_| cluster)
                .map(|leader| ClusterInfo { leader }),
            ts: util::rfc3339(now_nanos()),
        }
    }

    fn account_info(&self) -> Vec<u8> {
        let (mem, file) = self.usage();
        let (mut rmem, mut rfile) = (0i64, 0i64);
        let streams = self.streams();
        for s in streams.values() {
            let c = s.lock();
            if c.config.max_bytes > 0 {
                match c.config.storage {
                    StorageType::Memory => rmem += c.config.max_bytes,
                    StorageType::File => rfile += c.config.max_bytes,
                }
            }
        }
        let body = serde_json::json!({
            "memory": mem,
            "storage": file,
            "reserved_memory": rmem,
            "reserved_storage": rfile,
            "streams": streams.len(),
            "consumers": self.consumers().map_or(0, Consumers::total),
            "limits": self.inner.cfg.limits,
            "api": {
                "level": 1,
                "total": self.inner.api_total.load(Ordering::Relaxed),
                "errors": self.inner.api_errors.load(Ordering::Relaxed),
            },
        });
        resp("account_info_response", None, body)
    }

    /// Checks `cfg` (normalized) against the account's limits on any one stream.
    fn check_account_limits(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        let l = &self.inner.cfg.limits;
        if limit(l.max_consumers).is_some_and(|max| cfg.max_consumers > max) {
            return Err(crate::consumer::config::err::max_consumers());
        }
        if l.max_bytes_required && cfg.max_bytes <= 0 {
            return Err(ApiError::max_bytes_required());
        }
        let cap = match cfg.storage {
            StorageType::Memory => l.memory_max_stream_bytes,
            StorageType::File => l.storage_max_stream_bytes,
        };
        if limit(cap).is_some_and(|cap| cfg.max_bytes > cap) {
            return Err(ApiError::stream_max_bytes_exceeded());
        }
        Ok(())
    }

    /// Checks `cfg` (normalized) against other streams and the account's resources.
    fn check_against_others(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        let streams = self.streams();
        let mut reserved = 0i64;
        for (n, s) in streams.iter() {
            if *n == cfg.name {
                continue;
            }
            let c = s.lock();
            if c.config
                .subjects
                .iter()
                .any(|a| cfg.subjects.iter().any(|b| util::overlaps(a, b)))
            {
                return Err(ApiError::subjects_overlap());
            }
            if c.config.storage == cfg.storage && c.config.max_bytes > 0 {
                reserved += c.config.max_bytes;
            }
        }
        drop(streams);
        // Within the account's own limit, and the server's over all accounts.
        let c = &self.inner.cfg;
        let (account, server) = match cfg.storage {
            StorageType::Memory => (c.limits.max_memory, c.max_memory),
            StorageType::File => (c.limits.max_storage, c.max_file),
        };
        let everyone = match &c.server_usage {
            Some(s) => s.reserved(cfg.storage, &self.inner, &cfg.name),
            None => reserved,
        };
        let over = |used: i64, cap: Option<i64>| {
            cap.is_some_and(|cap| cfg.max_bytes > 0 && used + cfg.max_bytes > cap)
        };
        let account = storage_cap(account);
        // An account allowed no storage of this kind has no stream of it, max_bytes or not.
        if account == Some(0)
            || over(reserved, account)
            || over(everyone, (server >= 0).then_some(server))
        {
            return Err(match cfg.storage {
                StorageType::Memory => ApiError::memory_resources_exceeded(),
                StorageType::File => ApiError::storage_resources_exceeded(),
            });
        }
        Ok(())
    }

    fn write_meta(&self, dir: &Path, cfg: &StreamConfig, created: i64) -> Result<(), ApiError> {
        let meta = serde_json::to_vec_pretty(&Meta {
            config: cfg.clone(),
            created,
        })
        .expect("serializable");
        create_dir_durable(dir)
            .and_then(|_| write_durable(dir, META, &meta))
            .map_err(|e| ApiError::from(crate::Error::from(e)))
    }

    fn create(&self, name: &str, payload: &[u8]) -> ApiFuture {
        const T: &str = "stream_create_response";
        let r = (|| {
            let mut cfg = StreamConfig::parse(payload)?;
            if cfg.name != name {
                return Err(ApiError::name_mismatch());
            }
            cfg.normalize()?;
            if cfg.sealed {
                return Err(ApiError::invalid_config(
                    "stream configuration for create can not be sealed",
                ));
            }
            let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
            let _server = self.server_admin();
            if let Some(s) = self.stream(name) {
                let cur = s.config();
                let mut want = cfg.clone();
                want.first_seq = cur.first_seq;
                return if want == cur {
                    Ok((s, None))
                } else {
                    Err(ApiError::name_in_use())
                };
            }
            if limit(self.inner.cfg.limits.max_streams)
                .is_some_and(|max| self.streams().len() as i64 >= max)
            {
                return Err(ApiError::max_streams());
            }
            self.check_account_limits(&cfg)?;
            self.check_against_others(&cfg)?;
            let dir = self.inner.dir.join(name);
            let created = now_nanos();
            self.write_meta(&dir, &cfg, created)?;
            let first_seq = cfg.first_seq.filter(|&s| s > 1);
            let stream = Stream::open(
                cfg,
                created,
                dir.clone(),
                self.inner.cfg.sync,
                self.inner.cfg.block_size,
            )
            .map_err(|e| {
                let _ = fs::remove_file(dir.join(META));
                let _ = fs::remove_dir_all(&dir);
                ApiError::from(e)
            })?;
            // `first_seq`: move the (empty) store's next sequence forward, durably.
            let pending = first_seq.map(|fs| {
                stream.store.purge(PurgeRequest {
                    filter: None,
                    up_to_seq: Some(fs),
                    keep: None,
                })
            });
            let stream = Arc::new(stream);
            self.put_stream(name, Some(stream.clone()));
            // Known to the consumers from the start, so interest retention drops what no
            // consumer wants even before the first consumer exists.
            if let Some(c) = self.consumers() {
                c.load(stream.clone() as Arc<dyn MsgSource>);
            }
            Ok((stream, pending))
        })();
        let (s, pending) = match r {
            Ok(v) => v,
            Err(e) => return ready(ApiReply::Json(err_json(T, &e))),
        };
        let js = self.clone();
        Box::pin(async move {
            if let Some(p) = pending {
                if let Err(e) = p.await {
                    return ApiReply::Json(err_json(T, &e.into()));
                }
            }
            #[derive(Serialize)]
            struct Created {
                #[serde(flatten)]
                info: StreamInfo,
                did_create: bool,
            }
            ApiReply::Json(resp(
                T,
                None,
                Created {
                    info: js.info_of(&s, None, false),
                    did_create: true,
                },
            ))
        })
    }

    fn update(&self, name: &str, payload: &[u8]) -> ApiFuture {
        const T: &str = "stream_update_response";
        let r = (|| {
            let mut cfg = StreamConfig::parse(payload)?;
            // Unlike create, nats-server checks an update's name is present before it checks
            // that it matches.
            if cfg.name.is_empty() {
                cfg.normalize()?;
            }
            if cfg.name != name {
                return Err(ApiError::name_mismatch());
            }
            let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
            let _server = self.server_admin();
            let s = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
            cfg.normalize()?;
            if cfg.sealed {
                // As nats-server: sealing implies discard new, deny delete and deny purge.
                cfg.discard = crate::config::Discard::New;
                cfg.deny_delete = true;
                cfg.deny_purge = true;
            }
            let cur = s.config();
            cur.check_update(&cfg)?;
            cfg.first_seq = cur.first_seq;
            self.check_account_limits(&cfg)?;
            self.check_against_others(&cfg)?;
            self.write_meta(&s.dir, &cfg, s.created)?;
            let pending = s.set_config(cfg);
            Ok((s, pending))
        })();
        match r {
            Err(e) => ready(ApiReply::Json(err_json(T, &e))),
            Ok((s, pending)) => {
                let js = self.clone();
                Box::pin(async move {
                    if let Err(e) = pending.await {
                        return ApiReply::Json(err_json(T, &e.into()));
                    }
                    ApiReply::Json(resp(T, None, js.info_of(&s, None, false)))
                })
            }
        }
    }

    fn info(&self, name: &str, payload: &[u8]) -> ApiReply {
        const T: &str = "stream_info_response";
        let req: InfoReq = parse_lenient(payload);
        let Some(s) = self.stream(name) else {
            let zero = Paged {
                total: 0,
                offset: 0,
                limit: 0,
                body: Empty {},
            };
            return ApiReply::Json(resp(T, Some(&ApiError::stream_not_found()), zero));
        };
        let filter = req.subjects_filter.as_deref().filter(|f| !f.is_empty());
        let mut info = self.info_of(&s, filter, true);
        if req.deleted_details {
            info.state.deleted = Some(s.deleted_seqs()).filter(|d| !d.is_empty());
        }
        // As nats-server: paging fields only when the filter matched something; a page past
        // the end leaves `subjects` out.
        let (total, offset, limit) = match info.state.subjects.as_mut() {
            Some(subs) if !subs.is_empty() => {
                const LIMIT: usize = 100_000;
                let total = subs.len();
                if req.offset > 0 || total > LIMIT {
                    *subs = std::mem::take(subs)
                        .into_iter()
                        .skip(req.offset)
                        .take(LIMIT)
                        .collect();
                }
                (total, req.offset, LIMIT)
            }
            _ => (0, 0, 0),
        };
        if info.state.subjects.as_ref().is_some_and(|s| s.is_empty()) {
            info.state.subjects = None;
        }
        ApiReply::Json(resp(
            T,
            None,
            Paged {
                total,
                offset,
                limit,
                body: info,
            },
        ))
    }

    fn delete_stream(&self, name: &str, payload: &[u8]) -> ApiReply {
        const T: &str = "stream_delete_response";
        // Clients send `{}` (async-nats) or nothing; `null` is refused as nats-server does.
        let empty = payload.iter().all(|b| b.is_ascii_whitespace())
            || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
                .is_ok_and(|m| m.is_empty());
        if !empty {
            return ApiReply::Json(err_json(T, &ApiError::not_empty_request()));
        }
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = self.put_stream(name, None) else {
            return ApiReply::Json(err_json(T, &ApiError::stream_not_found()));
        };
        // Metadata first (durably), so a crash part-way never resurrects the stream.
        let r = fs::remove_file(s.dir.join(META)).and_then(|_| sync_dir(&s.dir));
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::NotFound {
                let err = ApiError::from(crate::Error::from(e));
                self.put_stream(name, Some(s));
                return ApiReply::Json(err_json(T, &err));
            }
        }
        if let Some(c) = self.consumers() {
            c.stream_deleted(name);
        }
        self.forget_usage();
        let dir = s.dir.clone();
        drop(s);
        let _ = fs::remove_dir_all(&dir);
        let _ = sync_dir(&self.inner.dir);
        ApiReply::Json(resp(T, None, serde_json::json!({"success": true})))
    }

    fn matching_names(&self, subject: Option<&str>) -> Vec<Arc<Stream>> {
        self.streams()
            .values()
            .filter(|s| {
                subject.is_none_or(|f| {
                    s.lock()
                        .config
                        .subjects
                        .iter()
                        .any(|x| util::overlaps(x, f))
                })
            })
            .cloned()
            .collect()
    }

    fn names(&self, payload: &[u8]) -> ApiReply {
        const T: &str = "stream_names_response";
        let req: ListReq = parse_lenient(payload);
        const LIMIT: usize = 1024;
        let all = self.matching_names(req.subject.as_deref().filter(|s| !s.is_empty()));
        let offset = req.offset.min(all.len());
        let names: Vec<String> = all
            .iter()
            .skip(offset)
            .take(LIMIT)
            .map(|s| s.name.clone())
            .collect();
        ApiReply::Json(resp(
            T,
            None,
            Paged {
                total: all.len(),
                offset,
                limit: LIMIT,
                // nats-server sends `null` for no streams (a nil Go slice).
                body: serde_json::json!({ "streams": (!names.is_empty()).then_some(names) }),
            },
        ))
    }

    fn list(&self, payload: &[u8]) -> ApiReply {
        const T: &str = "stream_list_response";
        let req: ListReq = parse_lenient(payload);
        const LIMIT: usize = 256;
        let all = self.matching_names(req.subject.as_deref().filter(|s| !s.is_empty()));
        let offset = req.offset.min(all.len());
        let infos: Vec<StreamInfo> = all
            .iter()
            .skip(offset)
            .take(LIMIT)
            .map(|s| self.info_of(s, None, false))
            .collect();
        #[derive(Serialize)]
        struct L {
            streams: Vec<StreamInfo>,
        }
        ApiReply::Json(resp(
            T,
            None,
            Paged {
                total: all.len(),
                offset,
                limit: LIMIT,
                body: L { streams: infos },
            },
        ))
    }

    fn purge(&self, name: &str, payload: &[u8]) -> ApiFuture {
        const T: &str = "stream_purge_response";
        let fail = |e: ApiError| {
            ready(ApiReply::Json(resp(
                T,
                Some(&e),
                serde_json::json!({"purged": 0}),
            )))
        };
        let req: PurgeReq = parse_lenient(payload);
        let Some(s) = self.stream(name) else {
            return fail(ApiError::stream_not_found());
        };
        let cfg = s.config();
        if cfg.sealed {
            return fail(ApiError::sealed());
        }
        if cfg.deny_purge {
            return fail(ApiError::purge_not_permitted());
        }
        // Zero is the same as absent for both.
        let seq = req.seq.filter(|&q| q > 0);
        let keep = req.keep.filter(|&k| k > 0);
        if seq.is_some() && keep.is_some() {
            return fail(ApiError::bad_request());
        }
        if let Some(f) = req.filter.as_deref().filter(|f| !f.is_empty()) {
            if !util::valid_filter(f) {
                // nats-server: an invalid filter matches nothing.
                return ready(ApiReply::Json(resp(
                    T,
                    None,
                    serde_json::json!({"success": true, "purged": 0}),
                )));
            }
        }
        let pending = s.store.purge(PurgeRequest {
            filter: req.filter.filter(|f| !f.is_empty() && f != ">"),
            up_to_seq: seq,
            keep,
        });
        let consumers = self.consumers().cloned();
        let name = s.name.clone();
        let js = self.clone();
        Box::pin(async move {
            let done = pending.await;
            js.forget_usage();
            if let Some(c) = &consumers {
                c.purged(&name);
            }
            ApiReply::Json(match done {
                Ok(n) => resp(T, None, serde_json::json!({"success": true, "purged": n})),
                Err(e) => resp(
                    T,
                    Some(&ApiError::from(e)),
                    serde_json::json!({"purged": 0}),
                ),
            })
        })
    }

    fn lookup(&self, s: &Stream, req: &MsgGetReq) -> Result<Option<StoredMsg>, ApiError> {
        let r = match (req.seq, &req.last_by_subj, &req.next_by_subj) {
            (Some(q), None, None) if q > 0 => s.store.get(q),
            (None, Some(subj), None) if !subj.is_empty() => s.store.last_for_subject(subj),
            (q, None, Some(subj)) if !subj.is_empty() => {
                s.store.get_next(q.unwrap_or(0).max(1), Some(subj))
            }
            _ => return Err(ApiError::bad_request()),
        };
        r.map_err(ApiError::from)
    }

    fn msg_get(&self, name: &str, payload: &[u8]) -> ApiReply {
        const T: &str = "stream_msg_get_response";
        let r = (|| {
            let req: MsgGetReq = parse_req(payload)?;
            let s = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
            self.lookup(&s, &req)?
                .ok_or_else(ApiError::no_message_found)
        })();
        ApiReply::Json(match r {
            Err(e) => err_json(T, &e),
            Ok(m) => {
                #[derive(Serialize)]
                struct Msg {
                    subject: String,
                    seq: u64,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    hdrs: Option<String>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    data: Option<String>,
                    time: String,
                }
                #[derive(Serialize)]
                struct B {
                    message: Msg,
                }
                let enc = |b: &[u8]| (!b.is_empty()).then(|| util::base64(b));
                resp(
                    T,
                    None,
                    B {
                        message: Msg {
                            subject: m.subject,
                            seq: m.seq,
                            hdrs: enc(&m.headers),
                            data: enc(&m.payload),
                            time: util::rfc3339(m.timestamp),
                        },
                    },
                )
            }
        })
    }

    fn msg_delete(&self, name: &str, payload: &[u8]) -> ApiFuture {
        const T: &str = "stream_msg_delete_response";
        let fail = |e: ApiError| ready(ApiReply::Json(err_json(T, &e)));
        let mut req: MsgDeleteReq = match parse_req(payload) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if payload.trim_ascii() == b"null" {
            // nats-server reads `null` as sequence 0, unlike a missing sequence.
            req.seq = Some(0);
        }
        let Some(s) = self.stream(name) else {
            return fail(ApiError::stream_not_found());
        };
        let cfg = s.config();
        if cfg.sealed {
            return fail(ApiError::sealed());
        }
        if cfg.deny_delete {
            return fail(ApiError::msg_delete_failed("message delete not permitted"));
        }
        let file = s.storage == StorageType::File;
        let seq = match req.seq {
            None => return fail(ApiError::bad_request()),
            Some(0) if !file => return fail(ApiError::bad_request()),
            Some(q) => q,
        };
        // nats-server's file store tells a sequence past the end and one deleted in the
        // middle apart from one below the first; its memory store does not.
        let not_found = move |st: crate::StoreState| {
            if !file || seq == 0 || seq < st.first_seq {
                ApiError::msg_delete_failed("no message found")
            } else if seq > st.last_seq {
                ApiError::msg_delete_failed("stream store EOF")
            } else {
                ApiError::sequence_not_found(seq)
            }
        };
        let pending = s.store.delete(seq);
        let js = self.clone();
        Box::pin(async move {
            let _forget = ForgetUsage(&js);
            ApiReply::Json(match pending.await {
                Ok(true) => {
                    if let Some(c) = js.consumers() {
                        c.removed(&s.name);
                    }
                    resp(T, None, serde_json::json!({"success": true}))
                }
                Ok(false) => err_json(T, &not_found(s.store.state())),
                Err(e) => err_json(T, &e.into()),
            })
        })
    }

    fn direct_get(&self, name: &str, last_by_subj: Option<&str>, payload: &[u8]) -> ApiReply {
        let Some(s) = self.stream(name) else {
            return ApiReply::NoResponse;
        };
        if !s.lock().config.allow_direct {
            return ApiReply::NoResponse;
        }
        let status = |line: &str| ApiReply::Msg {
            headers: format!("NATS/1.0 {line}\r\n\r\n").into_bytes(),
            payload: Bytes::new(),
        };
        let empty = payload.iter().all(|b| b.is_ascii_whitespace());
        let req = match last_by_subj {
            Some(subj) => MsgGetReq {
                last_by_subj: Some(subj.to_string()),
                ..Default::default()
            },
            None if empty => return status("408 Empty Request"),
            None => match util::from_json::<MsgGetReq>(payload) {
                Ok(r) => r,
                Err(_) => return status("408 Malformed Request"),
            },
        };
        if req.seq.unwrap_or(0) == 0 && req.last_by_subj.is_none() && req.next_by_subj.is_none() {
            return status("408 Empty Request");
        }
        match self.lookup(&s, &req) {
            Ok(Some(m)) => {
                let mut h: Vec<u8> = if m.headers.len() >= 4 && m.headers.ends_with(b"\r\n\r\n") {
                    m.headers[..m.headers.len() - 2].to_vec()
                } else {
                    b"NATS/1.0\r\n".to_vec()
                };
                h.extend_from_slice(
                    format!(
                        "Nats-Stream: {}\r\nNats-Subject: {}\r\nNats-Sequence: {}\r\nNats-Time-Stamp: {}\r\n\r\n",
                        s.name,
                        m.subject,
                        m.seq,
                        util::rfc3339(m.timestamp)
                    )
                    .as_bytes(),
                );
                ApiReply::Msg {
                    headers: h,
                    payload: m.payload,
                }
            }
            Ok(None) => status("404 Message Not Found"),
            Err(e) if e.code == 400 => status("408 Bad Request"),
            Err(_) => status("500 Server Error"),
        }
    }
}

fn is_error(body: &[u8]) -> bool {
    // Every error reply has `"error":{` right after the type.
    body.windows(9).take(80).any(|w| w == b"\"error\":{")
}

#[cfg(test)]
mod tests {
    use super::pub_ack;

    #[test]
    fn pub_acks_are_the_json_clients_parse() {
        let v: serde_json::Value = serde_json::from_slice(&pub_ack("ORDERS", 42, false)).unwrap();
        assert_eq!(v, serde_json::json!({"stream": "ORDERS", "seq": 42}));
        let v: serde_json::Value = serde_json::from_slice(&pub_ack("a\"b", 7, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"stream": "a\"b", "seq": 7, "duplicate": true})
        );
    }
}
