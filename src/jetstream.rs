//! The seam between the core and the streams crate: JetStream runs as an internal subscriber.
//!
//! When JetStream is enabled, the [`Bridge`] subscribes (with internal sinks, see
//! [`crate::account::Sink`]) to `$JS.API.>` and to every stream subject of the account.
//!
//! A publish to a stream subject is admitted on the publisher's own task (checks, sequence,
//! hand-off to the store's writer thread: memory work, never a wait for the disk), so one
//! connection's messages are stored in the order sent. One task per account awaits every
//! append in flight and sends the PubAcks of appends that completed together (one group
//! commit) as a batch, waking each publisher once. API requests, which may create files and
//! fsync metadata, go through a bounded queue to a dedicated thread. Nothing on the routing
//! path waits for a disk.
//!
//! Which accounts have JetStream follows nats-server: without configured accounts, the global
//! one; with them, each account that says `jetstream: enabled`. Every other account gets an
//! answer to its API requests all the same: "JetStream not enabled for account".
//!
//! The stream subscriptions follow the streams: after a create, update or delete, they are
//! brought in line before the reply goes out, so a client that sees its stream created can
//! publish to it at once.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use natter_streams::{ApiReply, JetStream, JsConfig, PubAckFuture, Route, SyncPolicy};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use crate::account::{Account, Sink};
use crate::config::jetstream::{JetStreamConfig, Sync};
use crate::proto::encode::Message;
use crate::server::ServerState;
use crate::subscription::Subscription;

/// API requests waiting for the JetStream thread; past this, requests are dropped (with a
/// warning) rather than letting a flood grow memory without bound.
const QUEUE_JOBS: usize = 65_536;
/// Bytes of messages admitted but not yet acknowledged (durable), plus API requests queued, at
/// most; past it, publishes are dropped (the publisher's request times out; it may retry).
const QUEUE_BYTES: u64 = 256 << 20;

/// JetStream, plugged into the core.
pub struct Bridge {
    js: JetStream,
    account: Arc<Account>,
    server: Weak<ServerState>,
    jobs: SyncSender<Job>,
    /// Appends in flight, for the acker task.
    acks: UnboundedSender<InFlight>,
    queued_bytes: AtomicU64,
    /// The stream subjects in the order their subscriptions take precedence (see
    /// [`StreamInbox`]).
    routes: RwLock<Vec<Route>>,
    /// The live stream subscriptions, one per route; replaced as a whole under this lock.
    subs: Mutex<Vec<Arc<Subscription>>>,
    /// Whether a full-queue warning was logged since the queue last drained.
    warned_full: AtomicBool,
    store_dir: PathBuf,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("store_dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

/// One API request for the JetStream thread.
struct Job {
    subject: String,
    reply: Option<Bytes>,
    payload: Bytes,
}

thread_local! {
    /// The publishes to streams made on this thread while a [`Batch`] is open (`None` while
    /// none is).
    static BATCH: RefCell<Option<Vec<Flight>>> = const { RefCell::new(None) };
}

/// A connection's batch of operations (one read's worth): stream publishes made during it are
/// written together when it ends (interval mode: by the publisher, one `pwrite` per stream;
/// see [`natter_streams::DeferredWrites`]), and those done are acknowledged at once, in one
/// routing pass, rather than by the acker. Batches nest; the outermost one settles.
pub struct Batch {
    writes: Option<natter_streams::DeferredWrites>,
    outer: bool,
}

impl Batch {
    /// Opens a batch on the current thread; it ends when dropped.
    pub fn open() -> Batch {
        let writes = Some(natter_streams::DeferredWrites::open());
        let outer = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            b.is_none() && {
                *b = Some(Vec::new());
                true
            }
        });
        Batch { writes, outer }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Taken before the writes, so that a panic there cannot leave this thread's batch open.
        let flights = if self.outer {
            BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default()
        } else {
            Vec::new()
        };
        // Written first, so that what can be acknowledged now is.
        drop(self.writes.take());
        // Settled per bridge (an account's streams: usually one), in publish order.
        let mut flights = flights.into_iter().peekable();
        while let Some((bridge, first)) = flights.next() {
            let mut mine = vec![first];
            while let Some((_, f)) = flights.next_if(|(b, _)| Arc::ptr_eq(b, &bridge)) {
                mine.push(f);
            }
            bridge.settle(mine);
        }
    }
}

/// A publish awaiting its PubAck, and the bridge that answers it.
type Flight = (Arc<Bridge>, InFlight);

/// An append on its way to disk, and where its PubAck goes (`None`: nowhere, but it is awaited
/// all the same, since completing it settles the stream's in-flight accounting).
struct InFlight {
    ack: PubAckFuture,
    reply: Option<Bytes>,
    size: u64,
}

/// The settings the streams crate runs with, from the server's `jetstream` configuration.
/// Data goes in `<store_dir>/jetstream`, as nats-server lays it out.
pub fn js_config(config: &JetStreamConfig, server_name: &str, account: &str) -> JsConfig {
    JsConfig {
        account: account.to_string(),
        store_dir: config.store_dir.join("jetstream"),
        max_memory: config.max_memory.unwrap_or(-1),
        max_file: config.max_file.unwrap_or(-1),
        sync: match config.sync {
            Sync::Always => SyncPolicy::Always,
            Sync::Interval(every) => SyncPolicy::Interval(every),
        },
        server_name: Some(server_name.to_string()),
        ..JsConfig::default()
    }
}

/// Starts JetStream for every account that has it (see the module docs) and answers the
/// others' API requests with the not-enabled error. Fails if a store cannot be opened.
pub fn start(
    server: &Arc<ServerState>,
    config: &JetStreamConfig,
) -> std::io::Result<Vec<Arc<Bridge>>> {
    let security = &server.config().security;
    // Accounts with JetStream, and their own limits.
    let enabled: Vec<(String, natter_streams::AccountLimits)> = if let Some(op) = &security.operator
    {
        crate::auth::operator::jetstream_accounts(op, security.system_account.as_deref())
            .map_err(std::io::Error::other)?
    } else if security.accounts.is_empty() {
        vec![(server.accounts.global().name.clone(), Default::default())]
    } else {
        security
            .accounts
            .iter()
            .filter(|a| a.jetstream)
            .map(|a| (a.name.clone(), a.jetstream_limits))
            .collect()
    };
    log_settings(config, &js_config(config, &server.name, ""));
    // The server-wide limits bound all accounts together.
    let usage = Arc::new(natter_streams::ServerUsage::default());
    let mut bridges = Vec::new();
    for account in server.accounts.iter() {
        if let Some((_, limits)) = enabled.iter().find(|(name, _)| *name == account.name) {
            bridges.push(Bridge::start(server, config, account, *limits, &usage)?);
        } else {
            let _ = account.subscribe_internal(
                b"$JS.API.>",
                Arc::new(Disabled {
                    server: Arc::downgrade(server),
                    account: Arc::downgrade(account),
                }),
            );
        }
    }
    info!("JetStream ready");
    Ok(bridges)
}

fn log_settings(config: &JetStreamConfig, cfg: &JsConfig) {
    let limit = |v: i64| {
        if v < 0 {
            "unlimited".to_string()
        } else {
            format!("{v} bytes")
        }
    };
    info!("Starting JetStream");
    info!("  Store Directory: \"{}\"", cfg.store_dir.display());
    info!("  Max Memory:      {}", limit(cfg.max_memory));
    info!("  Max Storage:     {}", limit(cfg.max_file));
    match cfg.sync {
        SyncPolicy::Always => info!("  Sync:            always (acknowledged after fsync)"),
        SyncPolicy::Interval(every) => warn!(
            "  Sync:            every {every:?}: acknowledged before fsync, a power cut can lose up to one interval of acknowledged messages"
        ),
    }
    if config.store_dir == crate::config::jetstream::default_store_dir() {
        warn!("Temporary storage directory used, data could be lost on system reboot");
    }
}

impl Bridge {
    /// Opens `account`'s streams (recovering what a crash left) and plugs them in.
    fn start(
        server: &Arc<ServerState>,
        config: &JetStreamConfig,
        account: &Arc<Account>,
        limits: natter_streams::AccountLimits,
        usage: &Arc<natter_streams::ServerUsage>,
    ) -> std::io::Result<Arc<Bridge>> {
        let mut cfg = js_config(config, &server.name, &account.name);
        cfg.server_usage = Some(usage.clone());
        cfg.limits = limits;
        let store_dir = cfg.store_dir.clone();
        let js =
            JetStream::open(cfg).map_err(|e| std::io::Error::other(format!("JetStream: {e}")))?;
        let names = js.stream_names();
        if !names.is_empty() {
            info!(
                "  Recovered {} stream(s): {}",
                names.len(),
                names.join(", ")
            );
        }
        let (jobs, rx) = sync_channel(QUEUE_JOBS);
        let (acks, in_flight) = unbounded_channel();
        let bridge = Arc::new(Bridge {
            js,
            account: account.clone(),
            server: Arc::downgrade(server),
            jobs,
            acks,
            queued_bytes: AtomicU64::new(0),
            routes: RwLock::new(Vec::new()),
            subs: Mutex::new(Vec::new()),
            warned_full: AtomicBool::new(false),
            store_dir,
        });
        let runtime = tokio::runtime::Handle::current();
        let worker = bridge.clone();
        std::thread::Builder::new()
            .name("natter-jetstream".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    worker.run(job, &runtime);
                }
            })?;
        tokio::spawn(acker(Arc::downgrade(&bridge), in_flight));
        bridge.js.attach(
            Arc::new(CoreOutbox {
                server: Arc::downgrade(server),
                account: Arc::downgrade(account),
            }),
            tokio::runtime::Handle::current(),
        );
        let acks: Arc<dyn Sink> = Arc::new(AckInbox(Arc::downgrade(&bridge)));
        let _ = bridge
            .account
            .subscribe_internal(b"$JS.ACK.>", acks.clone());
        let _ = bridge.account.subscribe_internal(b"$JS.FC.>", acks);
        let api: Arc<dyn Sink> = Arc::new(ApiInbox(Arc::downgrade(&bridge)));
        // Kept for the server's lifetime: the API is there as long as JetStream is.
        let _ = bridge.account.subscribe_internal(b"$JS.API.>", api);
        bridge.resync();
        Ok(bridge)
    }

    /// The account these streams belong to.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// The streams, for monitoring.
    pub fn streams(&self) -> &JetStream {
        &self.js
    }

    /// Syncs and closes every stream (clean shutdown).
    pub fn close(&self) {
        self.js.close();
    }

    /// Admits a publish to a stream on the publisher's task and leaves the wait for its
    /// durability to the end of the publisher's batch (see [`Batch`]) or the acker; never
    /// blocks the publisher.
    fn publish(
        self: &Arc<Self>,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: usize,
        payload: &[u8],
        no_ack: bool,
    ) {
        let size = (subject.len() + payload.len()) as u64;
        if self.queued_bytes.load(Ordering::Relaxed) + size > QUEUE_BYTES {
            self.full(subject);
            return;
        }
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        let all = Bytes::copy_from_slice(payload);
        let headers = (header_len > 0).then(|| all.slice(..header_len));
        let ack = self.js.publish_bytes(
            &String::from_utf8_lossy(subject),
            headers,
            all.slice(header_len..),
        );
        let reply = reply.filter(|_| !no_ack).map(Bytes::copy_from_slice);
        let flight = InFlight { ack, reply, size };
        let flight = BATCH.with(|b| match b.borrow_mut().as_mut() {
            Some(batch) => {
                batch.push((self.clone(), flight));
                None
            }
            None => Some(flight),
        });
        if let Some(flight) = flight {
            self.settle(vec![flight]);
        }
    }

    /// Sends the PubAcks of those of `flights` that are done (in interval mode the publisher
    /// has written them itself: no thread or acker to wait for) and leaves the rest to the
    /// acker.
    fn settle(&self, flights: Vec<InFlight>) {
        let mut now = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        let mut done = Vec::new();
        for mut f in flights {
            match f.ack.as_mut().poll(&mut now) {
                std::task::Poll::Ready(ack) => done.push((ack, f.reply, f.size)),
                std::task::Poll::Pending => {
                    if let Err(gone) = self.acks.send(f) {
                        // Shutting down: nothing will answer.
                        self.settled(gone.0.size);
                    }
                }
            }
        }
        if !done.is_empty() {
            self.send_acks(&done);
        }
    }

    /// A `CONSUMER.MSG.NEXT` request, served at once: the consumer answers through the outbox;
    /// a reply comes back only for a request nobody can serve (no such consumer: 503).
    fn pull(&self, subject: &[u8], reply: Option<&[u8]>, body: &[u8]) {
        let subject = String::from_utf8_lossy(subject);
        let to = reply.map(String::from_utf8_lossy);
        let Some(answer) = self.js.request(&subject, to.as_deref(), body) else {
            return;
        };
        let (Some(to), Some(answer)) = (reply, answer.now_or_never()) else {
            return;
        };
        self.respond(to, &subject, answer);
    }

    /// Queues an API request for the JetStream thread; never blocks the requester.
    fn submit(&self, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
        let size = (subject.len() + payload.len()) as u64;
        if self.queued_bytes.load(Ordering::Relaxed) + size > QUEUE_BYTES {
            self.full(subject);
            return;
        }
        let job = Job {
            subject: String::from_utf8_lossy(subject).into_owned(),
            reply: reply.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(payload),
        };
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.full(subject);
            }
        }
    }

    /// A publish could not be queued: at-most-once, as core NATS; the publisher's request
    /// times out and it may retry. Logged once per backlog.
    fn full(&self, subject: &[u8]) {
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            warn!(
                "JetStream is falling behind: queue full, dropping messages (first on \"{}\")",
                String::from_utf8_lossy(subject)
            );
        }
    }

    /// Bytes no longer queued or in flight.
    fn settled(&self, size: u64) {
        if self.queued_bytes.fetch_sub(size, Ordering::Relaxed) <= size {
            self.warned_full.store(false, Ordering::Relaxed);
        }
    }

    /// On the JetStream thread: runs an API request (which may write and fsync metadata) and
    /// leaves the wait for any store work it started to a task.
    fn run(self: &Arc<Self>, job: Job, runtime: &tokio::runtime::Handle) {
        self.settled((job.subject.len() + job.payload.len()) as u64);
        let api = job.subject.strip_prefix("$JS.API.").unwrap_or_default();
        let changes_streams = api.starts_with("STREAM.CREATE.")
            || api.starts_with("STREAM.UPDATE.")
            || api.starts_with("STREAM.DELETE.");
        let to = job.reply.as_deref().map(String::from_utf8_lossy);
        let Some(reply) = self.js.request(&job.subject, to.as_deref(), &job.payload) else {
            // A pull request: the consumer answers through the outbox.
            return;
        };
        let bridge = self.clone();
        runtime.spawn(async move {
            let reply_body = reply.await;
            if changes_streams {
                bridge.resync();
            }
            if let Some(server) = bridge.server.upgrade() {
                crate::audit::api_done(
                    &server,
                    &bridge.account,
                    &job.subject,
                    &job.payload,
                    reply_body.json(),
                );
            }
            if let Some(to) = job.reply {
                bridge.respond(&to, &job.subject, reply_body);
            }
        });
    }

    /// Sends the PubAcks of appends that completed together, waking each publisher once.
    fn send_acks(&self, done: &[(Vec<u8>, Option<Bytes>, u64)]) {
        let mut size = 0;
        let msgs: Vec<Message<'_>> = done
            .iter()
            .filter_map(|(ack, reply, n)| {
                size += n;
                Some(Message {
                    subject: reply.as_deref()?,
                    reply: None,
                    header_len: 0,
                    payload: ack,
                })
            })
            .collect();
        self.settled(size);
        if let (false, Some(server)) = (msgs.is_empty(), self.server.upgrade()) {
            crate::client::publish_messages(&server, &self.account, &msgs);
        }
    }

    /// Sends `reply` to `to`; `subject` is the request's (a 503 names it, as the core's
    /// no-responders status does).
    fn respond(&self, to: &[u8], subject: &str, reply: ApiReply) {
        match reply {
            ApiReply::Json(body) => self.send(to, 0, &body),
            ApiReply::Msg { headers, payload } => {
                let mut all = headers;
                let header_len = all.len();
                all.extend_from_slice(&payload);
                self.send(to, header_len, &all);
            }
            ApiReply::NoResponse => {
                let status = crate::proto::encode::status_headers(503, subject.as_bytes());
                self.send(to, status.len(), &status);
            }
        }
    }

    fn send(&self, to: &[u8], header_len: usize, payload: &[u8]) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        crate::client::publish_message(
            &server,
            &self.account,
            &Message {
                subject: to,
                reply: None,
                header_len,
                payload,
            },
        );
    }

    /// Brings the stream subscriptions in line with the streams: new ones first, then the
    /// route table, then the old ones out, so a subject in both is never without a
    /// subscriber (a message matched twice meanwhile is taken once, see [`StreamInbox`]).
    fn resync(self: &Arc<Self>) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let routes = self.js.routes();
        if *self.routes.read().unwrap_or_else(|e| e.into_inner()) == routes {
            return;
        }
        let fresh: Vec<_> = routes
            .iter()
            .map(|r| {
                let inbox: Arc<dyn Sink> = Arc::new(StreamInbox {
                    bridge: Arc::downgrade(self),
                    route: r.clone(),
                });
                self.account.subscribe_internal(r.subject.as_bytes(), inbox)
            })
            .collect();
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
        for old in std::mem::replace(&mut *subs, fresh) {
            self.account.remove(&old);
        }
    }

    /// Whether `route` is the first route matching `subject`: a subject can match several
    /// subjects of one stream (`a.*` and `a.>`), and must be stored once.
    fn takes(&self, route: &Route, subject: &[u8]) -> bool {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if routes.len() == 1 {
            return routes[0] == *route;
        }
        routes
            .iter()
            .find(|r| crate::subject::matches(r.subject.as_bytes(), subject))
            .is_some_and(|r| r == route)
    }
}

/// Awaits every append in flight; whatever completed together (one group commit) is
/// acknowledged as one batch.
async fn acker(bridge: Weak<Bridge>, mut incoming: UnboundedReceiver<InFlight>) {
    let mut in_flight = FuturesUnordered::new();
    let mut done = Vec::new();
    loop {
        tokio::select! {
            next = incoming.recv() => {
                let Some(first) = next else { break };
                let add = |f: InFlight| {
                    in_flight.push(f.ack.map(move |ack| (ack, f.reply, f.size)));
                };
                add(first);
                while let Ok(more) = incoming.try_recv() {
                    add(more);
                }
            }
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                done.push(first);
                while let Some(Some(more)) = in_flight.next().now_or_never() {
                    done.push(more);
                }
                let Some(bridge) = bridge.upgrade() else { break };
                bridge.send_acks(&done);
                done.clear();
            }
        }
    }
}

/// Receives `$JS.API.>` requests.
#[derive(Debug)]
struct ApiInbox(Weak<Bridge>);

impl Sink for ApiInbox {
    fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, header_len: usize, payload: &[u8]) {
        let Some(bridge) = self.0.upgrade() else {
            return;
        };
        // The API reads the request body; headers on a request carry nothing it uses.
        let body = &payload[header_len..];
        if subject.starts_with(b"$JS.API.CONSUMER.MSG.NEXT.") {
            // A pull request touches no files: served on the requester's task, as acks are,
            // rather than waiting in line behind stream creations on the API thread.
            bridge.pull(subject, reply, body);
        } else {
            bridge.submit(subject, reply, body);
        }
    }
}

/// Receives publishes to one stream subject.
#[derive(Debug)]
struct StreamInbox {
    bridge: Weak<Bridge>,
    route: Route,
}

impl Sink for StreamInbox {
    fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, header_len: usize, payload: &[u8]) {
        let Some(bridge) = self.bridge.upgrade() else {
            return;
        };
        if bridge.takes(&self.route, subject) {
            bridge.publish(subject, reply, header_len, payload, self.route.no_ack);
        }
    }
}

/// Receives consumer acks (`$JS.ACK.>`) and flow-control answers (`$JS.FC.>`), handled on the
/// acking client's task: an ack updates the consumer's state (one `write`) and may release
/// the next deliveries.
#[derive(Debug)]
struct AckInbox(Weak<Bridge>);

impl Sink for AckInbox {
    fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, header_len: usize, payload: &[u8]) {
        let Some(bridge) = self.0.upgrade() else {
            return;
        };
        let Some(consumers) = bridge.js.consumers() else {
            return;
        };
        // Subjects this server made are UTF-8; anything else names no consumer.
        let Ok(subject) = std::str::from_utf8(subject) else {
            return;
        };
        if subject.starts_with("$JS.FC.") {
            consumers.flow_control(subject);
        } else {
            let reply = reply.map(String::from_utf8_lossy);
            consumers.ack(subject, reply.as_deref(), &payload[header_len..]);
        }
    }
}

/// How consumers reach clients: deliveries, pull statuses, heartbeats, flow-control requests,
/// advisories and double-ack confirmations are routed as server-originated messages in the
/// account. Routing only queues bytes on connections, so it is safe under a consumer's lock.
struct CoreOutbox {
    server: Weak<ServerState>,
    account: Weak<Account>,
}

impl natter_streams::consumer::Outbox for CoreOutbox {
    fn send(&self, subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) {
        self.deliver(
            subject,
            subject,
            reply.unwrap_or_default(),
            headers,
            payload,
        );
    }

    fn has_interest(&self, subject: &str) -> bool {
        self.account
            .upgrade()
            .is_some_and(|a| !a.sublist.lookup(subject.as_bytes()).matches.is_empty())
    }

    fn deliver(
        &self,
        to: &str,
        subject: &str,
        reply: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        let (Some(server), Some(account)) = (self.server.upgrade(), self.account.upgrade()) else {
            return;
        };
        let joined;
        let (header_len, all) = match headers.filter(|h| !h.is_empty()) {
            None => (0, payload),
            Some(h) => {
                joined = [h, payload].concat();
                (h.len(), &joined[..])
            }
        };
        let msg = Message {
            subject: subject.as_bytes(),
            reply: Some(reply.as_bytes()).filter(|r| !r.is_empty()),
            header_len,
            payload: all,
        };
        crate::client::deliver_to(&server, &account, to.as_bytes(), &msg);
    }

    fn deliver_all(&self, msgs: &[natter_streams::consumer::Delivery<'_>]) {
        let (Some(server), Some(account)) = (self.server.upgrade(), self.account.upgrade()) else {
            return;
        };
        // Header blocks and bodies are contiguous in a routed message: join those with both.
        let joined: Vec<Option<Vec<u8>>> = msgs
            .iter()
            .map(|d| {
                d.headers
                    .filter(|h| !h.is_empty())
                    .map(|h| [h, d.payload].concat())
            })
            .collect();
        let batch: Vec<(&[u8], Message<'_>)> = msgs
            .iter()
            .zip(&joined)
            .map(|(d, j)| {
                let (header_len, payload) = match (d.headers, j) {
                    (Some(h), Some(all)) => (h.len(), &all[..]),
                    _ => (0, d.payload),
                };
                let subject = d.subject.unwrap_or(d.to);
                let msg = Message {
                    subject: subject.as_bytes(),
                    reply: d.reply.filter(|r| !r.is_empty()).map(str::as_bytes),
                    header_len,
                    payload,
                };
                (d.to.as_bytes(), msg)
            })
            .collect();
        crate::client::deliver_batch(&server, &account, &batch);
    }
}

/// Answers `$JS.API` requests in an account without JetStream, as nats-server does.
#[derive(Debug)]
struct Disabled {
    server: Weak<ServerState>,
    account: Weak<Account>,
}

impl Sink for Disabled {
    fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, _: usize, _: &[u8]) {
        let (Some(reply), Some(server), Some(account)) =
            (reply, self.server.upgrade(), self.account.upgrade())
        else {
            return;
        };
        let body = format!(
            "{{\"type\":\"io.nats.jetstream.api.v1.{}_response\",\"error\":{{\"code\":503,\"err_code\":10039,\"description\":\"JetStream not enabled for account\"}}}}",
            response_type(subject)
        );
        crate::client::publish_message(
            &server,
            &account,
            &Message {
                subject: reply,
                reply: None,
                header_len: 0,
                payload: body.as_bytes(),
            },
        );
    }
}

/// The `<kind>` of an API response type for a request subject: `STREAM.CREATE.x` gives
/// `stream_create`, `INFO` gives `account_info`.
fn response_type(subject: &[u8]) -> String {
    const VERBS: &[&str] = &[
        "STREAM", "CONSUMER", "DURABLE", "CREATE", "UPDATE", "INFO", "DELETE", "NAMES", "LIST",
        "PURGE", "MSG", "GET", "PAUSE", "SNAPSHOT", "RESTORE",
    ];
    let api = String::from_utf8_lossy(subject);
    let api = api.strip_prefix("$JS.API.").unwrap_or(&api);
    if api == "INFO" {
        return "account_info".into();
    }
    api.split('.')
        .take(3)
        .take_while(|t| VERBS.contains(t))
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}
