//! Consumer configuration and info JSON (nats-server 2.15 field names, defaults and errors).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Retention, StreamConfig};
use crate::errors::ApiError;
use crate::util;

/// `deliver_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// From the first message.
    #[default]
    All,
    /// From the last message (matching the filter).
    Last,
    /// Only messages stored after the consumer was created.
    New,
    /// From `opt_start_seq`.
    ByStartSequence,
    /// From the first message at or after `opt_start_time`.
    ByStartTime,
    /// The last message of each subject, then new ones.
    LastPerSubject,
}

/// `ack_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// Delivered means done.
    #[default]
    None,
    /// An ack acknowledges every earlier message too.
    All,
    /// Each message is acknowledged on its own.
    Explicit,
}

/// `replay_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    /// As fast as possible.
    #[default]
    Instant,
    /// With the spacing the messages were stored with.
    Original,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u(n: &u64) -> bool {
    *n == 0
}

/// A consumer's configuration (`ConsumerConfig`), serialized in nats-server's field order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    /// Durable name (a durable consumer is never removed for inactivity by default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub durable_name: String,
    /// Name (set to the durable name, or generated for ephemerals).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where delivery starts.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// Start sequence for `by_start_sequence`.
    #[serde(default, skip_serializing_if = "is_zero_u")]
    pub opt_start_seq: u64,
    /// Start time (RFC 3339) for `by_start_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    /// How messages are acknowledged.
    #[serde(default)]
    pub ack_policy: AckPolicy,
    /// Redelivery delay without an ack (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_wait: i64,
    /// Maximum deliveries of one message (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_deliver: i64,
    /// Redelivery delays by delivery count (ns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<i64>,
    /// Only messages on this subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Only messages on these subjects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_subjects: Vec<String>,
    /// Replay speed.
    #[serde(default)]
    pub replay_policy: ReplayPolicy,
    /// Push rate limit in bits per second (accepted, not enforced).
    #[serde(default, skip_serializing_if = "is_zero_u")]
    pub rate_limit_bps: u64,
    /// Ack sampling (`"50%"`; accepted, no sample advisories are sent).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sample_freq: String,
    /// Maximum waiting pull requests.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_waiting: i64,
    /// Maximum unacknowledged messages (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    /// Push flow control.
    #[serde(default, skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Deliver headers only (with `Nats-Msg-Size`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
    /// Maximum `batch` of a pull request.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_batch: i64,
    /// Maximum `expires` of a pull request (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_expires: i64,
    /// Maximum `max_bytes` of a pull request.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes: i64,
    /// Push consumers deliver here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deliver_subject: String,
    /// Queue group of the push subscribers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deliver_group: String,
    /// Push idle heartbeat interval (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_heartbeat: i64,
    /// Removed after this long without interest (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    /// Replicas (0 = the stream's).
    #[serde(default)]
    pub num_replicas: i64,
    /// Keep the consumer state in memory.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    /// User metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Paused until this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_until: Option<String>,
}

/// nats-server's defaults.
pub const DEFAULT_ACK_WAIT: i64 = 30_000_000_000;
/// Default `max_ack_pending` of consumers that acknowledge.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// Default `max_waiting` of pull consumers.
pub const DEFAULT_MAX_WAITING: i64 = 512;
/// Default `inactive_threshold` of ephemeral consumers (5s).
pub const DEFAULT_INACTIVE_THRESHOLD: i64 = 5_000_000_000;
const MAX_DESCRIPTION: usize = 4096;
const MAX_NAME: usize = 255;

fn e(code: u16, err_code: u16, d: impl Into<String>) -> ApiError {
    ApiError {
        code,
        err_code,
        description: d.into(),
    }
}

/// Consumer API errors errors.rs does not have (codes as nats-server 2.15 sends them).
pub mod err {
    use super::e;
    use crate::errors::ApiError;

    /// 10014.
    pub fn not_found() -> ApiError {
        e(404, 10014, "consumer not found")
    }
    /// 10148.
    pub fn already_exists() -> ApiError {
        e(400, 10148, "consumer already exists")
    }
    /// 10149.
    pub fn does_not_exist() -> ApiError {
        e(400, 10149, "consumer does not exist")
    }
    /// 10012: create/update failures (`ack policy can not be updated`, ...).
    pub fn create(d: impl Into<String>) -> ApiError {
        e(500, 10012, d)
    }
    /// 10017.
    pub fn name_mismatch() -> ApiError {
        e(
            400,
            10017,
            "consumer name in subject does not match durable name in request",
        )
    }
    /// 10020.
    pub fn ephemeral_with_durable() -> ApiError {
        e(
            400,
            10020,
            "consumer expected to be ephemeral but a durable name was set in request",
        )
    }
    /// 10016.
    pub fn durable_not_set() -> ApiError {
        e(
            400,
            10018,
            "consumer expected to be durable but a durable name was not set",
        )
    }
    /// 10026.
    pub fn max_consumers() -> ApiError {
        e(400, 10026, "maximum consumers limit reached")
    }
    /// 10094: deliver policy and options disagree.
    pub fn invalid_policy(d: impl Into<String>) -> ApiError {
        e(400, 10094, d)
    }
    /// 10131.
    pub fn create_filter_mismatch() -> ApiError {
        e(
            400,
            10131,
            "Consumer create request did not match filtered subject from create subject",
        )
    }
}

/// Parses RFC 3339 (`2006-01-02T15:04:05.999999999Z07:00`) into Unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i.min(start + 9)];
        frac = format!("{digits:0<9}").parse().ok()?;
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000_000 + frac)
}

/// Formats a duration as Go's `time.Duration.String()` (`1s`, `1.5s`, `500ms`, `2m0s`).
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let width = unit.to_string().len() - 1;
            let f = format!("{rest:0width$}");
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let s = frac((secs % 60) * 1_000_000_000 + sub, 1_000_000_000);
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

impl ConsumerConfig {
    /// Push consumers have a deliver subject.
    pub fn is_push(&self) -> bool {
        !self.deliver_subject.is_empty()
    }

    /// The filters (empty: everything).
    pub fn filters(&self) -> Vec<String> {
        if !self.filter_subject.is_empty() {
            vec![self.filter_subject.clone()]
        } else {
            self.filter_subjects.clone()
        }
    }

    /// True if a message on `subject` is for this consumer.
    pub fn matches(&self, subject: &str) -> bool {
        if !self.filter_subject.is_empty() {
            return crate::subject::matches(&self.filter_subject, subject);
        }
        self.filter_subjects.is_empty()
            || self
                .filter_subjects
                .iter()
                .any(|f| crate::subject::matches(f, subject))
    }

    /// The redelivery delay after delivery number `dc` (1-based).
    pub fn redelivery_delay(&self, dc: u64) -> Duration {
        let ns = if self.backoff.is_empty() {
            self.ack_wait
        } else {
            let i = (dc.max(1) - 1).min(self.backoff.len() as u64 - 1) as usize;
            self.backoff[i]
        };
        Duration::from_nanos(ns.max(0) as u64)
    }

    /// `pause_until` in Unix nanoseconds (0: not paused).
    pub fn pause_until_nanos(&self) -> i64 {
        self.pause_until
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(0)
    }

    /// Applies nats-server's defaults and validates the config against its stream.
    /// `ephemeral`: the consumer has no durable name.
    pub fn normalize(&mut self, stream: &StreamConfig) -> Result<(), ApiError> {
        if !self.durable_name.is_empty() && !self.name.is_empty() && self.durable_name != self.name
        {
            return Err(err::name_mismatch());
        }
        if self.name.is_empty() {
            self.name = self.durable_name.clone();
        }
        for n in [&self.name, &self.durable_name] {
            if n.contains(['/', '\\']) {
                return Err(e(
                    400,
                    10127,
                    "Consumer name can not contain path separators",
                ));
            }
            if n.contains(['.', '*', '>', ' ', '\t', '\r', '\n']) {
                return Err(e(
                    500,
                    10052,
                    "consumer name can not contain '.', '*', '>', '\\', '/'",
                ));
            }
            if n.len() > MAX_NAME {
                return Err(e(
                    400,
                    10102,
                    format!("consumer name is too long, maximum allowed is {MAX_NAME}"),
                ));
            }
        }
        if self.description.len() > MAX_DESCRIPTION {
            return Err(e(
                400,
                10107,
                format!("consumer description is too long, maximum allowed is {MAX_DESCRIPTION}"),
            ));
        }
        if self.num_replicas < 0 {
            return Err(ApiError::replicas_negative());
        }
        if self.num_replicas > 1 {
            return Err(ApiError::replicas_not_supported());
        }
        if self.ack_wait < 0 {
            return Err(e(400, 10183, "consumer ack wait needs to be positive"));
        }
        // Defaults (as nats-server 2.15 reports them).
        if self.max_deliver <= 0 {
            self.max_deliver = -1;
        }
        // The first backoff is the ack wait, whatever was given and whatever the ack policy.
        if let Some(first) = self.backoff.first() {
            self.ack_wait = *first;
        }
        if self.ack_policy != AckPolicy::None {
            if self.ack_wait == 0 {
                self.ack_wait = DEFAULT_ACK_WAIT;
            }
            if self.max_ack_pending < -1 {
                self.max_ack_pending = -1;
            }
            if self.max_ack_pending == 0 {
                self.max_ack_pending = stream
                    .consumer_limits
                    .max_ack_pending
                    .filter(|v| *v > 0)
                    .unwrap_or(DEFAULT_MAX_ACK_PENDING);
            }
        }
        if self.is_push() {
            // A negative max_waiting on a push consumer is dropped, not refused.
            if self.max_waiting < 0 {
                self.max_waiting = 0;
            }
        } else if self.max_waiting <= 0 {
            self.max_waiting = DEFAULT_MAX_WAITING;
        }
        if self.max_expires < 0 {
            self.max_expires = 0;
        }
        if self.durable_name.is_empty() && self.inactive_threshold <= 0 {
            self.inactive_threshold = stream
                .consumer_limits
                .inactive_threshold
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_INACTIVE_THRESHOLD);
        }
        if self.inactive_threshold < 0 {
            self.inactive_threshold = 0;
        }
        if self.max_batch < 0 {
            self.max_batch = 0;
        }
        if self.max_bytes < 0 {
            self.max_bytes = 0;
        }
        // Validation (checkConsumerCfg).
        if self.is_push() {
            if !util::valid_literal(&self.deliver_subject) {
                return Err(e(400, 10079, "consumer deliver subject has wildcards"));
            }
            if stream
                .subjects
                .iter()
                .any(|s| crate::subject::matches(s, &self.deliver_subject))
            {
                return Err(e(400, 10081, "consumer deliver subject forms a cycle"));
            }
            if self.max_waiting != 0 {
                return Err(e(
                    400,
                    10080,
                    "consumer in push mode can not set max waiting",
                ));
            }
            // max_batch, max_expires and max_bytes are accepted (and unused) on push
            // consumers, as by nats-server 2.15.
            if self.idle_heartbeat > 0 && self.idle_heartbeat < 100_000_000 {
                return Err(e(
                    400,
                    10083,
                    "consumer idle heartbeat needs to be >= 100ms",
                ));
            }
            if self.flow_control && self.idle_heartbeat <= 0 {
                return Err(e(
                    400,
                    10108,
                    "consumer with flow control also needs heartbeats",
                ));
            }
        } else {
            if self.flow_control {
                return Err(e(
                    400,
                    10089,
                    "consumer flow control requires a push based consumer",
                ));
            }
            if self.idle_heartbeat > 0 {
                return Err(e(
                    400,
                    10088,
                    "consumer idle heartbeat requires a push based consumer",
                ));
            }
            if !self.deliver_group.is_empty() {
                return Err(e(
                    400,
                    10078,
                    "consumer is not push mode but has a deliver group set",
                ));
            }
            if self.rate_limit_bps > 0 {
                return Err(e(
                    400,
                    10086,
                    "consumer in pull mode can not have rate limit set",
                ));
            }
            if self.max_expires != 0 && self.max_expires < 1_000_000 {
                return Err(e(
                    400,
                    10115,
                    "consumer max request expires needs to be >= 1ms",
                ));
            }
        }
        if !self.backoff.is_empty() {
            // nats-server's wording says ">", but it accepts as many deliveries as values.
            if self.max_deliver != -1 && self.max_deliver < self.backoff.len() as i64 {
                return Err(e(
                    400,
                    10116,
                    "max deliver is required to be > length of backoff values",
                ));
            }
        }
        if !self.sample_freq.is_empty() {
            let f = self.sample_freq.trim_end_matches('%');
            match f.parse::<i64>() {
                // nats-server 2.15 accepts more than 100%.
                Ok(v) if v >= 0 => {}
                Ok(_) => {
                    return Err(e(
                        400,
                        10095,
                        "consumer sample frequency must be between 0 and 100",
                    ))
                }
                Err(_) => {
                    return Err(e(
                        400,
                        10095,
                        format!(
                            "failed to parse consumer sampling configuration: strconv.Atoi: parsing \"{f}\": invalid syntax"
                        ),
                    ))
                }
            }
        }
        // Filters.
        if !self.filter_subject.is_empty() && !self.filter_subjects.is_empty() {
            return Err(e(
                400,
                10136,
                "consumer cannot have both FilterSubject and FilterSubjects specified",
            ));
        }
        if self.filter_subjects.iter().any(|f| f.is_empty()) {
            return Err(e(
                400,
                10139,
                "consumer filter in FilterSubjects cannot be empty",
            ));
        }
        let filters = self.filters();
        for (i, a) in filters.iter().enumerate() {
            if !util::valid_filter(a) {
                return Err(e(
                    400,
                    10093,
                    "consumer filter subject is not a valid subset of the interest subjects",
                ));
            }
            if filters[i + 1..].iter().any(|b| util::overlaps(a, b)) {
                return Err(e(400, 10138, "consumer subject filters cannot overlap"));
            }
        }
        // Deliver policy options.
        let name = match self.deliver_policy {
            DeliverPolicy::All => "deliver all",
            DeliverPolicy::Last => "deliver last",
            DeliverPolicy::New => "deliver new",
            DeliverPolicy::ByStartSequence => "deliver by start sequence",
            DeliverPolicy::ByStartTime => "deliver by start time",
            DeliverPolicy::LastPerSubject => "deliver last per subject",
        };
        let has_seq = self.opt_start_seq > 0;
        let has_time = self.opt_start_time.is_some();
        let policy = |what: &str| {
            err::invalid_policy(format!("consumer delivery policy is {name}, but {what}"))
        };
        match self.deliver_policy {
            DeliverPolicy::ByStartSequence => {
                if !has_seq {
                    return Err(policy("optional start sequence is not set"));
                }
                if has_time {
                    return Err(policy("optional start time is also set"));
                }
            }
            DeliverPolicy::ByStartTime => {
                if !has_time {
                    return Err(policy("optional start time is not set"));
                }
                if has_seq {
                    return Err(policy("optional start sequence is also set"));
                }
            }
            _ => {
                if has_seq {
                    return Err(policy("optional start sequence is also set"));
                }
                if has_time {
                    return Err(policy("optional start time is also set"));
                }
            }
        }
        if self.deliver_policy == DeliverPolicy::LastPerSubject && filters.is_empty() {
            // nats-server 2.15 refuses it whatever the stream's subjects.
            return Err(policy("optional filter subject is not set"));
        }
        if let Some(t) = &self.opt_start_time {
            if parse_rfc3339(t).is_none() {
                return Err(ApiError::invalid_json(format!(
                    "parsing time \"{t}\" as RFC 3339 failed"
                )));
            }
        }
        if let Some(t) = &self.pause_until {
            if parse_rfc3339(t).is_none() {
                return Err(ApiError::invalid_json(format!(
                    "parsing time \"{t}\" as RFC 3339 failed"
                )));
            }
        }
        if stream.retention == Retention::WorkQueue {
            if !self.is_push() && self.ack_policy != AckPolicy::Explicit {
                return Err(e(
                    400,
                    10084,
                    "consumer in pull mode requires explicit ack policy on workqueue stream",
                ));
            }
            if self.ack_policy == AckPolicy::None {
                return Err(e(400, 10098, "workqueue stream requires explicit ack"));
            }
            if self.deliver_policy != DeliverPolicy::All {
                return Err(e(
                    400,
                    10101,
                    "consumer must be deliver all on workqueue stream",
                ));
            }
        }
        Ok(())
    }

    /// The changes an update may not make (nats-server's wording, err_code 10012).
    pub fn check_update(&self, new: &ConsumerConfig) -> Result<(), ApiError> {
        let fail = |d: &str| Err(err::create(d));
        if self.deliver_policy != new.deliver_policy {
            return fail("deliver policy can not be updated");
        }
        if self.opt_start_seq != new.opt_start_seq {
            return fail("start sequence can not be updated");
        }
        if self.opt_start_time != new.opt_start_time {
            return fail("start time can not be updated");
        }
        if self.ack_policy != new.ack_policy {
            return fail("ack policy can not be updated");
        }
        if self.replay_policy != new.replay_policy {
            return fail("replay policy can not be updated");
        }
        if self.idle_heartbeat != new.idle_heartbeat {
            return fail("heart beats can not be updated");
        }
        if self.flow_control != new.flow_control {
            return fail("flow control can not be updated");
        }
        if self.is_push() && !new.is_push() {
            return fail("can not update push consumer to pull based");
        }
        if !self.is_push() && new.is_push() {
            return fail("can not update pull consumer to push based");
        }
        if self.max_waiting != new.max_waiting {
            return fail("max waiting can not be updated");
        }
        if self.mem_storage != new.mem_storage {
            return fail("storage type can not be updated");
        }
        Ok(())
    }
}

/// `delivered` / `ack_floor` of consumer info.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceInfo {
    /// Consumer sequence.
    pub consumer_seq: u64,
    /// Stream sequence.
    pub stream_seq: u64,
    /// Time of the last delivery / ack (RFC 3339), once there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// `ConsumerInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// The stream.
    pub stream_name: String,
    /// The consumer.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The configuration.
    pub config: ConsumerConfig,
    /// Last delivered.
    pub delivered: SequenceInfo,
    /// Everything at or below this is acknowledged.
    pub ack_floor: SequenceInfo,
    /// Delivered, not acknowledged.
    pub num_ack_pending: u64,
    /// Pending messages delivered more than once.
    pub num_redelivered: u64,
    /// Waiting pull requests.
    pub num_waiting: u64,
    /// Messages not delivered yet.
    pub num_pending: u64,
    /// A push consumer's deliver subject has interest.
    #[serde(default, skip_serializing_if = "is_false")]
    pub push_bound: bool,
    /// Paused (`pause_until` in the future).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Nanoseconds until the pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_remaining: Option<i64>,
    /// Time of this report (RFC 3339).
    pub ts: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(j: &str) -> Result<ConsumerConfig, ApiError> {
        let mut c: ConsumerConfig = util::from_json(j.as_bytes()).unwrap();
        c.normalize(&StreamConfig::new("S", &["foo.>"]))?;
        Ok(c)
    }

    #[test]
    fn defaults_match_nats_server() {
        let c = norm(r#"{"durable_name":"D","ack_policy":"explicit"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"durable_name":"D","name":"D","deliver_policy":"all","ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","max_waiting":512,"max_ack_pending":1000,"num_replicas":0}"#
        );
        let c = norm(r#"{"deliver_subject":"dl","ack_policy":"none","flow_control":true,"idle_heartbeat":500000000}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"deliver_policy":"all","ack_policy":"none","max_deliver":-1,"replay_policy":"instant","flow_control":true,"deliver_subject":"dl","idle_heartbeat":500000000,"inactive_threshold":5000000000,"num_replicas":0}"#
        );
        let c = norm(r#"{"name":"B","ack_policy":"explicit","backoff":[1000000000,2000000000],"max_deliver":5}"#).unwrap();
        assert_eq!(c.ack_wait, 1_000_000_000);
        assert_eq!(c.redelivery_delay(1), Duration::from_secs(1));
        assert_eq!(c.redelivery_delay(7), Duration::from_secs(2));
    }

    #[test]
    fn validation_errors() {
        let code = |j: &str| norm(j).unwrap_err().err_code;
        assert_eq!(code(r#"{"name":"D","flow_control":true}"#), 10089);
        assert_eq!(code(r#"{"name":"D","idle_heartbeat":1000000000}"#), 10088);
        assert_eq!(
            code(r#"{"deliver_subject":"x","flow_control":true}"#),
            10108
        );
        assert_eq!(
            code(r#"{"deliver_subject":"x","idle_heartbeat":1000000}"#),
            10083
        );
        assert_eq!(code(r#"{"deliver_subject":"x.*"}"#), 10079);
        assert_eq!(code(r#"{"deliver_subject":"foo.x"}"#), 10081);
        assert_eq!(code(r#"{"filter_subjects":["foo.a","foo.*"]}"#), 10138);
        assert_eq!(code(r#"{"filter_subjects":["foo.a",""]}"#), 10139);
        assert_eq!(
            code(r#"{"filter_subject":"a","filter_subjects":["b"]}"#),
            10136
        );
        assert_eq!(code(r#"{"max_expires":100}"#), 10115);
        assert_eq!(code(r#"{"num_replicas":3}"#), 10074);
        assert_eq!(code(r#"{"ack_wait":-5}"#), 10183);
        assert_eq!(code(r#"{"rate_limit_bps":5}"#), 10086);
        assert_eq!(code(r#"{"deliver_subject":"x","max_waiting":10}"#), 10080);
        assert_eq!(code(r#"{"name":"a*b"}"#), 10052);
        let d = norm(r#"{"deliver_policy":"by_start_sequence"}"#).unwrap_err();
        assert_eq!(
            d.description,
            "consumer delivery policy is deliver by start sequence, but optional start sequence is not set"
        );
        let d = norm(r#"{"deliver_policy":"last","opt_start_time":"2020-01-01T00:00:00Z"}"#)
            .unwrap_err();
        assert_eq!(
            d.description,
            "consumer delivery policy is deliver last, but optional start time is also set"
        );
        let d = norm(r#"{"sample_freq":"abc"}"#).unwrap_err();
        assert_eq!(d.description, "failed to parse consumer sampling configuration: strconv.Atoi: parsing \"abc\": invalid syntax");
        let mut wq = StreamConfig::new("W", &["wq.>"]);
        wq.retention = Retention::WorkQueue;
        let mut c = ConsumerConfig::default();
        assert_eq!(c.normalize(&wq).unwrap_err().err_code, 10084);
        let mut c = ConsumerConfig {
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        };
        assert_eq!(c.normalize(&wq).unwrap_err().err_code, 10101);
    }

    #[test]
    fn update_rules() {
        let a = norm(r#"{"durable_name":"U","ack_policy":"explicit"}"#).unwrap();
        let b = norm(r#"{"durable_name":"U","ack_policy":"all"}"#).unwrap();
        assert_eq!(
            a.check_update(&b).unwrap_err().description,
            "ack policy can not be updated"
        );
        let mut b = a.clone();
        b.deliver_subject = "z".into();
        assert_eq!(
            a.check_update(&b).unwrap_err().description,
            "can not update pull consumer to push based"
        );
        let b = norm(
            r#"{"durable_name":"U","ack_policy":"explicit","max_deliver":5,"description":"d"}"#,
        )
        .unwrap();
        assert!(a.check_update(&b).is_ok());
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-22T05:45:19.24541048Z"),
            Some(1_795_326_319_245_410_480)
        );
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("nope"), None);
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3661)), "1h1m1s");
    }
}
