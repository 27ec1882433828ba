//! Frames the server sends, written straight into a connection's outbound buffer.

use bytes::{BufMut, BytesMut};

/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`, sent after each operation to a verbose client.
pub const OK: &[u8] = b"+OK\r\n";

/// Writes `-ERR '<text>'\r\n`.
pub fn err(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 9);
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

/// Writes `INFO <json> \r\n`; the space before the line end is nats-server's, kept for clients
/// that compare bytes.
pub fn info(out: &mut BytesMut, json: &[u8]) {
    out.reserve(json.len() + 8);
    out.put_slice(b"INFO ");
    out.put_slice(json);
    out.put_slice(b" \r\n");
}

/// The parts of a delivered message; one value serves every receiver, only `sid` differs.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Subject the message was published to.
    pub subject: &'a [u8],
    /// Reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// Length of the header block at the front of `payload` (0: no headers).
    pub header_len: usize,
    /// Headers then body.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// Bytes [`Message::write`] appends for a subscription id of `sid_len` bytes.
    pub fn frame_len(&self, sid_len: usize, with_headers: bool) -> usize {
        let reply = self.reply.map_or(0, |r| r.len() + 1);
        let payload = self.payload_for(with_headers).len();
        // verb + spaces + two sizes (at most 20 digits each) + two CRLFs.
        self.subject.len() + sid_len + reply + payload + 56
    }

    fn payload_for(&self, with_headers: bool) -> &[u8] {
        if with_headers || self.header_len == 0 {
            self.payload
        } else {
            &self.payload[self.header_len..]
        }
    }

    /// Appends the `MSG`/`HMSG` frame for subscription `sid`. A receiver that did not ask for
    /// headers gets `MSG` with the body alone, as nats-server does.
    pub fn write(&self, out: &mut BytesMut, sid: &[u8], with_headers: bool) {
        let hmsg = with_headers && self.header_len > 0;
        let payload = self.payload_for(with_headers);
        out.reserve(self.frame_len(sid.len(), with_headers));
        out.put_slice(if hmsg { b"HMSG " } else { b"MSG " });
        out.put_slice(self.subject);
        out.put_u8(b' ');
        out.put_slice(sid);
        out.put_u8(b' ');
        if let Some(reply) = self.reply {
            out.put_slice(reply);
            out.put_u8(b' ');
        }
        if hmsg {
            put_decimal(out, self.header_len);
            out.put_u8(b' ');
        }
        put_decimal(out, payload.len());
        out.put_slice(b"\r\n");
        out.put_slice(payload);
        out.put_slice(b"\r\n");
    }
}

/// Appends `n` in decimal without allocating.
pub fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// The header block of a status message such as `503` (no responders), naming the subject
/// the request went to as nats-server 2.15 does.
pub fn status_headers(code: u16, subject: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(48 + subject.len());
    h.extend_from_slice(format!("NATS/1.0 {code}\r\nNats-Subject: ").as_bytes());
    h.extend_from_slice(subject);
    h.extend_from_slice(b"\r\n\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_and_hmsg_frames() {
        let mut out = BytesMut::new();
        let m = Message {
            subject: b"foo",
            reply: None,
            header_len: 0,
            payload: b"hello",
        };
        m.write(&mut out, b"1", true);
        assert_eq!(&out[..], b"MSG foo 1 5\r\nhello\r\n");

        let mut out = BytesMut::new();
        let h = Message {
            subject: b"a",
            reply: Some(b"r"),
            header_len: 12,
            payload: b"NATS/1.0\r\n\r\nhi",
        };
        h.write(&mut out, b"22", true);
        assert_eq!(&out[..], b"HMSG a 22 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        out.clear();
        h.write(&mut out, b"22", false);
        assert_eq!(&out[..], b"MSG a 22 r 2\r\nhi\r\n", "headers stripped");
        assert!(h.frame_len(2, true) >= 34);
    }

    #[test]
    fn status_message_matches_nats_server() {
        let h = status_headers(503, b"nobody");
        assert_eq!(h, b"NATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n");
        assert_eq!(h.len(), 38);
    }

    #[test]
    fn decimals() {
        let mut out = BytesMut::new();
        for n in [0, 7, 10, 1048576, usize::MAX] {
            out.clear();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
