//! Logging: a `tracing` subscriber whose lines look exactly like nats-server's, e.g.
//! `[4242] 2026/11/22 01:15:38.572517 [INF] Listening for client connections on 0.0.0.0:4222`,
//! because test harnesses and operators grep them.
//!
//! Levels map to nats-server's tags (`[ERR]`, `[WRN]`, `[INF]`, `[DBG]`, `[TRC]`). As in
//! nats-server, debug and trace are independent switches: `-V` alone shows `[TRC]` lines but not
//! `[DBG]` ones. Local time comes from chrono, which follows `TZ` and `/etc/localtime`.
//! [`reopen`] reopens the log file after rotation.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterFn, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogConfig;

/// Installs the global subscriber: nats-server-style lines to `cfg.file` (appended, created if
/// missing) or to standard error. Fails if the file cannot be opened or a subscriber is installed.
pub fn init(cfg: &LogConfig) -> io::Result<()> {
    let layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat::new(cfg))
        .with_writer(make_writer(cfg)?)
        .with_filter(level_filter(cfg));
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(io::Error::other)
}

/// Lets debug events through only with `debug`, trace events only with `trace`.
fn level_filter(cfg: &LogConfig) -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    let (debug, trace) = (cfg.debug, cfg.trace);
    filter_fn(move |meta| match *meta.level() {
        Level::DEBUG => debug,
        Level::TRACE => trace,
        _ => true,
    })
    .with_max_level_hint(max_level(cfg))
}

/// The most verbose level `cfg` lets through.
fn max_level(cfg: &LogConfig) -> LevelFilter {
    match (cfg.debug, cfg.trace) {
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
    let file = LogFile {
        path: path.clone(),
        file: Mutex::new(open_append(path)?),
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
    file: Mutex<File>,
}

/// Reopens the log file (after `logrotate` moved it, on SIGUSR1 as nats-server does). Returns
/// `Ok(false)` when logging to standard error, where there is nothing to reopen.
pub fn reopen() -> io::Result<bool> {
    let Some(log) = LOG_FILE.get() else {
        return Ok(false);
    };
    let file = open_append(&log.path)?;
    *log.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
    Ok(true)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes to the current [`LogFile`]; one `write` per formatted line.
struct FileWriter(&'static LogFile);

impl io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl FileWriter {
    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.0.file.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Formats one event as `[pid] <timestamp> [LVL] message key=value...`.
struct LineFormat {
    pid: u32,
    clock: Clock,
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
        write!(writer, "[{}] ", self.pid)?;
        match self.clock {
            Clock::Off => {}
            Clock::Local => write!(writer, "{} ", chrono::Local::now().format(STAMP))?,
            Clock::Utc => write!(writer, "{} ", chrono::Utc::now().format(STAMP))?,
        }
        write!(writer, "{} ", level_tag(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
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
            .with_filter(level_filter(cfg));
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
    fn levels() {
        let cfg = |debug, trace| LogConfig {
            debug,
            trace,
            ..LogConfig::default()
        };
        assert_eq!(max_level(&cfg(false, false)), LevelFilter::INFO);
        assert_eq!(max_level(&cfg(true, false)), LevelFilter::DEBUG);
        assert_eq!(max_level(&cfg(false, true)), LevelFilter::TRACE);
    }
}
