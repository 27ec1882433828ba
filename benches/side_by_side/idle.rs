//! Memory per idle connection: many connections, each with `CONNECT`, one `SUB` and a PING
//! answered, then the growth of the server's resident memory divided by their number.

use std::thread;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::scenarios::{Meter, Sample, Scenario, RUN_TIMEOUT};
use crate::server::Server;
use crate::Result;

/// Threads opening connections in parallel.
const OPENERS: u64 = 4;
/// Pause before each memory reading, for the server to settle.
const SETTLE: Duration = Duration::from_millis(500);

pub fn run(server: &mut Server, scenario: &Scenario) -> Result<Sample> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let count = scenario.count.min(connection_budget());
    thread::sleep(SETTLE);
    let before = server.status_kb("VmRSS")?;
    let meter = Meter::start(server)?;
    let (port, start) = (server.port, Instant::now());
    let conns = thread::scope(|s| -> Result<Vec<Conn>> {
        let openers: Vec<_> = (0..OPENERS)
            .map(|t| s.spawn(move || open_idle(port, t, count, deadline)))
            .collect();
        let mut conns = Vec::with_capacity(count as usize);
        for opener in openers {
            conns.extend(opener.join().map_err(|_| "opener panicked")??);
        }
        Ok(conns)
    })?;
    let mut sample = meter.finish(server, 0, 0, 0, start.elapsed())?;
    thread::sleep(SETTLE);
    let after = server.status_kb("VmRSS")?;
    sample.rss_per_conn_kb = Some(after.saturating_sub(before) as f64 / conns.len() as f64);
    // Close the server side first: the sockets' TIME_WAIT then lands on the server's port,
    // not on 10,000 of the client's ephemeral ports.
    server.stop();
    drop(conns);
    Ok(sample)
}

/// Opener `t` of [`OPENERS`] opens connections `t, t + OPENERS, …` below `count`.
fn open_idle(port: u16, t: u64, count: u64, deadline: Instant) -> Result<Vec<Conn>> {
    (t..count)
        .step_by(OPENERS as usize)
        .map(|i| Conn::open(port, format!("SUB idle.{i} 1\r\n").as_bytes(), deadline))
        .collect()
}

/// Connections the file-descriptor limit leaves room for (with some to spare).
fn connection_budget() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft.saturating_sub(256))
}
