//! Small helpers for the JetStream layer: RFC 3339 timestamps, base64, NATS header blocks and
//! subject validation/overlap.

use std::time::{SystemTime, UNIX_EPOCH};

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
