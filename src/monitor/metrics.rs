//! `/metrics`: the monitoring counters in the Prometheus text exposition format 0.0.4, under
//! the names prometheus-nats-exporter gives them, so dashboards and alerts built on the
//! exporter work with Prometheus scraping natter directly. The exporter turns every number in `/varz` into a gauge
//! `gnatsd_varz_<field>` (nested objects joined with `_`, RFC 3339 times as epoch
//! milliseconds, `server_id`, `server_name` and `version` as `{value="…"} 1`), `/subsz` into
//! `gnatsd_subsz_*`, `/connz` into `gnatsd_connz_*` (totals over the connections, the message
//! and byte totals typed as counters) and `/routez` and `/healthz` into `gnatsd_routez_*` and
//! `gnatsd_healthz_*`; every series carries a `server_id` label. natter writes the same
//! families, with its own server id as `server_id` (the exporter's `-use_internal_server_id`).
//!
//! `?connz_detailed=true` adds the exporter's `-connz_detailed` per-connection series to the
//! same `gnatsd_connz_*` families, for at most [`DETAILED_CONNECTIONS`] connections (those
//! with the most bytes pending). A `natter_` family holds what the exporter has no name for.
//!
//! Everything is read per scrape from the snapshots the JSON endpoints use; nothing is kept.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::DateTime;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::Value;

use super::connz::DEFAULT_LIMIT;
use super::http::{BadRequest, Query, Reply};
use super::varz::Varz;
use super::Monitor;
use crate::outbound::ClientSnapshot;
use crate::server::ServerState;

/// The media type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most connections given their own series with `connz_detailed`. Every connection id is new,
/// so each reconnect starts series that Prometheus indexes until they age out; an unbounded
/// list would grow the scrape and the time-series database with the connection count. The
/// connections with the most bytes pending are the ones an operator looks for.
pub const DETAILED_CONNECTIONS: usize = 100;

/// The exporter's namespace (`gnatsd`, kept by the exporter for its users' dashboards).
const NAMESPACE: &str = "gnatsd";

/// `/varz` strings the exporter reports: as epoch milliseconds when they are RFC 3339 times,
/// else as a `value` label on a gauge of 1.
const LABEL_KEYS: [&str; 8] = [
    "server_id",
    "server_name",
    "version",
    "domain",
    "leader",
    "name",
    "start",
    "config_load_time",
];

/// `/metrics`'s parameters, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsQuery {
    /// Per-connection series as well as the totals.
    connz_detailed: bool,
}

impl MetricsQuery {
    /// Reads the query string; a boolean that is not one refuses the request.
    pub fn parse(q: &Query) -> Result<MetricsQuery, BadRequest> {
        Ok(MetricsQuery {
            connz_detailed: q.bool("connz_detailed")?,
        })
    }
}

/// The scrape as of now, as an HTTP 200 response.
pub fn reply(state: &ServerState, monitor: &Monitor, query: &MetricsQuery) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(collect(state, monitor, query))));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    reply
}

/// The scrape body as of now.
pub fn collect(state: &ServerState, monitor: &Monitor, query: &MetricsQuery) -> String {
    let mut out = Exposition::new(&state.id);
    let varz =
        serde_json::to_value(Varz::collect(state, monitor)).expect("monitoring JSON serializes");
    flatten(&mut out, "varz", &[], &varz);
    subsz(&mut out, state);
    connz(
        &mut out,
        &state.client_snapshots(false),
        query.connz_detailed,
    );
    // natter does not cluster, and it is healthy whenever it answers.
    out.add("routez", "num_routes", Kind::Gauge, &[], Num::Int(0));
    for (key, value) in [("server_id", &state.id), ("server_name", &state.name)] {
        out.add("routez", key, Kind::Gauge, &[("value", value)], Num::Int(1));
    }
    jetstream(&mut out, state);
    if state.config().jetstream.is_some() {
        let fsync = natter_streams::metrics::fsync_stats();
        let mut bounds: Vec<String> = natter_streams::metrics::FSYNC_BUCKETS
            .iter()
            .map(|le| le.to_string())
            .collect();
        bounds.push("+Inf".into());
        let buckets: Vec<(String, u64)> = bounds.into_iter().zip(fsync.cumulative).collect();
        out.add_histogram(
            "natter_jetstream_fsync_seconds",
            "How long each fsync of a stream file or directory took",
            &buckets,
            fsync.sum_seconds,
            fsync.count,
        );
    }
    out.add("healthz", "status", Kind::Gauge, &[], Num::Int(0));
    out.add(
        "healthz",
        "status_value",
        Kind::Gauge,
        &[("value", "ok")],
        Num::Int(1),
    );
    out.render()
}

/// `/varz`'s fields the exporter's way: numbers as gauges, objects flattened, some strings.
fn flatten(out: &mut Exposition, subsystem: &str, path: &[&str], value: &Value) {
    let Value::Object(fields) = value else {
        return;
    };
    for (key, value) in fields {
        let mut here = path.to_vec();
        here.push(key);
        let name = here.join("_");
        match value {
            Value::Number(n) => out.add(subsystem, &name, Kind::Gauge, &[], Num::from(n)),
            Value::String(s) if LABEL_KEYS.contains(&key.as_str()) => {
                match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => out.add(subsystem, &name, Kind::Gauge, &[], Num::Int(millis(t))),
                    Err(_) => out.add(subsystem, &name, Kind::Gauge, &[("value", s)], Num::Int(1)),
                }
            }
            Value::Object(_) => flatten(out, subsystem, &here, value),
            _ => {}
        }
    }
}

fn millis<Tz: chrono::TimeZone>(t: DateTime<Tz>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// `/jsz` the way prometheus-nats-exporter's `-jsz=all` exports it: server totals
/// (`jetstream_server_*`) and one series per stream (`jetstream_stream_*`, labelled with
/// `account` and `stream_name`).
fn jetstream(out: &mut Exposition, state: &ServerState) {
    let jsz = super::jsz::collect(state, &super::jsz::JszQuery::everything());
    let n = |v: &Value| v.as_u64().map_or(Num::Int(0), Num::Int);
    let disabled = jsz["disabled"].as_bool().unwrap_or(false);
    let server = [
        (
            "jetstream_disabled",
            Num::Int(u64::from(disabled)),
            "1 when JetStream is off",
        ),
        (
            "total_streams",
            n(&jsz["streams"]),
            "Streams in every account",
        ),
        (
            "total_consumers",
            n(&jsz["consumers"]),
            "Consumers in every account",
        ),
        (
            "total_messages",
            n(&jsz["messages"]),
            "Messages stored in every stream",
        ),
        (
            "total_message_bytes",
            n(&jsz["bytes"]),
            "Bytes stored in every stream",
        ),
        (
            "max_memory",
            Num::Int(jsz["config"]["max_memory"].as_i64().unwrap_or(0).max(0) as u64),
            "max_memory_store (0: unlimited or off)",
        ),
        (
            "max_storage",
            Num::Int(jsz["config"]["max_storage"].as_i64().unwrap_or(0).max(0) as u64),
            "max_file_store (0: unlimited or off)",
        ),
    ];
    for (name, value, help) in server {
        out.add_named(
            &format!("jetstream_server_{name}"),
            help,
            Kind::Gauge,
            &[],
            value,
        );
    }
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        let acc = account["name"].as_str().unwrap_or_default();
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            let name = stream["name"].as_str().unwrap_or_default();
            let labels = [("account", acc), ("stream_name", name)];
            let st = &stream["state"];
            let series = [
                (
                    "total_messages",
                    n(&st["messages"]),
                    "Messages in the stream",
                ),
                ("total_bytes", n(&st["bytes"]), "Bytes in the stream"),
                ("first_seq", n(&st["first_seq"]), "First sequence stored"),
                ("last_seq", n(&st["last_seq"]), "Last sequence stored"),
                (
                    "consumer_count",
                    n(&st["consumer_count"]),
                    "Consumers of the stream",
                ),
            ];
            for (field, value, help) in series {
                out.add_named(
                    &format!("jetstream_stream_{field}"),
                    help,
                    Kind::Gauge,
                    &labels,
                    value,
                );
            }
            for consumer in stream["consumer_detail"].as_array().into_iter().flatten() {
                let cname = consumer["name"].as_str().unwrap_or_default();
                let labels = [
                    ("account", acc),
                    ("stream_name", name),
                    ("consumer_name", cname),
                ];
                let series = [
                    (
                        "num_pending",
                        n(&consumer["num_pending"]),
                        "Messages not yet delivered (lag)",
                    ),
                    (
                        "num_ack_pending",
                        n(&consumer["num_ack_pending"]),
                        "Delivered, not yet acknowledged",
                    ),
                    (
                        "num_redelivered",
                        n(&consumer["num_redelivered"]),
                        "Messages delivered more than once",
                    ),
                    (
                        "num_waiting",
                        n(&consumer["num_waiting"]),
                        "Pull requests waiting",
                    ),
                    (
                        "delivered_consumer_seq",
                        n(&consumer["delivered"]["consumer_seq"]),
                        "Last consumer sequence delivered",
                    ),
                    (
                        "delivered_stream_seq",
                        n(&consumer["delivered"]["stream_seq"]),
                        "Last stream sequence delivered",
                    ),
                    (
                        "ack_floor_stream_seq",
                        n(&consumer["ack_floor"]["stream_seq"]),
                        "Stream sequence up to which everything is acknowledged",
                    ),
                ];
                for (field, value, help) in series {
                    out.add_named(
                        &format!("jetstream_consumer_{field}"),
                        help,
                        Kind::Gauge,
                        &labels,
                        value,
                    );
                }
            }
        }
    }
}

/// `/subsz`'s counters (as `/subsz` with no parameters answers), plus the raw cache-hit count
/// the exporter only has as a ratio.
fn subsz(out: &mut Exposition, state: &ServerState) {
    let stats = state.sublist_stats();
    let hit_rate = if stats.matches == 0 {
        0.0
    } else {
        stats.cache_hits as f64 / stats.matches as f64
    };
    let gauges = [
        ("num_subscriptions", Num::from(stats.count)),
        ("num_cache", Num::from(stats.cache_entries)),
        ("num_inserts", Num::Int(stats.inserts)),
        ("num_removes", Num::Int(stats.removes)),
        ("num_matches", Num::Int(stats.matches)),
        ("cache_hit_rate", Num::Float(hit_rate)),
        ("max_fanout", Num::from(stats.max_fanout)),
        ("avg_fanout", Num::Float(stats.avg_fanout)),
        ("total", Num::Int(0)),
        ("offset", Num::Int(0)),
        ("limit", Num::from(DEFAULT_LIMIT)),
    ];
    for (name, value) in gauges {
        out.add("subsz", name, Kind::Gauge, &[], value);
    }
    let id = out.server_id.clone();
    out.add(
        "subsz",
        "server_id",
        Kind::Gauge,
        &[("value", &id)],
        Num::Int(1),
    );
    out.add_named(
        "natter_sublist_cache_hits_total",
        "Routing-table lookups answered from the shared match cache (gnatsd_subsz_num_matches \
         counts them all).",
        Kind::Counter,
        &[],
        Num::Int(stats.cache_hits),
    );
}

/// `/connz`'s page figures, totals over every open connection and, when `detailed`, the
/// connections with the most bytes pending one by one.
fn connz(out: &mut Exposition, conns: &[ClientSnapshot], detailed: bool) {
    let total = |f: fn(&ClientSnapshot) -> u64| Num::Int(conns.iter().map(f).sum());
    let summary = [
        (
            "num_connections",
            Kind::Gauge,
            Num::from(conns.len().min(DEFAULT_LIMIT)),
        ),
        ("total", Kind::Gauge, Num::from(conns.len())),
        ("offset", Kind::Gauge, Num::Int(0)),
        ("limit", Kind::Gauge, Num::from(DEFAULT_LIMIT)),
        (
            "pending_bytes",
            Kind::Gauge,
            total(|c| c.pending_bytes as u64),
        ),
        (
            "subscriptions",
            Kind::Gauge,
            total(|c| c.num_subscriptions as u64),
        ),
        ("in_bytes", Kind::Counter, total(|c| c.in_bytes)),
        ("out_bytes", Kind::Counter, total(|c| c.out_bytes)),
        ("in_msgs", Kind::Counter, total(|c| c.in_msgs)),
        ("out_msgs", Kind::Counter, total(|c| c.out_msgs)),
    ];
    for (name, kind, value) in summary {
        out.add("connz", name, kind, &[], value);
    }
    if !detailed {
        return;
    }
    let mut busiest: Vec<&ClientSnapshot> = conns.iter().collect();
    busiest.sort_by_key(|c| (std::cmp::Reverse(c.pending_bytes), c.cid));
    busiest.truncate(DETAILED_CONNECTIONS);
    let now = SystemTime::now();
    let epoch_ms = |t: SystemTime| Num::from(t.duration_since(UNIX_EPOCH).unwrap_or_default());
    let age_ms = |t: SystemTime| Num::from(now.duration_since(t).unwrap_or_default());
    for c in busiest {
        let (cid, ip, port) = (c.cid.to_string(), c.ip.to_string(), c.port.to_string());
        // The exporter's label set, in the values natter's `/connz` gives.
        let labels = [
            ("cid", cid.as_str()),
            ("kind", "Client"),
            ("type", "nats"),
            ("ip", &ip),
            ("port", &port),
            ("name", &c.name),
            ("name_tag", ""),
            ("account", "$G"),
            ("account_id", "$G"),
            ("lang", &c.lang),
            ("version", &c.version),
            ("tls_version", ""),
            ("tls_cipher_suite", ""),
        ];
        let rtt_micros = c.rtt.unwrap_or_default().as_micros();
        let series = [
            ("pending_bytes", Kind::Gauge, Num::from(c.pending_bytes)),
            ("subscriptions", Kind::Gauge, Num::from(c.num_subscriptions)),
            ("in_bytes", Kind::Counter, Num::Int(c.in_bytes)),
            ("out_bytes", Kind::Counter, Num::Int(c.out_bytes)),
            ("in_msgs", Kind::Counter, Num::Int(c.in_msgs)),
            ("out_msgs", Kind::Counter, Num::Int(c.out_msgs)),
            ("start", Kind::Untyped, epoch_ms(c.start)),
            ("last_activity", Kind::Untyped, epoch_ms(c.last_activity)),
            (
                "rtt",
                Kind::Gauge,
                Num::Int(rtt_micros.try_into().unwrap_or(u64::MAX)),
            ),
            ("uptime", Kind::Untyped, age_ms(c.start)),
            ("idle", Kind::Gauge, age_ms(c.last_activity)),
        ];
        for (name, kind, value) in series {
            out.add("connz", name, kind, &labels, value);
        }
    }
}

/// What the exporter says a `gnatsd_*` family is; anything else gets its field name, as the
/// exporter does.
fn help(subsystem: &str, field: &str) -> Option<&'static str> {
    Some(match (subsystem, field) {
        ("varz", "connections") => "Open client connections.",
        ("varz", "total_connections") => "Client connections accepted since start.",
        ("varz", "subscriptions") => "Subscriptions in the routing table.",
        ("varz", "in_msgs") => "Messages received from clients since start.",
        ("varz", "in_bytes") => "Payload bytes received from clients since start.",
        ("varz", "out_msgs") => "Messages sent to clients since start.",
        ("varz", "out_bytes") => "Payload bytes sent to clients since start.",
        ("varz", "slow_consumers") => "Connections closed as slow consumers since start.",
        ("varz", "stale_connections") => "Connections closed as stale since start.",
        ("varz", "mem") => "Resident set size in bytes.",
        ("varz", "cpu") => "CPU use since the previous reading, in percent of one core.",
        ("varz", "start") => "When the server started, in milliseconds since the Unix epoch.",
        ("varz", "config_load_time") => {
            "When the configuration was loaded, in milliseconds since the Unix epoch."
        }
        ("subsz", "num_inserts") => "Subscriptions added to the routing table since start.",
        ("subsz", "num_removes") => "Subscriptions removed from the routing table since start.",
        ("subsz", "num_matches") => "Routing-table lookups since start.",
        ("subsz", "num_cache") => "Subjects in the routing table's shared match cache.",
        ("subsz", "cache_hit_rate") => "Share of routing-table lookups answered from the cache.",
        ("connz", "pending_bytes") => "Bytes queued to clients and not yet written.",
        ("connz", "rtt") => "Round-trip time of the last PING, in microseconds.",
        ("connz", "start") => "When the connection was accepted, in epoch milliseconds.",
        ("connz", "last_activity") => "When the client last sent something, in epoch ms.",
        ("connz", "uptime") => "How long the connection has been open, in milliseconds.",
        ("connz", "idle") => "How long since the client last sent something, in milliseconds.",
        _ => return None,
    })
}

/// A metric type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
    Untyped,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Untyped => "untyped",
        }
    }
}

/// A sample value: integers stay exact, floats use Prometheus's spellings of the specials.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(u64),
    Float(f64),
}

impl From<usize> for Num {
    fn from(n: usize) -> Num {
        Num::Int(n as u64)
    }
}

impl From<std::time::Duration> for Num {
    /// Whole milliseconds.
    fn from(d: std::time::Duration) -> Num {
        Num::Int(d.as_millis().try_into().unwrap_or(u64::MAX))
    }
}

impl From<&serde_json::Number> for Num {
    fn from(n: &serde_json::Number) -> Num {
        n.as_u64()
            .map(Num::Int)
            .unwrap_or_else(|| Num::Float(n.as_f64().unwrap_or(f64::NAN)))
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Num::Int(n) => write!(f, "{n}"),
            Num::Float(x) if x.is_nan() => f.write_str("NaN"),
            Num::Float(x) if x.is_infinite() => f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" }),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One metric family: its help, its type and its samples (label set, value).
#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    /// (name suffix such as `_bucket` for histograms, rendered labels, value).
    samples: Vec<(&'static str, String, Num)>,
}

/// The families of one scrape, by name, each written once with its `# HELP` and `# TYPE`.
#[derive(Debug)]
struct Exposition {
    /// The `server_id` label every series carries.
    server_id: String,
    families: BTreeMap<String, Family>,
}

impl Exposition {
    fn new(server_id: &str) -> Exposition {
        Exposition {
            server_id: server_id.to_string(),
            families: BTreeMap::new(),
        }
    }

    /// A sample of `gnatsd_<subsystem>_<field>`.
    fn add(
        &mut self,
        subsystem: &str,
        field: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: Num,
    ) {
        let name = metric_name(&format!("{NAMESPACE}_{subsystem}_{field}"));
        let help = help(subsystem, field).map_or_else(|| metric_name(field), str::to_string);
        self.add_named(&name, &help, kind, labels, value);
    }

    /// A sample of the family `name`; `server_id` joins `labels`, and labels are written in
    /// name order (as the Prometheus client libraries write them).
    fn add_named(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: Num,
    ) {
        self.add_sample(name, "", help, kind, labels, value);
    }

    /// A histogram family `name`: its cumulative `_bucket` counts by upper bound `le`
    /// (the last `+Inf`), `_sum` and `_count`.
    fn add_histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[(String, u64)],
        sum: f64,
        count: u64,
    ) {
        for (le, n) in buckets {
            self.add_sample(
                name,
                "_bucket",
                help,
                Kind::Histogram,
                &[("le", le)],
                Num::Int(*n),
            );
        }
        self.add_sample(name, "_sum", help, Kind::Histogram, &[], Num::Float(sum));
        self.add_sample(name, "_count", help, Kind::Histogram, &[], Num::Int(count));
    }

    fn add_sample(
        &mut self,
        name: &str,
        suffix: &'static str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: Num,
    ) {
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push(("server_id", &self.server_id));
        all.sort_by_key(|&(k, _)| k);
        let mut rendered = String::new();
        for (i, (k, v)) in all.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(rendered, "{sep}{k}=\"{}\"", escape(v, true));
        }
        let family = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                help: help.to_string(),
                kind,
                samples: Vec::new(),
            });
        family.samples.push((suffix, rendered, value));
    }

    /// The text format: per family `# HELP`, `# TYPE`, then `name{labels} value` lines.
    fn render(&self) -> String {
        let mut s = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(s, "# HELP {name} {}", escape(&f.help, false));
            let _ = writeln!(s, "# TYPE {name} {}", f.kind.as_str());
            for (suffix, labels, value) in &f.samples {
                let _ = writeln!(s, "{name}{suffix}{{{labels}}} {value}");
            }
        }
        s
    }
}

/// `name` with every character a metric name may not hold replaced by `_`, runs of `_`
/// collapsed and `_` trimmed from the ends (the exporter's treatment of `/varz` keys such as
/// `http_req_stats` → `/connz`).
fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        let ch = if ch.is_ascii_alphanumeric() || ch == ':' {
            ch
        } else {
            '_'
        };
        if ch == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(ch);
    }
    let mut out = out.trim_end_matches('_').to_string();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Escapes a label value (`\`, `"`, newline) or, with `quote` false, help text (`\`, newline).
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_the_exporters_way() {
        assert_eq!(
            metric_name("gnatsd_varz_http_req_stats_/connz"),
            "gnatsd_varz_http_req_stats_connz"
        );
        assert_eq!(
            metric_name("gnatsd_varz_http_req_stats_/"),
            "gnatsd_varz_http_req_stats"
        );
        assert_eq!(metric_name("a-b.c__d"), "a_b_c_d");
        assert_eq!(metric_name("9lives"), "_9lives");
    }

    #[test]
    fn values_and_labels_are_written_as_the_text_format_wants() {
        assert_eq!(Num::Int(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Num::Float(0.25).to_string(), "0.25");
        assert_eq!(Num::Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Num::Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("a\"b\nc", false), "a\"b\\nc");
    }

    #[test]
    fn families_are_grouped_with_one_help_and_type() {
        let mut out = Exposition::new("ID");
        out.add("connz", "in_msgs", Kind::Counter, &[], Num::Int(3));
        out.add("varz", "mem", Kind::Gauge, &[], Num::Int(7));
        out.add(
            "connz",
            "in_msgs",
            Kind::Counter,
            &[("cid", "1"), ("name", "x\"y")],
            Num::Int(2),
        );
        assert_eq!(
            out.render(),
            "# HELP gnatsd_connz_in_msgs in_msgs\n\
             # TYPE gnatsd_connz_in_msgs counter\n\
             gnatsd_connz_in_msgs{server_id=\"ID\"} 3\n\
             gnatsd_connz_in_msgs{cid=\"1\",name=\"x\\\"y\",server_id=\"ID\"} 2\n\
             # HELP gnatsd_varz_mem Resident set size in bytes.\n\
             # TYPE gnatsd_varz_mem gauge\n\
             gnatsd_varz_mem{server_id=\"ID\"} 7\n"
        );
    }

    #[test]
    fn varz_is_flattened_as_the_exporter_does() {
        let varz = serde_json::json!({
            "server_id": "NABC",
            "now": "2026-01-01T00:00:00Z",
            "uptime": "1s",
            "start": "2026-01-01T00:00:01.5Z",
            "cpu": 1.5,
            "in_msgs": 3,
            "http_req_stats": {"/varz": 2},
            "cluster": {},
            "tls_required": true,
        });
        let mut out = Exposition::new("ID");
        flatten(&mut out, "varz", &[], &varz);
        let text = out.render();
        assert!(text.contains("# HELP gnatsd_varz_http_req_stats_varz http_req_stats_varz\n"));
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "gnatsd_varz_cpu{server_id=\"ID\"} 1.5",
                "gnatsd_varz_http_req_stats_varz{server_id=\"ID\"} 2",
                "gnatsd_varz_in_msgs{server_id=\"ID\"} 3",
                "gnatsd_varz_server_id{server_id=\"ID\",value=\"NABC\"} 1",
                "gnatsd_varz_start{server_id=\"ID\"} 1767225601500",
            ]
        );
    }
}
