//! JetStream API errors: `{"code","err_code","description"}` with nats-server 2.15's codes.

use serde::{Deserialize, Serialize};

/// One JetStream API error, serialized as the `error` object of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP-like status (400, 404, 500, 503).
    pub code: u16,
    /// JetStream error code (`err_code`), e.g. 10059 for stream not found.
    pub err_code: u16,
    /// Human-readable text, as nats-server words it.
    pub description: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (err_code={})", self.description, self.err_code)
    }
}

impl std::error::Error for ApiError {}

fn e(code: u16, err_code: u16, d: impl Into<String>) -> ApiError {
    ApiError {
        code,
        err_code,
        description: d.into(),
    }
}

impl ApiError {
    /// 10003 `bad request`.
    pub fn bad_request() -> Self {
        e(400, 10003, "bad request")
    }
    /// 10023 `insufficient resources` (store full, account storage limit reached).
    pub fn insufficient_resources() -> Self {
        e(503, 10023, "insufficient resources")
    }
    /// 10025 `invalid JSON: ...`.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        e(400, 10025, format!("invalid JSON: {detail}"))
    }
    /// 10028 a memory stream's max_bytes exceeds the account's memory.
    pub fn memory_resources_exceeded() -> Self {
        e(500, 10028, "insufficient memory resources available")
    }
    /// 10037 `no message found` (MSG.GET).
    pub fn no_message_found() -> Self {
        e(404, 10037, "no message found")
    }
    /// 10038 `expected an empty request payload`.
    pub fn not_empty_request() -> Self {
        e(400, 10038, "expected an empty request payload")
    }
    /// 10047 a file stream's max_bytes exceeds the account's storage.
    pub fn storage_resources_exceeded() -> Self {
        e(500, 10047, "insufficient storage resources available")
    }
    /// 10052 an invalid stream configuration, with nats-server's wording.
    pub fn invalid_config(d: impl Into<String>) -> Self {
        e(500, 10052, d)
    }
    /// 10054 `message size exceeds maximum allowed`.
    pub fn message_too_big() -> Self {
        e(400, 10054, "message size exceeds maximum allowed")
    }
    /// 10056 `stream name in subject does not match request`.
    pub fn name_mismatch() -> Self {
        e(400, 10056, "stream name in subject does not match request")
    }
    /// 10057 message delete failed (`no message found`, `message delete not permitted`).
    pub fn msg_delete_failed(d: impl Into<String>) -> Self {
        e(500, 10057, d)
    }
    /// 10058 `stream name already in use with a different configuration`.
    pub fn name_in_use() -> Self {
        e(
            400,
            10058,
            "stream name already in use with a different configuration",
        )
    }
    /// 10059 `stream not found`.
    pub fn stream_not_found() -> Self {
        e(404, 10059, "stream not found")
    }
    /// 10060 `expected stream does not match`.
    pub fn expected_stream_mismatch() -> Self {
        e(400, 10060, "expected stream does not match")
    }
    /// 10065 `subjects overlap with an existing stream`.
    pub fn subjects_overlap() -> Self {
        e(400, 10065, "subjects overlap with an existing stream")
    }
    /// 10070 `wrong last msg ID: <id>`.
    pub fn wrong_last_msg_id(last: &str) -> Self {
        e(400, 10070, format!("wrong last msg ID: {last}"))
    }
    /// 10071 `wrong last sequence: <n>`.
    pub fn wrong_last_sequence(last: u64) -> Self {
        e(400, 10071, format!("wrong last sequence: {last}"))
    }
    /// 10074 `replicas > 1 not supported in non-clustered mode`.
    pub fn replicas_not_supported() -> Self {
        e(
            500,
            10074,
            "replicas > 1 not supported in non-clustered mode",
        )
    }
    /// 10077 discard-new limit reached: `maximum messages exceeded`, `maximum bytes exceeded`,
    /// `maximum messages per subject exceeded`.
    pub fn store_failed(d: impl Into<String>) -> Self {
        e(503, 10077, d)
    }
    /// 10109 `invalid operation on sealed stream`.
    pub fn sealed() -> Self {
        e(400, 10109, "invalid operation on sealed stream")
    }
    /// 10110 `stream purge not permitted`.
    pub fn purge_not_permitted() -> Self {
        e(500, 10110, "stream purge not permitted")
    }
    /// 10111 rollup errors (`rollup not permitted`, `rollup value invalid: "x"`).
    pub fn rollup_failed(d: impl Into<String>) -> Self {
        e(500, 10111, d)
    }
    /// 10128 `Stream name can not contain path separators` (capitalized, as nats-server words it).
    pub fn name_has_path_separators() -> Self {
        e(400, 10128, "Stream name can not contain path separators")
    }
    /// 10133 `replicas count cannot be negative`.
    pub fn replicas_negative() -> Self {
        e(400, 10133, "replicas count cannot be negative")
    }
    /// 10043 `sequence <n> not found` (MSG.DELETE of a deleted sequence in a file stream).
    pub fn sequence_not_found(seq: u64) -> Self {
        e(400, 10043, format!("sequence {seq} not found"))
    }
    /// 10166 `per-message TTL is disabled` (a `Nats-TTL` header on a stream without
    /// `allow_msg_ttl`).
    pub fn msg_ttl_disabled() -> Self {
        e(400, 10166, "per-message TTL is disabled")
    }
    /// 10165 `invalid per-message TTL` (not `never`, a duration or whole seconds, or under a
    /// second).
    pub fn msg_ttl_invalid() -> Self {
        e(400, 10165, "invalid per-message TTL")
    }
    /// 10002 `resource limits exceeded for account` (a publish past the account's own
    /// storage limit).
    pub fn account_resources_exceeded() -> Self {
        e(400, 10002, "resource limits exceeded for account")
    }
    /// 10027 `maximum number of streams reached`.
    pub fn max_streams() -> Self {
        e(400, 10027, "maximum number of streams reached")
    }
    /// 10113 `account requires a stream config to have max bytes set`.
    pub fn max_bytes_required() -> Self {
        e(
            400,
            10113,
            "account requires a stream config to have max bytes set",
        )
    }
    /// 10122 `stream max bytes exceeds account limit max stream bytes`.
    pub fn stream_max_bytes_exceeded() -> Self {
        e(
            400,
            10122,
            "stream max bytes exceeds account limit max stream bytes",
        )
    }
    /// 10011 a general storage failure.
    pub fn storage_failed(d: impl std::fmt::Display) -> Self {
        e(500, 10011, format!("jetstream store failed: {d}"))
    }
}

impl From<crate::Error> for ApiError {
    fn from(err: crate::Error) -> Self {
        match err {
            crate::Error::StorageFull => ApiError::insufficient_resources(),
            other => ApiError::storage_failed(other),
        }
    }
}
