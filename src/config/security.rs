//! The security part of the configuration, as nats-server's config file and flags spell it:
//! `authorization`, `accounts`, `no_auth_user`, `tls`, `operator`, `resolver`,
//! `resolver_preload`, `system_account`. These are plain data; `crate::auth` and `crate::tls`
//! turn them into what the server checks connections against.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{self, boolean, expected, fail, int, string, Warning};
use super::parse::{ConfigError, Entry, Item, Map, Pos, Value};
use crate::subject;

/// Name of the account users belong to when no account is configured, as in nats-server.
pub const GLOBAL_ACCOUNT: &str = "$G";

/// Everything about who may connect and what they may do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    /// `authorization { token }` or `--auth`: one shared token (plain or bcrypt).
    pub token: Option<Secret>,
    /// Users from `authorization { user, password }`, `authorization { users }`, `--user/--pass`
    /// and every account's `users`.
    pub users: Vec<User>,
    /// `authorization { default_permissions }`: for users without their own.
    pub default_permissions: Option<Permissions>,
    /// `authorization { timeout }`, if set there (seconds; overrides `auth_timeout`).
    pub auth_timeout: Option<Duration>,
    /// `no_auth_user`: the user a client that presents no credentials connects as.
    pub no_auth_user: Option<String>,
    /// `accounts { ... }`, in file order.
    pub accounts: Vec<Account>,
    /// `tls { ... }` or the `--tls*` flags.
    pub tls: Option<Tls>,
    /// Operator (JWT) mode: `operator`, `resolver`, `resolver_preload`.
    pub operator: Option<Operator>,
    /// `system_account`: the account named (or, in operator mode, the account public key).
    pub system_account: Option<String>,
}

impl Security {
    /// Whether clients must authenticate at all.
    pub fn auth_required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty() || self.operator.is_some()
    }
}

/// A password or token as configured: bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) are checked
/// with bcrypt; anything else is compared as given, in constant time.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Compared byte for byte.
    Plain(String),
    /// A bcrypt hash.
    Bcrypt(String),
}

impl std::fmt::Debug for Secret {
    // Secrets never reach logs, not even debug output of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
            Secret::Bcrypt(_) => f.write_str("Bcrypt(<redacted>)"),
        }
    }
}

/// One configured user: a user/password pair, or an nkey.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The user name, or for an nkey user the public nkey (`U...`).
    pub name: String,
    /// The password; `None` for nkey users.
    pub password: Option<Secret>,
    /// Whether this is an nkey user (authenticated by signing the server's nonce).
    pub nkey: bool,
    /// The user's own permissions; `None` falls back to the default permissions.
    pub permissions: Option<Permissions>,
    /// The account the user belongs to; [`GLOBAL_ACCOUNT`] when not inside `accounts`.
    pub account: String,
    /// Where the user is defined, for errors found later.
    pub pos: Option<Pos>,
}

/// `permissions { publish, subscribe, allow_responses }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Permissions {
    /// What the user may publish to; `None` is everything.
    pub publish: Option<SubjectPermission>,
    /// What the user may subscribe to; `None` is everything.
    pub subscribe: Option<SubjectPermission>,
    /// `allow_responses`: may publish to reply subjects of requests it received.
    pub allow_responses: Option<ResponsePermission>,
}

/// Allow and deny lists of subjects (with wildcards). An empty allow list with a non-empty
/// deny list allows everything not denied, as nats-server reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubjectPermission {
    /// Subjects allowed (a bare string or list in the config is an allow list).
    pub allow: Vec<String>,
    /// Subjects denied; deny wins over allow.
    pub deny: Vec<String>,
}

/// `allow_responses: true` or `{ max, expires }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponsePermission {
    /// Responses allowed per request received (nats-server's default: 1).
    pub max: usize,
    /// How long the permission to respond lasts (nats-server's default: 2 minutes).
    pub expires: Duration,
}

impl Default for ResponsePermission {
    fn default() -> Self {
        ResponsePermission {
            max: 1,
            expires: Duration::from_secs(120),
        }
    }
}

/// One entry of `accounts { NAME: { users, exports, imports } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The account name.
    pub name: String,
    /// What other accounts may import from this one.
    pub exports: Vec<Export>,
    /// What this account takes from others.
    pub imports: Vec<Import>,
    /// `jetstream: enabled` (or a map of limits): the account gets JetStream when the server
    /// has it on. Once accounts are configured, only those enabling it have JetStream (the
    /// global account has it only when no accounts are configured), as in nats-server.
    pub jetstream: bool,
    /// The account's JetStream limits (all unlimited unless `jetstream` is a map setting them).
    pub jetstream_limits: natter_streams::AccountLimits,
    /// Where the account is defined.
    pub pos: Pos,
}

/// Whether an export or import is a stream (messages flow to the importer) or a service
/// (the importer sends requests, the exporter replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// `{ stream: subject }`.
    Stream,
    /// `{ service: subject }`.
    Service,
}

/// How many replies a service export sends per request (`response_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// One reply (the default).
    #[default]
    Singleton,
    /// Any number of replies.
    Stream,
    /// Several replies forming one response.
    Chunked,
}

/// `exports: [ { stream: "a.>" , accounts: [B] }, { service: "help" } ]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// Stream or service.
    pub kind: ExportKind,
    /// The exported subject (wildcards allowed).
    pub subject: String,
    /// Accounts allowed to import it; `None` is every account.
    pub accounts: Option<Vec<String>>,
    /// For services: how many replies a request gets.
    pub response_type: ResponseType,
    /// Where the export is written.
    pub pos: Pos,
}

/// `imports: [ { stream: { account: A, subject: "a.>" }, prefix: "from_a" },
/// { service: { account: A, subject: "help" }, to: "a.help" } ]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// Stream or service.
    pub kind: ExportKind,
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account.
    pub subject: String,
    /// Streams: the subject in this account (`to`); services: the subject this account
    /// publishes to (`to`). `None`: the same subject.
    pub to: Option<String>,
    /// Streams only: `prefix`, prepended with a `.` to every imported subject.
    pub prefix: Option<String>,
    /// Where the import is written (errors about it name this spot).
    pub pos: Pos,
}

/// `tls { cert_file, key_file, ca_file, verify, verify_and_map, timeout, handshake_first }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates (mutual TLS).
    pub verify: bool,
    /// Like `verify`, and the certificate names the user (no credentials in CONNECT).
    pub verify_and_map: bool,
    /// Longest a TLS handshake may take (nats-server's default: 2 s).
    pub timeout: Duration,
    /// TLS before INFO (`handshake_first`), as nats-server 2.10+ offers.
    pub handshake_first: bool,
    /// `handshake_first: "300ms"`: wait this long for a ClientHello, then fall back to
    /// sending INFO first (clients that do not do TLS first still work).
    pub handshake_first_fallback: Option<Duration>,
    /// Where the block is, for errors about its files.
    pub pos: Option<Pos>,
}

/// Operator (decentralized JWT) mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    /// Operator JWTs (each from the config value: a JWT itself or the path of a file holding one).
    pub jwts: Vec<String>,
    /// `resolver_preload { ACCOUNT_PUBLIC_KEY: "account JWT" }`.
    pub preload: Vec<(String, String)>,
    /// Where `operator` is written.
    pub pos: Pos,
}

// ---------------------------------------------------------------------------------------------
// Reading the configuration file's security keys.
//
// Every key nats-server 2.15 accepts in these blocks is either honoured, ignored with a
// warning (when ignoring it cannot open the server wider than the operator asked for), or an
// error (when it would). Unknown keys inside the blocks are errors, as nats-server makes them.
// Paths (`cert_file`, operator JWT files) are relative to the working directory, as in
// nats-server.

/// The top-level keys [`parse`] reads (lowercase, aliases included); `file` leaves them to it.
pub const KEYS: &[&str] = &[
    "authorization",
    "accounts",
    "no_auth_user",
    "tls",
    "operator",
    "operators",
    "root_operator",
    "root_operators",
    "resolver",
    "account_resolver",
    "accounts_resolver",
    "resolver_preload",
    "resolver_pinned_accounts",
    "system_account",
    "system",
    "trusted",
    "trusted_keys",
    "trusted_operators",
];

/// nats-server's TLS handshake timeout when `tls { timeout }` is not set (observed: 2 s).
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `handshake_first: auto` waits for a ClientHello before sending INFO (observed on
/// nats-server 2.15: 50 ms).
pub const DEFAULT_HANDSHAKE_FIRST_FALLBACK: Duration = Duration::from_millis(50);

/// The account nats-server creates for its own use; configs may name it without declaring it.
pub const SYSTEM_ACCOUNT: &str = "$SYS";

/// Reads `authorization`, `accounts`, `no_auth_user`, `tls`, `operator`, `resolver`,
/// `resolver_preload`, `system_account` (and their aliases) from a parsed file's top level,
/// checks them against each other, and returns them. Anything malformed, or anything natter
/// cannot honour that would leave the server more open than configured, is an error naming
/// file, line and key; harmless unsupported keys are `warnings`.
pub fn parse(map: &Map, warnings: &mut Vec<Warning>) -> Result<Security, ConfigError> {
    let mut keys: HashMap<&'static str, &Entry> = HashMap::new();
    for e in map {
        if let Some(name) = canonical_key(&e.key) {
            keys.insert(name, e);
        }
    }
    let mut sec = Security::default();
    if let Some(e) = keys.get("trusted") {
        return Err(fail(
            e,
            "trusted operator keys are not supported by natter; configure `operator` with the \
             operator JWT and `resolver: MEMORY` instead (refusing to start: nats-server would \
             require every client to authenticate)",
        ));
    }
    if let Some(e) = keys.get("trusted_operators") {
        return Err(fail(
            e,
            "not a nats-server option (did you mean `operator`?); refusing to start without the \
             protection it seems to ask for",
        ));
    }

    let operator = match keys.get("operator") {
        Some(e) => Some(operator(e, &keys)?),
        None => {
            for key in ["resolver", "resolver_preload", "resolver_pinned_accounts"] {
                if let Some(e) = keys.get(key) {
                    warn(
                        warnings,
                        e,
                        format!("{} is ignored without `operator`", e.key),
                    );
                }
            }
            None
        }
    };

    let mut single_user = false;
    if let Some(e) = keys.get("authorization") {
        let authz = authorization(e, warnings)?;
        single_user = authz.single_user;
        if operator.is_some() {
            if !authz.users.is_empty() {
                return Err(fail(
                    e,
                    "operator mode does not allow users to be configured directly",
                ));
            }
            if authz.token.is_some() {
                warn(
                    warnings,
                    e,
                    "authorization: token is ignored in operator mode".into(),
                );
            }
        }
        sec.token = authz.token;
        sec.users = authz.users;
        sec.default_permissions = authz.default_permissions;
        sec.auth_timeout = authz.timeout;
    }

    if let Some(e) = keys.get("accounts") {
        if operator.is_some() {
            return Err(fail(
                e,
                "operator mode does not allow accounts to be configured directly",
            ));
        }
        let (accounts, users) = accounts(e, sec.default_permissions.is_some(), warnings)?;
        if !users.is_empty() {
            if sec.token.is_some() {
                return Err(fail(
                    e,
                    "cannot have an authorization token and users in accounts",
                ));
            }
            if single_user {
                return Err(fail(
                    e,
                    "cannot have a single authorization user/password and users in accounts",
                ));
            }
        }
        check_account_references(&accounts)?;
        sec.users.extend(users);
        sec.accounts = accounts;
    }
    check_duplicate_users(&sec.users)?;

    if let Some(e) = keys.get("no_auth_user") {
        let name = string(e)?;
        if !name.is_empty() {
            if operator.is_some() {
                return Err(fail(e, "no_auth_user is not compatible with operator mode"));
            }
            if !sec.users.iter().any(|u| u.name == name) {
                return Err(fail(
                    e,
                    format!("{name:?} is not a configured user or nkey"),
                ));
            }
            sec.no_auth_user = Some(name.to_string());
        }
    }

    if let Some(e) = keys.get("system_account") {
        let name = string(e)?;
        if name.is_empty() {
            return Err(fail(e, "must not be empty"));
        }
        if let Some(op) = &operator {
            if !is_public_key(name, 'A') {
                return Err(fail(
                    e,
                    format!(
                        "{name:?} is not an account public key (operator mode names the system \
                         account by its key)"
                    ),
                ));
            }
            // The MEMORY resolver knows only preloaded accounts; nats-server 2.15 refuses to
            // start with "error resolving system account: account missing".
            if !op.preload.iter().any(|(key, _)| key == name) {
                return Err(fail(
                    e,
                    format!("account {name} is not in resolver_preload, so it cannot be resolved"),
                ));
            }
        } else if name != SYSTEM_ACCOUNT && !sec.accounts.iter().any(|a| a.name == name) {
            return Err(fail(e, format!("account {name:?} is not defined")));
        }
        sec.system_account = Some(name.to_string());
    }

    if let Some(e) = keys.get("tls") {
        sec.tls = Some(tls(e, warnings)?);
    }
    sec.operator = operator;
    Ok(sec)
}

/// The name `parse` files a top-level key under, aliases folded.
fn canonical_key(key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    Some(match lower.as_str() {
        "operators" | "root_operator" | "root_operators" => "operator",
        "account_resolver" | "accounts_resolver" => "resolver",
        "system" => "system_account",
        "trusted_keys" => "trusted",
        other => KEYS.iter().copied().find(|&k| k == other)?,
    })
}

fn warn(warnings: &mut Vec<Warning>, e: &Entry, message: String) {
    warnings.push(Warning {
        pos: e.pos.clone(),
        message,
    });
}

fn ignored(warnings: &mut Vec<Warning>, e: &Entry) {
    warn(
        warnings,
        e,
        format!("{:?} is not supported by natter yet, ignored", e.key),
    );
}

fn unknown(e: &Entry) -> ConfigError {
    fail(e, "unknown field")
}

fn map_of<'a>(e: &'a Entry, what: &str) -> Result<&'a Map, ConfigError> {
    match &e.item.value {
        Value::Map(m) => Ok(m),
        _ => Err(expected(e, what)),
    }
}

/// An array element that must be a map; errors name the array's key.
fn item_map<'a>(key: &Entry, item: &'a Item, what: &str) -> Result<&'a Map, ConfigError> {
    match &item.value {
        Value::Map(m) => Ok(m),
        other => Err(ConfigError::at(
            &item.pos,
            format!("{}: expected {what}, got {}", key.key, other.describe()),
        )),
    }
}

/// A string, or a list of strings.
fn strings(e: &Entry) -> Result<Vec<String>, ConfigError> {
    match &e.item.value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match &item.value {
                Value::String(s) => Ok(s.clone()),
                other => Err(ConfigError::at(
                    &item.pos,
                    format!("{}: expected a string, got {}", e.key, other.describe()),
                )),
            })
            .collect(),
        _ => Err(expected(e, "a string or a list of strings")),
    }
}

/// Whether the key is a valid public nkey of the kind `prefix` names (`U` user, `A` account,
/// `O` operator).
fn is_public_key(key: &str, prefix: char) -> bool {
    key.starts_with(prefix) && nkeys::KeyPair::from_public_key(key).is_ok()
}

/// A password or token as configured: a bcrypt hash (`$2a$`, `$2b$`, `$2y$`) must be well
/// formed, since a malformed one would silently refuse everyone; anything else is plain.
pub fn secret(text: &str) -> Result<Secret, String> {
    if !["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
        return Ok(Secret::Plain(text.to_string()));
    }
    match text.parse::<bcrypt::HashParts>() {
        // bcrypt accepts costs 4 to 31; anything else would fail every check later.
        Ok(parts) if (4..=31).contains(&parts.get_cost()) => Ok(Secret::Bcrypt(text.to_string())),
        Ok(parts) => Err(format!(
            "malformed bcrypt hash: cost {} is out of range (4 to 31)",
            parts.get_cost()
        )),
        Err(err) => Err(format!("malformed bcrypt hash: {err}")),
    }
}

fn secret_entry(e: &Entry) -> Result<Secret, ConfigError> {
    secret(string(e)?).map_err(|msg| fail(e, msg))
}

/// A timeout in seconds (integer or fraction) or a Go duration string; zero or negative means
/// "the default", returned as zero.
fn seconds(e: &Entry) -> Result<Duration, ConfigError> {
    match &e.item.value {
        Value::Int(n) => Ok(Duration::from_secs(u64::try_from(*n).unwrap_or(0))),
        Value::Float(x) => Ok(if *x > 0.0 {
            Duration::try_from_secs_f64(*x).map_err(|_| fail(e, format!("{x} is too large")))?
        } else {
            Duration::ZERO
        }),
        Value::String(s) => match file::go_duration(s) {
            Ok(d) => Ok(d),
            Err(file::DurationError::Negative) => Ok(Duration::ZERO),
            Err(file::DurationError::Invalid) => Err(expected(
                e,
                "seconds (e.g. 2 or 0.5) or a duration (e.g. \"2s\", \"500ms\")",
            )),
        },
        _ => Err(expected(
            e,
            "seconds (e.g. 2 or 0.5) or a duration (e.g. \"2s\", \"500ms\")",
        )),
    }
}

// ---- authorization ---------------------------------------------------------------------------

struct Authorization {
    token: Option<Secret>,
    users: Vec<User>,
    default_permissions: Option<Permissions>,
    timeout: Option<Duration>,
    /// The single `user`/`password` form (not `users`).
    single_user: bool,
}

fn authorization(e: &Entry, warnings: &mut Vec<Warning>) -> Result<Authorization, ConfigError> {
    let m = map_of(e, "a map")?;
    let mut token = None;
    let mut user: Option<&Entry> = None;
    let mut password: Option<(&Entry, Secret)> = None;
    let mut users: Option<(&Entry, Vec<User>)> = None;
    let mut single_permissions: Option<(&Entry, Permissions)> = None;
    let mut out = Authorization {
        token: None,
        users: Vec::new(),
        default_permissions: None,
        timeout: None,
        single_user: false,
    };
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "token" => {
                let t = secret_entry(k)?;
                if matches!(&t, Secret::Plain(s) if s.is_empty()) {
                    return Err(fail(k, "must not be empty"));
                }
                token = Some(t);
            }
            "user" | "username" => {
                if string(k)?.is_empty() {
                    return Err(fail(k, "must not be empty"));
                }
                user = Some(k);
            }
            "password" | "pass" => password = Some((k, secret_entry(k)?)),
            "users" => users = Some((k, user_list(k, GLOBAL_ACCOUNT, warnings)?)),
            "timeout" => {
                let d = seconds(k)?;
                out.timeout = (!d.is_zero()).then_some(d);
            }
            "default_permissions" | "default_permission" => {
                out.default_permissions = Some(permissions(k)?)
            }
            "permissions" => single_permissions = Some((k, permissions(k)?)),
            "auth_callout" | "auth_hook" => {
                return Err(fail(
                    k,
                    "authorization callouts are not supported by natter yet; refusing to start \
                     without the authentication it asks for",
                ))
            }
            "proxy_required" => {
                if boolean(k)? {
                    return Err(fail(
                        k,
                        "natter does not support proxy connections yet; refusing to start \
                         without the restriction it asks for",
                    ));
                }
            }
            _ => return Err(unknown(k)),
        }
    }
    if token.is_some() && user.is_some() {
        return Err(fail(e, "cannot have a user/password and a token"));
    }
    if token.is_some() && users.is_some() {
        return Err(fail(e, "cannot have a token and a users array"));
    }
    if user.is_some() && users.is_some() {
        return Err(fail(
            e,
            "cannot have a single user/password and a users array",
        ));
    }
    if let (Some((p, _)), None) = (&password, user) {
        return Err(fail(p, "a password needs a user"));
    }
    if let (Some((p, _)), None) = (&single_permissions, user) {
        return Err(fail(
            p,
            "permissions here apply to the single `user` only; use default_permissions or \
             permissions inside each of `users`",
        ));
    }
    out.token = token;
    if let Some(u) = user {
        out.single_user = true;
        out.users.push(User {
            name: string(u)?.to_string(),
            password: password.map(|(_, s)| s),
            nkey: false,
            permissions: single_permissions.map(|(_, p)| p),
            account: GLOBAL_ACCOUNT.to_string(),
            pos: Some(u.pos.clone()),
        });
    }
    if let Some((_, list)) = users {
        out.users = list;
    }
    Ok(out)
}

/// Connection types nats-server knows for `allowed_connection_types`.
const CONNECTION_TYPES: &[&str] = &[
    "STANDARD",
    "WEBSOCKET",
    "LEAFNODE",
    "LEAFNODE_WS",
    "MQTT",
    "MQTT_WS",
    "IN_PROCESS",
];

/// `users: [ {user, password, permissions}, {nkey} ]`, every user in `account`.
fn user_list(
    e: &Entry,
    account: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<User>, ConfigError> {
    let Value::Array(items) = &e.item.value else {
        return Err(expected(e, "an array of users"));
    };
    let mut users = Vec::new();
    for item in items {
        if let Some(u) = user(e, item, account, warnings)? {
            users.push(u);
        }
    }
    Ok(users)
}

/// One user entry; `None` for a user natter could never let in (one restricted to connection
/// types natter does not serve), which is then left out with a warning.
fn user(
    list: &Entry,
    item: &Item,
    account: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<User>, ConfigError> {
    let m = item_map(list, item, "a map for each user")?;
    let mut name: Option<&Entry> = None;
    let mut password = None;
    let mut nkey: Option<&Entry> = None;
    let mut perms = None;
    let mut left_out: Option<(&Entry, String)> = None;
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "user" | "username" => {
                if string(k)?.is_empty() {
                    return Err(fail(k, "must not be empty"));
                }
                name = Some(k);
            }
            "password" | "pass" => password = Some(secret_entry(k)?),
            "nkey" => nkey = Some(k),
            "permissions" | "permission" => perms = Some(permissions(k)?),
            "allowed_connection_types" => {
                let types = strings(k)?;
                let bad: Vec<&String> = types
                    .iter()
                    .filter(|t| !CONNECTION_TYPES.iter().any(|c| c.eq_ignore_ascii_case(t)))
                    .collect();
                if !bad.is_empty() {
                    return Err(fail(k, format!("invalid connection types {bad:?}")));
                }
                if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("STANDARD")) {
                    left_out = Some((k, "may not use standard client connections".into()));
                }
            }
            "proxy_required" => {
                if boolean(k)? {
                    left_out = Some((k, "must connect through a proxy".into()));
                }
            }
            _ => return Err(unknown(k)),
        }
    }
    let user = match (nkey, name) {
        (Some(k), Some(_)) => return Err(fail(k, "nkey users do not take usernames or passwords")),
        (Some(k), None) if password.is_some() => {
            return Err(fail(k, "nkey users do not take usernames or passwords"))
        }
        (Some(k), None) => {
            let key = string(k)?;
            if !is_public_key(key, 'U') {
                return Err(fail(k, format!("{key:?} is not a valid public user nkey")));
            }
            User {
                name: key.to_string(),
                password: None,
                nkey: true,
                permissions: perms,
                account: account.to_string(),
                pos: Some(k.pos.clone()),
            }
        }
        (None, Some(n)) => User {
            name: string(n)?.to_string(),
            password,
            nkey: false,
            permissions: perms,
            account: account.to_string(),
            pos: Some(n.pos.clone()),
        },
        (None, None) => {
            return Err(ConfigError::at(
                &item.pos,
                format!("{}: a user entry needs `user` or `nkey`", list.key),
            ))
        }
    };
    if let Some((k, why)) = left_out {
        warn(
            warnings,
            k,
            format!(
                "user {:?} {why}, which natter does not offer; the user is left out",
                user.name
            ),
        );
        return Ok(None);
    }
    Ok(Some(user))
}

fn check_duplicate_users(users: &[User]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, &User> = HashMap::new();
    for u in users {
        if let Some(first) = seen.insert(&u.name, u) {
            let message = match &first.pos {
                Some(p) => format!("users: duplicate user {:?} (first defined at {p})", u.name),
                None => format!("users: duplicate user {:?}", u.name),
            };
            return Err(match &u.pos {
                Some(p) => ConfigError::at(p, message),
                None => ConfigError::in_file(Path::new("<config>"), message),
            });
        }
    }
    Ok(())
}

// ---- permissions -----------------------------------------------------------------------------

/// `{ publish, subscribe, allow_responses }` (`pub`/`sub` as aliases).
fn permissions(e: &Entry) -> Result<Permissions, ConfigError> {
    let m = map_of(e, "a map with publish, subscribe and allow_responses")?;
    let mut p = Permissions::default();
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "publish" | "pub" => p.publish = Some(subject_permission(k, false)?),
            "subscribe" | "sub" => p.subscribe = Some(subject_permission(k, true)?),
            "allow_responses" => p.allow_responses = response_permission(k)?,
            _ => {
                return Err(fail(
                    k,
                    "unknown field; permissions take publish, subscribe and allow_responses",
                ))
            }
        }
    }
    Ok(p)
}

/// A subject, a list of subjects (both an allow list), or `{ allow, deny }`.
fn subject_permission(e: &Entry, subscribe: bool) -> Result<SubjectPermission, ConfigError> {
    let mut p = SubjectPermission::default();
    match &e.item.value {
        Value::String(_) | Value::Array(_) => p.allow = strings(e)?,
        Value::Map(m) => {
            for k in m {
                match k.key.to_ascii_lowercase().as_str() {
                    "allow" => p.allow = strings(k)?,
                    "deny" => p.deny = strings(k)?,
                    _ => {
                        return Err(fail(
                            k,
                            "unknown field; subject permissions take only allow and deny",
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(expected(
                e,
                "a subject, a list of subjects, or a map with allow and deny",
            ))
        }
    }
    for s in p.allow.iter().chain(&p.deny) {
        if !valid_permission_subject(s, subscribe) {
            return Err(fail(e, format!("subject {s:?} is not a valid subject")));
        }
    }
    Ok(p)
}

/// Publish permissions are subjects (wildcards allowed); subscribe permissions may add a queue
/// group after whitespace (`"foo.* workers"`).
fn valid_permission_subject(s: &str, subscribe: bool) -> bool {
    if !subscribe {
        return subject::is_valid_subscription(s.as_bytes());
    }
    let mut parts = s.split_whitespace();
    let (Some(subj), queue) = (parts.next(), parts.next()) else {
        return false;
    };
    parts.next().is_none()
        && subject::is_valid_subscription(subj.as_bytes())
        && queue.is_none_or(|q| subject::is_valid_subscription(q.as_bytes()))
}

/// `allow_responses: true | false | { max, expires }`.
fn response_permission(e: &Entry) -> Result<Option<ResponsePermission>, ConfigError> {
    match &e.item.value {
        Value::Bool(true) => Ok(Some(ResponsePermission::default())),
        Value::Bool(false) => Ok(None),
        Value::Map(m) => {
            let mut r = ResponsePermission::default();
            for k in m {
                match k.key.to_ascii_lowercase().as_str() {
                    // nats-server uses the defaults for zero or negative values.
                    "max" => {
                        if let Ok(n) = usize::try_from(int(k)?) {
                            if n > 0 {
                                r.max = n;
                            }
                        }
                    }
                    "expires" => {
                        let Value::String(s) = &k.item.value else {
                            return Err(expected(k, "a duration (e.g. \"1m\")"));
                        };
                        match file::go_duration(s) {
                            Ok(d) if !d.is_zero() => r.expires = d,
                            Ok(_) | Err(file::DurationError::Negative) => {}
                            Err(file::DurationError::Invalid) => {
                                return Err(expected(k, "a duration (e.g. \"1m\")"))
                            }
                        }
                    }
                    _ => {
                        return Err(fail(
                            k,
                            "unknown field; allow_responses takes max and expires",
                        ))
                    }
                }
            }
            Ok(Some(r))
        }
        _ => Err(expected(e, "true, false, or a map with max and expires")),
    }
}

// ---- accounts --------------------------------------------------------------------------------

/// `accounts { NAME: { users, exports, imports, default_permissions } }` (or a list of names):
/// the accounts and their users. Users without permissions get their account's
/// `default_permissions`; as in nats-server, `authorization { default_permissions }` does not
/// reach into accounts, so when that is set they get explicit "everything" permissions.
fn accounts(
    e: &Entry,
    global_defaults: bool,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<Account>, Vec<User>), ConfigError> {
    let mut accounts = Vec::new();
    let mut users = Vec::new();
    match &e.item.value {
        Value::Map(m) => {
            for entry in m {
                let (account, mut list) = account(entry, warnings)?;
                if global_defaults {
                    for u in &mut list {
                        u.permissions.get_or_insert_with(Permissions::default);
                    }
                }
                accounts.push(account);
                users.extend(list);
            }
        }
        Value::Array(items) => {
            for item in items {
                let Value::String(name) = &item.value else {
                    return Err(ConfigError::at(
                        &item.pos,
                        format!(
                            "{}: expected an account name, got {}",
                            e.key,
                            item.value.describe()
                        ),
                    ));
                };
                check_account_name(name, &item.pos, &e.key)?;
                accounts.push(Account {
                    name: name.clone(),
                    exports: Vec::new(),
                    imports: Vec::new(),
                    jetstream: false,
                    jetstream_limits: Default::default(),
                    pos: item.pos.clone(),
                });
            }
        }
        _ => return Err(expected(e, "a map of accounts")),
    }
    Ok((accounts, users))
}

fn check_account_name(name: &str, pos: &Pos, key: &str) -> Result<(), ConfigError> {
    if name == GLOBAL_ACCOUNT {
        return Err(ConfigError::at(
            pos,
            format!("{key}: {GLOBAL_ACCOUNT:?} is a reserved account"),
        ));
    }
    if name.is_empty() {
        return Err(ConfigError::at(
            pos,
            format!("{key}: account name must not be empty"),
        ));
    }
    Ok(())
}

fn account(e: &Entry, warnings: &mut Vec<Warning>) -> Result<(Account, Vec<User>), ConfigError> {
    check_account_name(&e.key, &e.pos, &e.key)?;
    let m = map_of(e, "a map with users, exports and imports")?;
    let mut account = Account {
        name: e.key.clone(),
        exports: Vec::new(),
        imports: Vec::new(),
        jetstream: false,
        jetstream_limits: Default::default(),
        pos: e.pos.clone(),
    };
    let mut users = Vec::new();
    let mut defaults = None;
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "users" => users = user_list(k, &e.key, warnings)?,
            "exports" => account.exports = exports(k, warnings)?,
            "imports" => account.imports = imports(k, warnings)?,
            "default_permissions" => defaults = Some(permissions(k)?),
            "jetstream" => {
                (account.jetstream, account.jetstream_limits) = account_jetstream(k, warnings)?
            }
            "mappings" | "maps" | "limits" | "nkey" | "msg_trace" | "trace_dest" => {
                ignored(warnings, k)
            }
            _ => return Err(unknown(k)),
        }
    }
    if let Some(d) = defaults {
        for u in &mut users {
            u.permissions.get_or_insert_with(|| d.clone());
        }
    }
    Ok((account, users))
}

/// An account's `jetstream`: `enabled`/`disabled` (also `enable`, `disable`, any case),
/// `true`/`false`, or a map of the account's JetStream limits, which enables it. The map takes
/// nats-server's keys and aliases; sizes as in the `jetstream` block.
fn account_jetstream(
    e: &Entry,
    warnings: &mut Vec<Warning>,
) -> Result<(bool, natter_streams::AccountLimits), ConfigError> {
    let mut limits = natter_streams::AccountLimits::default();
    let on = match &e.item.value {
        Value::Bool(b) => *b,
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "enabled" | "enable" => true,
            "disabled" | "disable" => false,
            _ => return Err(expected(e, "enabled, disabled or a map of limits")),
        },
        Value::Map(m) => {
            use super::jetstream::storage_size;
            for k in m {
                match k.key.to_ascii_lowercase().as_str() {
                    "max_memory" | "max_mem" | "mem" | "memory" => {
                        limits.max_memory = storage_size(k)?
                    }
                    "max_file" | "max_store" | "store" | "disk" | "max_disk" => {
                        limits.max_storage = storage_size(k)?
                    }
                    "max_streams" | "streams" => limits.max_streams = int(k)?,
                    "max_consumers" | "consumers" => limits.max_consumers = int(k)?,
                    "max_ack_pending" => limits.max_ack_pending = int(k)?,
                    "mem_max_stream_bytes" | "memory_max_stream_bytes" => {
                        limits.memory_max_stream_bytes = storage_size(k)?
                    }
                    "store_max_stream_bytes" | "disk_max_stream_bytes" => {
                        limits.storage_max_stream_bytes = storage_size(k)?
                    }
                    "max_bytes_required" => limits.max_bytes_required = boolean(k)?,
                    "cluster_traffic" => match &k.item.value {
                        // Where a clustered stream's replication goes: no clustering here.
                        Value::String(s) if s == "system" || s == "owner" => ignored(warnings, k),
                        _ => return Err(expected(k, "either 'system' or 'owner'")),
                    },
                    _ => return Err(unknown(k)),
                }
            }
            true
        }
        _ => return Err(expected(e, "enabled, disabled or a map of limits")),
    };
    Ok((on, limits))
}

fn kind_name(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Stream => "stream",
        ExportKind::Service => "service",
    }
}

/// Sets the kind of an export or import, refusing a second one.
fn set_kind<T>(
    slot: &mut Option<(ExportKind, T)>,
    k: &Entry,
    kind: ExportKind,
    value: T,
) -> Result<(), ConfigError> {
    if let Some((first, _)) = slot {
        return Err(fail(
            k,
            format!(
                "already saw a {}; one entry is a stream or a service",
                kind_name(*first)
            ),
        ));
    }
    *slot = Some((kind, value));
    Ok(())
}

/// `exports: [ { stream: subj, accounts: [..] }, { service: subj, response_type } ]`.
fn exports(e: &Entry, warnings: &mut Vec<Warning>) -> Result<Vec<Export>, ConfigError> {
    let Value::Array(items) = &e.item.value else {
        return Err(expected(e, "an array of exports"));
    };
    let mut out = Vec::new();
    for item in items {
        let m = item_map(e, item, "a map with stream or service")?;
        let mut kind: Option<(ExportKind, (&Entry, String))> = None;
        let mut accounts = None;
        let mut response: Option<(&Entry, ResponseType)> = None;
        for k in m {
            match k.key.to_ascii_lowercase().as_str() {
                "stream" => set_kind(
                    &mut kind,
                    k,
                    ExportKind::Stream,
                    (k, string(k)?.to_string()),
                )?,
                "service" => set_kind(
                    &mut kind,
                    k,
                    ExportKind::Service,
                    (k, string(k)?.to_string()),
                )?,
                "accounts" => {
                    let list = strings(k)?;
                    accounts = (!list.is_empty()).then_some(list);
                }
                "response_type" | "response" => {
                    let t = match string(k)?.to_ascii_lowercase().as_str() {
                        "singleton" | "single" => ResponseType::Singleton,
                        "stream" => ResponseType::Stream,
                        "chunked" | "chunk" => ResponseType::Chunked,
                        other => {
                            return Err(fail(
                                k,
                                format!(
                                "unknown response type {other:?} (singleton, stream or chunked)"
                            ),
                            ))
                        }
                    };
                    response = Some((k, t));
                }
                "latency" | "threshold" | "response_threshold" | "allow_trace" => {
                    ignored(warnings, k)
                }
                "account_token_position" => {
                    return Err(fail(
                        k,
                        "token-protected exports are not supported by natter yet; refusing to \
                         start with the export open to every account",
                    ))
                }
                _ => return Err(unknown(k)),
            }
        }
        let Some((kind, (k, subject))) = kind else {
            return Err(ConfigError::at(
                &item.pos,
                format!("{}: an export needs `stream` or `service`", e.key),
            ));
        };
        if !subject::is_valid_subscription(subject.as_bytes()) {
            return Err(fail(
                k,
                format!("subject {subject:?} is not a valid subject"),
            ));
        }
        if let (ExportKind::Stream, Some((r, _))) = (kind, &response) {
            return Err(fail(r, "a response type applies to service exports only"));
        }
        out.push(Export {
            kind,
            subject,
            accounts,
            response_type: response.map(|(_, t)| t).unwrap_or_default(),
            pos: item.pos.clone(),
        });
    }
    Ok(out)
}

/// `imports: [ { stream: {account, subject}, prefix, to }, { service: {account, subject}, to } ]`.
fn imports(e: &Entry, warnings: &mut Vec<Warning>) -> Result<Vec<Import>, ConfigError> {
    let Value::Array(items) = &e.item.value else {
        return Err(expected(e, "an array of imports"));
    };
    let mut out = Vec::new();
    for item in items {
        let m = item_map(e, item, "a map with stream or service")?;
        let mut kind: Option<(ExportKind, (String, String))> = None;
        let mut to = None;
        let mut prefix: Option<(&Entry, String)> = None;
        for k in m {
            match k.key.to_ascii_lowercase().as_str() {
                "stream" => set_kind(&mut kind, k, ExportKind::Stream, import_source(k)?)?,
                "service" => set_kind(&mut kind, k, ExportKind::Service, import_source(k)?)?,
                "to" => {
                    let s = string(k)?;
                    if !subject::is_valid_subscription(s.as_bytes()) {
                        return Err(fail(k, format!("subject {s:?} is not a valid subject")));
                    }
                    to = Some(s.to_string());
                }
                "prefix" => {
                    let s = string(k)?;
                    if !subject::is_valid_publish(s.as_bytes()) {
                        return Err(fail(
                            k,
                            format!("{s:?} is not a valid prefix (a subject without wildcards)"),
                        ));
                    }
                    prefix = Some((k, s.to_string()));
                }
                "share" | "allow_trace" => ignored(warnings, k),
                _ => return Err(unknown(k)),
            }
        }
        let Some((kind, (account, subject))) = kind else {
            return Err(ConfigError::at(
                &item.pos,
                format!("{}: an import needs `stream` or `service`", e.key),
            ));
        };
        if let (ExportKind::Service, Some((k, _))) = (kind, &prefix) {
            warn(
                warnings,
                k,
                "prefix applies to stream imports only; ignored for this service import".into(),
            );
            prefix = None;
        }
        out.push(Import {
            kind,
            account,
            subject,
            to,
            prefix: prefix.map(|(_, p)| p),
            pos: item.pos.clone(),
        });
    }
    Ok(out)
}

/// `{ account: NAME, subject: "s" }`.
fn import_source(e: &Entry) -> Result<(String, String), ConfigError> {
    let m = map_of(e, "a map with account and subject")?;
    let (mut account, mut subj) = (None, None);
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "account" => account = Some(string(k)?.to_string()),
            "subject" => {
                let s = string(k)?;
                if !subject::is_valid_subscription(s.as_bytes()) {
                    return Err(fail(k, format!("subject {s:?} is not a valid subject")));
                }
                subj = Some(s.to_string());
            }
            _ => return Err(unknown(k)),
        }
    }
    match (account, subj) {
        (Some(a), Some(s)) if !a.is_empty() => Ok((a, s)),
        _ => Err(fail(e, "expected an account name and a subject")),
    }
}

/// Whether every subject `sub` matches is also matched by `sup` (both may hold wildcards).
pub fn subject_is_subset(sub: &str, sup: &str) -> bool {
    let mut a = sub.split('.');
    let mut b = sup.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(_), Some(">")) => return true,
            (Some(x), Some("*")) if x != ">" => continue,
            (Some(x), Some(y)) if x == y && x != "*" && x != ">" => continue,
            (Some("*"), Some("*")) => continue,
            _ => return false,
        }
    }
}

/// Every account named by an export's `accounts` or an import exists, and every import is
/// covered by an export of the same kind, open to the importer.
fn check_account_references(accounts: &[Account]) -> Result<(), ConfigError> {
    let names: HashSet<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    for account in accounts {
        for export in &account.exports {
            for name in export.accounts.iter().flatten() {
                if !names.contains(name.as_str()) {
                    return Err(ConfigError::at(
                        &export.pos,
                        format!(
                            "exports: account {name:?} is not defined ({} export of {:?})",
                            kind_name(export.kind),
                            export.subject
                        ),
                    ));
                }
            }
        }
    }
    for account in accounts {
        for import in &account.imports {
            let kind = kind_name(import.kind);
            let Some(from) = accounts.iter().find(|a| a.name == import.account) else {
                return Err(ConfigError::at(
                    &import.pos,
                    format!(
                        "imports: account {:?} is not defined ({kind} import of {:?})",
                        import.account, import.subject
                    ),
                ));
            };
            let covering: Vec<&Export> = from
                .exports
                .iter()
                .filter(|x| x.kind == import.kind && subject_is_subset(&import.subject, &x.subject))
                .collect();
            let open = |x: &&Export| {
                x.accounts
                    .as_ref()
                    .is_none_or(|list| list.contains(&account.name))
            };
            if !covering.iter().any(open) {
                let why = match covering.first() {
                    Some(x) => format!(
                        "its {kind} export of {:?} does not include account {:?}",
                        x.subject, account.name
                    ),
                    None => format!("it has no {kind} export covering {:?}", import.subject),
                };
                return Err(ConfigError::at(
                    &import.pos,
                    format!(
                        "imports: {kind} import of {:?} from account {:?} is not authorized: {why}",
                        import.subject, import.account
                    ),
                ));
            }
        }
    }
    Ok(())
}

// ---- tls -------------------------------------------------------------------------------------

fn tls(e: &Entry, warnings: &mut Vec<Warning>) -> Result<Tls, ConfigError> {
    let m = map_of(e, "a map with cert_file and key_file")?;
    let (mut cert, mut key, mut ca): (Option<&Entry>, Option<&Entry>, Option<&Entry>) =
        (None, None, None);
    let mut t = Tls {
        cert_file: PathBuf::new(),
        key_file: PathBuf::new(),
        ca_file: None,
        verify: false,
        verify_and_map: false,
        timeout: DEFAULT_TLS_TIMEOUT,
        handshake_first: false,
        handshake_first_fallback: None,
        pos: Some(e.pos.clone()),
    };
    for k in m {
        match k.key.to_ascii_lowercase().as_str() {
            "cert_file" => cert = Some(k),
            "key_file" => key = Some(k),
            "ca_file" => ca = Some(k),
            "verify" => t.verify = boolean(k)?,
            "verify_and_map" => t.verify_and_map = boolean(k)?,
            "timeout" => {
                let d = seconds(k)?;
                t.timeout = if d.is_zero() { DEFAULT_TLS_TIMEOUT } else { d };
            }
            "handshake_first" | "first" => {
                (t.handshake_first, t.handshake_first_fallback) = handshake_first(k)?
            }
            "cipher_suites"
            | "curve_preferences"
            | "insecure"
            | "cert_match_by"
            | "cert_match"
            | "cert_match_skip_invalid"
            | "ca_certs_match"
            | "connection_rate_limit" => ignored(warnings, k),
            "min_version" => {
                let v = string(k)?;
                match v {
                    "1.0" | "1.1" | "1.2" => {}
                    "1.3" => {
                        return Err(fail(
                            k,
                            "natter cannot require TLS 1.3 yet (it accepts 1.2 and 1.3); \
                             refusing to start with a weaker minimum",
                        ))
                    }
                    _ => return Err(fail(k, format!("unknown TLS version {v:?}"))),
                }
            }
            "pinned_certs" => {
                return Err(fail(
                    k,
                    "pinned certificates are not supported by natter yet; refusing to start \
                     accepting certificates the pins would reject",
                ))
            }
            "ocsp_peer" => {
                if !matches!(k.item.value, Value::Bool(false)) {
                    return Err(fail(
                        k,
                        "OCSP peer checks are not supported by natter yet; refusing to start \
                         without the revocation checks it asks for",
                    ));
                }
            }
            "cert_store" => {
                return Err(fail(
                    k,
                    "certificate stores are not supported; use cert_file and key_file",
                ))
            }
            "certs" => {
                if !matches!(&k.item.value, Value::Array(a) if a.is_empty()) {
                    return Err(fail(
                        k,
                        "several certificates are not supported by natter yet; use cert_file \
                         and key_file",
                    ));
                }
            }
            "verify_cert_and_check_known_urls" => {
                return Err(fail(k, "not supported for client connections"))
            }
            _ => return Err(unknown(k)),
        }
    }
    let Some(cert) = cert else {
        return Err(fail(e, "missing 'cert_file' in TLS configuration"));
    };
    let Some(key) = key else {
        return Err(fail(e, "missing 'key_file' in TLS configuration"));
    };
    t.cert_file = PathBuf::from(string(cert)?);
    check_certificates(&t.cert_file).map_err(|msg| fail(cert, msg))?;
    t.key_file = PathBuf::from(string(key)?);
    check_private_key(&t.key_file).map_err(|msg| fail(key, msg))?;
    if let Some(ca) = ca {
        let path = PathBuf::from(string(ca)?);
        check_certificates(&path).map_err(|msg| fail(ca, msg))?;
        t.ca_file = Some(path);
    }
    // Mapping certificates to users is meaningless without verifying them.
    t.verify |= t.verify_and_map;
    Ok(t)
}

/// `handshake_first`: `true`/`false` (also as strings, and `"on"`/`"off"`), `"auto"` (fall back
/// to INFO first after 50 ms), or a duration to wait before falling back (zero: never).
fn handshake_first(e: &Entry) -> Result<(bool, Option<Duration>), ConfigError> {
    match &e.item.value {
        Value::Bool(b) => Ok((*b, None)),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "on" => Ok((true, None)),
            "false" | "off" => Ok((false, None)),
            "auto" => Ok((true, Some(DEFAULT_HANDSHAKE_FIRST_FALLBACK))),
            _ => match file::go_duration(s) {
                Ok(d) if !d.is_zero() => Ok((true, Some(d))),
                Ok(_) | Err(file::DurationError::Negative) => Ok((true, None)),
                Err(file::DurationError::Invalid) => Err(fail(
                    e,
                    format!("value {s:?} is invalid (true, false, \"auto\" or a duration)"),
                )),
            },
        },
        _ => Err(expected(e, "true, false, \"auto\" or a duration")),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// Checks that `path` is a readable PEM file holding at least one certificate.
pub fn check_certificates(path: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = read_file(path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|err| format!("{}: bad PEM: {err}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(())
}

/// Checks that `path` is a readable PEM file holding a private key.
pub fn check_private_key(path: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map(drop)
        .map_err(|err| format!("{} holds no usable PEM private key: {err}", path.display()))
}

// ---- operator mode ---------------------------------------------------------------------------

fn operator(e: &Entry, keys: &HashMap<&'static str, &Entry>) -> Result<Operator, ConfigError> {
    let values: Vec<&str> = match &e.item.value {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .iter()
            .map(|item| match &item.value {
                Value::String(s) => Ok(s.as_str()),
                other => Err(ConfigError::at(
                    &item.pos,
                    format!(
                        "{}: expected a JWT or a file path, got {}",
                        e.key,
                        other.describe()
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(expected(
                e,
                "an operator JWT, a path to one, or a list of them",
            ))
        }
    };
    if values.is_empty() {
        return Err(fail(e, "no operator JWT given"));
    }
    let jwts = values
        .into_iter()
        .map(|v| operator_jwt(v).map_err(|msg| fail(e, msg)))
        .collect::<Result<Vec<_>, _>>()?;

    match keys.get("resolver") {
        None => {
            return Err(fail(
                e,
                "operator mode needs `resolver: MEMORY` (the only resolver natter supports)",
            ))
        }
        Some(r) => {
            let memory = matches!(&r.item.value,
                Value::String(s) if matches!(s.trim().to_ascii_lowercase().as_str(), "mem" | "memory"));
            if !memory {
                return Err(fail(
                    r,
                    format!(
                        "only the MEMORY resolver is supported by natter, got {} (accounts \
                         would not load)",
                        r.item.value.describe()
                    ),
                ));
            }
        }
    }

    let mut preload = Vec::new();
    if let Some(p) = keys.get("resolver_preload") {
        let m = map_of(p, "a map of account public keys to account JWTs")?;
        for k in m {
            if !is_public_key(&k.key, 'A') {
                return Err(ConfigError::at(
                    &k.pos,
                    format!("{}: {:?} is not an account public key", p.key, k.key),
                ));
            }
            let jwt = string(k)?.trim();
            if !looks_like_jwt(jwt) {
                return Err(fail(k, "expected an account JWT"));
            }
            preload.push((k.key.clone(), jwt.to_string()));
        }
    }

    if let Some(p) = keys.get("resolver_pinned_accounts") {
        let pinned = strings(p)?;
        if !pinned.is_empty() {
            return Err(fail(
                p,
                "pinned accounts are not supported by natter yet; refusing to start accepting \
                 every account the operator signed",
            ));
        }
    }
    Ok(Operator {
        jwts,
        preload,
        pos: e.pos.clone(),
    })
}

/// Whether `text` has the shape of a JWT: three base64url parts, the header a JSON object.
fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    text.starts_with("eyJ")
        && parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

/// An operator JWT given inline, or read from the file the value names (nsc's armoured
/// `-----BEGIN NATS OPERATOR JWT-----` format, or the bare JWT).
fn operator_jwt(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.starts_with("eyJ") {
        return if looks_like_jwt(value) {
            Ok(value.to_string())
        } else {
            Err("the operator JWT is malformed".into())
        };
    }
    let bytes = read_file(Path::new(value)).map_err(|e| format!("operator JWT file: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    jwt_from_text(&text)
        .map(str::to_string)
        .ok_or_else(|| format!("{value} does not hold an operator JWT"))
}

/// The JWT in a file: the line after a `-----BEGIN ...-----` armour line, or the whole text.
pub fn jwt_from_text(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    let candidate = if text.contains("-----BEGIN") {
        lines
            .by_ref()
            .find(|l| l.starts_with("-----BEGIN"))
            .and_then(|_| lines.find(|l| !l.is_empty()))?
    } else {
        text.trim()
    };
    looks_like_jwt(candidate).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::parse_str;
    use std::sync::OnceLock;

    const FILE: &str = "/etc/natter.conf";
    /// Shaped like a JWT; nothing here verifies signatures.
    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJPIn0.c2lnbmF0dXJl";

    fn load(src: &str) -> Result<(Security, Vec<String>), String> {
        let map = parse_str(src, Path::new(FILE)).map_err(|e| e.to_string())?;
        let mut warnings = Vec::new();
        let sec = parse(&map, &mut warnings).map_err(|e| e.to_string())?;
        Ok((sec, warnings.iter().map(ToString::to_string).collect()))
    }

    fn sec(src: &str) -> Security {
        let (s, w) = load(src).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.is_empty(), "unexpected warnings: {w:?}");
        s
    }

    fn warnings(src: &str) -> Vec<String> {
        load(src).unwrap_or_else(|e| panic!("{e}")).1
    }

    fn err(src: &str) -> String {
        match load(src) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error is at `line:col` of the test file and mentions every piece.
    fn err_at(src: &str, at: &str, pieces: &[&str]) {
        let e = err(src);
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{e}");
        for p in pieces {
            assert!(e.contains(p), "{e:?} lacks {p:?}");
        }
    }

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    struct Files {
        cert: String,
        key: String,
        jwt: String,
        armoured: String,
        dir: PathBuf,
    }

    fn files() -> &'static Files {
        static FILES: OnceLock<Files> = OnceLock::new();
        FILES.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "natter-security-test-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let write = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text).unwrap();
                path.to_str().unwrap().to_string()
            };
            Files {
                cert: write("cert.pem", &ck.cert.pem()),
                key: write("key.pem", &ck.signing_key.serialize_pem()),
                jwt: write("op.jwt", &format!("{JWT}\n")),
                armoured: write(
                    "op-armoured.jwt",
                    &format!(
                        "-----BEGIN NATS OPERATOR JWT-----\n{JWT}\n------END NATS OPERATOR JWT------\n\n\
                         ************************* IMPORTANT *************************\n\
                         NKEY Seed printed below can be used to sign and prove identity.\n"
                    ),
                ),
                dir,
            }
        })
    }

    fn tls_conf(extra: &str) -> String {
        let f = files();
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  {extra}\n}}\n",
            f.cert, f.key
        )
    }

    fn user<'a>(s: &'a Security, name: &str) -> &'a User {
        s.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no user {name}"))
    }

    // ---- authorization -----------------------------------------------------------------------

    #[test]
    fn nothing_configured_is_open() {
        let s = sec("port: 4222\n");
        assert_eq!(s, Security::default());
        assert!(!s.auth_required());
    }

    #[test]
    fn token_plain_and_bcrypt() {
        let s = sec("authorization { token: s3cr3t }");
        assert_eq!(s.token, Some(Secret::Plain("s3cr3t".into())));
        assert!(s.auth_required());
        let h = hash("s3cr3t");
        let s = sec(&format!("authorization {{ token: \"{h}\" }}"));
        assert_eq!(s.token, Some(Secret::Bcrypt(h)));
        err_at(
            "authorization {\n  token: \"\"\n}",
            "2:3",
            &["token: must not be empty"],
        );
    }

    #[test]
    fn malformed_bcrypt_is_an_error() {
        for bad in [
            "$2a$11$bogus",
            "$2b$99$hMzAuMZbhPNRsiRgSkOE9eIcb/ld7/D5jG0mo.j27ZdzWcLIoX8bG",
        ] {
            err_at(
                &format!("authorization {{\n  user: a\n  password: \"{bad}\"\n}}"),
                "3:3",
                &["password: malformed bcrypt hash"],
            );
        }
        err_at(
            "\nauthorization { token: \"$2y$x\" }",
            "2:17",
            &["token: malformed bcrypt"],
        );
        // Other `$` strings are plain passwords.
        let s = sec("authorization { user: a, pass: \"$1$abc\" }");
        assert_eq!(user(&s, "a").password, Some(Secret::Plain("$1$abc".into())));
    }

    #[test]
    fn single_user_forms() {
        let h = hash("pw");
        for src in [
            "authorization { user: alice, password: pw }".to_string(),
            "authorization { username: alice, pass: pw }".to_string(),
            format!("AUTHORIZATION {{ User: alice, Password: \"{h}\" }}"),
        ] {
            let s = sec(&src);
            assert_eq!(s.users.len(), 1, "{src}");
            let u = &s.users[0];
            assert_eq!(
                (u.name.as_str(), u.account.as_str(), u.nkey),
                ("alice", GLOBAL_ACCOUNT, false)
            );
            assert!(matches!(
                u.password,
                Some(Secret::Plain(_)) | Some(Secret::Bcrypt(_))
            ));
            assert_eq!(u.pos.as_ref().map(|p| p.line), Some(1));
        }
        // Permissions next to the single user are its own (nats-server ignores them silently).
        let s = sec("authorization { user: a, pass: b, permissions: { publish: x } }");
        assert_eq!(
            s.users[0]
                .permissions
                .as_ref()
                .unwrap()
                .publish
                .as_ref()
                .unwrap()
                .allow,
            ["x"]
        );
        err_at(
            "authorization { users: [{user: a, pass: b}], permissions: { publish: x } }",
            "1:46",
            &["permissions: permissions here apply to the single `user` only"],
        );
        err_at(
            "authorization {\n password: x }",
            "2:2",
            &["password: a password needs a user"],
        );
        err_at(
            "authorization { user: \"\", pass: x }",
            "1:17",
            &["user: must not be empty"],
        );
    }

    #[test]
    fn token_and_users_do_not_mix() {
        err_at(
            "\nauthorization { token: x, user: a, pass: b }",
            "2:1",
            &["authorization: cannot have a user/password and a token"],
        );
        err_at(
            "authorization { token: x, users: [{user: a, pass: b}] }",
            "1:1",
            &["cannot have a token and a users array"],
        );
        err_at(
            "authorization { user: q, pass: q, users: [{user: a, pass: b}] }",
            "1:1",
            &["cannot have a single user/password and a users array"],
        );
    }

    #[test]
    fn users_list() {
        let kp = nkeys::KeyPair::new_user();
        let h = hash("pw");
        let s = sec(&format!(
            "authorization {{\n  users: [\n    {{ user: alice, password: \"{h}\" }}\n    \
             {{ user: bob, pass: plain, permissions: {{ publish: \"bob.>\" }} }}\n    \
             {{ nkey: {} }}\n    {{ user: \"CN=mapped\" }}\n  ]\n}}",
            kp.public_key()
        ));
        assert_eq!(s.users.len(), 4);
        assert_eq!(user(&s, "alice").password, Some(Secret::Bcrypt(h)));
        assert_eq!(
            user(&s, "bob").password,
            Some(Secret::Plain("plain".into()))
        );
        assert!(user(&s, "bob").permissions.is_some());
        let n = user(&s, &kp.public_key());
        assert!(n.nkey && n.password.is_none());
        assert_eq!(n.pos.as_ref().unwrap().line, 5);
        // No password: only reachable through no_auth_user or a mapped certificate.
        assert_eq!(user(&s, "CN=mapped").password, None);
        assert!(s.users.iter().all(|u| u.account == GLOBAL_ACCOUNT));
        assert!(sec("authorization { users: [] }").users.is_empty());
    }

    #[test]
    fn bad_user_entries() {
        let kp = nkeys::KeyPair::new_user();
        let account = nkeys::KeyPair::new_account();
        err_at(
            "authorization {\n users: [{nkey: UBADKEY}] }",
            "2:11",
            &["nkey: \"UBADKEY\" is not a valid public user nkey"],
        );
        err_at(
            &format!(
                "authorization {{ users: [{{nkey: {}}}] }}",
                account.public_key()
            ),
            "1:26",
            &["nkey:", "is not a valid public user nkey"],
        );
        err_at(
            &format!(
                "authorization {{ users: [{{user: a, nkey: {}}}] }}",
                kp.public_key()
            ),
            "1:35",
            &["nkey: nkey users do not take usernames or passwords"],
        );
        err_at(
            &format!(
                "authorization {{ users: [{{pass: a, nkey: {}}}] }}",
                kp.public_key()
            ),
            "1:35",
            &["nkey users do not take"],
        );
        err_at(
            "authorization { users: [{pass: x}] }",
            "1:25",
            &["users: a user entry needs `user` or `nkey`"],
        );
        err_at(
            "authorization { users: [a] }",
            "1:25",
            &["users: expected a map for each user, got \"a\""],
        );
        err_at(
            "authorization { users: {user: a} }",
            "1:17",
            &["users: expected an array of users"],
        );
        err_at(
            "authorization { users: [{user: a, bogus: 1}] }",
            "1:35",
            &["bogus: unknown field"],
        );
        err_at(
            "authorization { users: [{user: a, account: X}] }",
            "1:35",
            &["account: unknown field"],
        );
        err_at(
            "authorization { bogus: 1 }",
            "1:17",
            &["bogus: unknown field"],
        );
        err_at(
            "authorization: 5",
            "1:1",
            &["authorization: expected a map, got 5"],
        );
        err_at(
            "authorization { users: [{user: 5}] }",
            "1:26",
            &["user: expected a string, got 5"],
        );
    }

    #[test]
    fn connection_types_and_proxies() {
        let s = sec("authorization { users: [{user: a, pass: a, allowed_connection_types: [STANDARD, websocket]}] }");
        assert_eq!(s.users.len(), 1);
        let (s, w) = load(
            "authorization { users: [\n{user: a, pass: a, allowed_connection_types: [WEBSOCKET, MQTT]}\n\
             {user: b, pass: b, proxy_required: true}\n{user: c, pass: c, proxy_required: false}] }",
        )
        .unwrap();
        assert_eq!(
            s.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(w.len(), 2);
        assert!(
            w[0].starts_with(&format!(
                "{FILE}:2: user \"a\" may not use standard client connections"
            )),
            "{w:?}"
        );
        assert!(
            w[1].contains("user \"b\" must connect through a proxy"),
            "{w:?}"
        );
        err_at(
            "authorization { users: [{user: a, pass: a, allowed_connection_types: [BOGUS]}] }",
            "1:44",
            &["allowed_connection_types: invalid connection types [\"BOGUS\"]"],
        );
        err_at(
            "authorization { proxy_required: true }",
            "1:17",
            &["refusing to start"],
        );
        err_at(
            "authorization { auth_callout: { issuer: x } }",
            "1:17",
            &["auth_callout: authorization callouts are not supported"],
        );
    }

    #[test]
    fn authorization_timeout_forms() {
        let t = |v: &str| sec(&format!("authorization {{ token: t, timeout: {v} }}")).auth_timeout;
        assert_eq!(t("3"), Some(Duration::from_secs(3)));
        assert_eq!(t("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(t("\"250ms\""), Some(Duration::from_millis(250)));
        assert_eq!(t("0"), None);
        assert_eq!(t("-1"), None);
        err_at(
            "authorization { timeout: true }",
            "1:17",
            &["timeout: expected seconds"],
        );
        err_at(
            "authorization { timeout: \"2x\" }",
            "1:17",
            &["timeout: expected seconds"],
        );
    }

    // ---- permissions -------------------------------------------------------------------------

    fn perms(body: &str) -> Permissions {
        sec(&format!(
            "authorization {{ users: [{{ user: u, pass: p, permissions: {{ {body} }} }}] }}"
        ))
        .users[0]
            .permissions
            .clone()
            .unwrap()
    }

    fn perm_err(body: &str, pieces: &[&str]) {
        let e = err(&format!(
            "authorization {{ users: [{{ user: u, pass: p, permissions: {{ {body} }} }}] }}"
        ));
        assert!(e.starts_with(&format!("{FILE}:1:")), "{e}");
        for p in pieces {
            assert!(e.contains(p), "{e:?} lacks {p:?}");
        }
    }

    fn allow(list: &[&str]) -> Option<SubjectPermission> {
        Some(SubjectPermission {
            allow: list.iter().map(|s| s.to_string()).collect(),
            deny: vec![],
        })
    }

    #[test]
    fn permission_forms() {
        let p = perms("publish: \"a.>\", subscribe: [\"b.*\", \"c\"]");
        assert_eq!(p.publish, allow(&["a.>"]));
        assert_eq!(p.subscribe, allow(&["b.*", "c"]));
        assert_eq!(p.allow_responses, None);
        let p = perms("pub: a, sub: b");
        assert_eq!((p.publish, p.subscribe), (allow(&["a"]), allow(&["b"])));
        let p = perms("publish: { allow: a, deny: [x, \"y.>\"] }, subscribe: { deny: \"z\" }");
        assert_eq!(
            p.publish,
            Some(SubjectPermission {
                allow: vec!["a".into()],
                deny: vec!["x".into(), "y.>".into()]
            })
        );
        assert_eq!(
            p.subscribe,
            Some(SubjectPermission {
                allow: vec![],
                deny: vec!["z".into()]
            })
        );
        // An empty list is kept as written (it allows everything, as in nats-server).
        assert_eq!(perms("publish: []").publish, allow(&[]));
        // Subscribe permissions may name a queue group.
        assert_eq!(
            perms("subscribe: \"jobs.* workers\"").subscribe,
            allow(&["jobs.* workers"])
        );
        assert_eq!(
            perms("subscribe: { deny: \"foo  q\" }")
                .subscribe
                .unwrap()
                .deny,
            ["foo  q"]
        );
    }

    #[test]
    fn allow_responses_forms() {
        assert_eq!(
            perms("allow_responses: true").allow_responses,
            Some(ResponsePermission::default())
        );
        assert_eq!(perms("allow_responses: false").allow_responses, None);
        assert_eq!(
            perms("allow_responses: { max: 5, expires: \"1m\" }").allow_responses,
            Some(ResponsePermission {
                max: 5,
                expires: Duration::from_secs(60)
            })
        );
        assert_eq!(
            perms("allow_responses: { max: 0, expires: \"-1s\" }").allow_responses,
            Some(ResponsePermission::default())
        );
        assert_eq!(
            perms("allow_responses: {}").allow_responses,
            Some(ResponsePermission::default())
        );
        perm_err(
            "allow_responses: \"yes\"",
            &["allow_responses: expected true, false, or a map"],
        );
        perm_err(
            "allow_responses: { expires: 10 }",
            &["expires: expected a duration"],
        );
        perm_err("allow_responses: { bogus: 1 }", &["bogus: unknown field"]);
    }

    #[test]
    fn bad_permissions() {
        perm_err(
            "publish: \"foo..bar\"",
            &["publish: subject \"foo..bar\" is not a valid subject"],
        );
        perm_err("publish: \"foo.>.bar\"", &["not a valid subject"]);
        perm_err("publish: \"\"", &["subject \"\" is not a valid subject"]);
        perm_err(
            "publish: \"foo bar\"",
            &["\"foo bar\" is not a valid subject"],
        );
        perm_err("subscribe: \"foo bar baz\"", &["not a valid subject"]);
        perm_err("subscribe: \"foo.. q\"", &["not a valid subject"]);
        perm_err(
            "sub: { deny: [\"ok\", \"a..b\"] }",
            &["sub: subject \"a..b\""],
        );
        perm_err(
            "publish: 3",
            &["publish: expected a subject, a list of subjects, or a map"],
        );
        perm_err("publish: [1]", &["publish: expected a string, got 1"]);
        perm_err(
            "publish: { allow: a, bogus: x }",
            &["bogus: unknown field; subject permissions take only allow and deny"],
        );
        perm_err("bogus: x", &["bogus: unknown field; permissions take"]);
        err_at(
            "authorization { default_permissions: 5 }",
            "1:17",
            &["default_permissions: expected a map"],
        );
    }

    #[test]
    fn default_permissions() {
        let s = sec(
            "authorization {\n default_permissions: { publish: \"def.>\" }\n \
             users: [{user: a, pass: a}, {user: b, pass: b, permissions: {publish: x}}]\n}",
        );
        assert_eq!(
            s.default_permissions.as_ref().unwrap().publish,
            allow(&["def.>"])
        );
        // Users without their own fall back to it when checked, so stay `None` here.
        assert_eq!(user(&s, "a").permissions, None);
        assert_eq!(
            user(&s, "b").permissions.as_ref().unwrap().publish,
            allow(&["x"])
        );
        let s = sec("authorization { default_permission: { sub: y } }");
        assert_eq!(s.default_permissions.unwrap().subscribe, allow(&["y"]));
    }

    // ---- accounts ----------------------------------------------------------------------------

    const ACCOUNTS: &str = r#"
accounts {
  A: {
    users: [ { user: a, password: a } ]
    exports: [
      { stream: "events.>" }
      { service: "help.*", accounts: [B], response_type: stream }
      { service: "solo", response: Chunked }
      { stream: "open", accounts: [] }
    ]
  }
  B: {
    users: [ { user: b, password: b } ]
    imports: [
      { stream: { account: A, subject: "events.x.>" }, prefix: from_a }
      { stream: { account: A, subject: "events.y" }, to: "local.y" }
      { service: { account: A, subject: "help.me" }, to: "a.help" }
      { service: { account: A, subject: "solo" } }
    ]
  }
  "$SYS": { users: [ { user: sys, password: sys } ] }
}
"#;

    #[test]
    fn accounts_with_exports_and_imports() {
        let s = sec(ACCOUNTS);
        assert_eq!(
            s.accounts
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["A", "B", "$SYS"]
        );
        assert_eq!(user(&s, "a").account, "A");
        assert_eq!(user(&s, "b").account, "B");
        assert_eq!(user(&s, "sys").account, "$SYS");
        let a = &s.accounts[0];
        assert_eq!(a.pos.line, 3);
        assert_eq!(a.exports.len(), 4);
        assert_eq!(
            a.exports[0],
            Export {
                kind: ExportKind::Stream,
                subject: "events.>".into(),
                accounts: None,
                response_type: ResponseType::Singleton,
                pos: a.exports[0].pos.clone(),
            }
        );
        assert_eq!(a.exports[0].pos.line, 6);
        assert_eq!(a.exports[1].kind, ExportKind::Service);
        assert_eq!(a.exports[1].accounts, Some(vec!["B".to_string()]));
        assert_eq!(a.exports[1].response_type, ResponseType::Stream);
        assert_eq!(a.exports[2].response_type, ResponseType::Chunked);
        assert_eq!(
            a.exports[3].accounts, None,
            "an empty list is every account"
        );
        let b = &s.accounts[1];
        assert_eq!(b.imports.len(), 4);
        let i = &b.imports[0];
        assert_eq!(
            (i.kind, i.account.as_str(), i.subject.as_str()),
            (ExportKind::Stream, "A", "events.x.>")
        );
        assert_eq!(
            (i.prefix.as_deref(), i.to.as_deref()),
            (Some("from_a"), None)
        );
        assert_eq!(i.pos.line, 15);
        assert_eq!(b.imports[1].to.as_deref(), Some("local.y"));
        assert_eq!(b.imports[2].kind, ExportKind::Service);
        assert_eq!(b.imports[2].to.as_deref(), Some("a.help"));
        assert!(s.auth_required());
    }

    #[test]
    fn account_list_form_and_names() {
        let s = sec("accounts [ A, B ]");
        assert_eq!(s.accounts.len(), 2);
        assert_eq!(s.accounts[1].name, "B");
        err_at(
            "accounts {\n  \"$G\": { users: [{user: a, pass: a}] }\n}",
            "2:3",
            &["\"$G\" is a reserved account"],
        );
        err_at("accounts [ A, \"$G\" ]", "1:15", &["reserved account"]);
        err_at(
            "accounts: 5",
            "1:1",
            &["accounts: expected a map of accounts"],
        );
        err_at(
            "accounts { A: 5 }",
            "1:12",
            &["A: expected a map with users, exports and imports"],
        );
        err_at(
            "accounts { A: { bogus: 1 } }",
            "1:17",
            &["bogus: unknown field"],
        );
    }

    #[test]
    fn unsupported_account_keys_warn() {
        let w =
            warnings("accounts {\n A: {\n  mappings: { a: b }\n  limits: { max_conn: 1 }\n } }");
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0],
            format!("{FILE}:3: \"mappings\" is not supported by natter yet, ignored")
        );
    }

    #[test]
    fn account_jetstream_forms() {
        let (s, w) = load(
            "accounts { A: { jetstream: enabled }, B: { jetstream: DISABLE }, C: { jetstream: true }, \
             D: {}, E: { jetstream: { max_mem: 1M } } }",
        )
        .unwrap();
        let on: Vec<(&str, bool)> = s
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a.jetstream))
            .collect();
        assert_eq!(
            on,
            [
                ("A", true),
                ("B", false),
                ("C", true),
                ("D", false),
                ("E", true)
            ]
        );
        assert!(w.is_empty(), "{w:?}");
        let err = load("accounts { A: { jetstream: maybe } }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jetstream"), "{err}");
    }

    #[test]
    fn account_jetstream_limits_and_their_aliases() {
        let limits = |body: &str| {
            let (s, w) = load(&format!("accounts {{ A: {{ jetstream: {{ {body} }} }} }}")).unwrap();
            (s.accounts[0].jetstream_limits, w)
        };
        let (l, w) = limits(
            "mem: 1M, disk: \"2K\", streams: 3, consumers: 4, max_ack_pending: 5, \
             memory_max_stream_bytes: 6, disk_max_stream_bytes: 7, max_bytes_required: true, \
             cluster_traffic: owner",
        );
        assert_eq!(
            l,
            natter_streams::AccountLimits {
                max_memory: 1_000_000,
                max_storage: 2048,
                max_streams: 3,
                max_consumers: 4,
                max_ack_pending: 5,
                memory_max_stream_bytes: 6,
                storage_max_stream_bytes: 7,
                max_bytes_required: true,
            }
        );
        assert_eq!(w.len(), 1, "cluster_traffic has no effect here: {w:?}");
        let (l, _) = limits("max_memory: 1, max_file: 2, max_streams: 3, max_consumers: 4");
        assert_eq!(
            (l.max_memory, l.max_storage, l.max_streams, l.max_consumers),
            (1, 2, 3, 4)
        );
        let (l, _) = limits("memory: 1, max_store: 2, mem_max_stream_bytes: 3");
        assert_eq!(
            (l.max_memory, l.max_storage, l.memory_max_stream_bytes),
            (1, 2, 3)
        );
        let (l, _) = limits("max_mem: 1, store: 2, max_disk: 3, store_max_stream_bytes: 4");
        assert_eq!(
            (l.max_memory, l.max_storage, l.storage_max_stream_bytes),
            (1, 3, 4)
        );
        for (body, what) in [
            ("max_file_store: 1", "unknown field"),
            ("max_bytes_required: 5", "max_bytes_required"),
            ("cluster_traffic: 5", "cluster_traffic"),
            ("max_streams: many", "max_streams"),
        ] {
            let err = load(&format!("accounts {{ A: {{ jetstream: {{ {body} }} }} }}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{body}: {err}");
        }
    }

    #[test]
    fn account_default_permissions() {
        let s = sec(
            "accounts { A: { default_permissions: { publish: \"a.>\" }, \
             users: [{user: a, pass: a}, {user: b, pass: b, permissions: {publish: b}}] }, \
             B: { users: [{user: c, pass: c}] } }",
        );
        assert_eq!(
            user(&s, "a").permissions.as_ref().unwrap().publish,
            allow(&["a.>"])
        );
        assert_eq!(
            user(&s, "b").permissions.as_ref().unwrap().publish,
            allow(&["b"])
        );
        assert_eq!(user(&s, "c").permissions, None);
        // authorization's default_permissions does not reach users in accounts (nats-server
        // 2.15, observed): they get explicit "everything" permissions.
        let s = sec(
            "authorization { default_permissions: { publish: \"x\" }, users: [{user: g, pass: g}] }\n\
             accounts { A: { users: [{user: a, pass: a}] }, B: { default_permissions: { sub: y }, users: [{user: b, pass: b}] } }",
        );
        assert_eq!(user(&s, "g").permissions, None);
        assert_eq!(user(&s, "a").permissions, Some(Permissions::default()));
        assert_eq!(
            user(&s, "b").permissions.as_ref().unwrap().subscribe,
            allow(&["y"])
        );
    }

    #[test]
    fn duplicate_users() {
        err_at(
            "accounts {\n A: { users: [{user: a, pass: a}] }\n B: { users: [{user: a, pass: b}] }\n}",
            "3:16",
            &["users: duplicate user \"a\" (first defined at /etc/natter.conf:2:16)"],
        );
        err_at(
            "authorization { users: [{user: a, pass: b}] }\naccounts { A: { users: [{user: a, pass: a}] } }",
            "2:26",
            &["duplicate user \"a\""],
        );
        err_at(
            "authorization { users: [{user: a, pass: b}, {user: a, pass: c}] }",
            "1:46",
            &["duplicate user"],
        );
    }

    #[test]
    fn token_or_single_user_with_account_users() {
        err_at(
            "authorization { token: x }\naccounts { A: { users: [{user: a, pass: a}] } }",
            "2:1",
            &["accounts: cannot have an authorization token and users in accounts"],
        );
        err_at(
            "authorization { user: q, pass: q }\naccounts { A: { users: [{user: a, pass: a}] } }",
            "2:1",
            &["cannot have a single authorization user/password and users in accounts"],
        );
        let s = sec("authorization { token: x }\naccounts { A: {} }");
        assert!(s.token.is_some() && s.accounts.len() == 1);
    }

    fn import_err(exports: &str, import: &str, pieces: &[&str]) {
        err_at(
            &format!("accounts {{\n  A: {{ exports: [{exports}] }}\n  B: {{ imports: [\n    {import}\n  ] }}\n  C: {{}}\n}}"),
            "4:5",
            pieces,
        );
    }

    #[test]
    fn imports_must_be_exported() {
        import_err(
            "{stream: \"s.>\"}",
            "{stream: {account: Z, subject: \"s.x\"}}",
            &["imports: account \"Z\" is not defined (stream import of \"s.x\")"],
        );
        import_err(
            "{service: \"s.>\"}",
            "{stream: {account: A, subject: \"s.x\"}}",
            &["imports: stream import of \"s.x\" from account \"A\" is not authorized: it has no stream export covering \"s.x\""],
        );
        import_err(
            "{stream: \"s.x\"}",
            "{stream: {account: A, subject: \"s.>\"}}",
            &["not authorized: it has no stream export covering \"s.>\""],
        );
        import_err(
            "{stream: \"s.>\", accounts: [C]}",
            "{stream: {account: A, subject: \"s.x\"}}",
            &["not authorized: its stream export of \"s.>\" does not include account \"B\""],
        );
        import_err(
            "{stream: \"s.a\"}, {stream: \"s.b\"}",
            "{stream: {account: A, subject: \"s.*\"}}",
            &["not authorized"],
        );
        // One export open to B is enough even if another covering one is not.
        sec(
            "accounts { A: { exports: [{stream: \"x.>\", accounts: [C]}, {stream: \"x.y\"}] }, \
             B: { imports: [{stream: {account: A, subject: \"x.y\"}}] }, C: {} }",
        );
        // An account may import its own exports.
        sec("accounts { A: { exports: [{stream: \"s.>\"}], imports: [{stream: {account: A, subject: \"s.x\"}}] } }");
    }

    #[test]
    fn bad_exports_and_imports() {
        err_at(
            "accounts { A: { exports: [{stream: x, accounts: [Z]}] } }",
            "1:27",
            &["exports: account \"Z\" is not defined (stream export of \"x\")"],
        );
        err_at(
            "accounts { A: { exports: [{stream: \"s\", service: \"x\"}] } }",
            "1:41",
            &["service: already saw a stream"],
        );
        err_at(
            "accounts { A: { exports: [{stream: x, response_type: stream}] } }",
            "1:39",
            &["response_type: a response type applies to service exports only"],
        );
        err_at(
            "accounts { A: { exports: [{service: x, response_type: bogus}] } }",
            "1:40",
            &["unknown response type \"bogus\""],
        );
        err_at(
            "accounts { A: { exports: [{accounts: [A]}] } }",
            "1:27",
            &["exports: an export needs `stream` or `service`"],
        );
        err_at(
            "accounts { A: { exports: [{stream: \"x..y\"}] } }",
            "1:28",
            &["stream: subject \"x..y\" is not a valid subject"],
        );
        err_at(
            "accounts { A: { exports: [{service: x, bogus: 1}] } }",
            "1:40",
            &["bogus: unknown field"],
        );
        err_at(
            "accounts { A: { exports: \"x\" } }",
            "1:17",
            &["exports: expected an array of exports"],
        );
        err_at(
            "accounts { A: { exports: [\"x\"] } }",
            "1:27",
            &["exports: expected a map with stream or service, got \"x\""],
        );
        err_at(
            "accounts { A: { exports: [{service: \"x.*\", account_token_position: 2}] } }",
            "1:44",
            &["account_token_position: token-protected exports are not supported"],
        );
        err_at(
            "accounts { A: { imports: [{service: {account: A}}] } }",
            "1:28",
            &["service: expected an account name and a subject"],
        );
        err_at(
            "accounts { A: { imports: [{service: {subject: x}}] } }",
            "1:28",
            &["expected an account name and a subject"],
        );
        err_at(
            "accounts { A: { imports: [{stream: {account: A, subject: x, bogus: 1}}] } }",
            "1:61",
            &["bogus: unknown field"],
        );
        err_at(
            "accounts { A: { imports: [{stream: {account: A, subject: \"x..\"}}] } }",
            "1:49",
            &["subject: subject \"x..\" is not a valid subject"],
        );
        err_at(
            "accounts { A: { imports: [{to: y}] } }",
            "1:27",
            &["imports: an import needs `stream` or `service`"],
        );
        err_at(
            "accounts { A: { imports: [{stream: x}] } }",
            "1:28",
            &["stream: expected a map with account and subject"],
        );
        err_at(
            "accounts { A: { exports: [{stream: x}], imports: [{stream: {account: A, subject: x}, prefix: \"p.>\"}] } }",
            "1:86",
            &["prefix: \"p.>\" is not a valid prefix"],
        );
        err_at(
            "accounts { A: { exports: [{stream: x}], imports: [{stream: {account: A, subject: x}, to: \"t..x\"}] } }",
            "1:86",
            &["to: subject \"t..x\" is not a valid subject"],
        );
    }

    #[test]
    fn ignored_export_and_import_keys_warn() {
        let (s, w) = load(
            "accounts { A: { exports: [{service: x, latency: {sampling: 100, subject: lat}}, {stream: s}] }, \
             B: { imports: [{service: {account: A, subject: x}, prefix: p, share: true}] } }",
        )
        .unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("\"latency\" is not supported by natter yet, ignored"));
        assert!(w
            .iter()
            .any(|w| w.contains("prefix applies to stream imports only")));
        assert_eq!(s.accounts[1].imports[0].prefix, None);
    }

    #[test]
    fn subset() {
        for (sub, sup) in [
            ("a", "a"),
            ("a.b", "a.*"),
            ("a.*", "a.*"),
            ("a.b.c", "a.>"),
            ("a.*.c", "a.>"),
            ("a.>", "a.>"),
            ("a.>", ">"),
            ("a.b", "*.b"),
        ] {
            assert!(subject_is_subset(sub, sup), "{sub} in {sup}");
        }
        for (sub, sup) in [
            ("a", "b"),
            ("a.*", "a.b"),
            ("a.>", "a.*"),
            ("a", "a.>"),
            ("a.b.c", "a.*"),
            ("a.b", "a.b.c"),
            (">", "a.>"),
            ("a.>", "a.b"),
        ] {
            assert!(!subject_is_subset(sub, sup), "{sub} not in {sup}");
        }
    }

    // ---- no_auth_user and system_account -----------------------------------------------------

    #[test]
    fn no_auth_user() {
        let s = sec("accounts { A: { users: [{user: a, pass: a}] } }\nno_auth_user: a");
        assert_eq!(s.no_auth_user.as_deref(), Some("a"));
        let kp = nkeys::KeyPair::new_user();
        let s = sec(&format!(
            "authorization {{ users: [{{nkey: {0}}}] }}\nno_auth_user: {0}",
            kp.public_key()
        ));
        assert_eq!(s.no_auth_user, Some(kp.public_key()));
        err_at(
            "accounts { A: { users: [{user: a, pass: a}] } }\nno_auth_user: z",
            "2:1",
            &["no_auth_user: \"z\" is not a configured user or nkey"],
        );
        err_at("no_auth_user: z", "1:1", &["not a configured user"]);
        err_at(
            "no_auth_user: 5",
            "1:1",
            &["no_auth_user: expected a string, got 5"],
        );
        assert_eq!(sec("no_auth_user: \"\"").no_auth_user, None);
    }

    #[test]
    fn system_account() {
        assert_eq!(
            sec("system_account: \"$SYS\"").system_account.as_deref(),
            Some("$SYS")
        );
        let s = sec("accounts { SYS: {} }\nsystem: SYS");
        assert_eq!(s.system_account.as_deref(), Some("SYS"));
        err_at(
            "\nsystem_account: Z",
            "2:1",
            &["system_account: account \"Z\" is not defined"],
        );
        err_at("system_account: 5", "1:1", &["expected a string"]);
    }

    // ---- tls ---------------------------------------------------------------------------------

    #[test]
    fn tls_block() {
        let f = files();
        let s = sec(&tls_conf(&format!(
            "ca_file: \"{}\"\n verify: true",
            f.cert
        )));
        let t = s.tls.unwrap();
        assert_eq!(t.cert_file, PathBuf::from(&f.cert));
        assert_eq!(t.key_file, PathBuf::from(&f.key));
        assert_eq!(t.ca_file, Some(PathBuf::from(&f.cert)));
        assert!(t.verify && !t.verify_and_map && !t.handshake_first);
        assert_eq!(t.timeout, DEFAULT_TLS_TIMEOUT);
        assert_eq!(t.timeout, Duration::from_secs(2));
        assert_eq!(t.pos.unwrap().line, 1);
        // TLS alone does not ask clients to authenticate.
        assert!(!sec(&tls_conf("")).auth_required());
        let t = sec(&tls_conf("verify_and_map: true")).tls.unwrap();
        assert!(t.verify && t.verify_and_map, "mapping implies verifying");
    }

    #[test]
    fn tls_timeouts() {
        let t = |v: &str| {
            sec(&tls_conf(&format!("timeout: {v}")))
                .tls
                .unwrap()
                .timeout
        };
        assert_eq!(t("5"), Duration::from_secs(5));
        assert_eq!(t("0.5"), Duration::from_millis(500));
        assert_eq!(t("\"700ms\""), Duration::from_millis(700));
        assert_eq!(t("0"), DEFAULT_TLS_TIMEOUT);
        assert_eq!(t("\"-1s\""), DEFAULT_TLS_TIMEOUT);
        assert!(err(&tls_conf("timeout: true")).contains(":4:3: timeout: expected seconds"));
        assert!(err(&tls_conf("timeout: \"bogus\"")).contains("timeout: expected seconds"));
    }

    #[test]
    fn handshake_first_forms() {
        let t = |v: &str| {
            let t = sec(&tls_conf(&format!("handshake_first: {v}")))
                .tls
                .unwrap();
            (t.handshake_first, t.handshake_first_fallback)
        };
        assert_eq!(t("true"), (true, None));
        assert_eq!(t("false"), (false, None));
        assert_eq!(t("\"on\""), (true, None));
        assert_eq!(t("\"False\""), (false, None));
        assert_eq!(t("\"auto\""), (true, Some(Duration::from_millis(50))));
        assert_eq!(t("\"AUTO\""), (true, Some(Duration::from_millis(50))));
        assert_eq!(t("\"300ms\""), (true, Some(Duration::from_millis(300))));
        assert_eq!(t("\"0s\""), (true, None));
        assert_eq!(t("\"-1s\""), (true, None));
        let f = files();
        let s = sec(&format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", first: true }}",
            f.cert, f.key
        ));
        assert!(s.tls.unwrap().handshake_first);
        assert!(err(&tls_conf("handshake_first: \"yes\""))
            .contains("handshake_first: value \"yes\" is invalid"));
        assert!(
            err(&tls_conf("handshake_first: 5")).contains("handshake_first: expected true, false")
        );
    }

    #[test]
    fn tls_needs_readable_certificate_and_key() {
        let f = files();
        err_at(
            "tls {}",
            "1:1",
            &["tls: missing 'cert_file' in TLS configuration"],
        );
        err_at(
            &format!("tls {{ cert_file: \"{}\" }}", f.cert),
            "1:1",
            &["missing 'key_file'"],
        );
        err_at(
            &format!("tls {{ key_file: \"{}\" }}", f.key),
            "1:1",
            &["missing 'cert_file'"],
        );
        err_at(
            &format!(
                "tls {{\n  cert_file: /nonexistent/cert.pem\n  key_file: \"{}\"\n}}",
                f.key
            ),
            "2:3",
            &["cert_file: cannot read /nonexistent/cert.pem: "],
        );
        err_at(
            &format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: /nonexistent/key.pem\n}}",
                f.cert
            ),
            "3:3",
            &["key_file: cannot read /nonexistent/key.pem"],
        );
        err_at(
            &format!("tls {{\n cert_file: \"{0}\"\n key_file: \"{0}\" }}", f.cert),
            "3:2",
            &["key_file:", "holds no usable PEM private key"],
        );
        err_at(
            &format!("tls {{ cert_file: \"{0}\", key_file: \"{0}\" }}", f.key),
            "1:7",
            &["cert_file:", "holds no PEM certificate"],
        );
        let e = err(&tls_conf("ca_file: /nonexistent/ca.pem"));
        assert!(
            e.contains(":4:3: ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        err_at("tls: 5", "1:1", &["tls: expected a map"]);
    }

    #[test]
    fn tls_keys_natter_cannot_honour() {
        for (extra, piece) in [
            (
                "pinned_certs: [\"abc\"]",
                "pinned_certs: pinned certificates are not supported",
            ),
            (
                "ocsp_peer: true",
                "ocsp_peer: OCSP peer checks are not supported",
            ),
            (
                "min_version: \"1.3\"",
                "min_version: natter cannot require TLS 1.3",
            ),
            ("min_version: \"2.0\"", "min_version: unknown TLS version"),
            (
                "cert_store: WindowsCurrentUser",
                "cert_store: certificate stores are not supported",
            ),
            (
                "certs: [{cert_file: a, key_file: b}]",
                "certs: several certificates",
            ),
            (
                "verify_cert_and_check_known_urls: true",
                "not supported for client connections",
            ),
            ("bogus: 1", "bogus: unknown field"),
            ("verify: \"yes\"", "verify: expected true or false"),
        ] {
            let e = err(&tls_conf(extra));
            assert!(e.contains(":4:3: ") && e.contains(piece), "{extra}: {e}");
        }
        let w = warnings(&tls_conf(
            "cipher_suites: [TLS_AES_128_GCM_SHA256]\n curve_preferences: [X25519]\n ocsp_peer: false\n min_version: \"1.2\"\n certs: []",
        ));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].ends_with(":4: \"cipher_suites\" is not supported by natter yet, ignored"),
            "{w:?}"
        );
    }

    // ---- operator mode -----------------------------------------------------------------------

    #[test]
    fn operator_forms() {
        let f = files();
        let account = nkeys::KeyPair::new_account();
        let s = sec(&format!(
            "operator: \"{JWT}\"\nresolver: MEMORY\nresolver_preload {{\n  {}: \"{JWT}\"\n}}\nsystem_account: {}",
            account.public_key(),
            account.public_key()
        ));
        let op = s.operator.as_ref().unwrap();
        assert_eq!(op.jwts, [JWT]);
        assert_eq!(op.preload, [(account.public_key(), JWT.to_string())]);
        assert_eq!(op.pos.line, 1);
        assert_eq!(s.system_account, Some(account.public_key()));
        assert!(s.auth_required());
        for key in ["operators", "root_operators", "root_operator", "Operator"] {
            let s = sec(&format!("{key}: \"{}\"\nresolver: memory", f.jwt));
            assert_eq!(s.operator.unwrap().jwts, [JWT], "{key}");
        }
        let s = sec(&format!(
            "operator: [\"{}\", \"{JWT}\"]\naccount_resolver: MEM",
            f.armoured
        ));
        assert_eq!(s.operator.unwrap().jwts, [JWT, JWT]);
    }

    #[test]
    fn operator_errors() {
        let f = files();
        let account = nkeys::KeyPair::new_account();
        let op = format!("operator: \"{}\"\n", f.jwt);
        err_at(
            &op,
            "1:1",
            &["operator: operator mode needs `resolver: MEMORY`"],
        );
        for resolver in [
            "URL(\"http://localhost:9090/jwt/v1/accounts/\")",
            "{ type: full, dir: \"./jwt\" }",
            "{ type: cache, dir: \"./jwt\" }",
            "bogus",
        ] {
            err_at(
                &format!("{op}resolver: {resolver}"),
                "2:1",
                &["resolver: only the MEMORY resolver is supported by natter"],
            );
        }
        let mem = format!("{op}resolver: MEMORY\n");
        err_at(
            &format!("{mem}resolver_preload {{ ABC: \"{JWT}\" }}"),
            "3:20",
            &["resolver_preload: \"ABC\" is not an account public key"],
        );
        err_at(
            &format!(
                "{mem}resolver_preload {{ {}: \"xyz\" }}",
                account.public_key()
            ),
            "3:20",
            &["expected an account JWT"],
        );
        err_at(
            &format!("{mem}resolver_preload: x"),
            "3:1",
            &["resolver_preload: expected a map"],
        );
        err_at(
            &format!("{mem}authorization {{ users: [{{user: a, pass: a}}] }}"),
            "3:1",
            &["operator mode does not allow users"],
        );
        err_at(
            &format!("{mem}accounts {{ A: {{}} }}"),
            "3:1",
            &["operator mode does not allow accounts"],
        );
        err_at(
            &format!("{mem}no_auth_user: x"),
            "3:1",
            &["no_auth_user is not compatible with operator mode"],
        );
        err_at(
            &format!("{mem}system_account: SYS"),
            "3:1",
            &["\"SYS\" is not an account public key"],
        );
        err_at(
            &format!("{mem}system_account: {}", account.public_key()),
            "3:1",
            &["system_account: account A", "is not in resolver_preload"],
        );
        err_at(
            &format!("{mem}resolver_pinned_accounts: [{}]", account.public_key()),
            "3:1",
            &["pinned accounts are not supported"],
        );
        err_at(
            "operator: /nonexistent/op.jwt\nresolver: MEMORY",
            "1:1",
            &["operator: operator JWT file: cannot read /nonexistent/op.jwt"],
        );
        err_at(
            "operator: \"eyJbogus\"\nresolver: MEMORY",
            "1:1",
            &["the operator JWT is malformed"],
        );
        err_at(
            &format!("operator: \"{}\"\nresolver: MEMORY", f.cert),
            "1:1",
            &["does not hold an operator JWT"],
        );
        err_at(
            "operator: 5",
            "1:1",
            &["operator: expected an operator JWT"],
        );
        err_at(
            "operator: []\nresolver: MEMORY",
            "1:1",
            &["no operator JWT given"],
        );
        let w = warnings(&format!("{mem}authorization {{ token: x }}"));
        assert!(w[0].contains("token is ignored in operator mode"), "{w:?}");
    }

    #[test]
    fn resolver_without_operator_is_ignored() {
        let (s, w) = load("resolver: MEMORY\nresolver_preload {}\n").unwrap();
        assert_eq!(s, Security::default());
        assert_eq!(
            w,
            [
                format!("{FILE}:1: resolver is ignored without `operator`"),
                format!("{FILE}:2: resolver_preload is ignored without `operator`"),
            ]
        );
    }

    #[test]
    fn trusted_keys_refuse_to_start() {
        let op = nkeys::KeyPair::new_operator();
        err_at(
            &format!("trusted: {}", op.public_key()),
            "1:1",
            &[
                "trusted: trusted operator keys are not supported",
                "refusing to start",
            ],
        );
        err_at(
            &format!("trusted_keys: [{}]", op.public_key()),
            "1:1",
            &["trusted_keys:"],
        );
        err_at(
            "trusted_operators: []",
            "1:1",
            &["did you mean `operator`?"],
        );
    }

    #[test]
    fn jwt_files() {
        assert_eq!(jwt_from_text(&format!("{JWT}\n")), Some(JWT));
        assert_eq!(
            jwt_from_text(&format!(
                "-----BEGIN NATS OPERATOR JWT-----\n{JWT}\n------END NATS OPERATOR JWT------\n"
            )),
            Some(JWT)
        );
        assert_eq!(jwt_from_text("nothing here"), None);
        assert_eq!(jwt_from_text(""), None);
        assert!(files().dir.exists());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_security_values_never_panic(
            key in proptest::sample::select(vec![
                "authorization", "accounts", "tls", "no_auth_user", "system_account",
                "resolver_preload", "operator",
            ]),
            value in "(\\{ *(users|token|timeout|A|exports|imports|cert_file|publish|permissions|default_permissions): *(\\[\\{user: a, pass: b\\}\\]|\\{\\}|1\\.5|-3|\"[a-z.>* ]{0,6}\"|\\[\\]|\\{stream: x\\}) *\\}|[a-z]{1,5}|-?[0-9]{1,4}|\\[[a-z]?\\])",
        ) {
            let _ = load(&format!("{key}: {value}\n"));
        }
    }
}
