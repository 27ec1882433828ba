//! The half of a connection that other connections touch: its identity, its bounded outbound
//! buffer, and its subscriptions.
//!
//! Publishers append frames under the receiver's own mutex (never a global one) and wake the
//! receiver's writer once per read batch. A std `Mutex` rather than tokio's: it is held for a
//! memcpy, never across an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::account::Account;
use crate::auth::permissions::{Permissions, Responses};
use crate::subscription::Subscription;

/// The most a receiver may fall behind before publishers pause for it.
const STALL_AT_MOST: usize = 8 * 1024 * 1024;

/// Why a connection ended, in nats-server's words (as `/connz` and the logs show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client hung up.
    ClientClosed,
    /// The client broke the protocol.
    ProtocolViolation,
    /// A control line over the limit.
    MaxControlLineExceeded,
    /// A payload over the limit.
    MaxPayloadExceeded,
    /// More bytes queued than max_pending.
    SlowConsumerPendingBytes,
    /// A flush blocked longer than write_deadline.
    SlowConsumerWriteDeadline,
    /// PINGs went unanswered.
    StaleConnection,
    /// Reading the socket failed.
    ReadError,
    /// Writing the socket failed.
    WriteError,
    /// The server is shutting down.
    ServerShutdown,
    /// `no_responders` without `headers`.
    NoRespondersRequiresHeaders,
    /// Bad credentials, or none in time.
    AuthenticationViolation,
    /// Authenticated, but the account is full.
    MaxAccountConnectionsExceeded,
    /// The user's JWT expired.
    AuthenticationExpired,
    /// The TLS handshake failed.
    TlsHandshakeError,
}

impl CloseReason {
    /// The reason as nats-server spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::MaxControlLineExceeded => "Maximum Control Line Exceeded",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::NoRespondersRequiresHeaders => "No Responders Requires Headers",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::MaxAccountConnectionsExceeded => "Maximum Account Connections Exceeded",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::TlsHandshakeError => "TLS Handshake Failure",
        }
    }
}

/// What happened to a frame handed to [`Client::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Appended.
    Queued {
        /// The buffer was empty: the writer must be woken.
        wake: bool,
        /// The receiver is far behind: the publisher should pause briefly (fast-producer stall).
        behind: bool,
    },
    /// Dropped: the connection is closing.
    Dropped,
    /// Dropped, and this frame made the connection a slow consumer: it is closing now.
    SlowConsumer,
}

impl Enqueued {
    /// Whether the writer must be woken.
    pub fn wake(self) -> bool {
        matches!(self, Enqueued::Queued { wake: true, .. })
    }
}

/// Bytes waiting to be written, and the connection's write-side state.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Frames not yet handed to the socket.
    pub buf: BytesMut,
    /// Once set, nothing more is queued; the writer drains what is there and stops.
    pub closing: Option<CloseReason>,
    /// Messages queued to this client.
    pub out_msgs: u64,
    /// Payload bytes queued to this client.
    pub out_bytes: u64,
}

/// What a client said about itself in CONNECT, for monitoring.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// Connection name.
    pub name: String,
    /// Client library language.
    pub lang: String,
    /// Client library version.
    pub version: String,
}

/// One connection as `/connz` shows it.
#[derive(Debug, Clone)]
pub struct ClientSnapshot {
    /// Connection id.
    pub cid: u64,
    /// Peer address.
    pub ip: std::net::IpAddr,
    /// Peer port.
    pub port: u16,
    /// When the connection was accepted.
    pub start: SystemTime,
    /// When the client last sent something.
    pub last_activity: SystemTime,
    /// Round-trip time of the last server PING, once one was answered.
    pub rtt: Option<Duration>,
    /// Bytes queued and not yet written.
    pub pending_bytes: usize,
    /// Messages received from the client.
    pub in_msgs: u64,
    /// Payload bytes received from the client.
    pub in_bytes: u64,
    /// Messages queued to the client.
    pub out_msgs: u64,
    /// Payload bytes queued to the client.
    pub out_bytes: u64,
    /// Connection name from CONNECT.
    pub name: String,
    /// Client language from CONNECT.
    pub lang: String,
    /// Client version from CONNECT.
    pub version: String,
    /// How many subscriptions the client holds.
    pub num_subscriptions: usize,
    /// The client's subscriptions, when asked for (they cost a string each).
    pub subscriptions: Vec<SubSnapshot>,
    /// The authenticated user, if the client authenticated as one.
    pub user: Option<String>,
    /// The client's account, once known.
    pub account: Option<String>,
}

/// One subscription as `/connz?subs=detail` shows it.
#[derive(Debug, Clone)]
pub struct SubSnapshot {
    /// Subject or pattern.
    pub subject: String,
    /// Queue group.
    pub queue: Option<String>,
    /// Subscription id.
    pub sid: String,
    /// Messages delivered.
    pub msgs: u64,
}

/// A named user's side of a connection.
#[derive(Debug)]
struct UserState {
    /// Replaced when a configuration reload changes the user's permissions.
    permissions: RwLock<Option<Arc<Permissions>>>,
    /// Bumped on each replacement, so the connection's own copy can notice cheaply.
    version: AtomicU64,
    /// Reply subjects this client may answer (`allow_responses`).
    responses: Mutex<Responses>,
    user: Option<String>,
}

/// One connection as the rest of the server sees it.
#[derive(Debug)]
pub struct Client {
    /// The connection id (`cid`).
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// When the connection was accepted.
    pub start: SystemTime,
    meta: Mutex<ClientMeta>,
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    /// Nanoseconds since the Unix epoch; updated once per read batch.
    last_activity: AtomicU64,
    /// Nanoseconds; 0 until a PING was answered.
    rtt: AtomicU64,
    max_pending: usize,
    /// Pending bytes beyond which publishers pause for this client; `usize::MAX` when
    /// fast-producer stalls are off.
    stall_at: usize,
    headers: AtomicBool,
    async_info: AtomicBool,
    out: Mutex<Outbound>,
    wake: Notify,
    kill: Notify,
    drained: Notify,
    /// Bytes the writer has taken and not yet handed to the kernel; they count as pending.
    /// Outside the mutex so the writer can count down after each syscall without it.
    inflight: AtomicUsize,
    /// Publishers waiting in [`Client::caught_up`]; the writer signals only when there are any.
    stalled: AtomicUsize,
    subs: Mutex<HashMap<Bytes, Arc<Subscription>>>,
    /// The account, set once the client is authenticated (at once when no auth is needed).
    account: OnceLock<Arc<Account>>,
    /// Who the client authenticated as, when it is a named user: boxed, so a connection
    /// without auth pays one pointer.
    identity: OnceLock<Box<UserState>>,
}

impl Client {
    /// A connection with id `id` that may queue up to `max_pending` bytes; publishers pause
    /// briefly when it is half full (8 MiB at most: more buffering than the kernel's socket
    /// buffers buys no throughput, only memory), if `stall` is on.
    pub fn new(id: u64, addr: SocketAddr, max_pending: usize, stall: bool) -> Self {
        let start = SystemTime::now();
        Client {
            id,
            addr,
            start,
            meta: Mutex::new(ClientMeta::default()),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            last_activity: AtomicU64::new(unix_nanos(start)),
            rtt: AtomicU64::new(0),
            max_pending,
            stall_at: if stall {
                (max_pending / 2).min(STALL_AT_MOST)
            } else {
                usize::MAX
            },
            headers: AtomicBool::new(false),
            async_info: AtomicBool::new(false),
            out: Mutex::new(Outbound::default()),
            wake: Notify::new(),
            kill: Notify::new(),
            drained: Notify::new(),
            inflight: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            subs: Mutex::new(HashMap::new()),
            account: OnceLock::new(),
            identity: OnceLock::new(),
        }
    }

    /// The client's account; `None` until it authenticated.
    pub fn account(&self) -> Option<&Arc<Account>> {
        self.account.get()
    }

    /// Records who the client authenticated as; only the first call counts.
    pub fn set_identity(
        &self,
        account: Arc<Account>,
        permissions: Option<Arc<Permissions>>,
        user: Option<String>,
    ) {
        let _ = self.account.set(account);
        if permissions.is_some() || user.is_some() {
            let _ = self.identity.set(Box::new(UserState {
                permissions: RwLock::new(permissions),
                version: AtomicU64::new(0),
                responses: Mutex::new(Responses::default()),
                user,
            }));
        }
    }

    /// The client's permissions, when restricted.
    pub fn permissions(&self) -> Option<Arc<Permissions>> {
        let state = self.identity.get()?;
        state
            .permissions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes since the connection authenticated: see [`Client::set_permissions`].
    pub fn permissions_version(&self) -> u64 {
        self.identity
            .get()
            .map_or(0, |s| s.version.load(Ordering::Acquire))
    }

    /// Replaces the permissions of a client with a user (a configuration reload changed them);
    /// false for a client without one.
    pub fn set_permissions(&self, permissions: Option<Arc<Permissions>>) -> bool {
        let Some(state) = self.identity.get() else {
            return false;
        };
        *state.permissions.write().unwrap_or_else(|e| e.into_inner()) = permissions;
        state.version.fetch_add(1, Ordering::Release);
        true
    }

    /// The authenticated user name, if any.
    pub fn user(&self) -> Option<&str> {
        self.identity.get()?.user.as_deref()
    }

    /// Reply subjects the client may answer, locked; `None` for a client without a user.
    pub fn responses(&self) -> Option<MutexGuard<'_, Responses>> {
        let state = self.identity.get()?;
        Some(state.responses.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the client accepts `HMSG` (it said `headers: true` in CONNECT).
    pub fn headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Records whether the client accepts `HMSG`.
    pub fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
    }

    /// Records what the client said about itself in CONNECT.
    pub fn set_meta(&self, meta: ClientMeta) {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = meta;
    }

    /// Adds one read batch's inbound counts and marks the client active now.
    pub fn count_in(&self, msgs: u64, bytes: u64) {
        self.in_msgs.fetch_add(msgs, Ordering::Relaxed);
        self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Marks the client active now.
    pub fn touch(&self) {
        self.last_activity
            .store(unix_nanos(SystemTime::now()), Ordering::Relaxed);
    }

    /// Records the round-trip time of a PING the client answered.
    pub fn set_rtt(&self, rtt: Duration) {
        let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.rtt.store(nanos, Ordering::Relaxed);
    }

    /// The connection as monitoring shows it; its subscriptions listed only `with_subs`.
    pub fn snapshot(&self, with_subs: bool) -> ClientSnapshot {
        let meta = self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (pending_bytes, out_msgs, out_bytes) = {
            let out = self.outbound();
            (out.buf.len() + self.inflight(), out.out_msgs, out.out_bytes)
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Only the Arcs are copied under the lock: a publisher reaching an auto-unsubscribe
        // limit takes the same lock, and must not wait for string formatting.
        let (num_subscriptions, listed): (usize, Vec<Arc<Subscription>>) = {
            let subs = self.subs();
            let listed = if with_subs {
                subs.values().cloned().collect()
            } else {
                Vec::new()
            };
            (subs.len(), listed)
        };
        let mut subscriptions: Vec<SubSnapshot> = listed
            .iter()
            .map(|s| SubSnapshot {
                subject: text(&s.subject),
                queue: s.queue.as_deref().map(text),
                sid: text(&s.sid),
                msgs: s.delivered(),
            })
            .collect();
        subscriptions.sort_by(|a, b| a.sid.cmp(&b.sid));
        let rtt = self.rtt.load(Ordering::Relaxed);
        ClientSnapshot {
            cid: self.id,
            ip: self.addr.ip(),
            port: self.addr.port(),
            start: self.start,
            last_activity: UNIX_EPOCH
                + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed)),
            rtt: (rtt > 0).then(|| Duration::from_nanos(rtt)),
            pending_bytes,
            in_msgs: self.in_msgs.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_msgs,
            out_bytes,
            name: meta.name,
            lang: meta.lang,
            version: meta.version,
            num_subscriptions,
            subscriptions,
            user: self.user().map(str::to_string),
            account: self.account().map(|a| a.name.clone()),
        }
    }

    /// Whether the client takes INFO after the first (CONNECT `protocol` 1 or more); older
    /// clients would choke on one.
    pub fn async_info(&self) -> bool {
        self.async_info.load(Ordering::Relaxed)
    }

    /// Records whether the client takes INFO after the first.
    pub fn set_async_info(&self, on: bool) {
        self.async_info.store(on, Ordering::Relaxed);
    }

    /// The outbound state, locked.
    pub fn outbound(&self) -> MutexGuard<'_, Outbound> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's subscriptions by sid, locked.
    pub fn subs(&self) -> MutexGuard<'_, HashMap<Bytes, Arc<Subscription>>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a frame of about `len` bytes written by `write`, unless the client is closing
    /// or the frame would push it past max_pending, which makes it a slow consumer: then the
    /// frame is dropped and the connection is told to close, and the caller never waits.
    pub fn enqueue(&self, len: usize, write: impl FnOnce(&mut BytesMut)) -> Enqueued {
        self.append(len, None, write)
    }

    /// [`Client::enqueue`] for a delivered message, counted in the client's out stats.
    pub fn enqueue_msg(
        &self,
        len: usize,
        payload_len: usize,
        write: impl FnOnce(&mut BytesMut),
    ) -> Enqueued {
        self.append(len, Some(payload_len), write)
    }

    fn append(
        &self,
        len: usize,
        msg: Option<usize>,
        write: impl FnOnce(&mut BytesMut),
    ) -> Enqueued {
        let mut out = self.outbound();
        if out.closing.is_some() {
            return Enqueued::Dropped;
        }
        let pending = out.buf.len() + self.inflight();
        if pending > 0 && pending + len > self.max_pending {
            out.closing = Some(CloseReason::SlowConsumerPendingBytes);
            drop(out);
            self.kill.notify_one();
            return Enqueued::SlowConsumer;
        }
        let was_empty = out.buf.is_empty();
        write(&mut out.buf);
        if let Some(bytes) = msg {
            out.out_msgs += 1;
            out.out_bytes += bytes as u64;
        }
        Enqueued::Queued {
            wake: was_empty,
            behind: pending + len > self.stall_at,
        }
    }

    /// Wakes the writer to flush what is queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the connection to close after flushing what is queued; the first reason sticks.
    pub fn close(&self, reason: CloseReason) {
        self.outbound().closing.get_or_insert(reason);
        self.wake.notify_one();
    }

    /// Resolves when the writer has data to look at.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Bytes the writer has taken and not yet written.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Records that the writer took `n` bytes to write.
    pub fn take_inflight(&self, n: usize) {
        self.inflight.store(n, Ordering::Release);
    }

    /// Takes `n` written bytes off the pending count, and tells publishers paused for this
    /// client, if any.
    pub fn written(&self, n: usize) {
        // SeqCst pairs with `caught_up`: either it sees this count, or this sees it waiting.
        self.inflight
            .fetch_sub(n.min(self.inflight()), Ordering::SeqCst);
        if self.stalled.load(Ordering::SeqCst) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once the client is no longer far behind (or is closing): what a paused
    /// publisher waits for, under a time limit.
    pub async fn caught_up(&self) {
        self.stalled.fetch_add(1, Ordering::SeqCst);
        // Counted down however the wait ends, including a caller's time limit dropping it.
        let _waiting = StallGuard(&self.stalled);
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a write completing in between is not missed.
            notified.as_mut().enable();
            {
                let out = self.outbound();
                if out.closing.is_some() || out.buf.len() + self.inflight() <= self.stall_at {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Resolves when the connection must close at once, without flushing.
    pub async fn killed(&self) {
        self.kill.notified().await
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Counts a publisher out of [`Client::caught_up`] when its wait ends, however it ends.
struct StallGuard<'a>(&'a AtomicUsize);

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
