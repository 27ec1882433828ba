//! One client connection: the read loop (parse, route, answer), the write loop (flush the
//! outbound buffer in whole batches), PING/PONG keepalive, and the close path.
//!
//! Both loops run as two futures in one task sharing the socket by reference, so a connection
//! costs one task. Messages routed during one read batch wake each receiver once, after the
//! batch: a receiver's writer then sends everything queued with one syscall.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tracing::{debug, enabled, error, info, trace, Level};

use crate::account::{Account, Forward};
use crate::auth::permissions::PublishCheck;
use crate::auth::{Identity, Permissions, Presented};
use crate::outbound::{Client, ClientMeta, CloseReason, Enqueued};
use crate::proto::encode::{self, Message};
use crate::proto::{ConnectOptions, Op, ParseError, Parser};
use crate::server::ServerState;
use crate::subject;
use crate::sublist::{MatchCache, Matches};
use crate::subscription::{Claim, Subscription};

/// Smallest read; also what an idle connection returns to.
const READ_MIN: usize = 512;
/// Largest read, reached only by clients that keep filling the buffer.
const READ_MAX: usize = 64 * 1024;
/// When the first server PING goes out, at the latest.
const FIRST_PING: Duration = Duration::from_secs(2);
/// Longest a publisher pauses for one receiver that is far behind.
const STALL_MAX: Duration = Duration::from_millis(10);
/// Write buffers above this size are freed when the connection goes idle.
const IDLE_KEEP: usize = 4 * 1024;
/// Most accounts one message may cross through imports; stops import cycles.
const MAX_HOPS: u8 = 4;

/// Options a client sets with CONNECT. Before CONNECT a client is verbose and pedantic, as
/// nats-server treats a telnet session.
#[derive(Debug, Clone, Copy)]
struct Options {
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
        }
    }
}

/// The read side's state; only the connection's own task touches it.
struct Connection {
    server: Arc<ServerState>,
    client: Arc<Client>,
    /// `ip:port - cid:N`, the prefix of every log line about this connection.
    tag: String,
    parser: Parser,
    opts: Options,
    /// The account the client publishes and subscribes in.
    account: Arc<Account>,
    /// Whether the client has authenticated (always, when no auth is configured).
    authed: bool,
    /// The nonce INFO carried, for nkey and JWT signatures.
    nonce: Option<String>,
    /// The client's verified TLS certificate.
    peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    /// Restrictions on what the user may do.
    permissions: Option<Arc<Permissions>>,
    /// The [`Client::permissions_version`] `permissions` was copied at.
    permissions_version: u64,
    publish_check: PublishCheck,
    /// Most subscriptions for this connection; `usize::MAX` is unlimited (a JWT may say 0).
    max_subscriptions: usize,
    /// Largest payload the user may publish, when below the server's limit.
    max_payload: Option<usize>,
    /// When the user's credentials expire.
    expires: Option<Instant>,
    /// Whether a connect event went out (so a disconnect event follows).
    announced: bool,
    cache: MatchCache<Subscription>,
    /// Receivers given data during this read batch, woken when it ends.
    to_wake: Vec<Arc<Client>>,
    /// A receiver this batch left far behind: the next read waits (briefly) for it.
    stall_on: Option<Arc<Client>>,
    pings_out: u32,
    /// When the oldest unanswered server PING went out, to measure the round trip.
    ping_sent: Option<std::time::Instant>,
    in_msgs: u64,
    in_bytes: u64,
}

/// What delivering one message needs, borrowed from the [`Connection`] apart from its match
/// cache, which the message's matches are borrowed from.
struct Deliveries<'a> {
    server: &'a ServerState,
    /// The account the message is being routed in.
    account: &'a Arc<Account>,
    /// Accounts crossed so far through imports.
    hops: u8,
    publisher: u64,
    echo: bool,
    to_wake: &'a mut Vec<Arc<Client>>,
    /// A receiver far behind, for the publisher to wait on after the batch.
    stall_on: &'a mut Option<Arc<Client>>,
    /// Whether any subscriber took the message (no-responders is about deliveries, not
    /// matches: a requester's own echo-suppressed subscription does not answer it).
    delivered: bool,
}

impl Deliveries<'_> {
    /// Queues `msg` for `sub`; false if the subscription may not take it (its own echo, or
    /// past its delivery limit), so a queue group can try another member.
    fn deliver(&mut self, sub: &Arc<Subscription>, msg: &Message<'_>) -> bool {
        if let Some(forward) = &sub.forward {
            return self.forward(sub, forward, msg);
        }
        let target = &sub.client;
        if !self.echo && target.id == self.publisher {
            return false;
        }
        let perms = target.permissions();
        let perms = perms.as_deref();
        if perms.is_some_and(|p| p.filters_deliveries() && !p.may_receive(msg.subject)) {
            return false;
        }
        let claim = sub.claim();
        if claim == Claim::Skip {
            self.server.remove_subscription(sub);
            return false;
        }
        if let (Some(allow), Some(reply)) = (perms.and_then(|p| p.responses), msg.reply) {
            // Before the frame is queued: a writer already flushing could hand it to the
            // responder, whose reply must find the permission open.
            if let Some(mut open) = target.responses() {
                open.open(reply, allow, std::time::Instant::now());
            }
        }
        let headers = target.headers();
        let len = msg.frame_len(sub.sid.len(), headers);
        let body = msg.payload.len();
        let delivered = match target.enqueue_msg(len, body, |b| msg.write(b, &sub.sid, headers)) {
            Enqueued::Queued { wake, behind } => {
                if wake {
                    self.to_wake.push(target.clone());
                }
                if behind && self.stall_on.is_none() {
                    *self.stall_on = Some(target.clone());
                }
                true
            }
            // A closing connection: a queue group must try another member.
            Enqueued::Dropped => false,
            Enqueued::SlowConsumer => {
                self.server.note_slow_consumer(target);
                false
            }
        };
        if claim == Claim::DeliverLast {
            debug!(
                "cid:{} - Auto-unsubscribe limit reached for sid '{}'",
                target.id,
                String::from_utf8_lossy(&sub.sid)
            );
            self.server.remove_subscription(sub);
        }
        self.delivered |= delivered;
        delivered
    }

    /// Delivers to every plain subscriber and one member of each queue group.
    fn deliver_all(&mut self, matches: &Matches<Subscription>, msg: &Message<'_>) {
        for sub in &matches.plain {
            self.deliver(sub, msg);
        }
        for group in &matches.groups {
            let n = group.members.len();
            let start = fastrand::usize(..n);
            for i in 0..n {
                if self.deliver(&group.members[(start + i) % n], msg) {
                    break;
                }
            }
        }
    }

    /// Carries a message across an account import; true if anyone there took it.
    fn forward(&mut self, sub: &Arc<Subscription>, forward: &Forward, msg: &Message<'_>) -> bool {
        if self.hops >= MAX_HOPS {
            return false;
        }
        if let Forward::Internal(sink) = forward {
            sink.deliver(msg.subject, msg.reply, msg.header_len, msg.payload);
            self.delivered = true;
            return true;
        }
        let (into, subject) = match forward {
            Forward::Stream { to, map } | Forward::Service { to, map, .. } => {
                (to, map.apply(msg.subject))
            }
            Forward::Internal(_) => return false,
            Forward::Response { to, reply, home } => {
                let claim = sub.claim();
                if claim != Claim::Deliver {
                    // One reply per singleton request: the path closes behind it.
                    if let Some(home) = home.upgrade() {
                        home.close_response(sub);
                    }
                }
                if claim == Claim::Skip {
                    return false;
                }
                (to, reply.clone())
            }
        };
        let matches = into.sublist.lookup(&subject);
        if matches.matches.is_empty() {
            // Nobody there: in particular, no reply path for a request nobody can answer.
            return false;
        }
        let reply = match forward {
            Forward::Stream { .. } => msg.reply.map(Bytes::copy_from_slice),
            Forward::Service { to, response, .. } => msg
                .reply
                .and_then(|r| to.response_path(self.account, r, *response)),
            Forward::Response { .. } | Forward::Internal(_) => None,
        };
        let carried = Message {
            subject: &subject,
            reply: reply.as_deref(),
            header_len: msg.header_len,
            payload: msg.payload,
        };
        let mut inner = Deliveries {
            server: self.server,
            account: into,
            hops: self.hops + 1,
            publisher: self.publisher,
            echo: self.echo,
            to_wake: &mut *self.to_wake,
            stall_on: &mut *self.stall_on,
            delivered: false,
        };
        inner.deliver_all(&matches.matches, &carried);
        let took = inner.delivered;
        self.delivered |= took;
        took
    }
}

/// Publishes a message the server itself originates (system events) into `account`; the
/// payload is built only if someone there subscribes to `subject`.
pub(crate) fn publish_internal(
    server: &ServerState,
    account: &Arc<Account>,
    subject: &[u8],
    payload: impl FnOnce() -> Vec<u8>,
) {
    if account.sublist.lookup(subject).matches.is_empty() {
        return;
    }
    let payload = payload();
    publish_message(
        server,
        account,
        &Message {
            subject,
            reply: None,
            header_len: 0,
            payload: &payload,
        },
    );
}

/// Routes a message that no connection published (server events, stream acks and
/// deliveries) to `account`'s subscribers; false if nobody took it.
pub fn publish_message(server: &ServerState, account: &Arc<Account>, msg: &Message<'_>) -> bool {
    deliver_batch(server, account, &[(msg.subject, *msg)]) > 0
}

/// Routes several server-originated messages to the subscribers of their own subjects (see
/// [`deliver_batch`]); how many were taken.
pub fn publish_messages(
    server: &ServerState,
    account: &Arc<Account>,
    msgs: &[Message<'_>],
) -> usize {
    let routed: Vec<(&[u8], Message<'_>)> = msgs.iter().map(|m| (m.subject, *m)).collect();
    deliver_batch(server, account, &routed)
}

/// Routes a server-originated message to the subscribers of `to` while it shows its own subject
/// (a stream message delivered to a consumer's deliver subject or pull inbox keeps the subject
/// it was published on, as in nats-server); false if nobody took it.
pub fn deliver_to(
    server: &ServerState,
    account: &Arc<Account>,
    to: &[u8],
    msg: &Message<'_>,
) -> bool {
    deliver_batch(server, account, &[(to, *msg)]) > 0
}

/// Routes a batch of server-originated messages, each to the subscribers of its destination
/// while showing its own subject: one routing lookup per run of equal destinations, and one
/// wake per receiving connection at the end (so a group commit's acks or a consumer's pass
/// leave in one write per client). How many messages someone took.
pub fn deliver_batch(
    server: &ServerState,
    account: &Arc<Account>,
    msgs: &[(&[u8], Message<'_>)],
) -> usize {
    let mut to_wake = Vec::new();
    let mut stall_on = None;
    let mut taken = 0;
    let mut last: Option<(&[u8], _)> = None;
    for (to, msg) in msgs {
        if last.as_ref().is_none_or(|(t, _)| t != to) {
            last = Some((*to, account.sublist.lookup(to)));
        }
        let Some((_, matches)) = &last else { continue };
        let mut out = Deliveries {
            server,
            account,
            hops: 0,
            // No connection has id 0: nothing is suppressed as an echo.
            publisher: 0,
            echo: true,
            to_wake: &mut to_wake,
            stall_on: &mut stall_on,
            delivered: false,
        };
        out.deliver_all(&matches.matches, msg);
        taken += usize::from(out.delivered);
    }
    for client in to_wake {
        client.wake();
    }
    taken
}

/// Serves one accepted connection until it closes.
pub async fn serve(
    server: Arc<ServerState>,
    stream: TcpStream,
    addr: SocketAddr,
    client: Arc<Client>,
) {
    let tag = format!("{addr} - cid:{}", client.id);
    debug!("{tag} - Client connection created");
    let nonce = server.auth().wants_nonce().then(new_nonce);
    let info = server.info_json_with_nonce(client.id, addr.ip(), nonce.as_deref());
    let conn = Connection::new(&server, &client, tag, nonce);
    match server.tls() {
        None => {
            client.enqueue(info.len() + 8, |b| encode::info(b, &info));
            drop(info);
            conn.serve_plain(stream).await;
        }
        // Boxed: a TLS stream is large, and plain connections should not carry its space in
        // their task.
        Some(tls) => Box::pin(conn.serve_tls(stream, tls, info)).await,
    }
}

impl Connection {
    async fn serve_plain(self, mut stream: TcpStream) {
        let (reader, writer) = stream.split();
        self.run(reader, writer).await;
    }

    async fn serve_tls(mut self, stream: TcpStream, tls: Arc<rustls::ServerConfig>, info: Vec<u8>) {
        let server = self.server.clone();
        let timeout = server
            .config()
            .security
            .tls
            .as_ref()
            .map_or(Duration::from_secs(2), |t| t.timeout);
        match tls_handshake(&server, stream, tls, &info, timeout).await {
            Ok((tls_stream, info_sent)) => {
                if !info_sent {
                    self.client
                        .enqueue(info.len() + 8, |b| encode::info(b, &info));
                }
                drop(info);
                self.peer_cert = tls_stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned());
                let (reader, writer) = tokio::io::split(tls_stream);
                self.run(reader, writer).await
            }
            Err(e) => {
                // Plain-text clients and silent ones are routine noise; other failures (bad
                // certificates, say) are worth an operator's attention.
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::Unsupported
                ) {
                    debug!("{} - TLS handshake error: {e}", self.tag);
                } else {
                    error!("{} - TLS handshake error: {e}", self.tag);
                }
                self.finish(CloseReason::TlsHandshakeError);
            }
        }
    }
}

/// The TLS handshake: INFO in plain text first, as NATS does, unless `handshake_first` asks
/// for TLS before anything (with a fallback delay, a client silent that long gets INFO first
/// after all). Returns the stream and whether INFO was already sent. `timeout` bounds the
/// whole handshake from when INFO went out.
async fn tls_handshake(
    server: &ServerState,
    mut stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    info: &[u8],
    timeout: Duration,
) -> io::Result<(tokio_rustls::server::TlsStream<TcpStream>, bool)> {
    let config = server.config();
    let settings = config.security.tls.as_ref();
    let mut frame = BytesMut::new();
    encode::info(&mut frame, info);
    let mut info_sent = false;
    match settings.filter(|t| t.handshake_first) {
        Some(t) => {
            if let Some(delay) = t.handshake_first_fallback {
                let mut probe = [0u8; 1];
                if tokio::time::timeout(delay, stream.peek(&mut probe))
                    .await
                    .is_err()
                {
                    stream.write_all(&frame).await?;
                    info_sent = true;
                }
            }
        }
        None => {
            stream.write_all(&frame).await?;
            info_sent = true;
        }
    }
    let handshake = async {
        // A client that ignores tls_required talks plain text: name that in the log rather
        // than rustls' complaint about record types. nats-server sends it nothing.
        let mut probe = [0u8; 1];
        let peeked = stream.peek(&mut probe).await?;
        if peeked == 1 && !crate::tls::looks_like_tls(&probe) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "first record does not look like a TLS handshake",
            ));
        }
        tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
    };
    let tls_stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "i/o timeout"))??;
    Ok((tls_stream, info_sent))
}

/// Where the read loop reads from.
trait Source {
    /// Reads into `buf` after making room for `want` bytes; returns the bytes read and the
    /// room there was. Cancel-safe: nothing is read unless the future completes.
    fn read_into(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl std::future::Future<Output = io::Result<(usize, usize)>>;
}

/// Plain TCP: room is made only once data is there, so an idle connection holds no read
/// buffer at all.
impl Source for tokio::net::tcp::ReadHalf<'_> {
    async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<(usize, usize)> {
        let stream: &TcpStream = self.as_ref();
        loop {
            stream.readable().await?;
            buf.reserve(want);
            let room = buf.capacity() - buf.len();
            match stream.try_read_buf(buf) {
                Ok(n) => return Ok((n, room)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// TLS: records are decrypted into the buffer, which must exist before the wait.
impl<S: AsyncRead> Source for tokio::io::ReadHalf<S> {
    async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<(usize, usize)> {
        buf.reserve(want);
        let room = buf.capacity() - buf.len();
        let n = self.read_buf(buf).await?;
        Ok((n, room))
    }
}

/// Writes queued frames until the connection closes; returns why it closed.
async fn write_loop<W: AsyncWrite + Unpin>(
    client: &Client,
    mut stream: W,
    deadline: Duration,
) -> CloseReason {
    let mut batch = BytesMut::new();
    loop {
        let idle = {
            let mut out = client.outbound();
            if out.buf.is_empty() {
                if let Some(reason) = out.closing {
                    return reason;
                }
                if out.buf.capacity() > IDLE_KEEP {
                    out.buf = BytesMut::new();
                }
                true
            } else {
                std::mem::swap(&mut out.buf, &mut batch);
                client.take_inflight(batch.len());
                false
            }
        };
        if idle {
            if batch.capacity() > IDLE_KEEP {
                batch = BytesMut::new();
            }
            tokio::select! {
                _ = client.woken() => continue,
                _ = client.killed() => return killed_reason(client),
            }
        }
        let written = tokio::select! {
            r = tokio::time::timeout(deadline, write_all(client, &mut stream, &batch)) => r,
            _ = client.killed() => return killed_reason(client),
        };
        match written {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(_)) => return CloseReason::WriteError,
            Err(_) => return CloseReason::SlowConsumerWriteDeadline,
        }
    }
}

fn killed_reason(client: &Client) -> CloseReason {
    client
        .outbound()
        .closing
        .unwrap_or(CloseReason::SlowConsumerPendingBytes)
}

/// Writes all of `data`, telling `client` after every syscall how much left its pending count:
/// the peer may read those bytes and publish again before this task runs on, and its next
/// message must not find them still counted against max_pending.
async fn write_all<W: AsyncWrite + Unpin>(
    client: &Client,
    stream: &mut W,
    mut data: &[u8],
) -> io::Result<()> {
    while !data.is_empty() {
        let n = stream.write(data).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        client.written(n);
        data = &data[n..];
    }
    // TLS buffers records; plain TCP returns at once.
    stream.flush().await
}

/// A random nonce for the client to sign, as nats-server sends (11 random bytes, base64url).
/// From the system's secure generator: a predictable nonce would let a captured signature
/// be replayed.
fn new_nonce() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 11];
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        // The OS generator failing is not something to carry on through quietly.
        panic!("no secure random numbers available for the nonce");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Connection {
    fn new(
        server: &Arc<ServerState>,
        client: &Arc<Client>,
        tag: String,
        nonce: Option<String>,
    ) -> Connection {
        let config = server.config();
        let authed = !server.auth().required();
        if authed {
            client.set_identity(server.accounts.global().clone(), None, None);
        }
        Connection {
            parser: Parser::new(config.max_control_line, config.max_payload as usize),
            server: server.clone(),
            client: client.clone(),
            tag,
            opts: Options::default(),
            account: server.accounts.global().clone(),
            authed,
            nonce,
            peer_cert: None,
            permissions: None,
            permissions_version: 0,
            publish_check: PublishCheck::default(),
            max_subscriptions: match config.max_subscriptions {
                0 => usize::MAX,
                n => n,
            },
            max_payload: None,
            expires: None,
            announced: false,
            cache: MatchCache::default(),
            to_wake: Vec::new(),
            stall_on: None,
            pings_out: 0,
            ping_sent: None,
            in_msgs: 0,
            in_bytes: 0,
        }
    }

    /// Runs the read and write loops over the connection's two halves until it closes.
    async fn run<R: Source, W: AsyncWrite + Unpin>(mut self, reader: R, writer: W) {
        let client = self.client.clone();
        let deadline = self.server.config().write_deadline;
        let reason = {
            let writer = write_loop(&client, writer, deadline);
            tokio::pin!(writer);
            tokio::select! {
                reason = self.read_loop(reader) => {
                    client.close(reason);
                    // Stop routing to it now, not after the flush: a queue group must not
                    // pick a member that will never deliver.
                    self.server.remove_subscriptions(&client);
                    // Flush what the client was told (an -ERR, say) before hanging up.
                    let _ = tokio::time::timeout(deadline, &mut writer).await;
                    reason
                }
                reason = &mut writer => reason,
            }
        };
        self.finish(reason);
    }

    async fn read_loop<R: Source>(&mut self, mut stream: R) -> CloseReason {
        let config = self.server.config();
        // The first PING goes out early, as nats-server's does: it measures the round trip
        // for monitoring and finds dead peers soon after they connect.
        let first = config.ping_interval.min(FIRST_PING);
        let mut ping = interval_at(Instant::now() + first, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Timers only for connections that need them, made once (a branch's future is built
        // on every pass of the loop, even when its precondition disables it) and boxed, so
        // idle connections without auth carry neither.
        let mut auth_timer =
            (!self.authed).then(|| Box::pin(tokio::time::sleep(self.server.auth().timeout)));
        let mut expiry: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut buf = BytesMut::new();
        let mut read_size = READ_MIN;
        loop {
            let want = read_size.max(self.parser.bytes_wanted(buf.len()));
            if let Some(at) = self.expires.take() {
                expiry = Some(Box::pin(tokio::time::sleep_until(at)));
            }
            if self.authed {
                auth_timer = None;
            }
            tokio::select! {
                read = stream.read_into(&mut buf, want) => {
                    match read {
                        Ok((0, _)) => return CloseReason::ClientClosed,
                        Ok((n, room)) => read_size = next_read_size(read_size, n, room),
                        Err(_) => return CloseReason::ReadError,
                    }
                    self.client.touch();
                    let result = {
                        let _streams = crate::jetstream::Batch::open();
                        self.process(&mut buf)
                    };
                    self.end_batch();
                    if let Err(reason) = result {
                        return reason;
                    }
                    if let Some(slow) = self.stall_on.take() {
                        // Fast-producer stall, as nats-server does: stop reading this publisher
                        // (TCP pushes back on it) until the receiver catches up, for a moment
                        // at most. A receiver that stays behind becomes a slow consumer.
                        let _ = tokio::time::timeout(STALL_MAX, slow.caught_up()).await;
                    }
                    if buf.is_empty() && read_size == READ_MIN {
                        // An idle connection keeps no read buffer.
                        buf = BytesMut::new();
                    }
                }
                _ = async { auth_timer.as_mut().expect("checked").await }, if auth_timer.is_some() => {
                    error!("{} - Authentication Timeout", self.tag);
                    self.send_err("Authentication Timeout");
                    self.end_batch();
                    return CloseReason::AuthenticationViolation;
                }
                _ = async { expiry.as_mut().expect("checked").await }, if expiry.is_some() => {
                    debug!("{} - User Authentication Expired", self.tag);
                    self.send_err("User Authentication Expired");
                    self.end_batch();
                    return CloseReason::AuthenticationExpired;
                }
                _ = ping.tick() => {
                    // Stale results may hold closed connections alive; a quiet moment to let go.
                    self.cache.prune();
                    if self.pings_out >= self.server.config().ping_max {
                        self.send_err("Stale Connection");
                        self.end_batch();
                        debug!("{} - Stale Client Connection - Closing", self.tag);
                        self.server.note_stale_connection();
                        return CloseReason::StaleConnection;
                    }
                    self.pings_out += 1;
                    self.ping_sent.get_or_insert_with(std::time::Instant::now);
                    self.send(encode::PING);
                    self.end_batch();
                }
            }
        }
    }

    /// Handles every complete operation in `buf`, then drops the bytes they took.
    fn process(&mut self, buf: &mut BytesMut) -> Result<(), CloseReason> {
        let mut at = 0;
        let result = loop {
            if !self.authed && !starts_like_connect(&buf[at..]) {
                // Before authenticating only CONNECT is accepted: refuse at the first wrong
                // byte, not after buffering a payload.
                break Err(self.auth_violation("operation before CONNECT"));
            }
            if !self.opts.headers && is_hpub(&buf[at..]) {
                // Refused on the control line, as nats-server does: its payload is never
                // buffered.
                error!("{} - message headers not supported", self.tag);
                self.send_err("Message Headers Not Supported");
                break Err(CloseReason::ProtocolViolation);
            }
            match self.parser.parse(&buf[at..]) {
                Ok(Some((op, taken))) => {
                    at += taken;
                    if let Err(reason) = self.handle(op) {
                        break Err(reason);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    error!("{} - Client parser error: {}", self.tag, e.wire_text());
                    self.send_err(&e.wire_text());
                    break Err(match e {
                        ParseError::MaxControlLine => CloseReason::MaxControlLineExceeded,
                        ParseError::MaxPayload => CloseReason::MaxPayloadExceeded,
                        _ => CloseReason::ProtocolViolation,
                    });
                }
            }
        };
        buf.advance(at);
        result
    }

    /// Wakes every receiver given data in this batch, and publishes this batch's counters.
    fn end_batch(&mut self) {
        for client in self.to_wake.drain(..) {
            client.wake();
        }
        if self.in_msgs > 0 {
            self.server.count_in(self.in_msgs, self.in_bytes);
            self.client.count_in(self.in_msgs, self.in_bytes);
            self.in_msgs = 0;
            self.in_bytes = 0;
        }
    }

    fn handle(&mut self, op: Op<'_>) -> Result<(), CloseReason> {
        if enabled!(Level::TRACE) {
            trace!("{} - <<- [{}]", self.tag, describe(&op));
        }
        match op {
            Op::Pub {
                subject,
                reply,
                header_len,
                payload,
                headers,
            } => self.publish(subject, reply, header_len, payload, headers)?,
            Op::Sub {
                subject,
                queue,
                sid,
            } => self.subscribe(subject, queue, sid),
            Op::Unsub { sid, max } => self.unsubscribe(sid, max),
            Op::Ping => {
                self.send(encode::PONG);
                // Answering promptly matters more than batching: clients PING to flush.
                self.end_batch();
            }
            Op::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.ping_sent.take() {
                    self.client.set_rtt(sent.elapsed());
                }
            }
            Op::Connect(json) => self.connect(json)?,
            Op::Info | Op::Ok => {}
            Op::Err(text) => {
                error!(
                    "{} - Client Error {}",
                    self.tag,
                    String::from_utf8_lossy(text)
                );
                return Err(CloseReason::ClientClosed);
            }
        }
        Ok(())
    }

    fn connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        // Through a generic value first: a repeated key then means its last value, as in
        // nats-server, rather than a parse error.
        let parsed: ConnectOptions = match serde_json::from_slice::<serde_json::Value>(json)
            .and_then(|v| match v {
                serde_json::Value::Null => Ok(ConnectOptions::default()),
                v => serde_json::from_value(v),
            }) {
            Ok(c) => c,
            Err(e) => {
                error!("{} - Invalid CONNECT: {e}", self.tag);
                if !self.authed {
                    return Err(self.auth_violation("unreadable CONNECT"));
                }
                self.send_err(&format!("Invalid CONNECT JSON: {e}"));
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if self.server.auth().required() {
            // Every CONNECT is checked, as nats-server does, not only the first.
            let identity = self.authenticate(&parsed)?;
            if !self.authed {
                self.adopt(identity)?;
            }
        }
        if !self.announced {
            self.announced = true;
            self.server
                .events
                .connected(&self.server, &self.client, &self.account);
        }
        let o = &mut self.opts;
        o.verbose = parsed.verbose.unwrap_or(o.verbose);
        o.pedantic = parsed.pedantic.unwrap_or(o.pedantic);
        o.echo = parsed.echo.unwrap_or(o.echo);
        o.headers = parsed.headers.unwrap_or(o.headers);
        o.no_responders = parsed.no_responders.unwrap_or(o.no_responders);
        if o.no_responders && !o.headers {
            self.send_err("no responders requires headers support");
            error!("{} - no responders requires headers support", self.tag);
            return Err(CloseReason::NoRespondersRequiresHeaders);
        }
        self.client.set_headers(o.headers);
        self.client.set_meta(ClientMeta {
            name: parsed.name.unwrap_or_default(),
            lang: parsed.lang.unwrap_or_default(),
            version: parsed.version.unwrap_or_default(),
        });
        if let Some(protocol) = parsed.protocol {
            self.client.set_async_info(protocol >= 1);
        }
        self.ok();
        Ok(())
    }

    /// Checks the CONNECT credentials; closes the connection when they fail.
    fn authenticate(&mut self, connect: &ConnectOptions) -> Result<Identity, CloseReason> {
        let server = self.server.clone();
        let presented = Presented {
            connect,
            nonce: self.nonce.as_deref().unwrap_or_default().as_bytes(),
            cert: self.peer_cert.as_ref(),
            ip: Some(self.client.addr.ip()),
        };
        let check = || server.auth().authenticate(presented, &server.accounts);
        let result = if server.auth().is_slow(connect)
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            // bcrypt takes milliseconds: let the runtime move other connections elsewhere.
            tokio::task::block_in_place(check)
        } else {
            check()
        };
        result.map_err(|denied| {
            let reason = self.auth_violation(&denied.0);
            server
                .events
                .auth_error(&server, &self.client, connect.user.as_deref());
            reason
        })
    }

    /// Takes on the identity a successful CONNECT proved.
    fn adopt(&mut self, identity: Identity) -> Result<(), CloseReason> {
        if !identity.account.add_connection() {
            error!(
                "{} - Maximum Account Connections Exceeded for account {:?}",
                self.tag, identity.account.name
            );
            self.send_err("maximum account active connections exceeded");
            return Err(CloseReason::MaxAccountConnectionsExceeded);
        }
        self.authed = true;
        self.account = identity.account.clone();
        self.cache = MatchCache::default();
        if let Some(n) = identity.max_subscriptions {
            self.max_subscriptions = self.max_subscriptions.min(n);
        }
        self.max_payload = identity.max_payload;
        self.expires = identity.expires.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        self.permissions = identity.permissions.clone();
        self.client
            .set_identity(identity.account, identity.permissions, identity.user);
        Ok(())
    }

    /// Picks up permissions a configuration reload replaced (one atomic load when none did).
    fn refresh_permissions(&mut self) {
        let version = self.client.permissions_version();
        if version != self.permissions_version {
            self.permissions_version = version;
            self.permissions = self.client.permissions();
            self.publish_check = PublishCheck::default();
        }
    }

    /// Tells the client `Authorization Violation` (never which part was wrong) and logs why.
    fn auth_violation(&mut self, why: &str) -> CloseReason {
        error!(
            audit = "auth.failure",
            "{} - authentication error: {why}", self.tag
        );
        self.send_err("Authorization Violation");
        CloseReason::AuthenticationViolation
    }

    fn publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: usize,
        payload: &[u8],
        headers: bool,
    ) -> Result<(), CloseReason> {
        if headers && !self.opts.headers {
            error!("{} - message headers not supported", self.tag);
            self.send_err("Message Headers Not Supported");
            return Err(CloseReason::ProtocolViolation);
        }
        if let Some(max) = self.max_payload {
            if payload.len() > max {
                error!("{} - Maximum Payload Violation", self.tag);
                self.send_err("Maximum Payload Violation");
                return Err(CloseReason::MaxPayloadExceeded);
            }
        }
        self.refresh_permissions();
        if let Some(perms) = &self.permissions {
            if perms.restricts_publish()
                && !self.publish_check.allowed(perms, subject)
                && !(perms.responses.is_some()
                    && self
                        .client
                        .responses()
                        .is_some_and(|mut r| r.spend(subject, std::time::Instant::now())))
            {
                let subject = String::from_utf8_lossy(subject);
                let text = format!("Permissions Violation for Publish to \"{subject}\"");
                error!(
                    audit = "permission.publish",
                    "{} - Publish Violation - {text}", self.tag
                );
                self.send_err(&text);
                return Ok(());
            }
        }
        if self.opts.pedantic && !subject::is_valid_publish(subject) {
            self.send_err("Invalid Publish Subject");
            self.ok();
            return Ok(());
        }
        if !subject::has_only_full_tokens(subject) {
            // nats-server drops `a..b` silently when not pedantic; so do we.
            self.ok();
            return Ok(());
        }
        self.in_msgs += 1;
        self.in_bytes += payload.len() as u64;
        let msg = Message {
            subject,
            reply,
            header_len,
            payload,
        };
        // nats-server acknowledges before delivering, so a verbose client that receives its
        // own message sees +OK first.
        self.ok();
        self.route(&msg);
        Ok(())
    }

    /// Delivers `msg` to every plain subscriber and one member of each queue group.
    fn route(&mut self, msg: &Message<'_>) {
        let matches = self.cache.get(&self.account.sublist, msg.subject);
        let mut out = Deliveries {
            server: &self.server,
            account: &self.account,
            hops: 0,
            publisher: self.client.id,
            echo: self.opts.echo,
            to_wake: &mut self.to_wake,
            stall_on: &mut self.stall_on,
            delivered: false,
        };
        out.deliver_all(matches, msg);
        if !out.delivered && self.opts.no_responders {
            if let Some(reply) = msg.reply {
                self.no_responders(msg.subject, reply);
            }
        }
    }

    /// Tells a requester at once that nobody is listening: a `503` status on its reply subject.
    fn no_responders(&mut self, subject: &[u8], reply: &[u8]) {
        let headers = encode::status_headers(503, subject);
        let msg = Message {
            subject: reply,
            reply: None,
            header_len: headers.len(),
            payload: &headers,
        };
        let mine = self.account.sublist.matches(reply);
        let own = mine
            .plain
            .iter()
            .chain(mine.groups.iter().flat_map(|g| g.members.iter()));
        for sub in own.filter(|s| s.client.id == self.client.id) {
            let len = msg.frame_len(sub.sid.len(), true);
            if self
                .client
                .enqueue(len, |b| msg.write(b, &sub.sid, true))
                .wake()
            {
                self.to_wake.push(self.client.clone());
            }
        }
    }

    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        let queue_ok = queue.is_none_or(subject::is_valid_queue);
        if !subject::is_valid_subscription(subject) || !queue_ok {
            self.send_err("Invalid Subject");
            return;
        }
        self.refresh_permissions();
        if let Some(perms) = &self.permissions {
            if !perms.may_subscribe(subject, queue) {
                let subject = String::from_utf8_lossy(subject);
                let text = match queue {
                    Some(q) => format!(
                        "Permissions Violation for Subscription to \"{subject}\" using queue \"{}\"",
                        String::from_utf8_lossy(q)
                    ),
                    None => format!("Permissions Violation for Subscription to \"{subject}\""),
                };
                error!(
                    audit = "permission.subscribe",
                    "{} - Subscription Violation - {text}", self.tag
                );
                self.send_err(&text);
                return;
            }
        }
        let max = self.max_subscriptions;
        {
            let mut subs = self.client.subs();
            if subs.contains_key(sid) {
                // nats-server keeps the first subscription for a reused sid.
                drop(subs);
                self.ok();
                return;
            }
            if subs.len() >= max {
                drop(subs);
                error!("{} - maximum subscriptions exceeded", self.tag);
                self.send_err("maximum subscriptions exceeded");
                return;
            }
            let sub = Arc::new(Subscription::new(self.client.clone(), subject, queue, sid));
            subs.insert(sub.sid.clone(), sub.clone());
            self.account.sublist.insert(subject, queue, sub);
        }
        self.ok();
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        let sub = self.client.subs().get(sid).cloned();
        if let Some(sub) = sub {
            if max.is_none_or(|m| sub.set_max(m)) {
                self.server.remove_subscription(&sub);
            }
        }
        self.ok();
    }

    fn ok(&mut self) {
        if self.opts.verbose {
            self.send(encode::OK);
        }
    }

    fn send(&mut self, frame: &[u8]) {
        if self
            .client
            .enqueue(frame.len(), |b| b.extend_from_slice(frame))
            .wake()
        {
            self.to_wake.push(self.client.clone());
        }
    }

    fn send_err(&mut self, text: &str) {
        if enabled!(Level::TRACE) {
            trace!("{} - ->> [-ERR {text}]", self.tag);
        }
        if self
            .client
            .enqueue(text.len() + 9, |b| encode::err(b, text))
            .wake()
        {
            self.to_wake.push(self.client.clone());
        }
    }

    /// Unregisters the connection and drops its subscriptions.
    fn finish(self, reason: CloseReason) {
        self.server.remove_subscriptions(&self.client);
        {
            // Other publishers' caches may hold this client a while; leave them nothing big.
            let mut out = self.client.outbound();
            out.closing.get_or_insert(reason);
            out.buf = BytesMut::new();
        }
        self.server.unregister(&self.client);
        if self.authed && self.server.auth().required() {
            self.account.remove_connection();
        }
        if self.announced {
            self.server
                .events
                .disconnected(&self.server, &self.client, &self.account, reason);
        }
        match reason {
            CloseReason::SlowConsumerWriteDeadline => info!(
                "{} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                self.tag,
                self.server.config().write_deadline
            ),
            _ => debug!(
                "{} - Client connection closed: {}",
                self.tag,
                reason.as_str()
            ),
        }
    }
}

/// CONNECT JSON for the trace, with secrets replaced as nats-server does; unreadable JSON is
/// not shown at all, since it might hold a secret.
fn redacted(json: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(mut map)) => {
            for key in ["pass", "auth_token", "sig"] {
                if let Some(v) = map.get_mut(key) {
                    *v = serde_json::Value::String("[REDACTED]".into());
                }
            }
            serde_json::Value::Object(map).to_string()
        }
        Ok(other) => other.to_string(),
        Err(_) => "[unparseable]".into(),
    }
}

/// Whether `bytes` start an `HPUB` control line (any case).
fn is_hpub(bytes: &[u8]) -> bool {
    bytes.len() > 4 && bytes[..4].eq_ignore_ascii_case(b"HPUB") && matches!(bytes[4], b' ' | b'\t')
}

/// Whether `bytes` could be the start of a `CONNECT` (any case); empty input could.
fn starts_like_connect(bytes: &[u8]) -> bool {
    let n = bytes.len().min(7);
    bytes[..n].eq_ignore_ascii_case(&b"CONNECT"[..n])
}

/// Grows the read size while reads fill the buffer and shrinks it when they use little of it,
/// so busy publishers read in big gulps and idle devices hold little memory.
fn next_read_size(size: usize, read: usize, room: usize) -> usize {
    if read >= room && size < READ_MAX {
        size * 2
    } else if read < size / 4 && size > READ_MIN {
        size / 2
    } else {
        size
    }
}

/// The operation as nats-server's protocol trace shows it.
fn describe(op: &Op<'_>) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match op {
        Op::Pub {
            subject,
            reply,
            header_len,
            payload,
            headers,
        } => {
            let verb = if *headers { "HPUB" } else { "PUB" };
            let reply = reply
                .as_ref()
                .map(|r| format!(" {}", s(r)))
                .unwrap_or_default();
            let hdr = if *headers {
                format!(" {header_len}")
            } else {
                String::new()
            };
            format!("{verb} {}{reply}{hdr} {}", s(subject), payload.len())
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => match queue {
            Some(q) => format!("SUB {} {} {}", s(subject), s(q), s(sid)),
            None => format!("SUB {} {}", s(subject), s(sid)),
        },
        Op::Unsub { sid, max } => match max {
            Some(m) => format!("UNSUB {} {m}", s(sid)),
            None => format!("UNSUB {}", s(sid)),
        },
        Op::Connect(json) => format!("CONNECT {}", redacted(json)),
        Op::Ping => "PING".into(),
        Op::Pong => "PONG".into(),
        Op::Info => "INFO".into(),
        Op::Ok => "+OK".into(),
        Op::Err(t) => format!("-ERR {}", s(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subject, reply and payload of one message.
    type Seen = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<Seen>>);

    impl crate::account::Sink for Recorder {
        fn deliver(&self, subject: &[u8], reply: Option<&[u8]>, _hl: usize, payload: &[u8]) {
            self.0.lock().unwrap().push((
                subject.to_vec(),
                reply.map(<[u8]>::to_vec),
                payload.to_vec(),
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn internal_sinks_and_publishes_meet_clients() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let config = crate::config::Config {
            host: "127.0.0.1".into(),
            port: 0,
            ..Default::default()
        };
        let server = crate::server::Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let state = server.state().clone();
        let (_stop, stops) = tokio::sync::mpsc::channel(1);
        tokio::spawn(server.serve(stops));
        let sink = Arc::new(Recorder::default());
        let global = state.accounts.global().clone();
        global.subscribe_internal(b"svc.>", sink.clone());

        let stream = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        lines.next_line().await.unwrap(); // INFO
        w.write_all(
            b"CONNECT {\"verbose\":false}\r\nSUB out 1\r\nPUB svc.a in 2\r\nhi\r\nPING\r\n",
        )
        .await
        .unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "PONG");
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![(b"svc.a".to_vec(), Some(b"in".to_vec()), b"hi".to_vec())]
        );

        let msg = Message {
            subject: b"out",
            reply: None,
            header_len: 0,
            payload: b"back",
        };
        assert!(publish_message(&state, &global, &msg));
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "MSG out 1 4");
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "back");
        let nobody = Message {
            subject: b"nobody",
            ..msg
        };
        assert!(!publish_message(&state, &global, &nobody));
    }

    #[test]
    fn read_size_adapts() {
        assert_eq!(next_read_size(512, 512, 512), 1024);
        assert_eq!(next_read_size(READ_MAX, READ_MAX, READ_MAX), READ_MAX);
        assert_eq!(next_read_size(4096, 10, 4096), 2048);
        assert_eq!(next_read_size(512, 10, 512), 512);
    }
}
