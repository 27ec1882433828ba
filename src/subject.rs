//! Subjects: dot-separated tokens, where a whole token `*` matches any one token and a final
//! `>` matches one or more. Validation follows nats-server: wildcards count only as whole
//! tokens (`a*b` is a literal), tokens are never empty and never hold whitespace.

/// The token separator.
pub const SEP: u8 = b'.';
/// Single-token wildcard.
pub const PWC: &[u8] = b"*";
/// Trailing multi-token wildcard.
pub const FWC: &[u8] = b">";

/// Whether `subject` is valid to subscribe to: wildcards allowed, `>` only as the last token.
pub fn is_valid_subscription(subject: &[u8]) -> bool {
    let mut tokens = subject.split(|&b| b == SEP).peekable();
    while let Some(token) = tokens.next() {
        if !is_valid_token(token) {
            return false;
        }
        if token == FWC && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// Whether `subject` is valid to publish to: a valid subject with no wildcard token.
pub fn is_valid_publish(subject: &[u8]) -> bool {
    subject
        .split(|&b| b == SEP)
        .all(|t| is_valid_token(t) && t != PWC && t != FWC)
}

/// Whether every token of `subject` is non-empty (no leading, trailing or doubled dot). Cheap
/// enough for every message of a non-pedantic client.
pub fn has_only_full_tokens(subject: &[u8]) -> bool {
    !subject.is_empty()
        && subject[0] != SEP
        && subject[subject.len() - 1] != SEP
        && !subject.windows(2).any(|w| w == [SEP, SEP])
}

/// Whether `subject` holds a `*` or `>` wildcard token.
pub fn has_wildcard(subject: &[u8]) -> bool {
    subject.split(|&b| b == SEP).any(|t| t == PWC || t == FWC)
}

/// Whether a queue group name is acceptable: non-empty with no whitespace.
pub fn is_valid_queue(queue: &[u8]) -> bool {
    !queue.is_empty() && !queue.iter().any(u8::is_ascii_whitespace)
}

fn is_valid_token(token: &[u8]) -> bool {
    !token.is_empty() && !token.iter().any(u8::is_ascii_whitespace)
}

/// Whether the literal `subject` is matched by the (possibly wildcard) `pattern`.
///
/// The routing table does this with a trie; this direct form serves permissions checks
/// and tests.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut pat = pattern.split(|&b| b == SEP);
    let mut sub = subject.split(|&b| b == SEP);
    loop {
        match (pat.next(), sub.next()) {
            (Some(p), Some(_)) if p == FWC => return true,
            (Some(p), Some(s)) if p == PWC || p == s => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches is also matched by `outer` (both may hold wildcards):
/// `foo.*` is within `foo.>` and `>`, but not within `foo.bar`.
pub fn is_subset(inner: &[u8], outer: &[u8]) -> bool {
    let mut out = outer.split(|&b| b == SEP);
    let mut inn = inner.split(|&b| b == SEP);
    loop {
        match (out.next(), inn.next()) {
            (Some(o), Some(_)) if o == FWC => return true,
            (Some(o), Some(i)) if o == PWC && i != FWC => continue,
            (Some(o), Some(i)) if o == i && i != PWC && i != FWC => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some literal subject is matched by both patterns.
pub fn intersects(a: &[u8], b: &[u8]) -> bool {
    let mut x = a.split(|&c| c == SEP);
    let mut y = b.split(|&c| c == SEP);
    loop {
        match (x.next(), y.next()) {
            (Some(p), Some(_)) | (Some(_), Some(p)) if p == FWC => return true,
            (Some(p), Some(q)) if p == PWC || q == PWC || p == q => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_subjects() {
        for ok in [
            "foo",
            "foo.bar",
            "*",
            ">",
            "foo.*",
            "foo.>",
            "*.*.>",
            "a*b.c>",
            "$JS.API.>",
        ] {
            assert!(is_valid_subscription(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            ">.a",
            "a b",
            "a\tb",
        ] {
            assert!(!is_valid_subscription(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn publish_subjects() {
        assert!(is_valid_publish(b"foo.bar"));
        assert!(is_valid_publish(b"a*b"));
        for bad in ["foo.*", "foo.>", "*", "", "a..b", "a."] {
            assert!(!is_valid_publish(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn full_tokens() {
        assert!(has_only_full_tokens(b"a.b.c"));
        assert!(has_only_full_tokens(b"a.*"));
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert!(!has_only_full_tokens(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn direct_matching() {
        assert!(matches(b"foo.*", b"foo.bar"));
        assert!(!matches(b"foo.*", b"foo.bar.baz"));
        assert!(matches(b"foo.>", b"foo.bar.baz"));
        assert!(!matches(b"foo.>", b"foo"));
        assert!(matches(b">", b"a"));
        assert!(matches(b"*.b", b"a.b"));
        assert!(!matches(b"a.b", b"a.c"));
        assert!(!matches(b"a", b"a.b"));
    }

    #[test]
    fn subsets() {
        assert!(is_subset(b"foo.*", b"foo.>"));
        assert!(is_subset(b"foo.*", b">"));
        assert!(is_subset(b"foo.bar", b"foo.*"));
        assert!(is_subset(b"foo.>", b"foo.>"));
        assert!(!is_subset(b"foo.>", b"foo.*"));
        assert!(!is_subset(b"foo.*", b"foo.bar"));
        assert!(!is_subset(b">", b"foo.>"));
        assert!(!is_subset(b"foo", b"foo.>"));
        assert!(!is_subset(b"foo.bar.baz", b"foo.*"));
    }

    #[test]
    fn intersections() {
        assert!(intersects(b">", b"secret.x"));
        assert!(intersects(b"a.*", b"*.b"));
        assert!(intersects(b"a.>", b"a.b.c"));
        assert!(!intersects(b"a.*", b"b.*"));
        assert!(!intersects(b"a.*", b"a.b.c"));
        assert!(!intersects(b"a", b"a.>"));
    }
}
