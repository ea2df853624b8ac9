//! Group commit throughput of `SqliteLog`: N concurrent appenders (one event per append)
//! in a tokio runtime, under `fsync` and `batch` durability.
//!
//! With one appender every append pays a whole commit (an fsync under `fsync`); with 64 the
//! writer thread folds the queued appends into one transaction, so the time per append
//! should drop by roughly the group size. Run with `cargo bench -p herald-store`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{Log, LogOptions, NewEvent, Topic};
use herald_store::{Durability, SqliteLog};
use serde_json::value::RawValue;

fn event(topic: &Topic, i: u64) -> NewEvent {
    let data = RawValue::from_string(format!(r#"{{"n":{i},"payload":"0123456789abcdef"}}"#))
        .expect("valid JSON");
    NewEvent::new(topic.clone(), Some("bench"), data, None).expect("valid event")
}

/// Runs `iters` appends spread over `appenders` tasks; returns the wall time.
async fn run(log: &Arc<SqliteLog>, appenders: u64, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let log = log.clone();
            let n = iters / appenders + u64::from(t < iters % appenders);
            let topic = Topic::new(&format!("bench.t{t}")).expect("valid topic");
            tokio::spawn(async move {
                for i in 0..n {
                    log.append(vec![event(&topic, i)]).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender task");
    }
    start.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for durability in [Durability::Fsync, Durability::Batch] {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(
            rt.block_on(SqliteLog::open(
                dir.path(),
                durability,
                LogOptions::default(),
            ))
            .expect("open log"),
        );
        for appenders in [1u64, 64] {
            group.bench_with_input(
                BenchmarkId::new(durability.as_str(), format!("{appenders}_appenders")),
                &appenders,
                |b, &appenders| b.iter_custom(|iters| rt.block_on(run(&log, appenders, iters))),
            );
        }
        rt.block_on(log.close()).expect("close log");
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
