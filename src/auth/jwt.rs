//! NATS JWTs for operator mode ("decentralized auth").
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(signature)`, every part
//! unpadded. The header is `{"typ":"JWT","alg":"ed25519-nkey"}` and the signature is an
//! ed25519 signature, made by the nkey named in the claims' `iss`, over the ASCII text
//! `header.claims`. The claims hold the registered fields (`jti`, `iat`, `iss`, `sub`, `name`,
//! `exp`, `nbf`, `aud`) and a `nats` object whose `type` says what the token describes
//! (`operator`, `account` or `user`) and whose `version` is 2.
//!
//! Version 1 tokens (header `alg` `ed25519`, `type` at the top level, no `nats.version`,
//! signature over the claims part only) are still accepted by nats-server 2.x (its own test
//! operator is one), so [`decode`] accepts them too; [`encode`] always writes version 2.
//!
//! [`decode`] checks the encoding, the signature and the key kinds, nothing else: whether the
//! issuer is trusted (an operator key or one of its signing keys, an account or one of its
//! signing keys), expiry, revocation and the limits are the caller's business. See
//! [`Claims::is_expired_at`], [`Claims::not_yet_valid_at`], [`AccountClaims::is_user_revoked`].
//!
//! Defaults: a field absent from the JSON reads as 0/empty, because that is how nats-server
//! reads it (a v2 user JWT without `subs` may not subscribe; an account JWT without `limits`
//! admits no connection). The Rust `Default` impls instead give what nsc writes for a new
//! entity (limits -1, i.e. unlimited, and wildcard exports allowed), so that encoding
//! `UserClaims::default()` yields a usable user. [`AccountLimits::zero`] and
//! [`UserPermissionLimits::zero`] are the absent-JSON values.
//!
//! Also here: `.creds` files ([`parse_creds`], [`format_creds`]) and the nonce signature a
//! client sends in `CONNECT` ([`verify_nonce_signature`]).

use std::collections::BTreeMap;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use nkeys::KeyPair;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

/// The `typ` every NATS JWT header carries (compared case-insensitively on decode).
pub const TOKEN_TYPE: &str = "JWT";
/// The `alg` of version 2 tokens; the only one [`encode`] writes.
pub const ALGORITHM_V2: &str = "ed25519-nkey";
/// The `alg` of version 1 tokens, still accepted by [`decode`].
pub const ALGORITHM_V1: &str = "ed25519";
/// The `nats.version` [`encode`] writes.
pub const CLAIMS_VERSION: u32 = 2;
/// A limit of -1 means "unlimited".
pub const NO_LIMIT: i64 = -1;

/// Unpadded base64url. Decoding tolerates non-zero trailing bits, as Go's decoder does; the
/// signature covers the encoded text, so this leniency cannot change what is signed.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a token, a creds file or a signing request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not three `.`-separated parts.
    Malformed(String),
    /// A part is not valid unpadded base64url.
    Encoding { part: &'static str, reason: String },
    /// A part is not the JSON it should be.
    Json { part: &'static str, reason: String },
    /// The header's `typ` or `alg` is not one NATS uses.
    Header(String),
    /// `iss` is missing or not a valid nkey public key.
    BadIssuer(String),
    /// `sub` is missing or not a valid nkey public key.
    BadSubject(String),
    /// The signature does not verify with the `iss` key.
    BadSignature,
    /// `nats.type` is not the expected claim type.
    WrongType {
        expected: &'static str,
        found: String,
    },
    /// The issuer key is of the wrong kind for this claim type (e.g. a user not signed by an
    /// account key).
    WrongIssuerKind { expected: char, issuer: String },
    /// The subject key is of the wrong kind for this claim type.
    WrongSubjectKind { expected: char, subject: String },
    /// `nats.version` is newer than this implementation (and nats-server 2.15) knows.
    UnsupportedVersion(u32),
    /// A `.creds` file could not be parsed.
    Creds(String),
    /// Signing failed (e.g. the key pair has no seed).
    Signing(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed JWT: {why}"),
            JwtError::Encoding { part, reason } => {
                write!(f, "JWT {part} is not valid base64url: {reason}")
            }
            JwtError::Json { part, reason } => write!(f, "JWT {part} is not valid JSON: {reason}"),
            JwtError::Header(why) => write!(f, "unsupported JWT header: {why}"),
            JwtError::BadIssuer(why) => write!(f, "invalid JWT issuer: {why}"),
            JwtError::BadSubject(why) => write!(f, "invalid JWT subject: {why}"),
            JwtError::BadSignature => write!(f, "JWT signature verification failed"),
            JwtError::WrongType { expected, found } => {
                write!(f, "wrong JWT type: expected {expected:?}, found {found:?}")
            }
            JwtError::WrongIssuerKind { expected, issuer } => write!(
                f,
                "wrong JWT issuer kind: expected a {} key ('{expected}...'), found {issuer:?}",
                key_kind_name(*expected)
            ),
            JwtError::WrongSubjectKind { expected, subject } => write!(
                f,
                "wrong JWT subject kind: expected a {} key ('{expected}...'), found {subject:?}",
                key_kind_name(*expected)
            ),
            JwtError::UnsupportedVersion(v) => {
                write!(f, "unsupported JWT claims version {v} (expected 1 or 2)")
            }
            JwtError::Creds(why) => write!(f, "invalid credentials: {why}"),
            JwtError::Signing(why) => write!(f, "cannot sign JWT: {why}"),
        }
    }
}

impl std::error::Error for JwtError {}

fn key_kind_name(prefix: char) -> &'static str {
    match prefix {
        'O' => "operator",
        'A' => "account",
        'U' => "user",
        'N' => "server",
        'C' => "cluster",
        _ => "nkey",
    }
}

// ---------------------------------------------------------------------------------------------
// Generic claims

/// Implemented by the `nats` part of each claim type: what `nats.type` must be and which key
/// kinds may appear as subject and issuer.
pub trait ClaimKind {
    /// The `nats.type` value (`"operator"`, `"account"`, `"user"`).
    const TYPE: &'static str;
    /// First character of the subject's public key.
    const SUBJECT_PREFIX: char;
    /// First character of the issuer's public key.
    const ISSUER_PREFIX: char;
}

/// A decoded (or to-be-encoded) token: the registered claims plus the type-specific `nats`
/// part. Times are Unix seconds; `exp`/`nbf` of `None` or `<= 0` mean "not set".
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Claims<T> {
    /// Token id. [`encode`] fills it in.
    #[serde(default)]
    pub jti: String,
    /// Issued at. [`encode`] sets it to now when it is 0.
    #[serde(default)]
    pub iat: i64,
    /// Public key of the signer. [`encode`] sets it from the signer.
    #[serde(default)]
    pub iss: String,
    /// Public key the token is about (`O...`, `A...` or `U...`).
    #[serde(default)]
    pub sub: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Audience (rarely used).
    #[serde(default)]
    pub aud: Option<String>,
    /// Expiry.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The type-specific part.
    #[serde(default)]
    pub nats: T,
    /// The claims format version: 2 for current tokens, 1 for legacy ones. Set by [`decode`];
    /// ignored by [`encode`], which always writes 2.
    #[serde(skip)]
    pub version: u32,
}

impl<T> Claims<T> {
    /// New claims about `sub` with the given type-specific part; `iss`, `jti` and `iat` are
    /// filled in by [`encode`].
    pub fn new(sub: impl Into<String>, name: impl Into<String>, nats: T) -> Self {
        Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: sub.into(),
            name: name.into(),
            aud: None,
            exp: None,
            nbf: None,
            nats,
            version: CLAIMS_VERSION,
        }
    }

    /// The expiry, if one is set (`exp > 0`).
    pub fn expires(&self) -> Option<i64> {
        self.exp.filter(|&e| e > 0)
    }

    /// The not-before time, if one is set (`nbf > 0`).
    pub fn not_before(&self) -> Option<i64> {
        self.nbf.filter(|&n| n > 0)
    }

    /// Whether the token has expired at `now` (Unix seconds). As in nats-server, a token is
    /// expired once `now` is past `exp`, i.e. it is still valid during the second `exp`.
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires().is_some_and(|e| now > e)
    }

    /// Whether the token is not valid yet at `now` (Unix seconds): `nbf` is after `now`.
    pub fn not_yet_valid_at(&self, now: i64) -> bool {
        self.not_before().is_some_and(|n| n > now)
    }

    /// Whether the token is within its validity window at `now`.
    pub fn is_valid_at(&self, now: i64) -> bool {
        !self.is_expired_at(now) && !self.not_yet_valid_at(now)
    }

    /// Whether the issuer is the subject (as nsc makes operator tokens). [`decode`] does not
    /// require it for operators, as nats-server 2.15 does not either.
    pub fn is_self_signed(&self) -> bool {
        self.iss == self.sub
    }
}

impl Claims<UserClaims> {
    /// The account the user belongs to: `nats.issuer_account` when the user was signed by one
    /// of the account's signing keys, otherwise the issuer itself.
    pub fn issuer_account(&self) -> &str {
        if self.nats.issuer_account.is_empty() {
            &self.iss
        } else {
            &self.nats.issuer_account
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Publish or subscribe permission: subjects allowed and denied. Empty `allow` means
/// "everything not denied".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permission {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub allow: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub deny: Vec<String>,
}

impl Permission {
    /// Whether neither list has anything in it.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Permission to publish to reply subjects of received requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponsePermission {
    /// How many responses may be sent per request (`max` in the JWT).
    #[serde(default)]
    pub max: i64,
    /// For how long, in nanoseconds (`ttl` in the JWT, a Go duration).
    #[serde(default)]
    pub ttl: i64,
}

/// Publish/subscribe/response permissions, as in an account's `default_permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(rename = "pub", default)]
    pub pub_: Permission,
    #[serde(default)]
    pub sub: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
}

/// A daily time window a user may connect in, `"HH:MM:SS"` each.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimeRange {
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
}

/// The permissions and limits of a user, as carried by a scoped signing key's `template`.
/// The same fields appear, flat, in [`UserClaims`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPermissionLimits {
    #[serde(rename = "pub", default)]
    pub pub_: Permission,
    #[serde(default)]
    pub sub: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// CIDRs the user may connect from (a JSON list, or one comma-separated string).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "cidr_list"
    )]
    pub src: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub times: Vec<TimeRange>,
    /// Time zone the `times` are in (an IANA name; empty means the server's local time).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub times_location: String,
    /// Maximum subscriptions (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// Maximum data in bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// Maximum message payload in bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// The user JWT alone authenticates, no nonce signature needed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    /// `STANDARD`, `WEBSOCKET`, `LEAFNODE`, `LEAFNODE_WS`, `MQTT`, `MQTT_WS`, `IN_PROCESS`;
    /// empty means all.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub allowed_connection_types: Vec<String>,
}

impl UserPermissionLimits {
    /// No permissions set and every limit 0: what an absent `template` means.
    pub fn zero() -> Self {
        UserPermissionLimits {
            subs: 0,
            data: 0,
            payload: 0,
            ..UserPermissionLimits::default()
        }
    }
}

impl Default for UserPermissionLimits {
    /// No restrictions: empty permissions and unlimited subs/data/payload, as nsc writes.
    fn default() -> Self {
        UserPermissionLimits {
            pub_: Permission::default(),
            sub: Permission::default(),
            resp: None,
            src: Vec::new(),
            times: Vec::new(),
            times_location: String::new(),
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            bearer_token: false,
            allowed_connection_types: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operator

/// The `nats` part of an operator JWT (`sub` an `O...` key, issued by an operator key:
/// normally itself, see [`Claims::is_self_signed`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OperatorClaims {
    /// Other operator keys that may sign account JWTs.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub signing_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account_server_url: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub operator_service_urls: Vec<String>,
    /// Public key of the system account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    /// Minimum server version, `"major.minor.patch"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub assert_server_version: String,
    /// Accounts must be signed by a signing key, not the operator's identity key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_signing_key_usage: bool,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub tags: Vec<String>,
}

impl ClaimKind for OperatorClaims {
    const TYPE: &'static str = "operator";
    const SUBJECT_PREFIX: char = 'O';
    const ISSUER_PREFIX: char = 'O';
}

impl OperatorClaims {
    /// Whether `key` is one of the operator's signing keys.
    pub fn is_signing_key(&self, key: &str) -> bool {
        self.signing_keys.iter().any(|k| k == key)
    }
}

// ---------------------------------------------------------------------------------------------
// Account

/// Limits an operator puts on an account; -1 means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    /// Maximum subscriptions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// Maximum data in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// Maximum message payload in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// Maximum imports.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub imports: i64,
    /// Maximum exports.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exports: i64,
    /// Whether exports may contain wildcards.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wildcards: bool,
    /// Users of this account may not be bearer tokens.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disallow_bearer: bool,
    /// Maximum client connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conn: i64,
    /// Maximum leaf node connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leaf: i64,
    /// JetStream memory storage (0 disables JetStream for the account).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_storage: i64,
    /// JetStream file storage.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streams: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consumer: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_max_stream_bytes: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_max_stream_bytes: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub max_bytes_required: bool,
    /// Per-tier JetStream limits, kept as JSON.
    #[serde(default, skip_serializing_if = "value_is_empty")]
    pub tiered_limits: serde_json::Value,
}

impl AccountLimits {
    /// Every limit 0 and every flag off: what an absent `limits` object means.
    pub fn zero() -> Self {
        AccountLimits {
            subs: 0,
            data: 0,
            payload: 0,
            imports: 0,
            exports: 0,
            wildcards: false,
            conn: 0,
            leaf: 0,
            ..AccountLimits::default()
        }
    }
}

impl Default for AccountLimits {
    /// What nsc writes for a new account: everything unlimited, wildcard exports allowed,
    /// JetStream disabled.
    fn default() -> Self {
        AccountLimits {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            imports: NO_LIMIT,
            exports: NO_LIMIT,
            wildcards: true,
            disallow_bearer: false,
            conn: NO_LIMIT,
            leaf: NO_LIMIT,
            mem_storage: 0,
            disk_storage: 0,
            streams: 0,
            consumer: 0,
            max_ack_pending: 0,
            mem_max_stream_bytes: 0,
            disk_max_stream_bytes: 0,
            max_bytes_required: false,
            tiered_limits: serde_json::Value::Null,
        }
    }
}

/// Whether an export is a message stream or a request/reply service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportType {
    Stream,
    Service,
    /// Anything else, including a missing type (as in nats-io/jwt, where it is the zero
    /// value).
    #[default]
    #[serde(other)]
    Unknown,
}

/// Latency tracking for an exported service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceLatency {
    /// A percentage (1-100) or the string `"headers"`.
    #[serde(default)]
    pub sampling: serde_json::Value,
    /// Subject the latency reports are published to.
    #[serde(default)]
    pub results: String,
}

/// A stream or service an account offers to others.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Export {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub subject: String,
    #[serde(rename = "type", default)]
    pub kind: ExportType,
    /// Importers need an activation token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub token_req: bool,
    /// Revoked activations: importing account public key (or `*`) -> Unix seconds.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub revocations: BTreeMap<String, i64>,
    /// For services: `Singleton` (default), `Stream` or `Chunked`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response_type: String,
    /// For services: how long responses may take, in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_threshold: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_latency: Option<ServiceLatency>,
    /// Which token of the subject must equal the importing account's public key.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub account_token_position: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub advertise: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_trace: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
}

/// A stream or service taken from another account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Import {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The subject as exported by `account`.
    #[serde(default)]
    pub subject: String,
    /// Public key of the exporting account.
    #[serde(default)]
    pub account: String,
    /// Activation token (a JWT, or a URL to fetch it from).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Deprecated: for streams, a prefix; for services, the local subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// The subject in the importing account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_subject: String,
    #[serde(rename = "type", default)]
    pub kind: ExportType,
    /// Share the requestor's identity with the service (latency tracking).
    #[serde(default, skip_serializing_if = "is_false")]
    pub share: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_trace: bool,
}

/// A user-scope signing key: users it signs get `template`'s permissions and limits, whatever
/// their own JWT says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserScope {
    /// Always `"user_scope"`.
    #[serde(default = "user_scope_kind")]
    pub kind: String,
    /// The signing key (an `A...` public key).
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(default = "UserPermissionLimits::zero")]
    pub template: UserPermissionLimits,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn user_scope_kind() -> String {
    "user_scope".to_string()
}

/// An account signing key: a bare public key, or a scoped one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    Key(String),
    Scoped(Box<UserScope>),
}

impl SigningKey {
    /// The public key.
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Key(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }

    /// The scope, when the key is scoped.
    pub fn scope(&self) -> Option<&UserScope> {
        match self {
            SigningKey::Key(_) => None,
            SigningKey::Scoped(s) => Some(s),
        }
    }
}

/// A weighted destination of a subject mapping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WeightedMapping {
    #[serde(default)]
    pub subject: String,
    /// Percentage 0-100; a missing weight means 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// External authorization (auth callout) settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExternalAuthorization {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub auth_users: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub allowed_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub xkey: String,
}

impl ExternalAuthorization {
    fn is_empty(&self) -> bool {
        self.auth_users.is_empty() && self.allowed_accounts.is_empty() && self.xkey.is_empty()
    }
}

/// The `nats` part of an account JWT (`sub` an `A...` key, issued by an operator key).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountClaims {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub imports: Vec<Import>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub exports: Vec<Export>,
    /// Absent from the JSON, every limit is 0 (nats-server then admits no connection).
    #[serde(default = "AccountLimits::zero")]
    pub limits: AccountLimits,
    /// Keys besides the account's own that may sign its users.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub signing_keys: Vec<SigningKey>,
    /// Revoked users: user public key (or `*` for all) -> Unix seconds; user JWTs issued at
    /// or before that time are revoked.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub revocations: BTreeMap<String, i64>,
    /// Permissions for users whose JWT sets none.
    #[serde(default)]
    pub default_permissions: Permissions,
    /// Subject mappings: source subject -> weighted destinations.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub mappings: BTreeMap<String, Vec<WeightedMapping>>,
    #[serde(default, skip_serializing_if = "ExternalAuthorization::is_empty")]
    pub authorization: ExternalAuthorization,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub tags: Vec<String>,
}

impl ClaimKind for AccountClaims {
    const TYPE: &'static str = "account";
    const SUBJECT_PREFIX: char = 'A';
    const ISSUER_PREFIX: char = 'O';
}

impl AccountClaims {
    /// The signing key entry for `key`, if it is one of the account's signing keys.
    pub fn signing_key(&self, key: &str) -> Option<&SigningKey> {
        self.signing_keys.iter().find(|k| k.key() == key)
    }

    /// Whether `key` is one of the account's signing keys.
    pub fn is_signing_key(&self, key: &str) -> bool {
        self.signing_key(key).is_some()
    }

    /// Whether a user JWT for `user_key` issued at `iat` is revoked: a revocation for that key,
    /// or for `*`, dated at or after `iat`.
    pub fn is_user_revoked(&self, user_key: &str, iat: i64) -> bool {
        [user_key, "*"]
            .iter()
            .any(|k| self.revocations.get(*k).is_some_and(|&ts| ts >= iat))
    }
}

// ---------------------------------------------------------------------------------------------
// User

/// The `nats` part of a user JWT (`sub` a `U...` key, issued by an account key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(rename = "pub", default)]
    pub pub_: Permission,
    #[serde(default)]
    pub sub: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// CIDRs the user may connect from (a JSON list, or one comma-separated string).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "cidr_list"
    )]
    pub src: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub times: Vec<TimeRange>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub times_location: String,
    /// Maximum subscriptions (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// Maximum data in bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// Maximum message payload in bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// The JWT alone authenticates; no nonce signature is required.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub allowed_connection_types: Vec<String>,
    /// The account's identity key, when the user was signed by one of its signing keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub tags: Vec<String>,
}

impl Default for UserClaims {
    /// No restrictions: empty permissions and unlimited subs/data/payload, as nsc writes.
    fn default() -> Self {
        UserClaims::from_template(&UserPermissionLimits::default())
    }
}

impl ClaimKind for UserClaims {
    const TYPE: &'static str = "user";
    const SUBJECT_PREFIX: char = 'U';
    const ISSUER_PREFIX: char = 'A';
}

impl UserClaims {
    /// A user with the permissions and limits of a signing key's template.
    pub fn from_template(t: &UserPermissionLimits) -> Self {
        UserClaims {
            pub_: t.pub_.clone(),
            sub: t.sub.clone(),
            resp: t.resp.clone(),
            src: t.src.clone(),
            times: t.times.clone(),
            times_location: t.times_location.clone(),
            subs: t.subs,
            data: t.data,
            payload: t.payload,
            bearer_token: t.bearer_token,
            allowed_connection_types: t.allowed_connection_types.clone(),
            issuer_account: String::new(),
            tags: Vec::new(),
        }
    }

    /// The user's publish/subscribe/response permissions.
    pub fn permissions(&self) -> Permissions {
        Permissions {
            pub_: self.pub_.clone(),
            sub: self.sub.clone(),
            resp: self.resp.clone(),
        }
    }

    /// Whether the JWT sets any publish/subscribe/response permission.
    pub fn has_permissions(&self) -> bool {
        !self.pub_.is_empty() || !self.sub.is_empty() || self.resp.is_some()
    }

    /// Whether any permission or limit field is set (anything a [`UserScope`] template would
    /// supply; not `issuer_account` or `tags`). nats-server 2.15 refuses a user issued by a
    /// scoped signing key when this is true, even for `-1` limits: nsc leaves them all out.
    pub fn has_permission_limits(&self) -> bool {
        self.has_permissions()
            || !self.src.is_empty()
            || !self.times.is_empty()
            || !self.times_location.is_empty()
            || self.subs != 0
            || self.data != 0
            || self.payload != 0
            || self.bearer_token
            || !self.allowed_connection_types.is_empty()
    }

    /// Replaces the permissions and limits with a scoped signing key's template, keeping
    /// `issuer_account` and `tags` (what nats-server does for a user of a scoped key).
    pub fn apply_template(&mut self, t: &UserPermissionLimits) {
        let issuer_account = std::mem::take(&mut self.issuer_account);
        let tags = std::mem::take(&mut self.tags);
        *self = UserClaims {
            issuer_account,
            tags,
            ..UserClaims::from_template(t)
        };
    }
}

// ---------------------------------------------------------------------------------------------
// serde helpers

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn value_is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// `null` reads as the default (Go writes nil slices and maps as `null`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list of strings; `null` is empty and a lone string is a one-element list.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if s.is_empty() => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// CIDRs: a list, or one comma-separated string (version 1 tokens and some tools).
fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = string_list(d)?;
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

fn b64_decode(part: &'static str, s: &str) -> Result<Vec<u8>, JwtError> {
    B64URL.decode(s).map_err(|e| JwtError::Encoding {
        part,
        reason: e.to_string(),
    })
}

/// Checks the prefix of a public key and that it is a valid nkey.
fn parse_public_key(
    key: &str,
    expected: char,
    missing: impl Fn(String) -> JwtError,
    wrong: impl Fn() -> JwtError,
) -> Result<KeyPair, JwtError> {
    if key.is_empty() {
        return Err(missing("missing".to_string()));
    }
    let kp = KeyPair::from_public_key(key).map_err(|e| missing(format!("{key:?}: {e}")))?;
    if !key.starts_with(expected) {
        return Err(wrong());
    }
    Ok(kp)
}

/// Decodes and verifies a token of claim type `T`.
///
/// Checks: three unpadded base64url parts; header `typ` `JWT` and `alg` `ed25519-nkey` or
/// `ed25519` (case-insensitive); claims version 1 or 2 (`nats.version`, absent for 1); the
/// signature with the `iss` key, over `header.claims` for version 2 and over `claims` for
/// version 1; the type is `T::TYPE` (`nats.type`, or the top-level `type` of version 1);
/// `iss` and `sub` are valid nkeys of the kinds `T` wants. Does not check expiry, whether the
/// issuer is trusted, or revocation.
///
/// Fields absent from the JSON read as 0/empty, as nats-server reads them (a user JWT without
/// `subs` may not subscribe), except that version 1 user JWTs without `subs`, `data` or
/// `payload` get -1, as nats-server upgrades them.
pub fn decode<T>(token: &str) -> Result<Claims<T>, JwtError>
where
    T: DeserializeOwned + Default + ClaimKind,
{
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(format!(
            "expected 3 '.'-separated parts, found {}",
            token.split('.').count()
        )));
    };

    let header: Header =
        serde_json::from_slice(&b64_decode("header", h64)?).map_err(|e| JwtError::Json {
            part: "header",
            reason: e.to_string(),
        })?;
    if !header.typ.eq_ignore_ascii_case(TOKEN_TYPE) {
        return Err(JwtError::Header(format!(
            "typ {:?} is not \"JWT\"",
            header.typ
        )));
    }
    let alg = header.alg.to_ascii_lowercase();
    if alg != ALGORITHM_V2 && alg != ALGORITHM_V1 {
        return Err(JwtError::Header(format!(
            "alg {:?} is not \"{ALGORITHM_V2}\" (or \"{ALGORITHM_V1}\")",
            header.alg
        )));
    }

    let claims_json = b64_decode("claims", c64)?;
    let sig = b64_decode("signature", s64)?;
    let json_err = |e: serde_json::Error| JwtError::Json {
        part: "claims",
        reason: e.to_string(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(&claims_json).map_err(json_err)?;
    let Some(top) = value.as_object_mut() else {
        return Err(JwtError::Json {
            part: "claims",
            reason: "not a JSON object".to_string(),
        });
    };
    let text = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let iss = text(top, "iss");
    let sub = text(top, "sub");
    let top_type = text(top, "type");
    // A missing (or null) `nats` reads as an empty object, so field defaults apply to it.
    if !top.get("nats").is_some_and(|n| n.is_object()) {
        top.insert("nats".into(), serde_json::Value::Object(Default::default()));
    }
    let Some(serde_json::Value::Object(nats)) = top.get_mut("nats") else {
        unreachable!("nats was just made an object");
    };
    let version = match nats.get("version") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| JwtError::Json {
                part: "claims",
                reason: format!("nats.version {v} is not a version number"),
            })?,
    };
    if version > CLAIMS_VERSION {
        return Err(JwtError::UnsupportedVersion(version));
    }

    // The issuer has to be a valid key before the signature can be checked. A key that is
    // valid but of the wrong kind still gets its signature checked first, so a forged token
    // reports the forgery rather than the kind.
    let issuer = parse_public_key(&iss, T::ISSUER_PREFIX, JwtError::BadIssuer, || {
        JwtError::WrongIssuerKind {
            expected: T::ISSUER_PREFIX,
            issuer: iss.clone(),
        }
    });
    let verifier = match &issuer {
        Ok(kp) => kp.clone(),
        Err(JwtError::WrongIssuerKind { .. }) => {
            KeyPair::from_public_key(&iss).map_err(|e| JwtError::BadIssuer(e.to_string()))?
        }
        Err(e) => return Err(e.clone()),
    };
    // Version 2 signs "header.claims"; version 1 signed the claims part alone. nats-server
    // goes by the claims' version, not the header's alg, and so does this.
    let signed: &[u8] = if version >= 2 {
        &token.as_bytes()[..h64.len() + 1 + c64.len()]
    } else {
        c64.as_bytes()
    };
    verifier
        .verify(signed, &sig)
        .map_err(|_| JwtError::BadSignature)?;

    let nats_type = text(nats, "type");
    let found = if version >= 2 || top_type.is_empty() {
        nats_type
    } else {
        top_type
    };
    if found != T::TYPE {
        return Err(JwtError::WrongType {
            expected: T::TYPE,
            found,
        });
    }
    issuer?;
    parse_public_key(&sub, T::SUBJECT_PREFIX, JwtError::BadSubject, || {
        JwtError::WrongSubjectKind {
            expected: T::SUBJECT_PREFIX,
            subject: sub.clone(),
        }
    })?;

    if version < 2 && T::TYPE == UserClaims::TYPE {
        for limit in ["subs", "data", "payload"] {
            nats.entry(limit).or_insert(NO_LIMIT.into());
        }
    }
    let mut claims: Claims<T> = serde_json::from_value(value).map_err(json_err)?;
    claims.version = version;
    Ok(claims)
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Serialize)]
struct HeaderOut {
    typ: &'static str,
    alg: &'static str,
}

#[derive(Serialize)]
struct NatsOut<'a, T> {
    #[serde(flatten)]
    inner: &'a T,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
}

/// The claims in the field order nats tooling writes them.
#[derive(Serialize)]
struct ClaimsOut<'a, T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    jti: &'a str,
    iat: i64,
    iss: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    sub: &'a str,
    nats: NatsOut<'a, T>,
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, unpadded.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A fresh token id in the shape nats tooling uses (52 base32 characters). nsc hashes the
/// claims; any unique value is accepted, so this one is random.
fn new_jti() -> String {
    let mut bytes = [0u8; 32];
    let mut rng = fastrand::Rng::new();
    rng.fill(&mut bytes);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (b, n) in bytes.iter_mut().zip(nanos.to_le_bytes()) {
        *b ^= n;
    }
    base32(&bytes)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs `claims` with `signer` into a version 2 token.
///
/// Sets `iss` to the signer's public key and a fresh `jti`; sets `iat` to now when it is 0
/// (a non-zero `iat` is kept, so callers can date tokens). An operator token with an empty
/// `sub` gets the signer's key (a self-signed operator). Refuses a signer or subject of the wrong kind for `T`, or a
/// signer without a seed.
pub fn encode<T>(claims: &Claims<T>, signer: &KeyPair) -> Result<String, JwtError>
where
    T: Serialize + ClaimKind,
{
    let iss = signer.public_key();
    if !iss.starts_with(T::ISSUER_PREFIX) {
        return Err(JwtError::WrongIssuerKind {
            expected: T::ISSUER_PREFIX,
            issuer: iss,
        });
    }
    let sub = if claims.sub.is_empty() && T::SUBJECT_PREFIX == T::ISSUER_PREFIX {
        iss.as_str()
    } else {
        claims.sub.as_str()
    };
    parse_public_key(sub, T::SUBJECT_PREFIX, JwtError::BadSubject, || {
        JwtError::WrongSubjectKind {
            expected: T::SUBJECT_PREFIX,
            subject: sub.to_string(),
        }
    })?;
    let jti = new_jti();
    let out = ClaimsOut {
        aud: claims.aud.as_deref().filter(|a| !a.is_empty()),
        exp: claims.expires(),
        jti: &jti,
        iat: if claims.iat == 0 {
            now_unix()
        } else {
            claims.iat
        },
        iss: &iss,
        name: &claims.name,
        nbf: claims.not_before(),
        sub,
        nats: NatsOut {
            inner: &claims.nats,
            kind: T::TYPE,
            version: CLAIMS_VERSION,
        },
    };
    let header = serde_json::to_vec(&HeaderOut {
        typ: TOKEN_TYPE,
        alg: ALGORITHM_V2,
    })
    .map_err(|e| JwtError::Signing(e.to_string()))?;
    let body = serde_json::to_vec(&out).map_err(|e| JwtError::Signing(e.to_string()))?;
    let mut token = B64URL.encode(header);
    token.push('.');
    token.push_str(&B64URL.encode(body));
    let sig = signer
        .sign(token.as_bytes())
        .map_err(|e| JwtError::Signing(e.to_string()))?;
    token.push('.');
    token.push_str(&B64URL.encode(sig));
    Ok(token)
}

// ---------------------------------------------------------------------------------------------
// Creds files

/// A `-----...-----` decoration line (the BEGIN/END markers).
fn is_decoration(line: &str) -> bool {
    let line = line.trim();
    line.len() >= 6 && line.ends_with("---") && line[..line.len() - 3].contains("---")
}

/// The body of a decorated block: one JWT or seed, base64url/base32 characters only.
fn is_block_body(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Splits a `.creds` file into the user JWT and the nkey seed.
///
/// Like the clients, it takes the first decorated block (a `---...---` line, one line of
/// content, a `---...---` line) as the JWT and the second as the seed; everything else (the
/// `IMPORTANT` banner, blank lines) is ignored. Accepts `\r\n` line ends and surrounding
/// whitespace. The seed must be a valid nkey seed; the JWT is only checked to have three
/// parts (use [`decode`] to verify it).
pub fn parse_creds(text: &str) -> Result<(String, String), JwtError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::with_capacity(2);
    let mut i = 0;
    while i + 2 < lines.len() && blocks.len() < 2 {
        if is_decoration(lines[i]) && is_block_body(lines[i + 1]) && is_decoration(lines[i + 2]) {
            blocks.push(lines[i + 1].trim());
            i += 3;
        } else {
            i += 1;
        }
    }
    let (jwt, seed) = match blocks[..] {
        [jwt, seed] => (jwt, seed),
        [_] => return Err(JwtError::Creds("no nkey seed block found".to_string())),
        _ => return Err(JwtError::Creds("no user JWT block found".to_string())),
    };
    if jwt.split('.').count() != 3 {
        return Err(JwtError::Creds("the first block is not a JWT".to_string()));
    }
    KeyPair::from_seed(seed)
        .map_err(|e| JwtError::Creds(format!("the second block is not an nkey seed: {e}")))?;
    Ok((jwt.to_string(), seed.to_string()))
}

/// Formats a user JWT and its seed as a `.creds` file, exactly as nsc writes them.
pub fn format_creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n\
         {jwt}\n\
         ------END NATS USER JWT------\n\
         \n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\
         \n\
         -----BEGIN USER NKEY SEED-----\n\
         {seed}\n\
         ------END USER NKEY SEED------\n\
         \n\
         *************************************************************\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Nonce signatures

/// Checks the `sig` of a client's `CONNECT`: an ed25519 signature of the server's nonce by
/// `public_key` (the user's nkey, or the `sub` of its JWT). Clients send it as unpadded
/// base64url (nats.go, async-nats); standard and padded base64 are accepted as well.
pub fn verify_nonce_signature(public_key: &str, nonce: &[u8], sig_b64: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    let Ok(kp) = KeyPair::from_public_key(public_key) else {
        return false;
    };
    let sig_b64 = sig_b64.trim();
    let sig = B64URL
        .decode(sig_b64)
        .or_else(|_| STANDARD.decode(sig_b64))
        .or_else(|_| URL_SAFE.decode(sig_b64))
        .or_else(|_| STANDARD_NO_PAD.decode(sig_b64));
    match sig {
        Ok(sig) => kp.verify(nonce, &sig).is_ok(),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A user created with nsc, from the NATS documentation ("NSC basics"): account
    /// `AD2M34WB...` issued user `UAWBXLSZ...`; the seed is the user's.
    const DOC_USER_JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiI0NUc3MkhIQUVCRFBQV05ZWktMTUhQNUFYWFRSSUVDQlNVQUI2VDZRUjdVM1JZUFZaM05BIiwiaWF0IjoxNjM1Mzc1NTYxLCJpc3MiOiJBRDJNMzRXQk5HUUZZSzM3SURYNTNEUFJHNzRSTExUN0ZGV0JPQk1CVVhNQVZCQ1ZBVTVWS1dJWSIsIm5hbWUiOiJNeVVzZXIiLCJzdWIiOiJVQVdCWExTWlZaSE5ESVVSWTUyRjZXRVRGQ0ZaTFhZVUVGSkFIUlhEVzdEMks0NDQ1SVk0QlZYUCIsIm5hdHMiOnsicHViIjp7fSwic3ViIjp7fSwic3VicyI6LTEsImRhdGEiOi0xLCJwYXlsb2FkIjotMSwidHlwZSI6InVzZXIiLCJ2ZXJzaW9uIjoyfX0.CGymhGYHfdZyhUeucxNs9TthSjy_27LVZikqxvm-pPLili8KNe1xyOVnk_w-xPWdrCx_t3Se2lgXmoy3wBcVCw";
    const DOC_USER_SEED: &str = "SUAP2AY6UAWHOXJBWDNRNKJ2DHNC5VA2DFJZTF6C6PMLKUCOS2H2E2BA2E";

    /// The version 1 operator JWT nats-server's own tests use (test/configs/nkeys/op.jwt):
    /// header alg "ed25519", `type` at the top level, signature over the claims part.
    const V1_OPERATOR_JWT: &str = "eyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5In0.eyJhdWQiOiJURVNUUyIsImV4cCI6MTg1OTEyMTI3NSwianRpIjoiWE5MWjZYWVBIVE1ESlFSTlFPSFVPSlFHV0NVN01JNVc1SlhDWk5YQllVS0VRVzY3STI1USIsImlhdCI6MTU0Mzc2MTI3NSwiaXNzIjoiT0NBVDMzTVRWVTJWVU9JTUdOR1VOWEo2NkFIMlJMU0RBRjNNVUJDWUFZNVFNSUw2NU5RTTZYUUciLCJuYW1lIjoiU3luYWRpYSBDb21tdW5pY2F0aW9ucyBJbmMuIiwibmJmIjoxNTQzNzYxMjc1LCJzdWIiOiJPQ0FUMzNNVFZVMlZVT0lNR05HVU5YSjY2QUgyUkxTREFGM01VQkNZQVk1UU1JTDY1TlFNNlhRRyIsInR5cGUiOiJvcGVyYXRvciIsIm5hdHMiOnsic2lnbmluZ19rZXlzIjpbIk9EU0tSN01ZRlFaNU1NQUo2RlBNRUVUQ1RFM1JJSE9GTFRZUEpSTUFWVk40T0xWMllZQU1IQ0FDIiwiT0RTS0FDU1JCV1A1MzdEWkRSVko2NTdKT0lHT1BPUTZLRzdUNEhONk9LNEY2SUVDR1hEQUhOUDIiLCJPRFNLSTM2TFpCNDRPWTVJVkNSNlA1MkZaSlpZTVlXWlZXTlVEVExFWjVUSzJQTjNPRU1SVEFCUiJdfX0.hyfz6E39BMUh0GLzovFfk3wT4OfualftjdJ_eYkLfPvu5tZubYQ_Pn9oFYGCV_6yKy3KMGhWGUCyCdHaPhalBw";

    fn parts(token: &str) -> (String, serde_json::Value, String) {
        let p: Vec<&str> = token.split('.').collect();
        assert_eq!(p.len(), 3);
        let claims = serde_json::from_slice(&B64URL.decode(p[1]).unwrap()).unwrap();
        (p[0].to_string(), claims, p[2].to_string())
    }

    /// Builds a token from raw JSON, signing `header.claims` (v2) or `claims` (v1).
    fn raw_token(header: &str, claims: &serde_json::Value, signer: &KeyPair, v1: bool) -> String {
        let h = B64URL.encode(header);
        let c = B64URL.encode(serde_json::to_vec(claims).unwrap());
        let input = if v1 { c.clone() } else { format!("{h}.{c}") };
        let sig = signer.sign(input.as_bytes()).unwrap();
        format!("{h}.{c}.{}", B64URL.encode(sig))
    }

    #[test]
    fn jwt_operator_round_trip() {
        let op = KeyPair::new_operator();
        let sk = KeyPair::new_operator();
        let sys = KeyPair::new_account();
        let mut c = Claims::new(
            "",
            "OP",
            OperatorClaims {
                signing_keys: vec![sk.public_key()],
                system_account: sys.public_key(),
                operator_service_urls: vec!["nats://localhost:4222".into()],
                ..Default::default()
            },
        );
        c.exp = Some(4_000_000_000);
        let token = encode(&c, &op).unwrap();
        let d = decode::<OperatorClaims>(&token).unwrap();
        assert_eq!(d.iss, op.public_key());
        assert_eq!(d.sub, op.public_key());
        assert_eq!(d.name, "OP");
        assert_eq!(d.version, 2);
        assert_eq!(d.jti.len(), 52);
        assert!(d.iat > 1_600_000_000);
        assert_eq!(d.exp, Some(4_000_000_000));
        assert_eq!(d.nats, c.nats);
        assert!(d.nats.is_signing_key(&sk.public_key()));

        let (h, json, _) = parts(&token);
        assert_eq!(h, "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ");
        assert_eq!(json["nats"]["type"], "operator");
        assert_eq!(json["nats"]["version"], 2);

        assert!(d.is_self_signed());

        // nats-server 2.15 loads an operator JWT issued by another operator key, so decode
        // accepts it too; callers can ask is_self_signed().
        let other = KeyPair::new_operator();
        let mut c2 = c.clone();
        c2.sub = other.public_key();
        let d2 = decode::<OperatorClaims>(&encode(&c2, &op).unwrap()).unwrap();
        assert_eq!(
            (d2.iss.as_str(), d2.sub.as_str()),
            (&*op.public_key(), &*other.public_key())
        );
        assert!(!d2.is_self_signed());
        // But not one issued by an account key.
        let acc = KeyPair::new_account();
        assert!(matches!(
            encode(&c2, &acc),
            Err(JwtError::WrongIssuerKind { expected: 'O', .. })
        ));
    }

    #[test]
    fn jwt_account_round_trip() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let sk = KeyPair::new_account();
        let scoped = KeyPair::new_account();
        let other = KeyPair::new_account();
        let mut template = UserPermissionLimits::default();
        template.pub_.allow = vec!["svc.>".into()];
        template.sub.deny = vec!["secret.>".into()];
        template.resp = Some(ResponsePermission {
            max: 1,
            ttl: 5_000_000_000,
        });
        template.subs = 10;
        let nats = AccountClaims {
            imports: vec![Import {
                name: "in".into(),
                subject: "their.svc".into(),
                account: other.public_key(),
                local_subject: "my.svc".into(),
                kind: ExportType::Service,
                ..Default::default()
            }],
            exports: vec![Export {
                name: "out".into(),
                subject: "events.>".into(),
                kind: ExportType::Stream,
                token_req: true,
                ..Default::default()
            }],
            limits: AccountLimits {
                conn: 5,
                ..Default::default()
            },
            signing_keys: vec![
                SigningKey::Key(sk.public_key()),
                SigningKey::Scoped(Box::new(UserScope {
                    kind: "user_scope".into(),
                    key: scoped.public_key(),
                    role: "svc".into(),
                    template,
                    description: String::new(),
                })),
            ],
            revocations: BTreeMap::from([("*".to_string(), 100), ("UXYZ".to_string(), 200)]),
            ..Default::default()
        };
        let c = Claims::new(acc.public_key(), "ACC", nats);
        let token = encode(&c, &op).unwrap();
        let d = decode::<AccountClaims>(&token).unwrap();
        assert_eq!(d.iss, op.public_key());
        assert_eq!(d.sub, acc.public_key());
        assert_eq!(d.nats, c.nats);
        assert!(d.nats.is_signing_key(&sk.public_key()));
        assert!(d
            .nats
            .signing_key(&sk.public_key())
            .unwrap()
            .scope()
            .is_none());
        let scope = d
            .nats
            .signing_key(&scoped.public_key())
            .unwrap()
            .scope()
            .unwrap();
        assert_eq!(scope.role, "svc");
        assert_eq!(scope.template.subs, 10);
        assert!(!d.nats.is_signing_key(&other.public_key()));
        assert!(d.nats.is_user_revoked("UXYZ", 200));
        assert!(!d.nats.is_user_revoked("UXYZ", 201));
        assert!(d.nats.is_user_revoked("UOTHER", 100));
        assert!(!d.nats.is_user_revoked("UOTHER", 101));

        let (_, json, _) = parts(&token);
        assert_eq!(json["nats"]["signing_keys"][0], sk.public_key());
        assert_eq!(json["nats"]["signing_keys"][1]["kind"], "user_scope");
        assert_eq!(json["nats"]["exports"][0]["type"], "stream");
        assert_eq!(json["nats"]["imports"][0]["type"], "service");
        assert_eq!(json["nats"]["limits"]["conn"], 5);
        assert_eq!(json["nats"]["limits"]["subs"], -1);
        assert_eq!(json["nats"]["limits"]["wildcards"], true);

        // Accounts are issued by operator keys.
        assert!(matches!(
            encode(&c, &acc),
            Err(JwtError::WrongIssuerKind { expected: 'O', .. })
        ));
        let mut c2 = c.clone();
        c2.sub = KeyPair::new_user().public_key();
        assert!(matches!(
            encode(&c2, &op),
            Err(JwtError::WrongSubjectKind { expected: 'A', .. })
        ));
    }

    #[test]
    fn jwt_user_round_trip() {
        let acc = KeyPair::new_account();
        let sk = KeyPair::new_account();
        let user = KeyPair::new_user();
        let mut nats = UserClaims::default();
        nats.pub_.allow = vec!["a.>".into(), "_INBOX.>".into()];
        nats.pub_.deny = vec!["a.secret".into()];
        nats.sub.allow = vec!["b.*".into()];
        nats.resp = Some(ResponsePermission {
            max: 1,
            ttl: 1_000_000_000,
        });
        nats.src = vec!["10.0.0.0/8".into(), "127.0.0.1/32".into()];
        nats.times = vec![TimeRange {
            start: "08:00:00".into(),
            end: "17:00:00".into(),
        }];
        nats.times_location = "UTC".into();
        nats.payload = 1024;
        nats.bearer_token = true;
        nats.allowed_connection_types = vec!["STANDARD".into(), "WEBSOCKET".into()];
        nats.issuer_account = acc.public_key();
        let mut c = Claims::new(user.public_key(), "U", nats);
        c.iat = 1_700_000_000;
        c.nbf = Some(1_700_000_000);
        c.exp = Some(1_800_000_000);
        let token = encode(&c, &sk).unwrap();
        let d = decode::<UserClaims>(&token).unwrap();
        assert_eq!(d.iss, sk.public_key());
        assert_eq!(d.issuer_account(), acc.public_key());
        assert_eq!(d.iat, 1_700_000_000);
        assert_eq!(d.nats, c.nats);
        assert!(d.nats.has_permissions());
        assert!(d.not_yet_valid_at(1_699_999_999));
        assert!(d.is_valid_at(1_700_000_000));
        assert!(d.is_valid_at(1_800_000_000));
        assert!(d.is_expired_at(1_800_000_001));

        let (_, json, _) = parts(&token);
        assert_eq!(json["nats"]["resp"]["ttl"], 1_000_000_000i64);
        assert_eq!(json["nats"]["src"][1], "127.0.0.1/32");
        assert_eq!(json["nats"]["subs"], -1);

        // Signed by the account itself: issuer_account falls back to iss.
        let mut c2 = c.clone();
        c2.nats.issuer_account.clear();
        let d2 = decode::<UserClaims>(&encode(&c2, &acc).unwrap()).unwrap();
        assert_eq!(d2.issuer_account(), acc.public_key());
        assert!(d2.is_valid_at(1_750_000_000));
    }

    #[test]
    fn jwt_tampered_claims_fail_signature() {
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = encode(
            &Claims::new(user.public_key(), "u", UserClaims::default()),
            &acc,
        )
        .unwrap();
        let (h, mut json, s) = parts(&token);
        json["nats"]["bearer_token"] = true.into();
        let tampered = format!(
            "{h}.{}.{s}",
            B64URL.encode(serde_json::to_vec(&json).unwrap())
        );
        assert_eq!(decode::<UserClaims>(&tampered), Err(JwtError::BadSignature));

        // A different, valid, signature is not enough either.
        let other = KeyPair::new_account();
        let p: Vec<&str> = token.split('.').collect();
        let sig = other.sign(format!("{}.{}", p[0], p[1]).as_bytes()).unwrap();
        let resigned = format!("{}.{}.{}", p[0], p[1], B64URL.encode(sig));
        assert_eq!(decode::<UserClaims>(&resigned), Err(JwtError::BadSignature));

        // Changing the header breaks a v2 signature too.
        let v1_header = B64URL.encode(r#"{"typ":"JWT","alg":"ed25519"}"#);
        let swapped = format!("{v1_header}.{}.{}", p[1], p[2]);
        assert_eq!(decode::<UserClaims>(&swapped), Err(JwtError::BadSignature));
    }

    #[test]
    fn jwt_wrong_type_fails() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let acc_token = encode(
            &Claims::new(acc.public_key(), "a", AccountClaims::default()),
            &op,
        )
        .unwrap();
        let user_token = encode(
            &Claims::new(user.public_key(), "u", UserClaims::default()),
            &acc,
        )
        .unwrap();
        assert_eq!(
            decode::<UserClaims>(&acc_token),
            Err(JwtError::WrongType {
                expected: "user",
                found: "account".into()
            })
        );
        assert!(matches!(
            decode::<AccountClaims>(&user_token),
            Err(JwtError::WrongType { .. })
        ));
        assert!(matches!(
            decode::<OperatorClaims>(&user_token),
            Err(JwtError::WrongType { .. })
        ));
        // A token of the right type but the wrong subject kind.
        let odd = raw_token(
            r#"{"typ":"JWT","alg":"ed25519-nkey"}"#,
            &serde_json::json!({"iss": acc.public_key(), "sub": acc.public_key(), "iat": 1,
                "jti": "x", "nats": {"type": "user", "version": 2}}),
            &acc,
            false,
        );
        assert!(matches!(
            decode::<UserClaims>(&odd),
            Err(JwtError::WrongSubjectKind { expected: 'U', .. })
        ));
    }

    #[test]
    fn jwt_user_signed_by_non_account_key_fails() {
        let user = KeyPair::new_user();
        let c = Claims::new(user.public_key(), "u", UserClaims::default());
        for signer in [KeyPair::new_operator(), KeyPair::new_user()] {
            assert!(matches!(
                encode(&c, &signer),
                Err(JwtError::WrongIssuerKind { expected: 'A', .. })
            ));
            let token = raw_token(
                r#"{"typ":"JWT","alg":"ed25519-nkey"}"#,
                &serde_json::json!({"iss": signer.public_key(), "sub": user.public_key(),
                    "iat": 1, "jti": "x", "nats": {"type": "user", "version": 2}}),
                &signer,
                false,
            );
            let err = decode::<UserClaims>(&token).unwrap_err();
            assert!(
                matches!(err, JwtError::WrongIssuerKind { expected: 'A', .. }),
                "{err}"
            );
            assert!(err.to_string().contains("account"), "{err}");
        }
        // A public-only key cannot sign.
        let public_only = KeyPair::from_public_key(&KeyPair::new_account().public_key()).unwrap();
        assert!(matches!(
            encode(&c, &public_only),
            Err(JwtError::Signing(_))
        ));
    }

    #[test]
    fn jwt_bad_encodings_and_headers() {
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = encode(
            &Claims::new(user.public_key(), "u", UserClaims::default()),
            &acc,
        )
        .unwrap();
        assert!(matches!(
            decode::<UserClaims>("abc"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            decode::<UserClaims>(&format!("{token}.x")),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            decode::<UserClaims>(&format!("{token}==")),
            Err(JwtError::Encoding {
                part: "signature",
                ..
            })
        ));
        assert!(matches!(
            decode::<UserClaims>(&token.replacen('e', "*", 1)),
            Err(JwtError::Encoding { part: "header", .. })
        ));
        let claims = serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(),
            "iat": 1, "nats": {"type": "user", "version": 2}});
        for header in [
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"typ":"JWT","alg":"none"}"#,
            r#"{"typ":"JOSE","alg":"ed25519-nkey"}"#,
            r#"{"alg":"ed25519-nkey"}"#,
        ] {
            let t = raw_token(header, &claims, &acc, false);
            assert!(
                matches!(decode::<UserClaims>(&t), Err(JwtError::Header(_))),
                "{header}"
            );
        }
        // Case of typ/alg does not matter; spacing in the header neither.
        let t = raw_token(
            r#"{"typ":"jwt", "alg":"ED25519-NKEY"}"#,
            &claims,
            &acc,
            false,
        );
        assert!(decode::<UserClaims>(&t).is_ok());
        // Missing or invalid issuer.
        let mut no_iss = claims.clone();
        no_iss["iss"] = "".into();
        let t = raw_token(
            r#"{"typ":"JWT","alg":"ed25519-nkey"}"#,
            &no_iss,
            &acc,
            false,
        );
        assert!(matches!(
            decode::<UserClaims>(&t),
            Err(JwtError::BadIssuer(_))
        ));
        let mut bad_iss = claims.clone();
        bad_iss["iss"] = "ABCDEF".into();
        let t = raw_token(
            r#"{"typ":"JWT","alg":"ed25519-nkey"}"#,
            &bad_iss,
            &acc,
            false,
        );
        assert!(matches!(
            decode::<UserClaims>(&t),
            Err(JwtError::BadIssuer(_))
        ));
        // Display says why.
        assert_eq!(
            JwtError::BadSignature.to_string(),
            "JWT signature verification failed"
        );
    }

    #[test]
    fn jwt_version1_tokens() {
        let v1 = decode::<OperatorClaims>(V1_OPERATOR_JWT).unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.name, "Synadia Communications Inc.");
        assert_eq!(
            v1.sub,
            "OCAT33MTVU2VUOIMGNGUNXJ66AH2RLSDAF3MUBCYAY5QMIL65NQM6XQG"
        );
        assert_eq!(v1.aud.as_deref(), Some("TESTS"));
        assert_eq!(v1.exp, Some(1_859_121_275));
        assert_eq!(v1.nbf, Some(1_543_761_275));
        assert_eq!(v1.nats.signing_keys.len(), 3);
        assert!(v1
            .nats
            .is_signing_key("ODSKACSRBWP537DZDRVJ657JOIGOPOQ6KG7T4HN6OK4F6IECGXDAHNP2"));
        assert!(v1.is_valid_at(1_700_000_000));
        assert!(decode::<AccountClaims>(V1_OPERATOR_JWT).is_err());

        // A v1 user: comma-separated src, signature over the claims part only.
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let claims = serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(),
            "iat": 1, "jti": "x", "type": "user",
            "nats": {"pub": {"allow": ["a"]}, "src": "10.0.0.0/8, 192.168.0.0/16"}});
        let t = raw_token(r#"{"typ":"jwt","alg":"ed25519"}"#, &claims, &acc, true);
        let d = decode::<UserClaims>(&t).unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.nats.src, vec!["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(d.nats.pub_.allow, vec!["a"]);
        // A v1 signing input is not valid for v2 claims and vice versa.
        let t = raw_token(r#"{"typ":"jwt","alg":"ed25519"}"#, &claims, &acc, false);
        assert_eq!(decode::<UserClaims>(&t), Err(JwtError::BadSignature));
    }

    #[test]
    fn jwt_versions_and_absent_fields() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let user_claims = |nats: serde_json::Value, top_type: bool| {
            let mut c = serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(),
                "iat": 1, "jti": "x", "nats": nats});
            if top_type {
                c["type"] = "user".into();
            }
            c
        };
        let h2 = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
        let h1 = r#"{"typ":"jwt","alg":"ed25519"}"#;

        // Newer versions are refused (nats-server 2.15 refuses version 3).
        let t = raw_token(
            h2,
            &user_claims(serde_json::json!({"type": "user", "version": 3}), false),
            &acc,
            false,
        );
        assert_eq!(
            decode::<UserClaims>(&t),
            Err(JwtError::UnsupportedVersion(3))
        );

        // The signing input follows the claims' version, not the header's alg.
        let v2 = user_claims(serde_json::json!({"type": "user", "version": 2}), false);
        assert!(decode::<UserClaims>(&raw_token(h1, &v2, &acc, false)).is_ok());
        assert_eq!(
            decode::<UserClaims>(&raw_token(h2, &v2, &acc, true)),
            Err(JwtError::BadSignature)
        );

        // Version 2: absent limits are 0, as nats-server reads them.
        let d = decode::<UserClaims>(&raw_token(h2, &v2, &acc, false)).unwrap();
        assert_eq!((d.nats.subs, d.nats.data, d.nats.payload), (0, 0, 0));
        // Version 2 goes by nats.type only.
        let top_only = user_claims(serde_json::json!({"version": 2}), true);
        assert!(matches!(
            decode::<UserClaims>(&raw_token(h2, &top_only, &acc, false)),
            Err(JwtError::WrongType { .. })
        ));

        // Version 1 users: absent limits are unlimited, explicit ones kept; no nats at all is
        // fine too.
        let v1 = user_claims(serde_json::json!({"payload": 1, "subs": 0}), true);
        let d = decode::<UserClaims>(&raw_token(h1, &v1, &acc, true)).unwrap();
        assert_eq!((d.nats.subs, d.nats.data, d.nats.payload), (0, -1, 1));
        let mut bare = user_claims(serde_json::Value::Null, true);
        bare.as_object_mut().unwrap().remove("nats");
        let d = decode::<UserClaims>(&raw_token(h2, &bare, &acc, true)).unwrap();
        assert_eq!((d.version, d.nats.subs), (1, -1));

        // An account without limits has them all 0 (nats-server then refuses its users), in
        // either version.
        for (h, nats, v1) in [
            (
                h2,
                serde_json::json!({"type": "account", "version": 2}),
                false,
            ),
            (h1, serde_json::json!({}), true),
        ] {
            let mut c = serde_json::json!({"iss": op.public_key(), "sub": acc.public_key(),
                "iat": 1, "nats": nats});
            if v1 {
                c["type"] = "account".into();
            }
            let d = decode::<AccountClaims>(&raw_token(h, &c, &op, v1)).unwrap();
            assert_eq!(d.nats.limits, AccountLimits::zero());
        }
        // The Rust defaults are nsc's: unlimited.
        assert_eq!(AccountClaims::default().limits.conn, NO_LIMIT);
        assert_eq!(UserClaims::default().subs, NO_LIMIT);

        // Users of scoped signing keys must leave permissions and limits out.
        let mut u = UserClaims::default();
        assert!(u.has_permission_limits());
        u.subs = 0;
        u.data = 0;
        u.payload = 0;
        u.tags = vec!["t".into()];
        u.issuer_account = acc.public_key();
        assert!(!u.has_permission_limits());
        let mut t = UserPermissionLimits::default();
        t.pub_.allow = vec!["x".into()];
        u.apply_template(&t);
        assert_eq!(u.pub_.allow, vec!["x"]);
        assert_eq!((u.subs, u.tags.len()), (NO_LIMIT, 1));
        assert_eq!(u.issuer_account, acc.public_key());
    }

    #[test]
    fn jwt_nsc_fixture_from_docs() {
        let d = decode::<UserClaims>(DOC_USER_JWT).unwrap();
        assert_eq!(d.version, 2);
        assert_eq!(d.name, "MyUser");
        assert_eq!(
            d.iss,
            "AD2M34WBNGQFYK37IDX53DPRG74RLLT7FFWBOBMBUXMAVBCVAU5VKWIY"
        );
        assert_eq!(
            d.sub,
            "UAWBXLSZVZHNDIURY52F6WETFCFZLXYUEFJAHRXDW7D2K4445IY4BVXP"
        );
        assert_eq!(d.iat, 1_635_375_561);
        assert_eq!(
            d.jti,
            "45G72HHAEBDPPWNYZKLMHP5AXXTRIECBSUAB6T6QR7U3RYPVZ3NA"
        );
        assert_eq!(d.exp, None);
        assert_eq!((d.nats.subs, d.nats.data, d.nats.payload), (-1, -1, -1));
        assert!(!d.nats.has_permissions());
        assert!(!d.nats.bearer_token);
        assert_eq!(d.issuer_account(), d.iss);
        assert_eq!(
            KeyPair::from_seed(DOC_USER_SEED).unwrap().public_key(),
            d.sub
        );
        // Our encoding of the same claims uses the same header.
        assert_eq!(
            DOC_USER_JWT.split('.').next(),
            encode(&d, &KeyPair::new_account())
                .unwrap()
                .split('.')
                .next()
        );
    }

    #[test]
    fn jwt_creds_round_trip() {
        let text = format_creds(DOC_USER_JWT, DOC_USER_SEED);
        assert!(text.starts_with("-----BEGIN NATS USER JWT-----\n"));
        assert!(text.ends_with("*\n"));
        assert_eq!(
            parse_creds(&text).unwrap(),
            (DOC_USER_JWT.to_string(), DOC_USER_SEED.to_string())
        );
        // CRLF, indentation and no trailing newline.
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(parse_creds(&crlf).unwrap().1, DOC_USER_SEED);
        let indented: String = text.lines().map(|l| format!("\t\t{l}\n")).collect();
        assert_eq!(parse_creds(&indented).unwrap().0, DOC_USER_JWT);
        let bare = format!(
            "-----BEGIN NATS USER JWT-----\n{DOC_USER_JWT}\n------END NATS USER JWT------\n\
             -----BEGIN USER NKEY SEED-----\n{DOC_USER_SEED}\n------END USER NKEY SEED------"
        );
        assert_eq!(parse_creds(&bare).unwrap().1, DOC_USER_SEED);

        assert!(matches!(parse_creds(""), Err(JwtError::Creds(_))));
        assert!(matches!(
            parse_creds(&format!(
                "-----BEGIN NATS USER JWT-----\n{DOC_USER_JWT}\n------END NATS USER JWT------\n"
            )),
            Err(JwtError::Creds(_))
        ));
        let bad_seed = format_creds(DOC_USER_JWT, "SUAP2AY6UAWHOXJBWDNRNKJ2");
        assert!(matches!(parse_creds(&bad_seed), Err(JwtError::Creds(_))));
    }

    #[test]
    fn jwt_creds_accepted_by_async_nats() {
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = encode(
            &Claims::new(user.public_key(), "u", UserClaims::default()),
            &acc,
        )
        .unwrap();
        let creds = format_creds(&token, &user.seed().unwrap());
        assert!(async_nats::ConnectOptions::with_credentials(&creds).is_ok());
        // And the example in async-nats' own documentation parses here.
        let doc = "-----BEGIN NATS USER JWT-----\n\
            eyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5...\n\
            ------END NATS USER JWT------\n\
            \n\
            ************************* IMPORTANT *************************\n\
            NKEY Seed printed below can be used sign and prove identity.\n\
            NKEYs are sensitive and should be treated as secrets.\n\
            \n\
            -----BEGIN USER NKEY SEED-----\n\
            SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n\
            ------END USER NKEY SEED------\n";
        assert!(async_nats::ConnectOptions::with_credentials(doc).is_ok());
        // Its JWT placeholder is not a three-part token; the seed block is still found.
        assert!(matches!(parse_creds(doc), Err(JwtError::Creds(_))));
    }

    #[test]
    fn jwt_nonce_signature() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let user = KeyPair::new_user();
        let nonce = b"oVSsnFXvmtGMU8Q";
        let sig = user.sign(nonce).unwrap();
        for enc in [
            URL_SAFE_NO_PAD.encode(&sig),
            STANDARD.encode(&sig),
            URL_SAFE.encode(&sig),
        ] {
            assert!(
                verify_nonce_signature(&user.public_key(), nonce, &enc),
                "{enc}"
            );
        }
        let good = URL_SAFE_NO_PAD.encode(&sig);
        assert!(!verify_nonce_signature(&user.public_key(), b"other", &good));
        assert!(!verify_nonce_signature(
            &KeyPair::new_user().public_key(),
            nonce,
            &good
        ));
        assert!(!verify_nonce_signature("UBAD", nonce, &good));
        assert!(!verify_nonce_signature(
            &user.public_key(),
            nonce,
            "not base64!"
        ));
        assert!(!verify_nonce_signature(&user.public_key(), nonce, ""));
    }

    #[test]
    fn jwt_lenient_parsing_of_real_shapes() {
        // Go writes nil lists as null, and some fields as a lone string.
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let claims = serde_json::json!({"iss": op.public_key(), "sub": acc.public_key(),
            "iat": 1, "jti": "x", "unknown_top": {"a": 1},
            "nats": {"type": "account", "version": 2, "imports": null, "exports": null,
                "signing_keys": null, "revocations": null, "tags": "one",
                "limits": {"subs": -1, "conn": 3, "tiered_limits": {"R1": {"mem_storage": 1}}},
                "exports2": 7,
                "default_permissions": {"pub": {"allow": null}, "sub": {}},
                "mappings": {"a": [{"subject": "b", "weight": 50}]},
                "authorization": {"auth_users": ["UA"]}}});
        let t = raw_token(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#, &claims, &op, false);
        let d = decode::<AccountClaims>(&t).unwrap();
        assert_eq!(d.nats.tags, vec!["one"]);
        assert_eq!(d.nats.limits.conn, 3);
        assert_eq!(d.nats.limits.data, 0, "absent limits read as 0, as in Go");
        assert_eq!(d.nats.mappings["a"][0].weight, Some(50));
        assert_eq!(d.nats.authorization.auth_users, vec!["UA"]);
        // Exports of an unknown type are kept, not rejected.
        let claims = serde_json::json!({"iss": op.public_key(), "sub": acc.public_key(),
            "nats": {"type": "account", "version": 2,
                "exports": [{"subject": "x", "type": "weird"}, {"subject": "y"}]}});
        let t = raw_token(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#, &claims, &op, false);
        let d = decode::<AccountClaims>(&t).unwrap();
        assert_eq!(d.nats.exports[0].kind, ExportType::Unknown);
        assert_eq!(d.nats.exports[1].kind, ExportType::Unknown);
    }

    #[test]
    fn jwt_base32() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_ne!(new_jti(), new_jti());
    }
}
