//! JetStream's server configuration: the top-level `jetstream` key (and `store_dir`), read as
//! nats-server 2.15 reads them, into a [`JetStreamConfig`]. Parsing only: what the server does
//! with it is decided where it is used.
//!
//! Forms, as nats-server 2.15 accepts them (checked with `nats-server -c x.conf -t` and by
//! running it):
//!
//! * `jetstream: true | false`, `jetstream: enabled | enable | disabled | disable` (any case);
//! * `jetstream { ... }`, enabled unless the block says `enabled: false` (alias `enable`);
//! * a top-level `store_dir` (alias `storedir`; `store` is not accepted there), which sets the
//!   directory but does not enable JetStream. Setting the directory twice (top level and in the
//!   block, or under two spellings in the block) is an error, "Duplicate 'store_dir'", unless
//!   the earlier setting was empty; the same key repeated is not (the later one wins).
//!   nats-server visits keys in Go's random map order, so for some files whether it complains
//!   varies from run to run; natter decides in file order.
//!
//! Keys inside the block (case-insensitive), with nats-server's aliases:
//! `store_dir` (`store`, `storedir`), `max_memory_store` (`max_mem_store`, `max_mem`),
//! `max_file_store` (`max_file`), `sync_interval` (`sync`), `strict`, `domain`, `unique_tag`,
//! `extension_hint`, `max_buffered_msgs`, `max_buffered_size`, `request_queue_limit`,
//! `info_queue_limit`, `max_outstanding_catchup`, `meta_compact`, `meta_compact_size`,
//! `meta_compact_sync`, `max_concurrent_io`, `enabled` (`enable`), `limits { max_ack_pending,
//! max_ha_assets, max_request_batch, duplicate_window, default_max_consumers, batch {
//! max_inflight_per_stream, max_inflight_total, max_msgs, timeout } }`, and the encryption keys
//! `cipher`, `key` (`ek`, `encryption_key`), `prev_key` (`prev_ek`, `prev_encryption_key`) and
//! `tpm { keys_file, encryption_password, srk_password, pcr, cipher }`. nats-server 2.15 knows
//! no others there (`max_catchup` and `compress_ok`, for instance, are unknown to it).
//!
//! How natter treats them:
//!
//! * An unknown key inside `jetstream`, `limits` or `batch` is an error, as in nats-server
//!   (which rejects it with and without `-t`); keys used as `$variables` excepted.
//! * The keys natter acts on are `enabled`, `store_dir`, `max_memory_store`, `max_file_store`,
//!   `sync_interval` and `strict`. Every other accepted key is parsed, checked and kept in
//!   [`JetStreamConfig`], with a [`Warning`] that natter does not act on it yet.
//! * Encryption at rest (`cipher`, `key`, `prev_key` and their aliases, `tpm`): natter cannot
//!   encrypt, and storing in the clear what was asked to be encrypted is worse than not
//!   starting, so each of them is an error naming file, line and key, whatever its value and
//!   even while JetStream is disabled (`-js` could enable it).
//! * Values follow nats-server: sizes are integers (`1GB`, `1G`) or nats-server's size strings
//!   (`"1G"`: a number then one of `K M G T`, powers of 1024; `""` is 0). Where natter is
//!   stricter: negative durations (`sync_interval`, `duplicate_window`, batch `timeout`),
//!   which nats-server accepts, are errors; a size string that overflows 64 bits (Go wraps it)
//!   is an error; and the domain is checked when the file is read, not when the server starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    self, boolean, expected, fail, go_duration, int, string, DurationError, Warning,
};
use super::parse::{ConfigError, Entry, Map, Pos, Value};
use super::Config;

/// nats-server's default `sync_interval`: it fsyncs stream files every two minutes and
/// acknowledges before that, so a power cut can lose up to two minutes of acknowledged
/// messages. natter's default is [`Sync::Always`].
pub const NATS_SERVER_SYNC_INTERVAL: Duration = Duration::from_secs(120);

/// The directory JetStream stores in when none is configured, as nats-server chooses it: `nats`
/// in the system's temporary directory (`$TMPDIR`, else `/tmp`), so `/tmp/nats`. nats-server
/// keeps its data in a `jetstream` directory inside the store directory (`/tmp/nats/jetstream`)
/// and warns "Temporary storage directory used, data could be lost on system reboot".
pub fn default_store_dir() -> PathBuf {
    std::env::temp_dir().join("nats")
}

/// When stream writes are fsynced relative to their acknowledgement (`sync_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sync {
    /// Acknowledge a write only once it is fsynced (`sync_interval: always`). natter's default,
    /// unlike nats-server's (see [`NATS_SERVER_SYNC_INTERVAL`]): an acknowledged message
    /// survives a power cut. `sync_interval: "0s"` also means this (0 is "the default";
    /// nats-server then uses its own default, two minutes).
    #[default]
    Always,
    /// Acknowledge once written to the OS, fsync at this interval (`sync_interval: "2m"`,
    /// never zero): a power cut can lose up to one interval of acknowledged messages.
    Interval(Duration),
}

/// JetStream's server settings. `Config::jetstream` is `Some` exactly when JetStream is
/// enabled; [`Default`] is what `-js` alone gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Where streams are stored (`store_dir`, `-sd`), as written (a relative path is relative
    /// to the working directory, as in nats-server). [`default_store_dir`] when not set or
    /// set to `""`. nats-server keeps its own data in `<store_dir>/jetstream`.
    pub store_dir: PathBuf,
    /// Most bytes of memory storage (`max_memory_store`); `None` when not set or negative,
    /// for which nats-server takes 75% of the machine's memory. `Some(0)` allows none.
    pub max_memory: Option<i64>,
    /// Most bytes of file storage (`max_file_store`); `None` when not set or negative, for
    /// which nats-server takes up to 1 TB of the disk's free space. `Some(0)` allows none.
    pub max_file: Option<i64>,
    /// When writes are fsynced (`sync_interval`); [`Sync::Always`] unless set.
    pub sync: Sync,
    /// `strict` (default true): nats-server rejects JetStream API requests it does not fully
    /// understand (unknown fields, for one) rather than ignoring what it does not know.
    pub strict: bool,
    /// The JetStream domain (`domain`), which moves the API to `$JS.<domain>.API.>`; no `.`,
    /// `*`, `>` or white space. Not acted on yet.
    pub domain: Option<String>,
    /// `unique_tag`, trimmed and lower-cased as nats-server does (a clustering placement
    /// rule). Not acted on yet.
    pub unique_tag: Option<String>,
    /// `extension_hint` (a leaf-node hint). Not acted on yet.
    pub extension_hint: Option<String>,
    /// `max_buffered_msgs`, as written. Not acted on yet.
    pub max_buffered_msgs: Option<i64>,
    /// `max_buffered_size` in bytes, as written. Not acted on yet.
    pub max_buffered_size: Option<i64>,
    /// `request_queue_limit` (pending JetStream API requests), as written. Not acted on yet.
    pub request_queue_limit: Option<i64>,
    /// `info_queue_limit` (pending info requests), as written. Not acted on yet.
    pub info_queue_limit: Option<i64>,
    /// `max_outstanding_catchup` in bytes (clustering), as written. Not acted on yet.
    pub max_outstanding_catchup: Option<i64>,
    /// `meta_compact` (clustering meta-log compaction threshold), 0 or more. Not acted on yet.
    pub meta_compact: Option<i64>,
    /// `meta_compact_size` in bytes, 0 or more. Not acted on yet.
    pub meta_compact_size: Option<i64>,
    /// `meta_compact_sync`. Not acted on yet.
    pub meta_compact_sync: Option<bool>,
    /// `max_concurrent_io` (disk I/O concurrency), 4 to 8192. Not acted on yet.
    pub max_concurrent_io: Option<u32>,
    /// The `limits { }` block. Not acted on yet.
    pub limits: Limits,
}

/// `jetstream { limits { ... } }`: server-wide caps on what streams and consumers may ask for.
/// `None` is "not set"; values are as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// `max_ack_pending`: the most a consumer's `max_ack_pending` may be.
    pub max_ack_pending: Option<i64>,
    /// `max_ha_assets`: the most replicated streams and consumers (clustering).
    pub max_ha_assets: Option<i64>,
    /// `max_request_batch`: the most a pull request may ask for at once.
    pub max_request_batch: Option<i64>,
    /// `duplicate_window`: the longest duplicate window a stream may have.
    pub duplicate_window: Option<Duration>,
    /// `default_max_consumers`: the consumer limit of streams that set none.
    pub default_max_consumers: Option<i64>,
    /// `batch { }`: atomic batch publish limits.
    pub batch: BatchLimits,
}

/// `jetstream { limits { batch { ... } } }`: atomic batch publish limits, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchLimits {
    /// `max_inflight_per_stream`.
    pub max_inflight_per_stream: Option<i64>,
    /// `max_inflight_total`.
    pub max_inflight_total: Option<i64>,
    /// `max_msgs`: the most messages in one batch.
    pub max_msgs: Option<i64>,
    /// `timeout`: how long a batch may stay open.
    pub timeout: Option<Duration>,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            store_dir: default_store_dir(),
            max_memory: None,
            max_file: None,
            sync: Sync::Always,
            strict: true,
            domain: None,
            unique_tag: None,
            extension_hint: None,
            max_buffered_msgs: None,
            max_buffered_size: None,
            request_queue_limit: None,
            info_queue_limit: None,
            max_outstanding_catchup: None,
            meta_compact: None,
            meta_compact_size: None,
            meta_compact_sync: None,
            max_concurrent_io: None,
            limits: Limits::default(),
        }
    }
}

impl JetStreamConfig {
    /// Sets the store directory as `store_dir`/`-sd` do: an empty path is the default one.
    pub fn set_store_dir(&mut self, dir: &Path) {
        self.store_dir = if dir.as_os_str().is_empty() {
            default_store_dir()
        } else {
            dir.to_path_buf()
        };
    }

    /// Whether the store is in the temporary directory nats-server defaults to, where data
    /// could be lost on reboot (nats-server warns about it then).
    pub fn uses_temp_store_dir(&self) -> bool {
        self.store_dir == default_store_dir()
    }
}

/// Keys that ask for encryption at rest, which natter cannot do.
const ENCRYPTION_KEYS: &[&str] = &[
    "cipher",
    "key",
    "ek",
    "encryption_key",
    "prev_key",
    "prev_ek",
    "prev_encryption_key",
    "tpm",
];

/// The most and least `max_concurrent_io` nats-server accepts.
const CONCURRENT_IO: std::ops::RangeInclusive<i64> = 4..=8192;

/// Reads the top-level `jetstream`, `store_dir` and `storedir` keys of `map` (in file order)
/// into `config`: `config.jetstream` when the file enables JetStream, else
/// `config.jetstream_off` when the file has JetStream settings (for `-js` to pick up).
pub(crate) fn apply(
    map: &Map,
    config: &mut Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let mut p = Reader {
        js: JetStreamConfig::default(),
        store_dir_set: None,
        warnings,
    };
    let mut enabled = None;
    for e in map {
        match e.key.to_ascii_lowercase().as_str() {
            "store_dir" | "storedir" => p.store_dir(e)?,
            "jetstream" => enabled = Some(p.jetstream(e)?),
            _ => {}
        }
    }
    if enabled == Some(true) {
        config.jetstream = Some(p.js);
        config.jetstream_off = None;
    } else if enabled.is_some() || p.store_dir_set.is_some() {
        config.jetstream = None;
        config.jetstream_off = Some(p.js);
    }
    Ok(())
}

/// The state of one file's reading.
struct Reader<'w> {
    js: JetStreamConfig,
    /// Where the store directory was last set, and whether to something non-empty.
    store_dir_set: Option<(Pos, bool)>,
    warnings: &'w mut Vec<Warning>,
}

impl Reader<'_> {
    fn ignored(&mut self, e: &Entry) {
        self.warnings.push(Warning {
            pos: e.pos.clone(),
            message: format!("{:?} is not supported by natter yet, ignored", e.key),
        });
    }

    /// `store_dir`, top level or in the block: a second non-empty setting under another key is
    /// nats-server's "Duplicate 'store_dir' configuration".
    fn store_dir(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let dir = string(e)?;
        if let Some((pos, true)) = &self.store_dir_set {
            return Err(fail(
                e,
                format!(
                    "duplicate 'store_dir' configuration (already set at {}:{})",
                    pos.file.display(),
                    pos.line
                ),
            ));
        }
        self.store_dir_set = Some((e.pos.clone(), !dir.is_empty()));
        self.js.set_store_dir(Path::new(dir));
        Ok(())
    }

    /// The `jetstream` key; returns whether it enables JetStream.
    fn jetstream(&mut self, e: &Entry) -> Result<bool, ConfigError> {
        let map = match &e.item.value {
            Value::Bool(b) => return Ok(*b),
            Value::String(s) => {
                return match s.to_ascii_lowercase().as_str() {
                    "enabled" | "enable" => Ok(true),
                    "disabled" | "disable" => Ok(false),
                    _ => Err(fail(
                        e,
                        format!("expected 'enabled' or 'disabled' for string value, got {s:?}"),
                    )),
                };
            }
            Value::Map(map) => map,
            _ => {
                return Err(expected(
                    e,
                    "a map, true or false, or \"enabled\" or \"disabled\"",
                ))
            }
        };
        let mut enabled = true;
        for e in map {
            let key = e.key.to_ascii_lowercase();
            match key.as_str() {
                "enabled" | "enable" => enabled = boolean(e)?,
                "store" | "store_dir" | "storedir" => self.store_dir(e)?,
                "max_memory_store" | "max_mem_store" | "max_mem" => {
                    self.js.max_memory = Some(storage_size(e)?).filter(|&n| n >= 0);
                }
                "max_file_store" | "max_file" => {
                    self.js.max_file = Some(storage_size(e)?).filter(|&n| n >= 0);
                }
                "sync" | "sync_interval" => self.js.sync = sync(e)?,
                "strict" => self.js.strict = boolean(e)?,
                "domain" => {
                    self.js.domain = domain(e)?;
                    self.ignored(e);
                }
                "unique_tag" => {
                    let tag = string(e)?.trim().to_lowercase();
                    self.js.unique_tag = Some(tag).filter(|t| !t.is_empty());
                    self.ignored(e);
                }
                "extension_hint" => {
                    self.js.extension_hint = Some(string(e)?.to_string());
                    self.ignored(e);
                }
                "max_buffered_msgs" => {
                    self.js.max_buffered_msgs = Some(int(e)?);
                    self.ignored(e);
                }
                "max_buffered_size" => {
                    self.js.max_buffered_size = Some(storage_size(e)?);
                    self.ignored(e);
                }
                "request_queue_limit" => {
                    self.js.request_queue_limit = Some(int(e)?);
                    self.ignored(e);
                }
                "info_queue_limit" => {
                    self.js.info_queue_limit = Some(int(e)?);
                    self.ignored(e);
                }
                "max_outstanding_catchup" => {
                    self.js.max_outstanding_catchup = Some(storage_size(e)?);
                    self.ignored(e);
                }
                "meta_compact" => {
                    self.js.meta_compact = Some(not_negative(e, int(e)?)?);
                    self.ignored(e);
                }
                "meta_compact_size" => {
                    self.js.meta_compact_size = Some(not_negative(e, storage_size(e)?)?);
                    self.ignored(e);
                }
                "meta_compact_sync" => {
                    self.js.meta_compact_sync = Some(boolean(e)?);
                    self.ignored(e);
                }
                "max_concurrent_io" => {
                    let n = int(e)?;
                    if !CONCURRENT_IO.contains(&n) {
                        return Err(fail(e, format!("must be between 4 and 8192, got {n}")));
                    }
                    self.js.max_concurrent_io = Some(n as u32);
                    self.ignored(e);
                }
                "limits" => self.limits(e)?,
                k if ENCRYPTION_KEYS.contains(&k) => return Err(refuse_encryption(e)),
                _ if e.used_as_variable => {}
                _ => return Err(fail(e, "unknown field")),
            }
        }
        Ok(enabled)
    }

    fn limits(&mut self, e: &Entry) -> Result<(), ConfigError> {
        for e in block(e, "a map of JetStream limits")? {
            let limits = &mut self.js.limits;
            match e.key.to_ascii_lowercase().as_str() {
                "max_ack_pending" => limits.max_ack_pending = Some(int(e)?),
                "max_ha_assets" => limits.max_ha_assets = Some(int(e)?),
                "max_request_batch" => limits.max_request_batch = Some(int(e)?),
                "default_max_consumers" => limits.default_max_consumers = Some(int(e)?),
                "duplicate_window" => limits.duplicate_window = Some(duration(e)?),
                "batch" => {
                    for e in block(e, "a map of batch limits")? {
                        let batch = &mut self.js.limits.batch;
                        match e.key.to_ascii_lowercase().as_str() {
                            "max_inflight_per_stream" => {
                                batch.max_inflight_per_stream = Some(int(e)?)
                            }
                            "max_inflight_total" => batch.max_inflight_total = Some(int(e)?),
                            "max_msgs" => batch.max_msgs = Some(int(e)?),
                            "timeout" => batch.timeout = Some(duration(e)?),
                            _ if e.used_as_variable => continue,
                            _ => return Err(fail(e, "unknown field")),
                        }
                        self.ignored(e);
                    }
                    continue;
                }
                _ if e.used_as_variable => continue,
                _ => return Err(fail(e, "unknown field")),
            }
            self.ignored(e);
        }
        Ok(())
    }
}

fn block<'a>(e: &'a Entry, what: &str) -> Result<&'a Map, ConfigError> {
    match &e.item.value {
        Value::Map(m) => Ok(m),
        _ => Err(expected(e, what)),
    }
}

fn refuse_encryption(e: &Entry) -> ConfigError {
    fail(
        e,
        "refusing to store unencrypted what was asked to be encrypted \
         (natter cannot encrypt JetStream data at rest)",
    )
}

fn not_negative(e: &Entry, n: i64) -> Result<i64, ConfigError> {
    if n < 0 {
        return Err(fail(e, format!("must not be negative, got {n}")));
    }
    Ok(n)
}

/// A size as nats-server's `getStorageSize` reads it: an integer (the file's own suffixes,
/// `1GB`, `1G`, already applied), or a string: `""` is 0, else a signed integer followed by
/// one of `K M G T` (upper case only; powers of 1024, so `"1G"` is 1 GiB while a bare `1G` is
/// 10^9).
pub(crate) fn storage_size(e: &Entry) -> Result<i64, ConfigError> {
    const EXAMPLE: &str = "a size (e.g. 1GB, or \"1G\")";
    let text = match &e.item.value {
        Value::Int(n) => return Ok(*n),
        Value::String(s) => s,
        _ => return Err(expected(e, EXAMPLE)),
    };
    if text.is_empty() {
        return Ok(0);
    }
    let bad = || {
        fail(
            e,
            format!(
                "sizes defined as strings must be a number ending in K, M, G or T, got {text:?}"
            ),
        )
    };
    let (number, unit) = text.split_at(text.len() - text.chars().last().map_or(0, char::len_utf8));
    let shift = match unit {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let n: i64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| fail(e, format!("size {text:?} is too big")))
}

/// A non-negative Go duration string (bare `1m30s` is a string too); integers are not taken.
fn duration(e: &Entry) -> Result<Duration, ConfigError> {
    file::duration(e, false, &mut |_| {})
}

/// `sync_interval`: `always` (any case), or a duration string; `"0s"` is the default,
/// [`Sync::Always`]. nats-server rejects integers here ("should be converted to a duration").
fn sync(e: &Entry) -> Result<Sync, ConfigError> {
    if let Value::String(s) = &e.item.value {
        if s.eq_ignore_ascii_case("always") {
            return Ok(Sync::Always);
        }
    }
    let d = duration(e).map_err(|err| match &e.item.value {
        Value::String(s) if go_duration(s) == Err(DurationError::Negative) => err,
        _ => expected(e, "\"always\" or a duration (e.g. \"1s\", \"2m\")"),
    })?;
    Ok(if d.is_zero() {
        Sync::Always
    } else {
        Sync::Interval(d)
    })
}

/// `domain`: empty is none; it becomes a subject token (`$JS.<domain>.API.>`), so nats-server
/// refuses to start with `.`, `*`, `>` or white space in it.
fn domain(e: &Entry) -> Result<Option<String>, ConfigError> {
    let name = string(e)?;
    if name.contains(['.', '*', '>']) {
        return Err(fail(
            e,
            format!("invalid domain name {name:?}: may not contain ., * or >"),
        ));
    }
    if name.contains(char::is_whitespace) {
        return Err(fail(
            e,
            format!("invalid domain name {name:?}: may not contain white space"),
        ));
    }
    Ok(Some(name.to_string()).filter(|n| !n.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file;
    use crate::config::parse::parse_str;

    const FILE: &str = "/etc/natter.conf";

    fn apply_str(src: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let map = parse_str(src, Path::new(FILE))?;
        let mut config = Config::default();
        let warnings = file::apply(&map, &mut config)?;
        Ok((config, warnings.iter().map(ToString::to_string).collect()))
    }

    /// The JetStream config of a file that enables it without warnings.
    fn js(src: &str) -> JetStreamConfig {
        let (c, w) = apply_str(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(w.is_empty(), "{src}: unexpected warnings {w:?}");
        assert!(c.jetstream_off.is_none(), "{src}");
        c.jetstream.unwrap_or_else(|| panic!("{src}: not enabled"))
    }

    fn error(src: &str) -> String {
        match apply_str(src) {
            Ok(_) => panic!("{src}: expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn warnings(src: &str) -> Vec<String> {
        apply_str(src).unwrap_or_else(|e| panic!("{src}: {e}")).1
    }

    #[test]
    fn off_by_default() {
        let c = Config::default();
        assert_eq!((c.jetstream, c.jetstream_off), (None, None));
        let (c, _) = apply_str("port: 4222\n").unwrap();
        assert_eq!((c.jetstream, c.jetstream_off), (None, None));
    }

    #[test]
    fn defaults_when_enabled() {
        let d = JetStreamConfig::default();
        assert_eq!(d.store_dir, std::env::temp_dir().join("nats"));
        assert!(d.uses_temp_store_dir());
        assert_eq!((d.max_memory, d.max_file), (None, None));
        assert_eq!(d.sync, Sync::Always);
        assert!(d.strict);
        assert_eq!(d.domain, None);
        assert_eq!(d.limits, Limits::default());
        assert_eq!(NATS_SERVER_SYNC_INTERVAL, Duration::from_secs(120));
    }

    #[test]
    fn enabling_forms() {
        for src in [
            "jetstream: enabled",
            "jetstream: enable",
            "jetstream: ENABLED",
            "jetstream: true",
            "jetstream: yes",
            "jetstream: \"enabled\"",
            "jetstream {}",
            "jetstream: {}",
            "jetstream { enabled: true }",
            "jetstream { enable: on }",
            "JetStream { }",
        ] {
            assert_eq!(js(src), JetStreamConfig::default(), "{src}");
        }
    }

    #[test]
    fn disabling_forms() {
        for src in [
            "jetstream: disabled",
            "jetstream: Disable",
            "jetstream: false",
            "jetstream: off",
            "jetstream { enabled: false }",
            "jetstream { enable: false, store_dir: /x }",
            "jetstream: enabled\nJetStream: false",
        ] {
            let (c, _) = apply_str(src).unwrap();
            assert_eq!(c.jetstream, None, "{src}");
            assert!(c.jetstream_off.is_some(), "{src}");
        }
        // The settings of a disabled block are kept for `-js`.
        let (c, _) = apply_str("jetstream { enabled: false, store_dir: /x }").unwrap();
        assert_eq!(c.jetstream_off.unwrap().store_dir, PathBuf::from("/x"));
        // The last `jetstream` decides.
        let (c, _) = apply_str("jetstream: false\nJETSTREAM: true\n").unwrap();
        assert!(c.jetstream.is_some());
    }

    #[test]
    fn bad_forms() {
        assert_eq!(
            error("jetstream: bogus"),
            "/etc/natter.conf:1:1: jetstream: expected 'enabled' or 'disabled' for string \
             value, got \"bogus\""
        );
        assert_eq!(
            error("jetstream: 1"),
            "/etc/natter.conf:1:1: jetstream: expected a map, true or false, or \"enabled\" or \
             \"disabled\", got 1"
        );
        assert!(error("jetstream { enabled: \"true\" }")
            .ends_with("enabled: expected true or false, got \"true\""));
        assert!(error("jetstream { enabled: 1 }").contains("enabled: expected true or false"));
    }

    #[test]
    fn store_dir_aliases_and_top_level() {
        for key in ["store_dir", "storedir", "store", "Store_Dir"] {
            let c = js(&format!("jetstream {{ {key}: /data/js }}"));
            assert_eq!(c.store_dir, PathBuf::from("/data/js"), "{key}");
            assert!(!c.uses_temp_store_dir());
        }
        // Relative paths are kept as written (nats-server: relative to the working directory).
        assert_eq!(
            js("jetstream { store_dir: data }").store_dir,
            PathBuf::from("data")
        );
        assert_eq!(
            js("jetstream { store_dir: \"\" }").store_dir,
            default_store_dir()
        );
        // Top level: sets the directory but does not enable JetStream.
        for key in ["store_dir", "storedir", "STORE_DIR"] {
            let (c, w) = apply_str(&format!("{key}: /data/top")).unwrap();
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(c.jetstream, None);
            assert_eq!(
                c.jetstream_off.unwrap().store_dir,
                PathBuf::from("/data/top")
            );
        }
        let c = js("store_dir: /data/top\njetstream: enabled");
        assert_eq!(c.store_dir, PathBuf::from("/data/top"));
        let c = js("jetstream: true\nstoredir: /data/top");
        assert_eq!(c.store_dir, PathBuf::from("/data/top"));
        // `store` is only a block alias; at top level it is an unknown field (a warning, as
        // natter treats unknown top-level keys).
        assert_eq!(
            warnings("store: /x"),
            ["/etc/natter.conf:1: unknown field \"store\""]
        );
        assert!(error("jetstream { store_dir: 1 }").contains("store_dir: expected a string"));
        assert!(error("store_dir: [a]").contains("store_dir: expected a string"));
    }

    #[test]
    fn store_dir_set_twice() {
        for (src, at) in [
            ("store_dir: /a\njetstream { store_dir: /b }", "2:13"),
            ("jetstream { store_dir: /b }\nstore_dir: /a", "2:1"),
            ("store_dir: /a\njetstream { store_dir: /a }", "2:13"),
            ("store_dir: /a\nstoredir: /b", "2:1"),
            ("jetstream { store_dir: /a, store: /b }", "1:28"),
            ("jetstream { store_dir: /a, STORE_DIR: /b }", "1:28"),
            (
                "store_dir: /a\njetstream { enabled: false, store_dir: /b }",
                "2:29",
            ),
            // Emptying it after it was set is still a second setting.
            ("store_dir: /a\njetstream { store_dir: \"\" }", "2:13"),
        ] {
            let err = error(src);
            assert!(
                err.starts_with(&format!("/etc/natter.conf:{at}: ")),
                "{src}: {err}"
            );
            assert!(
                err.contains(
                    "duplicate 'store_dir' configuration (already set at /etc/natter.conf:"
                ),
                "{err}"
            );
        }
        // The same key again replaces it; an empty earlier setting does not count.
        assert_eq!(
            js("jetstream { store_dir: /a, store_dir: /b }").store_dir,
            PathBuf::from("/b")
        );
        assert_eq!(
            js("store_dir: \"\"\njetstream { store_dir: /b }").store_dir,
            PathBuf::from("/b")
        );
    }

    #[test]
    fn memory_and_file_limits() {
        for key in ["max_memory_store", "max_mem_store", "max_mem"] {
            assert_eq!(
                js(&format!("jetstream {{ {key}: 1GB }}")).max_memory,
                Some(1 << 30)
            );
        }
        for key in ["max_file_store", "max_file"] {
            assert_eq!(
                js(&format!("jetstream {{ {key}: 10G }}")).max_file,
                Some(10_000_000_000)
            );
        }
        let cases = [
            ("1K", Some(1000)),
            ("1KB", Some(1024)),
            ("\"1K\"", Some(1024)),
            ("\"1M\"", Some(1 << 20)),
            ("\"1G\"", Some(1 << 30)),
            ("\"2T\"", Some(2 << 40)),
            ("\"-1G\"", None),
            ("\"\"", Some(0)),
            ("0", Some(0)),
            ("-1", None),
            ("-5", None),
            ("1024", Some(1024)),
        ];
        for (text, want) in cases {
            assert_eq!(
                js(&format!("jetstream {{ max_mem: {text} }}")).max_memory,
                want,
                "{text}"
            );
            assert_eq!(
                js(&format!("jetstream {{ max_file_store: {text} }}")).max_file,
                want,
                "{text}"
            );
        }
        for bad in [
            "\"1GB\"", "\"1g\"", "\"1024\"", "\"abc\"", "\"1P\"", "\"G\"",
        ] {
            let err = error(&format!("jetstream {{ max_mem: {bad} }}"));
            assert!(
                err.contains(
                    "max_mem: sizes defined as strings must be a number ending in K, M, G or T"
                ),
                "{bad}: {err}"
            );
        }
        assert!(error("jetstream { max_file: \"9999999T\" }").contains("is too big"));
        assert_eq!(
            error("jetstream {\n  max_file_store: 1.5\n}"),
            "/etc/natter.conf:2:3: max_file_store: expected a size (e.g. 1GB, or \"1G\"), got 1.5"
        );
        assert!(error("jetstream { max_mem: true }").contains("expected a size"));
    }

    #[test]
    fn sync_interval() {
        for key in ["sync_interval", "sync", "Sync_Interval"] {
            for v in [
                "always",
                "Always",
                "ALWAYS",
                "\"always\"",
                "\"0s\"",
                "\"0\"",
            ] {
                assert_eq!(
                    js(&format!("jetstream {{ {key}: {v} }}")).sync,
                    Sync::Always
                );
            }
        }
        for (v, want) in [
            ("\"2m\"", Duration::from_secs(120)),
            ("1m30s", Duration::from_secs(90)),
            ("\"500ms\"", Duration::from_millis(500)),
            ("\"1ns\"", Duration::from_nanos(1)),
        ] {
            assert_eq!(
                js(&format!("jetstream {{ sync_interval: {v} }}")).sync,
                Sync::Interval(want),
                "{v}"
            );
        }
        // Integers (a bare 2m is the integer 2000000) are refused, as by nats-server.
        for bad in ["2m", "1", "true", "1.5", "\"1d\"", "\"never\"", "\"\""] {
            let err = error(&format!("jetstream {{ sync_interval: {bad} }}"));
            assert!(
                err.contains(
                    "sync_interval: expected \"always\" or a duration (e.g. \"1s\", \"2m\")"
                ),
                "{bad}: {err}"
            );
        }
        assert!(error("jetstream { sync: \"-1s\" }").contains("sync: must not be negative"));
    }

    #[test]
    fn strict() {
        assert!(js("jetstream { strict: true }").strict);
        assert!(!js("jetstream { strict: false }").strict);
        assert!(!js("jetstream { strict: no }").strict);
        assert!(error("jetstream { strict: \"false\" }").contains("strict: expected true or false"));
        assert!(error("jetstream { strict: 1 }").contains("strict: expected true or false"));
    }

    #[test]
    fn every_key_natter_does_not_act_on_yet_parses_with_a_warning() {
        let src = "jetstream {\n\
                   domain: hub\n\
                   unique_tag: \" AZ \"\n\
                   extension_hint: will_extend\n\
                   max_buffered_msgs: 10000\n\
                   max_buffered_size: 128MB\n\
                   request_queue_limit: 5000\n\
                   info_queue_limit: 100\n\
                   max_outstanding_catchup: \"64M\"\n\
                   meta_compact: 1000\n\
                   meta_compact_size: 1MB\n\
                   meta_compact_sync: true\n\
                   max_concurrent_io: 16\n\
                   limits {\n\
                     max_ack_pending: 1000\n\
                     max_ha_assets: 10\n\
                     max_request_batch: 100\n\
                     duplicate_window: \"5m\"\n\
                     default_max_consumers: 20\n\
                     batch { max_inflight_per_stream: 5, max_inflight_total: 50, max_msgs: 100, timeout: 10s }\n\
                   }\n\
                   }\n";
        let (c, w) = apply_str(src).unwrap();
        let c = c.jetstream.unwrap();
        assert_eq!(c.domain.as_deref(), Some("hub"));
        assert_eq!(c.unique_tag.as_deref(), Some("az"));
        assert_eq!(c.extension_hint.as_deref(), Some("will_extend"));
        assert_eq!(c.max_buffered_msgs, Some(10000));
        assert_eq!(c.max_buffered_size, Some(128 << 20));
        assert_eq!(c.request_queue_limit, Some(5000));
        assert_eq!(c.info_queue_limit, Some(100));
        assert_eq!(c.max_outstanding_catchup, Some(64 << 20));
        assert_eq!(c.meta_compact, Some(1000));
        assert_eq!(c.meta_compact_size, Some(1 << 20));
        assert_eq!(c.meta_compact_sync, Some(true));
        assert_eq!(c.max_concurrent_io, Some(16));
        assert_eq!(
            c.limits,
            Limits {
                max_ack_pending: Some(1000),
                max_ha_assets: Some(10),
                max_request_batch: Some(100),
                duplicate_window: Some(Duration::from_secs(300)),
                default_max_consumers: Some(20),
                batch: BatchLimits {
                    max_inflight_per_stream: Some(5),
                    max_inflight_total: Some(50),
                    max_msgs: Some(100),
                    timeout: Some(Duration::from_secs(10)),
                },
            }
        );
        // The keys natter acts on are untouched.
        assert_eq!(c.store_dir, default_store_dir());
        assert_eq!(c.sync, Sync::Always);
        let ignored = |line: u32, key: &str| {
            format!("{FILE}:{line}: \"{key}\" is not supported by natter yet, ignored")
        };
        let want: Vec<String> = [
            (2, "domain"),
            (3, "unique_tag"),
            (4, "extension_hint"),
            (5, "max_buffered_msgs"),
            (6, "max_buffered_size"),
            (7, "request_queue_limit"),
            (8, "info_queue_limit"),
            (9, "max_outstanding_catchup"),
            (10, "meta_compact"),
            (11, "meta_compact_size"),
            (12, "meta_compact_sync"),
            (13, "max_concurrent_io"),
            (15, "max_ack_pending"),
            (16, "max_ha_assets"),
            (17, "max_request_batch"),
            (18, "duplicate_window"),
            (19, "default_max_consumers"),
            (20, "max_inflight_per_stream"),
            (20, "max_inflight_total"),
            (20, "max_msgs"),
            (20, "timeout"),
        ]
        .iter()
        .map(|&(line, key)| ignored(line, key))
        .collect();
        assert_eq!(w, want);
        // Empty blocks warn about nothing.
        assert!(warnings("jetstream { limits { batch {} } }").is_empty());
    }

    #[test]
    fn values_of_keys_not_acted_on_are_checked() {
        let cases = [
            (
                "domain: \"a.b\"",
                "domain: invalid domain name \"a.b\": may not contain ., * or >",
            ),
            ("domain: \"a*\"", "may not contain ., * or >"),
            ("domain: \"a>\"", "may not contain ., * or >"),
            (
                "domain: \"a b\"",
                "domain: invalid domain name \"a b\": may not contain white space",
            ),
            ("domain: 1", "domain: expected a string, got 1"),
            ("unique_tag: 1", "unique_tag: expected a string"),
            ("extension_hint: 1", "extension_hint: expected a string"),
            (
                "max_buffered_msgs: \"5\"",
                "max_buffered_msgs: expected an integer",
            ),
            (
                "request_queue_limit: 1.5",
                "request_queue_limit: expected an integer",
            ),
            (
                "info_queue_limit: true",
                "info_queue_limit: expected an integer",
            ),
            (
                "max_buffered_size: \"x\"",
                "max_buffered_size: sizes defined as strings",
            ),
            (
                "max_outstanding_catchup: true",
                "max_outstanding_catchup: expected a size",
            ),
            (
                "meta_compact: -1",
                "meta_compact: must not be negative, got -1",
            ),
            (
                "meta_compact_size: -1",
                "meta_compact_size: must not be negative, got -1",
            ),
            (
                "meta_compact_sync: \"x\"",
                "meta_compact_sync: expected true or false",
            ),
            (
                "max_concurrent_io: 3",
                "max_concurrent_io: must be between 4 and 8192, got 3",
            ),
            (
                "max_concurrent_io: 8193",
                "must be between 4 and 8192, got 8193",
            ),
            (
                "max_concurrent_io: \"8\"",
                "max_concurrent_io: expected an integer",
            ),
            (
                "limits: 1",
                "limits: expected a map of JetStream limits, got 1",
            ),
            (
                "limits: []",
                "limits: expected a map of JetStream limits, got an array",
            ),
            (
                "limits { max_ack_pending: \"5\" }",
                "max_ack_pending: expected an integer",
            ),
            (
                "limits { max_ha_assets: 1.5 }",
                "max_ha_assets: expected an integer",
            ),
            (
                "limits { duplicate_window: 120 }",
                "duplicate_window: expected a duration",
            ),
            (
                "limits { duplicate_window: 2m }",
                "duplicate_window: expected a duration",
            ),
            (
                "limits { duplicate_window: \"1d\" }",
                "duplicate_window: expected a duration",
            ),
            (
                "limits { duplicate_window: \"-1s\" }",
                "duplicate_window: must not be negative",
            ),
            (
                "limits { batch: 1 }",
                "batch: expected a map of batch limits, got 1",
            ),
            (
                "limits { batch { max_msgs: \"5\" } }",
                "max_msgs: expected an integer",
            ),
            (
                "limits { batch { timeout: 120 } }",
                "timeout: expected a duration",
            ),
        ];
        for (body, piece) in cases {
            let err = error(&format!("jetstream {{ {body} }}"));
            assert!(err.contains(piece), "{body}: {err}");
        }
        // Accepted edge values: negatives where nats-server takes them, empty strings.
        let (c, _) = apply_str(
            "jetstream { max_buffered_msgs: -1, request_queue_limit: 0, max_buffered_size: -1,\n\
             domain: \"\", unique_tag: \"  \", max_concurrent_io: 4, meta_compact: 0,\n\
             limits { max_ack_pending: -1, duplicate_window: \"0s\" } }",
        )
        .unwrap();
        let c = c.jetstream.unwrap();
        assert_eq!(c.max_buffered_msgs, Some(-1));
        assert_eq!(c.request_queue_limit, Some(0));
        assert_eq!(c.max_buffered_size, Some(-1));
        assert_eq!((c.domain, c.unique_tag), (None, None));
        assert_eq!(c.max_concurrent_io, Some(4));
        assert_eq!(c.limits.duplicate_window, Some(Duration::ZERO));
    }

    #[test]
    fn unknown_keys_are_errors_as_in_nats_server() {
        for (src, want) in [
            (
                "jetstream { bogus: 1 }",
                "/etc/natter.conf:1:13: bogus: unknown field",
            ),
            (
                "jetstream {\n max_catchup: 1\n}",
                "/etc/natter.conf:2:2: max_catchup: unknown field",
            ),
            (
                "jetstream { compress_ok: true }",
                "/etc/natter.conf:1:13: compress_ok: unknown field",
            ),
            (
                "jetstream { max_memory: 1G }",
                "/etc/natter.conf:1:13: max_memory: unknown field",
            ),
            (
                "jetstream { limits { bogus: 1 } }",
                "/etc/natter.conf:1:22: bogus: unknown field",
            ),
            (
                "jetstream { limits { batch { bogus: 1 } } }",
                "/etc/natter.conf:1:30: bogus: unknown field",
            ),
        ] {
            assert_eq!(error(src), want, "{src}");
        }
        // Keys used as variables are not unknown fields.
        let (c, w) = apply_str(
            "jetstream { DIR: /v, store_dir: $DIR, limits { N: 5, max_ack_pending: $N } }",
        )
        .unwrap();
        let c = c.jetstream.unwrap();
        assert_eq!(c.store_dir, PathBuf::from("/v"));
        assert_eq!(c.limits.max_ack_pending, Some(5));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("\"max_ack_pending\" is not supported"),
            "{w:?}"
        );
    }

    #[test]
    fn encryption_is_refused() {
        for key in [
            "cipher",
            "key",
            "ek",
            "encryption_key",
            "prev_key",
            "prev_ek",
            "prev_encryption_key",
            "Cipher",
        ] {
            for value in ["aes", "\"s3cret\"", "\"\""] {
                let err = error(&format!("port: 4222\njetstream {{\n  {key}: {value}\n}}"));
                assert_eq!(
                    err,
                    format!(
                        "/etc/natter.conf:3:3: {key}: refusing to store unencrypted what was \
                         asked to be encrypted (natter cannot encrypt JetStream data at rest)"
                    )
                );
            }
        }
        let err = error("jetstream { tpm { keys_file: /k, encryption_password: p } }");
        assert!(
            err.starts_with("/etc/natter.conf:1:13: tpm: refusing to store unencrypted"),
            "{err}"
        );
        // Even with JetStream disabled: `-js` could turn it on.
        let err = error("jetstream { enabled: false, key: s3cret }");
        assert!(err.contains("key: refusing to store unencrypted"), "{err}");
    }

    #[test]
    fn shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/jetstream.conf");
        let (c, w) = file::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.is_empty(), "{w:?}");
        let js = c.jetstream.unwrap();
        assert_eq!(js.store_dir, PathBuf::from("./data"));
        assert_eq!(js.max_memory, Some(1 << 30));
        assert_eq!(js.max_file, Some(10 << 30));
        assert_eq!(js.sync, Sync::Always);
        assert!(js.strict);
    }
}
