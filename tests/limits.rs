//! Limits set in the configuration file: payload and control-line sizes, subscriptions and
//! connections per server, the ping/stale-connection policy and the slow-consumer policy.

mod common;

use common::{Client, Server};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn max_payload_is_advertised_and_enforced() {
    let server = Server::with_config("max_payload: 100\n");
    let mut c = server.client();
    assert_eq!(c.info["max_payload"], 100);
    let mut frame = b"SUB a 1\r\nPUB a 100\r\n".to_vec();
    frame.extend_from_slice(&[b'x'; 100]);
    frame.extend_from_slice(b"\r\n");
    c.send(&frame);
    c.expect(b"+OK\r\n+OK\r\nMSG a 1 100\r\n");
    c.expect(&[b'x'; 100]);
    c.expect(b"\r\n");
    // Refused as soon as the control line announces it: the payload is never awaited.
    c.send(b"PUB a 101\r\n");
    c.expect(b"-ERR 'Maximum Payload Violation'\r\n");
    c.expect_closed();
}

#[test]
fn max_payload_counts_headers_too() {
    let server = Server::with_config("max_payload: 100\n");
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB a 12 101\r\n");
    c.expect(b"-ERR 'Maximum Payload Violation'\r\n");
    c.expect_closed();
}

#[test]
fn max_control_line() {
    let server = Server::with_config("max_control_line: 64\n");
    let mut c = server.quiet_client();
    // Within the limit, and a payload longer than the limit is fine.
    let mut ok = format!("SUB {} 1\r\n", "a".repeat(50)).into_bytes();
    ok.extend_from_slice(format!("PUB {} 200\r\n", "a".repeat(50)).as_bytes());
    ok.extend_from_slice(&[b'y'; 200]);
    ok.extend_from_slice(b"\r\n");
    c.send(&ok);
    let msgs = c.msgs_until_pong();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, vec![b'y'; 200]);

    c.send(format!("SUB {} 2\r\n", "a".repeat(70)).as_bytes());
    c.expect(b"-ERR 'maximum control line exceeded'\r\n");
    c.expect_closed();
}

#[test]
fn max_control_line_applies_before_the_line_ends() {
    let server = Server::with_config("max_control_line: 64\n");
    let mut c = server.quiet_client();
    c.send(format!("SUB {}", "a".repeat(70)).as_bytes());
    c.expect(b"-ERR 'maximum control line exceeded'\r\n");
    c.expect_closed();
}

#[test]
fn max_subscriptions() {
    let server = Server::with_config("max_subscriptions: 2\n");
    let mut c = server.client();
    c.send(b"SUB a 1\r\nSUB b 2\r\n");
    c.expect(b"+OK\r\n+OK\r\n");
    c.send(b"SUB c 3\r\n");
    c.expect(b"-ERR 'maximum subscriptions exceeded'\r\n");
    // Still open, and the refused subscription does not exist.
    c.send(b"PUB c 1\r\nx\r\nPING\r\n");
    c.expect(b"+OK\r\nPONG\r\n");
    // Making room allows another.
    c.send(b"UNSUB 1\r\nSUB c 3\r\nPUB c 1\r\nx\r\n");
    c.expect(b"+OK\r\n+OK\r\n+OK\r\nMSG c 3 1\r\nx\r\n");
}

#[test]
fn max_connections() {
    let server = Server::with_config("max_connections: 3\n");
    let mut clients: Vec<Client> = (0..3).map(|_| server.quiet_client()).collect();
    let mut fourth = server.client();
    assert!(fourth.info["server_id"].is_string());
    fourth.expect(b"-ERR 'maximum connections exceeded'\r\n");
    fourth.expect_closed();
    // The others are unaffected.
    for c in &mut clients {
        c.send(b"PING\r\n");
        c.expect(b"PONG\r\n");
    }
    // When one leaves there is room again (the server notices the close asynchronously).
    drop(clients.remove(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut c = server.client();
        c.try_send(b"PING\r\n");
        match c.try_read_line().as_deref() {
            Some("PONG") => break,
            Some("-ERR 'maximum connections exceeded'") | None => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "no room after a client left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unanswered_pings_make_a_stale_connection() {
    let server = Server::with_config("ping_interval: \"1s\"\nping_max: 2\n");
    let mut c = server.quiet_client();
    let start = Instant::now();
    let within = Duration::from_millis(2500);
    c.expect_within(b"PING\r\n", within);
    c.expect_within(b"PING\r\n", within);
    c.expect_within(b"-ERR 'Stale Connection'\r\n", within);
    c.expect_closed();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "stale after {took:?}, too early for two 1s pings"
    );
}

#[test]
fn answered_pings_keep_the_connection() {
    let server = Server::with_config("ping_interval: \"1s\"\nping_max: 2\n");
    let mut c = server.quiet_client();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(4200) {
        c.expect_within(b"PING\r\n", Duration::from_millis(2500));
        c.send(b"PONG\r\n");
        pings += 1;
    }
    assert!(pings >= 3, "only {pings} pings in {:?}", start.elapsed());
    // Still alive: our own PING is answered (a server PING may come first).
    c.send(b"SUB x 1\r\nPUB x 2\r\nok\r\n");
    let msgs = c.msgs_until_pong();
    assert_eq!(msgs.len(), 1);
}

/// A subscriber that never reads is dropped once its pending data passes `max_pending`, while the
/// publisher and a subscriber that keeps up carry on unharmed.
#[test]
fn slow_consumer_is_dropped_without_stalling_others() {
    const PAYLOAD: usize = 1000;
    // ~24 KB a batch: even with one batch still counted as in flight (the writer may be
    // preempted right after the syscall, while the reader already has the bytes and the next
    // batch is being routed), the fast subscriber stays under max_pending.
    const BATCH: usize = 24;
    const TOTAL: usize = BATCH * 340; // ~8 MB: twice what the slow subscriber's socket buffers hold.

    let server = Server::with_config("max_pending: 65536\nmax_payload: 4096\n");
    let mut slow = server.quiet_client();
    slow.send(b"SUB data 1\r\nPING\r\n");
    slow.expect(b"PONG\r\n");
    let mut fast = server.quiet_client();
    fast.send(b"SUB data 2\r\nPING\r\n");
    fast.expect(b"PONG\r\n");
    let mut publisher = server.quiet_client();

    let payload_of = |i: usize| {
        let mut p = format!("{i:08}").into_bytes();
        p.resize(PAYLOAD, b'.');
        p
    };
    let frame_of = move |i: usize| {
        let mut f = format!("MSG data 2 {PAYLOAD}\r\n").into_bytes();
        f.extend_from_slice(&payload_of(i));
        f.extend_from_slice(b"\r\n");
        f
    };

    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut next = 0;
            while next < TOTAL {
                buf.extend_from_slice(&fast.take_bytes(Duration::from_secs(5)));
                loop {
                    if buf.starts_with(b"PING\r\n") {
                        buf.drain(..6);
                        fast.send(b"PONG\r\n");
                        continue;
                    }
                    let want = frame_of(next);
                    if buf.len() < want.len() {
                        break;
                    }
                    assert!(
                        buf[..want.len()] == want[..],
                        "fast subscriber: message {next} wrong: {}",
                        common::escaped(&buf[..want.len()])
                    );
                    buf.drain(..want.len());
                    next += 1;
                    received.store(next, Ordering::Release);
                }
            }
            assert!(buf.is_empty(), "extra bytes: {}", common::escaped(&buf));
            fast
        })
    };

    let started = Instant::now();
    let mut sent = 0;
    while sent < TOTAL {
        let mut batch = Vec::with_capacity(BATCH * (PAYLOAD + 20));
        for i in sent..sent + BATCH {
            batch.extend_from_slice(format!("PUB data {PAYLOAD}\r\n").as_bytes());
            batch.extend_from_slice(&payload_of(i));
            batch.extend_from_slice(b"\r\n");
        }
        publisher.send(&batch);
        sent += BATCH;
        // Keep pace with the fast subscriber so only the slow one falls behind.
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.load(Ordering::Acquire) < sent {
            assert!(
                !reader.is_finished(),
                "fast subscriber stopped at {}",
                received.load(Ordering::Acquire)
            );
            assert!(
                Instant::now() < deadline,
                "fast subscriber stuck at {} of {sent}",
                received.load(Ordering::Acquire)
            );
            std::thread::yield_now();
        }
    }

    eprintln!("published {TOTAL} messages in {:?}", started.elapsed());
    publisher.ping_pong_within(Duration::from_secs(1));

    let mut fast = reader.join().expect("fast subscriber saw every message");
    fast.ping_pong_within(Duration::from_secs(1));

    let frame_len = frame_of(0).len();
    let got = slow.expect_closed_discarding(Duration::from_secs(5));
    eprintln!("slow subscriber got {got} bytes before the close");
    assert!(
        got < TOTAL * frame_len,
        "slow consumer received everything ({got} bytes) instead of being dropped"
    );
}

/// Floods `MB` megabytes at a subscriber that reads steadily but slower than the publisher can
/// send, with a small max_pending; returns how many bytes the subscriber got before the server
/// closed it or everything arrived.
fn flood_a_steady_reader(config: &str, megabytes: usize) -> (usize, usize) {
    const PAYLOAD: usize = 1024;
    let server = Server::with_config(config);
    let mut sub = server.quiet_client();
    sub.send(b"SUB flood 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let frame = format!("MSG flood 1 {PAYLOAD}\r\n").len() + PAYLOAD + 2;
    let total = megabytes * 1024 * 1024 / PAYLOAD;
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < total * frame {
            let Some(chunk) = sub.try_take_bytes(Duration::from_secs(3)) else {
                break; // closed (a slow consumer), or nothing more is coming
            };
            got += chunk.len();
            // About 16 MB/s: steady, but slower than the publisher.
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    });
    let mut publisher = server.quiet_client();
    let mut batch = Vec::new();
    for _ in 0..64 {
        batch.extend_from_slice(format!("PUB flood {PAYLOAD}\r\n").as_bytes());
        batch.extend_from_slice(&[b'x'; PAYLOAD]);
        batch.extend_from_slice(b"\r\n");
    }
    for _ in 0..total / 64 {
        if !publisher.try_send(&batch) {
            break;
        }
    }
    (reader.join().unwrap(), total * frame)
}

#[test]
fn fast_producer_stall_keeps_a_steady_reader_connected() {
    // nats-server pauses a publisher whose receiver falls far behind instead of dropping the
    // receiver at once; natter does the same.
    let (got, want) = flood_a_steady_reader("max_pending: 1MB\nmax_payload: 64KB\n", 24);
    assert_eq!(got, want, "every byte arrived, no slow-consumer drop");
}

#[test]
fn no_fast_producer_stall_drops_the_reader_instead() {
    let config = "max_pending: 1MB\nmax_payload: 64KB\nno_fast_producer_stall: true\n";
    let (got, want) = flood_a_steady_reader(config, 24);
    assert!(
        got < want,
        "dropped as a slow consumer: got {got} of {want} bytes"
    );
}
