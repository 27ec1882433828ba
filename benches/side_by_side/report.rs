//! Medians over rounds, the markdown table (natter against each other server, with ratios
//! oriented so that > 1 always means natter did better), the CPU split that shows when the
//! load generator rather than the server was the bottleneck, and one machine-readable line per
//! scenario and server.

use crate::scenarios::{Load, Sample, Scenario};
use crate::server::Binary;

/// Everything measured: `runs[scenario][binary]` holds one sample per successful round.
pub struct Results {
    pub scenarios: Vec<Scenario>,
    pub binaries: Vec<Binary>,
    pub runs: Vec<Vec<Vec<Sample>>>,
    pub failures: Vec<String>,
}

/// One table row: a median of one value over the rounds.
struct Metric {
    name: &'static str,
    lower_is_better: bool,
    value: Box<dyn Fn(&Sample) -> f64>,
    show: fn(f64, &Scenario) -> String,
}

fn metric(
    name: &'static str,
    lower_is_better: bool,
    value: impl Fn(&Sample) -> f64 + 'static,
    show: fn(f64, &Scenario) -> String,
) -> Metric {
    Metric {
        name,
        lower_is_better,
        value: Box::new(value),
        show,
    }
}

fn metrics(load: Load) -> Vec<Metric> {
    let msgs = metric("msgs/s", false, Sample::msgs_per_sec, |v, s| {
        match s.payload {
            0 => si(v),
            p => format!("{} ({:.0} MB/s)", si(v), v * p as f64 / 1e6),
        }
    });
    let cpu = metric(
        "server CPU s",
        true,
        |s| s.server_cpu,
        |v, _| format!("{v:.2}"),
    );
    let peak = metric(
        "server peak RSS MiB",
        true,
        |s| s.peak_rss_kb as f64,
        |v, _| format!("{:.1}", v / 1024.0),
    );
    let latency = |name, i: usize| {
        metric(
            name,
            true,
            move |s: &Sample| latency(s, i),
            |v, _| format!("{v:.1}"),
        )
    };
    match load {
        Load::RequestReply(_) | Load::JsPublish { in_flight: 1, .. } => vec![
            latency("p50 µs", 0),
            latency("p90 µs", 1),
            latency("p99 µs", 2),
            latency("p99.9 µs", 3),
            msgs,
            cpu,
            peak,
        ],
        Load::Idle => vec![
            metric("server RSS KiB/conn", true, rss_per_conn, |v, _| {
                format!("{v:.2}")
            }),
            peak,
            cpu,
        ],
        _ => vec![msgs, cpu, peak],
    }
}

/// Round-trip percentile `i` (p50, p90, p99, p99.9) in µs; NaN when not measured.
fn latency(sample: &Sample, i: usize) -> f64 {
    sample.latency_us.map_or(f64::NAN, |l| l[i])
}

fn rss_per_conn(sample: &Sample) -> f64 {
    sample.rss_per_conn_kb.unwrap_or(f64::NAN)
}

/// 12.3M, 456.7k, 89.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The median of `value` over `samples` (NaN when there are none).
fn median(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(value).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Results {
    /// The comparison table in markdown.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "Medians of the rounds. Ratio > 1 means natter is better: natter/other for msgs/s, \
             other/natter for latency, CPU seconds and memory. msgs/s counts messages published \
             (fan-out delivers each 4 or 16 times, wildcard 3 times); MB/s is their payload; \
             server CPU s is for the same fixed work on every server.\n\n",
        );
        if self
            .scenarios
            .iter()
            .any(|s| matches!(s.load, Load::JsPublish { .. }))
        {
            out += "JetStream: publish with ack to a file-storage stream, one connection, each \
                    publish with its own reply subject; p50… is the publish-to-ack round trip. \
                    The other servers run their defaults: nats-server acks before fsync and \
                    fsyncs every 2 min. \"natter fsyncs before ack\" is natter's default \
                    (sync_interval: always): it acks only after fdatasync, with group commit \
                    (one fdatasync for every publish pending), so one at a time a round trip \
                    includes a whole fsync. \"natter syncs every 2 min\" is natter with \
                    sync_interval: \"2m\", nats-server's guarantee; both rows compare against \
                    the same runs of the other servers.\n\n";
        }
        if self
            .scenarios
            .iter()
            .any(|s| matches!(s.load, Load::JsConsume(_)))
        {
            out += "JetStream consumers: a file-storage stream is filled with the messages first \
                    (publishes with acks, not timed), then one connection consumes them all: a \
                    durable pull consumer with explicit acks, one request for a batch of 100 at \
                    a time, each message acked with +ACK; or a durable push consumer with \
                    ack_policy none and flow control, answered by the client (timed from its \
                    CONSUMER.CREATE). msgs/s counts messages \
                    consumed; every stream sequence must arrive exactly once. All servers run \
                    their defaults.\n\n";
        }
        out += "| scenario |";
        for (i, binary) in self.binaries.iter().enumerate() {
            out += &format!(" {} |", binary.label);
            if i > 0 {
                out += " ratio |";
            }
        }
        out += &format!("\n|---|{}\n", "---|".repeat(2 * self.binaries.len() - 1));
        for (s, scenario) in self.scenarios.iter().enumerate() {
            for metric in metrics(scenario.load) {
                out += &self.row(s, scenario, &metric);
            }
        }
        out
    }

    fn row(&self, s: usize, scenario: &Scenario, metric: &Metric) -> String {
        let medians: Vec<f64> = self.runs[s]
            .iter()
            .map(|samples| median(samples, &metric.value))
            .collect();
        let mut row = format!("| {} — {} |", scenario.title, metric.name);
        for (b, &value) in medians.iter().enumerate() {
            row += &match value.is_nan() {
                true => " FAIL |".to_string(),
                false => format!(" {} |", (metric.show)(value, scenario)),
            };
            if b > 0 {
                let ratio = match metric.lower_is_better {
                    true => value / medians[0],
                    false => medians[0] / value,
                };
                row += &format!(" {} |", show_ratio(ratio));
            }
        }
        row + "\n"
    }

    /// Cores busy during the load (CPU seconds / elapsed), server and generator, per binary.
    pub fn cpu_split(&self) -> String {
        let mut out = String::from(
            "Cores busy during the load: server + load generator (+ anything else running on the \
             machine, which disturbs the numbers); 2.00 = a whole 2-CPU machine.\n\n\
             | scenario |",
        );
        for binary in &self.binaries {
            out += &format!(" {} |", binary.label);
        }
        out += &format!("\n|---|{}\n", "---|".repeat(self.binaries.len()));
        for (s, scenario) in self.scenarios.iter().enumerate() {
            out += &format!("| {} |", scenario.title);
            for samples in &self.runs[s] {
                let busy =
                    |cpu: fn(&Sample) -> f64| median(samples, |x| cpu(x) / x.elapsed.as_secs_f64());
                out += &format!(
                    " {:.2} + {:.2} (+ {:.2}) |",
                    busy(|x| x.server_cpu),
                    busy(|x| x.gen_cpu),
                    busy(|x| x.other_cpu)
                );
            }
            out += "\n";
        }
        out
    }

    /// `bench scenario=… server=… key=value …`, one line per scenario and binary.
    pub fn machine_lines(&self) -> String {
        let mut out = String::new();
        for (s, scenario) in self.scenarios.iter().enumerate() {
            for (b, binary) in self.binaries.iter().enumerate() {
                out += &machine_line(scenario, binary, &self.runs[s][b]);
            }
        }
        out
    }
}

fn machine_line(scenario: &Scenario, binary: &Binary, samples: &[Sample]) -> String {
    let m = |value: fn(&Sample) -> f64| median(samples, value);
    let mut line = format!(
        "bench scenario={} server={} rounds={} msgs_per_sec={:.0} mb_per_sec={:.2} \
         delivered_per_sec={:.0} cpu_secs={:.3} peak_rss_kb={:.0} gen_cpu_secs={:.3} other_cpu_secs={:.3} elapsed_secs={:.3}",
        scenario.name,
        binary.key(),
        samples.len(),
        m(Sample::msgs_per_sec),
        m(Sample::mb_per_sec),
        m(Sample::delivered_per_sec),
        m(|s| s.server_cpu),
        m(|s| s.peak_rss_kb as f64),
        m(|s| s.gen_cpu),
        m(|s| s.other_cpu),
        m(|s| s.elapsed.as_secs_f64()),
    );
    if samples.iter().any(|s| s.latency_us.is_some()) {
        for (i, name) in ["p50_us", "p90_us", "p99_us", "p999_us"].iter().enumerate() {
            let value = median(samples, |s| latency(s, i));
            line += &format!(" {name}={value:.1}");
        }
    }
    if samples.iter().any(|s| s.bytes_per_read.is_some()) {
        let value = median(samples, |s| s.bytes_per_read.unwrap_or(f64::NAN));
        line += &format!(" bytes_per_read={value:.0}");
    }
    if let Load::Idle = scenario.load {
        line += &format!(" rss_per_conn_kb={:.2}", m(rss_per_conn));
    }
    line + "\n"
}

fn show_ratio(ratio: f64) -> String {
    match ratio.is_finite() {
        true => format!("{ratio:.2}x"),
        false => "—".to_string(),
    }
}
