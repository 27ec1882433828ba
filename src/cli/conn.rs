//! A small blocking NATS client over [`std::net::TcpStream`] for the client subcommands.
//!
//! [`Conn::connect`] reads the server's INFO, sends CONNECT and waits for the PONG that answers
//! its PING, so a refused CONNECT (an `-ERR`) is an error there and then. After that the
//! connection publishes, subscribes and reads `MSG`/`HMSG` frames, answering the server's PINGs
//! on the way. Everything is one thread: a command writes, then reads until it has what it needs.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The port a URL without one means.
const DEFAULT_PORT: u16 = 4222;

/// Longest a control line from the server may be before the client gives up on the connection.
const MAX_LINE: usize = 1024 * 1024;

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Server URLs, comma separated (`nats://host:port`, `host:port` or `host`); tried in order.
    pub servers: String,
    /// `user` in CONNECT.
    pub user: Option<String>,
    /// `pass` in CONNECT.
    pub password: Option<String>,
    /// `auth_token` in CONNECT.
    pub token: Option<String>,
    /// Longest the TCP connect and the INFO/CONNECT/PING handshake may take, per server.
    pub timeout: Duration,
}

/// One server URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (4222 unless given).
    pub port: u16,
    /// `user` from `nats://user:pass@host`, or a token from `nats://token@host`.
    pub user: Option<String>,
    /// `pass` from `nats://user:pass@host`.
    pub password: Option<String>,
}

impl ServerUrl {
    /// Parses `nats://[user[:pass]@]host[:port]`, also without the scheme. TLS and WebSocket
    /// schemes are refused: the client cannot speak them yet.
    pub fn parse(url: &str) -> Result<ServerUrl, String> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            None => url,
            Some(("nats", rest)) => rest,
            Some((scheme @ ("tls" | "ws" | "wss"), _)) => {
                return Err(format!(
                    "{scheme}:// URLs are not supported yet by natter's client: {url}"
                ))
            }
            Some((scheme, _)) => return Err(format!("unknown URL scheme {scheme:?} in {url}")),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(info.to_string()), None),
            },
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("bad IPv6 address in {url}"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => port
                .parse()
                .map_err(|_| format!("bad port {port:?} in {url}"))?,
        };
        if host.is_empty() {
            return Err(format!("no host in {url}"));
        }
        Ok(ServerUrl {
            host: host.to_string(),
            port,
            user,
            password,
        })
    }

    /// `nats://host:port`, without credentials.
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("nats://[{}]:{}", self.host, self.port)
        } else {
            format!("nats://{}:{}", self.host, self.port)
        }
    }
}

/// A parsed `NATS/1.0` header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The status code on the first line (`503` for no responders), if any.
    pub status: Option<u16>,
    /// The text after the status code, if any.
    pub description: String,
    /// `Key: Value` lines in order; keys as sent.
    pub entries: Vec<(String, String)>,
}

impl Headers {
    /// Parses a header block (`NATS/1.0[ code[ text]]\r\n` then `Key: Value\r\n` lines).
    pub fn parse(block: &[u8]) -> Headers {
        let text = String::from_utf8_lossy(block);
        let mut lines = text.split("\r\n");
        let mut headers = Headers::default();
        if let Some(first) = lines.next() {
            let rest = first.strip_prefix("NATS/1.0").unwrap_or(first).trim();
            let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
            headers.status = code.parse().ok();
            headers.description = description.trim().to_string();
        }
        for line in lines.filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(':').unwrap_or((line, ""));
            headers
                .entries
                .push((key.to_string(), value.trim_start().to_string()));
        }
        headers
    }

    /// Encodes `NATS/1.0\r\n`, the entries, and the closing blank line.
    pub fn encode(entries: &[(String, String)]) -> Vec<u8> {
        let mut block = b"NATS/1.0\r\n".to_vec();
        for (key, value) in entries {
            block.extend_from_slice(key.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        block
    }

    /// Whether this is the server's "no responders" status: `503` with no body.
    pub fn is_no_responders(&self) -> bool {
        self.status == Some(503)
    }
}

/// Parses `key:value` (as `-H` takes it) into a header entry, checking it can be encoded.
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("header {arg:?} is not key:value"))?;
    let key = key.trim();
    let value = value.trim();
    if key.is_empty() || key.bytes().any(|b| b <= b' ' || b == 0x7f || b == b':') {
        return Err(format!("invalid header name {key:?}"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("invalid header value for {key:?}"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Subject it was published to.
    pub subject: String,
    /// Subscription id it was delivered for.
    pub sid: u64,
    /// Reply subject, if any.
    pub reply: Option<String>,
    /// Headers of an `HMSG`, `None` for a `MSG`.
    pub headers: Option<Headers>,
    /// The body (without headers).
    pub payload: Vec<u8>,
}

/// What [`Conn::read_op`] hands back; PING, `+OK` and INFO are dealt with inside.
enum Op {
    Msg(Msg),
    Pong,
}

/// A connected, handshaken client connection.
pub struct Conn {
    stream: TcpStream,
    /// Received and not yet parsed.
    buf: Vec<u8>,
    /// Messages that arrived while waiting for a PONG.
    pending: VecDeque<Msg>,
    /// The server's latest INFO.
    pub info: serde_json::Value,
    /// The URL of the server connected to (without credentials).
    pub url: String,
}

impl Conn {
    /// Connects to the first reachable server in `opts.servers` and completes the handshake.
    /// The error names every server that failed and why.
    pub fn connect(opts: &ConnectOptions) -> Result<Conn, String> {
        let mut errors = Vec::new();
        for url in opts.servers.split(',').filter(|u| !u.trim().is_empty()) {
            let url = ServerUrl::parse(url)?;
            match Conn::connect_one(&url, opts) {
                Ok(conn) => return Ok(conn),
                Err(err) => errors.push(format!("{}: {err}", url.display())),
            }
        }
        if errors.is_empty() {
            return Err("no server URL given".to_string());
        }
        Err(format!("cannot connect to {}", errors.join("; ")))
    }

    fn connect_one(url: &ServerUrl, opts: &ConnectOptions) -> Result<Conn, String> {
        let deadline = Instant::now() + opts.timeout;
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|err| err.to_string())?
            .collect();
        let mut last = String::from("no addresses");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, opts.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(err) => last = err.to_string(),
            }
        }
        let stream = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            pending: VecDeque::new(),
            info: serde_json::Value::Null,
            url: url.display(),
        };
        let line = conn
            .read_line(deadline)?
            .ok_or("timed out waiting for INFO")?;
        let json = line
            .strip_prefix("INFO ")
            .ok_or_else(|| format!("expected INFO, got {line:?}"))?;
        conn.info = serde_json::from_str(json).map_err(|err| format!("bad INFO: {err}"))?;
        if conn.info["tls_required"].as_bool() == Some(true) {
            return Err(
                "the server requires TLS, which natter's client does not support yet".into(),
            );
        }
        let connect = connect_json(url, opts);
        conn.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())?;
        match conn.wait_pong(deadline)? {
            true => Ok(conn),
            false => Err("timed out waiting for the server to accept CONNECT".into()),
        }
    }

    /// Whether the server accepts `HPUB` (its INFO says `"headers":true`).
    pub fn supports_headers(&self) -> bool {
        self.info["headers"].as_bool() == Some(true)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|err| format!("write to server: {err}"))
    }

    /// Sends `PUB`, or `HPUB` when there are headers.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        let mut frame = if headers.is_empty() {
            format!("PUB {subject}{reply} {}\r\n", body.len()).into_bytes()
        } else {
            if !self.supports_headers() {
                return Err("the server does not support headers".into());
            }
            let block = Headers::encode(headers);
            let total = block.len() + body.len();
            let mut frame =
                format!("HPUB {subject}{reply} {} {total}\r\n", block.len()).into_bytes();
            frame.extend_from_slice(&block);
            frame
        };
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame)
    }

    /// Sends `SUB subject [queue] sid`.
    pub fn subscribe(
        &mut self,
        subject: &str,
        queue: Option<&str>,
        sid: u64,
    ) -> Result<(), String> {
        let queue = queue.map(|q| format!(" {q}")).unwrap_or_default();
        self.send(format!("SUB {subject}{queue} {sid}\r\n").as_bytes())
    }

    /// Sends `UNSUB sid [max]`.
    pub fn unsubscribe(&mut self, sid: u64, max: Option<u64>) -> Result<(), String> {
        let max = max.map(|m| format!(" {m}")).unwrap_or_default();
        self.send(format!("UNSUB {sid}{max}\r\n").as_bytes())
    }

    /// Sends PING and waits for the PONG: everything sent before has been processed. Returns the
    /// round-trip time. Messages arriving meanwhile are kept for [`Conn::next_msg`].
    pub fn flush(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        self.send(b"PING\r\n")?;
        if self.wait_pong(start + timeout)? {
            Ok(start.elapsed())
        } else {
            Err(format!("no PONG from the server within {timeout:?}"))
        }
    }

    fn wait_pong(&mut self, deadline: Instant) -> Result<bool, String> {
        loop {
            match self.read_op(Some(deadline))? {
                None => return Ok(false),
                Some(Op::Pong) => return Ok(true),
                Some(Op::Msg(msg)) => self.pending.push_back(msg),
            }
        }
    }

    /// The next message, waiting until `deadline` (forever if `None`); `Ok(None)` on timeout.
    pub fn next_msg(&mut self, deadline: Option<Instant>) -> Result<Option<Msg>, String> {
        if let Some(msg) = self.pending.pop_front() {
            return Ok(Some(msg));
        }
        loop {
            match self.read_op(deadline)? {
                None => return Ok(None),
                Some(Op::Pong) => {}
                Some(Op::Msg(msg)) => return Ok(Some(msg)),
            }
        }
    }

    /// Reads more bytes; `Ok(false)` on timeout, an error when the server closed.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool, String> {
        let timeout = match deadline {
            None => None,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Ok(false),
            },
        };
        self.stream
            .set_read_timeout(timeout)
            .map_err(|err| err.to_string())?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(false)
                }
                Err(err) => return Err(format!("read from server: {err}")),
            }
        }
    }

    /// One `\r\n`-terminated line (without it); `Ok(None)` on timeout.
    fn read_line(&mut self, deadline: Instant) -> Result<Option<String>, String> {
        loop {
            if let Some(pos) = memchr::memmem::find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err("control line from the server too long".into());
            }
            if !self.fill(Some(deadline))? {
                return Ok(None);
            }
        }
    }

    /// The next MSG/HMSG or PONG; answers PING, skips `+OK`, takes new INFO, fails on `-ERR`.
    fn read_op(&mut self, deadline: Option<Instant>) -> Result<Option<Op>, String> {
        loop {
            if let Some(op) = self.parse_op()? {
                return Ok(Some(op));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Parses one complete operation from the buffer, handling the ones the caller never sees.
    fn parse_op(&mut self) -> Result<Option<Op>, String> {
        loop {
            let Some(end) = memchr::memmem::find(&self.buf, b"\r\n") else {
                if self.buf.len() > MAX_LINE {
                    return Err("control line from the server too long".into());
                }
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let (verb, args) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "PING" => {
                    self.buf.drain(..end + 2);
                    self.send(b"PONG\r\n")?;
                }
                "PONG" => {
                    self.buf.drain(..end + 2);
                    return Ok(Some(Op::Pong));
                }
                "+OK" => {
                    self.buf.drain(..end + 2);
                }
                "INFO" => {
                    self.buf.drain(..end + 2);
                    if let Ok(info) = serde_json::from_str(args) {
                        self.info = info;
                    }
                }
                "-ERR" => {
                    let text = args.trim().trim_matches('\'');
                    return Err(format!("server error: {text}"));
                }
                "MSG" | "HMSG" => {
                    let hmsg = verb.eq_ignore_ascii_case("HMSG");
                    let Some(msg) = self.parse_msg(end, args, hmsg)? else {
                        return Ok(None);
                    };
                    return Ok(Some(Op::Msg(msg)));
                }
                _ => return Err(format!("unexpected line from the server: {line:?}")),
            }
        }
    }

    /// A MSG/HMSG whose control line ends at `end`, once its payload has arrived.
    fn parse_msg(&mut self, end: usize, args: &str, hmsg: bool) -> Result<Option<Msg>, String> {
        let bad = || format!("malformed message line from the server: {args:?}");
        let parts: Vec<&str> = args.split_ascii_whitespace().collect();
        let (subject, sid, reply, hdr_len, total) = match (hmsg, parts.as_slice()) {
            (false, [s, sid, n]) => (*s, *sid, None, "0", *n),
            (false, [s, sid, r, n]) => (*s, *sid, Some(*r), "0", *n),
            (true, [s, sid, h, n]) => (*s, *sid, None, *h, *n),
            (true, [s, sid, r, h, n]) => (*s, *sid, Some(*r), *h, *n),
            _ => return Err(bad()),
        };
        let total: usize = total.parse().map_err(|_| bad())?;
        let hdr_len: usize = hdr_len.parse().map_err(|_| bad())?;
        let sid: u64 = sid.parse().map_err(|_| bad())?;
        if hdr_len > total {
            return Err(bad());
        }
        let start = end + 2;
        if self.buf.len() < start + total + 2 {
            return Ok(None);
        }
        if &self.buf[start + total..start + total + 2] != b"\r\n" {
            return Err("message from the server not followed by CRLF".into());
        }
        let headers = hmsg.then(|| Headers::parse(&self.buf[start..start + hdr_len]));
        let payload = self.buf[start + hdr_len..start + total].to_vec();
        let msg = Msg {
            subject: subject.to_string(),
            sid,
            reply: reply.map(str::to_string),
            headers,
            payload,
        };
        self.buf.drain(..start + total + 2);
        Ok(Some(msg))
    }
}

/// The CONNECT options: credentials from the flags win over those in the URL.
fn connect_json(url: &ServerUrl, opts: &ConnectOptions) -> serde_json::Value {
    let mut connect = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": false,
        "headers": true,
        "no_responders": true,
        "protocol": 1,
        "name": "natter-cli",
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
    });
    let password = opts.password.clone().or_else(|| url.password.clone());
    let user = opts.user.clone().or_else(|| url.user.clone());
    let mut set = |key: &str, value: String| connect[key] = serde_json::Value::String(value);
    match (user, password) {
        (user, Some(password)) => {
            if let Some(user) = user {
                set("user", user);
            }
            set("pass", password);
        }
        // `--user` alone is a user name; `nats://token@host` carries a token.
        (Some(user), None) if opts.user.is_some() => set("user", user),
        (Some(token), None) if opts.token.is_none() => set("auth_token", token),
        _ => {}
    }
    if let Some(token) = &opts.token {
        set("auth_token", token.clone());
    }
    connect
}

/// A new unique inbox subject, `_INBOX.` and 22 random letters and digits.
pub fn new_inbox() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..22)
        .map(|_| char::from(CHARS[fastrand::usize(..CHARS.len())]))
        .collect();
    format!("_INBOX.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ServerUrl::parse("nats://127.0.0.1:4333").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 4333));
        let u = ServerUrl::parse("localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 4222));
        let u = ServerUrl::parse("nats://a:b@h:1").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("a"), Some("b"))
        );
        let u = ServerUrl::parse("[::1]:5").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.display()),
            ("::1", 5, "nats://[::1]:5".into())
        );
        assert!(ServerUrl::parse("tls://h:1")
            .unwrap_err()
            .contains("not supported"));
        assert!(ServerUrl::parse("nats://h:x").is_err());
    }

    #[test]
    fn headers_round_trip() {
        let entries = vec![
            ("a".to_string(), "1".to_string()),
            ("B".into(), "x y".into()),
        ];
        let block = Headers::encode(&entries);
        assert_eq!(block, b"NATS/1.0\r\na: 1\r\nB: x y\r\n\r\n");
        let parsed = Headers::parse(&block);
        assert_eq!((parsed.status, parsed.entries), (None, entries));
        let status = Headers::parse(b"NATS/1.0 503\r\nNats-Subject: foo\r\n\r\n");
        assert!(status.is_no_responders());
        let status = Headers::parse(b"NATS/1.0 408 Request Timeout\r\n\r\n");
        assert_eq!(
            (status.status, status.description.as_str()),
            (Some(408), "Request Timeout")
        );
    }

    #[test]
    fn header_args() {
        assert_eq!(parse_header_arg("k:v").unwrap(), ("k".into(), "v".into()));
        assert_eq!(
            parse_header_arg("k: a:b").unwrap(),
            ("k".into(), "a:b".into())
        );
        assert!(parse_header_arg("novalue").is_err());
        assert!(parse_header_arg("bad key:v").is_err());
    }

    #[test]
    fn credentials_in_connect() {
        let url = ServerUrl::parse("nats://tok@h").unwrap();
        let json = connect_json(&url, &ConnectOptions::default());
        assert_eq!(json["auth_token"], "tok");
        let opts = ConnectOptions {
            user: Some("u".into()),
            password: Some("p".into()),
            ..ConnectOptions::default()
        };
        let json = connect_json(&ServerUrl::parse("h").unwrap(), &opts);
        assert_eq!(
            (json["user"].as_str(), json["pass"].as_str()),
            (Some("u"), Some("p"))
        );
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
    }
}
