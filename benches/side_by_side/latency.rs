//! Request/reply latency: one responder connection answers every request, one requester makes
//! sequential requests and times each round trip. Placement is pinned with `taskset` (see
//! [`Pin`]), so the numbers measure the server rather than where the scheduler put the threads;
//! as the requests are sequential, the sides never compete for a CPU when they share one.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use crate::client::{msg_frame_len, payload, pub_frame, read_polling, Conn, PingScanner};
use crate::scenarios::{Meter, Sample, Scenario, RUN_TIMEOUT};
use crate::server::Server;
use crate::Result;

const INBOX: &str = "_INBOX.bench";

/// Where the server and the two client threads run.
#[derive(Clone, Copy, Debug)]
pub enum Pin {
    /// All on CPU 0: no cross-CPU wake-ups, so the round trip is the server's work plus
    /// context switches. On a VM where waking another vCPU is expensive this is the number
    /// that compares servers.
    SameCpu,
    /// Server on CPU 0, client threads on CPU 1: includes two cross-CPU wake-ups per hop.
    SplitCpus,
}

impl Pin {
    /// The CPU list the server is pinned to (with `taskset -c`).
    pub fn server_cpus(self) -> Option<&'static str> {
        self.cpus().map(|(server, _)| server)
    }

    /// CPUs for the server and for the client threads (none on a one-CPU machine).
    fn cpus(self) -> Option<(&'static str, &'static str)> {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        match self {
            Pin::SameCpu => Some(("0", "0")),
            Pin::SplitCpus => (cpus >= 2).then_some(("0", "1")),
        }
    }
}

/// Runs the round trips against `server`, which was started pinned to `pin.server_cpus()`.
pub fn run(server: &mut Server, scenario: &Scenario, pin: Pin) -> Result<Sample> {
    let client_cpu = pin.cpus().map(|(_, client)| client);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut responder = Conn::open(server.port, b"SUB req 1\r\n", deadline)?;
    let mut requester = Conn::open(
        server.port,
        format!("SUB {INBOX} 1\r\n").as_bytes(),
        deadline,
    )?;
    let body = payload(scenario.payload);
    // Unmeasured round trips first, to warm caches, allocators and CPU frequency.
    let warm_up = scenario.count / 4;
    let total = warm_up + scenario.count;
    let done = AtomicBool::new(false);
    let meter = Meter::start(server)?;
    let start = Instant::now();
    let (rtts, answered) = thread::scope(|s| {
        let responder = s.spawn(|| {
            pin_current_thread(client_cpu)?;
            respond(&mut responder.stream, &body, &done)
        });
        let rtts = s
            .spawn(|| {
                pin_current_thread(client_cpu)?;
                request(&mut requester.stream, &body, total, deadline)
            })
            .join();
        done.store(true, Ordering::Relaxed);
        let answered = responder.join();
        (rtts, answered)
    });
    let elapsed = start.elapsed();
    let mut rtts = rtts.map_err(|_| "requester panicked")??;
    let answered = answered.map_err(|_| "responder panicked")??;
    if answered != total {
        return Err(format!("responder saw {answered} requests, expected {total}").into());
    }
    let mut sample = meter.finish(server, total, total, scenario.payload, elapsed)?;
    sample.latency_us = Some(percentiles(&mut rtts[warm_up as usize..]));
    Ok(sample)
}

/// Makes `total` sequential requests; the round-trip time of each in nanoseconds.
fn request(stream: &mut TcpStream, body: &[u8], total: u64, deadline: Instant) -> Result<Vec<u64>> {
    let request = pub_frame("req", Some(INBOX), body);
    let reply_len = msg_frame_len(INBOX, "1", None, body.len()) as usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut rtts = Vec::with_capacity(total as usize);
    let mut pings = PingScanner::default();
    for _ in 0..total {
        let sent = Instant::now();
        stream.write_all(&request)?;
        let mut got = 0;
        while got < reply_len {
            let n = read_polling(stream, &mut buf, deadline)?;
            got += pings.answer(stream, &buf[..n])? as usize;
        }
        if got != reply_len {
            return Err(format!("reply of {got} bytes, expected {reply_len}").into());
        }
        rtts.push(sent.elapsed().as_nanos() as u64);
    }
    Ok(rtts)
}

/// Answers each request (`MSG req 1 <inbox> <len>`, a known size) until `done`; how many it saw.
fn respond(stream: &mut TcpStream, body: &[u8], done: &AtomicBool) -> Result<u64> {
    let request_len = msg_frame_len("req", "1", Some(INBOX), body.len());
    let reply = pub_frame(INBOX, None, body);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pings = PingScanner::default();
    let (mut bytes, mut answered) = (0u64, 0u64);
    while !done.load(Ordering::Relaxed) {
        // A short deadline per read lets the loop notice `done`; time-outs are not errors here.
        let Ok(n) = read_polling(stream, &mut buf, Instant::now()) else {
            continue;
        };
        bytes += pings.answer(stream, &buf[..n])?;
        let complete = bytes / request_len;
        for _ in answered..complete {
            stream.write_all(&reply)?;
        }
        answered = complete;
    }
    if bytes != answered * request_len {
        return Err(format!("responder has {bytes} bytes, not a whole number of requests").into());
    }
    Ok(answered)
}

/// Pins the calling thread to `cpus` with `taskset -p` (its thread id from `/proc/thread-self`).
fn pin_current_thread(cpus: Option<&str>) -> Result<()> {
    let Some(cpus) = cpus else { return Ok(()) };
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .ok_or("no thread id")?
        .to_string_lossy()
        .to_string();
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", cpus, &tid])
        .stdout(std::process::Stdio::null())
        .status()?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("taskset -p -c {cpus} {tid} failed").into()),
    }
}

/// p50, p90, p99 and p99.9 of round-trip times in nanoseconds, in microseconds.
pub fn percentiles(rtts: &mut [u64]) -> [f64; 4] {
    rtts.sort_unstable();
    [0.5, 0.9, 0.99, 0.999].map(|q| {
        let rank = ((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len());
        rtts[rank - 1] as f64 / 1e3
    })
}
