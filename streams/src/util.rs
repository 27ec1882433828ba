//! Small helpers for the JetStream layer: RFC 3339 timestamps, base64, NATS header blocks and
//! subject validation/overlap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Formats Unix nanoseconds as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction
/// trimmed), as nats-server does; `0` is Go's zero time, `0001-01-01T00:00:00Z`.
pub fn rfc3339(nanos: i64) -> String {
    if nanos == 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `[]byte` JSON encoding).
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The value of header `name` in a `NATS/1.0` header block (exact, case-sensitive name match,
/// as nats-server looks up its `Nats-*` headers; value trimmed).
pub fn header<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(block).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Whether any `name` header (matched as [`header`] does) in `block` has the value `value`.
pub fn has_header(block: &[u8], name: &str, value: &str) -> bool {
    std::str::from_utf8(block).is_ok_and(|text| {
        text.split("\r\n").skip(1).any(|line| {
            line.split_once(':')
                .is_some_and(|(k, v)| k.trim() == name && v.trim() == value)
        })
    })
}

/// `block` with the value of header `name` (matched as [`header`] does) replaced by `value`.
pub fn replace_header(block: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + value.len());
    let mut lines = block.split(|&b| b == b'\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        let key = line.iter().position(|&b| b == b':').map(|i| &line[..i]);
        if !first && key.is_some_and(|k| k.trim_ascii() == name.as_bytes()) {
            out.extend_from_slice(key.unwrap_or_default());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\r');
        } else {
            out.extend_from_slice(line);
        }
        if lines.peek().is_some() {
            out.push(b'\n');
        }
        first = false;
    }
    out
}

/// A valid subject or filter: non-empty tokens, no whitespace, `>` only as the last token.
pub fn valid_filter(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
        return false;
    }
    let toks: Vec<&str> = s.split('.').collect();
    toks.iter()
        .enumerate()
        .all(|(i, t)| !t.is_empty() && (*t != ">" || i == toks.len() - 1))
}

/// A valid literal (publish) subject.
pub fn valid_literal(s: &str) -> bool {
    valid_filter(s) && !crate::subject::has_wildcard(s)
}

/// True if some subject matches both filters.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if every subject matching `inner` also matches `outer`.
pub fn is_subset(inner: &str, outer: &str) -> bool {
    let mut x = inner.split('.');
    let mut y = outer.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(_), Some(">")) => return true,
            (Some(">"), Some(_)) => return false,
            (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// An empty request body: nothing but whitespace, or JSON `null` (which Go decodes into a
/// zero-valued request).
pub fn is_empty_json(payload: &[u8]) -> bool {
    let t = payload.trim_ascii();
    t.is_empty() || t == b"null"
}

/// Parses a JSON request as nats-server (Go) does in one respect serde does not: a `null`
/// field is the same as an absent one (clients send `"consumer_limits": null` and the like).
pub fn from_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> serde_json::Result<T> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(payload)?;
    strip(&mut value);
    serde_json::from_value(value)
}

/// Why a duration did not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Below zero.
    Negative,
    /// Not Go's duration syntax, or beyond its range.
    Invalid,
}

/// Go's duration syntax: an optional sign, then one or more `<number>[.<fraction>]<unit>` with
/// units `ns us µs μs ms s m h`; a lone `0` needs no unit; the total must fit Go's int64
/// nanoseconds.
pub fn go_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid);
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Invalid),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Invalid)?
        };
        // Digits past the 18th cannot change the nanosecond count of any unit here.
        let frac = &frac_part[..frac_part.len().min(18)];
        let fraction = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| DurationError::Invalid)?;
            digits * nanos / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(nanos)
            .and_then(|t| t.checked_add(fraction))
            .and_then(|t| t.checked_add(total))
            .ok_or(DurationError::Invalid)?;
        rest = after;
    }
    if total > i64::MAX as u128 {
        return Err(DurationError::Invalid);
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    Ok(Duration::from_nanos(total as u64))
}

/// A message's `Nats-TTL` header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgTtl {
    /// `never`: the message is not removed by age, not even by the stream's `max_age`.
    Never,
    /// Removed this long after it was stored (at least a second).
    After(Duration),
}

/// Parses a `Nats-TTL` value as nats-server does: `never`, a Go duration (`1h`, `1.5s`) or
/// whole seconds (`5`); `None` for anything else or anything under a second (`0` included).
pub fn msg_ttl(value: &str) -> Option<MsgTtl> {
    let value = value.trim();
    if value == "never" {
        return Some(MsgTtl::Never);
    }
    let d = match go_duration(value) {
        Ok(d) => d,
        Err(_) => Duration::from_secs(value.parse::<u64>().ok()?),
    };
    (d >= Duration::from_secs(1)).then_some(MsgTtl::After(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_000_000_000), "1970-01-01T00:00:01Z");
        // 2026-11-22T05:45:19.24541048Z
        let t = 1_795_326_319_245_410_480;
        assert_eq!(rfc3339(t), "2026-11-22T05:45:19.24541048Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn b64() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"world"), "d29ybGQ=");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(
            base64(b"NATS/1.0\r\nNats-Msg-Id: x1\r\n\r\n"),
            "TkFUUy8xLjANCk5hdHMtTXNnLUlkOiB4MQ0KDQo="
        );
    }

    #[test]
    fn message_ttls() {
        let after = |s| Some(MsgTtl::After(Duration::from_secs(s)));
        assert_eq!(msg_ttl("never"), Some(MsgTtl::Never));
        assert_eq!(msg_ttl("1s"), after(1));
        assert_eq!(msg_ttl(" 1h "), after(3600));
        assert_eq!(msg_ttl("5"), after(5));
        assert_eq!(
            msg_ttl("1.5s"),
            Some(MsgTtl::After(Duration::from_millis(1500)))
        );
        for bad in ["0", "0s", "999ms", "-1", "-5s", "", "soon", "1x", "Never"] {
            assert_eq!(msg_ttl(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replacing_a_header() {
        let h = b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-TTL: 1s\r\n\r\n";
        let out = replace_header(h, "Nats-TTL", "2");
        assert_eq!(out, b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-TTL: 2\r\n\r\n");
        assert_eq!(header(&out, "Nats-Msg-Id"), Some("a"));
        // Nothing else changes, and a missing header is not added.
        assert_eq!(replace_header(h, "Other", "x"), h);
    }

    #[test]
    fn headers_and_subjects() {
        let h = b"NATS/1.0\r\nNats-Msg-Id: x1\r\nFoo:bar \r\n\r\n";
        assert_eq!(header(h, "Nats-Msg-Id"), Some("x1"));
        assert_eq!(header(h, "Foo"), Some("bar"));
        assert_eq!(header(h, "NATS/1.0"), None);
        assert!(overlaps("foo.>", "foo.a"));
        assert!(overlaps("foo.*", "*.a"));
        assert!(!overlaps("foo.*", "foo.a.b"));
        assert!(!overlaps("foo", "bar"));
        assert!(is_subset("foo.a", "foo.>"));
        assert!(!is_subset("foo.>", "foo.*"));
        assert!(valid_filter("a.*.>") && !valid_filter("a.>.b") && !valid_filter("a..b"));
        assert!(!valid_filter("h4 x") && !valid_literal("a.*"));
    }
}
