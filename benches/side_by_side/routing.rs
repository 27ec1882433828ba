//! Wildcard routing: 10,000 literal subscriptions `w.<i>.x` spread over four connections, plus
//! `w.*.x` and `w.>` on a connection each. The publisher cycles through the 10,000 subjects, so
//! every message matches three subscriptions and no small match cache can hold them all.

use std::time::Instant;

use crate::client::{msg_frame_len, payload, pub_frame, Conn, Expected, PubBatch, Window};
use crate::scenarios::{pump, Meter, Sample, Scenario, RUN_TIMEOUT};
use crate::server::Server;
use crate::Result;

/// Distinct literal subjects, and the connections their subscriptions are spread over.
pub const SUBJECTS: u64 = 10_000;
const LITERAL_CONNS: u64 = 4;

fn subject(i: u64) -> String {
    format!("w.{i}.x")
}

/// One subscriber connection: its `SUB`s and the bytes one publishing cycle sends it.
struct Subscriber {
    setup: Vec<u8>,
    bytes_per_cycle: u64,
}

/// The literal subscriber `k` holds subjects `i ≡ k (mod 4)` with sid `i`.
fn literal(k: u64, payload: usize) -> Subscriber {
    let mut setup = Vec::new();
    let mut bytes_per_cycle = 0;
    for i in (k..SUBJECTS).step_by(LITERAL_CONNS as usize) {
        setup.extend_from_slice(format!("SUB {} {i}\r\n", subject(i)).as_bytes());
        bytes_per_cycle += msg_frame_len(&subject(i), &i.to_string(), None, payload);
    }
    Subscriber {
        setup,
        bytes_per_cycle,
    }
}

/// A subscriber to `pattern` (sid 1), which receives every message.
fn wildcard(pattern: &str, payload: usize) -> Subscriber {
    let bytes_per_cycle = (0..SUBJECTS)
        .map(|i| msg_frame_len(&subject(i), "1", None, payload))
        .sum();
    Subscriber {
        setup: format!("SUB {pattern} 1\r\n").into_bytes(),
        bytes_per_cycle,
    }
}

pub fn run(server: &mut Server, scenario: &Scenario) -> Result<Sample> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut subscribers: Vec<Subscriber> = (0..LITERAL_CONNS)
        .map(|k| literal(k, scenario.payload))
        .collect();
    subscribers.push(wildcard("w.*.x", scenario.payload));
    subscribers.push(wildcard("w.>", scenario.payload));
    let cycles = scenario.count / SUBJECTS;
    let mut readers = subscribers
        .iter()
        .map(|sub| Conn::open(server.port, &sub.setup, deadline))
        .collect::<Result<Vec<_>>>()?;
    let expected: Vec<Expected> = subscribers
        .iter()
        .map(|sub| Expected::new(sub.bytes_per_cycle * cycles))
        .collect();
    let body = payload(scenario.payload);
    let frames: Vec<Vec<u8>> = (0..SUBJECTS)
        .map(|i| pub_frame(&subject(i), None, &body))
        .collect();
    let batch = PubBatch::cycle(&frames);
    let mut writer = Conn::open(server.port, b"", deadline)?;
    let published = cycles * SUBJECTS;
    let window = Window::new(&expected, published, scenario.max_lag, deadline);
    let meter = Meter::start(server)?;
    let (start, end) = pump(
        &mut readers,
        |i| &expected[i],
        std::slice::from_mut(&mut writer),
        |stream| batch.publish(stream, published, &window),
        deadline,
    )?;
    for group in &expected {
        group.check("wildcard subscriber")?;
    }
    let mut sample = meter.finish(
        server,
        published,
        3 * published,
        scenario.payload,
        end - start,
    )?;
    sample.bytes_per_read = Some(Expected::bytes_per_read(&expected));
    Ok(sample)
}
