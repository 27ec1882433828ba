//! Unit-level tests of the file and memory stores through their public API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use natter_streams::fs::{Fs, SimFs};
use natter_streams::{
    Error, FileStore, FileStoreConfig, Limits, MemoryStore, PurgeRequest, SyncPolicy,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn open_sim(fs: &SimFs, cfg: FileStoreConfig) -> (FileStore, natter_streams::RecoveryReport) {
    FileStore::open_with(Arc::new(fs.clone()), Path::new("/s"), cfg).expect("open")
}

fn small() -> FileStoreConfig {
    FileStoreConfig {
        block_size: 1024,
        ..Default::default()
    }
}

fn put(s: &FileStore, subj: &str, payload: &str) -> u64 {
    s.append(subj, Bytes::new(), b(payload), 1_000)
        .wait()
        .expect("append")
}

fn blk_files(fs: &SimFs) -> Vec<String> {
    let mut v: Vec<String> = fs.list(Path::new("/s/msgs")).unwrap();
    v.sort();
    v
}

#[test]
fn append_get_roundtrip_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let (s, rep) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(rep.msgs, 0);
    let hdr = b("NATS/1.0\r\nA: b\r\n\r\n");
    let a = s.append("orders.new", hdr.clone(), b("one"), 11);
    assert_eq!(a.seq(), 1);
    assert_eq!(a.wait().unwrap(), 1);
    assert_eq!(put(&s, "orders.old", "two"), 2);
    let m = s.get(1).unwrap().unwrap();
    assert_eq!(
        (
            m.seq,
            m.subject.as_str(),
            &m.headers,
            &m.payload[..],
            m.timestamp
        ),
        (1, "orders.new", &hdr, &b"one"[..], 11)
    );
    assert!(s.get(3).unwrap().is_none());
    let st = s.state();
    assert_eq!(
        (st.msgs, st.first_seq, st.last_seq, st.first_ts, st.last_ts),
        (2, 1, 2, 11, 1_000)
    );
    assert_eq!(
        st.bytes,
        natter_streams::msg_size("orders.new", &hdr, b"one")
            + natter_streams::msg_size("orders.old", b"", b"two")
    );
    assert!(s.append("", Bytes::new(), Bytes::new(), 0).wait().is_err());
}

#[test]
fn reopen_recovers_messages_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = FileStore::open(dir.path(), small()).unwrap();
        for i in 0..100 {
            put(&s, &format!("s.{}", i % 7), &format!("payload-{i}"));
        }
        s.close().unwrap();
        assert_eq!(
            s.append("x", Bytes::new(), Bytes::new(), 0).wait(),
            Err(Error::Closed)
        );
    }
    let (s, rep) = FileStore::open(dir.path(), small()).unwrap();
    assert_eq!(rep.msgs, 100);
    assert!(rep.segments >= 4, "small blocks roll: {}", rep.segments);
    assert!(rep.corrupt.is_empty() && rep.truncated_bytes == 0);
    for i in 0..100u64 {
        assert_eq!(
            s.get(i + 1).unwrap().unwrap().payload,
            b(&format!("payload-{i}"))
        );
    }
    assert_eq!(put(&s, "s.0", "next"), 101);
    assert_eq!(s.subject_counts(Some("s.*")).len(), 7);
    assert_eq!(s.subject_counts(Some("s.3"))["s.3"], 14);
}

#[test]
fn last_for_subject_and_get_next() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    put(&s, "a.1", "x");
    put(&s, "b.1", "y");
    put(&s, "a.2", "z");
    put(&s, "a.1", "w");
    assert_eq!(s.last_for_subject("a.1").unwrap().unwrap().seq, 4);
    assert_eq!(s.last_for_subject("a.*").unwrap().unwrap().seq, 4);
    assert_eq!(s.last_for_subject("b.>").unwrap().unwrap().seq, 2);
    assert!(s.last_for_subject("c").unwrap().is_none());
    assert!(s.delete(4).wait().unwrap());
    assert_eq!(s.last_for_subject("a.1").unwrap().unwrap().seq, 1);
    assert_eq!(s.get_next(2, Some("a.*")).unwrap().unwrap().seq, 3);
    assert_eq!(s.get_next(2, None).unwrap().unwrap().seq, 2);
    assert!(s.get_next(4, None).unwrap().is_none());
}

#[test]
fn delete_is_durable_and_idempotent() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, FileStoreConfig::default());
    for i in 0..10 {
        put(&s, "d", &i.to_string());
    }
    assert!(s.delete(5).wait().unwrap());
    assert!(!s.delete(5).wait().unwrap());
    assert!(!s.delete(99).wait().unwrap());
    let st = s.state();
    assert_eq!((st.msgs, st.num_deleted), (9, 1));
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, FileStoreConfig::default());
    assert!(s.get(5).unwrap().is_none());
    assert_eq!(s.state().msgs, 9);
    assert!(s.delete(1).wait().unwrap());
    assert_eq!(s.state().first_seq, 2);
}

#[test]
fn purge_all_never_reuses_sequences() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    for i in 0..50 {
        put(&s, "p", &i.to_string());
    }
    assert_eq!(s.purge(PurgeRequest::default()).wait().unwrap(), 50);
    let st = s.state();
    assert_eq!((st.msgs, st.first_seq, st.last_seq), (0, 51, 50));
    assert!(blk_files(&fs).iter().all(|f| !f.ends_with(".dlt")));
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, small());
    assert_eq!(s.state().last_seq, 50);
    assert_eq!(put(&s, "p", "after"), 51);
}

#[test]
fn purge_by_filter_keep_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = FileStore::open(dir.path(), small()).unwrap();
    for i in 0..30 {
        put(&s, if i % 3 == 0 { "k.a" } else { "k.b" }, &i.to_string());
    }
    // keep the newest 2 of k.a (10 stored)
    let req = PurgeRequest {
        filter: Some("k.a".into()),
        keep: Some(2),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 8);
    assert_eq!(s.subject_counts(None)["k.a"], 2);
    // everything below 10 (of what remains: k.b seqs 2,3,5,6,8,9)
    let req = PurgeRequest {
        up_to_seq: Some(10),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 6);
    assert_eq!(s.state().first_seq, 11);
    // wildcard filter with sequence bound
    let req = PurgeRequest {
        filter: Some("k.*".into()),
        up_to_seq: Some(20),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 6);
    assert_eq!(s.state().msgs, 30 - 8 - 6 - 6);
    // keep without filter
    let req = PurgeRequest {
        keep: Some(3),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 7);
    assert_eq!(s.state().first_seq, 28);
    let bad = PurgeRequest {
        keep: Some(1),
        up_to_seq: Some(1),
        ..Default::default()
    };
    assert!(matches!(s.purge(bad).wait(), Err(Error::Invalid(_))));
    s.close().unwrap();
    let (s, _) = FileStore::open(dir.path(), small()).unwrap();
    let st = s.state();
    assert_eq!((st.msgs, st.first_seq, st.last_seq), (3, 28, 30));
}

#[test]
fn purge_up_to_past_end_moves_sequence_forward() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    put(&s, "x", "1");
    let req = PurgeRequest {
        up_to_seq: Some(1000),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 1);
    assert_eq!(s.next_seq(), 1000);
    let st = s.state();
    assert_eq!((st.first_seq, st.last_seq), (1000, 999));
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, small());
    assert_eq!(put(&s, "x", "2"), 1000);
}

#[test]
fn segments_roll_and_whole_segments_are_removed() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    for i in 0..200 {
        put(&s, "r", &format!("{i:040}"));
    }
    let before = blk_files(&fs).len();
    assert!(before > 10);
    // Removing the first 100 drops whole segment files, not 100 tombstones.
    let req = PurgeRequest {
        up_to_seq: Some(101),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 100);
    let after = blk_files(&fs);
    assert!(after.len() < before - 5, "{before} -> {after:?}");
    assert!(after.iter().filter(|f| f.ends_with(".dlt")).count() <= 1);
    assert_eq!(
        s.get(101).unwrap().unwrap().payload,
        b(&format!("{:040}", 100))
    );
}

#[test]
fn compaction_rewrites_mostly_deleted_segment() {
    let fs = SimFs::new();
    let cfg = FileStoreConfig {
        block_size: 64 * 1024,
        ..Default::default()
    };
    let (s, _) = open_sim(&fs, cfg.clone());
    let big = "x".repeat(500);
    for i in 0..200 {
        put(&s, &format!("c.{}", i % 3), &format!("{i:03}{big}"));
    }
    let first = Path::new("/s/msgs/1.blk");
    let size_before = fs.read_file(first).unwrap().len();
    // Delete two subjects of three: sealed segments are then mostly garbage and get rewritten.
    for f in ["c.1", "c.2"] {
        let req = PurgeRequest {
            filter: Some(f.into()),
            ..Default::default()
        };
        s.purge(req).wait().unwrap();
    }
    assert_eq!(s.state().msgs, 67);
    let size_after = fs.read_file(first).unwrap().len();
    assert!(
        size_after < size_before * 4 / 10,
        "{size_before} -> {size_after}"
    );
    assert!(!blk_files(&fs).contains(&"1.dlt".to_string()));
    for i in (0..200).step_by(3) {
        assert_eq!(
            s.get(i + 1).unwrap().unwrap().payload,
            b(&format!("{i:03}{big}"))
        );
    }
    let fs = fs.crash();
    drop(s);
    let (s, rep) = open_sim(&fs, cfg);
    assert!(rep.corrupt.is_empty());
    assert_eq!(s.state().msgs, 67);
    assert_eq!(s.last_for_subject("c.0").unwrap().unwrap().seq, 199);
    assert!(s.last_for_subject("c.1").unwrap().is_none());
    assert_eq!(s.get_next(2, Some("c.0")).unwrap().unwrap().seq, 4);
}

#[test]
fn limits_discard_old() {
    let fs = SimFs::new();
    let limits = Limits {
        max_msgs: Some(10),
        ..Default::default()
    };
    let (s, _) = open_sim(&fs, FileStoreConfig { limits, ..small() });
    for i in 0..25 {
        put(&s, "l", &i.to_string());
    }
    let st = s.state();
    assert_eq!((st.msgs, st.first_seq, st.last_seq), (10, 16, 25));
    // per subject
    let limits = Limits {
        max_msgs_per_subject: Some(2),
        ..Default::default()
    };
    s.set_limits(limits).wait().unwrap();
    assert_eq!(s.state().msgs, 2);
    for i in 0..5 {
        put(&s, "kv.a", &i.to_string());
        put(&s, "kv.b", &i.to_string());
    }
    let counts = s.subject_counts(Some("kv.>"));
    assert_eq!((counts["kv.a"], counts["kv.b"]), (2, 2));
    assert_eq!(s.last_for_subject("kv.a").unwrap().unwrap().payload, b("4"));
    // bytes
    let one = natter_streams::msg_size("m", b"", b"0123456789");
    let limits = Limits {
        max_bytes: Some(one * 3),
        ..Default::default()
    };
    s.set_limits(limits).wait().unwrap();
    for _ in 0..5 {
        put(&s, "m", "0123456789");
    }
    let st = s.state();
    assert!(st.bytes <= one * 3 && st.msgs == 3, "{st:?}");
}

/// A store of 100 messages, sequence `q` stamped `(q - 1) * 10`, about 22 per segment.
fn hundred_stamped(fs: &SimFs) -> FileStore {
    let (s, _) = open_sim(fs, small());
    for ts in 0..100i64 {
        s.append("t", Bytes::new(), b("0123456789"), ts * 10)
            .wait()
            .unwrap();
    }
    s
}

#[test]
fn expire_by_age() {
    let fs = SimFs::new();
    let s = hundred_stamped(&fs);
    assert_eq!(s.expire(500).wait().unwrap(), 50);
    let st = s.state();
    assert_eq!((st.first_seq, st.first_ts), (51, 500));
    // max_age in the limits uses the clock: everything above is ancient.
    let limits = Limits {
        max_age: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    s.set_limits(limits).wait().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(s.state().msgs, 0);
}

/// Expiry spares the sequences it is told to keep: in whole segments it would otherwise remove
/// at once, and in the segment it reads timestamps from. What it removed stays removed.
#[test]
fn expire_keeping_spares_kept_messages() {
    let fs = SimFs::new();
    let s = hundred_stamped(&fs);
    // About 22 records a segment: 3 and 60 sit in wholly expired segments, 68 in the one read
    // record by record (67..=88), 80 past the cutoff (sequence 70 is the last before it).
    assert_eq!(
        s.expire_keeping(700, 0, vec![3, 60, 68, 80])
            .wait()
            .unwrap(),
        67
    );
    let left: Vec<u64> = std::iter::successors(s.get_next(1, None).unwrap(), |m| {
        s.get_next(m.seq + 1, None).unwrap()
    })
    .map(|m| m.seq)
    .collect();
    let mut want = vec![3, 60, 68];
    want.extend(71..=100);
    assert_eq!(left, want);
    // Only from a sequence on: 90..=100 but 95 are removed.
    assert_eq!(s.expire_keeping(2000, 90, vec![95]).wait().unwrap(), 10);
    drop(s);
    let (s, _) = open_sim(&fs, small());
    assert_eq!((s.state().msgs, s.state().first_seq), (23, 3));
    assert_eq!(s.get_next(90, None).unwrap().unwrap().seq, 95);
    let m = natter_streams::MemoryStore::new(Limits::default());
    for ts in 0..10i64 {
        m.append("t", Bytes::new(), b("x"), ts).wait().unwrap();
    }
    assert_eq!(m.expire_keeping(5, 0, vec![2]).wait().unwrap(), 4);
    assert_eq!(m.state().first_seq, 2);
    assert_eq!(m.state().msgs, 6);
}

#[test]
fn torn_tail_is_truncated_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        for i in 0..10 {
            put(&s, "t", &i.to_string());
        }
        s.close().unwrap();
    }
    // Simulate a torn 11th record: a valid prefix of a record, cut short.
    let path = dir.path().join("msgs/1.blk");
    let mut data = std::fs::read(&path).unwrap();
    let good = data.len();
    let mut rec = Vec::new();
    natter_streams::record::encode(&mut rec, 11, 0, "t", b"", b"never acknowledged");
    data.extend_from_slice(&rec[..rec.len() - 5]);
    std::fs::write(&path, &data).unwrap();
    let (s, rep) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(rep.truncated_bytes as usize, rec.len() - 5);
    assert!(rep.corrupt.is_empty());
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good);
    assert_eq!(s.state().msgs, 10);
    assert_eq!(put(&s, "t", "11"), 11);
    s.close().unwrap();
    let (s, rep) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!((rep.truncated_bytes, s.state().msgs), (0, 11));
}

#[test]
fn corrupt_record_in_middle_is_reported_and_never_served() {
    let fs = SimFs::new();
    {
        let (s, _) = open_sim(&fs, FileStoreConfig::default());
        for i in 0..10 {
            put(&s, "c", &format!("message-{i}"));
        }
        s.close().unwrap();
    }
    let path = Path::new("/s/msgs/1.blk");
    let rec = natter_streams::msg_size("c", b"", b"message-0") as usize;
    // Bit rot inside record 5's payload, then inside record 8's length field.
    fs.corrupt(path, rec * 4 + 40).unwrap();
    fs.corrupt(path, rec * 7 + 5).unwrap();
    let (s, rep) = open_sim(&fs, FileStoreConfig::default());
    assert_eq!(rep.corrupt.len(), 2, "{rep:?}");
    assert_eq!(rep.corrupt[0].offset as usize, rec * 4);
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(s.state().msgs, 8);
    assert!(s.get(5).unwrap().is_none() && s.get(8).unwrap().is_none());
    assert_eq!(s.get(9).unwrap().unwrap().payload, b("message-8"));
    // Damage after open: reading it is an error, not data.
    fs.corrupt(path, rec * 2 + 40).unwrap();
    assert!(matches!(s.get(3), Err(Error::Corrupt { seq: 3, .. })));
    // A run read at once checks every record it returns.
    assert!(matches!(
        s.get_run(1, None, 8),
        Err(Error::Corrupt { seq: 3, .. })
    ));
    assert_eq!(s.get_run(4, None, 8).unwrap().len(), 5);
    assert_eq!(put(&s, "c", "more"), 11);
}

/// Every run is what message-by-message `get_next` reads, across deletions, filters and
/// segment boundaries, and never empty while something is left.
#[test]
fn runs_read_what_get_next_reads() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    for i in 0..200 {
        put(&s, &format!("r.{}", i % 3), &"p".repeat(i % 17));
    }
    for q in [5, 6, 7, 40, 41, 199] {
        assert!(s.delete(q).wait().unwrap());
    }
    for filter in [None, Some("r.1"), Some("r.*"), Some("nothing")] {
        for max in [1, 7, 256] {
            let mut expect = Vec::new();
            let mut at = 1;
            while let Some(m) = s.get_next(at, filter).unwrap() {
                at = m.seq + 1;
                expect.push((m.seq, m.subject, m.payload));
            }
            let mut got = Vec::new();
            let mut at = 1;
            loop {
                let run = s.get_run(at, filter, max).unwrap();
                assert!(run.len() <= max, "{filter:?} {max}");
                let Some(last) = run.last() else { break };
                at = last.seq + 1;
                got.extend(run.into_iter().map(|m| (m.seq, m.subject, m.payload)));
            }
            assert_eq!(got, expect, "filter {filter:?}, runs of {max}");
        }
    }
    assert!(blk_files(&fs).len() > 3, "the runs crossed segments");
}

#[test]
fn power_loss_during_concurrent_appends_keeps_every_acknowledged_message() {
    for round in 0..8 {
        let fs = SimFs::new();
        let (s, _) = open_sim(
            &fs,
            FileStoreConfig {
                block_size: 4096,
                ..Default::default()
            },
        );
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for t in 0..4 {
            let s = s.clone();
            let acked = acked.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0.. {
                    let payload = format!("t{t}-{i}");
                    match s
                        .append(&format!("p.{t}"), Bytes::new(), b(&payload), i)
                        .wait()
                    {
                        Ok(seq) => acked.lock().unwrap().push((seq, payload)),
                        Err(_) => break,
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(5 + round * 3));
        let fs2 = fs.crash();
        for t in threads {
            t.join().unwrap();
        }
        drop(s);
        let (s, rep) = open_sim(
            &fs2,
            FileStoreConfig {
                block_size: 4096,
                ..Default::default()
            },
        );
        let acked = acked.lock().unwrap().clone();
        assert!(!acked.is_empty());
        let max_acked = acked.iter().map(|a| a.0).max().unwrap();
        for (seq, payload) in &acked {
            let m = s
                .get(*seq)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acked {seq} lost; {rep:?}"));
            assert_eq!(&m.payload, payload.as_bytes());
        }
        assert!(rep.corrupt.is_empty(), "{rep:?}");
        assert!(s.next_seq() > max_acked);
        // Sequences present are contiguous from 1 (appends never leave holes on a clean crash).
        let st = s.state();
        assert_eq!((st.first_seq, st.num_deleted), (1, 0));
    }
}

#[test]
fn disk_full_fails_appends_and_recovers_when_space_frees() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    for i in 0..20 {
        put(&s, "f", &i.to_string());
    }
    fs.set_capacity(Some(0));
    let r = s.append("f", Bytes::new(), b("full"), 0).wait();
    assert_eq!(r, Err(Error::StorageFull));
    assert_eq!(s.state().msgs, 20);
    assert_eq!(s.get(20).unwrap().unwrap().payload, b("19"));
    // Freeing space: purging whole segments needs no new bytes.
    fs.set_capacity(None);
    let seq = put(&s, "f", "after");
    assert_eq!(
        seq, 22,
        "the failed append's sequence is not reused while open"
    );
    let fs = fs.crash();
    drop(s);
    let (s, rep) = open_sim(&fs, small());
    assert!(rep.corrupt.is_empty());
    assert_eq!(s.state().msgs, 21);
    assert_eq!(s.get(22).unwrap().unwrap().payload, b("after"));
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, FileStoreConfig::default());
    put(&s, "a", "1");
    assert_eq!(s.failure(), None);
    fs.set_fail_sync(true);
    assert!(s.append("a", Bytes::new(), b("2"), 0).wait().is_err());
    fs.set_fail_sync(false);
    assert!(
        s.failure().is_some(),
        "a health check sees the stopped writer"
    );
    assert!(matches!(
        s.append("a", Bytes::new(), b("3"), 0).wait(),
        Err(Error::Poisoned(_))
    ));
    assert_eq!(s.get(1).unwrap().unwrap().payload, b("1"));
    drop(s);
    let (s, _) = open_sim(&fs, FileStoreConfig::default());
    assert!(s.get(1).unwrap().is_some());
    assert!(s.append("a", Bytes::new(), b("4"), 0).wait().is_ok());
}

#[test]
fn interval_sync_acks_before_fsync_and_syncs_later() {
    let fs = SimFs::new();
    let cfg = FileStoreConfig {
        sync: SyncPolicy::Interval(Duration::from_millis(50)),
        ..Default::default()
    };
    let (s, _) = open_sim(&fs, cfg.clone());
    for i in 0..10 {
        put(&s, "i", &i.to_string());
    }
    std::thread::sleep(Duration::from_millis(200));
    put(&s, "i", "unsynced");
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, cfg.clone());
    assert!(s.state().msgs >= 10, "the interval sync ran");
    put(&s, "i", "x");
    s.sync().wait().unwrap();
    let n = s.state().msgs;
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, cfg);
    assert_eq!(s.state().msgs, n, "explicit sync makes everything durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_can_be_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    let pending: Vec<_> = (0..100)
        .map(|i| s.append("aw", Bytes::new(), b(&i.to_string()), 0))
        .collect();
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.unwrap());
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert!(s.delete(3).await.unwrap());
}

#[test]
fn memory_store_same_api() {
    let s = MemoryStore::new(Limits {
        max_msgs_per_subject: Some(2),
        ..Default::default()
    });
    for i in 0..5 {
        s.append("m.a", Bytes::new(), b(&i.to_string()), i)
            .wait()
            .unwrap();
    }
    s.append("m.b", Bytes::new(), b("b"), 9).wait().unwrap();
    let st = s.state();
    assert_eq!(
        (st.msgs, st.first_seq, st.last_seq, st.num_deleted),
        (3, 4, 6, 0)
    );
    assert_eq!(s.last_for_subject("m.*").unwrap().unwrap().seq, 6);
    assert!(s.delete(4).wait().unwrap());
    let req = PurgeRequest {
        up_to_seq: Some(100),
        ..Default::default()
    };
    assert_eq!(s.purge(req).wait().unwrap(), 2);
    assert_eq!(s.next_seq(), 100);
}

#[test]
fn segment_created_by_a_failed_append_is_durable_before_later_acks() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    // Nearly fill the first segment so the next append needs a new one.
    put(&s, "f", &"x".repeat(900));
    // The new segment file is created, then its write fails: the disk is full.
    fs.set_capacity(Some(fs.used_bytes()));
    let r = s.append("f", Bytes::new(), b(&"y".repeat(200)), 0).wait();
    assert_eq!(r, Err(Error::StorageFull));
    fs.set_capacity(None);
    // This append goes into the segment the failed batch created; acknowledging it must imply
    // that segment's directory entry is durable.
    let seq = put(&s, "f", "after");
    let fs = fs.crash();
    drop(s);
    let (s, rep) = open_sim(&fs, small());
    assert!(rep.corrupt.is_empty(), "{rep:?}");
    let m = s.get(seq).unwrap().expect("acknowledged append lost");
    assert_eq!(m.payload, b("after"));
}

#[test]
fn corrupt_final_record_is_reported_and_its_sequence_never_reused() {
    let fs = SimFs::new();
    {
        let (s, _) = open_sim(&fs, FileStoreConfig::default());
        for i in 0..10 {
            put(&s, "c", &format!("message-{i}"));
        }
        s.close().unwrap();
    }
    // Bit rot in the payload of the last (acknowledged, fully written) record: unlike a torn
    // write it must be reported, not silently cut off, and its sequence must stay used.
    let path = Path::new("/s/msgs/1.blk");
    let rec = natter_streams::msg_size("c", b"", b"message-0") as usize;
    fs.corrupt(path, rec * 9 + 40).unwrap();
    let (s, rep) = open_sim(&fs, FileStoreConfig::default());
    assert_eq!(rep.corrupt.len(), 1, "{rep:?}");
    assert_eq!(
        (rep.corrupt[0].offset, rep.corrupt[0].len),
        ((rec * 9) as u64, rec as u64)
    );
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(s.get(10), Ok(None), "never served");
    assert_eq!((s.state().msgs, s.state().last_seq), (9, 10));
    assert_eq!(put(&s, "c", "next"), 11);
    let fs = fs.crash();
    drop(s);
    let (s, rep) = open_sim(&fs, FileStoreConfig::default());
    assert_eq!(rep.corrupt.len(), 1, "still reported: {rep:?}");
    assert_eq!(s.get(11).unwrap().unwrap().payload, b("next"));
    assert_eq!(put(&s, "c", "again"), 12);
}

#[test]
fn damaged_final_record_followed_by_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        for i in 0..5 {
            put(&s, "t", &format!("m{i}"));
        }
        s.close().unwrap();
    }
    let path = dir.path().join("msgs/1.blk");
    let mut data = std::fs::read(&path).unwrap();
    let rec = data.len() / 5;
    data[rec * 4 + 33] ^= 0x40; // record 5's payload
    let mut torn = Vec::new();
    natter_streams::record::encode(&mut torn, 6, 0, "t", b"", b"never acknowledged");
    data.extend_from_slice(&torn[..torn.len() - 3]);
    std::fs::write(&path, &data).unwrap();
    let (s, rep) = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(rep.corrupt.len(), 1, "{rep:?}");
    assert_eq!(rep.truncated_bytes as usize, torn.len() - 3);
    assert_eq!(s.state().msgs, 4);
    assert_eq!(s.get(5), Ok(None));
    // 6 was never acknowledged (torn) and may be reused; 5 may not.
    assert_eq!(put(&s, "t", "new"), 6);
}

/// Runs `op` on a store prepared by `setup`, cutting the power after 0, 1, 2, ... file-system
/// mutations until `op` completes without a cut; after each cut, reopens and calls `check`
/// with whether `op` was acknowledged.
fn at_every_cut(
    cfg: FileStoreConfig,
    setup: impl Fn(&FileStore),
    op: impl Fn(&FileStore) -> bool,
    check: impl Fn(&FileStore, bool),
) -> u64 {
    for k in 0.. {
        let fs = SimFs::new();
        let (s, _) = open_sim(&fs, cfg.clone());
        setup(&s);
        fs.cut_power_after(k);
        let acked = op(&s);
        let cut = fs.power_is_cut();
        let fs = fs.crash();
        drop(s);
        let (s, rep) = open_sim(&fs, cfg.clone());
        assert!(rep.corrupt.is_empty(), "cut after {k}: {rep:?}");
        check(&s, acked);
        if !cut {
            assert!(acked);
            return k;
        }
    }
    unreachable!()
}

#[test]
fn purge_all_then_power_cut_at_every_step_never_reuses_sequences() {
    let steps = at_every_cut(
        small(),
        |s| {
            for i in 0..40 {
                put(s, &format!("p.{}", i % 3), &format!("{i:030}"));
            }
            assert!(s.delete(40).wait().unwrap()); // a tombstone file in the newest segment
        },
        |s| s.purge(PurgeRequest::default()).wait().is_ok(),
        |s, acked| {
            let st = s.state();
            if acked {
                assert_eq!(st.msgs, 0);
            }
            // Whatever survived is intact; the sequence never goes back.
            for q in st.first_seq..=st.last_seq {
                if let Some(m) = s.get(q).unwrap() {
                    assert_eq!(m.payload, b(&format!("{:030}", q - 1)));
                }
            }
            assert!(s.get(40).unwrap().is_none());
            assert_eq!(put(s, "p.0", "after"), 41);
        },
    );
    assert!(steps > 5, "only {steps} steps");
}

#[test]
fn deleting_the_newest_messages_then_power_cut_never_reuses_sequences() {
    // Deleting every message of the newest segment removes its file: the sequence floor must
    // be durable first.
    at_every_cut(
        small(),
        |s| {
            for i in 0..30 {
                put(s, "d", &format!("{i:030}"));
            }
        },
        |s| {
            let p: Vec<_> = (20..=30).map(|q| s.delete(q)).collect();
            p.into_iter().all(|p| p.wait().is_ok())
        },
        |s, acked| {
            if acked {
                assert_eq!(s.state().msgs, 19);
            }
            assert!(s.get(19).unwrap().is_some());
            assert_eq!(put(s, "d", "after"), 31);
        },
    );
}

#[test]
fn compaction_then_power_cut_at_every_step_loses_nothing() {
    let cfg = FileStoreConfig {
        block_size: 16 * 1024,
        ..Default::default()
    };
    let big = "z".repeat(700);
    let steps = at_every_cut(
        cfg,
        |s| {
            for i in 0..60 {
                put(s, &format!("c.{}", i % 2), &format!("{i:03}{big}"));
            }
        },
        // Half of every sealed segment goes: they get rewritten.
        |s| {
            let req = PurgeRequest {
                filter: Some("c.1".into()),
                ..Default::default()
            };
            s.purge(req).wait().is_ok()
        },
        |s, acked| {
            for i in 0..60u64 {
                let m = s.get(i + 1).unwrap();
                if i % 2 == 0 {
                    let m = m.unwrap_or_else(|| panic!("{} lost", i + 1));
                    assert_eq!(m.payload, b(&format!("{i:03}{big}")));
                } else if acked {
                    assert!(m.is_none());
                }
            }
            assert_eq!(put(s, "c.0", "after"), 61);
        },
    );
    assert!(steps > 10, "compaction ran? only {steps} steps");
}

#[test]
fn segment_left_by_a_failed_append_is_durable_after_a_clean_restart() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    // The first append creates 1.blk, then fails to write it: its entry is not durable.
    fs.set_capacity(Some(0));
    assert_eq!(
        s.append("f", Bytes::new(), b("x"), 0).wait(),
        Err(Error::StorageFull)
    );
    fs.set_capacity(None);
    s.close().unwrap();
    drop(s);
    // Recovery adopts 1.blk; an acknowledged append into it must survive a power cut.
    let (s, _) = open_sim(&fs, small());
    let seq = put(&s, "f", "kept");
    let fs = fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, small());
    assert_eq!(
        s.get(seq)
            .unwrap()
            .expect("acknowledged append lost")
            .payload,
        b("kept")
    );
}

fn interval() -> FileStoreConfig {
    FileStoreConfig {
        sync: SyncPolicy::Interval(Duration::from_secs(120)),
        ..small()
    }
}

/// Whether `append` has completed, without waiting for it.
fn is_done(append: &mut natter_streams::Append) -> bool {
    use std::future::Future;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(append).poll(&mut cx).is_ready()
}

/// Whether `append` completes within a few seconds, far sooner than the writer thread's next
/// timer (the 120 s interval): when the batch ends, the writer thread may be holding the
/// writer's lock (woken by the first append's write), and then it carries the appends out as
/// it lets go. Without the batch's own write they would wait for that timer.
fn done_soon(append: &mut natter_streams::Append) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if is_done(append) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// In interval mode the appender writes its own appends: at once, or by the end of an open
/// batch, in order; then they are complete and readable.
#[test]
fn interval_appends_are_written_by_the_appender_at_the_end_of_its_batch() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, interval());
    let first = s.append("d", Bytes::new(), b("now"), 1);
    assert_eq!(first.wait().unwrap(), 1, "no batch open: written at once");
    // Let the writer thread, woken by that write to set its sync timer, go back to sleep, so
    // that nothing but the batch's end can carry out what follows.
    std::thread::sleep(Duration::from_millis(100));
    let batch = natter_streams::DeferredWrites::open();
    let inner = natter_streams::DeferredWrites::open();
    let mut later: Vec<_> = (0..5)
        .map(|i| s.append("d", Bytes::new(), b(&format!("m{i}")), 1))
        .collect();
    drop(inner);
    // (The writer thread may carry them out first, but nothing waits for it to.)
    drop(batch);
    for (i, a) in later.iter_mut().enumerate() {
        assert!(
            done_soon(a),
            "append {i} not carried out when its batch ended"
        );
        let seq = a.seq();
        assert_eq!(seq, i as u64 + 2);
        assert_eq!(s.get(seq).unwrap().unwrap().payload, b(&format!("m{i}")));
    }
    // Other threads' appends are not held back by this thread's batch.
    let _batch = natter_streams::DeferredWrites::open();
    let other = s.clone();
    let seq = std::thread::spawn(move || other.append("d", Bytes::new(), b("x"), 1).wait())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(seq, 7);
}

/// Many threads appending in interval mode, in batches and not, with a delete in between:
/// every append completes, each at the sequence it was given, in order.
#[test]
fn concurrent_interval_appenders_keep_sequence_order() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, interval());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for round in 0..50 {
                    let _batch = (round % 2 == 0).then(natter_streams::DeferredWrites::open);
                    let appends: Vec<_> = (0..4)
                        .map(|i| {
                            let p = format!("t{t}-r{round}-{i}");
                            (s.append("c", Bytes::new(), b(&p), 1), p)
                        })
                        .collect();
                    drop(_batch);
                    for (a, p) in appends {
                        let seq = a.seq();
                        assert_eq!(a.wait().unwrap(), seq);
                        mine.push((seq, p));
                    }
                }
                mine
            })
        })
        .collect();
    // A delete while they append, carried out in its place among theirs.
    while s.next_seq() <= 10 {
        std::thread::yield_now();
    }
    assert!(s.delete(5).wait().unwrap());
    let mut all: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all.len(), 800);
    assert_eq!(all.last().unwrap().0, 800, "no sequence skipped or reused");
    for (seq, p) in all.iter().filter(|(q, _)| *q != 5) {
        assert_eq!(&s.get(*seq).unwrap().unwrap().payload, &b(p), "seq {seq}");
    }
    assert_eq!(s.state().msgs, 799);
}

/// The sequence floor is rewritten in place, alternating between two slots: a write torn by a
/// crash leaves the previous floor, so sequences below it are still never handed out again.
#[test]
fn a_torn_floor_write_leaves_the_previous_floor() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, small());
    put(&s, "f", "x");
    for up_to in [50, 80] {
        let req = PurgeRequest {
            filter: None,
            up_to_seq: Some(up_to),
            keep: None,
        };
        s.purge(req).wait().unwrap();
    }
    s.close().unwrap();
    let floor = Path::new("/s/floor");
    let data = fs.read_file(floor).unwrap();
    let tomb = natter_streams::record::TOMBSTONE_LEN;
    let newest = (0..2)
        .find(|i| natter_streams::record::parse_tombstone(&data[i * tomb..][..tomb]) == Some(79))
        .expect("the newest floor is in one of the two slots");
    fs.corrupt(floor, newest * tomb + 3).unwrap();
    let (s, report) = open_sim(&fs, small());
    assert!(report.corrupt.is_empty(), "{report:?}");
    assert_eq!(s.next_seq(), 50, "the floor before the torn write");
}
