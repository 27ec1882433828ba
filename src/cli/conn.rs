//! A small blocking NATS client for the client subcommands, over a [`TcpStream`] or TLS on one
//! (rustls, blocking).
//!
//! [`Conn::connect`] reads the server's INFO (after the TLS handshake with `--tlsfirst`),
//! upgrades to TLS when the URL, the options or the server ask for it, sends CONNECT (signing
//! the INFO nonce for creds and nkeys) and waits for the PONG that answers its PING, so a
//! refused CONNECT (an `-ERR`) is an error there and then. After that the connection publishes,
//! subscribes and reads `MSG`/`HMSG` frames, answering the server's PINGs on the way.
//! Everything is one thread: a command writes, then reads until it has what it needs.

use std::collections::VecDeque;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The port a URL without one means.
const DEFAULT_PORT: u16 = 4222;

/// Longest a control line from the server may be before the client gives up on the connection.
const MAX_LINE: usize = 1024 * 1024;

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Server URLs, comma separated (`nats://host:port`, `tls://host:port`, `host:port` or
    /// `host`); tried in order.
    pub servers: String,
    /// `user` in CONNECT.
    pub user: Option<String>,
    /// `pass` in CONNECT.
    pub password: Option<String>,
    /// `auth_token` in CONNECT.
    pub token: Option<String>,
    /// An nkey (with a user JWT from a creds file, or bare) that signs the server's nonce.
    pub nkey: Option<NkeyAuth>,
    /// TLS settings.
    pub tls: TlsOptions,
    /// Longest the TCP connect and the INFO/TLS/CONNECT/PING handshake may take, per server.
    pub timeout: Duration,
}

/// How the client does TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The rustls configuration: the CA from `--tlsca`, and the client certificate if given.
    /// `None` without `--tlsca`: there is no system trust store, so TLS then fails.
    pub config: Option<Arc<ClientConfig>>,
    /// A TLS option was given: never talk plain text, even to a server that does not ask for TLS.
    pub required: bool,
    /// Handshake before the server's INFO (for servers with `handshake_first`).
    pub first: bool,
}

/// Nkey authentication: the seed signs the server's nonce; CONNECT carries the user JWT (from a
/// creds file) or, without one, the public key (`nkey`).
#[derive(Clone)]
pub struct NkeyAuth {
    /// The user JWT of a creds file; `None` for a bare nkey.
    pub jwt: Option<String>,
    /// The user's nkey seed (`SU...`).
    pub seed: String,
}

impl fmt::Debug for NkeyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NkeyAuth")
            .field("jwt", &self.jwt.as_ref().map(|_| "<jwt>"))
            .field("seed", &"<secret>")
            .finish()
    }
}

impl NkeyAuth {
    /// Reads a `.creds` file (user JWT and nkey seed, as nsc writes them).
    pub fn from_creds_file(path: &Path) -> Result<NkeyAuth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--creds {}: {err}", path.display()))?;
        let (jwt, seed) = crate::auth::jwt::parse_creds(&text)
            .map_err(|err| format!("--creds {}: {err}", path.display()))?;
        Ok(NkeyAuth {
            jwt: Some(jwt),
            seed,
        })
    }

    /// Reads a file holding an nkey seed: the first line that is a valid seed (so a bare seed,
    /// `nk -gen user` output or a decorated file all work).
    pub fn from_seed_file(path: &Path) -> Result<NkeyAuth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--nkey {}: {err}", path.display()))?;
        let seed = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with('S') && nkeys::KeyPair::from_seed(line).is_ok())
            .ok_or_else(|| format!("--nkey {}: no nkey seed in the file", path.display()))?;
        Ok(NkeyAuth {
            jwt: None,
            seed: seed.to_string(),
        })
    }

    /// The public key (`U...`) and the base64url (unpadded) signature of `nonce`.
    fn sign(&self, nonce: &[u8]) -> Result<(String, String), String> {
        let kp =
            nkeys::KeyPair::from_seed(&self.seed).map_err(|err| format!("nkey seed: {err}"))?;
        let sig = kp
            .sign(nonce)
            .map_err(|err| format!("cannot sign the server's nonce: {err}"))?;
        Ok((kp.public_key(), URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Builds the rustls client configuration: trust the certificates in `ca` (PEM), and present
/// `cert`/`key` (PEM) when given.
pub fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = read_certs("--tlsca", ca)?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| format!("--tlsca {}: {err}", ca.display()))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs("--tlscert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                format!(
                    "--tlskey {}: no private key read: {}",
                    key.display(),
                    pem_error(err)
                )
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|err| format!("--tlscert/--tlskey: {err}"))?
        }
    };
    Ok(Arc::new(config))
}

/// The PEM certificates in `path`; at least one.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{flag} {}: {}", path.display(), pem_error(err)))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(err: rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(err) => err.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind".into(),
        err => format!("bad PEM: {err:?}"),
    }
}

/// The byte stream under the protocol: plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// How a `-ERR` from the server is reported.
const SERVER_SAID: &str = "server said: ";

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
    /// A `tls://` URL: TLS is required.
    pub tls: bool,
}

impl ServerUrl {
    /// Parses `nats://[user[:pass]@]host[:port]`, `tls://...` (TLS required), also without the
    /// scheme. WebSocket schemes are refused: the client cannot speak them yet.
    pub fn parse(url: &str) -> Result<ServerUrl, String> {
        let url = url.trim();
        let (tls, rest) = match url.split_once("://") {
            None => (false, url),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tls") => (true, rest),
            Some((scheme @ ("ws" | "wss"), _)) => {
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
            tls,
        })
    }

    /// `nats://host:port` (`tls://` for a TLS URL), without credentials.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
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
    stream: Stream,
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
    /// The error names every server that failed and why; when the only server refused the
    /// CONNECT, it is just the server's `-ERR` text (`server said: Authorization Violation`).
    pub fn connect(opts: &ConnectOptions) -> Result<Conn, String> {
        let mut errors = Vec::new();
        for url in opts.servers.split(',').filter(|u| !u.trim().is_empty()) {
            let url = ServerUrl::parse(url)?;
            match Conn::connect_one(&url, opts) {
                Ok(conn) => return Ok(conn),
                Err(err) => errors.push((url.display(), err)),
            }
        }
        match errors.as_slice() {
            [] => Err("no server URL given".to_string()),
            [(_, err)] if err.starts_with(SERVER_SAID) => Err(err.clone()),
            _ => {
                let all: Vec<String> = errors
                    .iter()
                    .map(|(url, err)| format!("{url}: {err}"))
                    .collect();
                Err(format!("cannot connect to {}", all.join("; ")))
            }
        }
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
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            pending: VecDeque::new(),
            info: serde_json::Value::Null,
            url: url.display(),
        };
        if opts.tls.first {
            conn = conn.upgrade(url, opts, deadline, "--tlsfirst")?;
        }
        let line = conn.read_line(deadline)?.ok_or(if opts.tls.first {
            "timed out waiting for INFO"
        } else {
            "timed out waiting for INFO (a server with TLS handshake_first needs --tlsfirst)"
        })?;
        let json = line
            .strip_prefix("INFO ")
            .ok_or_else(|| format!("expected INFO, got {line:?}"))?;
        conn.info = serde_json::from_str(json).map_err(|err| format!("bad INFO: {err}"))?;
        if !conn.is_tls() {
            let server_requires = conn.info["tls_required"].as_bool() == Some(true);
            let server_offers =
                server_requires || conn.info["tls_available"].as_bool() == Some(true);
            let why = if server_requires {
                Some("the server requires it")
            } else if url.tls {
                Some("tls:// URL")
            } else if opts.tls.required {
                Some("TLS options given")
            } else {
                None
            };
            if let Some(why) = why {
                if !server_offers {
                    return Err(format!(
                        "the server does not offer TLS ({why}); not connecting in plain text"
                    ));
                }
                if !conn.buf.is_empty() {
                    return Err("unexpected data from the server before the TLS handshake".into());
                }
                conn = conn.upgrade(url, opts, deadline, why)?;
            }
        }
        let connect = connect_json(url, opts, &conn.info, conn.is_tls())?;
        conn.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())?;
        match conn.wait_pong(deadline)? {
            true => Ok(conn),
            false => Err("timed out waiting for the server to accept CONNECT".into()),
        }
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Replaces the plain TCP stream by TLS over it, handshaking before `deadline`. `why` says
    /// what asked for TLS, for the error when there is no CA to verify the server with.
    fn upgrade(
        self,
        url: &ServerUrl,
        opts: &ConnectOptions,
        deadline: Instant,
        why: &str,
    ) -> Result<Conn, String> {
        let Some(config) = opts.tls.config.clone() else {
            return Err(format!(
                "TLS ({why}) needs the CA certificate that signed the server's certificate: \
                 give it with --tlsca FILE (natter's client has no system trust store)"
            ));
        };
        let Stream::Plain(mut tcp) = self.stream else {
            return Ok(self);
        };
        let name = ServerName::try_from(url.host.clone())
            .map_err(|err| format!("TLS server name {:?}: {err}", url.host))?;
        let mut tls = ClientConnection::new(config, name).map_err(|err| format!("TLS: {err}"))?;
        while tls.is_handshaking() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or("timed out in the TLS handshake")?;
            tcp.set_read_timeout(Some(left))
                .map_err(|err| err.to_string())?;
            match tls.complete_io(&mut tcp) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => {
                    return Err("the server closed the connection in the TLS handshake".into())
                }
                Err(err) if opts.tls.first => {
                    return Err(format!(
                        "TLS handshake: {err} (--tlsfirst: is the server's handshake_first on?)"
                    ))
                }
                Err(err) => return Err(format!("TLS handshake: {err}")),
            }
        }
        Ok(Conn {
            stream: Stream::Tls(Box::new(StreamOwned::new(tls, tcp))),
            ..self
        })
    }

    /// Whether the server accepts `HPUB` (its INFO says `"headers":true`).
    pub fn supports_headers(&self) -> bool {
        self.info["headers"].as_bool() == Some(true)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
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
    /// Puts messages taken out of turn back in front of the queue, in their order.
    pub fn requeue(&mut self, msgs: Vec<Msg>) {
        for msg in msgs.into_iter().rev() {
            self.pending.push_front(msg);
        }
    }

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
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let timeout = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(false),
                },
            };
            self.stream
                .tcp()
                .set_read_timeout(timeout)
                .map_err(|err| err.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                // A timeout, or (TLS) only part of a record so far: go on until the deadline.
                Err(err)
                    if matches!(
                        err.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => {
                    return Err("connection closed by the server".into())
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
                    return Err(format!("{SERVER_SAID}{text}"));
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

/// The CONNECT options: credentials from the flags win over those in the URL; with an nkey, the
/// user JWT (or the public key) and the signature of the `nonce` in the server's `info`.
fn connect_json(
    url: &ServerUrl,
    opts: &ConnectOptions,
    info: &serde_json::Value,
    tls: bool,
) -> Result<serde_json::Value, String> {
    let mut connect = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
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
    if let Some(nkey) = &opts.nkey {
        let nonce = info["nonce"].as_str().unwrap_or("");
        let (public_key, sig) = nkey.sign(nonce.as_bytes())?;
        match &nkey.jwt {
            Some(jwt) => set("jwt", jwt.clone()),
            None => set("nkey", public_key),
        }
        set("sig", sig);
    }
    Ok(connect)
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
        let u = ServerUrl::parse("tls://h:1").unwrap();
        assert!(u.tls);
        assert_eq!(u.display(), "tls://h:1");
        assert!(!ServerUrl::parse("nats://h:1").unwrap().tls);
        assert!(ServerUrl::parse("wss://h:1")
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
        let info = serde_json::json!({});
        let json = connect_json(&url, &ConnectOptions::default(), &info, false).unwrap();
        assert_eq!(json["auth_token"], "tok");
        let opts = ConnectOptions {
            user: Some("u".into()),
            password: Some("p".into()),
            ..ConnectOptions::default()
        };
        let json = connect_json(&ServerUrl::parse("h").unwrap(), &opts, &info, true).unwrap();
        assert_eq!(
            (json["user"].as_str(), json["pass"].as_str()),
            (Some("u"), Some("p"))
        );
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
        assert_eq!(json["tls_required"], true);
    }

    #[test]
    fn nonce_signed_in_connect() {
        let user = nkeys::KeyPair::new_user();
        let info = serde_json::json!({ "nonce": "abc-nonce" });
        let url = ServerUrl::parse("h").unwrap();
        let mut opts = ConnectOptions {
            nkey: Some(NkeyAuth {
                jwt: None,
                seed: user.seed().unwrap(),
            }),
            ..ConnectOptions::default()
        };
        let json = connect_json(&url, &opts, &info, false).unwrap();
        assert_eq!(json["nkey"], user.public_key());
        assert!(json.get("jwt").is_none());
        let sig = json["sig"].as_str().unwrap();
        assert!(!sig.contains('=') && !sig.contains('+') && !sig.contains('/'));
        assert!(crate::auth::jwt::verify_nonce_signature(
            &user.public_key(),
            b"abc-nonce",
            sig
        ));
        opts.nkey.as_mut().unwrap().jwt = Some("a.b.c".into());
        let json = connect_json(&url, &opts, &info, false).unwrap();
        assert_eq!(json["jwt"], "a.b.c");
        assert!(json.get("nkey").is_none());
        assert!(format!("{opts:?}").contains("<secret>"));
        assert!(!format!("{opts:?}").contains(&user.seed().unwrap()));
    }

    #[test]
    fn seed_files() {
        let dir = std::env::temp_dir().join(format!("natter-cli-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let path = dir.join("user.nk");
        std::fs::write(&path, format!("{seed}\n{}\n", user.public_key())).unwrap();
        assert_eq!(NkeyAuth::from_seed_file(&path).unwrap().seed, seed);
        std::fs::write(&path, "nothing here\n").unwrap();
        assert!(NkeyAuth::from_seed_file(&path)
            .unwrap_err()
            .contains("no nkey seed"));
        let creds = dir.join("user.creds");
        std::fs::write(&creds, crate::auth::jwt::format_creds("a.b.c", &seed)).unwrap();
        let auth = NkeyAuth::from_creds_file(&creds).unwrap();
        assert_eq!(
            (auth.jwt.as_deref(), auth.seed.as_str()),
            (Some("a.b.c"), seed.as_str())
        );
        assert!(NkeyAuth::from_creds_file(&dir.join("missing.creds"))
            .unwrap_err()
            .contains("--creds"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
