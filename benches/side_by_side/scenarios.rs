//! The scenarios, what one run of one of them measures ([`Sample`]), and the throughput runs:
//! pub-only and every publisher/subscriber shape (1:1, fan-out, fan-in, queue group).
//! JetStream publishing lives in `jetstream.rs`, consumers in `consumer.rs`, request/reply in
//! `latency.rs`.

use std::net::TcpStream;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{drain, msg_frame_len, payload, pub_frame, Conn, Expected, PubBatch, Window};
use crate::latency::Pin;
use crate::server::{cpu_secs, machine_busy_secs, Binary, Jetstream, Server};
use crate::{consumer, idle, jetstream, latency, routing, Result};

/// How long one scenario run may take before it fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The shape of the load.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// One publisher, nobody subscribed.
    PubOnly,
    /// Publishers and subscribers on one subject; `queue` puts the subscribers in one group.
    PubSub {
        publishers: usize,
        subscribers: usize,
        queue: bool,
    },
    /// Sequential request/reply round trips with the given CPU placement.
    RequestReply(Pin),
    /// 10,000 literal subscriptions plus `w.*.x` and `w.>`; the publisher cycles the subjects.
    Wildcard,
    /// Many idle connections with one subscription each; memory per connection.
    Idle,
    /// JetStream publishes to a file stream, each acked, at most `in_flight` unacked; with one,
    /// round-trip latency. `jetstream` says how natter syncs; the others run their defaults.
    JsPublish {
        in_flight: usize,
        jetstream: Jetstream,
    },
    /// A file stream filled with the scenario's messages (not timed), then all of them consumed
    /// by one pull consumer (explicit acks, batches of 100) or push consumer (no acks, flow
    /// control).
    JsConsume(consumer::Kind),
}

/// One scenario: a name for machine-readable lines, a title for the table, the load and its size.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub load: Load,
    pub payload: usize,
    /// Messages published (round trips for request/reply, connections for idle).
    pub count: u64,
    /// Most bytes a subscriber may fall behind before publishers wait; `None` floods.
    pub max_lag: Option<u64>,
    /// A scenario with the same load for every server but natter, whose runs of the other
    /// servers this one reports rather than repeating them (when both are selected).
    pub others_from: Option<&'static str>,
}

/// The default flow-control window: far below the 64 MiB `max_pending` of both servers.
pub const MAX_LAG: u64 = 8 << 20;

/// Every scenario, sized at `scale` 1 for about 1 s of load on natter and 2–5 s on nats-server
/// 2.15 on a two-core machine (JetStream: 1–3 s). The size is fixed, not timed, so CPU seconds
/// compare directly.
pub fn all(scale: f64, max_lag: Option<u64>) -> Vec<Scenario> {
    let pubsub = |publishers, subscribers, queue| Load::PubSub {
        publishers,
        subscribers,
        queue,
    };
    let js = |in_flight, jetstream| Load::JsPublish {
        in_flight,
        jetstream,
    };
    let (always, interval) = (Jetstream::Default, Jetstream::NatterInterval);
    let (pull, push) = (
        Load::JsConsume(consumer::Kind::Pull),
        Load::JsConsume(consumer::Kind::Push),
    );
    #[rustfmt::skip]
    let table = [
        ("pub_16b", "pub-only 16 B", Load::PubOnly, 16, 15e6, 1),
        ("pub_1k", "pub-only 1 KiB", Load::PubOnly, 1024, 3e6, 1),
        ("pubsub_1_1", "pub/sub 1:1 16 B", pubsub(1, 1, false), 16, 6e6, 1),
        ("fanout_1_4", "fan-out 1:4 16 B", pubsub(1, 4, false), 16, 2.5e6, 1),
        ("fanout_1_16", "fan-out 1:16 16 B", pubsub(1, 16, false), 16, 7e5, 1),
        ("fanin_4_1", "fan-in 4:1 16 B", pubsub(4, 1, false), 16, 5e6, 4),
        ("queue_1_4", "queue group 1:4 16 B", pubsub(1, 4, true), 16, 4.5e6, 1),
        ("reqreply", "request/reply 16 B, one CPU", Load::RequestReply(Pin::SameCpu), 16, 40e3, 1),
        ("reqreply_2cpu", "request/reply 16 B, two CPUs", Load::RequestReply(Pin::SplitCpus), 16, 8e3, 1),
        ("wildcard", "wildcard routing 16 B", Load::Wildcard, 16, 9e5, routing::SUBJECTS),
        ("idle_10k", "10,000 idle connections", Load::Idle, 0, 10e3, 1),
        ("js_pub_16b", "JetStream pub 16 B, 256 in flight, natter fsyncs before ack (nats-server: no)", js(IN_FLIGHT, always), 16, 4e5, 1),
        ("js_pub_16b_2m", "JetStream pub 16 B, 256 in flight, natter syncs every 2 min (as nats-server)", js(IN_FLIGHT, interval), 16, 4e5, 1),
        ("js_pub_1k", "JetStream pub 1 KiB, 256 in flight, natter fsyncs before ack (nats-server: no)", js(IN_FLIGHT, always), 1024, 2e5, 1),
        ("js_pub_1k_2m", "JetStream pub 1 KiB, 256 in flight, natter syncs every 2 min (as nats-server)", js(IN_FLIGHT, interval), 1024, 2e5, 1),
        ("js_rtt_16b", "JetStream pub 16 B one at a time, natter fsyncs before ack (nats-server: no)", js(1, always), 16, 8e3, 1),
        ("js_rtt_16b_2m", "JetStream pub 16 B one at a time, natter syncs every 2 min (as nats-server)", js(1, interval), 16, 8e3, 1),
        ("js_rtt_1k", "JetStream pub 1 KiB one at a time, natter fsyncs before ack (nats-server: no)", js(1, always), 1024, 8e3, 1),
        ("js_rtt_1k_2m", "JetStream pub 1 KiB one at a time, natter syncs every 2 min (as nats-server)", js(1, interval), 1024, 8e3, 1),
        ("js_pull_16b", "JetStream pull consumer 16 B, batch 100, explicit acks", pull, 16, 3e5, consumer::BATCH),
        ("js_pull_1k", "JetStream pull consumer 1 KiB, batch 100, explicit acks", pull, 1024, 2e5, consumer::BATCH),
        ("js_push_16b", "JetStream push consumer 16 B, no acks, flow control", push, 16, 6e5, 1),
        ("js_push_1k", "JetStream push consumer 1 KiB, no acks, flow control", push, 1024, 2e5, 1),
    ];
    table
        .into_iter()
        .map(|(name, title, load, payload, count, multiple)| {
            let count = match load {
                Load::Idle => count as u64,
                _ => ((count * scale) as u64 / multiple).max(1) * multiple,
            };
            let others_from = match load {
                Load::JsPublish {
                    jetstream: Jetstream::NatterInterval,
                    ..
                } => name.strip_suffix("_2m"),
                _ => None,
            };
            Scenario {
                name,
                title,
                load,
                payload,
                count,
                max_lag,
                others_from,
            }
        })
        .collect()
}

/// Publishes a JetStream publisher keeps unacknowledged in the throughput scenarios.
pub const IN_FLIGHT: usize = 256;

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub published: u64,
    pub delivered: u64,
    pub payload: usize,
    pub elapsed: Duration,
    /// Server CPU seconds (user + system) during the load.
    pub server_cpu: f64,
    /// The load generator's own CPU seconds during the load.
    pub gen_cpu: f64,
    /// CPU seconds everything else on the machine used during the load (interference).
    pub other_cpu: f64,
    /// Server peak resident memory (VmHWM) at the end of the run.
    pub peak_rss_kb: u64,
    /// Round-trip percentiles p50, p90, p99, p99.9 in µs (request/reply only).
    pub latency_us: Option<[f64; 4]>,
    /// Mean bytes a subscriber got per read (pub/sub and wildcard only).
    pub bytes_per_read: Option<f64>,
    /// Server memory per idle connection (idle only).
    pub rss_per_conn_kb: Option<f64>,
}

impl Sample {
    pub fn msgs_per_sec(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.payload as f64 / 1e6
    }

    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `scenario` once against a fresh `binary` process; a failure quotes the server's log.
pub fn run(scenario: &Scenario, binary: &Binary) -> Result<Sample> {
    let cpus = match scenario.load {
        Load::RequestReply(pin) => pin.server_cpus(),
        _ => None,
    };
    let js = match scenario.load {
        Load::JsPublish { jetstream, .. } => Some(jetstream),
        Load::JsConsume(_) => Some(Jetstream::Default),
        _ => None,
    };
    let mut server = Server::start(binary, cpus, js)?;
    let server = &mut server;
    let result = match scenario.load {
        Load::PubOnly => pub_only(server, scenario),
        Load::PubSub {
            publishers,
            subscribers,
            queue,
        } => pub_sub(server, scenario, publishers, subscribers, queue),
        Load::RequestReply(pin) => latency::run(server, scenario, pin),
        Load::Wildcard => routing::run(server, scenario),
        Load::Idle => idle::run(server, scenario),
        Load::JsPublish { in_flight, .. } => jetstream::run(server, scenario, in_flight),
        Load::JsConsume(kind) => consumer::run(server, scenario, kind),
    };
    result.map_err(|e| format!("{e}\n  server log (last lines):\n{}", server.stderr_tail()).into())
}

/// With `BENCH_PERF=<prefix>` in the environment, each server is profiled while the load runs:
/// `perf record` (DWARF call graphs) attached to it writes `<prefix>.<server pid>`. A tool for
/// finding where time goes; the numbers of such a run are not comparable.
fn profile(server: &Server, prefix: std::ffi::OsString) -> std::process::Child {
    let mut out = prefix;
    out.push(format!(".{}", server.pid()));
    let perf = std::process::Command::new("perf")
        .args(["record", "-F", "2000", "--call-graph", "dwarf,16384", "-p"])
        .arg(server.pid().to_string())
        .arg("-o")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("BENCH_PERF needs perf on the PATH");
    // perf needs a moment to attach before the load starts.
    std::thread::sleep(Duration::from_millis(300));
    perf
}

/// CPU readings taken when the load starts; [`Meter::finish`] turns them into a [`Sample`].
pub struct Meter {
    /// `perf record` attached to the server (see [`profile`]).
    perf: Option<std::process::Child>,
    server_cpu: f64,
    gen_cpu: f64,
    machine: f64,
}

impl Meter {
    pub fn start(server: &Server) -> Result<Meter> {
        let perf = std::env::var_os("BENCH_PERF").map(|prefix| profile(server, prefix));
        Ok(Meter {
            perf,
            server_cpu: server.cpu_secs()?,
            gen_cpu: cpu_secs("/proc/self/stat")?,
            machine: machine_busy_secs()?,
        })
    }

    /// The sample for a load that published `published` and delivered `delivered` messages.
    pub fn finish(
        self,
        server: &mut Server,
        published: u64,
        delivered: u64,
        payload: usize,
        elapsed: Duration,
    ) -> Result<Sample> {
        if let Some(mut perf) = self.perf {
            // perf writes its file on SIGINT.
            let pid = nix::unistd::Pid::from_raw(perf.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = perf.wait();
        }
        server.check_alive()?;
        let server_cpu = server.cpu_secs()? - self.server_cpu;
        let gen_cpu = cpu_secs("/proc/self/stat")? - self.gen_cpu;
        let machine = machine_busy_secs()? - self.machine;
        Ok(Sample {
            published,
            delivered,
            payload,
            elapsed,
            server_cpu,
            gen_cpu,
            other_cpu: (machine - server_cpu - gen_cpu).max(0.0),
            peak_rss_kb: server.status_kb("VmHWM")?,
            ..Sample::default()
        })
    }
}

/// One publisher; done when a PING after the last PUB gets its PONG.
fn pub_only(server: &mut Server, scenario: &Scenario) -> Result<Sample> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut conn = Conn::open(server.port, b"", deadline)?;
    let batch = PubBatch::repeat(&pub_frame("bench", None, &payload(scenario.payload)));
    let window = Window::new(&[], scenario.count, None, deadline);
    let meter = Meter::start(server)?;
    let start = Instant::now();
    batch.publish(&mut conn.stream, scenario.count, &window)?;
    conn.ping_pong(deadline)?;
    let elapsed = start.elapsed();
    meter.finish(server, scenario.count, 0, scenario.payload, elapsed)
}

/// Publishers and subscribers on subject `bench`; done when every subscriber has every byte.
fn pub_sub(
    server: &mut Server,
    scenario: &Scenario,
    publishers: usize,
    subscribers: usize,
    queue: bool,
) -> Result<Sample> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let sub: &[u8] = if queue {
        b"SUB bench q 1\r\n"
    } else {
        b"SUB bench 1\r\n"
    };
    let mut readers = open_many(server.port, subscribers, sub, deadline)?;
    let mut writers = open_many(server.port, publishers, b"", deadline)?;
    let per_publisher = scenario.count / publishers as u64;
    let published = per_publisher * publishers as u64;
    let frame = msg_frame_len("bench", "1", None, scenario.payload);
    let groups = if queue { 1 } else { subscribers };
    let expected: Vec<Expected> = (0..groups)
        .map(|_| Expected::new(published * frame))
        .collect();
    let batch = PubBatch::repeat(&pub_frame("bench", None, &payload(scenario.payload)));
    let window = Window::new(&expected, published, scenario.max_lag, deadline);
    let meter = Meter::start(server)?;
    let (start, end) = pump(
        &mut readers,
        |i| &expected[i % groups],
        &mut writers,
        |stream| batch.publish(stream, per_publisher, &window),
        deadline,
    )?;
    for group in &expected {
        group.check("subscriber")?;
    }
    let delivered = if queue {
        published
    } else {
        published * subscribers as u64
    };
    let mut sample = meter.finish(server, published, delivered, scenario.payload, end - start)?;
    sample.bytes_per_read = Some(Expected::bytes_per_read(&expected));
    Ok(sample)
}

/// Starts every subscriber's reader and every publisher at once (reader `i` counts into
/// `group(i)`); the start and when the last subscriber had its last byte.
pub fn pump<'a>(
    readers: &mut [Conn],
    group: impl Fn(usize) -> &'a Expected,
    writers: &mut [Conn],
    publish: impl Fn(&mut TcpStream) -> Result<()> + Sync,
    deadline: Instant,
) -> Result<(Instant, Instant)> {
    let barrier = Barrier::new(readers.len() + writers.len() + 1);
    thread::scope(|s| {
        let reads: Vec<_> = readers
            .iter_mut()
            .enumerate()
            .map(|(i, conn)| {
                let (expected, barrier) = (group(i), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    drain(&mut conn.stream, expected, deadline)
                })
            })
            .collect();
        let writes: Vec<_> = writers
            .iter_mut()
            .map(|conn| {
                let (publish, barrier) = (&publish, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    publish(&mut conn.stream)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for write in writes {
            write.join().map_err(|_| "publisher panicked")??;
        }
        let mut end = start;
        for read in reads {
            end = end.max(read.join().map_err(|_| "subscriber panicked")??);
        }
        Ok((start, end))
    })
}

/// `count` connections, each set up with `setup`.
pub fn open_many(port: u16, count: usize, setup: &[u8], deadline: Instant) -> Result<Vec<Conn>> {
    (0..count)
        .map(|_| Conn::open(port, setup, deadline))
        .collect()
}
