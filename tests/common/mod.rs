//! Shared harness for the black-box tests: start a server binary as a child process and talk to it
//! over raw TCP the way a telnet session would.
//!
//! The binary is `$NATTER_TEST_SERVER` when set (so the same tests can judge nats-server 2.15), else
//! the `natter` binary Cargo built for this test run. Every server gets its own temporary directory,
//! listens on a random port (`-p -1`) and reports it through `--ports_file_dir`.

#![allow(dead_code)]

pub mod certs;
pub mod jwt;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long an expectation waits for bytes before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The server binary under test.
pub fn server_bin() -> PathBuf {
    match std::env::var_os("NATTER_TEST_SERVER") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_natter")),
    }
}

/// True when the binary under test is natter, for the few tests of deliberately different behaviour.
pub fn is_natter() -> bool {
    server_bin()
        .file_name()
        .is_some_and(|name| name.to_string_lossy().contains("natter"))
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
pub fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("natter-test-{}-{}", std::process::id(), n));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running server; killed and reaped on drop.
pub struct Server {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// A server with default settings.
    pub fn start() -> Server {
        Server::start_with(None, &[])
    }

    /// A server reading `config` (written to `server.conf` in its directory).
    pub fn with_config(config: &str) -> Server {
        Server::start_with(Some(config), &[])
    }

    /// A server with an optional config file and extra command-line arguments.
    pub fn start_with(config: Option<&str>, extra_args: &[&str]) -> Server {
        let dir = temp_dir();
        let mut cmd = Command::new(server_bin());
        if let Some(config) = config {
            let path = dir.join("server.conf");
            std::fs::write(&path, config).expect("write config");
            cmd.arg("-c").arg(&path);
        }
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(&dir)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
        let child = cmd.spawn().expect("spawn server binary");
        let mut server = Server {
            child,
            dir,
            port: 0,
        };
        server.port = server.wait_for_port();
        server
    }

    fn wait_for_port(&mut self) -> u16 {
        let suffix = format!("_{}.ports", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "server exited early with {status}\nstdout:\n{}\nstderr:\n{}",
                    self.output("stdout"),
                    self.output("stderr")
                );
            }
            if let Some(port) = read_ports_file(&self.dir, &suffix) {
                return port;
            }
            if Instant::now() > deadline {
                panic!(
                    "no ports file in {} after 10s\nstderr:\n{}",
                    self.dir.display(),
                    self.output("stderr")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The monitoring address (`host:port`) from the server's ports file.
    pub fn monitor_addr(&self) -> String {
        let suffix = format!("_{}.ports", self.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = std::fs::read_dir(self.dir())
                .expect("server dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
                .find_map(|e| {
                    let json: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
                    let url = json["monitoring"][0].as_str()?;
                    Some(url.strip_prefix("http://")?.to_string())
                });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no monitoring URL in the ports file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the server to exit by itself; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own temporary directory (config, ports file, captured output).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Captured `stdout` or `stderr` of the server so far.
    pub fn output(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.join(which)).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A raw client that has read the server's INFO line.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// A raw client that has read INFO and sent `CONNECT {"verbose":false}`, synchronised by PING/PONG.
    pub fn quiet_client(&self) -> Client {
        let mut c = self.client();
        c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n");
        c.expect(b"PONG\r\n");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_ports_file(dir: &Path, suffix: &str) -> Option<u16> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(suffix) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = json["nats"][0].as_str()?;
        return url.rsplit(':').next()?.parse().ok();
    }
    None
}

/// Runs the server binary with `args` to completion; fails if it is still running after
/// [`TIMEOUT`].
pub fn run_server(args: &[&str]) -> Output {
    let mut child = Command::new(server_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server binary");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{args:?} still running after {TIMEOUT:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Runs the server binary on `config` (plus `extra` arguments) until it exits by itself, as it
/// must for a bad config or `-t`.
pub fn run_config(config: &str, extra: &[&str]) -> Output {
    let dir = temp_dir();
    let path = dir.join("server.conf");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("UTF-8 temp path");
    let mut args = vec!["-c", path, "-a", "127.0.0.1", "-p", "-1"];
    args.extend_from_slice(extra);
    let out = run_server(&args);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A finished process's stdout and stderr, as text.
pub fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Bytes shown readably in failure messages.
pub fn escaped(bytes: &[u8]) -> String {
    const LIMIT: usize = 2000;
    let shown = &bytes[..bytes.len().min(LIMIT)];
    let mut s: String = shown.escape_ascii().to_string();
    if bytes.len() > LIMIT {
        s.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    s
}

/// One `MSG`/`HMSG` frame as a subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: String,
    pub reply: Option<String>,
    /// The header block of an `HMSG`, `None` for a `MSG`.
    pub headers: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Msg {
    /// A plain `MSG` (no reply subject, no headers).
    pub fn new(subject: &str, sid: &str, payload: &[u8]) -> Msg {
        Msg {
            subject: subject.into(),
            sid: sid.into(),
            reply: None,
            headers: None,
            payload: payload.to_vec(),
        }
    }
}

/// Awaits `fut` for at most 5 s, so a broken server fails a test instead of hanging it.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Connects async-nats with `opts`, bounded by [`within`].
pub async fn connect_with(
    server: &Server,
    opts: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    within("connect", opts.connect(server.url())).await
}

/// Texts of async-nats client events (server errors among them), as [`with_events`] collects them.
pub type Events = tokio::sync::mpsc::UnboundedReceiver<String>;

/// `opts` reporting every client event's text to the returned receiver.
pub fn with_events(opts: async_nats::ConnectOptions) -> (async_nats::ConnectOptions, Events) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = opts.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event.to_string());
        }
    });
    (opts, rx)
}

/// The next event whose text contains `needle`, skipping others (bounded by [`within`]).
pub async fn next_event_containing(events: &mut Events, needle: &str) -> String {
    within(&format!("an event containing {needle:?}"), async {
        loop {
            let e = events.recv().await.expect("event stream open");
            if e.contains(needle) {
                return e;
            }
        }
    })
    .await
}

/// A round trip through the server: when this returns, the server has processed everything
/// `client` sent before. (`Client::flush` only flushes the socket; it does not wait for the server.)
pub async fn sync(client: &async_nats::Client) {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, bytes::Bytes::new()).await.unwrap();
    within("sync round trip", probe.next())
        .await
        .expect("probe message");
}

/// A synchronous raw-socket client: bytes out, exact bytes expected back.
pub struct Client {
    stream: TcpStream,
    /// Received and not yet consumed.
    buf: Vec<u8>,
    /// The INFO line the server greeted us with, parsed.
    pub info: serde_json::Value,
}

impl Client {
    /// Connect and read the INFO line.
    pub fn connect(addr: &str) -> Client {
        let mut c = Client::connect_raw(addr);
        let line = c.expect_line_starting_with("INFO ");
        c.info = serde_json::from_str(&line["INFO ".len()..]).expect("INFO is JSON");
        c
    }

    /// Connect without reading anything.
    pub fn connect_raw(addr: &str) -> Client {
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect {addr}: {e}"),
            }
        };
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
            info: serde_json::Value::Null,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Like `send`, but a failed write (the server already closed) is not an error.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Read once into `buf`, waiting at most until `deadline`. Ok(false) on EOF, Err on timeout.
    fn fill(&mut self, deadline: Instant) -> Result<bool, std::io::Error> {
        let now = Instant::now();
        if now >= deadline {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "deadline"));
        }
        self.stream.set_read_timeout(Some(deadline - now))?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(std::io::Error::new(ErrorKind::TimedOut, "deadline"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read until exactly `expected` has arrived; panic on a mismatch, EOF or timeout.
    pub fn expect(&mut self, expected: &[u8]) {
        self.expect_within(expected, TIMEOUT)
    }

    pub fn expect_within(&mut self, expected: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.buf.len().min(expected.len());
            if self.buf[..n] != expected[..n] {
                panic!(
                    "unexpected bytes from server\nexpected: {}\n     got: {}",
                    escaped(expected),
                    escaped(&self.buf)
                );
            }
            if n == expected.len() {
                self.buf.drain(..n);
                return;
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => panic!(
                    "connection closed\nexpected: {}\n     got: {}",
                    escaped(expected),
                    escaped(&self.buf)
                ),
                Err(e) => panic!(
                    "{e} while waiting\nexpected: {}\n     got: {}",
                    escaped(expected),
                    escaped(&self.buf)
                ),
            }
        }
    }

    /// Whatever has arrived (waiting up to `timeout` for at least one byte), taken from the buffer.
    /// Panics on EOF, error or timeout.
    pub fn take_bytes(&mut self, timeout: Duration) -> Vec<u8> {
        if self.buf.is_empty() {
            match self.fill(Instant::now() + timeout) {
                Ok(true) => {}
                Ok(false) => panic!("connection closed"),
                Err(e) => panic!("{e} waiting for data"),
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Like [`Client::take_bytes`], but `None` on EOF, error or timeout instead of a panic.
    pub fn try_take_bytes(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        if self.buf.is_empty() && !matches!(self.fill(Instant::now() + timeout), Ok(true)) {
            return None;
        }
        Some(std::mem::take(&mut self.buf))
    }

    /// Read one `\r\n`-terminated line (returned without the terminator).
    pub fn read_line(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return line;
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => panic!("connection closed; partial line: {}", escaped(&self.buf)),
                Err(e) => panic!("{e} waiting for a line; got: {}", escaped(&self.buf)),
            }
        }
    }

    /// Like `read_line`, but `None` when the connection ends (EOF or reset) first.
    pub fn try_read_line(&mut self) -> Option<String> {
        let deadline = Instant::now() + TIMEOUT;
        while !self.buf.windows(2).any(|w| w == b"\r\n") {
            match self.fill(deadline) {
                Ok(true) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    panic!("timed out waiting for a line; got: {}", escaped(&self.buf))
                }
                Ok(false) | Err(_) => return None,
            }
        }
        Some(self.read_line())
    }

    /// Read one line and check its start; returns the whole line.
    pub fn expect_line_starting_with(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "expected a line starting with {prefix:?}, got {line:?}"
        );
        line
    }

    fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => panic!(
                    "connection closed; wanted {n} bytes, have {}",
                    self.buf.len()
                ),
                Err(e) => panic!("{e}: wanted {n} bytes, have {}", self.buf.len()),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Read one `MSG` or `HMSG` frame, checking its framing (sizes and trailing `\r\n`).
    /// A PING from the server (nats-server sends one ~2 s after connecting) is answered and skipped.
    pub fn read_msg(&mut self) -> Msg {
        let mut line = self.read_line();
        while line == "PING" {
            self.send(b"PONG\r\n");
            line = self.read_line();
        }
        let args: Vec<&str> = line.split(' ').collect();
        let (subject, sid, reply, hdr_len, total) = match args.as_slice() {
            ["MSG", s, sid, n] => (s, sid, None, None, n),
            ["MSG", s, sid, r, n] => (s, sid, Some(r), None, n),
            ["HMSG", s, sid, h, n] => (s, sid, None, Some(h), n),
            ["HMSG", s, sid, r, h, n] => (s, sid, Some(r), Some(h), n),
            _ => panic!("expected a MSG or HMSG line, got {line:?}"),
        };
        let total: usize = total.parse().expect("size");
        let hdr_len: Option<usize> = hdr_len.map(|h| h.parse().expect("header size"));
        let mut body = self.read_exact_bytes(total + 2);
        assert_eq!(&body[total..], b"\r\n", "frame not followed by CRLF");
        body.truncate(total);
        let headers = hdr_len.map(|h| body.drain(..h).collect());
        Msg {
            subject: subject.to_string(),
            sid: sid.to_string(),
            reply: reply.map(|r| r.to_string()),
            headers,
            payload: body,
        }
    }

    /// Send PING and wait up to `timeout` for the PONG; server PINGs on the way are answered.
    /// Anything else is a failure.
    pub fn ping_pong_within(&mut self, timeout: Duration) {
        self.send(b"PING\r\n");
        let deadline = Instant::now() + timeout;
        loop {
            while !self.buf.windows(2).any(|w| w == b"\r\n") {
                match self.fill(deadline) {
                    Ok(true) => {}
                    Ok(false) => panic!("closed while waiting for PONG"),
                    Err(e) => panic!("{e} waiting for PONG; got {}", escaped(&self.buf)),
                }
            }
            match self.read_line().as_str() {
                "PONG" => return,
                "PING" => self.send(b"PONG\r\n"),
                other => panic!("expected PONG, got {other:?}"),
            }
        }
    }

    /// Read frames until the server answers our PING; returns the messages that arrived before it.
    pub fn msgs_until_pong(&mut self) -> Vec<Msg> {
        self.send(b"PING\r\n");
        let mut msgs = Vec::new();
        loop {
            let deadline = Instant::now() + TIMEOUT;
            while self.buf.len() < 4 {
                match self.fill(deadline) {
                    Ok(true) => {}
                    Ok(false) => panic!("closed while waiting for PONG"),
                    Err(e) => panic!("{e} waiting for PONG; got {}", escaped(&self.buf)),
                }
            }
            if self.buf.starts_with(b"PONG") {
                self.expect(b"PONG\r\n");
                return msgs;
            }
            if self.buf.starts_with(b"PING") {
                self.expect(b"PING\r\n");
                self.send(b"PONG\r\n");
                continue;
            }
            msgs.push(self.read_msg());
        }
    }

    /// The connection must end (EOF or reset) within the timeout. Only `-ERR` lines may arrive
    /// before the end; they are returned.
    pub fn expect_closed(&mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if e.kind() == ErrorKind::TimedOut => panic!(
                    "connection still open after {TIMEOUT:?}; got: {}",
                    escaped(&self.buf)
                ),
                Err(_) => break, // reset
            }
        }
        let rest = std::mem::take(&mut self.buf);
        let text = String::from_utf8_lossy(&rest).into_owned();
        let lines: Vec<String> = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        for line in &lines {
            assert!(
                line.starts_with("-ERR "),
                "only -ERR may precede the close, got {}",
                escaped(&rest)
            );
        }
        lines
    }

    /// Read and discard everything until the connection ends; returns how many bytes arrived.
    pub fn expect_closed_discarding(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut total = self.buf.len();
        self.buf.clear();
        loop {
            match self.fill(deadline) {
                Ok(true) => {
                    total += self.buf.len();
                    self.buf.clear();
                }
                Ok(false) => return total,
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    panic!("connection still open after {timeout:?} ({total} bytes read)")
                }
                Err(_) => return total,
            }
        }
    }

    /// Nothing at all may arrive for `d`, and the connection must stay open.
    pub fn expect_nothing(&mut self, d: Duration) {
        assert!(
            self.buf.is_empty(),
            "expected nothing, have {}",
            escaped(&self.buf)
        );
        let deadline = Instant::now() + d;
        match self.fill(deadline) {
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            Ok(true) => panic!("expected nothing, got {}", escaped(&self.buf)),
            Ok(false) => panic!("expected nothing, but the connection closed"),
            Err(e) => panic!("expected nothing, got error {e}"),
        }
        assert!(
            self.buf.is_empty(),
            "expected nothing, have {}",
            escaped(&self.buf)
        );
    }

    /// Close our write side, e.g. to show the server the client is gone.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
