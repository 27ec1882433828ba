//! The JetStream audit trail: every successful stream or consumer create, update, delete and
//! purge is logged as a structured event (`audit` field; with `--log_format json`, one JSON
//! object per action) and published as the advisories nats-server publishes, so tools that
//! watch `$JS.EVENT.ADVISORY.>` see natter's actions too:
//!
//! * `$JS.EVENT.ADVISORY.STREAM.{CREATED,UPDATED,DELETED}.<stream>`
//!   (`io.nats.jetstream.advisory.v1.stream_action`);
//! * `$JS.EVENT.ADVISORY.CONSUMER.{CREATED,DELETED}.<stream>.<consumer>`
//!   (`io.nats.jetstream.advisory.v1.consumer_action`);
//! * `$JS.EVENT.ADVISORY.API` for every API request with its response
//!   (`io.nats.jetstream.advisory.v1.api_audit`).
//!
//! Advisories are built only when someone subscribes to them.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use tracing::info;

use crate::account::Account;
use crate::monitor::format::rfc3339;
use crate::server::ServerState;

/// Records one completed API request: `subject` with `request`, answered by `response`
/// (JSON; `None` for a non-JSON answer such as DIRECT.GET).
pub fn api_done(
    server: &ServerState,
    account: &Arc<Account>,
    subject: &str,
    request: &[u8],
    response: Option<&[u8]>,
) {
    let api = subject.strip_prefix("$JS.API.").unwrap_or(subject);
    let parsed: Option<Value> = response.and_then(|r| serde_json::from_slice(r).ok());
    crate::client::publish_internal(server, account, b"$JS.EVENT.ADVISORY.API", || {
        event(
            "api_audit",
            json!({
                "server": server.name,
                "subject": subject,
                "account": account.name,
                "request": String::from_utf8_lossy(request),
                "response": response.map(String::from_utf8_lossy).unwrap_or_default(),
            }),
        )
    });
    let Some(reply) = parsed.filter(|r| r.get("error").is_none()) else {
        return;
    };
    let tokens: Vec<&str> = api.split('.').collect();
    let (kind, action, stream, consumer) = match tokens.as_slice() {
        ["STREAM", "CREATE", s] => ("stream", "create", *s, None),
        ["STREAM", "UPDATE", s] => ("stream", "modify", *s, None),
        ["STREAM", "DELETE", s] => ("stream", "delete", *s, None),
        ["STREAM", "PURGE", s] => ("stream", "purge", *s, None),
        ["CONSUMER", "CREATE", s, ..] | ["CONSUMER", "DURABLE", "CREATE", s, ..] => {
            ("consumer", "create", *s, reply["name"].as_str())
        }
        ["CONSUMER", "DELETE", s, c] => ("consumer", "delete", *s, Some(*c)),
        _ => return,
    };
    let audit = format!("{kind}.{action}");
    match consumer {
        Some(c) => info!(
            audit,
            account = %account.name,
            stream,
            consumer = c,
            "JetStream {kind} {action}: {stream} > {c}"
        ),
        None => {
            info!(audit, account = %account.name, stream, "JetStream {kind} {action}: {stream}")
        }
    }
    let (subject, body) = match (kind, action, consumer) {
        ("stream", "purge", _) => return,
        ("stream", _, _) => {
            let verb = match action {
                "create" => "CREATED",
                "modify" => "UPDATED",
                _ => "DELETED",
            };
            (
                format!("$JS.EVENT.ADVISORY.STREAM.{verb}.{stream}"),
                json!({"stream": stream, "action": action, "template": ""}),
            )
        }
        (_, _, Some(c)) => {
            let verb = if action == "create" {
                "CREATED"
            } else {
                "DELETED"
            };
            (
                format!("$JS.EVENT.ADVISORY.CONSUMER.{verb}.{stream}.{c}"),
                json!({"stream": stream, "consumer": c, "action": action}),
            )
        }
        _ => return,
    };
    let ty = if kind == "stream" {
        "stream_action"
    } else {
        "consumer_action"
    };
    crate::client::publish_internal(server, account, subject.as_bytes(), || event(ty, body));
}

/// An advisory: `type`, `id`, `timestamp`, then `fields`.
fn event(ty: &str, fields: Value) -> Vec<u8> {
    let mut e = json!({
        "type": format!("io.nats.jetstream.advisory.v1.{ty}"),
        "id": crate::account::random_token(22),
        "timestamp": rfc3339(SystemTime::now()),
    });
    if let (Some(e), Value::Object(fields)) = (e.as_object_mut(), fields) {
        e.extend(fields);
    }
    serde_json::to_vec(&e).expect("advisory serializes")
}
