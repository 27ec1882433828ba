//! The load generator's side of the wire: a blocking NATS connection over `std::net`, PUB
//! batches built once and written many times, and readers that only count bytes (every frame's
//! size is known in advance, so nothing is parsed or allocated per message).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Result;

/// How long one blocking read waits before the reader looks at its deadline again.
const POLL: Duration = Duration::from_millis(100);
/// Size of the pre-built PUB batches and of every read buffer.
const BATCH_BYTES: usize = 256 * 1024;

/// One client connection with `CONNECT` done.
pub struct Conn {
    pub stream: TcpStream,
}

impl Conn {
    /// Connects, sends `CONNECT` followed by `setup` (e.g. `SUB`s), and waits for the PONG that
    /// proves the server has processed all of it.
    pub fn open(port: u16, setup: &[u8], deadline: Instant) -> Result<Conn> {
        let connect = r#"CONNECT {"verbose":false,"pedantic":false,"echo":true,"protocol":1}"#;
        Conn::open_with(port, connect, setup, deadline)
    }

    /// As [`Conn::open`], announcing header support (the server may then send `HMSG`).
    pub fn open_headers(port: u16, setup: &[u8], deadline: Instant) -> Result<Conn> {
        let connect = r#"CONNECT {"verbose":false,"pedantic":false,"echo":true,"protocol":1,"headers":true,"no_responders":true}"#;
        Conn::open_with(port, connect, setup, deadline)
    }

    fn open_with(port: u16, connect: &str, setup: &[u8], deadline: Instant) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut conn = Conn { stream };
        let mut hello = connect.as_bytes().to_vec();
        hello.extend_from_slice(b"\r\n");
        hello.extend_from_slice(setup);
        conn.stream.write_all(&hello)?;
        conn.ping_pong(deadline)?;
        Ok(conn)
    }

    /// Sends `PING` and reads until `PONG` (nothing else may follow it; before it, only INFO).
    pub fn ping_pong(&mut self, deadline: Instant) -> Result<()> {
        self.stream.write_all(b"PING\r\n")?;
        let mut seen = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        while memchr::memmem::find(&seen, b"PONG\r\n").is_none() {
            let n = read_polling(&mut self.stream, &mut buf, deadline)?;
            seen.extend_from_slice(&buf[..n]);
            if let Some(at) = memchr::memmem::find(&seen, b"-ERR") {
                let line = String::from_utf8_lossy(&seen[at..]).trim().to_string();
                return Err(format!("server said {line}").into());
            }
        }
        Ok(())
    }
}

/// Reads once, retrying on time-outs until `deadline`; end of stream is an error.
pub fn read_polling(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => return Ok(n),
            Err(e) if is_timeout(&e) => {
                if Instant::now() > deadline {
                    return Err("timed out waiting for the server".into());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// `PUB subject [reply] len\r\npayload\r\n`.
pub fn pub_frame(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
    let mut frame = format!("PUB {subject}{reply} {}\r\n", payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\n");
    frame
}

/// Length of the `MSG subject sid [reply] len\r\npayload\r\n` frame a subscriber receives.
pub fn msg_frame_len(subject: &str, sid: &str, reply: Option<&str>, payload: usize) -> u64 {
    let reply = reply.map_or(0, |r| r.len() + 1);
    let header = format!("MSG {subject} {sid} {payload}\r\n").len() + reply;
    (header + payload + 2) as u64
}

/// A payload of `len` printable bytes.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A buffer of whole PUB frames that a publisher writes over and over.
pub struct PubBatch {
    bytes: Vec<u8>,
    frames: u64,
    frame_len: usize,
}

impl PubBatch {
    /// As many copies of one frame as fit in [`BATCH_BYTES`] (at least one).
    pub fn repeat(frame: &[u8]) -> PubBatch {
        let frames = (BATCH_BYTES / frame.len()).max(1);
        PubBatch {
            bytes: frame.repeat(frames),
            frames: frames as u64,
            frame_len: frame.len(),
        }
    }

    /// Distinct frames concatenated; only whole cycles of them can be published.
    pub fn cycle(frames: &[Vec<u8>]) -> PubBatch {
        PubBatch {
            bytes: frames.concat(),
            frames: frames.len() as u64,
            frame_len: 0,
        }
    }

    /// Writes `count` frames, whole batches then a partial one, each admitted by `window`.
    pub fn publish(&self, stream: &mut TcpStream, count: u64, window: &Window) -> Result<()> {
        for _ in 0..count / self.frames {
            window.admit(self.frames)?;
            stream.write_all(&self.bytes)?;
        }
        let rest = count % self.frames;
        if rest > 0 {
            if self.frame_len == 0 {
                return Err("a cycled batch only publishes whole cycles".into());
            }
            window.admit(rest)?;
            stream.write_all(&self.bytes[..rest as usize * self.frame_len])?;
        }
        Ok(())
    }
}

/// End-to-end flow control shared by a run's publishers: before writing a batch, a publisher
/// waits while any subscriber would fall more than `max_lag` bytes behind. Without it a server
/// that routes faster than a subscriber reads must either queue without bound, stall the
/// publisher (nats-server) or drop the subscriber as a slow consumer; with it, the bench
/// measures the throughput the whole path sustains.
pub struct Window<'a> {
    groups: &'a [Expected],
    /// Messages the whole run publishes, to which each group's expected bytes correspond.
    total: u64,
    /// Messages admitted so far, by all publishers.
    admitted: AtomicU64,
    /// `None` floods: no waiting at all.
    max_lag: Option<u64>,
    deadline: Instant,
}

impl<'a> Window<'a> {
    pub fn new(
        groups: &'a [Expected],
        total: u64,
        max_lag: Option<u64>,
        deadline: Instant,
    ) -> Self {
        Window {
            groups,
            total,
            admitted: AtomicU64::new(0),
            max_lag,
            deadline,
        }
    }

    /// Waits until `count` more messages can be published.
    fn admit(&self, count: u64) -> Result<()> {
        let admitted = self.admitted.fetch_add(count, Ordering::Relaxed) + count;
        let Some(max_lag) = self.max_lag else {
            return Ok(());
        };
        while self.groups.iter().any(|group| {
            let due = group.bytes as u128 * admitted as u128 / self.total as u128;
            due > (group.received() + max_lag) as u128
        }) {
            if Instant::now() > self.deadline {
                return Err("timed out waiting for subscribers to catch up".into());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }
}

/// Bytes one or more subscribers (a queue group shares one) must receive, and how many they have.
pub struct Expected {
    pub bytes: u64,
    received: AtomicU64,
    /// Successful reads, to show how well the server batches its writes.
    reads: AtomicU64,
}

impl Expected {
    pub fn new(bytes: u64) -> Expected {
        Expected {
            bytes,
            received: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Mean bytes per read over `groups`: small reads mean the server wrote in small pieces,
    /// which costs the load generator CPU.
    pub fn bytes_per_read(groups: &[Expected]) -> f64 {
        let bytes: u64 = groups.iter().map(Expected::received).sum();
        let reads: u64 = groups.iter().map(|g| g.reads.load(Ordering::Relaxed)).sum();
        bytes as f64 / reads.max(1) as f64
    }

    /// Fails unless exactly the expected bytes arrived.
    pub fn check(&self, what: &str) -> Result<()> {
        match self.received() {
            got if got == self.bytes => Ok(()),
            got => Err(format!("{what}: received {got} bytes, expected {}", self.bytes).into()),
        }
    }
}

/// Reads until `expected` is met (by this reader or its group), counting bytes only and
/// answering server PINGs. Returns when this reader last received data, i.e. when its share of
/// the messages had all arrived.
pub fn drain(stream: &mut TcpStream, expected: &Expected, deadline: Instant) -> Result<Instant> {
    let mut buf = vec![0u8; BATCH_BYTES];
    let mut pings = PingScanner::default();
    let mut last = Instant::now();
    while expected.received() < expected.bytes {
        match stream.read(&mut buf) {
            Ok(0) => return Err(short_by(expected, "server closed the connection")),
            Ok(n) => {
                let payload = pings.answer(stream, &buf[..n])?;
                expected.received.fetch_add(payload, Ordering::Relaxed);
                expected.reads.fetch_add(1, Ordering::Relaxed);
                last = Instant::now();
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() > deadline {
                    return Err(short_by(expected, "timed out"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(last)
}

/// Finds the server's `PING`s in a stream read in arbitrary pieces. nats-server pings every
/// client two seconds after it connects. The frames the bench receives cannot contain
/// `PING\r\n` (subjects and payloads are lowercase), so a byte search finds exactly the PINGs.
#[derive(Default)]
pub struct PingScanner {
    /// How many leading bytes of `PING\r\n` the previous piece ended with.
    partial: usize,
}

const PING: &[u8] = b"PING\r\n";

impl PingScanner {
    /// Answers each PING completed in `piece` with a PONG; how many bytes were not PINGs.
    pub fn answer(&mut self, stream: &mut TcpStream, piece: &[u8]) -> Result<u64> {
        let (pings, other) = self.scan(piece);
        for _ in 0..pings {
            stream.write_all(b"PONG\r\n")?;
        }
        Ok(other)
    }

    /// The PINGs completed in `piece` (one may have begun in the previous piece) and the number
    /// of bytes that belong to no PING. A PING's bytes are never counted, even when split.
    fn scan(&mut self, piece: &[u8]) -> (u64, u64) {
        let (mut pings, mut ping_bytes, mut restored, mut from) = (0, 0, 0, 0);
        if self.partial > 0 {
            let rest = &PING[self.partial..];
            let n = rest.len().min(piece.len());
            if piece[..n] != rest[..n] {
                // Not a PING after all: the held-back bytes were data.
                restored = std::mem::take(&mut self.partial);
            } else if n < rest.len() {
                self.partial += n;
                return (0, 0);
            } else {
                (pings, ping_bytes, from, self.partial) = (1, n, n, 0);
            }
        }
        let piece = &piece[from..];
        let whole = memchr::memmem::find_iter(piece, PING).count();
        self.partial = (1..PING.len())
            .rev()
            .find(|&k| piece.ends_with(&PING[..k]))
            .unwrap_or(0);
        ping_bytes += whole * PING.len() + self.partial;
        let other = (from + piece.len() + restored - ping_bytes) as u64;
        (pings + whole as u64, other)
    }
}

fn short_by(expected: &Expected, why: &str) -> crate::Error {
    let (got, want) = (expected.received(), expected.bytes);
    format!("{why} after {got} of {want} bytes").into()
}

/// Checks the PING scanner on every split of a sample stream; panics on a mismatch. (A
/// `harness = false` bench runs no `#[test]`s, so `cargo test` calls this through `main`.)
pub fn self_check() {
    let stream = b"MSG a 1 2\r\nPI\r\nPING\r\nMSG a 1 2\r\nab\r\nPING\r\nMSG b 1 0\r\n\r\n";
    for cut in 0..stream.len() {
        let mut scanner = PingScanner::default();
        let (a, b) = stream.split_at(cut);
        let ((pings_a, other_a), (pings_b, other_b)) = (scanner.scan(a), scanner.scan(b));
        assert_eq!(pings_a + pings_b, 2, "cut at {cut}");
        assert_eq!(other_a + other_b, stream.len() as u64 - 12, "cut at {cut}");
    }
    assert_eq!(
        msg_frame_len("w.7.x", "7", None, 16),
        b"MSG w.7.x 7 16\r\n".len() as u64 + 18
    );
}
