//! `$JS.ACK` reply subjects and the acknowledgement protocol (`+ACK`, `-NAK`, `+WPI`, `+NXT`,
//! `+TERM`).

use std::time::Duration;

/// The fields of a delivery's reply subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckSubject<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub delivered: u64,
    pub stream_seq: u64,
    pub consumer_seq: u64,
}

/// The reply subject of a delivery:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts ns>.<pending>`.
pub(crate) fn reply_subject(
    stream: &str,
    consumer: &str,
    dc: u64,
    sseq: u64,
    cseq: u64,
    ts: i64,
    pending: u64,
) -> String {
    // One exact-size allocation and no `fmt` machinery: this runs once per delivery.
    let mut nums = [
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    ];
    let [a, b, c] = &mut nums;
    let (dc, sseq, cseq) = (a.format(dc), b.format(sseq), c.format(cseq));
    let (mut d, mut e) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (ts, pending) = (d.format(ts), e.format(pending));
    let parts = [stream, consumer, dc, sseq, cseq, ts, pending];
    let mut out = String::with_capacity(8 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    out.push_str("$JS.ACK");
    for p in parts {
        out.push('.');
        out.push_str(p);
    }
    out
}

/// Parses an ack subject: the 9-token form this server sends, or the 12-token form with a
/// domain and account hash (`$JS.ACK.<domain>.<hash>.<stream>...<pending>.<token>`).
pub(crate) fn parse_subject(subject: &str) -> Option<AckSubject<'_>> {
    // The first 12 tokens and the count, without allocating: this runs once per ack.
    let mut t = [""; 12];
    let mut n = 0;
    for (i, tok) in subject.split('.').enumerate() {
        if let Some(slot) = t.get_mut(i) {
            *slot = tok;
        }
        n = i + 1;
    }
    if n < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let o = match n {
        9 => 2,
        n if n >= 12 => 4,
        _ => return None,
    };
    Some(AckSubject {
        stream: t[o],
        consumer: t[o + 1],
        delivered: t[o + 2].parse().ok()?,
        stream_seq: t[o + 3].parse().ok()?,
        consumer_seq: t[o + 4].parse().ok()?,
    })
}

/// What an ack payload asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckKind {
    /// `+ACK` or an empty payload.
    Ack,
    /// `-NAK`, optionally with `{"delay": ns}` (or a Go duration such as `5s`).
    Nak(Option<Duration>),
    /// `+WPI`: still working, restart the ack wait.
    Progress,
    /// `+NXT` with an optional pull request body: ack, then ask for more.
    Next(Vec<u8>),
    /// `+TERM` with an optional reason: never redeliver.
    Term,
}

/// Parses an ack payload; `None` for anything else.
pub(crate) fn parse_payload(p: &[u8]) -> Option<AckKind> {
    let t = p.trim_ascii();
    if t.is_empty() || t == b"+ACK" {
        return Some(AckKind::Ack);
    }
    let (word, rest) = match t.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (&t[..i], t[i..].trim_ascii()),
        None => (t, &b""[..]),
    };
    match word {
        b"+ACK" => Some(AckKind::Ack),
        b"-NAK" => Some(AckKind::Nak(nak_delay(rest))),
        b"+WPI" => Some(AckKind::Progress),
        b"+NXT" => Some(AckKind::Next(rest.to_vec())),
        b"+TERM" => Some(AckKind::Term),
        _ => None,
    }
}

fn nak_delay(rest: &[u8]) -> Option<Duration> {
    if rest.is_empty() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct D {
        #[serde(default)]
        delay: i64,
    }
    if rest.starts_with(b"{") {
        let d: D = crate::util::from_json(rest).ok()?;
        return (d.delay > 0).then(|| Duration::from_nanos(d.delay as u64));
    }
    parse_go_duration(std::str::from_utf8(rest).ok()?)
}

/// Parses a simple Go duration (`500ms`, `5s`, `1m`, `2h`, `100us`, `10ns`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult = match unit {
        "ns" => 1e0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    Some(Duration::from_nanos((n * mult) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let s = reply_subject("S", "D", 2, 1, 4, 1796342879817549035, 0);
        assert_eq!(s, "$JS.ACK.S.D.2.1.4.1796342879817549035.0");
        let a = parse_subject(&s).unwrap();
        assert_eq!(
            (
                a.stream,
                a.consumer,
                a.delivered,
                a.stream_seq,
                a.consumer_seq
            ),
            ("S", "D", 2, 1, 4)
        );
        let v2 = parse_subject("$JS.ACK.dom.ACCHASH.S.D.1.5.6.17.0.tok").unwrap();
        assert_eq!((v2.stream, v2.stream_seq, v2.consumer_seq), ("S", 5, 6));
        assert!(parse_subject("$JS.ACK.S.D.1.2").is_none());
        assert!(parse_subject("$JS.ACK.S.D.x.1.1.1.1").is_none());
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_payload(b""), Some(AckKind::Ack));
        assert_eq!(parse_payload(b"+ACK"), Some(AckKind::Ack));
        assert_eq!(parse_payload(b"-NAK"), Some(AckKind::Nak(None)));
        assert_eq!(
            parse_payload(br#"-NAK {"delay": 500000000}"#),
            Some(AckKind::Nak(Some(Duration::from_millis(500))))
        );
        assert_eq!(
            parse_payload(b"-NAK 2s"),
            Some(AckKind::Nak(Some(Duration::from_secs(2))))
        );
        assert_eq!(parse_payload(b"+WPI"), Some(AckKind::Progress));
        assert_eq!(parse_payload(b"+TERM bad stuff"), Some(AckKind::Term));
        assert_eq!(
            parse_payload(br#"+NXT {"batch":2}"#),
            Some(AckKind::Next(br#"{"batch":2}"#.to_vec()))
        );
        assert_eq!(parse_payload(b"what"), None);
    }
}
