//! Command-line flags, spelled as nats-server spells them so scripts and test harnesses written for
//! nats-server start natter unchanged.
//!
//! nats-server parses flags with Go's `flag` package: `-x`, `--x`, `-x=v`, `--x=v` and `-x v` are all
//! the same flag, multi-letter names such as `-js` or `-DV` take a single dash, and boolean flags
//! take an optional `=value` (`-D=false`). clap reads `-js` as a bundle of `-j -s`, so [`parse`]
//! first rewrites argv into one canonical form (`--name` or `--name=value`; see [`normalize`]),
//! and every Go spelling is declared to clap as a long name or alias.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::security::{self, Security, Tls, User, GLOBAL_ACCOUNT};
use super::{Config, DEFAULT_PORT};

/// The text `-h`/`--help` prints, laid out as nats-server's usage.
pub const USAGE: &str = "\
Usage: natter [options]

Server Options:
    -a, --addr, --net <host>         Bind to host address (default: 0.0.0.0)
    -p, --port <port>                Use port for clients (default: 4222, -1: random)
    -n, --name
        --server_name <server_name>  Server name (default: auto)
    -P, --pid <file>                 File to store PID
    -m, --http_port <port>           Use port for http monitoring (-1: random)
    -c, --config <file>              Configuration file
    -t                               Test configuration and exit
    -sl,--signal <signal>[=<pid>]    Send signal to natter process (ldm, stop, quit, term, reopen, reload)
                                     <pid> can be either a PID (e.g. 1) or the path to a PID file
        --ports_file_dir <dir>       Creates a ports file in the specified directory (<executable_name>_<pid>.ports)
        --max_payload <size>         Largest message payload accepted (e.g. 1MB; default: 1MB)

Logging Options:
    -l, --log <file>                 File to redirect log output
    -T, --logtime                    Timestamp log entries (default: true)
        --logtime_utc                Timestamps in UTC instead of local timezone (default: false)
    -D, --debug                      Enable debugging output
    -V, --trace                      Trace the raw protocol
    -VV                              Verbose trace
    -DV                              Debug and trace
    -DVV                             Debug and verbose trace
        --log_size_limit <size>      Rotate the log file past this size (e.g. 100MB)
        --log_format <text|json>     nats-server's text lines (default) or JSON objects

Authorization Options:
        --user <user>                User required for connections
        --pass <password>            Password required for connections
        --auth <token>               Authorization token required for connections

TLS Options:
        --tls                        Enable TLS, do not verify clients (default: false)
        --tlscert <file>             Server certificate file
        --tlskey <file>              Private key for server certificate
        --tlsverify                  Enable TLS, verify client certificates
        --tlscacert <file>           Client certificate CA for verification

JetStream Options:
    -js, --jetstream                 Enable JetStream functionality
    -sd, --store_dir <dir>           Set the storage directory (default: $TMPDIR/nats)

Accepted for nats-server compatibility, not supported yet (a warning is logged):
    -s, --syslog, -r, --remote_syslog, --max_traced_msg_len,
    -ms, --https_port, --routes, --cluster, --cluster_name, --no_advertise,
    --cluster_advertise, --connect_retries, --cluster_listen, --client_advertise, --profile

Common Options:
    -h, --help                       Show this message
    -v, --version                    Show version

Client Subcommands (natter <subcommand> --help for their options):
    pub, sub, req, reply             Publish, subscribe, request, reply, like the nats CLI
    server check                     Check that a server answers
    stream ls|info|add|rm|view       JetStream streams (-js servers)
    consumer ls|info|add|next|rm     JetStream consumers
    kv add|put|get|del|watch         Key-value buckets
";

/// Flags natter accepts but does not implement: `(long name, other spellings, takes a value)`.
/// Flags without a value are Go booleans.
const RESERVED: &[(&str, &[&str], bool)] = &[
    ("syslog", &["s"], false),
    ("remote_syslog", &["r"], true),
    ("max_traced_msg_len", &[], true),
    ("https_port", &["ms"], true),
    ("routes", &[], true),
    ("cluster", &[], true),
    ("cluster_name", &[], true),
    ("no_advertise", &[], false),
    ("cluster_advertise", &[], true),
    ("connect_retries", &[], true),
    ("cluster_listen", &[], true),
    ("client_advertise", &[], true),
    ("profile", &[], true),
];

/// What the command line asks natter to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the server.
    Run(Options),
    /// `-t`: check the configuration file (`-c`, required) and exit.
    TestConfig(Options),
    /// `-sl`/`--signal`: send a signal to a running natter and exit.
    Signal {
        /// Which signal.
        signal: SignalKind,
        /// A pid or the path of a pid file; `None` means "the one natter running".
        pid: Option<String>,
    },
    /// `-v`/`--version`: print the version and exit.
    Version,
    /// `-h`/`--help`: print [`USAGE`] and exit.
    Help,
}

/// The signals `-sl` knows, by nats-server's names for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// `stop`: SIGKILL.
    Stop,
    /// `quit`: SIGINT, a graceful shutdown.
    Quit,
    /// `term`: SIGTERM, a graceful shutdown.
    Term,
    /// `reload`: SIGHUP, reload the configuration file.
    Reload,
    /// `reopen`: SIGUSR1, reopen the log file.
    Reopen,
    /// `ldm`: SIGUSR2, enter lame-duck mode.
    LameDuck,
}

impl SignalKind {
    const ALL: [SignalKind; 6] = [
        SignalKind::Stop,
        SignalKind::Quit,
        SignalKind::Term,
        SignalKind::Reload,
        SignalKind::Reopen,
        SignalKind::LameDuck,
    ];

    /// The name `-sl` takes (`stop`, `quit`, `term`, `reload`, `reopen`, `ldm`).
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Stop => "stop",
            SignalKind::Quit => "quit",
            SignalKind::Term => "term",
            SignalKind::Reload => "reload",
            SignalKind::Reopen => "reopen",
            SignalKind::LameDuck => "ldm",
        }
    }

    /// The Unix signal sent, as nats-server maps it.
    pub fn signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            SignalKind::Stop => Signal::SIGKILL,
            SignalKind::Quit => Signal::SIGINT,
            SignalKind::Term => Signal::SIGTERM,
            SignalKind::Reload => Signal::SIGHUP,
            SignalKind::Reopen => Signal::SIGUSR1,
            SignalKind::LameDuck => Signal::SIGUSR2,
        }
    }

    /// Looks a signal up by its `-sl` name.
    pub fn from_name(name: &str) -> Option<SignalKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The parsed flags. `None` means "not given", so a config file value stays (see [`Options::apply`]).
#[derive(Parser, Debug, Clone, Default, PartialEq)]
#[command(
    name = "natter",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// `-a`/`--addr`/`--net`: interface to listen on.
    #[arg(long = "addr", aliases = ["a", "net"], value_name = "host")]
    pub addr: Option<String>,
    /// `-p`/`--port`: client port; `-1` asks for a random port, `0` for the default.
    #[arg(long = "port", alias = "p", value_name = "port",
          value_parser = clap::value_parser!(i32).range(-1..=65535))]
    pub port: Option<i32>,
    /// `-m`/`--http_port`: HTTP monitoring port; `-1` asks for a random port, `0` turns it off.
    #[arg(long = "http_port", alias = "m", value_name = "port",
          value_parser = clap::value_parser!(i32).range(-1..=65535))]
    pub http_port: Option<i32>,
    /// `-n`/`--name`/`--server_name`: server name.
    #[arg(long = "name", aliases = ["n", "server_name"], value_name = "server_name")]
    pub name: Option<String>,
    /// `-c`/`--config`: configuration file.
    #[arg(long = "config", alias = "c", value_name = "file")]
    pub config: Option<PathBuf>,
    /// `-t`: test the configuration file and exit.
    #[arg(long = "t", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub test: bool,
    /// `-P`/`--pid`: file to write the pid to.
    #[arg(long = "pid", alias = "P", value_name = "file")]
    pub pid_file: Option<PathBuf>,
    /// `--ports_file_dir`: directory for the `<exe>_<pid>.ports` file.
    #[arg(long = "ports_file_dir", value_name = "dir")]
    pub ports_file_dir: Option<PathBuf>,
    /// `-l`/`--log`: log file.
    #[arg(long = "log", alias = "l", value_name = "file")]
    pub log_file: Option<PathBuf>,
    /// `--log_size_limit`: rotate the log file past this size.
    #[arg(long = "log_size_limit", value_name = "size", value_parser = parse_size_u64)]
    pub log_size_limit: Option<u64>,
    /// `--log_format`: `text` (nats-server's lines) or `json`.
    #[arg(long = "log_format", value_name = "format")]
    pub log_format: Option<crate::config::LogFormat>,
    /// `-T`/`--logtime`: timestamps on log lines.
    #[arg(long = "logtime", alias = "T", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub logtime: Option<bool>,
    /// `--logtime_utc`: timestamps in UTC.
    #[arg(long = "logtime_utc", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub logtime_utc: Option<bool>,
    /// `-D`/`--debug`: debug logging.
    #[arg(long = "debug", alias = "D", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub debug: Option<bool>,
    /// `-V`/`--trace`: protocol tracing.
    #[arg(long = "trace", alias = "V", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub trace: Option<bool>,
    /// `-VV`: verbose trace (natter traces the same as `-V`).
    #[arg(long = "VV", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub verbose_trace: Option<bool>,
    /// `-DV`: debug and trace.
    #[arg(long = "DV", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub debug_trace: Option<bool>,
    /// `-DVV`: debug and verbose trace.
    #[arg(long = "DVV", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub debug_verbose_trace: Option<bool>,
    /// `-sl`/`--signal`: `<signal>[=<pid or pid file>]`.
    #[arg(long = "signal", alias = "sl", value_name = "signal")]
    pub signal: Option<String>,
    /// `--max_payload`: largest payload accepted, in bytes (natter extra; `1MB` style sizes too).
    #[arg(long = "max_payload", value_name = "size", value_parser = parse_size)]
    pub max_payload: Option<u32>,
    /// `--user`: the one user allowed to connect (with `--pass`).
    #[arg(long = "user", value_name = "user")]
    pub user: Option<String>,
    /// `--pass`: that user's password (plain, or a bcrypt hash).
    #[arg(long = "pass", value_name = "password")]
    pub pass: Option<String>,
    /// `--auth`: the token clients must present.
    #[arg(long = "auth", value_name = "token")]
    pub auth: Option<String>,
    /// `--tls`: serve TLS (needs `--tlscert` and `--tlskey` or a `tls` block).
    #[arg(long = "tls", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub tls: Option<bool>,
    /// `--tlscert`: the server certificate (PEM).
    #[arg(long = "tlscert", value_name = "file")]
    pub tls_cert: Option<PathBuf>,
    /// `--tlskey`: the server certificate's private key (PEM).
    #[arg(long = "tlskey", value_name = "file")]
    pub tls_key: Option<PathBuf>,
    /// `--tlscacert`: CA certificates client certificates must chain to (PEM).
    #[arg(long = "tlscacert", value_name = "file")]
    pub tls_ca_cert: Option<PathBuf>,
    /// `--tlsverify`: serve TLS and require verified client certificates.
    #[arg(long = "tlsverify", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub tls_verify: Option<bool>,
    /// `-js`/`--jetstream`: enable JetStream (`-js=false` disables what the file enables).
    #[arg(long = "jetstream", alias = "js", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub jetstream: Option<bool>,
    /// `-sd`/`--store_dir`: JetStream's store directory; does not enable JetStream by itself.
    /// An empty value is the default directory, as in nats-server.
    #[arg(long = "store_dir", alias = "sd", value_name = "dir",
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub store_dir: Option<PathBuf>,
    /// `-h`/`--help`.
    #[arg(long = "help", alias = "h", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = go_bool)]
    pub help: bool,
    /// `-v`/`--version`.
    #[arg(long = "version", alias = "v", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = go_bool)]
    pub version: bool,
    /// Reserved flags given on the command line (as `--name`); natter ignores them with a warning.
    #[arg(skip)]
    pub reserved: Vec<String>,
}

impl Options {
    /// Overrides `cfg` with every flag that was given, as nats-server lets flags win over the
    /// file. Fails when the security flags cannot be honoured as given (see
    /// [`Options::apply_security`]); the config must then not be used.
    pub fn apply(&self, cfg: &mut Config) -> Result<(), String> {
        if let Some(addr) = &self.addr {
            cfg.host = addr.clone();
        }
        if let Some(port) = self.port {
            cfg.port = config_port(port);
        }
        if let Some(port) = self.http_port {
            cfg.http_port = crate::config::monitor_port(i64::from(port));
        }
        if let Some(name) = &self.name {
            cfg.server_name = Some(name.clone());
        }
        if let Some(path) = &self.config {
            cfg.config_file = Some(path.clone());
        }
        if let Some(path) = &self.pid_file {
            cfg.pid_file = Some(path.clone());
        }
        if let Some(dir) = &self.ports_file_dir {
            cfg.ports_file_dir = Some(dir.clone());
        }
        if let Some(size) = self.max_payload {
            cfg.max_payload = size;
        }
        self.apply_log(cfg);
        self.apply_jetstream(cfg);
        self.apply_security(&mut cfg.security)
    }

    /// The JetStream half of [`Options::apply`]. `-js` enables JetStream with the file's
    /// settings (even those of a disabled `jetstream` block or a top-level `store_dir`, as
    /// nats-server does), else with the defaults; `-js=false` disables it. `-sd` sets the
    /// store directory, over the file's (nats-server instead refuses a `-sd` when the file also
    /// sets one, "Duplicate 'store_dir' configuration"), without enabling JetStream.
    fn apply_jetstream(&self, cfg: &mut Config) {
        match self.jetstream {
            Some(true) if cfg.jetstream.is_none() => {
                cfg.jetstream = Some(cfg.jetstream_off.take().unwrap_or_default());
            }
            Some(false) => {
                if let Some(js) = cfg.jetstream.take() {
                    cfg.jetstream_off = Some(js);
                }
            }
            _ => {}
        }
        if let Some(dir) = &self.store_dir {
            let js = match &mut cfg.jetstream {
                Some(js) => js,
                None => cfg.jetstream_off.get_or_insert_with(Default::default),
            };
            js.set_store_dir(dir);
        }
    }

    /// The security half of [`Options::apply`]:
    ///
    /// * `--user U --pass P` replace the users of `authorization` (the single user or the
    ///   `users` list) with U in the global account. They cannot be combined with users in
    ///   `accounts`, with a token (file or `--auth`) or with operator mode, and each needs the
    ///   other (nats-server would start an open server for a lone `--pass`).
    /// * `--auth T` replaces the configured token; it cannot be combined with users or operator
    ///   mode.
    /// * `--tls`, `--tlscert`, `--tlskey`, `--tlscacert` and `--tlsverify` switch TLS on and
    ///   override the `tls` block's fields one by one (`--tlsverify` also requires client
    ///   certificates); certificate and key are then required and checked. `--tls=false` and
    ///   `--tlsverify=false` change nothing: flags never loosen a configured `tls` block.
    /// * `no_auth_user` must still name a user afterwards.
    pub fn apply_security(&self, sec: &mut Security) -> Result<(), String> {
        match (&self.user, &self.pass) {
            (Some(user), Some(pass)) => {
                if user.is_empty() {
                    return Err("--user must not be empty".into());
                }
                if sec.operator.is_some() {
                    return Err("--user/--pass cannot be used in operator mode".into());
                }
                if sec.users.iter().any(|u| u.account != GLOBAL_ACCOUNT) {
                    return Err("--user/--pass cannot be combined with users in accounts".into());
                }
                if sec.token.is_some() || self.auth.is_some() {
                    return Err("--user/--pass cannot be combined with a token".into());
                }
                let password = security::secret(pass).map_err(|err| format!("--pass: {err}"))?;
                sec.users = vec![User {
                    name: user.clone(),
                    password: Some(password),
                    nkey: false,
                    permissions: None,
                    account: GLOBAL_ACCOUNT.to_string(),
                    pos: None,
                }];
            }
            (Some(_), None) => return Err("--user needs --pass".into()),
            (None, Some(_)) => return Err("--pass needs --user".into()),
            (None, None) => {}
        }
        if let Some(token) = &self.auth {
            if token.is_empty() {
                return Err("--auth must not be empty".into());
            }
            if sec.operator.is_some() {
                return Err("--auth cannot be used in operator mode".into());
            }
            if !sec.users.is_empty() {
                return Err("--auth cannot be combined with configured users".into());
            }
            sec.token = Some(security::secret(token).map_err(|err| format!("--auth: {err}"))?);
        }
        if let Some(name) = &sec.no_auth_user {
            if !sec.users.iter().any(|u| &u.name == name) {
                return Err(format!(
                    "no_auth_user {name:?} is not a user once --user replaced the configured ones"
                ));
            }
        }
        self.apply_tls(sec)
    }

    /// The TLS flags of [`Options::apply_security`].
    fn apply_tls(&self, sec: &mut Security) -> Result<(), String> {
        let on = |flag: Option<bool>| flag == Some(true);
        let given = on(self.tls)
            || on(self.tls_verify)
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca_cert.is_some();
        if !given {
            return Ok(());
        }
        let mut tls = sec.tls.take().unwrap_or(Tls {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: None,
            verify: false,
            verify_and_map: false,
            timeout: security::DEFAULT_TLS_TIMEOUT,
            handshake_first: false,
            handshake_first_fallback: None,
            pos: None,
        });
        if let Some(path) = &self.tls_cert {
            tls.cert_file = path.clone();
        }
        if let Some(path) = &self.tls_key {
            tls.key_file = path.clone();
        }
        if let Some(path) = &self.tls_ca_cert {
            tls.ca_file = Some(path.clone());
        }
        if on(self.tls_verify) {
            tls.verify = true;
        }
        if tls.cert_file.as_os_str().is_empty() {
            return Err("TLS needs a server certificate (--tlscert or tls { cert_file })".into());
        }
        if tls.key_file.as_os_str().is_empty() {
            return Err(
                "TLS needs the certificate's private key (--tlskey or tls { key_file })".into(),
            );
        }
        security::check_certificates(&tls.cert_file)
            .map_err(|err| format!("TLS certificate: {err}"))?;
        security::check_private_key(&tls.key_file).map_err(|err| format!("TLS key: {err}"))?;
        if let Some(ca) = &tls.ca_file {
            security::check_certificates(ca)
                .map_err(|err| format!("TLS CA certificates: {err}"))?;
        }
        sec.tls = Some(tls);
        Ok(())
    }

    /// The logging half of [`Options::apply`]. `-DV`, `-VV` and `-DVV` only ever switch levels on.
    fn apply_log(&self, cfg: &mut Config) {
        let log = &mut cfg.log;
        if let Some(path) = &self.log_file {
            log.file = Some(path.clone());
        }
        if let Some(time) = self.logtime {
            log.time = time;
        }
        if let Some(limit) = self.log_size_limit {
            log.size_limit = limit;
        }
        if let Some(format) = self.log_format {
            log.format = format;
        }
        if let Some(utc) = self.logtime_utc {
            log.time_utc = utc;
        }
        if let Some(debug) = self.debug {
            log.debug = debug;
        }
        if let Some(trace) = self.trace {
            log.trace = trace;
        }
        let on = |flag: Option<bool>| flag == Some(true);
        if on(self.debug_trace) || on(self.debug_verbose_trace) {
            log.debug = true;
            log.trace = true;
        }
        if on(self.verbose_trace) {
            log.trace = true;
        }
    }

    /// Decides what to do once the flags are read; the order is help, version, signal, `-t`, run.
    fn into_command(self) -> Result<Command, clap::Error> {
        if self.help {
            return Ok(Command::Help);
        }
        if self.version {
            return Ok(Command::Version);
        }
        if let Some(arg) = &self.signal {
            return parse_signal(arg);
        }
        if self.test {
            if self.config.is_none() {
                return Err(usage_error(
                    "must specify [-c, --config] option to check configuration file syntax",
                ));
            }
            return Ok(Command::TestConfig(self));
        }
        Ok(Command::Run(self))
    }
}

/// Parses a full argv (program name first) the way nats-server would.
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let cmd = command();
    let mut args = args.into_iter().map(Into::into);
    let program = args.next().unwrap_or_else(|| "natter".into());
    let argv = std::iter::once(program).chain(normalize(&cmd, args));
    let matches = cmd.try_get_matches_from(argv)?;
    let mut options = Options::from_arg_matches(&matches)?;
    options.reserved = reserved_given(&matches);
    options.into_command()
}

/// Rewrites Go-style flags (program name excluded) into the form clap reads: `-x`, `--x`, `-x=v`
/// become `--x` and `--x=v`, and a flag that takes a value swallows the next argument whatever it
/// looks like (`-p -1` becomes `--p=-1`). Everything after `--` is left alone.
pub fn normalize<I>(cmd: &clap::Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.to_str().and_then(flag_body) else {
            let end = arg == "--";
            out.push(arg);
            if end {
                out.extend(args.by_ref());
            }
            continue;
        };
        let mut flag = OsString::from(format!("--{body}"));
        if !body.contains('=') && takes_separate_value(cmd, body) {
            if let Some(value) = args.next() {
                flag.push("=");
                flag.push(value);
            }
        }
        out.push(flag);
    }
    out
}

/// The name (and `=value`) of a flag written with one or two dashes, or `None` for anything else
/// (values, `-`, `--`, `---x`).
fn flag_body(arg: &str) -> Option<&str> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    (!body.is_empty() && !body.starts_with('-') && !body.starts_with('=')).then_some(body)
}

/// Whether flag `name` reads its value from the next argument (true for all but booleans).
fn takes_separate_value(cmd: &clap::Command, name: &str) -> bool {
    cmd.get_arguments()
        .find(|arg| {
            arg.get_long() == Some(name)
                || arg
                    .get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&name))
        })
        .is_some_and(|arg| arg.get_action().takes_values() && !arg.is_require_equals_set())
}

/// The clap command: [`Options`] plus the reserved flags.
fn command() -> clap::Command {
    Options::command().args(RESERVED.iter().map(|&(long, aliases, value)| {
        let arg = Arg::new(long)
            .long(long)
            .aliases(aliases.iter().copied())
            .hide(true);
        if value {
            arg.action(ArgAction::Set)
        } else {
            go_bool_arg(arg)
        }
    }))
}

/// Makes `arg` a Go boolean: `--x` is true, `--x=false` is false.
fn go_bool_arg(arg: Arg) -> Arg {
    arg.action(ArgAction::Set)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .value_parser(go_bool)
}

/// The reserved flags present in `matches`, as `--name`; booleans set to false are left out.
fn reserved_given(matches: &ArgMatches) -> Vec<String> {
    RESERVED
        .iter()
        .filter(|&&(long, _, value)| {
            if value {
                matches.contains_id(long)
            } else {
                matches.get_one::<bool>(long) == Some(&true)
            }
        })
        .map(|(long, _, _)| format!("--{long}"))
        .collect()
}

/// Splits `-sl <signal>[=<pid>]`.
fn parse_signal(arg: &str) -> Result<Command, clap::Error> {
    let (name, pid) = match arg.split_once('=') {
        Some((name, pid)) => (name, Some(pid.to_string()).filter(|p| !p.is_empty())),
        None => (arg, None),
    };
    let signal = SignalKind::from_name(name)
        .ok_or_else(|| usage_error(format!("unknown signal \"{name}\"")))?;
    Ok(Command::Signal { signal, pid })
}

/// A usage error found after clap has finished.
fn usage_error(message: impl std::fmt::Display) -> clap::Error {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n"))
}

/// The config port for a `-p` value: `-1` is an ephemeral port (0), `0` the default port.
fn config_port(port: i32) -> u16 {
    match port {
        -1 => 0,
        0 => DEFAULT_PORT,
        port => u16::try_from(port).unwrap_or(DEFAULT_PORT),
    }
}

/// Go's `strconv.ParseBool`, which Go boolean flags use.
fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value \"{value}\"")),
    }
}

/// A size in bytes: a plain number or one with a unit as in NATS config files (`k`/`m`/`g` are
/// powers of 1000, `kb`/`mb`/`gb` and `ki`/`mi`/`gi`/`kib`/... powers of 1024; case-insensitive).
/// [`parse_size`] for sizes past 4 GiB.
fn parse_size_u64(value: &str) -> Result<u64, String> {
    parse_size_wide(value)
}

pub fn parse_size(value: &str) -> Result<u32, String> {
    let bytes = parse_size_wide(value)?;
    u32::try_from(bytes)
        .map_err(|_| format!("size \"{}\" out of range (1 byte to 4GB)", value.trim()))
}

/// A positive byte count with an optional unit (`k`, `kb`, `m`, `mb`, `g`, `gb`, ...).
fn parse_size_wide(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size \"{value}\""))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "ki" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mi" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gi" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in \"{value}\"")),
    };
    number
        .checked_mul(scale)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("size \"{value}\" out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(&command(), args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn run(args: &[&str]) -> Options {
        match parse(std::iter::once("natter").chain(args.iter().copied())) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn config(args: &[&str]) -> Config {
        let mut cfg = Config::default();
        run(args).apply(&mut cfg).unwrap();
        cfg
    }

    #[test]
    fn normalize_single_and_double_dash() {
        assert_eq!(norm(&["-a", "1.2.3.4"]), ["--a=1.2.3.4"]);
        assert_eq!(norm(&["--addr", "x"]), ["--addr=x"]);
        assert_eq!(norm(&["-p=5"]), ["--p=5"]);
        assert_eq!(norm(&["--port=5"]), ["--port=5"]);
    }

    #[test]
    fn normalize_multi_letter_single_dash() {
        assert_eq!(norm(&["-js", "-sd", "/d"]), ["--js", "--sd=/d"]);
        assert_eq!(norm(&["-DV", "-DVV", "-VV"]), ["--DV", "--DVV", "--VV"]);
        assert_eq!(
            norm(&["-sl", "quit=3", "-ms", "1"]),
            ["--sl=quit=3", "--ms=1"]
        );
    }

    #[test]
    fn normalize_value_may_look_like_a_flag() {
        assert_eq!(norm(&["-p", "-1"]), ["--p=-1"]);
        assert_eq!(norm(&["-l", "--x"]), ["--l=--x"]);
    }

    #[test]
    fn normalize_booleans_do_not_take_next() {
        assert_eq!(norm(&["-D", "-T=false", "-V"]), ["--D", "--T=false", "--V"]);
        assert_eq!(norm(&["-t", "-c", "f"]), ["--t", "--c=f"]);
    }

    #[test]
    fn normalize_leaves_others_alone() {
        assert_eq!(
            norm(&["x", "-", "--", "-p", "1"]),
            ["x", "-", "--", "-p", "1"]
        );
        assert_eq!(norm(&["-bogus"]), ["--bogus"]);
        assert_eq!(norm(&["-p"]), ["--p"]);
    }

    #[test]
    fn port_spellings() {
        assert_eq!(config(&["-p", "4333"]).port, 4333);
        assert_eq!(config(&["--port=4333"]).port, 4333);
        assert_eq!(config(&["-p=4333"]).port, 4333);
        assert_eq!(config(&["--p", "4333"]).port, 4333);
        assert_eq!(config(&["-p", "-1"]).port, 0);
        assert_eq!(config(&["-p", "0"]).port, DEFAULT_PORT);
        assert_eq!(config(&[]).port, DEFAULT_PORT);
    }

    #[test]
    fn bad_values_are_errors() {
        for args in [
            &["-p", "abc"][..],
            &["-p", "70000"],
            &["-p", "-2"],
            &["-p"],
            &["-D=maybe"],
            &["--max_payload", "1XB"],
            &["--bogus"],
            &["-sl", "bogus"],
            &["-t"],
        ] {
            let argv = std::iter::once("natter").chain(args.iter().copied());
            assert!(parse(argv).is_err(), "{args:?} parsed");
        }
    }

    #[test]
    fn server_flags_apply() {
        let cfg = config(&[
            "-a",
            "127.0.0.1",
            "-n",
            "srv",
            "-P",
            "/tmp/p",
            "--ports_file_dir",
            "/tmp/d",
            "-c",
            "x.conf",
            "--max_payload",
            "2MB",
        ]);
        assert_eq!(cfg.host, "127.0.0.1");
        assert_eq!(cfg.server_name.as_deref(), Some("srv"));
        assert_eq!(cfg.pid_file, Some(PathBuf::from("/tmp/p")));
        assert_eq!(cfg.ports_file_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(cfg.config_file, Some(PathBuf::from("x.conf")));
        assert_eq!(cfg.max_payload, 2 << 20);
        assert_eq!(config(&["--net", "h"]).host, "h");
        assert_eq!(
            config(&["--server_name=s"]).server_name.as_deref(),
            Some("s")
        );
    }

    #[test]
    fn log_flags_apply() {
        let cfg = config(&["-l", "/tmp/l", "-D", "-T=false", "--logtime_utc"]);
        assert_eq!(cfg.log.file, Some(PathBuf::from("/tmp/l")));
        assert!(cfg.log.debug && !cfg.log.trace && !cfg.log.time && cfg.log.time_utc);
        let cfg = config(&["-DV"]);
        assert!(cfg.log.debug && cfg.log.trace);
        let cfg = config(&["-VV"]);
        assert!(!cfg.log.debug && cfg.log.trace);
        let cfg = config(&["-DVV"]);
        assert!(cfg.log.debug && cfg.log.trace);
        let cfg = config(&["--log_size_limit", "10MB", "--log_format", "json"]);
        assert_eq!(cfg.log.size_limit, 10 << 20);
        assert_eq!(cfg.log.format, crate::config::LogFormat::Json);
        assert_eq!(config(&[]).log.format, crate::config::LogFormat::Text);
    }

    #[test]
    fn flags_override_config_values() {
        let mut cfg = Config::default();
        cfg.log.debug = true;
        cfg.port = 1234;
        cfg.host = "h".into();
        run(&["-D=false", "--logtime=0"]).apply(&mut cfg).unwrap();
        assert!(!cfg.log.debug && !cfg.log.time);
        assert_eq!((cfg.port, cfg.host.as_str()), (1234, "h"));
    }

    #[test]
    fn repeated_flag_last_wins() {
        assert_eq!(config(&["-p", "1", "-p", "2"]).port, 2);
    }

    #[test]
    fn monitoring_port_flag() {
        let mut cfg = Config::default();
        run(&["-m", "8222"]).apply(&mut cfg).unwrap();
        assert_eq!(cfg.http_port, Some(8222));
        run(&["--http_port=-1"]).apply(&mut cfg).unwrap();
        assert_eq!(cfg.http_port, Some(0), "-1 is a random port");
        run(&["-m", "0"]).apply(&mut cfg).unwrap();
        assert_eq!(cfg.http_port, None, "0 is off");
    }

    #[test]
    fn reserved_flags_are_accepted_and_listed() {
        let options = run(&[
            "-js",
            "-sd",
            "/tmp/js",
            "-m",
            "8222",
            "--cluster_name=c",
            "--tls=false",
            "-s",
        ]);
        assert_eq!(options.reserved, ["--syslog", "--cluster_name"]);
        assert!(run(&["-p", "1"]).reserved.is_empty());
    }

    #[test]
    fn jetstream_flags() {
        use crate::config::jetstream::{default_store_dir, JetStreamConfig};
        assert_eq!(config(&[]).jetstream, None);
        for args in [&["-js"][..], &["--jetstream"], &["-js=true"], &["--js"]] {
            let cfg = config(args);
            assert_eq!(cfg.jetstream, Some(JetStreamConfig::default()), "{args:?}");
            assert_eq!(cfg.jetstream.unwrap().store_dir, default_store_dir());
        }
        assert_eq!(config(&["-js=false"]).jetstream, None);
        for args in [
            &["-js", "-sd", "/data/js"][..],
            &["-sd=/data/js", "-js"],
            &["--store_dir", "/data/js", "--jetstream"],
        ] {
            let js = config(args).jetstream.unwrap();
            assert_eq!(js.store_dir, PathBuf::from("/data/js"), "{args:?}");
        }
        // -sd alone does not enable JetStream (as in nats-server), but -js later would use it.
        let cfg = config(&["-sd", "/data/js"]);
        assert_eq!(cfg.jetstream, None);
        assert_eq!(
            cfg.jetstream_off.unwrap().store_dir,
            PathBuf::from("/data/js")
        );
        assert_eq!(
            config(&["-js", "-sd", ""]).jetstream.unwrap().store_dir,
            default_store_dir()
        );
        assert!(parse(["natter", "-js=maybe"]).is_err());
        assert!(parse(["natter", "-sd"]).is_err());
    }

    #[test]
    fn jetstream_flags_over_the_file() {
        let file = |src: &str| {
            let map =
                crate::config::parse::parse_str(src, std::path::Path::new("/x.conf")).unwrap();
            let mut cfg = Config::default();
            crate::config::file::apply(&map, &mut cfg).unwrap();
            cfg
        };
        let on = |args: &[&str], src: &str| try_config(args, file(src)).unwrap().jetstream;
        // -js enables with the file's settings, even those it left disabled.
        let js = on(&["-js"], "store_dir: /top").unwrap();
        assert_eq!(js.store_dir, PathBuf::from("/top"));
        let js = on(
            &["-js"],
            "jetstream { enabled: false, store_dir: /b, max_mem: 1K }",
        )
        .unwrap();
        assert_eq!(
            (js.store_dir.to_str(), js.max_memory),
            (Some("/b"), Some(1000))
        );
        let js = on(&["-js"], "jetstream: disabled").unwrap();
        assert_eq!(js, crate::config::jetstream::JetStreamConfig::default());
        // -js=false turns off what the file turns on; -sd overrides the file's directory.
        let cfg = try_config(&["-js=false"], file("jetstream { store_dir: /b }")).unwrap();
        assert_eq!(cfg.jetstream, None);
        assert!(cfg.jetstream_off.is_some());
        let js = on(
            &["-sd", "/flag"],
            "jetstream { store_dir: /b, max_file: 1K }",
        )
        .unwrap();
        assert_eq!(
            (js.store_dir.to_str(), js.max_file),
            (Some("/flag"), Some(1000))
        );
        // Flags that are not given leave the file alone.
        let js = on(&["-p", "1"], "jetstream { store_dir: /b }").unwrap();
        assert_eq!(js.store_dir, PathBuf::from("/b"));
        assert_eq!(on(&["-sd", "/flag"], "jetstream: false"), None);
    }

    #[test]
    fn usage_lists_jetstream_flags() {
        assert!(
            USAGE.contains("    -js, --jetstream                 Enable JetStream functionality\n")
        );
        assert!(USAGE.contains("    -sd, --store_dir <dir>           Set the storage directory"));
        assert!(!RESERVED
            .iter()
            .any(|(long, _, _)| ["jetstream", "store_dir"].contains(long)));
    }

    #[test]
    fn commands() {
        let parse_args =
            |args: &[&str]| parse(std::iter::once("natter").chain(args.iter().copied()));
        assert_eq!(parse_args(&["-h"]).unwrap(), Command::Help);
        assert_eq!(parse_args(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse_args(&["-v"]).unwrap(), Command::Version);
        assert_eq!(
            parse_args(&["--version", "-p", "1"]).unwrap(),
            Command::Version
        );
        assert!(matches!(
            parse_args(&["-t", "-c", "f"]),
            Ok(Command::TestConfig(_))
        ));
        assert_eq!(
            parse_args(&["-sl", "ldm=/tmp/x.pid"]).unwrap(),
            Command::Signal {
                signal: SignalKind::LameDuck,
                pid: Some("/tmp/x.pid".into())
            }
        );
        assert_eq!(
            parse_args(&["--signal=quit"]).unwrap(),
            Command::Signal {
                signal: SignalKind::Quit,
                pid: None
            }
        );
    }

    #[test]
    fn signal_mapping_matches_nats_server() {
        use nix::sys::signal::Signal::*;
        let map: Vec<_> = SignalKind::ALL
            .iter()
            .map(|k| (k.name(), k.signal()))
            .collect();
        assert_eq!(
            map,
            [
                ("stop", SIGKILL),
                ("quit", SIGINT),
                ("term", SIGTERM),
                ("reload", SIGHUP),
                ("reopen", SIGUSR1),
                ("ldm", SIGUSR2)
            ]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5GB").is_err());
        assert!(parse_size("MB").is_err());
    }

    fn try_config(args: &[&str], start: Config) -> Result<Config, String> {
        let mut cfg = start;
        run(args).apply(&mut cfg)?;
        Ok(cfg)
    }

    fn file_security(src: &str) -> Config {
        let map = crate::config::parse::parse_str(src, std::path::Path::new("/x.conf")).unwrap();
        let mut cfg = Config::default();
        crate::config::file::apply(&map, &mut cfg).unwrap();
        cfg
    }

    /// A self-signed certificate and its key, written once for these tests.
    fn cert_files() -> &'static (String, String) {
        static FILES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        FILES.get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("natter-flags-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            (cert.to_str().unwrap().into(), key.to_str().unwrap().into())
        })
    }

    #[test]
    fn user_and_pass_flags() {
        use crate::config::security::{Secret, GLOBAL_ACCOUNT};
        let cfg = config(&["--user", "u", "--pass", "p"]);
        let users = &cfg.security.users;
        assert_eq!(users.len(), 1);
        assert_eq!(
            (users[0].name.as_str(), users[0].account.as_str()),
            ("u", GLOBAL_ACCOUNT)
        );
        assert_eq!(users[0].password, Some(Secret::Plain("p".into())));
        assert!(cfg.security.auth_required());
        let hash = bcrypt::hash("p", 4).unwrap();
        let cfg = config(&["--user=u", &format!("--pass={hash}")]);
        assert_eq!(cfg.security.users[0].password, Some(Secret::Bcrypt(hash)));
        // They replace the authorization users of the file (nats-server keeps a `users` list
        // and ignores the flags; natter lets flags win, as for every other option).
        let file =
            file_security("authorization { users: [{user: a, pass: a}, {user: b, pass: b}] }");
        let cfg = try_config(&["--user", "u", "--pass", "p"], file).unwrap();
        assert_eq!(cfg.security.users.len(), 1);
        assert_eq!(cfg.security.users[0].name, "u");
    }

    #[test]
    fn user_and_pass_flag_errors() {
        let e = |args: &[&str], start: Config| try_config(args, start).unwrap_err();
        assert_eq!(
            e(&["--user", "u"], Config::default()),
            "--user needs --pass"
        );
        assert_eq!(
            e(&["--pass", "p"], Config::default()),
            "--pass needs --user"
        );
        assert!(e(
            &["--user", "u", "--pass", "$2a$11$bogus"],
            Config::default()
        )
        .starts_with("--pass: malformed bcrypt hash"));
        assert!(e(
            &["--user", "u", "--pass", "p", "--auth", "t"],
            Config::default()
        )
        .contains("cannot be combined with a token"));
        let accounts = file_security("accounts { A: { users: [{user: a, pass: a}] } }");
        assert!(e(&["--user", "u", "--pass", "p"], accounts.clone())
            .contains("cannot be combined with users in accounts"));
        let token = file_security("authorization { token: t }");
        assert!(e(&["--user", "u", "--pass", "p"], token).contains("with a token"));
        let no_auth =
            file_security("authorization { users: [{user: a, pass: a}] }\nno_auth_user: a");
        assert!(e(&["--user", "u", "--pass", "p"], no_auth)
            .contains("no_auth_user \"a\" is not a user"));
        assert!(e(&["--auth", "t"], accounts)
            .contains("--auth cannot be combined with configured users"));
        assert_eq!(
            e(&["--auth="], Config::default()),
            "--auth must not be empty"
        );
    }

    #[test]
    fn auth_flag_sets_the_token() {
        use crate::config::security::Secret;
        let cfg = config(&["--auth", "s3cr3t"]);
        assert_eq!(cfg.security.token, Some(Secret::Plain("s3cr3t".into())));
        let cfg = try_config(
            &["--auth", "new"],
            file_security("authorization { token: old, timeout: 3 }"),
        )
        .unwrap();
        assert_eq!(cfg.security.token, Some(Secret::Plain("new".into())));
        assert_eq!(
            cfg.security.auth_timeout,
            Some(std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn tls_flags() {
        let (cert, key) = cert_files();
        let cfg = config(&["--tlscert", cert, "--tlskey", key]);
        let tls = cfg.security.tls.unwrap();
        assert_eq!(
            (tls.cert_file.to_str(), tls.key_file.to_str()),
            (Some(cert.as_str()), Some(key.as_str()))
        );
        assert!(!tls.verify && tls.ca_file.is_none());
        assert_eq!(tls.timeout, std::time::Duration::from_secs(2));
        let cfg = config(&[
            "--tlsverify",
            "--tlscert",
            cert,
            "--tlskey",
            key,
            "--tlscacert",
            cert,
        ]);
        let tls = cfg.security.tls.unwrap();
        assert!(tls.verify);
        assert_eq!(
            tls.ca_file.as_deref().and_then(|p| p.to_str()),
            Some(cert.as_str())
        );
        // Flags override the block field by field; its other settings stay.
        let file = file_security(&format!(
            "tls {{ cert_file: \"{cert}\", key_file: \"{key}\", timeout: 5, verify: true }}"
        ));
        let cfg = try_config(&["--tls", "--tlscacert", cert, "--tlsverify=false"], file).unwrap();
        let tls = cfg.security.tls.unwrap();
        assert!(tls.verify, "flags never loosen the file");
        assert_eq!(tls.timeout, std::time::Duration::from_secs(5));
        assert!(tls.ca_file.is_some());
        assert_eq!(config(&["--tls=false"]).security.tls, None);
    }

    #[test]
    fn tls_flag_errors() {
        let (cert, key) = cert_files();
        let e = |args: &[&str]| try_config(args, Config::default()).unwrap_err();
        assert!(e(&["--tls"]).contains("TLS needs a server certificate"));
        assert!(e(&["--tlsverify"]).contains("TLS needs a server certificate"));
        assert!(e(&["--tlscacert", cert]).contains("TLS needs a server certificate"));
        assert!(e(&["--tlscert", cert]).contains("TLS needs the certificate's private key"));
        assert!(e(&["--tlskey", key]).contains("TLS needs a server certificate"));
        assert!(
            e(&["--tls", "--tlscert", "/nonexistent.pem", "--tlskey", key])
                .starts_with("TLS certificate: cannot read /nonexistent.pem")
        );
        assert!(e(&["--tls", "--tlscert", cert, "--tlskey", cert]).starts_with("TLS key: "));
        assert!(e(&[
            "--tls",
            "--tlscert",
            cert,
            "--tlskey",
            key,
            "--tlscacert",
            key
        ])
        .starts_with("TLS CA certificates: "));
    }

    #[test]
    fn usage_lists_security_flags() {
        for flag in [
            "--user <user>",
            "--pass <password>",
            "--auth <token>",
            "--tls ",
            "--tlscert <file>",
            "--tlskey <file>",
            "--tlsverify ",
            "--tlscacert <file>",
        ] {
            assert!(USAGE.contains(flag), "{flag}");
        }
        assert!(
            !RESERVED
                .iter()
                .any(|(long, _, _)| long.starts_with("tls")
                    || ["user", "pass", "auth"].contains(long))
        );
    }

    #[test]
    fn clap_command_is_consistent() {
        command().debug_assert();
    }
}
