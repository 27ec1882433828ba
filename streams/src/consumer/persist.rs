//! On-disk consumer state under `<stream dir>/obs/<consumer>/`:
//!
//! * `meta.json`: config and creation time, replaced atomically and fsynced (a definition is
//!   never half-written, even by a power cut).
//! * `state.log`: an append-only log of deliveries and acks, one checksummed line per event,
//!   written (`write(2)`, no fsync) before the deliveries it records are sent and before an ack
//!   is confirmed. A process crash (`kill -9`) loses nothing written; a power cut can lose the
//!   last events the OS had not flushed yet, so acknowledged messages may be redelivered then
//!   (at-least-once holds). The log is compacted into a snapshot (fsynced, renamed over) once
//!   it is mostly garbage.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::ConsumerConfig;

/// `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub config: ConsumerConfig,
    pub created: i64,
}

/// One pending (delivered, unacknowledged) message as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SavedPending {
    pub cseq: u64,
    pub dc: u64,
    /// Wall-clock delivery time (ns).
    pub ts: i64,
}

/// The state replayed from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Saved {
    pub delivered_s: u64,
    pub delivered_c: u64,
    pub pending: BTreeMap<u64, SavedPending>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `name` in `dir` atomically: temp file, fsync, rename, fsync the directory.
fn write_durable(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Creates the consumer directory (and `obs/`) durably and writes its metadata.
pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let fresh = !dir.exists();
    fs::create_dir_all(dir)?;
    if fresh {
        if let Some(obs) = dir.parent() {
            sync_dir(obs)?;
            if let Some(stream) = obs.parent() {
                sync_dir(stream)?;
            }
        }
    }
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    write_durable(dir, "meta.json", &json)
}

/// Reads `meta.json`.
pub(crate) fn read_meta(dir: &Path) -> io::Result<Meta> {
    let b = fs::read(dir.join("meta.json"))?;
    serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Removes a consumer's directory (metadata first, so a crash midway leaves no consumer).
pub(crate) fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join("meta.json")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::remove_dir_all(dir).or_else(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })
}

const LOG: &str = "state.log";
/// Compact once the log holds this many records and mostly garbage.
// Each compaction fsyncs a snapshot (a millisecond or so, under the consumer's lock): at 64Ki
// lines (a few MB) a busy consumer compacts every ~30k acked messages rather than every 2k.
const COMPACT_MIN: u64 = 1 << 16;

/// The state log (a no-op without a directory: memory consumers).
pub(crate) struct StateLog {
    dir: Option<PathBuf>,
    file: Option<File>,
    buf: String,
    records: u64,
}

/// Appends `<crc32c hex> <tag> <n>...\n`. Built in place, without `format!`: acking consumers
/// log a line per delivery and per ack.
fn line(buf: &mut String, tag: char, nums: &[i64]) {
    let start = buf.len();
    buf.push_str("00000000 ");
    let rec = buf.len();
    buf.push(tag);
    for n in nums {
        buf.push(' ');
        buf.push_str(itoa::Buffer::new().format(*n));
    }
    let crc = crc32c::crc32c(&buf.as_bytes()[rec..]);
    let mut hex = [0u8; 8];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[(crc >> (28 - 4 * i)) as usize & 0xf];
    }
    buf.replace_range(start..start + 8, std::str::from_utf8(&hex).expect("ASCII"));
    buf.push('\n');
}

impl StateLog {
    /// A log that keeps nothing.
    pub fn memory() -> StateLog {
        StateLog {
            dir: None,
            file: None,
            buf: String::new(),
            records: 0,
        }
    }

    /// Opens the log in `dir`, replaying it. `track_pending`: the consumer acknowledges (so
    /// deliveries are pending until acked). A damaged tail (power cut) is cut off.
    pub fn open(dir: &Path, track_pending: bool) -> io::Result<(StateLog, Saved)> {
        let path = dir.join(LOG);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut saved = Saved::default();
        let mut good = 0usize;
        let mut records = 0;
        for l in data.split_inclusive(|b| *b == b'\n') {
            if !l.ends_with(b"\n") || !apply(&mut saved, &l[..l.len() - 1], track_pending) {
                break;
            }
            good += l.len();
            records += 1;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if good < data.len() {
            tracing::warn!(path = %path.display(), cut = data.len() - good, "consumer state log tail damaged; cut off");
            file.set_len(good as u64)?;
        }
        Ok((
            StateLog {
                dir: Some(dir.to_path_buf()),
                file: Some(file),
                buf: String::new(),
                records,
            },
            saved,
        ))
    }

    /// Records the delivery position (creation, purge).
    pub fn position(&mut self, delivered_s: u64, delivered_c: u64) {
        if self.dir.is_some() {
            line(
                &mut self.buf,
                'P',
                &[delivered_s as i64, delivered_c as i64],
            );
        }
    }
    /// Records a delivery.
    pub fn delivered(&mut self, sseq: u64, cseq: u64, dc: u64, ts: i64) {
        if self.dir.is_some() {
            line(
                &mut self.buf,
                'D',
                &[sseq as i64, cseq as i64, dc as i64, ts],
            );
        }
    }
    /// Records that `sseq` is no longer pending (acked, terminated, given up on).
    pub fn acked(&mut self, sseq: u64) {
        if self.dir.is_some() {
            line(&mut self.buf, 'A', &[sseq as i64]);
        }
    }
    /// Records an ack of everything up to `sseq` (ack policy all).
    pub fn acked_upto(&mut self, sseq: u64) {
        if self.dir.is_some() {
            line(&mut self.buf, 'L', &[sseq as i64]);
        }
    }

    /// Writes what was recorded since the last flush (one `write(2)`).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.records += self.buf.matches('\n').count() as u64;
        let r = match &mut self.file {
            Some(f) => f.write_all(self.buf.as_bytes()),
            None => Ok(()),
        };
        self.buf.clear();
        r
    }

    /// Whether the log is worth compacting given how much state is live.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.dir.is_some() && self.records >= COMPACT_MIN && self.records > 8 * (live as u64 + 1)
    }

    /// Replaces the log with a snapshot of `state` (fsynced before the rename, so a power cut
    /// leaves either the old log or the complete snapshot).
    pub fn compact(&mut self, state: &Saved) -> io::Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        self.flush()?;
        let mut snap = String::new();
        let (ds, dc) = (state.delivered_s as i64, state.delivered_c as i64);
        line(&mut snap, 'P', &[ds, dc]);
        for (s, p) in &state.pending {
            line(
                &mut snap,
                'D',
                &[*s as i64, p.cseq as i64, p.dc as i64, p.ts],
            );
        }
        write_durable(&dir, LOG, snap.as_bytes())?;
        self.file = Some(OpenOptions::new().append(true).open(dir.join(LOG))?);
        self.records = 1 + state.pending.len() as u64;
        Ok(())
    }
}

/// Applies one log line; false if it is damaged.
fn apply(s: &mut Saved, l: &[u8], track: bool) -> bool {
    let Ok(text) = std::str::from_utf8(l) else {
        return false;
    };
    let Some((crc, rec)) = text.split_once(' ') else {
        return false;
    };
    if u32::from_str_radix(crc, 16).ok() != Some(crc32c::crc32c(rec.as_bytes())) {
        return false;
    }
    let mut t = rec.split(' ');
    let kind = t.next();
    let n: Vec<i64> = t.filter_map(|x| x.parse().ok()).collect();
    let u = |i: usize| n.get(i).copied().unwrap_or(0).max(0) as u64;
    match (kind, n.len()) {
        (Some("P"), 2) => {
            s.delivered_s = u(0);
            s.delivered_c = u(1);
            s.pending.clear();
        }
        (Some("D"), 4) => {
            s.delivered_s = s.delivered_s.max(u(0));
            s.delivered_c = s.delivered_c.max(u(1));
            if track {
                s.pending.insert(
                    u(0),
                    SavedPending {
                        cseq: u(1),
                        dc: u(2),
                        ts: n[3],
                    },
                );
            }
        }
        (Some("A"), 1) => {
            s.pending.remove(&u(0));
        }
        (Some("L"), 1) => {
            let upto = u(0);
            s.pending.retain(|k, _| *k > upto);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checksummed_text() {
        let mut buf = String::new();
        line(&mut buf, 'D', &[5, 1, 1, -100]);
        let crc = crc32c::crc32c(b"D 5 1 1 -100");
        assert_eq!(buf, format!("{crc:08x} D 5 1 1 -100\n"));
        let mut s = Saved::default();
        assert!(apply(&mut s, buf.trim_end().as_bytes(), true));
        assert_eq!(s.pending[&5].ts, -100);
    }

    #[test]
    fn log_replays_and_cuts_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, s) = StateLog::open(dir.path(), true).unwrap();
        assert_eq!(s, Saved::default());
        log.position(4, 0);
        log.delivered(5, 1, 1, 100);
        log.delivered(6, 2, 1, 101);
        log.delivered(7, 3, 1, 102);
        log.acked(6);
        log.flush().unwrap();
        log.delivered(5, 4, 2, 103);
        log.acked_upto(5);
        log.flush().unwrap();
        drop(log);
        let (_, s) = StateLog::open(dir.path(), true).unwrap();
        assert_eq!((s.delivered_s, s.delivered_c), (7, 4));
        assert_eq!(s.pending.keys().copied().collect::<Vec<_>>(), vec![7]);
        // A torn, unchecksummed tail is ignored and cut off.
        let p = dir.path().join(LOG);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"deadbeef A 7\nxx").unwrap();
        let len = fs::metadata(&p).unwrap().len();
        let (mut log, s) = StateLog::open(dir.path(), true).unwrap();
        assert_eq!(s.pending.len(), 1);
        assert!(fs::metadata(&p).unwrap().len() < len);
        log.compact(&s).unwrap();
        drop(log);
        let (_, s2) = StateLog::open(dir.path(), true).unwrap();
        assert_eq!(s, s2);
    }
}
