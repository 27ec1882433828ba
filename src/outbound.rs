//! The half of a connection that other connections touch: its identity, its bounded outbound
//! buffer, and its subscriptions.
//!
//! Publishers append frames under the receiver's own mutex (never a global one) and wake the
//! receiver's writer once per read batch. A std `Mutex` rather than tokio's: it is held for a
//! memcpy, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

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
    /// Bytes the writer has taken and is writing now; they still count as pending.
    pub inflight: usize,
    /// Once set, nothing more is queued; the writer drains what is there and stops.
    pub closing: Option<CloseReason>,
    /// Messages queued to this client.
    pub out_msgs: u64,
    /// Payload bytes queued to this client.
    pub out_bytes: u64,
}

/// One connection as the rest of the server sees it.
#[derive(Debug)]
pub struct Client {
    /// The connection id (`cid`).
    pub id: u64,
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
    subs: Mutex<HashMap<Bytes, Arc<Subscription>>>,
}

impl Client {
    /// A connection with id `id` that may queue up to `max_pending` bytes; publishers pause
    /// briefly when it is half full (8 MiB at most: more buffering than the kernel's socket
    /// buffers buys no throughput, only memory), if `stall` is on.
    pub fn new(id: u64, max_pending: usize, stall: bool) -> Self {
        Client {
            id,
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
            subs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the client accepts `HMSG` (it said `headers: true` in CONNECT).
    pub fn headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Records whether the client accepts `HMSG`.
    pub fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
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
        let pending = out.buf.len() + out.inflight;
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

    /// Tells publishers paused for this client that a write completed.
    pub fn wrote(&self) {
        self.drained.notify_waiters();
    }

    /// Resolves once the client is no longer far behind (or is closing): what a paused
    /// publisher waits for, under a time limit.
    pub async fn caught_up(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a write completing in between is not missed.
            notified.as_mut().enable();
            {
                let out = self.outbound();
                if out.closing.is_some() || out.buf.len() + out.inflight <= self.stall_at {
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
