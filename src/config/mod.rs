//! Server configuration: one validated [`Config`], built from embedded defaults, then the
//! configuration file (`-c`), then command-line flags, in that order of precedence, as
//! nats-server does it.

pub mod file;
pub mod flags;
pub mod jetstream;
pub mod parse;
pub mod security;

use std::path::PathBuf;
use std::time::Duration;

/// nats-server's default client port.
pub const DEFAULT_PORT: u16 = 4222;

/// A non-negative Go duration (`"2m"`, `"1m30s"`, `"500ms"`), as nats-server's configuration
/// and the nats CLI write them; `None` if it is not one.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    file::go_duration(text).ok()
}

/// The monitoring port a setting asks for, as nats-server reads it: `-1` a random port, `0` off.
pub fn monitor_port(port: i64) -> Option<u16> {
    match port {
        -1 => Some(0),
        p => u16::try_from(p).ok().filter(|&p| p > 0),
    }
}

/// Everything the core needs to run, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interface to listen on (`-a`, `host`, `listen`).
    pub host: String,
    /// Port to listen on; 0 binds an ephemeral port (what `-p -1` / `port: -1` asks for).
    pub port: u16,
    /// Interface for the HTTP monitoring port (`http: host:port`); the client interface when
    /// unset, as nats-server does.
    pub http_host: Option<String>,
    /// HTTP monitoring port (`-m`, `http_port`); `None` is off, `Some(0)` a random port.
    pub http_port: Option<u16>,
    /// Server name advertised in INFO; the server id when unset.
    pub server_name: Option<String>,
    /// Largest payload (headers included) a client may publish.
    pub max_payload: u32,
    /// Bytes a connection may have queued for writing before it is a slow consumer.
    pub max_pending: u64,
    /// Pause a publisher briefly when a receiver is far behind, rather than dropping the
    /// receiver at once (`no_fast_producer_stall: true` turns this off).
    pub fast_producer_stall: bool,
    /// Most client connections accepted at once.
    pub max_connections: usize,
    /// Most subscriptions one connection may hold; 0 is unlimited.
    pub max_subscriptions: usize,
    /// Longest protocol control line (the line before a payload) accepted.
    pub max_control_line: usize,
    /// How often the server PINGs an idle client.
    pub ping_interval: Duration,
    /// Unanswered PINGs tolerated before `Stale Connection`.
    pub ping_max: u32,
    /// Longest a single flush to a client may block before it is a slow consumer.
    pub write_deadline: Duration,
    /// Time a client has to send CONNECT when authentication is required.
    pub auth_timeout: Duration,
    /// How long lame-duck mode spreads client disconnects over.
    pub lame_duck_duration: Duration,
    /// Grace period before lame-duck mode starts closing clients.
    pub lame_duck_grace_period: Duration,
    /// Logging options.
    pub log: LogConfig,
    /// File to write the server's pid to (`-P`, `pid_file`).
    pub pid_file: Option<PathBuf>,
    /// Directory to write `<exe>_<pid>.ports` into once listening (`--ports_file_dir`).
    pub ports_file_dir: Option<PathBuf>,
    /// The configuration file this config was read from, if any.
    pub config_file: Option<PathBuf>,
    /// Authentication, authorization, accounts and TLS.
    pub security: security::Security,
    /// JetStream (`-js`, `jetstream { }`): `Some` when enabled, `None` (the default) when off.
    pub jetstream: Option<jetstream::JetStreamConfig>,
    /// JetStream settings the file gave while leaving JetStream off (a top-level `store_dir`,
    /// or `jetstream { enabled: false, ... }`): `-js` enables JetStream with them, as
    /// nats-server does. Always `None` while `jetstream` is `Some`.
    pub jetstream_off: Option<jetstream::JetStreamConfig>,
}

/// Where and how much to log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Log file (`-l`, `log_file`); standard error when unset.
    pub file: Option<PathBuf>,
    /// Debug messages (`-D`, `debug`).
    pub debug: bool,
    /// Protocol trace (`-V`, `trace`).
    pub trace: bool,
    /// Timestamps on each line (`logtime`; `-T=false` turns them off).
    pub time: bool,
    /// Timestamps in UTC (`logtime_utc`).
    pub time_utc: bool,
    /// Line format (`--log_format`, `log_format`): nats-server's text, or one JSON object per
    /// line for log pipelines.
    pub format: LogFormat,
    /// Rotate the log file once it would grow past this many bytes (`logfile_size_limit`,
    /// `--log_size_limit`); 0 never rotates.
    pub size_limit: u64,
    /// Keep at most this many rotated files (`logfile_max_num`); 0 keeps all.
    pub max_num: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[pid] 2026/11/22 01:15:38.572517 [INF] message`, as nats-server writes.
    #[default]
    Text,
    /// `{"time":"...","level":"info","pid":1,"msg":"...", fields...}`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format \"{s}\": expected text or json")),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            file: None,
            debug: false,
            trace: false,
            time: true,
            time_utc: false,
            format: LogFormat::Text,
            size_limit: 0,
            max_num: 0,
        }
    }
}

impl Config {
    /// The interface the monitoring port listens on.
    pub fn monitor_host(&self) -> &str {
        self.http_host.as_deref().unwrap_or(&self.host)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".to_string(),
            port: DEFAULT_PORT,
            http_host: None,
            http_port: None,
            server_name: None,
            max_payload: 1024 * 1024,
            max_pending: 64 * 1024 * 1024,
            fast_producer_stall: true,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_control_line: 4096,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(2),
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            log: LogConfig::default(),
            pid_file: None,
            ports_file_dir: None,
            config_file: None,
            security: security::Security::default(),
            jetstream: None,
            jetstream_off: None,
        }
    }
}
