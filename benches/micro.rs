//! Criterion micro-benchmarks for the hot path's pure parts: the parser, the routing trie and
//! its caches, and frame encoding. `cargo bench --bench micro`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use natter::proto::encode::Message;
use natter::proto::Parser;
use natter::sublist::{MatchCache, Sublist};

fn stream(op: &[u8], n: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(op.len() * n);
    for _ in 0..n {
        buf.extend_from_slice(op);
    }
    buf
}

fn parser(c: &mut Criterion) {
    let mut g = c.benchmark_group("parser");
    for (name, op) in [
        ("pub_16b", &b"PUB foo.bar 16\r\n0123456789abcdef\r\n"[..]),
        (
            "pub_reply_16b",
            b"PUB foo.bar _INBOX.abcdef.1 16\r\n0123456789abcdef\r\n",
        ),
        (
            "hpub_16b",
            b"HPUB foo.bar 18 34\r\nNATS/1.0\r\nA: b\r\n\r\n0123456789abcdef\r\n",
        ),
    ] {
        let input = stream(op, 1000);
        g.throughput(Throughput::Elements(1000));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Parser::new(4096, 1 << 20);
                let mut at = 0;
                while let Some((op, n)) = p.parse(&input[at..]).unwrap() {
                    black_box(op);
                    at += n;
                }
            })
        });
    }
    g.finish();
}

fn sublist(c: &mut Criterion) {
    let list = Sublist::new();
    for i in 0..10_000u32 {
        list.insert(format!("w.{i}.x").as_bytes(), None, Arc::new(i));
    }
    list.insert(b"w.*.x", None, Arc::new(u32::MAX));
    list.insert(b"w.>", Some(b"q"), Arc::new(u32::MAX - 1));
    let mut g = c.benchmark_group("sublist");
    g.bench_function("match_trie_10k", |b| {
        b.iter(|| black_box(list.matches(black_box(b"w.4242.x"))))
    });
    g.bench_function("lookup_shared_cache", |b| {
        b.iter(|| black_box(list.lookup(black_box(b"w.4242.x"))))
    });
    let mut cache = MatchCache::default();
    g.bench_function("publisher_cache_hit", |b| {
        b.iter(|| black_box(cache.get(&list, black_box(b"w.4242.x")).plain.len()))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let msg = Message {
        subject: b"foo.bar",
        reply: Some(b"_INBOX.abcdef.1"),
        header_len: 0,
        payload: b"0123456789abcdef",
    };
    let mut out = BytesMut::with_capacity(64 * 1024);
    c.bench_function("encode/msg_16b", |b| {
        b.iter(|| {
            if out.len() > 60 * 1024 {
                out.clear();
            }
            msg.write(&mut out, black_box(b"17"), true);
        })
    });
}

criterion_group!(benches, parser, sublist, encode);
criterion_main!(benches);
