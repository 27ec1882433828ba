//! Stream configuration and state, with JetStream's JSON field names (ADR-8 / nats-server 2.15).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::errors::ApiError;
use crate::util;

/// `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// Keep messages until a limit removes them.
    #[default]
    Limits,
    /// Keep messages while a consumer has interest.
    Interest,
    /// Remove messages once acknowledged.
    #[serde(rename = "workqueue")]
    WorkQueue,
}

/// `storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// Segment files on disk.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// `discard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    /// Remove the oldest messages to make room.
    #[default]
    Old,
    /// Reject new messages once a limit is reached.
    New,
}

/// `republish`: stored messages matching `src` are published again to `dest` (mapped as
/// subject mappings are), with `Nats-Stream`, `Nats-Subject`, `Nats-Sequence`,
/// `Nats-Time-Stamp` and `Nats-Last-Sequence` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Republish {
    /// Which subjects (`>` when empty).
    #[serde(default)]
    pub src: String,
    /// Where to, with `$N` or `{{wildcard(N)}}` for the source's `*` and `>` for its `>`.
    #[serde(default)]
    pub dest: String,
    /// Headers only, with `Nats-Msg-Size`, no payload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
}

impl Republish {
    /// The mapping (checked by [`StreamConfig::normalize`]); `None` for an empty `dest`,
    /// which nats-server accepts and natter takes as nowhere.
    pub fn transform(&self) -> Option<crate::republish::Transform> {
        crate::republish::Transform::new(&self.src, &self.dest).ok()
    }
}

/// `consumer_limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerLimits {
    /// Default and maximum inactive threshold of consumers (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_threshold: Option<i64>,
    /// Maximum `max_ack_pending` of consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<i64>,
}

/// Default duplicate window: two minutes, in nanoseconds.
pub const DEFAULT_DUPLICATE_WINDOW: i64 = 120_000_000_000;

/// Fields nats-server accepts that natter does not implement yet: accepted when absent, null,
/// false, zero or empty; rejected with a clear error otherwise.
const UNSUPPORTED: &[&str] = &[
    "placement",
    "mirror",
    "sources",
    "subject_transform",
    "template_owner",
    "mirror_direct",
    "allow_msg_counter",
    "allow_atomic",
    "allow_msg_schedules",
    "persist_mode",
];

/// A stream's configuration (`StreamConfig`). Serializes in nats-server's field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Stream name.
    #[serde(default)]
    pub name: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Subjects (wildcards allowed); defaults to the stream name.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Retention policy.
    #[serde(default)]
    pub retention: Retention,
    /// Maximum consumers (-1 unlimited).
    #[serde(default = "minus_one")]
    pub max_consumers: i64,
    /// Maximum messages (-1 unlimited).
    #[serde(default = "minus_one")]
    pub max_msgs: i64,
    /// Maximum bytes (-1 unlimited).
    #[serde(default = "minus_one")]
    pub max_bytes: i64,
    /// Maximum age in nanoseconds (0 unlimited).
    #[serde(default)]
    pub max_age: i64,
    /// Maximum messages per subject (-1 unlimited).
    #[serde(default = "minus_one")]
    pub max_msgs_per_subject: i64,
    /// Maximum message size, headers plus payload (-1 unlimited).
    #[serde(default = "minus_one")]
    pub max_msg_size: i64,
    /// Discard policy.
    #[serde(default)]
    pub discard: Discard,
    /// Storage type.
    #[serde(default)]
    pub storage: StorageType,
    /// Replicas (only 1 without clustering).
    #[serde(default)]
    pub num_replicas: i64,
    /// Publishes with `Nats-Msg-Id` are deduplicated within this window (ns).
    #[serde(default)]
    pub duplicate_window: i64,
    /// `none` (natter does not compress).
    #[serde(default = "compression_none")]
    pub compression: String,
    /// Publish stored messages again, elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<Republish>,
    /// Disable publish acknowledgements.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_ack: bool,
    /// Serve `$JS.API.DIRECT.GET.<stream>`.
    #[serde(default)]
    pub allow_direct: bool,
    /// Always false (no mirrors yet); serialized because nats-server always sends it.
    #[serde(default, skip_deserializing)]
    pub mirror_direct: bool,
    /// With `discard: new` and `max_msgs_per_subject`, reject new messages per subject.
    #[serde(default, skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    /// No more writes, deletes or purges.
    #[serde(default)]
    pub sealed: bool,
    /// Forbid `MSG.DELETE`.
    #[serde(default)]
    pub deny_delete: bool,
    /// Forbid `PURGE` (and rollups).
    #[serde(default)]
    pub deny_purge: bool,
    /// Honour `Nats-Rollup` headers.
    #[serde(default)]
    pub allow_rollup_hdrs: bool,
    /// Limits applied to consumers.
    #[serde(default)]
    pub consumer_limits: ConsumerLimits,
    /// Messages may carry a `Nats-TTL` header (once on, it cannot be turned off).
    #[serde(default)]
    pub allow_msg_ttl: bool,
    /// Nanoseconds; when set, a subject emptied by age (`max_age` or `Nats-TTL`) gets a marker
    /// message that lives this long. Implies `allow_msg_ttl` and `allow_rollup_hdrs`.
    #[serde(default, skip_serializing_if = "no_nanos")]
    pub subject_delete_marker_ttl: i64,
    /// Initial sequence of a new stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// User metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Anything else the request carried (checked by [`StreamConfig::normalize`]).
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

fn minus_one() -> i64 {
    -1
}
fn compression_none() -> String {
    "none".into()
}
fn no_nanos(v: &i64) -> bool {
    *v == 0
}
fn is_false(b: &bool) -> bool {
    !*b
}

fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl StreamConfig {
    /// A config with this name and subjects and every other field at its default.
    pub fn new(name: &str, subjects: &[&str]) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..StreamConfig::default()
        }
    }

    /// Parses a request body; an empty body is the default config (name empty).
    pub fn parse(payload: &[u8]) -> Result<StreamConfig, ApiError> {
        if util::is_empty_json(payload) {
            return Ok(StreamConfig::default());
        }
        util::from_json(payload).map_err(ApiError::invalid_json)
    }

    /// Applies nats-server's defaults (0 means unlimited / default) and validates the config on
    /// its own (overlap with other streams is checked by the caller).
    pub fn normalize(&mut self) -> Result<(), ApiError> {
        for (k, v) in &self.other {
            if UNSUPPORTED.contains(&k.as_str()) {
                if !falsy(v) {
                    return Err(ApiError::invalid_config(format!(
                        "stream configuration field \"{k}\" is not supported by natter"
                    )));
                }
            } else {
                return Err(ApiError::invalid_json(format!(
                    "json: unknown field \"{k}\""
                )));
            }
        }
        self.other.clear();
        if self.name.contains(['/', '\\']) {
            return Err(ApiError::name_has_path_separators());
        }
        if self.name.is_empty() || self.name.contains(['.', '*', '>', ' ', '\t', '\r', '\n']) {
            return Err(ApiError::invalid_config(
                "stream name is required and can not contain '.', '*', '>', '\\', '/'",
            ));
        }
        // nats-server takes any limit at or below zero as unlimited.
        for v in [
            &mut self.max_consumers,
            &mut self.max_msgs,
            &mut self.max_bytes,
            &mut self.max_msgs_per_subject,
            &mut self.max_msg_size,
        ] {
            if *v <= 0 {
                *v = -1;
            }
        }
        if self.num_replicas == 0 {
            self.num_replicas = 1;
        }
        if self.num_replicas < 0 {
            return Err(ApiError::replicas_negative());
        }
        if self.num_replicas > 5 {
            return Err(ApiError::invalid_config("maximum replicas is 5"));
        }
        if self.num_replicas > 1 {
            return Err(ApiError::replicas_not_supported());
        }
        if self.max_age < 0 {
            return Err(ApiError::invalid_config("max age can not be negative"));
        }
        if self.max_age != 0 && self.max_age < 100_000_000 {
            return Err(ApiError::invalid_config("max age needs to be >= 100ms"));
        }
        if self.duplicate_window < 0 {
            return Err(ApiError::invalid_config(
                "duplicates window can not be negative",
            ));
        }
        if self.duplicate_window == 0 {
            self.duplicate_window = if self.max_age != 0 && self.max_age < DEFAULT_DUPLICATE_WINDOW
            {
                self.max_age
            } else {
                DEFAULT_DUPLICATE_WINDOW
            };
        }
        if self.max_age != 0 && self.duplicate_window > self.max_age {
            return Err(ApiError::invalid_config(
                "duplicates window can not be larger then max age",
            ));
        }
        if self.compression.is_empty() {
            self.compression = "none".into();
        }
        if self.compression != "none" {
            return Err(ApiError::invalid_config(format!(
                "compression \"{}\" is not supported by natter",
                self.compression
            )));
        }
        if self.discard_new_per_subject {
            if self.discard != Discard::New {
                return Err(ApiError::invalid_config(
                    "discard new per subject requires discard new policy to be set",
                ));
            }
            if self.max_msgs_per_subject <= 0 {
                return Err(ApiError::invalid_config(
                    "discard new per subject requires max msgs per subject > 0",
                ));
            }
        }
        if self.subject_delete_marker_ttl < 0 {
            return Err(ApiError::invalid_config(
                "subject delete marker TTL must not be negative",
            ));
        }
        if self.subject_delete_marker_ttl != 0 {
            if self.subject_delete_marker_ttl < 1_000_000_000 {
                return Err(ApiError::invalid_config(
                    "subject delete marker TTL must be at least 1 second",
                ));
            }
            // As nats-server (outside pedantic mode): markers need TTLs and are roll-ups, which
            // need purges allowed; only asking for both roll-ups and no purges is an error.
            if !(self.deny_purge && self.allow_rollup_hdrs) {
                self.deny_purge = false;
                self.allow_rollup_hdrs = true;
            }
            self.allow_msg_ttl = true;
        }
        if self.deny_purge && self.allow_rollup_hdrs {
            return Err(ApiError::invalid_config(
                "roll-ups require the purge permission",
            ));
        }
        if self.subjects.is_empty() {
            self.subjects = vec![self.name.clone()];
        }
        let mut seen: Vec<&String> = Vec::new();
        for s in &self.subjects {
            if !util::valid_filter(s) {
                return Err(ApiError::invalid_config("invalid subject"));
            }
            if util::overlaps(s, "$JS.API.>") && !self.no_ack {
                return Err(ApiError::invalid_config(
                    "subjects that overlap with jetstream api require no-ack to be true",
                ));
            }
            if let Some(prev) = seen.iter().find(|p| util::overlaps(p, s)) {
                return Err(ApiError::invalid_config(format!(
                    "subject \"{prev}\" overlaps with \"{s}\""
                )));
            }
            seen.push(s);
        }
        if let Some(r) = &mut self.republish {
            if r.src.is_empty() {
                r.src = ">".into();
            }
            if !r.dest.is_empty() {
                use crate::republish::{Transform, TransformError};
                // As nats-server: the destination as written, before it is checked as a mapping.
                if self.subjects.iter().any(|s| util::overlaps(s, &r.dest)) {
                    return Err(ApiError::invalid_config(
                        "stream configuration for republish destination forms a cycle",
                    ));
                }
                Transform::new(&r.src, &r.dest).map_err(|e| match e {
                    TransformError::Invalid => ApiError::invalid_config(format!(
                        "stream configuration for republish with transform from '{}' to '{}' not valid",
                        r.src, r.dest
                    )),
                    TransformError::Unsupported(f) => ApiError::invalid_config(format!(
                        "republish destination function \"{f}\" is not supported by natter"
                    )),
                })?;
            }
        }
        Ok(())
    }

    /// How long delete markers live; `None` if the stream places none.
    pub fn marker_ttl(&self) -> Option<Duration> {
        (self.subject_delete_marker_ttl > 0)
            .then(|| Duration::from_nanos(self.subject_delete_marker_ttl as u64))
    }

    /// Checks an update from `self` (current, normalized) to `new` (normalized).
    pub fn check_update(&self, new: &StreamConfig) -> Result<(), ApiError> {
        let bad = |d: &str| Err(ApiError::invalid_config(d.to_string()));
        if new.storage != self.storage {
            return bad("stream configuration update can not change storage type");
        }
        if new.retention != self.retention
            && (self.retention == Retention::WorkQueue || new.retention == Retention::WorkQueue)
        {
            return bad(
                "stream configuration update can not change retention policy to/from workqueue",
            );
        }
        if self.sealed && !new.sealed {
            return bad("stream configuration update can not unseal a sealed stream");
        }
        if self.deny_delete && !new.deny_delete {
            return bad("stream configuration update can not cancel deny message deletes");
        }
        if self.deny_purge && !new.deny_purge {
            return bad("stream configuration update can not cancel deny purge");
        }
        if self.allow_msg_ttl && !new.allow_msg_ttl {
            return bad("message TTL status can not be disabled");
        }
        Ok(())
    }
}

/// A stream's state (`StreamState`), as in `STREAM.INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence (0 for a stream that never stored anything).
    pub first_seq: u64,
    /// Time of the first message (RFC 3339).
    pub first_ts: String,
    /// Last sequence.
    pub last_seq: u64,
    /// Time of the last message (RFC 3339).
    pub last_ts: String,
    /// Deleted sequences between first and last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_deleted: u64,
    /// The deleted sequences themselves (only when asked for with `deleted_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<u64>>,
    /// Distinct subjects.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_subjects: u64,
    /// Messages per subject (only when asked for with `subjects_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<BTreeMap<String, u64>>,
    /// Consumers.
    pub consumer_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `cluster` in stream info (single server: the leader is this server).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Server name.
    pub leader: String,
}

/// `StreamInfo`: config, creation time, state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The configuration.
    pub config: StreamConfig,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The state.
    pub state: StreamState,
    /// This server, when it has a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// Time of this report (RFC 3339).
    pub ts: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_nats_server() {
        let mut c = StreamConfig::parse(br#"{"name":"S","subjects":["foo.>"]}"#).unwrap();
        c.normalize().unwrap();
        let got = serde_json::to_string(&c).unwrap();
        assert_eq!(
            got,
            r#"{"name":"S","subjects":["foo.>"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"compression":"none","allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false,"consumer_limits":{},"allow_msg_ttl":false}"#
        );
    }

    #[test]
    fn validation_errors() {
        let err = |j: &str| {
            let mut c = StreamConfig::parse(j.as_bytes())?;
            c.normalize()
        };
        assert_eq!(
            err(r#"{"name":"R","num_replicas":3}"#)
                .unwrap_err()
                .err_code,
            10074
        );
        assert_eq!(
            err(r#"{"name":"H","max_age":1000}"#)
                .unwrap_err()
                .description,
            "max age needs to be >= 100ms"
        );
        assert_eq!(
            err(r#"{"name":"H","subjects":["h5.*.>","h5.a.>"]}"#)
                .unwrap_err()
                .description,
            "subject \"h5.*.>\" overlaps with \"h5.a.>\""
        );
        assert_eq!(
            err(r#"{"name":"H","unknownfield":1}"#)
                .unwrap_err()
                .description,
            "invalid JSON: json: unknown field \"unknownfield\""
        );
        assert!(err(r#"{"name":"H","mirror":null,"allow_msg_ttl":false}"#).is_ok());
        assert!(err(r#"{"name":"H","mirror":{"name":"X"}}"#).is_err());
        assert_eq!(err("garbage").unwrap_err().err_code, 10025);
    }

    #[test]
    fn delete_markers_imply_ttls_and_rollups() {
        let norm = |j: &str| {
            let mut c = StreamConfig::parse(j.as_bytes()).unwrap();
            c.normalize().map(|_| c)
        };
        let c = norm(r#"{"name":"M","subject_delete_marker_ttl":1000000000,"deny_purge":true}"#)
            .unwrap();
        assert!(c.allow_msg_ttl && c.allow_rollup_hdrs && !c.deny_purge);
        assert_eq!(c.marker_ttl(), Some(Duration::from_secs(1)));
        let err = |j: &str| norm(j).unwrap_err().description;
        assert_eq!(
            err(r#"{"name":"M","subject_delete_marker_ttl":999999999}"#),
            "subject delete marker TTL must be at least 1 second"
        );
        assert_eq!(
            err(r#"{"name":"M","subject_delete_marker_ttl":-1}"#),
            "subject delete marker TTL must not be negative"
        );
        let on = norm(r#"{"name":"M","allow_msg_ttl":true}"#).unwrap();
        let off = norm(r#"{"name":"M"}"#).unwrap();
        assert!(off.check_update(&on).is_ok());
        assert_eq!(
            on.check_update(&off).unwrap_err().description,
            "message TTL status can not be disabled"
        );
    }
}
