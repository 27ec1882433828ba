//! Logging: a `tracing` subscriber whose lines look exactly like nats-server's, e.g.
//! `[4242] 2026/11/22 01:15:38.572517 [INF] Listening for client connections on 0.0.0.0:4222`,
//! because test harnesses and operators grep them.
//!
//! Levels map to nats-server's tags (`[ERR]`, `[WRN]`, `[INF]`, `[DBG]`, `[TRC]`). As in
//! nats-server, debug and trace are independent switches: `-V` alone shows `[TRC]` lines but not
//! `[DBG]` ones. Local time comes from chrono, which follows `TZ` and `/etc/localtime`.
//! [`reopen`] reopens the log file after an external rotation; with `logfile_size_limit` natter
//! rotates the file itself, as nats-server does: the full file is renamed to
//! `<file>.<YYYY.MM.DD.HH.MM.SS.nanos>` and a new one started, keeping at most
//! `logfile_max_num` of the renamed files. `--log_format json` writes one JSON object per line
//! instead (`time`, `level`, `pid`, `msg`, then the event's fields), for log pipelines.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};

use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use tracing_subscriber::{reload, Registry};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: nats-server-style lines to `cfg.file` (appended, created if
/// missing) or to standard error. Fails if the file cannot be opened or a subscriber is installed.
pub fn init(cfg: &LogConfig) -> io::Result<()> {
    let (filter, handle) = reload::Layer::new(Levels::of(cfg));
    let layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat::new(cfg))
        .with_writer(make_writer(cfg)?)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(io::Error::other)?;
    let _ = LEVELS.set(handle);
    Ok(())
}

/// Changes the levels in force (a configuration reload): debug, trace. Callsites are
/// re-evaluated, so switching trace off costs nothing on the hot paths afterwards.
pub fn set_levels(cfg: &LogConfig) -> Result<(), String> {
    match LEVELS.get() {
        Some(handle) => handle.reload(Levels::of(cfg)).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

static LEVELS: OnceLock<reload::Handle<Levels, Registry>> = OnceLock::new();

/// Lets debug events through only with `debug`, trace events only with `trace` (independent
/// switches, as in nats-server).
#[derive(Debug, Clone, Copy)]
struct Levels {
    debug: bool,
    trace: bool,
}

impl Levels {
    fn of(cfg: &LogConfig) -> Levels {
        Levels {
            debug: cfg.debug,
            trace: cfg.trace,
        }
    }

    fn allows(&self, level: &Level) -> bool {
        match *level {
            Level::DEBUG => self.debug,
            Level::TRACE => self.trace,
            _ => true,
        }
    }
}

impl<S> Filter<S> for Levels {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.allows(meta.level())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.allows(meta.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(max_level(self.debug, self.trace))
    }
}

/// The most verbose level the switches let through.
fn max_level(debug: bool, trace: bool) -> LevelFilter {
    match (debug, trace) {
        (_, true) => LevelFilter::TRACE,
        (true, false) => LevelFilter::DEBUG,
        (false, false) => LevelFilter::INFO,
    }
}

/// Where lines go: the log file, or standard error.
fn make_writer(cfg: &LogConfig) -> io::Result<BoxMakeWriter> {
    let Some(path) = &cfg.file else {
        return Ok(BoxMakeWriter::new(io::stderr));
    };
    let file = open_append(path)?;
    let written = file.metadata()?.len();
    let file = LogFile {
        path: path.clone(),
        size_limit: cfg.size_limit,
        max_num: cfg.max_num,
        json: cfg.format == LogFormat::Json,
        file: Mutex::new(Current { file, written }),
    };
    let already = || io::Error::other("logging is already initialised");
    LOG_FILE.set(file).map_err(|_| already())?;
    let file = LOG_FILE.get().ok_or_else(already)?;
    Ok(BoxMakeWriter::new(move || FileWriter(file)))
}

/// The log file in use, kept so [`reopen`] can swap it after rotation.
static LOG_FILE: OnceLock<LogFile> = OnceLock::new();

/// A log file and the path it was opened from.
struct LogFile {
    path: PathBuf,
    /// Rotate before a write would take the file past this (0: never).
    size_limit: u64,
    /// Rotated files kept (0: all).
    max_num: usize,
    /// Whether lines are JSON (the rotation notice must match).
    json: bool,
    file: Mutex<Current>,
}

/// The open file and how many bytes it holds.
struct Current {
    file: File,
    written: u64,
}

impl LogFile {
    /// Renames the full file aside, starts a new one, and removes the oldest rotated files
    /// past `max_num`. On failure the current file is kept (logging must not stop).
    fn rotate(&self, current: &mut Current) {
        use io::Write;
        let stamp = chrono::Local::now().format("%Y.%m.%d.%H.%M.%S.%f");
        let backup = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        if std::fs::rename(&self.path, &backup).is_err() {
            return;
        }
        let Ok(file) = open_append(&self.path) else {
            return;
        };
        *current = Current { file, written: 0 };
        let msg = format!("Rotated log, backup saved as {}", backup.display());
        let pid = std::process::id();
        let line = if self.json {
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            format!(
                "{}\n",
                serde_json::json!({"time": time, "level": "info", "pid": pid, "msg": msg})
            )
        } else {
            format!(
                "[{pid}] {} [INF] {msg}\n",
                chrono::Local::now().format(STAMP)
            )
        };
        if current.file.write_all(line.as_bytes()).is_ok() {
            current.written = line.len() as u64;
        }
        if self.max_num > 0 {
            self.remove_old_backups();
        }
    }

    fn remove_old_backups(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        // The stamp sorts by time as text.
        let mut backups: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        backups.sort();
        let excess = backups.len().saturating_sub(self.max_num);
        for old in &backups[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// Reopens the log file (after `logrotate` moved it, on SIGUSR1 as nats-server does). Returns
/// `Ok(false)` when logging to standard error, where there is nothing to reopen.
pub fn reopen() -> io::Result<bool> {
    let Some(log) = LOG_FILE.get() else {
        return Ok(false);
    };
    let file = open_append(&log.path)?;
    let written = file.metadata()?.len();
    *log.file.lock().unwrap_or_else(PoisonError::into_inner) = Current { file, written };
    Ok(true)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes to the current [`LogFile`]; one `write` per formatted line.
struct FileWriter(&'static LogFile);

impl io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let log = self.0;
        let mut current = log.file.lock().unwrap_or_else(PoisonError::into_inner);
        if log.size_limit > 0
            && current.written > 0
            && current.written + buf.len() as u64 > log.size_limit
        {
            log.rotate(&mut current);
        }
        let n = current.file.write(buf)?;
        current.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let log = self.0;
        let mut current = log.file.lock().unwrap_or_else(PoisonError::into_inner);
        current.file.flush()
    }
}

/// nats-server's tag for a level.
fn level_tag(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "[ERR]",
        Level::WARN => "[WRN]",
        Level::INFO => "[INF]",
        Level::DEBUG => "[DBG]",
        Level::TRACE => "[TRC]",
    }
}

/// Formats one event as `[pid] <timestamp> [LVL] message key=value...`, or as JSON.
struct LineFormat {
    pid: u32,
    clock: Clock,
    json: bool,
}

/// How lines are timestamped.
enum Clock {
    /// No timestamp (`logtime: false`).
    Off,
    /// Local wall-clock time.
    Local,
    /// UTC (`logtime_utc`).
    Utc,
}

/// nats-server's timestamp layout.
const STAMP: &str = "%Y/%m/%d %H:%M:%S%.6f";

impl LineFormat {
    fn new(cfg: &LogConfig) -> LineFormat {
        let clock = match (cfg.time, cfg.time_utc) {
            (false, _) => Clock::Off,
            (true, true) => Clock::Utc,
            (true, false) => Clock::Local,
        };
        LineFormat {
            pid: std::process::id(),
            clock,
            json: cfg.format == LogFormat::Json,
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.json {
            return self.format_json(writer, event);
        }
        write!(writer, "[{}] ", self.pid)?;
        match self.clock {
            Clock::Off => {}
            Clock::Local => write!(writer, "{} ", chrono::Local::now().format(STAMP))?,
            Clock::Utc => write!(writer, "{} ", chrono::Utc::now().format(STAMP))?,
        }
        write!(writer, "{} ", level_tag(event.metadata().level()))?;
        let _ = ctx;
        let mut fields = TextFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writeln!(writer)
    }
}

impl LineFormat {
    fn format_json(&self, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut obj = Map::new();
        // JSON logs always carry an RFC 3339 time (UTC unless local time was asked for).
        let time = match self.clock {
            Clock::Local => {
                chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            }
            _ => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        };
        obj.insert("time".into(), Value::String(time));
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        obj.insert("level".into(), Value::String(level));
        obj.insert("pid".into(), Value::from(self.pid));
        obj.insert("msg".into(), Value::String(String::new()));
        event.record(&mut JsonFields(&mut obj));
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Writes an event's message, then its other fields as ` key=value`, except `audit`: the tag
/// that marks audit-trail events is for JSON log pipelines, and text lines stay exactly
/// nats-server's.
struct TextFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Visit for TextFields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = match field.name() {
            "message" => write!(self.writer, "{value:?}"),
            "audit" => Ok(()),
            name => write!(self.writer, " {name}={value:?}"),
        };
    }
}

/// Collects an event's fields into a JSON object; the message goes to `msg`.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
}

impl JsonFields<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg".to_string(),
            // An event's own field may not overwrite the envelope.
            n @ ("time" | "level" | "pid" | "msg") => format!("field.{n}"),
            n => n.to_string(),
        };
        self.0.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn level_tags() {
        let tags: Vec<_> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(level_tag)
        .collect();
        assert_eq!(tags, ["[ERR]", "[WRN]", "[INF]", "[DBG]", "[TRC]"]);
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(cfg: &LogConfig, emit: impl FnOnce()) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(LineFormat::new(cfg))
            .with_writer(move || writer.clone())
            .with_filter(Levels::of(cfg));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn line_without_time() {
        let cfg = LogConfig {
            time: false,
            ..LogConfig::default()
        };
        let out = capture(&cfg, || {
            tracing::info!("Listening for client connections on {}", "127.0.0.1:4222");
            tracing::warn!(cid = 5, "Readloop processing time");
            tracing::debug!("hidden");
        });
        let pid = std::process::id();
        assert_eq!(
            out,
            format!(
                "[{pid}] [INF] Listening for client connections on 127.0.0.1:4222\n\
                 [{pid}] [WRN] Readloop processing time cid=5\n"
            )
        );
    }

    #[test]
    fn line_with_utc_time_and_trace_only() {
        let cfg = LogConfig {
            time_utc: true,
            trace: true,
            ..LogConfig::default()
        };
        let out = capture(&cfg, || {
            tracing::debug!("hidden");
            tracing::trace!("<<- [PING]");
            tracing::error!("boom");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let prefix = format!("[{}] ", std::process::id());
        for (line, tail) in lines.iter().zip([" [TRC] <<- [PING]", " [ERR] boom"]) {
            let stamp = line
                .strip_prefix(&prefix)
                .unwrap()
                .strip_suffix(tail)
                .unwrap();
            assert_eq!(stamp.len(), "2026/11/22 01:15:38.572517".len(), "{line}");
            assert_eq!(
                (&stamp[4..5], &stamp[10..11], &stamp[19..20]),
                ("/", " ", ".")
            );
        }
    }

    #[test]
    fn json_lines() {
        let cfg = LogConfig {
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        let out = capture(&cfg, || {
            tracing::info!("Listening for client connections on {}", "127.0.0.1:4222");
            tracing::warn!(cid = 5, user = "bob", ok = true, "Authorization Error");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(
            lines[0]["msg"],
            "Listening for client connections on 127.0.0.1:4222"
        );
        assert_eq!(lines[0]["pid"], std::process::id());
        assert!(chrono::DateTime::parse_from_rfc3339(lines[0]["time"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["msg"], "Authorization Error");
        assert_eq!(lines[1]["cid"], 5);
        assert_eq!(lines[1]["user"], "bob");
        assert_eq!(lines[1]["ok"], true);
    }

    #[test]
    fn audit_tags_show_in_json_only() {
        let emit = || {
            tracing::error!(
                audit = "auth.failure",
                "127.0.0.1:5 - cid:1 - authentication error: bad"
            )
        };
        let text = capture(
            &LogConfig {
                time: false,
                ..LogConfig::default()
            },
            emit,
        );
        assert_eq!(
            text,
            format!(
                "[{}] [ERR] 127.0.0.1:5 - cid:1 - authentication error: bad\n",
                std::process::id()
            )
        );
        let json = capture(
            &LogConfig {
                format: LogFormat::Json,
                ..LogConfig::default()
            },
            emit,
        );
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["audit"], "auth.failure");
        assert_eq!(v["level"], "error");
    }

    #[test]
    fn rotation_keeps_max_num_backups() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("natter-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("natter.log");
        let log: &'static LogFile = Box::leak(Box::new(LogFile {
            path: path.clone(),
            size_limit: 100,
            max_num: 2,
            json: false,
            file: Mutex::new(Current {
                file: open_append(&path).unwrap(),
                written: 0,
            }),
        }));
        let mut w = FileWriter(log);
        for i in 0..10 {
            w.write_all(format!("line {i:02} {}\n", "x".repeat(40)).as_bytes())
                .unwrap();
            // Rotated names carry microseconds: keep them distinct.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "natter.log");
        assert!(names[1].starts_with("natter.log.20"), "{names:?}");
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(
            current.contains("Rotated log, backup saved as"),
            "{current}"
        );
        assert!(current.contains("line 09"), "{current}");
        assert!(current.len() <= 200, "{current}");
        let newest = std::fs::read_to_string(dir.join(&names[2])).unwrap();
        assert!(
            newest.contains("line 08") || newest.contains("line 07"),
            "{newest}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn levels() {
        assert_eq!(max_level(false, false), LevelFilter::INFO);
        assert_eq!(max_level(true, false), LevelFilter::DEBUG);
        assert_eq!(max_level(false, true), LevelFilter::TRACE);
    }
}
