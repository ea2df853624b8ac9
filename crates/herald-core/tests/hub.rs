//! Integration tests of the Hub over the MemoryLog: cursors, the seam between history and
//! live events, patterns, idempotency, retention, limits, slow consumers and fan-out.
//!
//! Every wait is bounded by `tokio::time::timeout`, so a broken hub fails instead of hanging.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use herald_core::{
    Appended, CommitSink, Cursor, Event, Hub, HubConfig, HubError, Item, Log, LogError, LogOptions,
    MemoryLog, NewEvent, Pattern, Retention, RetentionRule, Subscription, SubscriptionError, Topic,
    TopicInfo,
};
use proptest::prelude::*;
use serde_json::value::RawValue;
use tokio::time::timeout;

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long to wait before concluding that nothing more is coming.
const QUIET: Duration = Duration::from_millis(50);

fn hub_with(config: HubConfig, retention: Retention) -> Hub {
    let log = Arc::new(MemoryLog::new(LogOptions {
        retention,
        ..LogOptions::default()
    }));
    Hub::new(log, config)
}

fn hub() -> Hub {
    hub_with(HubConfig::default(), Retention::default())
}

fn pats(list: &[&str]) -> Vec<Pattern> {
    list.iter().map(|p| Pattern::new(p).unwrap()).collect()
}

fn new_event(topic: &str, data: &str, key: Option<&str>) -> NewEvent {
    NewEvent::new(
        Topic::new(topic).unwrap(),
        None,
        RawValue::from_string(data.to_owned()).unwrap(),
        key.map(str::to_owned),
    )
    .unwrap()
}

async fn publish(hub: &Hub, topic: &str) -> u64 {
    hub.publish_one(new_event(topic, "{\"n\":1}", None))
        .await
        .unwrap()
        .event
        .id
}

/// The next item, which must be an event.
async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match timeout(WAIT, sub.recv()).await {
        Ok(Ok(Item::Event(ev))) => ev,
        Ok(Ok(other)) => panic!("expected an event, got {other:?}"),
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// The ids of the next `n` events.
async fn next_ids(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(sub).await.id);
    }
    out
}

/// Asserts that nothing is ready on the subscription.
async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(r) = timeout(QUIET, sub.recv()).await {
        panic!("expected nothing more, got {r:?}");
    }
}

#[tokio::test]
async fn live_subscription_gets_only_later_events() {
    let hub = hub();
    for _ in 0..3 {
        publish(&hub, "orders").await;
    }
    let mut sub = hub.subscribe(pats(&["orders"]), Cursor::Live);
    assert_quiet(&mut sub).await;
    let a = publish(&hub, "orders").await;
    publish(&hub, "other").await;
    let b = publish(&hub, "orders").await;
    assert_eq!((a, b), (4, 6));
    assert_eq!(next_ids(&mut sub, 2).await, vec![4, 6]);
    assert_eq!(sub.last_id(), 6);
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn after_cursor_replays_history_then_live() {
    let hub = hub();
    // ids 1..=10, alternating topics: a gets the odd ids.
    for i in 0..10 {
        publish(&hub, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    let mut sub = hub.subscribe(pats(&["a"]), Cursor::After(4));
    assert_eq!(sub.last_id(), 4);
    assert_eq!(next_ids(&mut sub, 3).await, vec![5, 7, 9]);
    assert_quiet(&mut sub).await;
    publish(&hub, "b").await; // 11
    publish(&hub, "a").await; // 12
    assert_eq!(next_ids(&mut sub, 1).await, vec![12]);
    assert_quiet(&mut sub).await;

    // Cursor 0 means everything retained; a cursor at the head means nothing old.
    let mut all = hub.subscribe(pats(&["b"]), Cursor::After(0));
    assert_eq!(next_ids(&mut all, 6).await, vec![2, 4, 6, 8, 10, 11]);
    assert_quiet(&mut all).await;
    let mut at_head = hub.subscribe(pats(&["a", "b"]), Cursor::After(hub.head()));
    assert_quiet(&mut at_head).await;
    publish(&hub, "a").await; // 13
    assert_eq!(next_ids(&mut at_head, 1).await, vec![13]);
    assert_quiet(&mut all).await;

    // A cursor beyond the head skips ids up to it.
    let mut future = hub.subscribe(pats(&["a"]), Cursor::After(14));
    assert_quiet(&mut future).await;
    publish(&hub, "a").await; // 14
    publish(&hub, "a").await; // 15
    assert_eq!(next_ids(&mut future, 1).await, vec![15]);
}

/// One subscriber's plan in the concurrent test.
struct Plan {
    patterns: &'static [&'static str],
    /// Subscribe once the head reaches this id.
    start_at: u64,
    cursor: PlanCursor,
}

#[derive(Clone, Copy, Debug)]
enum PlanCursor {
    Live,
    Zero,
    /// `After(head - k)` at the time of subscribing.
    BehindHead(u64),
    AtHead,
}

struct Outcome {
    patterns: Vec<Pattern>,
    cursor: Cursor,
    head_before: u64,
    head_after: u64,
    ids: Vec<u64>,
}

/// A MemoryLog whose reads take a little while after taking their snapshot, as a durable
/// log's reads do: this widens the window between a subscriber's last history read and its
/// registration, where a badly ordered resume would lose events.
struct SlowReads(MemoryLog);

impl Log for SlowReads {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        self.0.append(batch)
    }

    fn read<'a>(
        &'a self,
        patterns: &'a [Pattern],
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        Box::pin(async move {
            let page = self.0.read(patterns, after, limit).await;
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            page
        })
    }

    fn latest<'a>(
        &'a self,
        patterns: &'a [Pattern],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        self.0.latest(patterns, limit)
    }

    fn topics<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<TopicInfo>, LogError>> {
        self.0.topics(prefix)
    }

    fn head(&self) -> u64 {
        self.0.head()
    }

    fn floor(&self, patterns: &[Pattern]) -> u64 {
        self.0.floor(patterns)
    }

    fn set_sink(&self, sink: Arc<dyn CommitSink>) {
        self.0.set_sink(sink);
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), LogError>> {
        self.0.maintain()
    }

    fn ready(&self) -> Result<(), LogError> {
        self.0.ready()
    }

    fn webhooks(&self) -> Arc<dyn herald_core::Webhooks> {
        self.0.webhooks()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        self.0.close()
    }
}

/// Several rounds, because a lost event at the seam needs a publish to land in a narrow
/// window; half of them with reads that take a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seam_free_resume_under_concurrent_publishing() {
    for round in 0..6 {
        let memory = MemoryLog::new(LogOptions::default());
        let log: Arc<dyn Log> = if round % 2 == 0 {
            Arc::new(memory)
        } else {
            Arc::new(SlowReads(memory))
        };
        seam_round(log).await;
    }
}

async fn seam_round(log: Arc<dyn Log>) {
    const N: u64 = 5_000;
    const TOPICS: [&str; 5] = ["s.a", "s.b", "s.c.d", "t.a", "t.b.c"];
    let hub = Hub::new(
        log,
        HubConfig {
            // Large enough that no reader is dropped as slow: this test is about the seam.
            subscriber_queue: 1 << 15,
            ..HubConfig::default()
        },
    );

    // The starter says when every planned subscriber is in place; only then does the
    // publisher send `fin`, so that no live subscriber can start after the end.
    let (all_started_tx, all_started) = tokio::sync::oneshot::channel::<()>();
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for i in 0..N {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let topic = TOPICS[(x % TOPICS.len() as u64) as usize];
                if i % 7 == 0 {
                    // Batches as well as single events.
                    let batch = vec![new_event(topic, "1", None), new_event("s.a", "2", None)];
                    hub.publish(batch).await.unwrap();
                } else {
                    publish(&hub, topic).await;
                }
                if i % 32 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            all_started.await.unwrap();
            // Every subscriber also listens to `fin`: it stops when it sees this.
            publish(&hub, "fin").await
        })
    };

    let mut plans = vec![
        Plan {
            patterns: &[">"],
            start_at: 0,
            cursor: PlanCursor::Live,
        },
        Plan {
            patterns: &["s.*"],
            start_at: 0,
            cursor: PlanCursor::Zero,
        },
        Plan {
            patterns: &["s.>"],
            start_at: 300,
            cursor: PlanCursor::Zero,
        },
        Plan {
            patterns: &["s.a", "t.a"],
            start_at: 800,
            cursor: PlanCursor::BehindHead(100),
        },
        Plan {
            patterns: &["*.a"],
            start_at: 1_200,
            cursor: PlanCursor::Live,
        },
        Plan {
            patterns: &["s.b", "s.*"],
            start_at: 2_000,
            cursor: PlanCursor::BehindHead(1_500),
        },
        Plan {
            patterns: &[">"],
            start_at: 2_500,
            cursor: PlanCursor::Zero,
        },
        Plan {
            patterns: &["t.>"],
            start_at: 3_000,
            cursor: PlanCursor::AtHead,
        },
        Plan {
            patterns: &[">"],
            start_at: 4_000,
            cursor: PlanCursor::BehindHead(2_000),
        },
        Plan {
            patterns: &["s.c.d", "t.b.*"],
            start_at: 4_500,
            cursor: PlanCursor::BehindHead(10),
        },
        Plan {
            patterns: &["*.b.>", "s.b"],
            start_at: 5_500,
            cursor: PlanCursor::Zero,
        },
    ];
    // Many more resuming subscribers, spread over the whole run: each start is a chance for
    // a publish to land between a subscriber's last history read and its registration.
    const MORE: [&[&str]; 6] = [
        &[">"],
        &["s.*"],
        &["t.>"],
        &["*.a", "s.b"],
        &["s.c.d"],
        &["*.b.>"],
    ];
    for k in 0..60u64 {
        plans.push(Plan {
            patterns: MORE[(k % 6) as usize],
            start_at: 90 * k + 17,
            cursor: match k % 4 {
                0 => PlanCursor::BehindHead(k * 37 % 900),
                1 => PlanCursor::AtHead,
                2 => PlanCursor::Live,
                _ => PlanCursor::BehindHead(3),
            },
        });
    }
    plans.sort_by_key(|p| p.start_at);

    let starter = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut readers = Vec::new();
            for plan in plans {
                while hub.head() < plan.start_at {
                    tokio::task::yield_now().await;
                }
                let mut list: Vec<&str> = plan.patterns.to_vec();
                list.push("fin");
                let patterns = pats(&list);
                let head_before = hub.head();
                let cursor = match plan.cursor {
                    PlanCursor::Live => Cursor::Live,
                    PlanCursor::Zero => Cursor::After(0),
                    PlanCursor::BehindHead(k) => Cursor::After(head_before.saturating_sub(k)),
                    PlanCursor::AtHead => Cursor::After(head_before),
                };
                let mut sub = hub.subscribe(patterns.clone(), cursor);
                let head_after = hub.head();
                readers.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let ev = next_event(&mut sub).await;
                        ids.push(ev.id);
                        if ev.topic.as_str() == "fin" {
                            break;
                        }
                    }
                    Outcome {
                        patterns,
                        cursor,
                        head_before,
                        head_after,
                        ids,
                    }
                }));
            }
            all_started_tx.send(()).unwrap();
            readers
        })
    };

    let fin = timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publisher timed out")
        .unwrap();
    let readers = timeout(Duration::from_secs(60), starter)
        .await
        .expect("starter timed out")
        .unwrap();
    let all = hub.history(&pats(&[">"]), Some(0), 100_000).await.unwrap();
    assert_eq!(all.len() as u64, fin);
    assert!(all.windows(2).all(|w| w[0].id + 1 == w[1].id));

    for reader in readers {
        let out = timeout(Duration::from_secs(60), reader)
            .await
            .expect("reader timed out")
            .unwrap();
        let matching: Vec<u64> = all
            .iter()
            .filter(|e| out.patterns.iter().any(|p| p.matches(e.topic.as_str())))
            .map(|e| e.id)
            .collect();
        let expected: Vec<u64> = match out.cursor {
            Cursor::After(n) => matching.iter().copied().filter(|&id| id > n).collect(),
            Cursor::Live => {
                // Live: a gap-free suffix that starts no later than the first matching
                // event after subscribing, and has nothing from before it.
                let first = out.ids[0];
                assert!(
                    first > out.head_before,
                    "{:?}: old event {first}",
                    out.patterns
                );
                let first_due = matching.iter().copied().find(|&id| id > out.head_after);
                assert!(
                    first_due.is_none_or(|due| first <= due),
                    "{:?}: missed events after subscribing",
                    out.patterns
                );
                matching.iter().copied().filter(|&id| id >= first).collect()
            }
        };
        assert!(
            out.ids.windows(2).all(|w| w[0] < w[1]),
            "{:?} {:?}: not strictly increasing",
            out.patterns,
            out.cursor
        );
        if out.ids != expected {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|id| !out.ids.contains(id))
                .copied()
                .take(10)
                .collect();
            let extra: Vec<u64> = out
                .ids
                .iter()
                .filter(|id| !expected.contains(id))
                .copied()
                .take(10)
                .collect();
            panic!(
                "{:?} from {:?}: got {} events, expected {}; missing {missing:?}, extra {extra:?}",
                out.patterns,
                out.cursor,
                out.ids.len(),
                expected.len()
            );
        }
    }
}

#[tokio::test]
async fn overlapping_patterns_deliver_each_event_once() {
    let hub = hub();
    let patterns = pats(&["orders.*", "orders.eu"]);
    let mut live = hub.subscribe(patterns.clone(), Cursor::Live);
    let eu = publish(&hub, "orders.eu").await;
    let us = publish(&hub, "orders.us").await;
    publish(&hub, "orders.eu.x").await;
    publish(&hub, "orders").await;
    let eu2 = publish(&hub, "orders.eu").await;
    assert_eq!(next_ids(&mut live, 3).await, vec![eu, us, eu2]);
    assert_quiet(&mut live).await;

    // The same from history.
    let mut replay = hub.subscribe(patterns, Cursor::After(0));
    assert_eq!(next_ids(&mut replay, 3).await, vec![eu, us, eu2]);
    assert_quiet(&mut replay).await;
    assert_eq!(hub.index_len(), 4);
}

/// Overlapping patterns put an event in the subscriber's queue once, not once per pattern:
/// a queue of 4 holds 4 such events without overflowing.
#[tokio::test]
async fn overlapping_patterns_take_one_queue_slot() {
    let hub = hub_with(
        HubConfig {
            subscriber_queue: 4,
            ..HubConfig::default()
        },
        Retention::default(),
    );
    let mut sub = hub.subscribe(
        pats(&["orders.*", "orders.eu", "orders.>", ">"]),
        Cursor::Live,
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(publish(&hub, "orders.eu").await);
    }
    assert_eq!(next_ids(&mut sub, 4).await, ids);
    assert_eq!(
        hub.stats()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(
        hub.stats()
            .dropped_subscribers
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn wildcard_patterns() {
    let hub = hub();
    let mut star = hub.subscribe(pats(&["*"]), Cursor::Live);
    let mut all = hub.subscribe(pats(&[">"]), Cursor::Live);
    let mut a_tail = hub.subscribe(pats(&["a.>"]), Cursor::Live);
    let mut mid = hub.subscribe(pats(&["*.b.*"]), Cursor::Live);
    let a = publish(&hub, "a").await;
    let ab = publish(&hub, "a.b").await;
    let abc = publish(&hub, "a.b.c").await;
    let zbc = publish(&hub, "z.b.c").await;
    let z = publish(&hub, "z").await;
    assert_eq!(next_ids(&mut star, 2).await, vec![a, z]);
    assert_eq!(next_ids(&mut all, 5).await, vec![a, ab, abc, zbc, z]);
    assert_eq!(next_ids(&mut a_tail, 2).await, vec![ab, abc]);
    assert_eq!(next_ids(&mut mid, 2).await, vec![abc, zbc]);
    for sub in [&mut star, &mut all, &mut a_tail, &mut mid] {
        assert_quiet(sub).await;
    }
    // And from history.
    let mut star = hub.subscribe(pats(&["*"]), Cursor::After(0));
    assert_eq!(next_ids(&mut star, 2).await, vec![a, z]);
    let mut all = hub.subscribe(pats(&[">"]), Cursor::After(1));
    assert_eq!(next_ids(&mut all, 4).await, vec![ab, abc, zbc, z]);
    assert_quiet(&mut star).await;
    assert_quiet(&mut all).await;
}

#[tokio::test]
async fn idempotency_key_dedupes() {
    let hub = hub();
    let mut sub = hub.subscribe(pats(&[">"]), Cursor::Live);
    let first = hub
        .publish_one(new_event("pay", "{\"v\":1}", Some("k-1")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = hub
        .publish_one(new_event("pay", "{\"v\":2}", Some("k-1")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event.id, first.event.id);
    assert_eq!(
        again.event.data.get(),
        "{\"v\":1}",
        "the earlier event is returned"
    );
    assert_eq!(hub.head(), first.event.id);
    assert_eq!(next_ids(&mut sub, 1).await, vec![first.event.id]);
    assert_quiet(&mut sub).await;

    // Within one batch, and mixed with fresh events.
    let out = hub
        .publish(vec![
            new_event("pay", "1", Some("k-2")),
            new_event("pay", "2", Some("k-1")),
            new_event("pay", "3", Some("k-2")),
            new_event("pay", "4", None),
        ])
        .await
        .unwrap();
    let dup: Vec<bool> = out.iter().map(|a| a.duplicate).collect();
    assert_eq!(dup, vec![false, true, true, false]);
    assert_eq!(out[1].event.id, first.event.id);
    assert_eq!(out[2].event.id, out[0].event.id);
    assert_eq!(
        next_ids(&mut sub, 2).await,
        vec![out[0].event.id, out[3].event.id]
    );
    assert_quiet(&mut sub).await;
    assert_eq!(
        hub.stats()
            .published
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn retention_by_count_sends_truncated_notice() {
    let hub = hub_with(
        HubConfig::default(),
        Retention {
            default_max_events: 10,
            ..Retention::default()
        },
    );
    for _ in 0..30 {
        publish(&hub, "r").await;
    }
    let mut old = hub.subscribe(pats(&["r"]), Cursor::After(0));
    match timeout(WAIT, old.recv()).await.unwrap().unwrap() {
        Item::Truncated { requested, oldest } => {
            assert_eq!((requested, oldest), (0, 21));
        }
        other => panic!("expected a truncated notice, got {other:?}"),
    }
    assert_eq!(next_ids(&mut old, 10).await, (21..=30).collect::<Vec<_>>());
    assert_quiet(&mut old).await;
    let live = publish(&hub, "r").await;
    assert_eq!(next_ids(&mut old, 1).await, vec![live]);

    // Event 31 pushed retention to 22..=31. Inside it (or exactly at its edge): no notice.
    for cursor in [21, 25] {
        let mut inside = hub.subscribe(pats(&["r"]), Cursor::After(cursor));
        let want: Vec<u64> = (cursor + 1..=live).collect();
        assert_eq!(next_ids(&mut inside, want.len()).await, want);
        assert_quiet(&mut inside).await;
    }
    // Through a wildcard too.
    let mut wild = hub.subscribe(pats(&[">"]), Cursor::After(5));
    match timeout(WAIT, wild.recv()).await.unwrap().unwrap() {
        Item::Truncated { requested, oldest } => assert_eq!((requested, oldest), (5, 22)),
        other => panic!("expected a truncated notice, got {other:?}"),
    }
    assert_eq!(next_ids(&mut wild, 10).await, (22..=31).collect::<Vec<_>>());
    // Another topic's pruning does not concern a subscriber of an unpruned one.
    publish(&hub, "fresh").await;
    let mut fresh = hub.subscribe(pats(&["fresh"]), Cursor::After(0));
    assert_eq!(next_ids(&mut fresh, 1).await, vec![32]);
}

/// The cursor is checked against retention when history is read, not when the
/// subscription object is made: events pruned in between must not vanish silently.
#[tokio::test]
async fn truncated_notice_reflects_pruning_before_first_read() {
    let hub = hub_with(
        HubConfig::default(),
        Retention {
            default_max_events: 10,
            ..Retention::default()
        },
    );
    for _ in 0..30 {
        publish(&hub, "r").await;
    }
    // 21..=30 retained: cursor 20 is inside retention now...
    let mut sub = hub.subscribe(pats(&["r"]), Cursor::After(20));
    // ...but not any more when the subscriber first reads: 26..=35 retained.
    for _ in 0..5 {
        publish(&hub, "r").await;
    }
    match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
        Item::Truncated { requested, oldest } => assert_eq!((requested, oldest), (20, 26)),
        Item::Event(ev) => panic!("events 21..=25 were lost silently; first event {}", ev.id),
    }
    assert_eq!(next_ids(&mut sub, 10).await, (26..=35).collect::<Vec<_>>());
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn retention_by_age_via_maintain() {
    let hub = hub_with(
        HubConfig::default(),
        Retention {
            rules: vec![RetentionRule {
                pattern: Pattern::new("tmp.>").unwrap(),
                max_events: 100,
                max_age: Duration::ZERO,
            }],
            ..Retention::default()
        },
    );
    for t in ["tmp.a", "keep", "tmp.b", "keep"] {
        publish(&hub, t).await;
    }
    hub.log().maintain().await.unwrap();
    let topics: Vec<(String, u64, u64)> = hub
        .topics("")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.topic.to_string(), t.last_id, t.count))
        .collect();
    assert_eq!(topics, vec![("keep".to_owned(), 4, 2)]);

    let mut keep = hub.subscribe(pats(&["keep"]), Cursor::After(0));
    assert_eq!(next_ids(&mut keep, 2).await, vec![2, 4]);
    let mut both = hub.subscribe(pats(&["tmp.>", "keep"]), Cursor::After(0));
    match timeout(WAIT, both.recv()).await.unwrap().unwrap() {
        Item::Truncated { requested, oldest } => assert_eq!((requested, oldest), (0, 2)),
        other => panic!("expected a truncated notice, got {other:?}"),
    }
    assert_eq!(next_ids(&mut both, 2).await, vec![2, 4]);
    let mut gone = hub.subscribe(pats(&["tmp.a"]), Cursor::After(0));
    match timeout(WAIT, gone.recv()).await.unwrap().unwrap() {
        Item::Truncated { requested, oldest } => assert_eq!((requested, oldest), (0, 5)),
        other => panic!("expected a truncated notice, got {other:?}"),
    }
    let next = publish(&hub, "tmp.a").await;
    assert_eq!(next_ids(&mut gone, 1).await, vec![next]);
    assert_eq!(next_ids(&mut both, 1).await, vec![next]);
    for sub in [&mut keep, &mut both, &mut gone] {
        assert_quiet(sub).await;
    }
}

/// A retried publish is a duplicate for the whole dedupe window, even when retention has
/// already removed the first event.
#[tokio::test]
async fn idempotency_key_outlives_count_retention() {
    let hub = hub_with(
        HubConfig::default(),
        Retention {
            default_max_events: 3,
            ..Retention::default()
        },
    );
    let first = hub
        .publish_one(new_event("pay", "1", Some("retry-me")))
        .await
        .unwrap();
    for _ in 0..5 {
        publish(&hub, "pay").await;
    }
    let head = hub.head();
    let again = hub
        .publish_one(new_event("pay", "1", Some("retry-me")))
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "stored a second copy as id {}",
        again.event.id
    );
    assert_eq!(again.event.id, first.event.id);
    assert_eq!(hub.head(), head);
}

#[tokio::test]
async fn history_pages_and_topics() {
    let hub = hub();
    for t in ["a.x", "a.y", "b", "a.x", "b", "a.x"] {
        publish(&hub, t).await;
    }
    let ids = |v: Vec<Arc<Event>>| v.iter().map(|e| e.id).collect::<Vec<_>>();
    let ax = pats(&["a.x"]);
    assert_eq!(ids(hub.history(&ax, None, 2).await.unwrap()), vec![4, 6]);
    assert_eq!(ids(hub.history(&ax, Some(1), 1).await.unwrap()), vec![4]);
    assert_eq!(
        ids(hub.history(&ax, Some(6), 10).await.unwrap()),
        Vec::<u64>::new()
    );
    let a = pats(&["a.*"]);
    assert_eq!(
        ids(hub.history(&a, Some(0), 10).await.unwrap()),
        vec![1, 2, 4, 6]
    );
    let topics: Vec<(String, u64, u64)> = hub
        .topics("a.")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.topic.to_string(), t.last_id, t.count))
        .collect();
    assert_eq!(
        topics,
        vec![("a.x".to_owned(), 6, 3), ("a.y".to_owned(), 2, 1)]
    );
    assert_eq!(hub.topics("").await.unwrap().len(), 3);
}

#[tokio::test]
async fn publish_limits() {
    let hub = hub_with(
        HubConfig {
            max_event_bytes: 16,
            max_batch: 3,
            ..HubConfig::default()
        },
        Retention::default(),
    );
    let big = format!("\"{}\"", "x".repeat(20));
    match hub.publish_one(new_event("t", &big, None)).await {
        Err(HubError::EventTooLarge { size, limit }) => assert_eq!((size, limit), (22, 16)),
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    // Exactly at the limit is fine.
    let fits = format!("\"{}\"", "x".repeat(14));
    hub.publish_one(new_event("t", &fits, None)).await.unwrap();
    let four: Vec<NewEvent> = (0..4).map(|_| new_event("t", "1", None)).collect();
    match hub.publish(four).await {
        Err(HubError::BatchTooLarge { size, limit }) => assert_eq!((size, limit), (4, 3)),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert!(matches!(
        hub.publish(Vec::new()).await,
        Err(HubError::EmptyBatch)
    ));
    // All or nothing: one big event spoils the batch.
    let mixed = vec![new_event("t", "1", None), new_event("t", &big, None)];
    assert!(matches!(
        hub.publish(mixed).await,
        Err(HubError::EventTooLarge { .. })
    ));
    assert_eq!(hub.head(), 1);
    let three: Vec<NewEvent> = (0..3).map(|_| new_event("t", "1", None)).collect();
    assert_eq!(hub.publish(three).await.unwrap().len(), 3);
    assert_eq!(hub.head(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_dropped_fast_one_keeps_up() {
    let hub = hub_with(
        HubConfig {
            subscriber_queue: 8,
            ..HubConfig::default()
        },
        Retention::default(),
    );
    let mut slow = hub.subscribe(pats(&["feed"]), Cursor::Live);
    let mut fast = hub.subscribe(pats(&["feed"]), Cursor::Live);
    assert_eq!(hub.index_len(), 2);

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids.push(next_event(&mut fast).await.id);
            progress_tx.send_replace(ids.len());
        }
        (ids, fast)
    });
    let mut published = Vec::new();
    for i in 0..100usize {
        // Keep the fast reader at most 4 events behind: its queue (8) never fills.
        timeout(WAIT, progress.wait_for(|&got| got + 4 >= i))
            .await
            .expect("fast reader stalled")
            .unwrap();
        published.push(publish(&hub, "feed").await);
    }
    let (ids, fast) = timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(ids, published);
    assert_eq!(hub.index_len(), 1, "the slow subscriber left the index");
    assert_eq!(
        hub.stats()
            .dropped_subscribers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let mut got = Vec::new();
    let lagged = loop {
        match timeout(WAIT, slow.recv()).await.expect("slow recv hung") {
            Ok(Item::Event(ev)) => got.push(ev.id),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
        assert!(got.len() <= 8, "more events than the queue holds");
    };
    assert!(matches!(lagged, SubscriptionError::Lagged(8)), "{lagged:?}");
    assert_eq!(got, published[..got.len()].to_vec());
    drop(slow);
    assert_eq!(hub.index_len(), 1);
    drop(fast);
    assert_eq!(hub.index_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_subscribers_get_every_event_in_order() {
    let hub = hub();
    let mut readers = Vec::new();
    for _ in 0..1_000 {
        let mut sub = hub.subscribe(pats(&["room.1"]), Cursor::Live);
        readers.push(tokio::spawn(async move { next_ids(&mut sub, 200).await }));
    }
    assert_eq!(hub.index_len(), 1_000);
    let mut published = Vec::new();
    for i in 0..200 {
        published.push(publish(&hub, "room.1").await);
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for r in readers {
        let ids = timeout(Duration::from_secs(30), r).await.unwrap().unwrap();
        assert_eq!(ids, published);
    }
    assert_eq!(hub.index_len(), 0, "finished subscriptions were dropped");
}

#[tokio::test]
async fn dropping_a_subscription_leaves_the_index() {
    let hub = hub();
    let live = hub.subscribe(pats(&["a", "b.*", ">"]), Cursor::Live);
    assert_eq!(hub.index_len(), 3);
    let other = hub.subscribe(pats(&["a"]), Cursor::Live);
    assert_eq!(hub.index_len(), 4);
    drop(live);
    assert_eq!(hub.index_len(), 1);
    drop(other);
    assert_eq!(hub.index_len(), 0);

    // A resuming subscription registers while catching up and leaves when dropped.
    publish(&hub, "a").await;
    let mut resume = hub.subscribe(pats(&["a"]), Cursor::After(0));
    assert_eq!(next_ids(&mut resume, 1).await, vec![1]);
    assert_eq!(hub.index_len(), 1);
    drop(resume);
    assert_eq!(hub.index_len(), 0);
    // One that never started reading was never registered.
    let idle = hub.subscribe(pats(&["a"]), Cursor::After(0));
    drop(idle);
    assert_eq!(hub.index_len(), 0);
    // Publishing to nobody is fine.
    publish(&hub, "a").await;
}

fn item_ids(items: &[Item]) -> Vec<u64> {
    items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e.id,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn recv_many_coalesces_and_respects_max() {
    let hub = hub();
    for _ in 0..10 {
        publish(&hub, "m").await;
    }
    let mut sub = hub.subscribe(pats(&["m"]), Cursor::After(0));
    let mut out = Vec::new();
    timeout(WAIT, sub.recv_many(&mut out, 4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![1, 2, 3, 4]);
    out.clear();
    timeout(WAIT, sub.recv_many(&mut out, 100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), (5..=10).collect::<Vec<_>>());

    // Live: several ready events come together, capped by max.
    for _ in 0..5 {
        publish(&hub, "m").await;
    }
    out.clear();
    timeout(WAIT, sub.recv_many(&mut out, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![11, 12, 13]);
    out.clear();
    timeout(WAIT, sub.recv_many(&mut out, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![14, 15]);
    // It waits for the first item.
    out.clear();
    assert!(
        timeout(QUIET, sub.recv_many(&mut out, 10)).await.is_err(),
        "nothing ready: it waits"
    );
    assert!(out.is_empty());
    publish(&hub, "m").await;
    timeout(WAIT, sub.recv_many(&mut out, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![16]);
    // `max` counts what is already in `out`.
    for _ in 0..4 {
        publish(&hub, "m").await;
    }
    timeout(WAIT, sub.recv_many(&mut out, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![16, 17, 18]);
    out.clear();
    timeout(WAIT, sub.recv_many(&mut out, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&out), vec![19]);
}

#[test]
fn cursor_parse() {
    assert_eq!(Cursor::parse("now").unwrap(), Cursor::Live);
    assert_eq!(Cursor::parse("0").unwrap(), Cursor::After(0));
    assert_eq!(Cursor::parse("123").unwrap(), Cursor::After(123));
    assert_eq!(
        Cursor::parse("18446744073709551615").unwrap(),
        Cursor::After(u64::MAX)
    );
    for bad in [
        "abc",
        "-1",
        "",
        "1.5",
        "+1",
        "0x10",
        "1e3",
        "NOW",
        "18446744073709551616",
        "123456789012345678901234567890",
    ] {
        assert!(Cursor::parse(bad).is_err(), "{bad:?} accepted");
    }
}

// ---------------------------------------------------------------------------------------
// Property: any interleaving of publishes, subscriptions and reads gives every subscription
// exactly the naive expectation.

const PROP_TOPICS: [&str; 7] = ["a", "b", "a.x", "a.y", "b.x", "b.x.z", "c"];
const PROP_PATTERNS: [&str; 10] = ["a", "b", "a.x", "a.*", "a.>", "*", ">", "*.x", "b.>", "c"];

#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<usize>),
    Subscribe {
        patterns: Vec<usize>,
        /// `None`: live; else an index into `0..=head + 2`.
        cursor: Option<prop::sample::Index>,
    },
    Read {
        sub: prop::sample::Index,
        count: usize,
        many: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0..PROP_TOPICS.len(), 1..4).prop_map(Op::Publish),
        2 => (
            prop::collection::vec(0..PROP_PATTERNS.len(), 1..4),
            prop::option::weighted(0.8, any::<prop::sample::Index>()),
        )
            .prop_map(|(patterns, cursor)| Op::Subscribe { patterns, cursor }),
        2 => (any::<prop::sample::Index>(), 1..6usize, any::<bool>())
            .prop_map(|(sub, count, many)| Op::Read { sub, count, many }),
    ]
}

struct Tracked {
    sub: Subscription,
    patterns: Vec<Pattern>,
    /// Events with a larger id are due.
    from: u64,
    received: Vec<u64>,
}

impl Tracked {
    fn due(&self, log: &[(u64, &str)]) -> Vec<u64> {
        log.iter()
            .filter(|(id, t)| *id > self.from && self.patterns.iter().any(|p| p.matches(t)))
            .map(|(id, _)| *id)
            .collect()
    }
}

async fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let hub = hub();
    let mut log: Vec<(u64, &str)> = Vec::new();
    let mut subs: Vec<Tracked> = Vec::new();
    for op in ops {
        match op {
            Op::Publish(topics) => {
                let batch = topics
                    .iter()
                    .map(|&t| new_event(PROP_TOPICS[t], "null", None))
                    .collect();
                let out = hub.publish(batch).await.unwrap();
                for (a, &t) in out.iter().zip(&topics) {
                    log.push((a.event.id, PROP_TOPICS[t]));
                }
            }
            Op::Subscribe { patterns, cursor } => {
                let patterns: Vec<Pattern> = patterns
                    .iter()
                    .map(|&p| Pattern::new(PROP_PATTERNS[p]).unwrap())
                    .collect();
                let head = hub.head();
                let (cursor, from) = match cursor {
                    None => (Cursor::Live, head),
                    Some(i) => {
                        let n = i.index(head as usize + 3) as u64;
                        (Cursor::After(n), n)
                    }
                };
                let sub = hub.subscribe(patterns.clone(), cursor);
                subs.push(Tracked {
                    sub,
                    patterns,
                    from,
                    received: Vec::new(),
                });
            }
            Op::Read { sub, count, many } => {
                if subs.is_empty() {
                    continue;
                }
                let i = sub.index(subs.len());
                let t = &mut subs[i];
                let due = t.due(&log);
                let pending = &due[t.received.len()..];
                let n = count.min(pending.len());
                if n == 0 {
                    continue;
                }
                if many {
                    let mut out = Vec::new();
                    timeout(WAIT, t.sub.recv_many(&mut out, n))
                        .await
                        .expect("recv_many hung")
                        .unwrap();
                    prop_assert!(!out.is_empty() && out.len() <= n);
                    let ids = item_ids(&out);
                    prop_assert_eq!(&ids[..], &pending[..ids.len()]);
                    t.received.extend(ids);
                } else {
                    let ids = next_ids(&mut t.sub, n).await;
                    prop_assert_eq!(&ids[..], &pending[..n]);
                    t.received.extend(ids);
                }
            }
        }
    }
    for t in &mut subs {
        let due = t.due(&log);
        let rest = due.len() - t.received.len();
        let ids = next_ids(&mut t.sub, rest).await;
        t.received.extend(ids);
        prop_assert_eq!(
            &t.received,
            &due,
            "patterns {:?} from {}",
            t.patterns,
            t.from
        );
        let more = timeout(Duration::from_millis(5), t.sub.recv()).await;
        prop_assert!(more.is_err(), "unexpected extra item {:?}", more);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn interleavings_match_naive_expectation(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_ops(ops))?;
    }
}
