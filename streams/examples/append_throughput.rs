//! Append throughput with group commit: N appender threads, each keeping `depth` appends in
//! flight and waiting for their acknowledgements.
//!
//! `cargo run --release -p natter-streams --example append_throughput [dir]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use natter_streams::{FileStore, FileStoreConfig, SyncPolicy};

fn run(dir: &std::path::Path, sync: SyncPolicy, threads: usize, depth: usize, size: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let cfg = FileStoreConfig {
        sync,
        ..Default::default()
    };
    let (store, _) = FileStore::open(dir, cfg).expect("open");
    let payload = Bytes::from(vec![b'x'; size]);
    let deadline = Duration::from_secs(2);
    let start = Instant::now();
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, payload, total) = (store.clone(), payload.clone(), total.clone());
            s.spawn(move || {
                let subject = format!("bench.{t}");
                let mut inflight = std::collections::VecDeque::new();
                let mut n = 0u64;
                while start.elapsed() < deadline {
                    while inflight.len() < depth {
                        inflight.push_back(store.append(
                            &subject,
                            Bytes::new(),
                            payload.clone(),
                            0,
                        ));
                    }
                    inflight
                        .pop_front()
                        .expect("in flight")
                        .wait()
                        .expect("append");
                    n += 1;
                }
                for p in inflight {
                    p.wait().expect("append");
                    n += 1;
                }
                total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = total.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{:<14} {:>3} threads x {:>3} in flight, {:>5} B: {:>9.0} msgs/s  {:>7.1} MB/s",
        format!("{sync:?}").split('(').next().unwrap_or_default(),
        threads,
        depth,
        size,
        n as f64 / secs,
        n as f64 * size as f64 / secs / 1e6
    );
    store.close().expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("natter-append-bench"));
    for size in [16, 1024] {
        run(&dir, SyncPolicy::Always, 1, 1, size);
        run(&dir, SyncPolicy::Always, 8, 1, size);
        run(&dir, SyncPolicy::Always, 8, 32, size);
        run(
            &dir,
            SyncPolicy::Interval(Duration::from_secs(1)),
            8,
            32,
            size,
        );
    }
}
