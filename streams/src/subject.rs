//! Subject filters: `*` matches one token, `>` (last token only) matches one or more.

/// True if `subject` (a literal subject) matches `filter` (which may contain wildcards).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if `filter` contains a wildcard token.
pub fn has_wildcard(filter: &str) -> bool {
    filter.split('.').any(|t| t == "*" || t == ">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(matches("*.b.>", "a.b.c"));
        assert!(!matches("a.b", "a"));
        assert!(has_wildcard("a.*") && has_wildcard(">") && !has_wildcard("a.b*"));
    }
}
