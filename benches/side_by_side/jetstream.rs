//! JetStream publish with acknowledgement, file storage: one connection publishes to a stream
//! subject, each PUB with its own reply subject (`_INBOX.js.<n>`), and matches every PubAck to
//! its publish. With one publish in flight each round trip is timed; with 256 in flight the
//! publisher tops the window up whenever acks arrive, which is what a server's group commit
//! (one fsync for every pending publish) can turn into throughput.
//!
//! The stream is created through the JetStream API (`$JS.API.STREAM.CREATE.BENCH`) and checked
//! afterwards (`$JS.API.STREAM.INFO.BENCH`): every publish must be stored exactly once, and
//! every ack must be a PubAck with a distinct sequence.

use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

use crate::client::{payload, read_polling, Conn};
use crate::latency::percentiles;
use crate::scenarios::{Meter, Sample, Scenario, RUN_TIMEOUT};
use crate::server::Server;
use crate::Result;

pub const STREAM: &str = "BENCH";
pub const SUBJECT: &str = "js.bench";
/// Acks come back on `_INBOX.js.<n>`, `n` the publish's index; API replies on `_INBOX.js.api`.
const INBOX: &str = "_INBOX.js.";
const API_REPLY: &str = "_INBOX.js.api";
/// The subscription the publisher's `SUB` for acks and API replies has (`sid`).
pub const JS_SETUP: &str = "SUB _INBOX.js.* 1\r\n";

/// Publishes `scenario.count` messages (after a warm-up) with at most `in_flight` unacked.
pub fn run(server: &mut Server, scenario: &Scenario, in_flight: usize) -> Result<Sample> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let conn = Conn::open(server.port, JS_SETUP.as_bytes(), deadline)?;
    let mut js = Publisher::new(conn.stream, deadline);
    js.create_stream()?;
    // Unmeasured publishes first: caches, allocators, the first store block, CPU frequency.
    let warm_up = match in_flight {
        1 => scenario.count / 4,
        _ => scenario.count / 10,
    };
    let body = payload(scenario.payload);
    js.publish(&body, warm_up, in_flight)?;
    let meter = Meter::start(server)?;
    let start = Instant::now();
    let mut rtts = js.publish(&body, scenario.count, in_flight)?;
    let elapsed = start.elapsed();
    let mut sample = meter.finish(
        server,
        scenario.count,
        scenario.count,
        scenario.payload,
        elapsed,
    )?;
    if in_flight == 1 {
        sample.latency_us = Some(percentiles(&mut rtts));
    }
    js.check_stored(warm_up + scenario.count)?;
    Ok(sample)
}

/// One connection that publishes and reads acks, single-threaded: it writes as many publishes
/// as the window allows, then reads whatever acks have arrived, and so on.
pub struct Publisher {
    pub stream: TcpStream,
    pub inbound: Inbound,
    pub deadline: Instant,
    /// Publishes sent so far over all [`Publisher::publish`] calls (the next reply subject).
    sent: u64,
    /// Sum of the sequences acked, to check they are exactly `1..=sent`.
    seq_sum: u128,
}

impl Publisher {
    pub fn new(stream: TcpStream, deadline: Instant) -> Publisher {
        Publisher {
            stream,
            inbound: Inbound::default(),
            deadline,
            sent: 0,
            seq_sum: 0,
        }
    }

    /// Creates the file-storage stream `BENCH` on `js.bench`.
    pub fn create_stream(&mut self) -> Result<()> {
        let created = self.api(
            &format!("STREAM.CREATE.{STREAM}"),
            &serde_json::json!({
                "name": STREAM,
                "subjects": [SUBJECT],
                "storage": "file",
                "retention": "limits",
                "discard": "old",
                "num_replicas": 1,
            }),
        )?;
        if created["config"]["name"] != STREAM {
            return Err(format!("stream not created: {created}").into());
        }
        Ok(())
    }

    /// Publishes `count` messages keeping up to `in_flight` unacked, until all are acked. With
    /// one in flight, returns the round-trip time of each in nanoseconds.
    pub fn publish(&mut self, body: &[u8], count: u64, in_flight: usize) -> Result<Vec<u64>> {
        let first = self.sent;
        let end = first + count;
        let mut acked = vec![false; count as usize];
        let (mut done, mut next) = (0u64, first);
        let mut sent_at = Instant::now();
        let mut rtts = Vec::with_capacity(if in_flight == 1 { count as usize } else { 0 });
        let mut out = Vec::with_capacity(in_flight * (body.len() + 64));
        let mut buf = vec![0u8; 64 * 1024];
        while done < count {
            let room = (in_flight as u64 - (next - first - done)).min(end - next);
            if room > 0 {
                out.clear();
                for n in next..next + room {
                    write!(out, "PUB {SUBJECT} {INBOX}{n} {}\r\n", body.len())?;
                    out.extend_from_slice(body);
                    out.extend_from_slice(b"\r\n");
                }
                sent_at = Instant::now();
                self.stream.write_all(&out)?;
                next += room;
            }
            let n = read_polling(&mut self.stream, &mut buf, self.deadline)?;
            let mut pongs = 0;
            let seq_sum = &mut self.seq_sum;
            self.inbound.feed(&buf[..n], |frame| {
                match frame {
                    Frame::Ping => pongs += 1,
                    Frame::Msg {
                        subject, payload, ..
                    } => {
                        let n = ack_index(subject, first, next)?;
                        if std::mem::replace(&mut acked[(n - first) as usize], true) {
                            return Err(format!("publish {n} acked twice").into());
                        }
                        *seq_sum += pub_ack_seq(payload)? as u128;
                        done += 1;
                        if in_flight == 1 {
                            rtts.push(sent_at.elapsed().as_nanos() as u64);
                        }
                    }
                }
                Ok(())
            })?;
            for _ in 0..pongs {
                self.stream.write_all(b"PONG\r\n")?;
            }
        }
        self.sent = end;
        Ok(rtts)
    }

    /// A `$JS.API.<api>` request; the JSON reply, which must not be an error.
    pub fn api(&mut self, api: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let body = body.to_string();
        let request = format!("PUB $JS.API.{api} {API_REPLY} {}\r\n{body}\r\n", body.len());
        self.stream.write_all(request.as_bytes())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut reply = None;
        while reply.is_none() {
            let n = read_polling(&mut self.stream, &mut buf, self.deadline)?;
            let mut pongs = 0;
            self.inbound.feed(&buf[..n], |frame| {
                match frame {
                    Frame::Ping => pongs += 1,
                    Frame::Msg {
                        subject, payload, ..
                    } if subject == API_REPLY.as_bytes() => {
                        reply = Some(serde_json::from_slice::<serde_json::Value>(payload)?);
                    }
                    Frame::Msg { subject, .. } => {
                        let subject = String::from_utf8_lossy(subject);
                        return Err(format!("unexpected message on {subject}").into());
                    }
                }
                Ok(())
            })?;
            for _ in 0..pongs {
                self.stream.write_all(b"PONG\r\n")?;
            }
        }
        let reply = reply.unwrap_or_default();
        match reply.get("error") {
            Some(error) => Err(format!("$JS.API.{api}: {error}").into()),
            None => Ok(reply),
        }
    }

    /// Checks that the stream holds exactly the `total` messages published, sequences `1..=total`
    /// (from the acks: distinct, so their sum tells), and that the server agrees.
    pub fn check_stored(&mut self, total: u64) -> Result<()> {
        let expected = total as u128 * (total as u128 + 1) / 2;
        if self.seq_sum != expected {
            return Err(format!("acked sequences sum to {}, not {expected}", self.seq_sum).into());
        }
        let info = self.api(&format!("STREAM.INFO.{STREAM}"), &serde_json::json!({}))?;
        let state = &info["state"];
        if state["messages"] != total || state["last_seq"] != total {
            return Err(format!("stream state {state}, expected {total} messages").into());
        }
        Ok(())
    }
}

/// The publish index `n` in an ack's subject `_INBOX.js.<n>`, which must be in `first..next`.
fn ack_index(subject: &[u8], first: u64, next: u64) -> Result<u64> {
    let n = subject
        .strip_prefix(INBOX.as_bytes())
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
        .filter(|n| (first..next).contains(n));
    n.ok_or_else(|| {
        let subject = String::from_utf8_lossy(subject);
        format!("ack on {subject}, expected one of {INBOX}{first}..{next}").into()
    })
}

/// The sequence in a PubAck `{"stream":"BENCH","seq":N…}`; anything else is an error.
fn pub_ack_seq(payload: &[u8]) -> Result<u64> {
    let prefix = format!("{{\"stream\":\"{STREAM}\",\"seq\":");
    let seq = payload.strip_prefix(prefix.as_bytes()).and_then(|rest| {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    });
    seq.ok_or_else(|| {
        let payload = String::from_utf8_lossy(payload);
        format!("not a PubAck: {payload}").into()
    })
}

/// What the server sends that the publisher or a consumer acts on.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: &'a [u8],
        /// The header block of an `HMSG` (empty for `MSG`).
        headers: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
}

/// The server's frames from a stream read in arbitrary pieces: `MSG`, `HMSG` (only sent to a
/// connection that announces header support) and `PING`; `PONG`, `+OK` and `INFO` are skipped
/// and `-ERR` is an error.
#[derive(Default)]
pub struct Inbound {
    buf: Vec<u8>,
}

impl Inbound {
    /// Adds `piece` and hands every frame it completes to `f`.
    pub fn feed(&mut self, piece: &[u8], mut f: impl FnMut(Frame) -> Result<()>) -> Result<()> {
        self.buf.extend_from_slice(piece);
        let mut at = 0;
        while let Some(eol) = memchr::memmem::find(&self.buf[at..], b"\r\n") {
            let line = &self.buf[at..at + eol];
            let after = at + eol + 2;
            let (args, hmsg) = match (line.strip_prefix(b"MSG "), line.strip_prefix(b"HMSG ")) {
                (Some(args), _) => (Some(args), false),
                (_, Some(args)) => (Some(args), true),
                _ => (None, false),
            };
            if let Some(args) = args {
                let bad = || format!("bad message line {:?}", show(line));
                let fields: Vec<&[u8]> = args.split(|&b| b == b' ').collect();
                let (subject, sid, rest) = match fields.as_slice() {
                    [subject, sid, rest @ ..] => (*subject, *sid, rest),
                    _ => return Err(bad().into()),
                };
                let number = |n: &[u8]| -> Result<usize> { Ok(std::str::from_utf8(n)?.parse()?) };
                let (reply, hdr_len, len) = match (hmsg, rest) {
                    (false, [len]) => (&b""[..], 0, number(len)?),
                    (false, [reply, len]) => (*reply, 0, number(len)?),
                    (true, [hdr, len]) => (&b""[..], number(hdr)?, number(len)?),
                    (true, [reply, hdr, len]) => (*reply, number(hdr)?, number(len)?),
                    _ => return Err(bad().into()),
                };
                if hdr_len > len {
                    return Err(bad().into());
                }
                if self.buf.len() < after + len + 2 {
                    break;
                }
                f(Frame::Msg {
                    subject,
                    sid,
                    reply,
                    headers: &self.buf[after..after + hdr_len],
                    payload: &self.buf[after + hdr_len..after + len],
                })?;
                at = after + len + 2;
                continue;
            }
            if line == b"PING" {
                f(Frame::Ping)?;
            } else if line.starts_with(b"-ERR") {
                return Err(format!("server said {}", show(line)).into());
            } else if !(line == b"PONG" || line == b"+OK" || line.starts_with(b"INFO ")) {
                return Err(format!("unexpected line {:?}", show(line)).into());
            }
            at = after;
        }
        self.buf.drain(..at);
        Ok(())
    }
}

fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// Checks the frame parser on every split of a sample stream, and the ack parsing; panics on
/// a mismatch (run by `cargo test`, see `client::self_check`).
pub fn self_check() {
    let stream: &[u8] = b"INFO {}\r\nMSG _INBOX.js.7 1 26\r\n{\"stream\":\"BENCH\",\"seq\":9}\r\n\
        PING\r\nMSG _INBOX.js.api 1 rep 3\r\nx\r\n\r\nPONG\r\n\
        HMSG _INBOX.pull 2 16 16\r\nNATS/1.0 408\r\n\r\n\r\n\
        HMSG js.bench 3 $JS.ACK.B.C.1.2.2.0.0 12 14\r\nNATS/1.0\r\n\r\nab\r\n";
    let want = [
        Frame::Msg {
            subject: b"_INBOX.js.7",
            sid: b"1",
            reply: b"",
            headers: b"",
            payload: b"{\"stream\":\"BENCH\",\"seq\":9}",
        },
        Frame::Ping,
        Frame::Msg {
            subject: b"_INBOX.js.api",
            sid: b"1",
            reply: b"rep",
            headers: b"",
            payload: b"x\r\n",
        },
        Frame::Msg {
            subject: b"_INBOX.pull",
            sid: b"2",
            reply: b"",
            headers: b"NATS/1.0 408\r\n\r\n",
            payload: b"",
        },
        Frame::Msg {
            subject: b"js.bench",
            sid: b"3",
            reply: b"$JS.ACK.B.C.1.2.2.0.0",
            headers: b"NATS/1.0\r\n\r\n",
            payload: b"ab",
        },
    ];
    for cut in 0..=stream.len() {
        let mut inbound = Inbound::default();
        let mut got = Vec::new();
        for piece in [&stream[..cut], &stream[cut..]] {
            inbound
                .feed(piece, |frame| {
                    got.push(format!("{frame:?}"));
                    Ok(())
                })
                .expect("parses");
        }
        let want: Vec<String> = want.iter().map(|f| format!("{f:?}")).collect();
        assert_eq!(got, want, "cut at {cut}");
        assert!(inbound.buf.is_empty(), "cut at {cut}");
    }
    assert!(Inbound::default()
        .feed(b"-ERR 'x'\r\n", |_| Ok(()))
        .is_err());
    assert_eq!(ack_index(b"_INBOX.js.12", 10, 13).ok(), Some(12));
    assert!(ack_index(b"_INBOX.js.13", 10, 13).is_err());
    assert_eq!(
        pub_ack_seq(br#"{"stream":"BENCH","seq":42,"domain":"d"}"#).ok(),
        Some(42)
    );
    assert!(pub_ack_seq(br#"{"error":{"code":503}}"#).is_err());
}
