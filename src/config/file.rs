//! Maps a parsed configuration file (see [`parse`](super::parse)) onto [`Config`], with
//! nats-server's key names, aliases, defaults and value rules.
//!
//! Option names match case-insensitively, as in nats-server. Keys nats-server knows but natter
//! does not act on yet, and unknown keys, are [`Warning`]s rather than errors (nats-server
//! rejects unknown keys only in pedantic mode and with `-t`). A bad value is a [`ConfigError`]
//! naming file, line and key. The security keys (`authorization`, `accounts`, `tls`,
//! `operator`, ...) are read by [`security::parse`], which is stricter: unknown keys inside
//! them, and settings natter cannot honour without serving more than asked, are errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{parse_file, ConfigError, Entry, Map, Pos, Value};
use super::{jetstream, security, Config, DEFAULT_PORT};

/// Largest `max_payload` and `max_control_line` nats-server accepts ("value is too big").
const MAX_I32_SIZE: i64 = i32::MAX as i64;

/// nats-server logs a warning for payload limits above this (8 MB).
const LARGE_PAYLOAD: i64 = 8 * 1024 * 1024;

/// The shortest lame-duck duration nats-server accepts.
const MIN_LAME_DUCK: Duration = Duration::from_secs(30);

/// Top-level keys nats-server 2.15 accepts that natter does not act on yet.
const NOT_SUPPORTED: &[&str] = &[
    "allow_non_tls",
    "client_advertise",
    "cluster",
    "connect_error_reports",
    "default_js_domain",
    "disable_sublist_cache",
    "gateway",
    "http_base_path",
    "https",
    "https_port",
    "leaf",
    "leafnodes",
    "mappings",
    "maps",
    "max_closed_clients",
    "max_traced_msg_len",
    "mqtt",
    "no_header_support",
    "no_sublist_cache",
    "no_sys_acc",
    "no_system",
    "no_system_account",
    "ocsp",
    "ocsp_cache",
    "prof_block_rate",
    "prof_port",
    "proxies",
    "reconnect_error_reports",
    "remote_syslog",
    "resolver_tls",
    "server_metadata",
    "server_tags",
    "syslog",
    "trace_headers",
    "trace_verbose",
    "websocket",
    "write_timeout",
    "ws",
];

/// Something in the file that natter accepted but ignored or that deserves attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the key is.
    pub pos: Pos,
    /// What is wrong, without the position.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.pos.file.display(),
            self.pos.line,
            self.message
        )
    }
}

/// Reads a configuration file into a [`Config`] that starts from the defaults.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let map = parse_file(path)?;
    let mut config = Config {
        config_file: Some(path.to_path_buf()),
        ..Config::default()
    };
    let warnings = apply(&map, &mut config)?;
    Ok((config, warnings))
}

/// Applies a parsed file's top-level keys to `config`, returning the warnings.
pub fn apply(map: &Map, config: &mut Config) -> Result<Vec<Warning>, ConfigError> {
    let mut warnings = Vec::new();
    for entry in map {
        apply_entry(entry, config, &mut warnings)?;
    }
    config.security = security::parse(map, &mut warnings)?;
    jetstream::apply(map, config, &mut warnings)?;
    // Checked once all keys are in, since their order in the file does not matter.
    if u64::from(config.max_payload) > config.max_pending {
        let message = format!(
            "max_payload ({}) cannot be higher than max_pending ({})",
            config.max_payload, config.max_pending
        );
        let key = |name: &str| map.iter().find(|e| e.key.eq_ignore_ascii_case(name));
        return Err(match key("max_payload").or_else(|| key("max_pending")) {
            Some(e) => ConfigError::at(&e.pos, message),
            None => ConfigError::in_file(Path::new("<config>"), message),
        });
    }
    Ok(warnings)
}

fn apply_entry(e: &Entry, c: &mut Config, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    let mut warn = |message: String| {
        warnings.push(Warning {
            pos: e.pos.clone(),
            message,
        })
    };
    match e.key.to_ascii_lowercase().as_str() {
        "port" => c.port = port(e, int(e)?)?,
        "host" | "net" => c.host = string(e)?.to_string(),
        "listen" => {
            let (host, n) = host_port(e)?;
            c.port = port(e, n)?;
            if let Some(host) = host {
                c.host = host;
            }
        }
        "http_port" | "monitor_port" => c.http_port = http_port(e, int(e)?)?,
        "http" => {
            let (host, n) = host_port(e)?;
            c.http_port = http_port(e, n)?;
            if let Some(host) = host {
                c.http_host = Some(host);
            }
        }
        "server_name" => {
            let name = string(e)?;
            if name.contains(' ') {
                return Err(fail(e, "server name cannot contain spaces"));
            }
            c.server_name = Some(name.to_string());
        }
        "max_payload" => {
            let n = size(e, MAX_I32_SIZE)?;
            if n > LARGE_PAYLOAD {
                warn(format!(
                    "max_payload: payloads over 8 MB are generally discouraged and could lead to \
                     poor performance ({n})"
                ));
            }
            c.max_payload = if n == 0 { 1024 * 1024 } else { n as u32 };
        }
        "max_pending" => {
            let n = size(e, i64::MAX)?;
            c.max_pending = if n == 0 { 64 * 1024 * 1024 } else { n as u64 };
        }
        // nats-server refuses every client when this is 0 or negative (observed), not unlimited.
        "max_connections" | "max_conn" => c.max_connections = int(e)?.max(0) as usize,
        "max_subscriptions" | "max_subs" => c.max_subscriptions = int(e)?.max(0) as usize,
        "max_control_line" => {
            let n = size(e, MAX_I32_SIZE)?;
            c.max_control_line = if n == 0 { 4096 } else { n as usize };
        }
        "ping_interval" => {
            let d = duration(e, true, &mut warn)?;
            c.ping_interval = if d.is_zero() {
                Duration::from_secs(120)
            } else {
                d
            };
        }
        "ping_max" => {
            let n = int(e)?;
            let n = u32::try_from(n).map_err(|_| fail(e, format!("must be 0 or more, got {n}")))?;
            c.ping_max = if n == 0 { 2 } else { n };
        }
        "write_deadline" => {
            let d = duration(e, true, &mut warn)?;
            c.write_deadline = if d.is_zero() {
                Duration::from_secs(10)
            } else {
                d
            };
        }
        "lame_duck_duration" => {
            let d = duration(e, false, &mut warn)?;
            if d < MIN_LAME_DUCK {
                return Err(fail(
                    e,
                    format!("invalid lame_duck_duration of {d:?}, minimum is 30 seconds"),
                ));
            }
            c.lame_duck_duration = d;
        }
        "lame_duck_grace_period" => c.lame_duck_grace_period = duration(e, false, &mut warn)?,
        "pid_file" | "pidfile" => c.pid_file = Some(PathBuf::from(string(e)?)),
        "ports_file_dir" => c.ports_file_dir = Some(PathBuf::from(string(e)?)),
        "log_file" | "logfile" => c.log.file = Some(PathBuf::from(string(e)?)),
        "no_fast_producer_stall" => c.fast_producer_stall = !boolean(e)?,
        "debug" => c.log.debug = boolean(e)?,
        "trace" => c.log.trace = boolean(e)?,
        "logtime" => c.log.time = boolean(e)?,
        "logtime_utc" => c.log.time_utc = boolean(e)?,
        "logfile_size_limit" | "log_size_limit" => c.log.size_limit = size(e, i64::MAX)? as u64,
        "logfile_max_num" | "log_max_num" => c.log.max_num = size(e, i64::from(u32::MAX))? as usize,
        "log_format" => c.log.format = string(e)?.parse().map_err(|m: String| fail(e, m))?,
        // Read together by `security::parse`, since they refer to each other.
        name if security::KEYS.contains(&name) => {}
        // Read together by `jetstream::apply` (a top-level store_dir conflicts with the block's).
        "jetstream" | "store_dir" | "storedir" => {}
        name if NOT_SUPPORTED.contains(&name) => warn(format!(
            "{:?} is not supported by natter yet, ignored",
            e.key
        )),
        // nats-server does not report keys used as `$variables` either.
        _ if e.used_as_variable => {}
        _ => warn(format!("unknown field {:?}", e.key)),
    }
    Ok(())
}

pub(crate) fn fail(e: &Entry, message: impl fmt::Display) -> ConfigError {
    ConfigError::at(&e.pos, format!("{}: {message}", e.key))
}

pub(crate) fn expected(e: &Entry, what: &str) -> ConfigError {
    fail(
        e,
        format!("expected {what}, got {}", e.item.value.describe()),
    )
}

pub(crate) fn int(e: &Entry) -> Result<i64, ConfigError> {
    match e.item.value {
        Value::Int(n) => Ok(n),
        _ => Err(expected(e, "an integer")),
    }
}

/// A byte count: an integer, with or without a size suffix (`1MB`), at most `max`.
fn size(e: &Entry, max: i64) -> Result<i64, ConfigError> {
    let Value::Int(n) = e.item.value else {
        return Err(expected(e, "a size (e.g. 1MB)"));
    };
    if n < 0 {
        return Err(fail(e, format!("must not be negative, got {n}")));
    }
    if n > max {
        return Err(fail(e, format!("value {n} is too big (most is {max})")));
    }
    Ok(n)
}

pub(crate) fn string(e: &Entry) -> Result<&str, ConfigError> {
    match &e.item.value {
        Value::String(s) => Ok(s),
        _ => Err(expected(e, "a string")),
    }
}

pub(crate) fn boolean(e: &Entry) -> Result<bool, ConfigError> {
    match e.item.value {
        Value::Bool(b) => Ok(b),
        _ => Err(expected(e, "true or false")),
    }
}

/// `port` and the port of `listen`: -1 asks for an ephemeral port (0 to the OS), 0 is the default.
fn port(e: &Entry, n: i64) -> Result<u16, ConfigError> {
    match n {
        -1 => Ok(0),
        0 => Ok(DEFAULT_PORT),
        1..=65535 => Ok(n as u16),
        _ => Err(fail(
            e,
            format!("port must be between -1 and 65535, got {n}"),
        )),
    }
}

/// `listen`: `host:port`, `[v6]:port`, `:port`, or a bare port number.
/// A `listen`-style address: a bare port, or `host:port` (`:port`, `[v6]:port`); the host is
/// `None` for a bare port and `0.0.0.0` for `:port`.
fn host_port(e: &Entry) -> Result<(Option<String>, i64), ConfigError> {
    let text = match &e.item.value {
        Value::Int(n) => return Ok((None, *n)),
        Value::String(s) => s,
        _ => return Err(expected(e, "a port or host:port")),
    };
    let bad = || fail(e, format!("could not parse address string {text:?}"));
    let (host, port_text) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let n = port_text
        .parse::<i64>()
        .map_err(|_| fail(e, format!("could not parse port {port_text:?}")))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok((Some(host.to_string()), n))
}

/// The monitoring port: -1 random, 0 off, else the port.
fn http_port(e: &Entry, n: i64) -> Result<Option<u16>, ConfigError> {
    if !(-1..=65535).contains(&n) {
        return Err(fail(e, format!("port must be -1 to 65535, got {n}")));
    }
    Ok(crate::config::monitor_port(n))
}

/// A duration string as Go's `time.ParseDuration` reads it (`"2m"`, `"1m30s"`, `"1.5s"`,
/// `"500ms"`); nats-server also takes a bare integer as seconds for `ping_interval` and
/// `write_deadline`, with a warning, but not for the lame-duck keys. Beware: unquoted `2m` is
/// the integer 2000000 (a size suffix), so 2000000 seconds, exactly as in nats-server.
pub(crate) fn duration(
    e: &Entry,
    int_seconds: bool,
    warn: &mut impl FnMut(String),
) -> Result<Duration, ConfigError> {
    const EXAMPLE: &str = "a duration (e.g. \"2m\", \"30s\", \"1m30s\")";
    match &e.item.value {
        Value::Int(n) if int_seconds => {
            let secs =
                u64::try_from(*n).map_err(|_| fail(e, format!("must not be negative, got {n}")))?;
            warn(format!(
                "{}: an integer is read as seconds; write a duration such as \"{secs}s\"",
                e.key
            ));
            Ok(Duration::from_secs(secs))
        }
        Value::String(s) => match go_duration(s) {
            Ok(d) => Ok(d),
            Err(DurationError::Negative) => {
                Err(fail(e, format!("must not be negative, got {s:?}")))
            }
            Err(DurationError::Invalid) => Err(expected(e, EXAMPLE)),
        },
        _ => Err(expected(e, EXAMPLE)),
    }
}

pub(crate) use natter_streams::util::{go_duration, DurationError};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::parse_str;

    fn apply_str(src: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        let map = parse_str(src, Path::new("/etc/natter.conf"))?;
        let mut config = Config::default();
        let warnings = apply(&map, &mut config)?;
        Ok((config, warnings))
    }

    fn config(src: &str) -> Config {
        let (c, w) = apply_str(src).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.is_empty(), "unexpected warnings: {w:?}");
        c
    }

    fn error(src: &str) -> String {
        apply_str(src).expect_err("expected an error").to_string()
    }

    fn warnings(src: &str) -> Vec<String> {
        let (_, w) = apply_str(src).unwrap_or_else(|e| panic!("{e}"));
        w.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn empty_file_keeps_defaults() {
        assert_eq!(config("# nothing\n"), Config::default());
    }

    #[test]
    fn every_core_key() {
        let c = config(
            "port: 4333\nhost: 127.0.0.1\nserver_name: n1\nmax_payload: 2MB\nmax_pending: 32MB\n\
             max_connections: 100\nmax_subscriptions: 10\nmax_control_line: 8KB\n\
             ping_interval: \"30s\"\nping_max: 5\nwrite_deadline: \"2s\"\n\
             lame_duck_duration: \"1m\"\nlame_duck_grace_period: \"5s\"\n\
             pid_file: /tmp/n.pid\nports_file_dir: /tmp\nlog_file: \"/tmp/n.log\"\n\
             debug: true\ntrace: yes\nlogtime: off\nlogtime_utc: on\n\
             logfile_size_limit: 1MB\nlogfile_max_num: 3\nlog_format: json\n",
        );
        assert_eq!(c.log.size_limit, 1 << 20);
        assert_eq!(c.log.max_num, 3);
        assert_eq!(c.log.format, crate::config::LogFormat::Json);
        assert_eq!(c.port, 4333);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.server_name.as_deref(), Some("n1"));
        assert_eq!(c.max_payload, 2 << 20);
        assert_eq!(c.max_pending, 32 << 20);
        assert_eq!(c.max_connections, 100);
        assert_eq!(c.max_subscriptions, 10);
        assert_eq!(c.max_control_line, 8192);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.ping_max, 5);
        assert_eq!(c.write_deadline, Duration::from_secs(2));
        assert_eq!(c.lame_duck_duration, Duration::from_secs(60));
        assert_eq!(c.lame_duck_grace_period, Duration::from_secs(5));
        assert_eq!(c.pid_file, Some(PathBuf::from("/tmp/n.pid")));
        assert_eq!(c.ports_file_dir, Some(PathBuf::from("/tmp")));
        assert_eq!(c.log.file, Some(PathBuf::from("/tmp/n.log")));
        assert!(c.log.debug && c.log.trace && !c.log.time && c.log.time_utc);
    }

    #[test]
    fn aliases_and_key_case() {
        let c = config(
            "net: ::1\nmax_conn: 7\nmax_subs: 8\npidfile: a.pid\nlogfile: a.log\nPORT: 5\nMax_Payload: 1k\n",
        );
        assert_eq!(c.host, "::1");
        assert_eq!((c.max_connections, c.max_subscriptions), (7, 8));
        assert_eq!(c.pid_file, Some(PathBuf::from("a.pid")));
        assert_eq!(c.log.file, Some(PathBuf::from("a.log")));
        assert_eq!((c.port, c.max_payload), (5, 1000));
    }

    #[test]
    fn port_rules() {
        assert_eq!(config("port: -1").port, 0);
        assert_eq!(config("port: 0").port, DEFAULT_PORT);
        assert_eq!(config("port: 65535").port, 65535);
        assert_eq!(
            error("\nport: 70000\n"),
            "/etc/natter.conf:2:1: port: port must be between -1 and 65535, got 70000"
        );
        assert!(error("port: -2").contains("got -2"));
        assert_eq!(
            error("port: \"4222\""),
            "/etc/natter.conf:1:1: port: expected an integer, got \"4222\""
        );
    }

    #[test]
    fn monitoring_port_forms() {
        assert_eq!(config("http_port: 8222").http_port, Some(8222));
        assert_eq!(config("monitor_port: -1").http_port, Some(0));
        assert_eq!(config("http_port: 0").http_port, None);
        let c = config("http: 127.0.0.1:8333");
        assert_eq!((c.monitor_host(), c.http_port), ("127.0.0.1", Some(8333)));
        assert_eq!(config("http: 8334").http_port, Some(8334));
        assert!(error("http_port: 70000").contains("http_port: port must be -1 to 65535"));
    }

    #[test]
    fn listen_forms() {
        let c = config("listen: 127.0.0.1:4333");
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 4333));
        let c = config("listen: \":4334\"");
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 4334));
        let c = config("listen: 4335");
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 4335));
        let c = config("listen: \"[::1]:4336\"");
        assert_eq!((c.host.as_str(), c.port), ("::1", 4336));
        let c = config("listen: localhost:-1");
        assert_eq!((c.host.as_str(), c.port), ("localhost", 0));
        assert!(error("listen: localhost").contains("could not parse address string \"localhost\""));
        assert!(error("listen: ::1:4333").contains("could not parse address string"));
        assert!(error("listen: 127.0.0.1:x").contains("could not parse port \"x\""));
        assert!(error("listen: 1.5").contains("listen: expected a port or host:port, got 1.5"));
    }

    #[test]
    fn sizes() {
        assert_eq!(config("max_payload: 1KB").max_payload, 1024);
        assert_eq!(config("max_payload: 1k").max_payload, 1000);
        assert_eq!(config("max_payload: 0").max_payload, 1 << 20);
        assert_eq!(config("max_pending: 0").max_pending, 64 << 20);
        assert_eq!(config("max_control_line: 0").max_control_line, 4096);
        assert_eq!(
            error("a: 1\nmax_payload: big\n"),
            "/etc/natter.conf:2:1: max_payload: expected a size (e.g. 1MB), got \"big\""
        );
        assert!(error("max_payload: -5").contains("max_payload: must not be negative, got -5"));
        assert!(error("max_payload: 2GB").contains("is too big"));
        assert!(error("max_control_line: 5GB").contains("is too big"));
        assert!(error("max_payload: 1.5").contains("got 1.5"));
    }

    #[test]
    fn max_payload_cannot_exceed_max_pending() {
        assert_eq!(
            error("max_payload: 65MB\n"),
            "/etc/natter.conf:1:1: max_payload (68157440) cannot be higher than max_pending (67108864)"
        );
        assert!(error("max_pending: 1k\n").contains("1:1: max_payload (1048576) cannot"));
        let (c, w) = apply_str("max_pending: 128MB\nmax_payload: 64MB\n").unwrap();
        assert_eq!(c.max_payload, 64 << 20);
        assert_eq!(w.len(), 1);
        assert!(w[0]
            .to_string()
            .starts_with("/etc/natter.conf:2: max_payload: payloads over 8 MB"));
    }

    #[test]
    fn limits_that_clamp() {
        // Observed on nats-server 2.15: 0 or negative max_connections refuses every client.
        assert_eq!(config("max_connections: 0").max_connections, 0);
        assert_eq!(config("max_conn: -1").max_connections, 0);
        assert_eq!(config("max_subs: -1").max_subscriptions, 0);
        assert_eq!(config("ping_max: 0").ping_max, 2);
        assert!(error("ping_max: -1").contains("ping_max: must be 0 or more"));
    }

    #[test]
    fn durations() {
        let cases = [
            ("\"2m\"", 120_000),
            ("\"1m30s\"", 90_000),
            ("1m30s", 90_000),
            ("\"1.5s\"", 1_500),
            ("\"500ms\"", 500),
            ("\"1h\"", 3_600_000),
            ("\"+5s\"", 5_000),
            ("\".5s\"", 500),
            ("\"1h2m3s4ms\"", 3_723_004),
        ];
        for (text, millis) in cases {
            let c = config(&format!("ping_interval: {text}"));
            assert_eq!(c.ping_interval, Duration::from_millis(millis), "{text}");
        }
        assert_eq!(go_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(go_duration("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(go_duration("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(go_duration("-5s"), Err(DurationError::Negative));
        for bad in ["", "90", "1d", "abc", "1m 30s", "s", ".s", "3000000h"] {
            assert_eq!(go_duration(bad), Err(DurationError::Invalid), "{bad:?}");
        }
        // "0s" means the default, as in nats-server.
        assert_eq!(
            config("ping_interval: \"0s\"").ping_interval,
            Duration::from_secs(120)
        );
        assert_eq!(
            config("write_deadline: \"0s\"").write_deadline,
            Duration::from_secs(10)
        );
        assert_eq!(
            error("\n\nwrite_deadline: \"1d\""),
            "/etc/natter.conf:3:1: write_deadline: expected a duration (e.g. \"2m\", \"30s\", \"1m30s\"), got \"1d\""
        );
        assert!(error("ping_interval: \"-5s\"").contains("must not be negative"));
        assert!(error("ping_interval: true").contains("expected a duration"));
    }

    #[test]
    fn integer_durations_are_seconds_with_a_warning() {
        let (c, w) = apply_str("ping_interval: 45\nwrite_deadline: 3\n").unwrap();
        assert_eq!(c.ping_interval, Duration::from_secs(45));
        assert_eq!(c.write_deadline, Duration::from_secs(3));
        assert_eq!(
            w[0].to_string(),
            "/etc/natter.conf:1: ping_interval: an integer is read as seconds; write a duration such as \"45s\""
        );
        // Unquoted 2m is the size 2000000, so 2000000 seconds, as nats-server reads it.
        let (c, _) = apply_str("ping_interval: 2m").unwrap();
        assert_eq!(c.ping_interval, Duration::from_secs(2_000_000));
        assert!(error("ping_interval: -1").contains("must not be negative"));
    }

    #[test]
    fn lame_duck_rules() {
        assert_eq!(
            config("lame_duck_duration: 30s").lame_duck_duration,
            Duration::from_secs(30)
        );
        assert!(error("lame_duck_duration: \"2s\"").contains("minimum is 30 seconds"));
        assert!(error("lame_duck_duration: 120").contains("expected a duration"));
        assert_eq!(
            config("lame_duck_grace_period: \"0s\"").lame_duck_grace_period,
            Duration::ZERO
        );
        assert!(error("lame_duck_grace_period: \"-1s\"").contains("must not be negative"));
    }

    #[test]
    fn value_type_errors() {
        assert!(error("server_name: \"a b\"")
            .contains("server_name: server name cannot contain spaces"));
        assert!(error("server_name: 12").contains("server_name: expected a string, got 12"));
        assert!(error("debug: \"true\"").contains("debug: expected true or false, got \"true\""));
        assert!(error("host: [a]").contains("host: expected a string, got an array"));
        assert!(error("max_conn: {}").contains("max_conn: expected an integer, got a map"));
    }

    #[test]
    fn unsupported_and_unknown_keys_warn() {
        let w = warnings(
            "leafnodes {\n  port: 7422\n}\nmqtt { port: 1883 }\nfoo: 1\ncluster: {}\n\
             syslog: true\nV: 4222\nport: $V\n",
        );
        assert_eq!(
            w,
            [
                "/etc/natter.conf:1: \"leafnodes\" is not supported by natter yet, ignored",
                "/etc/natter.conf:4: \"mqtt\" is not supported by natter yet, ignored",
                "/etc/natter.conf:5: unknown field \"foo\"",
                "/etc/natter.conf:6: \"cluster\" is not supported by natter yet, ignored",
                "/etc/natter.conf:7: \"syslog\" is not supported by natter yet, ignored",
            ]
        );
    }

    #[test]
    fn security_keys_are_read() {
        let c =
            config("port: 4222\nauthorization { token: s3cret, timeout: 3 }\nno_auth_user: \"\"\n");
        assert!(c.security.token.is_some());
        assert_eq!(c.security.auth_timeout, Some(Duration::from_secs(3)));
        let c = config("accounts { A: { users: [{user: a, pass: a}] } }\nsystem_account: A\n");
        assert_eq!(c.security.users[0].account, "A");
        assert_eq!(c.security.system_account.as_deref(), Some("A"));
        // Still errors, with position and key, for what cannot be honoured.
        for (src, piece) in [
            ("tls { cert_file: a }", "tls: missing 'key_file'"),
            (
                "authorization { token: s3cret, bogus: 1 }",
                "bogus: unknown field",
            ),
            ("trusted: OABC", "refusing to start"),
        ] {
            let err = apply_str(&format!("port: 4222\n{src}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("/etc/natter.conf:2:"), "{err}");
            assert!(err.contains(piece), "{err}");
        }
        // Keys left to security::parse are not reported as unknown or unsupported.
        let w = warnings("no_auth_user: \"\"\nsystem_account: \"$SYS\"\nresolver: MEMORY\n");
        assert_eq!(
            w,
            ["/etc/natter.conf:3: resolver is ignored without `operator`"]
        );
    }

    #[test]
    fn load_reads_file_and_includes() {
        let dir = std::env::temp_dir().join(format!(
            "natter-file-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("limits.conf"), "max_payload: 512KB\nbogus: 1\n").unwrap();
        let main = dir.join("main.conf");
        std::fs::write(&main, "port: -1\ninclude limits.conf\n").unwrap();
        let (c, w) = load(&main).unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.max_payload, 512 * 1024);
        assert_eq!(c.config_file.as_deref(), Some(main.as_path()));
        assert_eq!(w.len(), 1);
        assert!(w[0]
            .to_string()
            .ends_with("limits.conf:2: unknown field \"bogus\""));
        std::fs::write(&main, "port: 1\nmax_pending: -1\n").unwrap();
        let err = load(&main).unwrap_err().to_string();
        assert!(
            err.ends_with("main.conf:2:1: max_pending: must not be negative, got -1"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_values_for_known_keys_never_panic(
            key in proptest::sample::select(vec![
                "port", "listen", "host", "server_name", "max_payload", "max_pending",
                "max_conn", "max_subs", "max_control_line", "ping_interval", "ping_max",
                "write_deadline", "lame_duck_duration", "lame_duck_grace_period", "debug",
                "pid_file", "jetstream", "whatever",
            ]),
            value in "(-?[0-9]{1,22}[kKmMgGtTpPeE]?[bBiI]?|\"[-+0-9.a-zµ:\\[\\]]{0,12}\"|[a-z0-9:.\\[\\]-]{1,12}|\\{\\}|\\[1\\]|yes|1\\.5)",
        ) {
            let _ = apply_str(&format!("{key}: {value}\n"));
        }
    }

    #[test]
    fn shipped_example_configs_load_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        for name in [
            "natter.conf",
            "include-example.conf",
            "auth-token.conf",
            "auth-users.conf",
            "auth-nkeys.conf",
            "accounts.conf",
            "operator.conf",
        ] {
            let (c, w) = load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            assert!(w.is_empty(), "{name}: {w:?}");
            assert_eq!(c.config_file, Some(dir.join(name)));
        }
        // tls.conf names certificate files relative to the working directory; point it at
        // freshly made ones.
        let certs = std::env::temp_dir().join(format!("natter-conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&certs).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(certs.join("server-cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(certs.join("server-key.pem"), ck.signing_key.serialize_pem()).unwrap();
        let text = std::fs::read_to_string(dir.join("tls.conf")).unwrap();
        let text = text.replace("\"certs/", &format!("\"{}/", certs.display()));
        let (c, w) = apply_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.is_empty(), "tls.conf: {w:?}");
        let tls = c.security.tls.unwrap();
        assert_eq!(tls.cert_file, certs.join("server-cert.pem"));
        assert_eq!(tls.timeout, Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&certs);
    }
}
