//! The file-system seam under [`FileStore`](crate::FileStore).
//!
//! The store touches the disk only through [`Fs`] and [`FileHandle`], so tests can swap the real
//! file system ([`RealFs`]) for [`SimFs`], which simulates a power cut: every write, create,
//! rename and remove that was not made durable by `sync`/`sync_dir` is undone, and the unsynced
//! tail of a file survives only up to a random point (a torn write).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file, readable and writable at explicit offsets. Shared between the writer and readers.
pub trait FileHandle: Send + Sync + 'static {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `data` at `offset`.
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// The current length of the file.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back, such as its length)
    /// durable: `fdatasync`.
    fn sync(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// The directory-level operations the store needs.
pub trait Fs: Send + Sync + 'static {
    /// Creates `dir` and its parents, making the new entries durable.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it when `create` is set. A created file's
    /// directory entry is durable only after [`Fs::sync_dir`] on its directory.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>>;
    /// The names (not paths) of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`. Durable after `sync_dir`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creates, renames, removes) durable: fsync of the directory.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system (std::fs, `pread`/`pwrite`, `fdatasync`, directory fsync).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

struct RealFile(File);

impl FileHandle for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        let start = std::time::Instant::now();
        let r = self.0.sync_data();
        crate::metrics::record_fsync(start.elapsed());
        r
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // The deepest ancestor that already exists: every entry below it is new and must be made
        // durable in its parent, up to and including that ancestor.
        let mut existing = dir;
        while !existing.is_dir() {
            match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) => existing = p,
                None => break,
            }
        }
        std::fs::create_dir_all(dir)?;
        if existing == dir {
            return Ok(());
        }
        let mut cur = dir;
        while cur != existing {
            self.sync_dir(cur)?;
            match cur.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) => cur = p,
                None => return Ok(()),
            }
        }
        self.sync_dir(existing)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                if let Some(n) = e.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = File::open(dir)?;
        let start = std::time::Instant::now();
        let r = dir.sync_all();
        crate::metrics::record_fsync(start.elapsed());
        r
    }
}

// ---------------------------------------------------------------------------------------------
// SimFs: power-loss simulation.

#[derive(Default)]
struct Inode {
    /// What a crash leaves (at least): the contents as of the last `sync`.
    synced: Vec<u8>,
    /// The contents as the running process sees them.
    current: Vec<u8>,
}

#[derive(Default)]
struct SimState {
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    /// The namespace as the running process sees it.
    names: HashMap<PathBuf, u64>,
    /// The namespace a crash leaves: entries as of the last `sync_dir` of their directory.
    durable_names: HashMap<PathBuf, u64>,
    /// Bytes the simulated disk holds (sum of `current` lengths); writes beyond fail with ENOSPC.
    capacity: Option<u64>,
    /// Fail every `sync` (simulates an fsync error) while set.
    fail_sync: bool,
    /// Mutating operations left before the power goes out (None: no cut scheduled).
    ops_left: Option<u64>,
    /// The power is out: every operation fails until [`SimFs::crash`] reboots.
    cut: bool,
}

impl SimState {
    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    /// Counts one mutating operation against a scheduled power cut; fails once it is out.
    fn mutate(&mut self) -> io::Result<()> {
        match self.ops_left {
            _ if self.cut => Err(dead()),
            Some(0) => {
                self.cut = true;
                Err(dead())
            }
            Some(n) => {
                self.ops_left = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// An in-memory file system that can simulate a power cut ([`SimFs::crash`]).
///
/// Each `SimFs` value is a view bound to one "boot": after `crash`, every operation through the
/// old view (and every file handle opened through it) fails, as the process that used it is gone.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
    generation: u64,
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    generation: u64,
    ino: u64,
}

fn dead() -> io::Error {
    io::Error::other("simulated machine crashed")
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// A fresh, empty simulated disk.
    pub fn new() -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(SimState::default())),
            generation: 0,
        }
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, SimState>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.generation != self.generation || st.cut {
            return Err(dead());
        }
        Ok(st)
    }

    /// Simulates a power cut and reboot; returns the view for the new boot. Unsynced directory
    /// changes are undone; each file keeps its synced contents plus a random prefix of whatever
    /// unsynced bytes were appended after them (a torn write). Old views and handles stop working.
    pub fn crash(&self) -> SimFs {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.generation += 1;
        st.cut = false;
        st.ops_left = None;
        for ino in st.inodes.values_mut() {
            let synced_len = ino.synced.len();
            let extends =
                ino.current.len() > synced_len && ino.current[..synced_len] == ino.synced[..];
            if extends {
                let extra = ino.current.len() - synced_len;
                let keep = fastrand::usize(0..=extra);
                ino.current.truncate(synced_len + keep);
            } else {
                ino.current = ino.synced.clone();
            }
            ino.synced = ino.current.clone();
        }
        st.names = st.durable_names.clone();
        let live: std::collections::HashSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|k, _| live.contains(k));
        SimFs {
            state: self.state.clone(),
            generation: st.generation,
        }
    }

    /// Limits the simulated disk to `bytes` (None: unlimited); writes past it fail with
    /// `StorageFull` and leave the file unchanged.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity = bytes;
    }

    /// Schedules a power cut: the next `ops` mutating operations (writes, truncations, syncs,
    /// file creations, renames, removals, directory syncs) succeed, then every operation fails
    /// as if the machine were off, until [`SimFs::crash`]. Crashing at each `ops` in turn
    /// exercises every intermediate on-disk state of a multi-step operation.
    pub fn cut_power_after(&self, ops: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ops_left = Some(ops);
    }

    /// Whether a scheduled power cut has happened (see [`SimFs::cut_power_after`]).
    pub fn power_is_cut(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).cut
    }

    /// Bytes currently held by the simulated disk (for setting a capacity just above it).
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).used()
    }

    /// Makes every `sync` fail (true) or succeed (false).
    pub fn set_fail_sync(&self, fail: bool) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail_sync = fail;
    }

    /// Flips one bit of the file at `path` (its current and synced contents): simulated bit rot.
    pub fn corrupt(&self, path: &Path, offset: usize) -> io::Result<()> {
        let mut st = self.lock()?;
        let ino = *st.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        let node = st.inodes.get_mut(&ino).ok_or(io::ErrorKind::NotFound)?;
        if offset < node.current.len() {
            node.current[offset] ^= 0x10;
        }
        if offset < node.synced.len() {
            node.synced[offset] ^= 0x10;
        }
        Ok(())
    }

    /// The current contents of the file at `path`.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock()?;
        let ino = st.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(st.inodes[ino].current.clone())
    }
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut SimState, u64) -> io::Result<R>) -> io::Result<R> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.generation != self.generation || st.cut {
            return Err(dead());
        }
        f(&mut st, self.ino)
    }
}

impl FileHandle for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, ino| {
            let data = &st.inodes[&ino].current;
            let off = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        })
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.mutate()?;
            let end = offset as usize + data.len();
            let cur_len = st.inodes[&ino].current.len();
            if let Some(cap) = st.capacity {
                let grow = end.saturating_sub(cur_len) as u64;
                if st.used() + grow > cap {
                    return Err(io::ErrorKind::StorageFull.into());
                }
            }
            let node = st.inodes.get_mut(&ino).expect("inode");
            if node.current.len() < end {
                node.current.resize(end, 0);
            }
            node.current[offset as usize..end].copy_from_slice(data);
            Ok(())
        })
    }
    fn size(&self) -> io::Result<u64> {
        self.with(|st, ino| Ok(st.inodes[&ino].current.len() as u64))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.mutate()?;
            st.inodes
                .get_mut(&ino)
                .expect("inode")
                .current
                .resize(len as usize, 0);
            Ok(())
        })
    }
    fn sync(&self) -> io::Result<()> {
        self.with(|st, ino| {
            st.mutate()?;
            if st.fail_sync {
                return Err(io::Error::other("simulated fsync failure"));
            }
            let node = st.inodes.get_mut(&ino).expect("inode");
            node.synced = node.current.clone();
            Ok(())
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implicit (any path prefix) and always durable in the simulation.
        self.lock().map(|_| ())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>> {
        let mut st = self.lock()?;
        let ino = match st.names.get(path) {
            Some(&ino) => ino,
            None if create => {
                st.mutate()?;
                st.next_ino += 1;
                let ino = st.next_ino;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), ino);
                ino
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            generation: self.generation,
            ino,
        }))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock()?;
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock()?;
        st.mutate()?;
        let ino = st.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock()?;
        st.mutate()?;
        st.names.remove(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock()?;
        st.mutate()?;
        if st.fail_sync {
            return Err(io::Error::other("simulated fsync failure"));
        }
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_names.extend(entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_crash_drops_unsynced_state() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        let a = fs.open(&d.join("a"), true).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync().unwrap();
        fs.sync_dir(d).unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let b = fs.open(&d.join("b"), true).unwrap();
        b.write_all_at(b"x", 0).unwrap();
        b.sync().unwrap(); // data synced, directory entry not
        let fs2 = fs.crash();
        assert!(a.size().is_err(), "old handles are dead");
        let mut names = fs2.list(d).unwrap();
        names.sort();
        assert_eq!(names, vec!["a"]);
        let data = fs2.read_file(&d.join("a")).unwrap();
        assert!(data.starts_with(b"hello") && b"hello world".starts_with(&data));
    }

    #[test]
    fn sim_unsynced_remove_and_rename_are_undone() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        let a = fs.open(&d.join("a"), true).unwrap();
        a.write_all_at(b"A", 0).unwrap();
        a.sync().unwrap();
        fs.sync_dir(d).unwrap();
        fs.rename(&d.join("a"), &d.join("b")).unwrap();
        let fs2 = fs.crash();
        assert_eq!(fs2.list(d).unwrap(), vec!["a"]);
        fs2.remove(&d.join("a")).unwrap();
        let fs3 = fs2.crash();
        assert_eq!(fs3.read_file(&d.join("a")).unwrap(), b"A");
    }

    #[test]
    fn sim_power_cut_stops_everything_until_crash() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        let a = fs.open(&d.join("a"), true).unwrap();
        fs.cut_power_after(2);
        a.write_all_at(b"abc", 0).unwrap();
        a.sync().unwrap();
        assert!(!fs.power_is_cut());
        assert!(fs.sync_dir(d).is_err(), "third mutation is refused");
        assert!(fs.power_is_cut());
        assert!(a.size().is_err() && fs.list(d).is_err(), "reads fail too");
        let fs2 = fs.crash();
        // The directory entry was never synced.
        assert!(fs2.list(d).unwrap().is_empty());
        let b = fs2.open(&d.join("b"), true).unwrap();
        b.write_all_at(b"ok", 0).unwrap();
    }

    #[test]
    fn sim_capacity_gives_storage_full() {
        let fs = SimFs::new();
        fs.set_capacity(Some(4));
        let f = fs.open(Path::new("/d/f"), true).unwrap();
        f.write_all_at(b"1234", 0).unwrap();
        let e = f.write_all_at(b"5", 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.size().unwrap(), 4);
    }
}
