//! Frame encoding cost per event: SSE and WebSocket JSON, for small and large payloads, and
//! the SSE decoder (what `herald bench` and `herald tail` run) over several chunk sizes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{Event, Topic};
use herald_protocol::{
    sse::{self, SseDecoder},
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
    }
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

criterion_group!(benches, encode, decode);
criterion_main!(benches);
