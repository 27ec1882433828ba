//! A server under test: a child process started with nats-server's flags on a random port, plus
//! the `/proc` readings the bench reports (CPU time, resident and peak memory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Result;

/// One server binary to compare, with the label its column gets.
#[derive(Clone, Debug)]
pub struct Binary {
    pub label: String,
    pub path: PathBuf,
    /// natter rather than a reference server (it alone gets [`Jetstream::NatterInterval`]).
    pub natter: bool,
}

impl Binary {
    /// A binary labelled by what it prints for `--version` (e.g. `nats-server 2.15.1`).
    pub fn probe(path: &Path, fallback: &str) -> Binary {
        let version = Command::new(path)
            .arg("--version")
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default();
        let label = match version.split_once(": v") {
            Some((name, version)) => format!("{name} {version}"),
            None if version.is_empty() => fallback.to_string(),
            None => version,
        };
        Binary {
            label,
            path: path.to_path_buf(),
            natter: false,
        }
    }

    /// The short name used in machine-readable lines (`natter`, `nats-server-2.15.1`).
    pub fn key(&self) -> String {
        self.label.replace(' ', "-")
    }
}

/// How a server runs JetStream, with file storage in a fresh store directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jetstream {
    /// `-js -sd DIR`, the server's own defaults: natter fsyncs before it acks
    /// (`sync_interval: always`); nats-server acks at once and fsyncs every two minutes.
    Default,
    /// natter with `jetstream { sync_interval: "2m" }`, nats-server's default; other servers
    /// run with their defaults, as for [`Jetstream::Default`].
    NatterInterval,
}

/// A running server process; killed and reaped on drop, its directories removed.
pub struct Server {
    child: Child,
    dir: PathBuf,
    /// The JetStream store directory, if any (on disk, not in the temporary directory, which
    /// may be a tmpfs where an fsync costs nothing).
    store: Option<PathBuf>,
    pub port: u16,
}

impl Server {
    /// Starts `binary` on 127.0.0.1 with a random port, optionally pinned to `cpus` by `taskset`
    /// and with JetStream.
    pub fn start(
        binary: &Binary,
        cpus: Option<&str>,
        jetstream: Option<Jetstream>,
    ) -> Result<Server> {
        let dir = temp_dir()?;
        let store = jetstream.map(|_| store_dir()).transpose()?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpus]).arg(&binary.path);
                cmd
            }
            None => Command::new(&binary.path),
        };
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr"))?);
        if let (Some(mode), Some(store)) = (jetstream, &store) {
            if mode == Jetstream::NatterInterval && binary.natter {
                let conf = dir.join("jetstream.conf");
                let store = serde_json::to_string(&store.to_string_lossy())?;
                let text = format!("jetstream {{ store_dir: {store}, sync_interval: \"2m\" }}\n");
                std::fs::write(&conf, text)?;
                cmd.arg("-c").arg(conf);
            } else {
                cmd.args(["-js", "-sd"]).arg(store);
            }
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                // No server to drop yet: remove its directories here.
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(store) = &store {
                    let _ = std::fs::remove_dir_all(store);
                }
                return Err(format!("{}: {e}", binary.path.display()).into());
            }
        };
        let mut server = Server {
            child,
            dir,
            store,
            port: 0,
        };
        server.port = server.wait_for_port()?;
        Ok(server)
    }

    /// The process id (`taskset` execs the server, so it keeps the pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> Result<f64> {
        cpu_secs(&format!("/proc/{}/stat", self.pid()))
    }

    /// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`.
    pub fn status_kb(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("no {field} in /proc/{}/status", self.pid()).into())
    }

    /// Fails if the server has exited (crashed) since it started.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => {
                Err(format!("server exited with {status}: {}", self.stderr_tail()).into())
            }
            None => Ok(()),
        }
    }

    fn wait_for_port(&mut self) -> Result<u16> {
        let suffix = format!("_{}.ports", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.check_alive()?;
            if let Some(port) = read_ports_file(&self.dir, &suffix) {
                return Ok(port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("no ports file after 10 s: {}", self.stderr_tail()).into())
    }

    /// Kills the server and reaps it (idempotent).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines the server logged.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

/// CPU seconds (utime + stime) from a `/proc/.../stat` file.
pub fn cpu_secs(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        let field = fields.get(i).ok_or("short /proc stat line")?;
        Ok(field.parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks() as f64)
}

/// CPU seconds the whole machine has spent busy (all CPUs, from the `cpu` line of `/proc/stat`).
pub fn machine_busy_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy is everything but idle and iowait.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let busy = ticks.iter().take(8).sum::<u64>() - idle;
    Ok(busy as f64 / clock_ticks() as f64)
}

/// `getconf CLK_TCK`, read once (100 on Linux in practice).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The port in `<exe>_<pid>.ports` (`{"nats":["nats://127.0.0.1:port"]}`), once it exists.
fn read_ports_file(dir: &Path, suffix: &str) -> Option<u16> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().ends_with(suffix))?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    let url = json["nats"].get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// A fresh directory for one server's ports file and log.
fn temp_dir() -> Result<PathBuf> {
    fresh_dir(&std::env::temp_dir())
}

/// A fresh JetStream store directory under the target directory's `tmp`.
fn store_dir() -> Result<PathBuf> {
    fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn fresh_dir(parent: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!("natter-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
