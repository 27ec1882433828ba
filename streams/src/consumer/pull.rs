//! Pull requests (`CONSUMER.MSG.NEXT` bodies) and the status messages sent to their inboxes.

use std::time::Duration;

use serde::Deserialize;

/// A parsed pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullRequest {
    pub batch: u64,
    pub expires: Option<Duration>,
    /// A negative `expires`: already timed out (nats-server answers 408 at once).
    pub expired: bool,
    pub no_wait: bool,
    /// 0: no byte limit.
    pub max_bytes: u64,
    pub idle_heartbeat: Option<Duration>,
}

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    batch: i64,
    #[serde(default)]
    expires: i64,
    #[serde(default)]
    no_wait: bool,
    #[serde(default)]
    max_bytes: i64,
    #[serde(default)]
    idle_heartbeat: i64,
}

fn pos(ns: i64) -> Option<Duration> {
    (ns > 0).then(|| Duration::from_nanos(ns as u64))
}

impl PullRequest {
    /// Parses a body: empty (one message), a number (the batch) or JSON. Like nats-server, a
    /// body it cannot make sense of asks for one message.
    pub fn parse(payload: &[u8]) -> PullRequest {
        let text = std::str::from_utf8(payload).unwrap_or("").trim();
        let body = if let Ok(n) = text.parse::<i64>() {
            Body {
                batch: n,
                ..Body::default()
            }
        } else if text.starts_with('{') {
            crate::util::from_json::<Body>(text.as_bytes()).unwrap_or_default()
        } else {
            Body::default()
        };
        PullRequest {
            batch: body.batch.max(1) as u64,
            expires: pos(body.expires),
            expired: body.expires < 0,
            no_wait: body.no_wait,
            max_bytes: body.max_bytes.max(0) as u64,
            idle_heartbeat: pos(body.idle_heartbeat),
        }
    }
}

/// A header-only status block: `NATS/1.0 <status>` plus headers.
pub(crate) fn status(line: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut s = format!("NATS/1.0 {line}\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// `408 Request Timeout` / `409 Message Size Exceeds MaxBytes` carry what the request had left.
pub(crate) fn with_pending(line: &str, msgs: u64, bytes: u64) -> Vec<u8> {
    status(
        line,
        &[
            ("Nats-Pending-Messages", msgs.to_string()),
            ("Nats-Pending-Bytes", bytes.to_string()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let one = PullRequest::parse(b"");
        assert_eq!((one.batch, one.expires, one.no_wait), (1, None, false));
        assert_eq!(PullRequest::parse(b"5").batch, 5);
        assert_eq!(PullRequest::parse(b"junk").batch, 1);
        assert_eq!(PullRequest::parse(br#"{"batch":-1}"#).batch, 1);
        let r = PullRequest::parse(
            br#"{"batch":3,"expires":500000000,"no_wait":true,"max_bytes":60,"idle_heartbeat":null}"#,
        );
        assert_eq!(r.batch, 3);
        assert_eq!(r.expires, Some(Duration::from_millis(500)));
        assert!(r.no_wait);
        assert_eq!(r.max_bytes, 60);
        assert_eq!(r.idle_heartbeat, None);
        assert_eq!(
            with_pending("408 Request Timeout", 3, 0),
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"
        );
    }
}
