//! Client subcommands of the natter binary, for telnet-style debugging: `natter pub`, `sub`,
//! `req` (`request`), `reply`, `server check`, `stream ls|info|add|rm|view`,
//! `consumer ls|info|add|next|rm` and `kv add|put|get|del|watch`, spelled as the `nats` CLI
//! spells them.
//!
//! They talk to any NATS server through the small blocking client in [`conn`]. `main` hands
//! over here only when the first argument is one of [`SUBCOMMANDS`]; every other command line is
//! the nats-server-compatible server's.

pub mod conn;
mod consumer;
mod kv;
mod stream;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use conn::{parse_header_arg, Conn, ConnectOptions, Headers, Msg, NkeyAuth, TlsOptions};

/// First arguments that select a client subcommand instead of the server.
pub const SUBCOMMANDS: &[&str] = &[
    "pub", "sub", "req", "request", "reply", "server", "stream", "consumer", "kv",
];

/// Whether `arg` (the first command-line argument) selects a client subcommand.
pub fn is_subcommand(arg: &str) -> bool {
    SUBCOMMANDS.contains(&arg)
}

/// The server used when neither `-s` nor `$NATS_URL` names one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The client's command line.
#[derive(Debug, Parser)]
#[command(
    name = "natter",
    about = "natter's NATS client subcommands",
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: ClientCommand,
}

/// Connection options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// NATS server URLs, comma separated [default: $NATS_URL or nats://127.0.0.1:4222]
    #[arg(short = 's', long = "server", global = true, value_name = "URL")]
    server: Option<String>,
    /// User name sent in CONNECT
    #[arg(long, global = true)]
    user: Option<String>,
    /// Password sent in CONNECT
    #[arg(long, global = true)]
    password: Option<String>,
    /// Authentication token sent in CONNECT
    #[arg(long, global = true)]
    token: Option<String>,
    /// How long connecting may take
    #[arg(long = "connection-timeout", global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    connection_timeout: Duration,
    /// CA certificate (PEM) to verify the server's TLS certificate with; enables TLS
    #[arg(
        long = "tlsca",
        visible_alias = "tls-ca",
        global = true,
        value_name = "FILE"
    )]
    tls_ca: Option<PathBuf>,
    /// TLS client certificate (PEM), with --tlskey
    #[arg(
        long = "tlscert",
        visible_alias = "tls-cert",
        global = true,
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS client private key (PEM), with --tlscert
    #[arg(
        long = "tlskey",
        visible_alias = "tls-key",
        global = true,
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
    /// TLS handshake before the server's INFO (servers with handshake_first)
    #[arg(long = "tlsfirst", visible_alias = "tls-first", global = true)]
    tls_first: bool,
    /// NATS credentials file (user JWT and nkey seed)
    #[arg(long, global = true, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// File holding a user nkey seed
    #[arg(long, global = true, value_name = "FILE")]
    nkey: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Publish a message
    Pub(PubArgs),
    /// Subscribe and print the messages that arrive
    Sub(SubArgs),
    /// Send a request and print the reply
    #[command(alias = "request")]
    Req(ReqArgs),
    /// Answer every request on a subject with a fixed body
    Reply(ReplyArgs),
    /// Server checks
    #[command(subcommand)]
    Server(ServerCommand),
    /// JetStream streams: ls, info, add, rm, view
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// JetStream consumers: ls, info, add, next, rm
    #[command(subcommand)]
    Consumer(consumer::ConsumerCommand),
    /// Key-value buckets: add, put, get, del, watch
    #[command(subcommand)]
    Kv(kv::KvCommand),
}

#[derive(Debug, Args)]
struct PubArgs {
    /// Subject to publish to
    subject: String,
    /// Message body [default: empty]
    body: Option<String>,
    /// Publish the message this many times
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// A header, as key:value (repeatable); with headers the message goes out as HPUB
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = parse_header_arg)]
    headers: Vec<(String, String)>,
    /// Reply subject
    #[arg(long, value_name = "SUBJECT")]
    reply: Option<String>,
}

#[derive(Debug, Args)]
struct SubArgs {
    /// Subject to subscribe to (wildcards allowed)
    subject: String,
    /// Join this queue group
    #[arg(long, value_name = "GROUP")]
    queue: Option<String>,
    /// Exit after this many messages (0: never)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Print only the message bodies
    #[arg(short = 'r', long)]
    raw: bool,
}

#[derive(Debug, Args)]
struct ReqArgs {
    /// Subject to send the request to
    subject: String,
    /// Request body [default: empty]
    body: Option<String>,
    /// How long to wait for the reply
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
    /// A header, as key:value (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = parse_header_arg)]
    headers: Vec<(String, String)>,
    /// Print only the reply body
    #[arg(short = 'r', long)]
    raw: bool,
}

#[derive(Debug, Args)]
struct ReplyArgs {
    /// Subject to answer requests on
    subject: String,
    /// Body of every reply [default: empty]
    body: Option<String>,
    /// Queue group, so several repliers share the requests
    #[arg(long, value_name = "GROUP", default_value = "NATS-RPLY-22")]
    queue: String,
    /// Exit after answering this many requests (0: never)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// A header on every reply, as key:value (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = parse_header_arg)]
    headers: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Connect, PING, and report the server's name, version and round-trip time
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// How long to wait for the PONG
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
}

/// Runs a client subcommand; `args` is the whole command line, program name first.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("natter: {message}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<(), String> {
    let opts = connect_options(&cli.common)?;
    match cli.command {
        ClientCommand::Pub(args) => publish(&opts, &args),
        ClientCommand::Sub(args) => subscribe(&opts, &args),
        ClientCommand::Req(args) => request(&opts, &args),
        ClientCommand::Reply(args) => reply(&opts, &args),
        ClientCommand::Server(ServerCommand::Check(args)) => check(&opts, &args),
        ClientCommand::Stream(command) => stream::run(&opts, &command),
        ClientCommand::Consumer(command) => consumer::run(&opts, &command),
        ClientCommand::Kv(command) => kv::run(&opts, &command),
    }
}

/// The connection options, with the credentials and TLS files read now, so a bad file is an
/// error before anything is sent.
fn connect_options(common: &Common) -> Result<ConnectOptions, String> {
    let servers = common
        .server
        .clone()
        .or_else(|| {
            std::env::var("NATS_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let nkey = match (&common.creds, &common.nkey) {
        (Some(_), Some(_)) => return Err("--creds and --nkey exclude each other".into()),
        (Some(creds), None) => Some(NkeyAuth::from_creds_file(creds)?),
        (None, Some(seed)) => Some(NkeyAuth::from_seed_file(seed)?),
        (None, None) => None,
    };
    Ok(ConnectOptions {
        servers,
        user: common.user.clone(),
        password: common.password.clone(),
        token: common.token.clone(),
        nkey,
        tls: tls_options(common)?,
        timeout: common.connection_timeout,
    })
}

/// TLS from the options: any of them makes TLS required, and all of them need `--tlsca` (there
/// is no system trust store to verify the server with otherwise).
fn tls_options(common: &Common) -> Result<TlsOptions, String> {
    let client = match (&common.tls_cert, &common.tls_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (Some(_), None) => return Err("--tlscert needs --tlskey (the certificate's key)".into()),
        (None, Some(_)) => return Err("--tlskey needs --tlscert (the key's certificate)".into()),
        (None, None) => None,
    };
    let required = common.tls_ca.is_some() || client.is_some() || common.tls_first;
    let config = match &common.tls_ca {
        Some(ca) => Some(conn::tls_config(ca, client)?),
        None if required => {
            let flag = if client.is_some() {
                "--tlscert"
            } else {
                "--tlsfirst"
            };
            return Err(format!(
                "{flag} needs --tlsca FILE, the CA certificate that signed the server's \
                 certificate (natter's client has no system trust store)"
            ));
        }
        None => None,
    };
    Ok(TlsOptions {
        config,
        required,
        first: common.tls_first,
    })
}

/// Parses a duration as the nats CLI takes it: Go style (`2s`, `500ms`, `1m30s`, `1.5s`,
/// `100us`), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if let Ok(d) = Duration::try_from_secs_f64(secs) {
            return Ok(d);
        }
    }
    crate::config::parse_go_duration(text)
        .ok_or_else(|| format!("invalid duration {text:?} (e.g. 2s, 500ms, 1m30s)"))
}

/// Writes to standard output and flushes, so piped output appears message by message.
fn print(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|err| format!("cannot write to standard output: {err}"))
}

/// How a message is shown, as the nats CLI shows it: the `[#n] Received on` line (with the reply
/// subject), headers and a blank line, then the body and a newline (unless `raw`: the body only).
fn format_msg(n: u64, msg: &Msg, raw: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if !raw {
        match &msg.reply {
            Some(reply) => out.extend_from_slice(
                format!(
                    "[#{n}] Received on \"{}\" with reply \"{reply}\"\n",
                    msg.subject
                )
                .as_bytes(),
            ),
            None => out
                .extend_from_slice(format!("[#{n}] Received on \"{}\"\n", msg.subject).as_bytes()),
        }
        if let Some(headers) = &msg.headers {
            out.extend_from_slice(format_headers(headers).as_bytes());
            out.push(b'\n');
        }
    }
    out.extend_from_slice(&msg.payload);
    if !msg.payload.ends_with(b"\n") {
        out.push(b'\n');
    }
    if !raw {
        out.push(b'\n');
    }
    out
}

/// `Key: Value` lines, led by the status (`Status: 503`) when the block has one.
fn format_headers(headers: &Headers) -> String {
    let mut out = String::new();
    if let Some(status) = headers.status {
        out.push_str(&format!("Status: {status}\n"));
        if !headers.description.is_empty() {
            out.push_str(&format!("Description: {}\n", headers.description));
        }
    }
    for (key, value) in &headers.entries {
        out.push_str(&format!("{key}: {value}\n"));
    }
    out
}

/// `natter pub`: publishes `--count` times, then waits for the server to have processed it all.
fn publish(opts: &ConnectOptions, args: &PubArgs) -> Result<(), String> {
    let mut conn = Conn::connect(opts)?;
    let body = args.body.as_deref().unwrap_or("").as_bytes();
    for _ in 0..args.count {
        conn.publish(&args.subject, args.reply.as_deref(), &args.headers, body)?;
    }
    conn.flush(opts.timeout)?;
    if args.count == 1 {
        eprintln!("Published {} bytes to \"{}\"", body.len(), args.subject);
    } else {
        eprintln!(
            "Published {} messages of {} bytes to \"{}\"",
            args.count,
            body.len(),
            args.subject
        );
    }
    Ok(())
}

/// `natter sub`: prints every message; with `--count`, exits after that many.
fn subscribe(opts: &ConnectOptions, args: &SubArgs) -> Result<(), String> {
    let mut conn = Conn::connect(opts)?;
    conn.subscribe(&args.subject, args.queue.as_deref(), 1)?;
    if args.count > 0 {
        conn.unsubscribe(1, Some(args.count))?;
    }
    conn.flush(opts.timeout)?;
    match &args.queue {
        Some(queue) => eprintln!("Subscribing on \"{}\" in group \"{queue}\"", args.subject),
        None => eprintln!("Subscribing on \"{}\"", args.subject),
    }
    let mut n = 0;
    while args.count == 0 || n < args.count {
        let Some(msg) = conn.next_msg(None)? else {
            continue;
        };
        n += 1;
        print(&format_msg(n, &msg, args.raw))?;
    }
    Ok(())
}

/// `natter req`: one request on a fresh inbox; the first reply is printed. A 503 status means
/// nobody listens on the subject.
fn request(opts: &ConnectOptions, args: &ReqArgs) -> Result<(), String> {
    let mut conn = Conn::connect(opts)?;
    let inbox = conn::new_inbox();
    conn.subscribe(&inbox, None, 1)?;
    conn.unsubscribe(1, Some(1))?;
    let body = args.body.as_deref().unwrap_or("").as_bytes();
    let start = Instant::now();
    conn.publish(&args.subject, Some(&inbox), &args.headers, body)?;
    if !args.raw {
        eprintln!("Sending request on \"{}\"", args.subject);
    }
    let msg = conn
        .next_msg(Some(start + args.timeout))?
        .ok_or_else(|| format!("no reply on \"{}\" within {:?}", args.subject, args.timeout))?;
    let rtt = start.elapsed();
    if msg.payload.is_empty() && msg.headers.as_ref().is_some_and(Headers::is_no_responders) {
        return Err("No responders available for request".into());
    }
    if !args.raw {
        eprintln!("Received with rtt {rtt:?}");
    }
    let mut out = Vec::new();
    if let (Some(headers), false) = (&msg.headers, args.raw) {
        out.extend_from_slice(format_headers(headers).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(&msg.payload);
    if !msg.payload.ends_with(b"\n") {
        out.push(b'\n');
    }
    print(&out)
}

/// `natter reply`: answers every request with the same body; messages without a reply subject
/// are shown but not answered.
fn reply(opts: &ConnectOptions, args: &ReplyArgs) -> Result<(), String> {
    let mut conn = Conn::connect(opts)?;
    let queue = Some(args.queue.as_str()).filter(|q| !q.is_empty());
    conn.subscribe(&args.subject, queue, 1)?;
    conn.flush(opts.timeout)?;
    eprintln!(
        "Listening on \"{}\" in group \"{}\"",
        args.subject, args.queue
    );
    let body = args.body.as_deref().unwrap_or("").as_bytes();
    let mut n = 0;
    while args.count == 0 || n < args.count {
        let Some(msg) = conn.next_msg(None)? else {
            continue;
        };
        n += 1;
        print(&format_msg(n, &msg, false))?;
        if let Some(reply_to) = &msg.reply {
            conn.publish(reply_to, None, &args.headers, body)?;
        }
    }
    conn.flush(opts.timeout)?;
    Ok(())
}

/// `natter server check`: connects, measures a PING/PONG round trip and reports the server.
fn check(opts: &ConnectOptions, args: &CheckArgs) -> Result<(), String> {
    let start = Instant::now();
    let mut conn = Conn::connect(opts).map_err(|err| format!("CRITICAL: {err}"))?;
    let connected = start.elapsed();
    let rtt = conn
        .flush(args.timeout)
        .map_err(|err| format!("CRITICAL: {err}"))?;
    let info = &conn.info;
    let name = info["server_name"]
        .as_str()
        .or_else(|| info["server_id"].as_str())
        .unwrap_or("?");
    let version = info["version"].as_str().unwrap_or("?");
    print(
        format!(
            "OK: connected to {} in {connected:?}; server \"{name}\" version {version}; rtt {rtt:?}\n",
            conn.url
        )
        .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn subcommand_names() {
        for name in ["pub", "sub", "req", "request", "reply", "server"] {
            assert!(is_subcommand(name));
        }
        for name in ["-p", "publish", "--server", ""] {
            assert!(!is_subcommand(name));
        }
    }

    #[test]
    fn arguments() {
        let cli = Cli::try_parse_from([
            "natter",
            "pub",
            "foo",
            "hi",
            "-H",
            "a:1",
            "-H",
            "b: 2",
            "--count",
            "3",
            "-s",
            "nats://h:1",
        ])
        .unwrap();
        assert_eq!(cli.common.server.as_deref(), Some("nats://h:1"));
        let ClientCommand::Pub(args) = cli.command else {
            panic!("not pub")
        };
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.count, 3);
        let cli =
            Cli::try_parse_from(["natter", "request", "foo", "x", "--timeout", "1s"]).unwrap();
        assert!(
            matches!(cli.command, ClientCommand::Req(ReqArgs { timeout, .. }) if timeout == Duration::from_secs(1))
        );
        let cli = Cli::try_parse_from(["natter", "server", "check"]).unwrap();
        assert!(matches!(
            cli.command,
            ClientCommand::Server(ServerCommand::Check(_))
        ));
        assert!(Cli::try_parse_from(["natter", "server"]).is_err());
    }

    #[test]
    fn security_options() {
        for spelling in [
            ["--tlsca", "--tlscert", "--tlskey", "--tlsfirst"],
            ["--tls-ca", "--tls-cert", "--tls-key", "--tls-first"],
        ] {
            let cli = Cli::try_parse_from([
                "natter",
                "pub",
                "foo",
                spelling[0],
                "ca.pem",
                spelling[1],
                "c.pem",
                spelling[2],
                "k.pem",
                spelling[3],
            ])
            .unwrap();
            assert_eq!(cli.common.tls_ca, Some(PathBuf::from("ca.pem")));
            assert_eq!(cli.common.tls_cert, Some(PathBuf::from("c.pem")));
            assert_eq!(cli.common.tls_key, Some(PathBuf::from("k.pem")));
            assert!(cli.common.tls_first);
        }
        let refused = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            connect_options(&cli.common).unwrap_err()
        };
        let err = refused(&["natter", "pub", "foo", "--tlscert", "c.pem"]);
        assert!(err.contains("--tlskey"), "{err}");
        let err = refused(&["natter", "pub", "foo", "--tlscert", "c", "--tlskey", "k"]);
        assert!(err.contains("--tlsca"), "{err}");
        let err = refused(&["natter", "pub", "foo", "--tlsfirst"]);
        assert!(err.contains("--tlsca"), "{err}");
        let err = refused(&["natter", "pub", "foo", "--tlsca", "/nonexistent/ca.pem"]);
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = refused(&["natter", "--creds", "/nonexistent.creds", "sub", "foo"]);
        assert!(err.contains("--creds"), "{err}");
        let err = refused(&["natter", "sub", "foo", "--creds", "a", "--nkey", "b"]);
        assert!(err.contains("exclude"), "{err}");
        let cli = Cli::try_parse_from(["natter", "pub", "foo"]).unwrap();
        let opts = connect_options(&cli.common).unwrap();
        assert!(!opts.tls.required && opts.tls.config.is_none() && opts.nkey.is_none());
    }

    #[test]
    fn message_format() {
        let msg = Msg {
            subject: "foo".into(),
            sid: 1,
            reply: Some("bar".into()),
            headers: Some(Headers::parse(b"NATS/1.0\r\nk: v\r\n\r\n")),
            payload: b"hello".to_vec(),
        };
        assert_eq!(
            String::from_utf8(format_msg(2, &msg, false)).unwrap(),
            "[#2] Received on \"foo\" with reply \"bar\"\nk: v\n\nhello\n\n"
        );
        assert_eq!(format_msg(2, &msg, true), b"hello\n");
    }
}
