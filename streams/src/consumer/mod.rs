//! JetStream consumers: configuration, the `$JS.API.CONSUMER.*` API, pull and push delivery,
//! acknowledgements, redelivery, interest/workqueue retention and persistent state.
//!
//! # Wiring (for the dispatcher and the core)
//!
//! 1. Create one [`Consumers`] per [`crate::JetStream`] with the core's [`Outbox`] and a
//!    runtime handle: `Consumers::new(outbox, handle)`.
//! 2. After opening each stream at startup: `consumers.load(stream.clone())` (consumers are
//!    read from `<stream dir>/obs/`).
//! 3. In `JetStream::api`, route every `$JS.API.CONSUMER.>` subject:
//!    `let s = consumer::stream_of(subject).and_then(|n| self.stream(n));`
//!    `consumers.api(subject, reply, payload, s.map(|s| s as Arc<dyn MsgSource>))`;
//!    `Some(r)` is the reply to send, `None` means the consumer answers through the outbox
//!    (MSG.NEXT): send nothing. (`ApiReply::NoResponse` keeps its meaning: 503 no responders.)
//!    `consumers.api_then(..)` also returns the stream deletions the request set off
//!    (interest retention); the dispatcher answers once they complete.
//! 4. The core delivers publishes on `$JS.ACK.>` to `consumers.ack(subject, reply, payload)`
//!    and on `$JS.FC.>` to `consumers.flow_control(subject)`; optionally it calls
//!    `consumers.interest_changed()` when subscriptions change (push consumers also poll).
//! 5. After an append is durable (the PubAck point): `consumers.stored(stream, seq)`, and
//!    await the deletion it may return (interest retention, nobody wants it) before the PubAck.
//!    After STREAM.PURGE: `consumers.purged(stream)`; after STREAM.DELETE:
//!    `consumers.stream_deleted(stream)` (before the directory is removed, or after: either
//!    works); STREAM.INFO's `consumer_count` is `consumers.count(stream)`; account info's
//!    `consumers` is `consumers.total()`.
//! 6. The [`Outbox`] must queue what it is given: it is called with a consumer's lock held, so
//!    it must not call back into [`Consumers`] synchronously.

mod ack;
pub mod config;
mod engine;
mod persist;
mod pull;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

pub use config::{AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, ReplayPolicy};
pub use source::{MsgSource, StoreSource};

use crate::config::{Retention, StorageType};
use crate::errors::ApiError;
use crate::jetstream::resp;
use crate::util::{self, now_nanos, rfc3339};
use crate::{ApiReply, Pending};
use config::err;
use engine::{Consumer, Start, Tick};
use persist::{Meta, StateLog};

/// The seam to the server: how consumers publish and see interest.
pub trait Outbox: Send + Sync {
    /// Publish a message into the account (statuses, advisories, ack replies, flow control).
    fn send(&self, subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]);
    /// Whether anything subscribes to `subject` in the account (push consumers deliver only
    /// then; pull requests whose inbox lost interest are dropped).
    fn has_interest(&self, subject: &str) -> bool;
    /// Deliver a stored message: routed to `to` (the deliver subject or the pull request's
    /// inbox) but shown to subscribers with its original `subject`, as nats-server does.
    /// The default routes it as a plain publish to `to`.
    fn deliver(
        &self,
        to: &str,
        subject: &str,
        reply: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        let _ = subject;
        self.send(to, Some(reply), headers, payload)
    }
    /// One pass of a consumer's output, in order: deliveries (`subject` set) and statuses
    /// (`subject` `None`: shown on `to`). The default sends them one by one; a server can route
    /// a pass together (one lookup per destination, one wake per connection).
    fn deliver_all(&self, msgs: &[Delivery<'_>]) {
        for d in msgs {
            match d.subject {
                Some(s) => self.deliver(d.to, s, d.reply.unwrap_or(""), d.headers, d.payload),
                None => self.send(d.to, d.reply, d.headers, d.payload),
            }
        }
    }
}

/// One message of a consumer's output (see [`Outbox::deliver_all`]).
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Where it is routed: the deliver subject or the pull request's inbox.
    pub to: &'a str,
    /// The subject subscribers see: the stored message's own; `None` for a status (`to`).
    pub subject: Option<&'a str>,
    /// Its reply subject (the `$JS.ACK...` subject of a delivery).
    pub reply: Option<&'a str>,
    /// Its `NATS/1.0` header block, if any.
    pub headers: Option<&'a [u8]>,
    /// Its body.
    pub payload: &'a [u8],
}

/// A random alphanumeric id (ephemeral names, advisory ids, flow control subjects).
pub(crate) fn random_id(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| A[fastrand::usize(..A.len())] as char)
        .collect()
}

/// The stream name of a `$JS.API.CONSUMER.>` subject.
pub fn stream_of(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("$JS.API.CONSUMER.")?;
    let t: Vec<&str> = rest.split('.').collect();
    match t.as_slice() {
        ["DURABLE", "CREATE", s, ..] | ["MSG", "NEXT", s, ..] => Some(s),
        [_, s, ..] => Some(s),
        _ => None,
    }
}

struct PerStream {
    source: Arc<dyn MsgSource>,
    consumers: BTreeMap<String, Arc<Consumer>>,
}

struct Registry {
    outbox: Arc<dyn Outbox>,
    handle: Handle,
    streams: Mutex<HashMap<String, PerStream>>,
    /// Serializes create/update/delete.
    admin: Mutex<()>,
    /// The account's limits on consumers: how many, and their `max_ack_pending`.
    max_consumers: Option<i64>,
    max_ack_pending: Option<i64>,
}

/// All consumers of one account's streams. Cheap to clone.
#[derive(Clone)]
pub struct Consumers {
    r: Arc<Registry>,
}

fn err_json(ty: &str, e: &ApiError) -> Option<ApiReply> {
    #[derive(Serialize)]
    struct Empty {}
    Some(ApiReply::Json(resp(ty, Some(e), Empty {})))
}

#[derive(Deserialize, Default)]
struct CreateReq {
    #[serde(default)]
    stream_name: String,
    #[serde(default)]
    config: ConsumerConfig,
    #[serde(default)]
    action: String,
}

#[derive(Deserialize, Default)]
struct PageReq {
    #[serde(default)]
    offset: usize,
}

#[derive(Deserialize, Default)]
struct PauseReq {
    #[serde(default)]
    pause_until: Option<String>,
}

fn consumer_dir(src: &dyn MsgSource, name: &str) -> PathBuf {
    src.dir().join("obs").join(name)
}

fn in_memory(src: &dyn MsgSource, c: &ConsumerConfig) -> bool {
    c.mem_storage || src.config().storage == StorageType::Memory
}

impl Consumers {
    /// A registry publishing through `outbox`, running timers on `handle`.
    pub fn new(outbox: Arc<dyn Outbox>, handle: Handle) -> Consumers {
        Consumers {
            r: Arc::new(Registry {
                outbox,
                handle,
                streams: Mutex::new(HashMap::new()),
                admin: Mutex::new(()),
                max_consumers: None,
                max_ack_pending: None,
            }),
        }
    }

    /// [`Consumers::new`] for an account limiting how many consumers it has and their
    /// `max_ack_pending` (values below 1 are no limit).
    pub fn with_limits(
        outbox: Arc<dyn Outbox>,
        handle: Handle,
        max_consumers: i64,
        max_ack_pending: i64,
    ) -> Consumers {
        let mut c = Consumers::new(outbox, handle);
        let r = Arc::get_mut(&mut c.r).expect("not shared yet");
        r.max_consumers = (max_consumers > 0).then_some(max_consumers);
        r.max_ack_pending = (max_ack_pending > 0).then_some(max_ack_pending);
        c
    }

    /// Where consumers publish: the account.
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.r.outbox
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, PerStream>> {
        self.r.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn list_of(&self, stream: &str) -> Vec<Arc<Consumer>> {
        self.streams()
            .get(stream)
            .map(|p| p.consumers.values().cloned().collect())
            .unwrap_or_default()
    }

    fn get(&self, stream: &str, name: &str) -> Option<Arc<Consumer>> {
        self.streams()
            .get(stream)
            .and_then(|p| p.consumers.get(name).cloned())
    }

    /// Consumers of `stream` (STREAM.INFO's `consumer_count`).
    pub fn count(&self, stream: &str) -> usize {
        self.streams().get(stream).map_or(0, |p| p.consumers.len())
    }

    /// Consumers of all streams (account info).
    pub fn total(&self) -> usize {
        self.streams().values().map(|p| p.consumers.len()).sum()
    }

    /// Info of one consumer.
    pub fn info(&self, stream: &str, name: &str) -> Option<ConsumerInfo> {
        self.get(stream, name).map(|c| c.info())
    }

    fn register(&self, src: &Arc<dyn MsgSource>, c: Arc<Consumer>) {
        self.streams()
            .entry(src.name().to_string())
            .or_insert_with(|| PerStream {
                source: src.clone(),
                consumers: BTreeMap::new(),
            })
            .consumers
            .insert(c.name.clone(), c.clone());
        let reg = Arc::downgrade(&self.r);
        self.r.handle.spawn(async move {
            loop {
                let notified = c.wake.notified();
                match c.tick() {
                    Tick::Stop => return,
                    Tick::Delete => {
                        if let Some(r) = reg.upgrade() {
                            drop(Consumers { r }.remove(&c));
                        }
                        return;
                    }
                    Tick::At(at) => {
                        let _ = tokio::time::timeout_at(at, notified).await;
                        // A pass that stopped at its budget woke us at once: let the
                        // connections drain what it handed out before the next.
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
    }

    /// Removes a consumer: stops it, deletes its state, frees messages only it kept.
    /// Returns the deletions in flight of messages only it kept (interest retention).
    fn remove(&self, c: &Arc<Consumer>) -> Vec<Pending<bool>> {
        let mut released = Vec::new();
        let src = {
            let mut s = self.streams();
            let Some(p) = s.get_mut(c.stream.name()) else {
                return released;
            };
            match p.consumers.get(&c.name) {
                Some(x) if Arc::ptr_eq(x, c) => {}
                _ => return released,
            }
            p.consumers.remove(&c.name);
            p.source.clone()
        };
        let from = c.floor() + 1;
        c.stop();
        if !in_memory(&*src, &c.lock().config) {
            if let Err(e) = persist::remove(&consumer_dir(&*src, &c.name)) {
                tracing::error!(consumer = %c.name, error = %e, "removing consumer state failed");
            }
        }
        if src.config().retention == Retention::Interest {
            let mut at = from;
            while let Ok(Some(m)) = src.get_next(at, None) {
                at = m.seq + 1;
                released.extend(self.release(&*src, m.seq, &m.subject));
            }
        }
        released
    }

    /// Interest retention: deletes `seq` if no consumer still needs it; the deletion in
    /// flight if so.
    fn release(&self, src: &dyn MsgSource, seq: u64, subject: &str) -> Option<Pending<bool>> {
        if self
            .list_of(src.name())
            .iter()
            .any(|c| c.needs(seq, subject))
        {
            return None;
        }
        Some(src.delete(seq))
    }

    /// Loads the consumers saved under a stream's directory (at startup). Returns the names
    /// of consumers that could not be loaded.
    pub fn load(&self, src: Arc<dyn MsgSource>) -> Vec<String> {
        let mut failed = Vec::new();
        self.streams()
            .entry(src.name().to_string())
            .or_insert_with(|| PerStream {
                source: src.clone(),
                consumers: BTreeMap::new(),
            });
        let obs = src.dir().join("obs");
        let Ok(entries) = std::fs::read_dir(&obs) else {
            return failed;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            let meta = match persist::read_meta(&dir) {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "consumer without readable metadata skipped");
                    failed.push(name);
                    continue;
                }
            };
            let track = meta.config.ack_policy != AckPolicy::None;
            let (log, saved) = match StateLog::open(&dir, track) {
                Ok(x) => x,
                Err(err) => {
                    tracing::error!(dir = %dir.display(), error = %err, "consumer state unreadable");
                    failed.push(name);
                    continue;
                }
            };
            let start = Start {
                next_seq: saved.delivered_s + 1,
                lps: Default::default(),
            };
            let c = Consumer::new(
                src.clone(),
                self.r.outbox.clone(),
                meta.config,
                meta.created,
                start,
                Some(saved),
                log,
            );
            self.register(&src, Arc::new(c));
        }
        failed
    }

    /// A message is durable in `stream` at `seq`: wake consumers; under interest retention,
    /// drop it at once if no consumer wants it (the deletion in flight is returned: await it
    /// before the PubAck, as nats-server has removed such a message by then).
    pub fn stored(&self, stream: &str, seq: u64) -> Option<Pending<bool>> {
        let (src, list) = {
            let s = self.streams();
            match s.get(stream) {
                // Nothing to tell, and (but with interest retention) nothing to decide: the
                // common case of a stream without consumers costs one map lookup per append.
                Some(p)
                    if !p.consumers.is_empty() || p.source.retention() == Retention::Interest =>
                {
                    (
                        p.source.clone(),
                        p.consumers.values().cloned().collect::<Vec<_>>(),
                    )
                }
                _ => return None,
            }
        };
        let interest = src.retention() == Retention::Interest;
        let needs_subject = interest || list.iter().any(|c| !c.lock().config.filters().is_empty());
        let subject = if needs_subject {
            src.get(seq).ok().flatten().map(|m| m.subject)
        } else {
            None
        };
        let mut wanted = false;
        for c in &list {
            wanted |= c.stored(seq, subject.as_deref());
        }
        (interest && !wanted && subject.is_some()).then(|| src.delete(seq))
    }

    /// A stream was purged: pending acks of removed messages are dropped, counts redone.
    pub fn purged(&self, stream: &str) {
        for c in self.list_of(stream) {
            c.purged();
        }
    }

    /// Messages were deleted from a stream (`STREAM.MSG.DELETE`): pending acks of deleted
    /// messages are dropped, counts redone.
    pub fn removed(&self, stream: &str) {
        for c in self.list_of(stream) {
            c.removed();
        }
    }

    /// A stream was deleted: its consumers stop (waiting pulls get `409 Consumer Deleted`).
    pub fn stream_deleted(&self, stream: &str) {
        let removed = self.streams().remove(stream);
        if let Some(p) = removed {
            for c in p.consumers.values() {
                c.stop();
            }
        }
    }

    /// Wakes push consumers (a subscription appeared or went away).
    pub fn interest_changed(&self) {
        let all: Vec<Arc<Consumer>> = self
            .streams()
            .values()
            .flat_map(|p| p.consumers.values().cloned())
            .collect();
        for c in all {
            if c.lock().config.is_push() {
                c.kick();
            }
        }
    }

    /// Stops every consumer's timer (shutdown). State is already written.
    pub fn close(&self) {
        let all: Vec<PerStream> = self.streams().drain().map(|(_, p)| p).collect();
        for p in all {
            for c in p.consumers.values() {
                c.shut_down();
            }
        }
    }

    /// A publish on `$JS.ACK.>`.
    pub fn ack(&self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        let Some(a) = ack::parse_subject(subject) else {
            return;
        };
        let Some(kind) = ack::parse_payload(payload) else {
            return;
        };
        let Some(c) = self.get(a.stream, a.consumer) else {
            return;
        };
        let retention = c.lock().retention;
        // +NXT's reply is the inbox of the pull it makes, not a confirmation.
        let removes = retention != Retention::Limits && !matches!(kind, ack::AckKind::Next(_));
        let done = c.ack(&a, kind, reply, removes);
        if done.is_empty() || !removes {
            return;
        }
        let mut deletes = Vec::new();
        for q in done {
            match retention {
                Retention::WorkQueue => deletes.push(c.stream.delete(q)),
                _ => {
                    if let Ok(Some(m)) = c.stream.get(q) {
                        deletes.extend(self.release(&*c.stream, q, &m.subject));
                    }
                }
            }
        }
        // A double ack is confirmed once the messages it released are gone, as nats-server
        // removes them before it answers.
        if let Some(r) = reply {
            let (outbox, r) = (self.r.outbox.clone(), r.to_string());
            self.r.handle.spawn(async move {
                for d in deletes {
                    let _ = d.await;
                }
                outbox.send(&r, None, None, b"");
            });
        }
    }

    /// A publish on `$JS.FC.>` (a push client answering flow control).
    pub fn flow_control(&self, subject: &str) {
        let t: Vec<&str> = subject.split('.').collect();
        if t.len() >= 4 {
            if let Some(c) = self.get(t[2], t[3]) {
                c.flow_control(subject);
            }
        }
    }

    /// A `$JS.API.CONSUMER.>` request. `stream` is the stream named in the subject (None if
    /// it does not exist). `None` back: nothing to send (MSG.NEXT answers via the outbox).
    pub fn api(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
        stream: Option<Arc<dyn MsgSource>>,
    ) -> Option<ApiReply> {
        self.api_inner(subject, reply, payload, stream, &mut Vec::new())
    }

    /// [`Consumers::api`], with the stream deletions the request set off (a DELETE under
    /// interest retention frees what only that consumer kept): send the reply once they
    /// complete, as nats-server has removed those messages when it answers.
    pub fn api_then(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
        stream: Option<Arc<dyn MsgSource>>,
    ) -> Option<(ApiReply, Vec<Pending<bool>>)> {
        let mut released = Vec::new();
        let answer = self.api_inner(subject, reply, payload, stream, &mut released)?;
        Some((answer, released))
    }

    fn api_inner(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
        stream: Option<Arc<dyn MsgSource>>,
        released: &mut Vec<Pending<bool>>,
    ) -> Option<ApiReply> {
        let rest = subject.strip_prefix("$JS.API.CONSUMER.")?;
        let t: Vec<&str> = rest.split('.').collect();
        let ty = match t.first() {
            Some(&"CREATE") | Some(&"DURABLE") => "consumer_create_response",
            Some(&"INFO") => "consumer_info_response",
            Some(&"DELETE") => "consumer_delete_response",
            Some(&"NAMES") => "consumer_names_response",
            Some(&"LIST") => "consumer_list_response",
            Some(&"PAUSE") => "consumer_pause_response",
            Some(&"MSG") => {
                let (Some(src), ["MSG", "NEXT", _, name]) = (stream, t.as_slice()) else {
                    return Some(ApiReply::NoResponse);
                };
                let Some(c) = self.get(src.name(), name) else {
                    return Some(ApiReply::NoResponse);
                };
                if let Some(r) = reply {
                    c.pull(r, payload);
                }
                return None;
            }
            _ => return Some(ApiReply::NoResponse),
        };
        let Some(src) = stream else {
            if ty == "consumer_names_response" || ty == "consumer_list_response" {
                let e = ApiError::stream_not_found();
                return Some(ApiReply::Json(resp(
                    ty,
                    Some(&e),
                    serde_json::json!({"total":0,"offset":0,"limit":0,"consumers":[]}),
                )));
            }
            return err_json(ty, &ApiError::stream_not_found());
        };
        // INFO and DELETE take no body: nothing, blanks or `{}` (`null` is refused, as by
        // nats-server).
        if matches!(t.first(), Some(&"INFO") | Some(&"DELETE")) {
            let empty = payload.iter().all(|b| b.is_ascii_whitespace())
                || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
                    .is_ok_and(|m| m.is_empty());
            if !empty {
                return err_json(ty, &ApiError::not_empty_request());
            }
        }
        match t.as_slice() {
            ["CREATE", _] => self.create(src, payload, None, None, false),
            ["CREATE", _, name] => self.create(src, payload, Some(name), None, false),
            ["CREATE", _, name, ..] => {
                let filter = t[3..].join(".");
                self.create(src, payload, Some(name), Some(&filter), false)
            }
            ["DURABLE", "CREATE", _, name] => self.create(src, payload, Some(name), None, true),
            ["INFO", _, name] => Some(match self.get(src.name(), name) {
                Some(c) => ApiReply::Json(resp(ty, None, c.info())),
                None => return err_json(ty, &err::not_found()),
            }),
            ["DELETE", _, name] => {
                let _g = self.r.admin.lock().unwrap_or_else(|e| e.into_inner());
                match self.get(src.name(), name) {
                    Some(c) => {
                        released.extend(self.remove(&c));
                        Some(ApiReply::Json(resp(
                            ty,
                            None,
                            serde_json::json!({"success": true}),
                        )))
                    }
                    None => err_json(ty, &err::not_found()),
                }
            }
            ["NAMES", _] | ["LIST", _] => {
                let req: PageReq = if util::is_empty_json(payload) {
                    PageReq::default()
                } else {
                    util::from_json(payload).unwrap_or_default()
                };
                let list = self.list_of(src.name());
                let total = list.len();
                let names = t[0] == "NAMES";
                let limit = if names { 1024 } else { 256 };
                let page = list.into_iter().skip(req.offset).take(limit);
                let consumers: serde_json::Value = if names {
                    page.map(|c| c.name.clone()).collect::<Vec<_>>().into()
                } else {
                    serde_json::to_value(page.map(|c| c.info()).collect::<Vec<_>>()).expect("json")
                };
                Some(ApiReply::Json(resp(
                    ty,
                    None,
                    serde_json::json!({"total": total, "offset": req.offset, "limit": limit, "consumers": consumers}),
                )))
            }
            ["PAUSE", _, name] => self.pause(&src, name, payload),
            _ => Some(ApiReply::NoResponse),
        }
    }

    fn pause(&self, src: &Arc<dyn MsgSource>, name: &str, payload: &[u8]) -> Option<ApiReply> {
        let ty = "consumer_pause_response";
        let _g = self.r.admin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = self.get(src.name(), name) else {
            let e = err::not_found();
            return Some(ApiReply::Json(resp(
                ty,
                Some(&e),
                serde_json::json!({"paused": false, "pause_until": rfc3339(0)}),
            )));
        };
        let req: PauseReq = if util::is_empty_json(payload) {
            PauseReq::default()
        } else {
            match util::from_json(payload) {
                Ok(r) => r,
                Err(e) => return err_json(ty, &ApiError::invalid_json(e)),
            }
        };
        let until = req
            .pause_until
            .as_deref()
            .and_then(config::parse_rfc3339)
            .unwrap_or(0);
        let mut cfg = c.lock().config.clone();
        cfg.pause_until = (until > 0).then(|| rfc3339(until));
        if let Err(e) = self.save_meta(&**src, &cfg, c.created) {
            return err_json(ty, &e);
        }
        c.set_config(cfg);
        let now = now_nanos();
        let paused = until > now;
        let mut body = serde_json::json!({"paused": paused, "pause_until": rfc3339(until)});
        if paused {
            body["pause_remaining"] = (until - now).into();
        }
        Some(ApiReply::Json(resp(ty, None, body)))
    }

    fn save_meta(
        &self,
        src: &dyn MsgSource,
        cfg: &ConsumerConfig,
        created: i64,
    ) -> Result<(), ApiError> {
        if in_memory(src, cfg) {
            return Ok(());
        }
        let meta = Meta {
            config: cfg.clone(),
            created,
        };
        persist::write_meta(&consumer_dir(src, &cfg.name), &meta)
            .map_err(|e| ApiError::from(crate::Error::from(e)))
    }

    fn create(
        &self,
        src: Arc<dyn MsgSource>,
        payload: &[u8],
        name: Option<&str>,
        filter: Option<&str>,
        durable_api: bool,
    ) -> Option<ApiReply> {
        let ty = "consumer_create_response";
        let fail = |e: ApiError| err_json(ty, &e);
        let req: CreateReq = match util::from_json(payload) {
            Ok(r) => r,
            Err(e) => return fail(ApiError::invalid_json(e)),
        };
        if req.stream_name != src.name() {
            return fail(ApiError::name_mismatch());
        }
        let mut cfg = req.config;
        match name {
            None => {
                if !cfg.durable_name.is_empty() {
                    return fail(err::ephemeral_with_durable());
                }
            }
            Some(n) => {
                if durable_api && cfg.durable_name.is_empty() {
                    return fail(err::durable_not_set());
                }
                // A different `name` in the config gives way to the subject's, as with
                // nats-server; a different durable name is refused.
                if !cfg.durable_name.is_empty() && cfg.durable_name != n {
                    return fail(err::name_mismatch());
                }
                cfg.name = n.to_string();
            }
        }
        if let Some(f) = filter {
            if !cfg.filter_subjects.is_empty() {
                return fail(ApiError {
                    code: 400,
                    err_code: 10137,
                    description:
                        "consumer with multiple subject filters cannot use subject based API".into(),
                });
            }
            if cfg.filter_subject != f {
                return fail(err::create_filter_mismatch());
            }
        }
        if cfg.name.is_empty() && cfg.durable_name.is_empty() {
            cfg.name = random_id(8);
        }
        let scfg = src.config();
        let asked_ack_pending = cfg.max_ack_pending;
        if let Err(e) = cfg.normalize(&scfg) {
            return fail(e);
        }
        if let (Some(max), true) = (self.r.max_ack_pending, cfg.ack_policy != AckPolicy::None) {
            // The account's limit caps the default, and refuses more (or unlimited).
            if asked_ack_pending == 0 {
                cfg.max_ack_pending = cfg.max_ack_pending.min(max);
            } else if cfg.max_ack_pending > max || cfg.max_ack_pending < 0 {
                return fail(ApiError {
                    code: 400,
                    err_code: 10121,
                    description: format!("consumer max ack pending exceeds system limit of {max}"),
                });
            }
        }
        let _g = self.r.admin.lock().unwrap_or_else(|e| e.into_inner());
        let existing = self.get(src.name(), &cfg.name);
        match (existing, req.action.as_str()) {
            (None, "update") => fail(err::does_not_exist()),
            (Some(c), action) => {
                let old = c.lock().config.clone();
                if old == cfg {
                    return Some(ApiReply::Json(resp(ty, None, c.info())));
                }
                if action == "create" {
                    return fail(err::already_exists());
                }
                if let Err(e) = old.check_update(&cfg) {
                    return fail(e);
                }
                if let Err(e) = self.save_meta(&*src, &cfg, c.created) {
                    return fail(e);
                }
                c.set_config(cfg);
                Some(ApiReply::Json(resp(ty, None, c.info())))
            }
            (None, _) => {
                let others = self.list_of(src.name());
                if scfg.max_consumers > 0 && others.len() as i64 >= scfg.max_consumers {
                    return fail(err::max_consumers());
                }
                if self
                    .r
                    .max_consumers
                    .is_some_and(|max| self.total() as i64 >= max)
                {
                    return fail(err::max_consumers());
                }
                if scfg.retention == Retention::WorkQueue {
                    let mine = cfg.filters();
                    for o in &others {
                        let theirs = o.lock().config.filters();
                        if mine.is_empty() && theirs.is_empty() {
                            return fail(ApiError {
                                code: 400,
                                err_code: 10099,
                                description: "multiple non-filtered consumers not allowed on workqueue stream".into(),
                            });
                        }
                        let clash = mine.is_empty()
                            || theirs.is_empty()
                            || mine
                                .iter()
                                .any(|a| theirs.iter().any(|b| util::overlaps(a, b)));
                        if clash {
                            return fail(ApiError {
                                code: 400,
                                err_code: 10100,
                                description: "filtered consumer not unique on workqueue stream"
                                    .into(),
                            });
                        }
                    }
                }
                let start = match start_position(&*src, &cfg) {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let created = now_nanos();
                let log = if in_memory(&*src, &cfg) {
                    StateLog::memory()
                } else {
                    if let Err(e) = self.save_meta(&*src, &cfg, created) {
                        return fail(e);
                    }
                    let dir = consumer_dir(&*src, &cfg.name);
                    match StateLog::open(&dir, cfg.ack_policy != AckPolicy::None) {
                        Ok((log, _)) => log,
                        Err(e) => return fail(ApiError::from(crate::Error::from(e))),
                    }
                };
                let c = Arc::new(Consumer::new(
                    src.clone(),
                    self.r.outbox.clone(),
                    cfg,
                    created,
                    start,
                    None,
                    log,
                ));
                self.register(&src, c.clone());
                c.kick();
                Some(ApiReply::Json(resp(ty, None, c.info())))
            }
        }
    }
}

/// Where a new consumer starts, by deliver policy.
fn start_position(src: &dyn MsgSource, cfg: &ConsumerConfig) -> Result<Start, ApiError> {
    let st = src.state();
    let filters = cfg.filters();
    let first = if st.msgs == 0 {
        st.last_seq + 1
    } else {
        st.first_seq
    };
    let mut lps = std::collections::BTreeSet::new();
    let next_seq = match cfg.deliver_policy {
        DeliverPolicy::All => first,
        DeliverPolicy::New => st.last_seq + 1,
        DeliverPolicy::Last => {
            let last = if filters.is_empty() {
                (st.msgs > 0).then_some(st.last_seq)
            } else {
                filters
                    .iter()
                    .filter_map(|f| src.last_for_subject(f).ok().flatten().map(|m| m.seq))
                    .max()
            };
            last.unwrap_or(st.last_seq + 1)
        }
        DeliverPolicy::ByStartSequence => cfg.opt_start_seq,
        DeliverPolicy::ByStartTime => {
            let t = cfg
                .opt_start_time
                .as_deref()
                .and_then(config::parse_rfc3339)
                .unwrap_or(0);
            // Binary search on timestamps (they grow with sequences).
            let (mut lo, mut hi) = (first, st.last_seq + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match src.get_next(mid, None) {
                    Ok(Some(m)) if m.timestamp < t => lo = m.seq + 1,
                    _ => hi = mid,
                }
            }
            lo
        }
        DeliverPolicy::LastPerSubject => {
            let fs: Vec<String> = if filters.is_empty() {
                src.config().subjects
            } else {
                filters
            };
            for f in &fs {
                for subj in src.subject_counts(Some(f)).keys() {
                    if let Ok(Some(m)) = src.last_for_subject(subj) {
                        lps.insert(m.seq);
                    }
                }
            }
            st.last_seq + 1
        }
    };
    Ok(Start { next_seq, lps })
}
