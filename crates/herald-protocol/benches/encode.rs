//! Frame encoding cost per event: SSE, WebSocket JSON and STOMP `MESSAGE`, for small and
//! large payloads; the SSE decoder (what `herald bench` and `herald tail` run) and the STOMP
//! frame decoder over several chunk sizes.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{Event, Topic};
use herald_protocol::{
    sse::{self, SseDecoder},
    stomp::{self, Decoded, StompCodec, Version},
    ws_json,
};
use serde_json::value::RawValue;

fn event(data: &str) -> Event {
    Event::new(
        123_456,
        Topic::new("orders.eu.created").expect("topic"),
        "order-created".into(),
        RawValue::from_string(data.to_owned()).expect("json"),
        1_795_826_996_123,
    )
}

fn payloads() -> Vec<(&'static str, String)> {
    vec![
        ("small-json", r#"{"id":42,"total":9.5}"#.to_owned()),
        ("1KiB-json", format!(r#"{{"blob":"{}"}}"#, "x".repeat(1000))),
        (
            "multiline-string",
            serde_json::to_string(&"line of text\n".repeat(20)).expect("json"),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, data) in payloads() {
        g.throughput(Throughput::Elements(1));
        // A fresh event each iteration: measures the encoding itself, not the cache hit.
        g.bench_with_input(BenchmarkId::new("sse", name), &data, |b, d| {
            b.iter_batched(
                || event(d),
                |e| black_box(sse::event(&e)),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("ws_json", name), &data, |b, d| {
            b.iter_batched(
                || event(d),
                |e| black_box(ws_json::event(&e)),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("stomp", name), &data, |b, d| {
            b.iter_batched(
                || event(d),
                |e| black_box(stomp::event_message(&e, Version::V1_2)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    // What each STOMP subscriber pays on top: its `subscription` head and one copy (the
    // WebSocket case; a TCP adapter writes head and shared tail without the copy).
    let e = event(r#"{"id":42}"#);
    let shared = stomp::event_message(&e, Version::V1_2);
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("stomp-per-subscriber", |b| {
        b.iter(|| {
            out.clear();
            shared.write("sub-0", None, Version::V1_2, &mut out);
            black_box(out.len())
        })
    });
    // The shared-encoding hit every subscriber after the first pays.
    let e = event(r#"{"id":42}"#);
    let _ = sse::event(&e);
    g.bench_function("sse-cached", |b| b.iter(|| black_box(sse::event(&e))));
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut stream = Vec::new();
    for i in 0..1000u64 {
        let e = Event::new(
            i,
            Topic::new("bench.t0").expect("topic"),
            "message".into(),
            RawValue::from_string(format!(r#"{{"seq":{i},"t":1795826996123456789}}"#))
                .expect("json"),
            0,
        );
        stream.extend_from_slice(&sse::event(&e));
    }
    let mut g = c.benchmark_group("sse-decode-1000-events");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [64usize, 1024, 16 * 1024, 256 * 1024] {
        g.bench_with_input(BenchmarkId::from_parameter(chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut d = SseDecoder::new();
                let mut out = Vec::with_capacity(1000);
                for part in stream.chunks(chunk) {
                    d.feed(part, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn stomp_decode(c: &mut Criterion) {
    let mut stream = Vec::new();
    for i in 0..1000u64 {
        let f = stomp::Frame::new(stomp::Command::Send)
            .with_header("destination", "/topic/bench.t0")
            .with_header("content-type", "application/json")
            .with_body(format!(r#"{{"seq":{i},"t":1795826996123456789}}"#).into_bytes());
        stream.extend_from_slice(&f.to_bytes(Version::V1_2));
    }
    let mut g = c.benchmark_group("stomp-decode-1000-frames");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [64usize, 1024, 16 * 1024, 256 * 1024] {
        g.bench_with_input(BenchmarkId::from_parameter(chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut codec = StompCodec::default();
                codec.set_version(Version::V1_2);
                let mut buf = BytesMut::with_capacity(chunk.max(4096));
                let mut n = 0;
                for part in stream.chunks(chunk) {
                    buf.extend_from_slice(part);
                    while let Some(d) = codec.decode(&mut buf).expect("valid") {
                        if let Decoded::Frame(_) = d {
                            n += 1;
                        }
                    }
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode, stomp_decode);
criterion_main!(benches);
