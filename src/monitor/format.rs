//! How nats-server writes times and durations in its monitoring JSON: instants as RFC 3339 in
//! UTC with up to nine fraction digits (Go's `RFC3339Nano`, trailing zeros dropped), round-trip
//! times as Go's `Duration.String()`, and connection ages in whole seconds (`"1d2h3m4s"`).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// `2026-11-22T02:15:24.20015058Z`: RFC 3339 in UTC, fraction without trailing zeros.
pub fn rfc3339(t: SystemTime) -> String {
    let t: DateTime<Utc> = t.into();
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    push_fraction(&mut s, t.timestamp_subsec_nanos(), 9);
    s.push('Z');
    s
}

/// A round-trip time as nats-server shows it: truncated to whole microseconds between 1 µs and
/// 1 ms (`"804µs"`, not `"804.25µs"`), then as Go prints durations.
pub fn rtt(d: Duration) -> String {
    let d = if d > Duration::from_micros(1) && d < Duration::from_millis(1) {
        Duration::from_micros(d.as_micros() as u64)
    } else {
        d
    };
    go_duration(d)
}

/// Go's `time.Duration.String()`: `"0s"`, `"462µs"`, `"1.5ms"`, `"2s"`, `"1m30.5s"`, `"2h0m0s"`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let mut s = String::new();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Below a second: one unit, with a fraction.
        let (scale, digits, unit) = match nanos {
            n if n < 1_000 => (1, 0, "ns"),
            n if n < 1_000_000 => (1_000, 3, "µs"),
            _ => (1_000_000, 6, "ms"),
        };
        let _ = write!(s, "{}", nanos / scale);
        push_fraction(&mut s, (nanos % scale) as u32, digits);
        s.push_str(unit);
        return s;
    }
    let secs = d.as_secs();
    let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        let _ = write!(s, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(s, "{m}m");
    }
    let _ = write!(s, "{sec}");
    push_fraction(&mut s, d.subsec_nanos(), 9);
    s.push('s');
    s
}

/// nats-server's age format for `uptime` and `idle`: whole seconds, larger units only when
/// non-zero at the front: `"0s"`, `"42s"`, `"1m2s"`, `"1h2m3s"`, `"1d2h3m4s"`, `"1y2d3h4m5s"`.
pub fn age(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    let (s, m, h, dd) = (secs % 60, mins % 60, hours % 24, days % 365);
    if years > 0 {
        format!("{years}y{dd}d{h}h{m}m{s}s")
    } else if days > 0 {
        format!("{days}d{h}h{m}m{s}s")
    } else if hours > 0 {
        format!("{hours}h{m}m{s}s")
    } else if mins > 0 {
        format!("{mins}m{s}s")
    } else {
        format!("{secs}s")
    }
}

/// Appends `.ddd` for `frac` (a fraction with `digits` digits), trailing zeros dropped; nothing
/// when it is zero.
fn push_fraction(s: &mut String, frac: u32, digits: usize) {
    if frac == 0 || digits == 0 {
        return;
    }
    let text = format!("{frac:0digits$}");
    s.push('.');
    s.push_str(text.trim_end_matches('0'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_trims_the_fraction() {
        let t = UNIX_EPOCH + Duration::new(1_795_227_324, 200_150_580);
        assert_eq!(rfc3339(t), "2026-11-21T02:15:24.20015058Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_227_324);
        assert_eq!(rfc3339(t), "2026-11-21T02:15:24Z");
    }

    #[test]
    fn go_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(462), "462µs"),
            (Duration::from_nanos(804_250), "804.25µs"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(7200), "2h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn rtts_are_truncated_to_microseconds_below_a_millisecond() {
        let cases = [
            (Duration::from_nanos(804_250), "804µs"),
            (Duration::from_nanos(900), "900ns"),
            (Duration::from_nanos(1_500_000), "1.5ms"),
        ];
        for (d, want) in cases {
            assert_eq!(rtt(d), want, "{d:?}");
        }
    }

    #[test]
    fn ages() {
        let cases = [
            (0, "0s"),
            (42, "42s"),
            (62, "1m2s"),
            (3723, "1h2m3s"),
            (93_784, "1d2h3m4s"),
            (365 * 86_400 + 2 * 86_400 + 5, "1y2d0h0m5s"),
        ];
        for (secs, want) in cases {
            assert_eq!(age(Duration::from_secs(secs)), want);
        }
        assert_eq!(age(Duration::from_millis(999)), "0s");
    }
}
