//! JetStream consumers reading a file-storage stream: the stream `BENCH` is filled with the
//! scenario's messages first (publishes with acks, 256 in flight, not timed), then one
//! connection consumes them all, and that is timed.
//!
//! * Pull: a durable consumer `PULL` with explicit acks. The client asks for a batch of 100
//!   (`$JS.API.CONSUMER.MSG.NEXT.BENCH.PULL` with `{"batch":100,"expires":…}`, replies to
//!   `_INBOX.pull`), acks every message it gets (`+ACK` to its reply subject) and, when the
//!   batch is complete, asks for the next one in the same write as the last acks: one request
//!   outstanding at a time, as a `fetch` loop does.
//! * Push: a durable consumer `PUSH` with `ack_policy: none` delivering to `_INBOX.push`, which
//!   the connection subscribes to beforehand; the clock starts when the `CONSUMER.CREATE`
//!   request is written and stops when the last message arrives. It has flow control (and the
//!   idle heartbeat that requires), answered by the client, as push subscriptions in the NATS
//!   clients do: without it both servers queue the whole stream for the connection and cut it
//!   off as a slow consumer once 64 MiB are pending.
//!
//! Every message's stream sequence (from its `$JS.ACK` reply subject) must be in `1..=N` and
//! arrive exactly once, with the published payload size; afterwards `CONSUMER.INFO` must show
//! everything delivered (and, for pull, acknowledged).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::client::{payload, read_polling, Conn};
use crate::jetstream::{Frame, Publisher, JS_SETUP, STREAM};
use crate::scenarios::{Meter, Sample, Scenario, IN_FLIGHT, RUN_TIMEOUT};
use crate::server::Server;
use crate::Result;

/// Which consumer reads the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Durable pull consumer, explicit acks, batches of [`BATCH`].
    Pull,
    /// Durable push consumer, no acks.
    Push,
}

/// Messages a pull request asks for; scenario sizes are multiples of it, so that every request
/// is filled and none waits for its expiry.
pub const BATCH: u64 = 100;
/// Pull requests expire after this long (far more than a batch takes).
const EXPIRES: Duration = Duration::from_secs(10);
/// The push consumer's idle heartbeat (flow control needs one; none is due during a run).
const HEARTBEAT: Duration = Duration::from_secs(5);
const PULL: &str = "PULL";
const PUSH: &str = "PUSH";
/// The pull requests' reply subject, subscribed as sid 2.
const PULL_INBOX: &str = "_INBOX.pull";
/// The push consumer's deliver subject, subscribed as sid 3.
const DELIVER: &str = "_INBOX.push";
const API_REPLY: &str = "_INBOX.js.api";

/// Fills the stream with `scenario.count` messages, then consumes them all with `kind`.
pub fn run(server: &mut Server, scenario: &Scenario, kind: Kind) -> Result<Sample> {
    let count = scenario.count;
    if kind == Kind::Pull && count % BATCH != 0 {
        return Err(format!("pull scenarios consume a multiple of {BATCH} messages").into());
    }
    let deadline = Instant::now() + RUN_TIMEOUT;
    let setup = format!("{JS_SETUP}SUB {PULL_INBOX} 2\r\nSUB {DELIVER} 3\r\n");
    let conn = Conn::open_headers(server.port, setup.as_bytes(), deadline)?;
    let mut js = Publisher::new(conn.stream, deadline);
    js.create_stream()?;
    js.publish(&payload(scenario.payload), count, IN_FLIGHT)?;
    js.check_stored(count)?;
    let mut seen = Seen::new(count, scenario.payload);
    let (meter, start) = match kind {
        Kind::Pull => {
            create_consumer(&mut js, PULL, serde_json::json!({"ack_policy": "explicit"}))?;
            let meter = Meter::start(server)?;
            let start = Instant::now();
            pull(&mut js, &mut seen)?;
            (meter, start)
        }
        Kind::Push => {
            let meter = Meter::start(server)?;
            let start = Instant::now();
            push(&mut js, &mut seen)?;
            (meter, start)
        }
    };
    let elapsed = seen.last.duration_since(start);
    let sample = meter.finish(server, count, count, scenario.payload, elapsed)?;
    seen.check()?;
    check_consumer(&mut js, kind, count)?;
    Ok(sample)
}

/// The body of a durable consumer's `CONSUMER.CREATE` request, `config` added to the defaults.
fn consumer_request(name: &str, config: serde_json::Value) -> serde_json::Value {
    let mut full = serde_json::json!({
        "durable_name": name,
        "name": name,
        "deliver_policy": "all",
        "replay_policy": "instant",
    });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), config.as_object()) {
        full.extend(extra.clone());
    }
    serde_json::json!({"stream_name": STREAM, "config": full})
}

fn create_consumer(js: &mut Publisher, name: &str, config: serde_json::Value) -> Result<()> {
    let reply = js.api(
        &format!("CONSUMER.CREATE.{STREAM}.{name}"),
        &consumer_request(name, config),
    )?;
    if reply["name"] != name {
        return Err(format!("consumer not created: {reply}").into());
    }
    Ok(())
}

/// The fetch loop: one request for [`BATCH`] at a time, every message acked.
fn pull(js: &mut Publisher, seen: &mut Seen) -> Result<()> {
    let body = serde_json::json!({"batch": BATCH, "expires": EXPIRES.as_nanos() as u64});
    let body = body.to_string();
    let request = format!(
        "PUB $JS.API.CONSUMER.MSG.NEXT.{STREAM}.{PULL} {PULL_INBOX} {}\r\n{body}\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut outstanding = 0;
    while seen.count < seen.seen.len() as u64 - 1 {
        if outstanding == 0 {
            out.extend_from_slice(request.as_bytes());
            outstanding = BATCH;
        }
        js.stream.write_all(&out)?;
        out.clear();
        let n = read_polling(&mut js.stream, &mut buf, js.deadline)?;
        js.inbound.feed(&buf[..n], |frame| {
            match frame {
                Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
                Frame::Msg {
                    sid: b"2",
                    headers,
                    reply,
                    payload,
                    ..
                } => {
                    if !headers.is_empty() {
                        return status(headers, "pull request");
                    }
                    if outstanding == 0 {
                        return Err("more messages than the pull request asked for".into());
                    }
                    seen.mark(reply, PULL, payload)?;
                    outstanding -= 1;
                    write!(out, "PUB {} 4\r\n+ACK\r\n", show(reply))?;
                }
                Frame::Msg { subject, .. } => return unexpected(subject),
            }
            Ok(())
        })?;
    }
    js.stream.write_all(&out)?;
    Ok(())
}

/// Creates the push consumer and reads until every message has arrived (and the API reply).
fn push(js: &mut Publisher, seen: &mut Seen) -> Result<()> {
    let config = serde_json::json!({
        "ack_policy": "none",
        "deliver_subject": DELIVER,
        "flow_control": true,
        "idle_heartbeat": HEARTBEAT.as_nanos() as u64,
    });
    let body = consumer_request(PUSH, config).to_string();
    let request = format!(
        "PUB $JS.API.CONSUMER.CREATE.{STREAM}.{PUSH} {API_REPLY} {}\r\n{body}\r\n",
        body.len()
    );
    js.stream.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut created = false;
    while !created || seen.count < seen.seen.len() as u64 - 1 {
        let n = read_polling(&mut js.stream, &mut buf, js.deadline)?;
        js.inbound.feed(&buf[..n], |frame| {
            match frame {
                Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
                Frame::Msg {
                    sid: b"3",
                    headers,
                    reply,
                    payload,
                    ..
                } => {
                    if !headers.is_empty() {
                        return control(headers, reply, &mut out);
                    }
                    seen.mark(reply, PUSH, payload)?;
                }
                Frame::Msg {
                    sid: b"1", payload, ..
                } => {
                    let reply: serde_json::Value = serde_json::from_slice(payload)?;
                    if reply["name"] != PUSH {
                        return Err(format!("consumer not created: {reply}").into());
                    }
                    created = true;
                }
                Frame::Msg { subject, .. } => return unexpected(subject),
            }
            Ok(())
        })?;
        if !out.is_empty() {
            js.stream.write_all(&out)?;
            out.clear();
        }
    }
    Ok(())
}

/// A status message (headers, no payload) where a stored message was expected: idle
/// heartbeats are ignored, anything else (408 Request Timeout, 409 …) is an error.
fn status(headers: &[u8], what: &str) -> Result<()> {
    let line = headers.split(|&b| b == b'\r').next().unwrap_or_default();
    match line.strip_prefix(b"NATS/1.0 100 Idle") {
        Some(_) => Ok(()),
        None => Err(format!("{what}: status {:?}", show(headers)).into()),
    }
}

/// A push consumer's status message: a flow control request is answered (an empty message to
/// its reply subject), as is a heartbeat naming a stalled flow control subject; other idle
/// heartbeats are ignored and anything else is an error.
fn control(headers: &[u8], reply: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let text = String::from_utf8_lossy(headers);
    let mut lines = text.split("\r\n");
    let answer = match lines.next().unwrap_or_default() {
        line if line.starts_with("NATS/1.0 100 FlowControl") && !reply.is_empty() => {
            Some(show(reply))
        }
        line if line.starts_with("NATS/1.0 100 Idle") => lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("Nats-Consumer-Stalled"))
            .map(|(_, subject)| subject.trim().to_string()),
        _ => return Err(format!("push consumer: status {text:?}").into()),
    };
    if let Some(subject) = answer {
        write!(out, "PUB {subject} 0\r\n\r\n")?;
    }
    Ok(())
}

fn unexpected(subject: &[u8]) -> Result<()> {
    Err(format!("unexpected message on {}", show(subject)).into())
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Which stream sequences have been consumed.
struct Seen {
    /// Indexed by stream sequence; `seen[0]` is unused.
    seen: Vec<bool>,
    count: u64,
    payload: usize,
    /// When the last message arrived.
    last: Instant,
}

impl Seen {
    fn new(count: u64, payload: usize) -> Seen {
        Seen {
            seen: vec![false; count as usize + 1],
            count: 0,
            payload,
            last: Instant::now(),
        }
    }

    /// Records a delivery from `consumer` with ack reply subject `reply`.
    fn mark(&mut self, reply: &[u8], consumer: &str, payload: &[u8]) -> Result<()> {
        let seq = stream_seq(reply, consumer)?;
        if payload.len() != self.payload {
            return Err(format!("sequence {seq}: {} payload bytes", payload.len()).into());
        }
        match self.seen.get_mut(seq as usize) {
            Some(seen) if seq > 0 => {
                if std::mem::replace(seen, true) {
                    return Err(format!("sequence {seq} delivered twice").into());
                }
            }
            _ => return Err(format!("sequence {seq} was never published").into()),
        }
        self.count += 1;
        self.last = Instant::now();
        Ok(())
    }

    fn check(&self) -> Result<()> {
        match self.seen[1..].iter().position(|s| !s) {
            Some(i) => Err(format!("sequence {} never delivered", i + 1).into()),
            None => Ok(()),
        }
    }
}

/// The stream sequence in an ack reply subject from `consumer` of `BENCH`:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`, or
/// the form with domain and account hash after `$JS.ACK.` (and possibly a final token).
fn stream_seq(reply: &[u8], consumer: &str) -> Result<u64> {
    let bad = || {
        format!(
            "not an ack subject of {STREAM} {consumer}: {:?}",
            show(reply)
        )
    };
    let tokens: Vec<&[u8]> = reply
        .strip_prefix(b"$JS.ACK.")
        .ok_or_else(bad)?
        .split(|&b| b == b'.')
        .collect();
    let at = match tokens.len() {
        7 => 0,
        9 | 10 => 2,
        _ => return Err(bad().into()),
    };
    if tokens[at] != STREAM.as_bytes() || tokens[at + 1] != consumer.as_bytes() {
        return Err(bad().into());
    }
    let seq = std::str::from_utf8(tokens[at + 3])
        .ok()
        .and_then(|s| s.parse().ok());
    seq.ok_or_else(|| bad().into())
}

/// `CONSUMER.INFO` must show all `count` messages delivered and, for pull, acknowledged (acks
/// are not confirmed, so this waits a little for the last ones to be processed).
fn check_consumer(js: &mut Publisher, kind: Kind, count: u64) -> Result<()> {
    let name = match kind {
        Kind::Pull => PULL,
        Kind::Push => PUSH,
    };
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let info = js.api(
            &format!("CONSUMER.INFO.{STREAM}.{name}"),
            &serde_json::json!({}),
        )?;
        let delivered = info["delivered"]["stream_seq"] == count && info["num_pending"] == 0;
        let acked = kind == Kind::Push
            || (info["ack_floor"]["stream_seq"] == count && info["num_ack_pending"] == 0);
        if delivered && acked {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!("consumer state after the run: {info}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks ack-subject parsing; panics on a mismatch (run by `cargo test`).
pub fn self_check() {
    assert_eq!(
        stream_seq(b"$JS.ACK.BENCH.PULL.1.42.40.1700000000000000000.7", PULL).ok(),
        Some(42)
    );
    assert_eq!(
        stream_seq(b"$JS.ACK.dom.HASH.BENCH.PUSH.2.9.8.17.0.tok", PUSH).ok(),
        Some(9)
    );
    assert!(stream_seq(b"$JS.ACK.BENCH.PUSH.1.42.40.17.7", PULL).is_err());
    assert!(stream_seq(b"$JS.ACK.BENCH.PULL.1.42", PULL).is_err());
    assert!(stream_seq(b"", PULL).is_err());
    let mut out = Vec::new();
    assert!(control(
        b"NATS/1.0 100 FlowControl Request\r\n\r\n",
        b"$JS.FC.x",
        &mut out
    )
    .is_ok());
    assert!(control(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", b"", &mut out).is_ok());
    let stalled = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Consumer-Stalled: $JS.FC.y\r\n\r\n";
    assert!(control(stalled, b"", &mut out).is_ok());
    assert_eq!(out, b"PUB $JS.FC.x 0\r\n\r\nPUB $JS.FC.y 0\r\n\r\n");
    assert!(control(b"NATS/1.0 409 Consumer Deleted\r\n\r\n", b"", &mut out).is_err());
    let mut seen = Seen::new(3, 2);
    let ack = |seq: u64| format!("$JS.ACK.BENCH.PULL.1.{seq}.1.0.0").into_bytes();
    assert!(seen.mark(&ack(2), PULL, b"ab").is_ok());
    assert!(seen.check().is_err());
    assert!(seen.mark(&ack(2), PULL, b"ab").is_err());
    assert!(seen.mark(&ack(4), PULL, b"ab").is_err());
    assert!(seen.mark(&ack(0), PULL, b"ab").is_err());
    assert!(seen.mark(&ack(1), PULL, b"abc").is_err());
    assert!(seen.mark(&ack(1), PULL, b"ab").is_ok());
    assert!(seen.mark(&ack(3), PULL, b"ab").is_ok());
    assert!(seen.check().is_ok());
}
