//! Pattern index lookups with 100,000 subscriptions, and pattern parsing and matching.
//!
//! `cargo bench -p herald-core --bench index`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_core::{Pattern, PatternIndex};

/// Subscriptions in the big index.
const SUBSCRIPTIONS: usize = 100_000;
/// Of which this many are `>` (every topic matches them).
const CATCH_ALL: usize = 5;

/// 100,000 entries: for each prefix `t{j}` a literal `t{j}.x`, a `t{j}.*` and a `t{j}.>`,
/// plus a few `>`.
fn big_index() -> PatternIndex<u32> {
    let mut index = PatternIndex::new();
    for i in 0..SUBSCRIPTIONS - CATCH_ALL {
        let j = i / 3;
        let text = match i % 3 {
            0 => format!("t{j}.x"),
            1 => format!("t{j}.*"),
            _ => format!("t{j}.>"),
        };
        index.insert(&Pattern::new(&text).expect("valid pattern"), i as u32);
    }
    let all = Pattern::new(">").expect("valid pattern");
    for k in 0..CATCH_ALL {
        index.insert(&all, (SUBSCRIPTIONS - CATCH_ALL + k) as u32);
    }
    assert_eq!(index.len(), SUBSCRIPTIONS);
    index
}

fn index_lookup(c: &mut Criterion) {
    let index = big_index();
    // Hit: `t12345.x` matches its literal, its `*`, its `>` and the catch-alls.
    let hit = "t12345.x";
    // Miss: no subscription of its own, only the catch-alls.
    let miss = "u12345.x";
    let count = |topic: &str| {
        let mut n = 0usize;
        index.for_each_match(topic, |_| n += 1);
        n
    };
    assert_eq!(count(hit), 3 + CATCH_ALL);
    assert_eq!(count(miss), CATCH_ALL);

    let mut group = c.benchmark_group("index_100k");
    group.bench_function("for_each_match_hit", |b| {
        b.iter(|| {
            let mut n = 0usize;
            index.for_each_match(black_box(hit), |v| n += *v as usize);
            n
        })
    });
    group.bench_function("for_each_match_miss", |b| {
        b.iter(|| {
            let mut n = 0usize;
            index.for_each_match(black_box(miss), |v| n += *v as usize);
            n
        })
    });
    group.bench_function("for_each_match_deep_miss", |b| {
        b.iter(|| {
            let mut n = 0usize;
            index.for_each_match(black_box("t12345.y.z.w"), |v| n += *v as usize);
            n
        })
    });
    group.finish();
}

fn pattern(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern");
    group.bench_function("new_literal", |b| {
        b.iter(|| Pattern::new(black_box("orders.eu.created")))
    });
    group.bench_function("new_wildcard", |b| {
        b.iter(|| Pattern::new(black_box("orders.*.>")))
    });
    let literal = Pattern::new("orders.eu.created").expect("valid pattern");
    let wild = Pattern::new("orders.*.>").expect("valid pattern");
    group.bench_function("matches_literal_hit", |b| {
        b.iter(|| black_box(&literal).matches(black_box("orders.eu.created")))
    });
    group.bench_function("matches_wildcard_hit", |b| {
        b.iter(|| black_box(&wild).matches(black_box("orders.eu.created.v2")))
    });
    group.bench_function("matches_wildcard_miss", |b| {
        b.iter(|| black_box(&wild).matches(black_box("invoices.eu.created")))
    });
    group.bench_function("new_and_match", |b| {
        b.iter(|| {
            Pattern::new(black_box("orders.*.>"))
                .map(|p| p.matches(black_box("orders.eu.created")))
                .unwrap_or(false)
        })
    });
    group.finish();
}

criterion_group!(benches, index_lookup, pattern);
criterion_main!(benches);
