//! The little HTTP the monitor needs: query-string parameters parsed and checked the way
//! nats-server reports bad ones (HTTP 400 with its wording), and JSON, text and error responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// A response with its whole body.
pub type Reply = Response<Full<Bytes>>;

/// A request the monitor refuses: HTTP 400 with this plain-text explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// The query string's parameters, in order, percent-decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=two`; a key without `=` has an empty value.
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Query(pairs)
    }

    /// The first value given for `key`, if any and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// An integer parameter (`offset`, `limit`); absent is `None`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, BadRequest> {
        self.number(key, "int", "strconv.Atoi")
    }

    /// An unsigned parameter (`cid`); absent is `None`.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, BadRequest> {
        self.number(key, "uint64", "strconv.ParseUint")
    }

    fn number<N: std::str::FromStr>(
        &self,
        key: &str,
        kind: &str,
        func: &str,
    ) -> Result<Option<N>, BadRequest> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.parse().map(Some).map_err(|_| {
            BadRequest(format!(
                "Error decoding {kind} for '{key}': {func}: parsing \"{v}\": invalid syntax"
            ))
        })
    }

    /// A boolean parameter in Go's spellings (`1`, `t`, `true`, `0`, `f`, `false`, …); absent is
    /// false.
    pub fn bool(&self, key: &str) -> Result<bool, BadRequest> {
        match self.get(key) {
            None => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(BadRequest(format!(
                "Error decoding boolean for '{key}': strconv.ParseBool: parsing \"{v}\": invalid syntax"
            ))),
        }
    }
}

/// `%41` and `+` decoded; bytes that do not form UTF-8 are replaced.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `value` as indented JSON (nats-server indents its monitoring output), HTTP 200.
pub fn json(value: &impl Serialize) -> Reply {
    json_body(serde_json::to_vec_pretty(value).expect("monitoring JSON serializes"))
}

/// `value` as one line of JSON (nats-server's `/healthz` form), HTTP 200.
pub fn json_compact(value: &impl Serialize) -> Reply {
    json_body(serde_json::to_vec(value).expect("monitoring JSON serializes"))
}

fn json_body(body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    reply
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

/// An HTML page.
pub fn html(body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    reply
}

/// Go's `404 page not found`.
pub fn not_found() -> Reply {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

impl From<BadRequest> for Reply {
    fn from(e: BadRequest) -> Reply {
        text(StatusCode::BAD_REQUEST, e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let q = Query::parse(Some("subs=detail&limit=2&x=a%2Eb+c&limit=9&empty="));
        assert_eq!(q.get("subs"), Some("detail"));
        assert_eq!(q.int("limit"), Ok(Some(2)));
        assert_eq!(q.get("x"), Some("a.b c"));
        assert_eq!(q.get("empty"), None);
        assert_eq!(q.get("missing"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn bad_numbers_and_bools_read_as_nats_server_says() {
        let q = Query::parse(Some("limit=abc&cid=-1&subs=bogus&t=T"));
        assert_eq!(
            q.int("limit").unwrap_err().0,
            "Error decoding int for 'limit': strconv.Atoi: parsing \"abc\": invalid syntax"
        );
        assert!(q
            .uint("cid")
            .unwrap_err()
            .0
            .starts_with("Error decoding uint64"));
        assert!(q.bool("subs").is_err());
        assert_eq!(q.bool("t"), Ok(true));
        assert_eq!(q.bool("none"), Ok(false));
    }
}
