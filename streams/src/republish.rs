//! Republishing (`republish` in a stream's config): a stored message whose subject matches
//! `src` is published again to `dest`, mapped token by token, with headers saying where it is
//! stored.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// One token of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// The n-th (0-based) `*` of the source: `$1` or `{{wildcard(1)}}` is the first.
    Wildcard(usize),
    /// What the source's trailing `>` matched.
    Rest,
}

/// Why a source and destination do not make a transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// Not a valid mapping (nats-server refuses it too).
    Invalid,
    /// A mapping function nats-server has and natter does not (`partition`, `split`, ...).
    Unsupported(String),
}

/// A source filter and the destination its matches map to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    src: Vec<String>,
    dest: Vec<Token>,
}

impl Transform {
    /// Checks the mapping as nats-server does: the source a valid filter; the destination's
    /// wildcards `$N` or `{{wildcard(N)}}` naming one of the source's `*`, and `>` there
    /// exactly when the source ends in one (a bare `*` in the destination is not valid).
    pub fn new(src: &str, dest: &str) -> Result<Transform, TransformError> {
        if !crate::util::valid_filter(src) {
            return Err(TransformError::Invalid);
        }
        let src: Vec<String> = src.split('.').map(String::from).collect();
        let stars = src.iter().filter(|t| *t == "*").count();
        let src_rest = src.last().is_some_and(|t| t == ">");
        let parts: Vec<&str> = dest.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "" | "*" => return Err(TransformError::Invalid),
                ">" if i + 1 == parts.len() && src_rest => Token::Rest,
                ">" => return Err(TransformError::Invalid),
                p => match wildcard_ref(p)? {
                    Some(n) if (1..=stars).contains(&n) => Token::Wildcard(n - 1),
                    Some(_) => return Err(TransformError::Invalid),
                    None => Token::Literal(p.to_string()),
                },
            };
            tokens.push(token);
        }
        if src_rest && tokens.last() != Some(&Token::Rest) {
            return Err(TransformError::Invalid);
        }
        Ok(Transform { src, dest: tokens })
    }

    /// Where `subject` is republished; `None` if it does not match the source.
    pub fn apply(&self, subject: &str) -> Option<String> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut stars = Vec::new();
        let mut rest = None;
        for (i, s) in self.src.iter().enumerate() {
            match s.as_str() {
                ">" => {
                    if i >= tokens.len() {
                        return None;
                    }
                    rest = Some(tokens[i..].join("."));
                    break;
                }
                "*" => stars.push(*tokens.get(i)?),
                lit => {
                    if tokens.get(i) != Some(&lit) {
                        return None;
                    }
                }
            }
        }
        if rest.is_none() && tokens.len() != self.src.len() {
            return None;
        }
        let mut out = String::with_capacity(subject.len() + 16);
        for (i, t) in self.dest.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match t {
                Token::Literal(l) => out.push_str(l),
                Token::Wildcard(n) => out.push_str(stars[*n]),
                Token::Rest => out.push_str(rest.as_deref().unwrap_or_default()),
            }
        }
        Some(out)
    }
}

/// `$N` or `{{wildcard(N)}}` (spaces allowed inside the braces) as `Some(N)`; other `{{...}}`
/// functions are unsupported; anything else is a literal (`None`).
fn wildcard_ref(token: &str) -> Result<Option<usize>, TransformError> {
    // A `$` not followed by a number is a literal (`$KV`), as in nats-server.
    if let Some(n) = token.strip_prefix('$') {
        return Ok(n.parse().ok());
    }
    let Some(inner) = token.strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) else {
        return Ok(None);
    };
    let inner = inner.trim();
    let (name, args) = inner
        .split_once('(')
        .and_then(|(n, a)| Some((n.trim(), a.strip_suffix(')')?)))
        .ok_or(TransformError::Invalid)?;
    if !name.eq_ignore_ascii_case("wildcard") {
        return Err(TransformError::Unsupported(name.to_string()));
    }
    args.trim()
        .parse()
        .map(Some)
        .map_err(|_| TransformError::Invalid)
}

/// The headers of a republished message: the original ones, then where it is stored;
/// `Nats-Msg-Size` instead of the payload with `headers_only`.
pub(crate) fn headers(
    original: &[u8],
    stream: &str,
    subject: &str,
    seq: u64,
    timestamp: i64,
    last_seq: u64,
    size_only: Option<usize>,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(original.len() + 160);
    match original.strip_suffix(b"\r\n\r\n") {
        Some(block) if !block.is_empty() => {
            h.extend_from_slice(block);
            h.extend_from_slice(b"\r\n");
        }
        _ => h.extend_from_slice(b"NATS/1.0\r\n"),
    }
    let ts = crate::util::rfc3339(timestamp);
    let mut line = |k: &str, v: &str| {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    };
    line("Nats-Stream", stream);
    line("Nats-Subject", subject);
    line("Nats-Sequence", &seq.to_string());
    line("Nats-Time-Stamp", &ts);
    line("Nats-Last-Sequence", &last_seq.to_string());
    if let Some(n) = size_only {
        line("Nats-Msg-Size", &n.to_string());
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// A message to publish again, once the stored one is durable.
pub(crate) struct Republished {
    pub(crate) dest: String,
    pub(crate) headers: Vec<u8>,
    pub(crate) payload: Bytes,
}

/// A stream's republishes waiting for their messages to be durable: sent in sequence order
/// (appends complete on whichever task polls them, in any order), by one sender at a time,
/// never while locked. So a chain of streams republishing into each other is a queue, not
/// a recursion.
#[derive(Default)]
pub(crate) struct Outgoing {
    q: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// By sequence: the message, and whether its append succeeded once known.
    waiting: VecDeque<(u64, Republished, Option<bool>)>,
    sending: bool,
}

impl Outgoing {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the republish of `seq` (called in sequence order, with the stream locked).
    pub(crate) fn push(&self, seq: u64, msg: Republished) {
        self.lock().waiting.push_back((seq, msg, None));
    }

    /// The append of `seq` completed (`ok` or not): sends, in order, every republish whose
    /// message and all before it are settled, unless another caller is sending already (it
    /// then sends this one too).
    pub(crate) fn settle(&self, seq: u64, ok: bool, mut send: impl FnMut(&Republished)) {
        let mut q = self.lock();
        if let Ok(i) = q.waiting.binary_search_by_key(&seq, |e| e.0) {
            q.waiting[i].2 = Some(ok);
        }
        if q.sending {
            return;
        }
        q.sending = true;
        loop {
            let mut ready = Vec::new();
            while let Some((_, _, Some(_))) = q.waiting.front() {
                if let Some((_, msg, Some(true))) = q.waiting.pop_front() {
                    ready.push(msg);
                }
            }
            if ready.is_empty() {
                q.sending = false;
                return;
            }
            drop(q);
            for msg in &ready {
                send(msg);
            }
            q = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nats-server 2.15.1 accepts and refuses (observed).
    #[test]
    fn validity_as_nats_server() {
        let ok = |s, d| Transform::new(s, d).map(|_| ());
        for (s, d) in [
            ("r.*.x", "out.{{wildcard(1)}}"),
            ("y.*", "yy.$1"),
            (">", "zz.>"),
            ("t.*.*", "tt.$2.$1"),
            ("t.*.*", "tt.$1"),
            ("t.>", "tt.>"),
            ("t.*.>", "tt.$1.>"),
            ("t.*", "tt.{{ wildcard(1) }}"),
            ("t.a", "tt.b"),
            ("t.>", "$KV.b.>"),
        ] {
            assert_eq!(ok(s, d), Ok(()), "{s} -> {d}");
        }
        for (s, d) in [
            ("t.*", "tt.*"),
            ("t.*.*", "tt.*.*"),
            (">", "tt.x"),
            ("t.*", "tt.$2"),
            ("t.*", "tt.*.$1"),
            ("t.x", "tt.>"),
            ("t.*", "tt.>"),
            ("s.>", "ss"),
            ("t..x", "tt"),
        ] {
            assert_eq!(ok(s, d), Err(TransformError::Invalid), "{s} -> {d}");
        }
        assert_eq!(
            ok("t.*", "tt.{{split(1,-)}}"),
            Err(TransformError::Unsupported("split".into()))
        );
    }

    #[test]
    fn mapping() {
        let t = Transform::new("r.*.x.>", "out.$1.{{wildcard(1)}}.>").unwrap();
        assert_eq!(t.apply("r.a.x.b.c").as_deref(), Some("out.a.a.b.c"));
        assert_eq!(t.apply("r.a.x"), None);
        assert_eq!(t.apply("r.a.y.b"), None);
        let t = Transform::new("t.*.*", "tt.$2.$1").unwrap();
        assert_eq!(t.apply("t.1.2").as_deref(), Some("tt.2.1"));
        assert_eq!(t.apply("t.1.2.3"), None);
        let t = Transform::new(">", "all.>").unwrap();
        assert_eq!(t.apply("a.b").as_deref(), Some("all.a.b"));
    }

    #[test]
    fn republished_headers() {
        let h = headers(b"NATS/1.0\r\nFoo: bar\r\n\r\n", "R", "r.a", 2, 0, 1, None);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "NATS/1.0\r\nFoo: bar\r\nNats-Stream: R\r\nNats-Subject: r.a\r\nNats-Sequence: 2\r\nNats-Time-Stamp: 0001-01-01T00:00:00Z\r\nNats-Last-Sequence: 1\r\n\r\n"
        );
        let h = headers(b"", "R", "r.a", 1, 0, 0, Some(7));
        assert!(String::from_utf8(h)
            .unwrap()
            .ends_with("Nats-Last-Sequence: 0\r\nNats-Msg-Size: 7\r\n\r\n"));
    }
}
