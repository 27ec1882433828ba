//! One client connection: the read loop (parse, route, answer), the write loop (flush the
//! outbound buffer in whole batches), PING/PONG keepalive, and the close path.
//!
//! Both loops run as two futures in one task sharing the socket by reference, so a connection
//! costs one task. Messages routed during one read batch wake each receiver once, after the
//! batch: a receiver's writer then sends everything queued with one syscall.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tracing::{debug, enabled, error, info, trace, Level};

use crate::outbound::{Client, ClientMeta, CloseReason, Enqueued};
use crate::proto::encode::{self, Message};
use crate::proto::{ConnectOptions, Op, ParseError, Parser};
use crate::server::ServerState;
use crate::subject;
use crate::sublist::MatchCache;
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
        let target = &sub.client;
        if !self.echo && target.id == self.publisher {
            return false;
        }
        let claim = sub.claim();
        if claim == Claim::Skip {
            self.server.remove_subscription(sub);
            return false;
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
    let info = server.info_json(client.id, addr.ip());
    client.enqueue(info.len() + 8, |b| encode::info(b, &info));
    let config = &server.config;
    let mut conn = Connection {
        parser: Parser::new(config.max_control_line, config.max_payload as usize),
        server: server.clone(),
        client: client.clone(),
        tag,
        opts: Options::default(),
        cache: MatchCache::default(),
        to_wake: Vec::new(),
        stall_on: None,
        pings_out: 0,
        ping_sent: None,
        in_msgs: 0,
        in_bytes: 0,
    };
    let deadline = config.write_deadline;
    let reason = {
        let writer = write_loop(&client, &stream, deadline);
        tokio::pin!(writer);
        tokio::select! {
            reason = conn.read_loop(&stream) => {
                client.close(reason);
                // Stop routing to it now, not after the flush: a queue group must not pick a
                // member that will never deliver.
                server.remove_subscriptions(&client);
                // Flush what the client was told (an -ERR, say) before hanging up.
                let _ = tokio::time::timeout(deadline, &mut writer).await;
                reason
            }
            reason = &mut writer => reason,
        }
    };
    conn.finish(reason);
}

/// Writes queued frames until the connection closes; returns why it closed.
async fn write_loop(client: &Client, stream: &TcpStream, deadline: Duration) -> CloseReason {
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
            r = tokio::time::timeout(deadline, write_all(client, stream, &batch)) => r,
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
async fn write_all(client: &Client, stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => {
                client.written(n);
                data = &data[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Connection {
    async fn read_loop(&mut self, stream: &TcpStream) -> CloseReason {
        let config = &self.server.config;
        // The first PING goes out early, as nats-server's does: it measures the round trip
        // for monitoring and finds dead peers soon after they connect.
        let first = config.ping_interval.min(FIRST_PING);
        let mut ping = interval_at(Instant::now() + first, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = BytesMut::new();
        let mut read_size = READ_MIN;
        loop {
            tokio::select! {
                ready = stream.readable() => {
                    if ready.is_err() {
                        return CloseReason::ReadError;
                    }
                    let want = read_size.max(self.parser.bytes_wanted(buf.len()));
                    buf.reserve(want);
                    let room = buf.capacity() - buf.len();
                    match stream.try_read_buf(&mut buf) {
                        Ok(0) => return CloseReason::ClientClosed,
                        Ok(n) => read_size = next_read_size(read_size, n, room),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => return CloseReason::ReadError,
                    }
                    self.client.touch();
                    let result = self.process(&mut buf);
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
                _ = ping.tick() => {
                    // Stale results may hold closed connections alive; a quiet moment to let go.
                    self.cache.prune();
                    if self.pings_out >= self.server.config.ping_max {
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
        let parsed: ConnectOptions = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                error!("{} - Invalid CONNECT: {e}", self.tag);
                self.send_err(&format!("Invalid CONNECT JSON: {e}"));
                return Err(CloseReason::ProtocolViolation);
            }
        };
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
        let matches = self.cache.get(&self.server.sublist, msg.subject);
        let mut out = Deliveries {
            server: &self.server,
            publisher: self.client.id,
            echo: self.opts.echo,
            to_wake: &mut self.to_wake,
            stall_on: &mut self.stall_on,
            delivered: false,
        };
        for sub in &matches.plain {
            out.deliver(sub, msg);
        }
        for group in &matches.groups {
            let n = group.members.len();
            let start = fastrand::usize(..n);
            for i in 0..n {
                if out.deliver(&group.members[(start + i) % n], msg) {
                    break;
                }
            }
        }
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
        let mine = self.server.sublist.matches(reply);
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
        let max = self.server.config.max_subscriptions;
        {
            let mut subs = self.client.subs();
            if subs.contains_key(sid) {
                // nats-server keeps the first subscription for a reused sid.
                drop(subs);
                self.ok();
                return;
            }
            if max > 0 && subs.len() >= max {
                drop(subs);
                error!("{} - maximum subscriptions exceeded", self.tag);
                self.send_err("maximum subscriptions exceeded");
                return;
            }
            let sub = Arc::new(Subscription::new(self.client.clone(), subject, queue, sid));
            subs.insert(sub.sid.clone(), sub.clone());
            self.server.sublist.insert(subject, queue, sub);
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
        match reason {
            CloseReason::SlowConsumerWriteDeadline => info!(
                "{} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                self.tag, self.server.config.write_deadline
            ),
            _ => debug!(
                "{} - Client connection closed: {}",
                self.tag,
                reason.as_str()
            ),
        }
    }
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
        Op::Connect(json) => format!("CONNECT {}", s(json)),
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

    #[test]
    fn read_size_adapts() {
        assert_eq!(next_read_size(512, 512, 512), 1024);
        assert_eq!(next_read_size(READ_MAX, READ_MAX, READ_MAX), READ_MAX);
        assert_eq!(next_read_size(4096, 10, 4096), 2048);
        assert_eq!(next_read_size(512, 10, 512), 512);
    }
}
