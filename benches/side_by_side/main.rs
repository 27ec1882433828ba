//! Side-by-side load generator: runs the same scenarios against natter and nats-server (and,
//! when installed, Debian's older nats-server) and prints one markdown table of medians.
//!
//! It speaks the NATS protocol over plain blocking TCP with a thread per busy connection, writes
//! PUBs in pre-built 256 KiB batches and only counts received bytes, so that on a small machine
//! the server rather than the client is the bottleneck (the CPU-split table says where that
//! failed). Every run gets a fresh server process; rounds alternate the servers. Run it with
//! `make bench`, or `cargo bench --bench side_by_side -- --natter PATH --nats-server PATH
//! [--nats-server-old PATH] [--rounds 3] [--scale 1.0] [--only pub_16b,reqreply] [--flood]`
//! (`--flood` turns off the publishers' flow control, see `client::Window`;
//! `BENCH_PERF=/tmp/prof` in the environment profiles each server under load with perf).
//! Without `--bench` (as `cargo test --all-targets` runs it) it checks its own byte accounting
//! and frame parsing, then runs each JetStream scenario once with a few dozen or hundred
//! messages (the debug natter, and nats-server when found), in a few seconds.

mod client;
mod consumer;
mod idle;
mod jetstream;
mod latency;
mod report;
mod routing;
mod scenarios;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use report::Results;
use server::Binary;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Where Debian's nats-server package (2.9 on bookworm) installs the binary.
const DEBIAN_NATS_SERVER: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// Command-line options.
struct Options {
    bench: bool,
    binaries: Vec<Binary>,
    rounds: usize,
    scale: f64,
    only: Option<Vec<String>>,
    flood: bool,
}

fn parse_args() -> Result<Options> {
    let mut natter = PathBuf::from(env!("CARGO_BIN_EXE_natter"));
    let mut current = Some(PathBuf::from(".venv/bin/nats-server")).filter(|p| p.exists());
    let mut old = DEBIAN_NATS_SERVER
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let mut options = Options {
        bench: false,
        binaries: Vec::new(),
        rounds: 3,
        scale: 1.0,
        only: None,
        flood: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => options.bench = true,
            "--natter" => natter = PathBuf::from(value()?),
            "--nats-server" => current = Some(PathBuf::from(value()?)),
            "--nats-server-old" => old = Some(PathBuf::from(value()?)).filter(|p| p.exists()),
            "--rounds" => options.rounds = value()?.parse()?,
            "--scale" => options.scale = value()?.parse()?,
            "--flood" => options.flood = true,
            "--only" => options.only = Some(value()?.split(',').map(String::from).collect()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    options.binaries.push(Binary::probe(&natter, "natter"));
    options.binaries[0].label = "natter".to_string();
    options.binaries[0].natter = true;
    options
        .binaries
        .extend(current.map(|p| Binary::probe(&p, "nats-server")));
    options
        .binaries
        .extend(old.map(|p| Binary::probe(&p, "nats-server (old)")));
    Ok(options)
}

/// Raises the soft open-files limit to the hard one; servers started later inherit it.
fn raise_fd_limit() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// The scenarios the options select.
fn selected(options: &Options) -> Vec<scenarios::Scenario> {
    scenarios::all(
        options.scale,
        (!options.flood).then_some(scenarios::MAX_LAG),
    )
    .into_iter()
    .filter(|s| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == s.name))
    })
    .collect()
}

/// Runs every scenario `rounds` times per binary, alternating binaries. A scenario whose other
/// servers' runs are those of another selected scenario (`others_from`) runs natter only.
fn measure(binaries: &[Binary], rounds: usize, scenarios: Vec<scenarios::Scenario>) -> Results {
    let shared_from = |scenario: &scenarios::Scenario| {
        let from = scenario.others_from?;
        scenarios.iter().position(|s| s.name == from)
    };
    let shared: Vec<Option<usize>> = scenarios.iter().map(shared_from).collect();
    let mut results = Results {
        runs: vec![vec![Vec::new(); binaries.len()]; scenarios.len()],
        scenarios,
        binaries: binaries.to_vec(),
        failures: Vec::new(),
    };
    for round in 1..=rounds {
        for (s, scenario) in results.scenarios.iter().enumerate() {
            for (b, binary) in binaries.iter().enumerate() {
                if b > 0 && shared[s].is_some() {
                    continue;
                }
                match scenarios::run(scenario, binary) {
                    Ok(sample) => {
                        eprintln!(
                            "round {round} {} {}: {}",
                            scenario.name,
                            binary.label,
                            brief(&sample)
                        );
                        results.runs[s][b].push(sample);
                    }
                    Err(e) => {
                        let failure = format!(
                            "round {round} {} {}: FAILED: {e}",
                            scenario.name, binary.label
                        );
                        eprintln!("{failure}");
                        results.failures.push(failure);
                    }
                }
            }
        }
    }
    for (s, from) in shared.iter().enumerate() {
        if let Some(from) = *from {
            for b in 1..binaries.len() {
                results.runs[s][b] = results.runs[from][b].clone();
            }
        }
    }
    results
}

/// The smoke test `cargo test` runs: every JetStream scenario once, with a few messages.
fn smoke(options: &Options) -> ExitCode {
    let scenarios = scenarios::all(1.0, None)
        .into_iter()
        .filter_map(|mut s| match s.load {
            scenarios::Load::JsPublish { in_flight, .. } => {
                s.count = if in_flight > 1 { 600 } else { 8 };
                Some(s)
            }
            scenarios::Load::JsConsume(_) => {
                s.count = 6 * consumer::BATCH;
                Some(s)
            }
            _ => None,
        })
        .collect();
    let results = measure(&options.binaries, 1, scenarios);
    if !results.failures.is_empty() {
        eprintln!(
            "side_by_side: smoke run FAILED:\n{}",
            results.failures.join("\n")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One progress line.
fn brief(s: &scenarios::Sample) -> String {
    let mut line = format!(
        "{:.0} msgs/s in {:.2} s, cpu: server {:.2} s, generator {:.2} s, other {:.2} s; peak rss {} kB",
        s.msgs_per_sec(),
        s.elapsed.as_secs_f64(),
        s.server_cpu,
        s.gen_cpu,
        s.other_cpu,
        s.peak_rss_kb
    );
    if let Some([p50, p90, p99, p999]) = s.latency_us {
        line += &format!(", rtt p50 {p50:.1} p90 {p90:.1} p99 {p99:.1} p99.9 {p999:.1} µs");
    }
    if let Some(bytes) = s.bytes_per_read {
        line += &format!(", {bytes:.0} B/read");
    }
    if let Some(kb) = s.rss_per_conn_kb {
        line += &format!(", {kb:.2} kB/conn");
    }
    line
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("side_by_side: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !options.bench {
        client::self_check();
        jetstream::self_check();
        consumer::self_check();
        if smoke(&options) == ExitCode::FAILURE {
            return ExitCode::FAILURE;
        }
        println!("side_by_side: self-check and JetStream smoke run passed; run the benchmark with `make bench`");
        return ExitCode::SUCCESS;
    }
    match raise_fd_limit() {
        Ok(limit) if limit < 10_500 => eprintln!("note: open-files limit {limit} caps idle_10k"),
        Ok(_) => {}
        Err(e) => eprintln!("note: could not raise the open-files limit: {e}"),
    }
    for binary in &options.binaries {
        eprintln!("{}: {}", binary.label, display(&binary.path));
    }
    let results = measure(&options.binaries, options.rounds, selected(&options));
    println!(
        "\n{}\n{}\n{}",
        results.table(),
        results.cpu_split(),
        results.machine_lines()
    );
    if results.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{} run(s) FAILED:\n{}",
        results.failures.len(),
        results.failures.join("\n")
    );
    ExitCode::FAILURE
}

fn display(path: &Path) -> String {
    path.canonicalize()
        .unwrap_or(path.to_path_buf())
        .display()
        .to_string()
}
