//! Bytes in, [`Op`]s out. The parser reads complete operations from the front of a buffer
//! and says how many bytes each took; a partial one is left for the next read, so a control
//! line or payload may arrive split at any byte. Ops borrow from the buffer: a payload is a
//! slice of the bytes read from the socket, never a copy, and costs no reference counting.
//!
//! Leniency follows nats-server: verbs in any case, arguments separated by runs of spaces or
//! tabs, control lines ending in `\r\n` or a bare `\n`; a payload must end in exactly `\r\n`.

use super::Op;

/// Why the input is not the NATS protocol. Every parse error closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a known operation, or a payload not followed by `\r\n`.
    UnknownOp,
    /// A control line longer than `max_control_line`.
    MaxControlLine,
    /// A message larger than `max_payload`.
    MaxPayload,
    /// A known operation with arguments that do not fit it; holds the expected form.
    Arguments(&'static str),
}

impl ParseError {
    /// The text sent to the client as `-ERR '<text>'`.
    pub fn wire_text(&self) -> String {
        match self {
            ParseError::UnknownOp => "Unknown Protocol Operation".into(),
            ParseError::MaxControlLine => "maximum control line exceeded".into(),
            ParseError::MaxPayload => "Maximum Payload Violation".into(),
            // nats-server closes silently here; naming the expected form helps a telnet user.
            ParseError::Arguments(usage) => format!("Invalid Arguments, expected {usage}"),
        }
    }
}

const PUB_USAGE: &str = "PUB <subject> [reply] <#bytes>";
const HPUB_USAGE: &str = "HPUB <subject> [reply] <#header bytes> <#total bytes>";
const SUB_USAGE: &str = "SUB <subject> [queue] <sid>";
const UNSUB_USAGE: &str = "UNSUB <sid> [max]";

const VERBS: &[&[u8]] = &[
    b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"CONNECT", b"INFO", b"+OK", b"-ERR",
];

/// Verbs that must be followed by arguments: nats-server treats `SUB\r\n` as no operation at all.
const TAKES_ARGS: &[&[u8]] = &[b"PUB", b"HPUB", b"SUB", b"UNSUB", b"CONNECT"];

/// Most arguments any operation takes (HPUB: subject, reply, two sizes), plus one so that a
/// line with too many arguments matches no operation's form.
const MAX_ARGS: usize = 5;

/// Incremental protocol parser for one connection.
#[derive(Debug)]
pub struct Parser {
    max_control_line: usize,
    max_payload: usize,
    /// Total bytes (control line, payload, `\r\n`) of the message waiting to complete.
    waiting_for: usize,
}

impl Parser {
    /// A parser enforcing the given limits.
    pub fn new(max_control_line: usize, max_payload: usize) -> Self {
        Parser {
            max_control_line,
            max_payload,
            waiting_for: 0,
        }
    }

    /// How many more bytes the message in progress needs, when that is known; lets the reader
    /// reserve a large payload's space once instead of growing the buffer repeatedly.
    pub fn bytes_wanted(&self, buffered: usize) -> usize {
        self.waiting_for.saturating_sub(buffered)
    }

    /// Parses the operation at the front of `buf`: the op and the bytes it took, or `Ok(None)`
    /// when more input is needed. After an error the connection must be closed.
    pub fn parse<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Op<'a>, usize)>, ParseError> {
        let scan = buf.len().min(self.max_control_line + 2);
        let Some(nl) = memchr::memchr(b'\n', &buf[..scan]) else {
            if buf.len() > self.max_control_line + 1 {
                return Err(ParseError::MaxControlLine);
            }
            check_partial_verb(buf)?;
            return Ok(None);
        };
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if end > self.max_control_line {
            return Err(ParseError::MaxControlLine);
        }
        let line = &buf[..end];
        let verb_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        let (verb, rest) = line.split_at(verb_end);
        if rest.is_empty() && TAKES_ARGS.iter().any(|v| v.eq_ignore_ascii_case(verb)) {
            return Err(ParseError::UnknownOp);
        }
        let taken = nl + 1;
        let op = if verb.eq_ignore_ascii_case(b"PUB") {
            return self.message(buf, taken, rest, false);
        } else if verb.eq_ignore_ascii_case(b"HPUB") {
            return self.message(buf, taken, rest, true);
        } else if verb.eq_ignore_ascii_case(b"SUB") {
            let args = Args::split(rest);
            let (subject, queue, sid) = match args.as_slice() {
                [s, id] => (*s, None, *id),
                [s, q, id] => (*s, Some(*q), *id),
                _ => return Err(ParseError::Arguments(SUB_USAGE)),
            };
            Op::Sub {
                subject,
                queue,
                sid,
            }
        } else if verb.eq_ignore_ascii_case(b"UNSUB") {
            match Args::split(rest).as_slice() {
                [sid] => Op::Unsub { sid, max: None },
                // An unparsable max means a plain unsubscribe, as nats-server treats it.
                [sid, max] => Op::Unsub {
                    sid,
                    max: parse_size(max).filter(|&m| m > 0).map(|m| m as u64),
                },
                _ => return Err(ParseError::Arguments(UNSUB_USAGE)),
            }
        } else if verb.eq_ignore_ascii_case(b"PING") {
            Op::Ping
        } else if verb.eq_ignore_ascii_case(b"PONG") {
            Op::Pong
        } else if verb.eq_ignore_ascii_case(b"CONNECT") {
            Op::Connect(rest.trim_ascii())
        } else if verb.eq_ignore_ascii_case(b"INFO") {
            Op::Info
        } else if verb.eq_ignore_ascii_case(b"+OK") {
            Op::Ok
        } else if verb.eq_ignore_ascii_case(b"-ERR") {
            Op::Err(rest.trim_ascii())
        } else {
            return Err(ParseError::UnknownOp);
        };
        Ok(Some((op, taken)))
    }

    /// A PUB/HPUB whose control line took `header` bytes of `buf`: the message once its payload
    /// and `\r\n` are all there.
    fn message<'a>(
        &mut self,
        buf: &'a [u8],
        header: usize,
        rest: &'a [u8],
        headers: bool,
    ) -> Result<Option<(Op<'a>, usize)>, ParseError> {
        let usage = if headers { HPUB_USAGE } else { PUB_USAGE };
        let bad = || ParseError::Arguments(usage);
        let args = Args::split(rest);
        let (subject, reply, header_len, total) = match (headers, args.as_slice()) {
            (false, [s, n]) => (*s, None, None, *n),
            (false, [s, r, n]) => (*s, Some(*r), None, *n),
            (true, [s, h, n]) => (*s, None, Some(*h), *n),
            (true, [s, r, h, n]) => (*s, Some(*r), Some(*h), *n),
            _ => return Err(bad()),
        };
        let total = parse_size(total).ok_or_else(bad)?;
        let header_len = match header_len {
            Some(h) => parse_size(h).ok_or_else(bad)?,
            None => 0,
        };
        if total > self.max_payload {
            return Err(ParseError::MaxPayload);
        }
        if header_len > total {
            return Err(bad());
        }
        let body = &buf[header..];
        if !payload_ready(body, total)? {
            self.waiting_for = header + total + 2;
            return Ok(None);
        }
        self.waiting_for = 0;
        let op = Op::Pub {
            subject,
            reply,
            header_len,
            payload: &body[..total],
            headers,
        };
        Ok(Some((op, header + total + 2)))
    }
}

/// Whether `total` payload bytes plus `\r\n` are buffered; errors as soon as a byte after the
/// payload is not the expected terminator, without waiting for the rest.
fn payload_ready(buf: &[u8], total: usize) -> Result<bool, ParseError> {
    let tail = buf.get(total..).unwrap_or_default();
    if tail.first().is_some_and(|&b| b != b'\r') || tail.get(1).is_some_and(|&b| b != b'\n') {
        return Err(ParseError::UnknownOp);
    }
    Ok(tail.len() >= 2)
}

/// Rejects a partial line early when it cannot become a known verb, so a telnet user who types
/// nonsense hears about it at once, as with nats-server.
fn check_partial_verb(buf: &[u8]) -> Result<(), ParseError> {
    let (token, complete) = match buf.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&buf[..i], true),
        None => (buf.strip_suffix(b"\r").unwrap_or(buf), false),
    };
    let fits = |verb: &&[u8]| {
        if complete {
            verb.eq_ignore_ascii_case(token)
        } else {
            verb.len() >= token.len() && verb[..token.len()].eq_ignore_ascii_case(token)
        }
    };
    if VERBS.iter().any(fits) {
        Ok(())
    } else {
        Err(ParseError::UnknownOp)
    }
}

/// A control line's arguments, split on runs of spaces and tabs without allocating.
struct Args<'a> {
    items: [&'a [u8]; MAX_ARGS],
    len: usize,
}

impl<'a> Args<'a> {
    fn split(rest: &'a [u8]) -> Self {
        let mut args = Args {
            items: [&[]; MAX_ARGS],
            len: 0,
        };
        for arg in rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|a| !a.is_empty())
        {
            if args.len == MAX_ARGS {
                break;
            }
            args.items[args.len] = arg;
            args.len += 1;
        }
        args
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.len]
    }
}

/// A decimal size with no sign; `None` for anything else, including overflow.
fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + (d - b'0') as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Op<'_>>, ParseError> {
        let mut p = Parser::new(4096, 1 << 20);
        let mut at = 0;
        let mut ops = Vec::new();
        while let Some((op, n)) = p.parse(&input[at..])? {
            ops.push(op);
            at += n;
        }
        Ok(ops)
    }

    fn pub_op<'a>(subject: &'a str, reply: Option<&'a str>, payload: &'a str) -> Op<'a> {
        Op::Pub {
            subject: subject.as_bytes(),
            reply: reply.map(str::as_bytes),
            header_len: 0,
            payload: payload.as_bytes(),
            headers: false,
        }
    }

    #[test]
    fn pipelined_ops_any_case() {
        let ops = parse_all(
            b"CONNECT {\"verbose\":false}\r\nsub foo 1\r\nSub  foo\tq  2 \r\npub foo 5\r\nhello\r\n\
              PUB foo bar 0\r\n\r\nunsub 1 3\r\nUNSUB 2\nping\r\nPONG\r\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 9);
        assert_eq!(ops[0], Op::Connect(&b"{\"verbose\":false}"[..]));
        assert_eq!(
            ops[2],
            Op::Sub {
                subject: &b"foo"[..],
                queue: Some(&b"q"[..]),
                sid: &b"2"[..]
            }
        );
        assert_eq!(ops[3], pub_op("foo", None, "hello"));
        assert_eq!(ops[4], pub_op("foo", Some("bar"), ""));
        assert_eq!(
            ops[5],
            Op::Unsub {
                sid: &b"1"[..],
                max: Some(3)
            }
        );
        assert_eq!(ops[7], Op::Ping);
    }

    #[test]
    fn hpub_splits_headers() {
        let ops = parse_all(b"HPUB a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n").unwrap();
        match &ops[0] {
            Op::Pub {
                header_len,
                payload,
                headers,
                reply,
                ..
            } => {
                assert_eq!(*header_len, 12);
                assert_eq!(*payload, b"NATS/1.0\r\n\r\nhi");
                assert!(headers);
                assert_eq!(*reply, Some(&b"r"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_all(b"x"),
            Err(ParseError::UnknownOp),
            "fails before newline"
        );
        assert_eq!(parse_all(b"\r\nPING\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(parse_all(b"MSG a 1 1\r\nx\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(parse_all(b"PUB a 2\r\nx\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(parse_all(b"PUB a 1\r\nxY"), Err(ParseError::UnknownOp));
        assert!(matches!(
            parse_all(b"PUB foo\r\n"),
            Err(ParseError::Arguments(_))
        ));
        assert!(matches!(
            parse_all(b"PUB foo -1\r\n"),
            Err(ParseError::Arguments(_))
        ));
        assert!(matches!(
            parse_all(b"SUB foo\r\n"),
            Err(ParseError::Arguments(_))
        ));
        assert_eq!(parse_all(b"UNSUB\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(parse_all(b"SUB\r\n"), Err(ParseError::UnknownOp));
        assert!(matches!(
            parse_all(b"UNSUB \r\n"),
            Err(ParseError::Arguments(_))
        ));
        assert!(matches!(
            parse_all(b"HPUB a 14 12\r\n"),
            Err(ParseError::Arguments(_))
        ));
        assert_eq!(parse_all(b"PUB a 1048577\r\n"), Err(ParseError::MaxPayload));
        let long = [b"SUB ".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(
            parse_all(&long),
            Err(ParseError::MaxControlLine),
            "no newline yet"
        );
        assert_eq!(parse_all(b"PIN"), Ok(vec![]), "a prefix waits for more");
        assert_eq!(
            parse_all(b"UNSUB 1 x\r\n").unwrap()[0],
            Op::Unsub {
                sid: &b"1"[..],
                max: None
            }
        );
    }

    #[test]
    fn payload_split_across_reads() {
        let mut p = Parser::new(4096, 1 << 20);
        let mut buf = b"PUB a 10\r\n01234".to_vec();
        assert_eq!(p.parse(&buf), Ok(None));
        assert_eq!(p.bytes_wanted(buf.len()), 7);
        buf.extend_from_slice(b"56789\r");
        assert_eq!(p.parse(&buf), Ok(None));
        buf.extend_from_slice(b"\n");
        assert_eq!(
            p.parse(&buf),
            Ok(Some((pub_op("a", None, "0123456789"), buf.len())))
        );
        assert_eq!(p.bytes_wanted(0), 0);
    }

    const STREAM: &[u8] = b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB a.* q 1\r\n\
        PUB a.b 5\r\nhello\r\nHPUB a.c reply 12 15\r\nNATS/1.0\r\n\r\nabc\r\nUNSUB 1 10\r\n\
        PING\r\npong\nPUB x 0\r\n\r\n";

    proptest! {
        /// However the stream is cut into reads, the same operations come out.
        #[test]
        fn any_split_parses_the_same(cuts in prop::collection::vec(0..STREAM.len(), 0..12)) {
            let whole = parse_all(STREAM).unwrap();
            let mut cuts = cuts;
            cuts.sort();
            let mut p = Parser::new(4096, 1 << 20);
            // What has arrived, and how much of it the parser has taken.
            let mut arrived = 0;
            let mut at = 0;
            let mut ops = Vec::new();
            for cut in cuts.into_iter().chain([STREAM.len()]) {
                arrived = arrived.max(cut);
                while let Some((op, n)) = p.parse(&STREAM[at..arrived]).unwrap() {
                    ops.push(op);
                    at += n;
                }
            }
            prop_assert_eq!(ops, whole);
        }

        /// Arbitrary bytes produce operations or an error, never a panic or a stuck loop.
        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_all(&input);
        }

        /// Protocol-shaped noise reaches deeper states than random bytes do.
        #[test]
        fn protocol_noise_never_panics(input in "((PUB|HPUB|SUB|UNSUB|PING|CONNECT|pub) ?[a-z0-9 .*>\t]{0,12}(\r\n|\n)?){0,8}") {
            let _ = parse_all(input.as_bytes());
        }
    }
}
