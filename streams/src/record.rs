//! Record encoding: message records in segment files and tombstones in delete files.
//!
//! Message record (little-endian), `L` bytes in all:
//!
//! ```text
//! 0   4  magic "NTR1"
//! 4   4  L, the record's total length
//! 8   8  sequence
//! 16  8  timestamp, nanoseconds since the Unix epoch (i64)
//! 24  2  subject length S
//! 26  4  headers length H
//! 30  S  subject
//! ..  H  headers (the NATS/1.0 header block, as published)
//! ..     payload (L - 34 - S - H bytes)
//! L-4 4  CRC-32C over bytes 4..L-4 (length, sequence, timestamp, lengths, subject, headers, payload)
//! ```
//!
//! Tombstone (12 bytes): `sequence u64, CRC-32C(sequence bytes) u32`.

use bytes::Bytes;

/// Bytes that start every message record.
pub const MAGIC: [u8; 4] = *b"NTR1";
/// Fixed part before the subject.
pub const HEADER_LEN: usize = 30;
/// Fixed bytes of every record (header and trailing checksum).
pub const OVERHEAD: usize = HEADER_LEN + 4;
/// Bytes of one tombstone.
pub const TOMBSTONE_LEN: usize = 12;

/// The largest record accepted (a sanity bound for recovery as much as a limit).
pub const MAX_RECORD: usize = 512 << 20;

/// Encoded length of a record.
pub fn record_len(subject: &str, headers: &[u8], payload: &[u8]) -> usize {
    OVERHEAD + subject.len() + headers.len() + payload.len()
}

/// Appends the encoding of one message record to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, ts: i64, subject: &str, headers: &[u8], payload: &[u8]) {
    let len = record_len(subject, headers, payload);
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The fixed header of a record, parsed without checking the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total record length.
    pub len: u32,
    /// Sequence number.
    pub seq: u64,
    /// Timestamp (Unix nanoseconds).
    pub ts: i64,
    /// Subject length.
    pub subj_len: u16,
    /// Headers length.
    pub hdr_len: u32,
}

/// Parses a record header from `buf` (at least [`HEADER_LEN`] bytes); `None` if the magic or the
/// lengths are implausible.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let h = Header {
        len,
        seq: u64::from_le_bytes(buf[8..16].try_into().ok()?),
        ts: i64::from_le_bytes(buf[16..24].try_into().ok()?),
        subj_len: u16::from_le_bytes(buf[24..26].try_into().ok()?),
        hdr_len: u32::from_le_bytes(buf[26..30].try_into().ok()?),
    };
    let fixed = OVERHEAD as u64 + h.subj_len as u64 + h.hdr_len as u64;
    if (len as u64) < fixed || len as usize > MAX_RECORD || h.subj_len == 0 {
        return None;
    }
    Some(h)
}

/// A decoded record whose checksum verified.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Parsed header.
    pub header: Header,
    /// Subject.
    pub subject: String,
    /// Header block.
    pub headers: Bytes,
    /// Payload.
    pub payload: Bytes,
}

/// Checks the checksum of a complete record in `buf` (exactly `header.len` bytes).
pub fn verify(buf: &[u8]) -> bool {
    if buf.len() < OVERHEAD {
        return false;
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    crc32c::crc32c(&body[4..]) == u32::from_le_bytes(crc.try_into().expect("4 bytes"))
}

/// Decodes a complete record (`buf` is exactly one record), verifying its checksum.
pub fn decode(buf: Bytes) -> Option<Decoded> {
    let header = parse_header(&buf)?;
    if buf.len() != header.len as usize || !verify(&buf) {
        return None;
    }
    let s0 = HEADER_LEN;
    let h0 = s0 + header.subj_len as usize;
    let p0 = h0 + header.hdr_len as usize;
    let end = buf.len() - 4;
    let subject = std::str::from_utf8(&buf[s0..h0]).ok()?.to_string();
    Some(Decoded {
        header,
        subject,
        headers: buf.slice(h0..p0),
        payload: buf.slice(p0..end),
    })
}

/// Encodes a tombstone for `seq`.
pub fn tombstone(seq: u64) -> [u8; TOMBSTONE_LEN] {
    let mut t = [0u8; TOMBSTONE_LEN];
    t[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&t[..8]);
    t[8..].copy_from_slice(&crc.to_le_bytes());
    t
}

/// Decodes a tombstone; `None` if its checksum fails.
pub fn parse_tombstone(t: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = t.get(..8)?.try_into().ok()?;
    let crc = u32::from_le_bytes(t.get(8..12)?.try_into().ok()?);
    (crc32c::crc32c(&seq) == crc).then(|| u64::from_le_bytes(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_checksum() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, -3, "a.b", b"NATS/1.0\r\n\r\n", b"payload");
        assert_eq!(
            buf.len(),
            record_len("a.b", b"NATS/1.0\r\n\r\n", b"payload")
        );
        let d = decode(Bytes::from(buf.clone())).unwrap();
        assert_eq!((d.header.seq, d.header.ts), (7, -3));
        assert_eq!(d.subject, "a.b");
        assert_eq!(&d.headers[..], b"NATS/1.0\r\n\r\n");
        assert_eq!(&d.payload[..], b"payload");
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert!(decode(Bytes::from(bad)).is_none(), "flip at {i} undetected");
        }
    }

    #[test]
    fn tombstone_roundtrip() {
        assert_eq!(parse_tombstone(&tombstone(42)), Some(42));
        let mut t = tombstone(42);
        t[3] ^= 4;
        assert_eq!(parse_tombstone(&t), None);
    }
}
