//! Behaviour of `SqliteLog` against the `Log` contract, on real files in temp dirs.

use std::{
    path::Path,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use herald_core::{
    CommitSink, Cursor, Event, Hub, HubConfig, Item, Log, LogError, LogOptions, NewEvent, Pattern,
    Retention, RetentionRule, Topic,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tempfile::TempDir;

use crate::{DB_FILE, Durability, SqliteLog};

fn ev(topic: &str, data: &str) -> NewEvent {
    keyed(topic, data, None)
}

/// `data` is used as JSON when it is JSON, else as a JSON string.
fn keyed(topic: &str, data: &str, key: Option<&str>) -> NewEvent {
    let json = if serde_json::from_str::<serde_json::Value>(data).is_ok() {
        data.to_owned()
    } else {
        serde_json::to_string(data).unwrap()
    };
    NewEvent::new(
        Topic::new(topic).unwrap(),
        None,
        RawValue::from_string(json).unwrap(),
        key.map(str::to_owned),
    )
    .unwrap()
}

fn pats(p: &[&str]) -> Vec<Pattern> {
    p.iter().map(|s| Pattern::new(s).unwrap()).collect()
}

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

async fn open(dir: &Path) -> SqliteLog {
    open_with(dir, LogOptions::default()).await
}

async fn open_with(dir: &Path, options: LogOptions) -> SqliteLog {
    SqliteLog::open(dir, Durability::Batch, options)
        .await
        .unwrap()
}

async fn append_one(log: &SqliteLog, e: NewEvent) -> u64 {
    log.append(vec![e]).await.unwrap()[0].event.id
}

fn retention(pattern: &str, max_events: u64, max_age: Duration) -> LogOptions {
    LogOptions {
        retention: Retention {
            rules: vec![RetentionRule {
                pattern: Pattern::new(pattern).unwrap(),
                max_events,
                max_age,
            }],
            ..Retention::default()
        },
        ..LogOptions::default()
    }
}

/// Records what the sink sees, and the log's head at that moment.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<u64>>>,
    log: OnceLock<Weak<SqliteLog>>,
    head_behind: Mutex<bool>,
    /// When set, the first call blocks until a message arrives (holds the writer thread).
    gate: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            std::sync::mpsc::Receiver<()>,
        )>,
    >,
}

impl Recorder {
    fn seen(&self) -> Vec<u64> {
        self.batches.lock().iter().flatten().copied().collect()
    }
}

impl CommitSink for Recorder {
    fn committed(&self, events: &[Arc<Event>]) {
        if let Some(log) = self.log.get().and_then(Weak::upgrade)
            && log.head() < events.last().unwrap().id
        {
            *self.head_behind.lock() = true;
        }
        self.batches.lock().push(ids(events));
        let gate = self.gate.lock().take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.recv();
        }
    }
}

#[tokio::test]
async fn append_read_latest_topics() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    assert_eq!(log.head(), 0);
    assert!(log.read(&pats(&[">"]), 0, 10).await.unwrap().is_empty());
    assert!(log.latest(&pats(&[">"]), 10).await.unwrap().is_empty());

    let out = log
        .append(vec![
            ev("orders.eu", r#"{"n":1}"#),
            ev("orders.us", r#""two""#),
            ev("users", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out.iter().map(|a| a.event.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(out.iter().all(|a| !a.duplicate));
    append_one(&log, ev("orders.eu", "[4]")).await;
    assert_eq!(log.head(), 4);

    let all = log.read(&pats(&[">"]), 0, 100).await.unwrap();
    assert_eq!(ids(&all), [1, 2, 3, 4]);
    assert_eq!(all[0].data.get(), r#"{"n":1}"#);
    assert_eq!(all[1].data.get(), r#""two""#);
    assert_eq!(all[0].event.as_ref(), "message");
    assert_eq!(all[0].topic.as_str(), "orders.eu");
    assert_eq!(
        *all[0], *out[0].event,
        "read back equals what append returned"
    );

    assert_eq!(
        ids(&log.read(&pats(&["orders.*"]), 0, 100).await.unwrap()),
        [1, 2, 4]
    );
    assert_eq!(
        ids(&log.read(&pats(&["orders.*"]), 1, 1).await.unwrap()),
        [2]
    );
    assert_eq!(
        ids(&log
            .read(&pats(&["orders.eu", "users"]), 0, 100)
            .await
            .unwrap()),
        [1, 3, 4]
    );
    assert!(log.read(&pats(&["nope"]), 0, 100).await.unwrap().is_empty());
    assert!(log.read(&pats(&[">"]), 4, 100).await.unwrap().is_empty());
    assert!(log.read(&pats(&[">"]), 0, 0).await.unwrap().is_empty());

    assert_eq!(ids(&log.latest(&pats(&[">"]), 2).await.unwrap()), [3, 4]);
    assert_eq!(
        ids(&log.latest(&pats(&["orders.>"]), 2).await.unwrap()),
        [2, 4]
    );
    assert_eq!(ids(&log.latest(&pats(&["users"]), 5).await.unwrap()), [3]);

    let topics = log.topics("").await.unwrap();
    let listed: Vec<_> = topics
        .iter()
        .map(|t| (t.topic.as_str(), t.last_id, t.count))
        .collect();
    assert_eq!(
        listed,
        [("orders.eu", 4, 2), ("orders.us", 2, 1), ("users", 3, 1)]
    );
    assert_eq!(log.topics("orders.u").await.unwrap().len(), 1);
    assert_eq!(log.floor(&pats(&[">"])), 0);
    log.ready().unwrap();
    log.close().await.unwrap();
}

/// More than 64 topics: reads scan by id (with and without a common literal prefix) and
/// must agree with the simple filter.
#[tokio::test]
async fn scan_reads_match_filter() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    let mut batch = Vec::new();
    for i in 0..300 {
        let topic = match i % 3 {
            0 => format!("a.t{}", i % 90),
            1 => format!("b.t{}", i % 70),
            _ => format!("a.x.t{}", i % 80),
        };
        batch.push(ev(&topic, &i.to_string()));
    }
    log.append(batch).await.unwrap();
    let all = log.read(&pats(&[">"]), 0, 1000).await.unwrap();
    assert_eq!(all.len(), 300);
    for ps in [
        vec!["a.>"],
        vec!["a.*"],
        vec!["a.x.*", "a.*"],
        vec!["*.t1"],
        vec!["b.>", "a.x.>"],
        vec![">"],
    ] {
        let patterns = pats(&ps);
        let expect: Vec<u64> = all
            .iter()
            .filter(|e| patterns.iter().any(|p| p.matches(e.topic.as_str())))
            .map(|e| e.id)
            .collect();
        for (after, limit) in [(0, 1000), (0, 7), (150, 20), (299, 5)] {
            let got = ids(&log.read(&patterns, after, limit).await.unwrap());
            let want: Vec<u64> = expect
                .iter()
                .copied()
                .filter(|&id| id > after)
                .take(limit)
                .collect();
            assert_eq!(got, want, "{ps:?} after {after} limit {limit}");
        }
        let latest = ids(&log.latest(&patterns, 9).await.unwrap());
        let want = &expect[expect.len().saturating_sub(9)..];
        assert_eq!(latest, want, "latest {ps:?}");
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn ids_continue_after_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(dir.path()).await;
        log.append(vec![ev("a", "1"), ev("b", "2")]).await.unwrap();
        log.close().await.unwrap();
    }
    {
        // Closed cleanly: head, data and stats are back.
        let log = open(dir.path()).await;
        assert_eq!(log.head(), 2);
        assert_eq!(append_one(&log, ev("a", "3")).await, 3);
        assert_eq!(log.topics("a").await.unwrap()[0].count, 2);
        // Dropped without close.
    }
    let log = open(dir.path()).await;
    assert_eq!(log.head(), 3);
    assert_eq!(append_one(&log, ev("c", "4")).await, 4);
    assert_eq!(
        ids(&log.read(&pats(&[">"]), 0, 10).await.unwrap()),
        [1, 2, 3, 4]
    );
    log.close().await.unwrap();
}

/// Even when retention removed every row, ids are never handed out twice.
#[tokio::test]
async fn ids_not_reused_after_everything_expired() {
    let dir = TempDir::new().unwrap();
    let options = retention(">", 100, Duration::from_millis(1));
    {
        let log = open_with(dir.path(), options.clone()).await;
        log.append(vec![ev("a", "1"), ev("a", "2"), ev("b", "3")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        log.maintain().await.unwrap();
        assert!(log.read(&pats(&[">"]), 0, 10).await.unwrap().is_empty());
        log.close().await.unwrap();
    }
    let log = open_with(dir.path(), options).await;
    assert_eq!(log.head(), 3);
    assert_eq!(log.floor(&pats(&["a"])), 2);
    assert_eq!(log.floor(&pats(&[">"])), 3);
    assert_eq!(append_one(&log, ev("a", "4")).await, 4);
    log.close().await.unwrap();
}

#[tokio::test]
async fn dedupe_within_and_across_batches_and_restarts() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(dir.path()).await;
        let out = log
            .append(vec![
                keyed("a", "1", Some("k1")),
                keyed("a", "2", Some("k1")),
                keyed("a", "3", Some("k2")),
            ])
            .await
            .unwrap();
        assert_eq!(
            out.iter()
                .map(|a| (a.event.id, a.duplicate))
                .collect::<Vec<_>>(),
            [(1, false), (1, true), (2, false)]
        );
        assert_eq!(out[1].event.data.get(), "1", "the earlier event comes back");
        let again = log.append(vec![keyed("b", "9", Some("k2"))]).await.unwrap();
        assert!(again[0].duplicate);
        assert_eq!(again[0].event.id, 2);
        assert_eq!(again[0].event.topic.as_str(), "a");
        assert_eq!(log.head(), 2, "duplicates store nothing");
        assert_eq!(log.read(&pats(&[">"]), 0, 10).await.unwrap().len(), 2);
        log.close().await.unwrap();
    }
    let log = open(dir.path()).await;
    let out = log.append(vec![keyed("a", "x", Some("k1"))]).await.unwrap();
    assert!(out[0].duplicate, "keys survive a restart");
    assert_eq!(out[0].event.id, 1);
    assert_eq!(append_one(&log, keyed("a", "y", Some("k3"))).await, 3);
    log.close().await.unwrap();
}

/// Many concurrent publishes with one key land in one or several group commits: exactly
/// one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedupe_concurrent_same_key() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(dir.path()).await);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(vec![keyed("k", &i.to_string(), Some("same"))])
                    .await
                    .unwrap()
                    .remove(0)
            })
        })
        .collect();
    let mut fresh = 0;
    let mut seen_ids = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        fresh += usize::from(!a.duplicate);
        seen_ids.push(a.event.id);
    }
    assert_eq!(fresh, 1);
    assert!(seen_ids.iter().all(|&id| id == 1));
    assert_eq!(log.head(), 1);
    log.close().await.unwrap();
}

#[tokio::test]
async fn dedupe_window_expires_and_maintain_forgets_keys() {
    let dir = TempDir::new().unwrap();
    let options = LogOptions {
        dedupe_window: Duration::from_millis(1),
        ..LogOptions::default()
    };
    let log = open_with(dir.path(), options).await;
    append_one(&log, keyed("a", "1", Some("k"))).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let out = log.append(vec![keyed("a", "2", Some("k"))]).await.unwrap();
    assert!(!out[0].duplicate, "outside the window a key is new again");
    assert_eq!(out[0].event.id, 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    log.maintain().await.unwrap();
    log.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 0);
}

#[tokio::test]
async fn count_retention_and_floor_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let options = retention("small.*", 3, Duration::from_secs(3600));
    {
        let log = open_with(dir.path(), options.clone()).await;
        for i in 1..=5 {
            append_one(&log, ev("small.a", &i.to_string())).await;
        }
        append_one(&log, ev("big", "6")).await;
        // A batch larger than the limit keeps only its newest events.
        let out = log
            .append((7..=11).map(|i| ev("small.b", &i.to_string())).collect())
            .await
            .unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(
            ids(&log.read(&pats(&["small.a"]), 0, 10).await.unwrap()),
            [3, 4, 5]
        );
        assert_eq!(
            ids(&log.read(&pats(&["small.b"]), 0, 10).await.unwrap()),
            [9, 10, 11]
        );
        assert_eq!(log.floor(&pats(&["small.a"])), 2);
        assert_eq!(log.floor(&pats(&["small.*"])), 8);
        assert_eq!(log.floor(&pats(&["big"])), 0);
        let topics = log.topics("small").await.unwrap();
        assert_eq!(topics.iter().map(|t| t.count).collect::<Vec<_>>(), [3, 3]);
        log.close().await.unwrap();
    }
    let log = open_with(dir.path(), options).await;
    assert_eq!(log.floor(&pats(&["small.a"])), 2);
    assert_eq!(log.floor(&pats(&["small.>"])), 8);
    assert_eq!(log.topics("small.a").await.unwrap()[0].count, 3);
    append_one(&log, ev("small.a", "12")).await;
    assert_eq!(
        ids(&log.read(&pats(&["small.a"]), 0, 10).await.unwrap()),
        [4, 5, 12]
    );
    assert_eq!(log.floor(&pats(&["small.a"])), 3);
    log.close().await.unwrap();
}

/// Lowering a limit in the config takes effect at the next `maintain`.
#[tokio::test]
async fn maintain_applies_lowered_count_limit() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(dir.path()).await;
        log.append((1..=6).map(|i| ev("t", &i.to_string())).collect())
            .await
            .unwrap();
        log.close().await.unwrap();
    }
    let log = open_with(dir.path(), retention("t", 2, Duration::from_secs(3600))).await;
    log.maintain().await.unwrap();
    assert_eq!(ids(&log.read(&pats(&["t"]), 0, 10).await.unwrap()), [5, 6]);
    assert_eq!(log.floor(&pats(&["t"])), 4);
    assert_eq!(log.topics("").await.unwrap()[0].count, 2);
    log.close().await.unwrap();
}

#[tokio::test]
async fn age_retention_via_maintain() {
    let dir = TempDir::new().unwrap();
    let options = retention("old.>", 100, Duration::from_millis(1));
    let log = open_with(dir.path(), options).await;
    log.append(vec![ev("old.a", "1"), ev("keep", "2"), ev("old.b", "3")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    log.maintain().await.unwrap();
    assert_eq!(ids(&log.read(&pats(&[">"]), 0, 10).await.unwrap()), [2]);
    assert_eq!(log.floor(&pats(&["old.>"])), 3);
    assert_eq!(log.floor(&pats(&["keep"])), 0);
    let listed: Vec<String> = log
        .topics("")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.topic.to_string())
        .collect();
    assert_eq!(listed, ["keep"]);
    // Nothing else is old: a second pass changes nothing.
    log.maintain().await.unwrap();
    assert_eq!(log.head(), 3);
    log.close().await.unwrap();
}

/// 16 tasks × 200 appends: the sink sees every id once, in order, without gaps, before the
/// append that produced it returns, and after the head moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sink_sees_gapless_id_order_under_concurrency() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(dir.path()).await);
    let rec = Arc::new(Recorder::default());
    let _ = rec.log.set(Arc::downgrade(&log));
    log.set_sink(rec.clone());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (log, rec) = (log.clone(), rec.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..200 {
                    let topic = format!("t{}", t % 4);
                    let id = append_one(&log, ev(&topic, &format!("{i}"))).await;
                    assert!(
                        rec.seen().contains(&id),
                        "the sink saw {id} before append returned"
                    );
                    got.push(id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let expect: Vec<u64> = (1..=3200).collect();
    assert_eq!(all, expect, "every append got its own id");
    assert_eq!(rec.seen(), expect, "the sink saw every id in order");
    assert!(!*rec.head_behind.lock(), "head is updated before the sink");
    let batches = rec.batches.lock().len();
    assert!(batches <= 3200);
    assert_eq!(log.head(), 3200);
    log.close().await.unwrap();
}

/// A trigger makes inserts of topic `poison` fail: a batch containing one fails whole,
/// and only that batch fails even when it shares a group commit with others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_is_all_or_nothing() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(dir.path()).await);
    let rec = Arc::new(Recorder::default());
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *rec.gate.lock() = Some((entered_tx, release_rx));
    log.set_sink(rec.clone());
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.topic = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
    }

    // Alone in its group.
    let err = log
        .append(vec![
            keyed("a", "1", Some("k1")),
            ev("poison", "2"),
            ev("a", "3"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Storage(_)), "{err:?}");
    assert_eq!(log.head(), 0);

    // Hold the writer inside the sink of a first append, queue three appends behind it so
    // that they form one group, then let go.
    let first = tokio::spawn({
        let log = log.clone();
        async move { append_one(&log, ev("a", "first")).await }
    });
    entered_rx.await.unwrap();
    let group = tokio::spawn({
        let log = log.clone();
        async move {
            futures::future::join_all([
                log.append(vec![ev("a", "ok1"), ev("b", "ok1b")]),
                log.append(vec![keyed("a", "bad", Some("k2")), ev("poison", "x")]),
                log.append(vec![keyed("a", "ok2", Some("k1"))]),
                // One event without a key: one statement, no savepoint of its own.
                log.append(vec![ev("poison", "alone")]),
                log.append(vec![ev("b", "after")]),
            ])
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), 1);
    let results = group.await.unwrap();
    let ok1 = results[0].as_ref().unwrap();
    assert_eq!(ok1.iter().map(|a| a.event.id).collect::<Vec<_>>(), [2, 3]);
    assert!(results[1].is_err());
    // The failed batch's key was rolled back with it; k1 from the very first failed batch
    // was never stored either.
    let ok2 = results[2].as_ref().unwrap();
    assert_eq!(
        ok2[0].event.id, 4,
        "ids of the failed batch are reused: no gap"
    );
    assert!(!ok2[0].duplicate);
    assert!(results[3].is_err());
    assert_eq!(results[4].as_ref().unwrap()[0].event.id, 5);
    let out = log
        .append(vec![keyed("a", "again", Some("k2"))])
        .await
        .unwrap();
    assert!(!out[0].duplicate);
    assert_eq!(out[0].event.id, 6);

    assert_eq!(rec.seen(), [1, 2, 3, 4, 5, 6]);
    let stored = log.read(&pats(&[">"]), 0, 100).await.unwrap();
    assert_eq!(ids(&stored), [1, 2, 3, 4, 5, 6]);
    assert!(stored.iter().all(|e| e.data.get() != "\"bad\""));
    assert_eq!(log.topics("a").await.unwrap()[0].count, 4);
    log.close().await.unwrap();
}

/// Readers page through a topic pair while writers append: every page is a gapless run
/// (a merged read sees one snapshot), and the readers end up with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_concurrent_with_writes() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(dir.path()).await);
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 250;
    let total = WRITERS * PER_WRITER;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let topic = if i % 2 == 0 { "c.x" } else { "c.y" };
                    append_one(&log, ev(topic, &format!("{w}"))).await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut last = 0;
                let patterns = pats(&["c.>"]);
                while last < total {
                    let page = log.read(&patterns, last, 37).await.unwrap();
                    for e in &page {
                        assert_eq!(e.id, last + 1, "gap or disorder after {last}");
                        last = e.id;
                    }
                    if page.is_empty() {
                        tokio::task::yield_now().await;
                    }
                }
                last
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for r in readers {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), r)
                .await
                .unwrap()
                .unwrap(),
            total
        );
    }
    log.close().await.unwrap();
}

/// The hub over the SQLite log: a subscriber resuming from 0 while publishers run gets
/// every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_resume_has_no_seam() {
    let dir = TempDir::new().unwrap();
    let log: Arc<dyn Log> = Arc::new(open(dir.path()).await);
    let hub = Hub::new(log.clone(), HubConfig::default());
    for i in 0..300 {
        hub.publish_one(ev("h.a", &i.to_string())).await.unwrap();
    }
    let mut sub = hub.subscribe(pats(&["h.>"]), Cursor::After(0));
    let publisher = tokio::spawn({
        let hub = hub.clone();
        async move {
            for i in 0..300 {
                let topic = if i % 2 == 0 { "h.b" } else { "other" };
                hub.publish(vec![ev(topic, "1"), ev("h.a", "2")])
                    .await
                    .unwrap();
            }
        }
    });
    let mut last = 0;
    let mut n = 0;
    // 300 before subscribing, then per batch one `h.a` and every other time one `h.b`.
    while n < 750 {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap()
            .unwrap();
        let Item::Event(e) = item else {
            panic!("unexpected {item:?}")
        };
        assert!(e.id > last);
        assert!(e.topic.as_str().starts_with("h."));
        last = e.id;
        n += 1;
    }
    publisher.await.unwrap();
    assert_eq!(last, log.head());
    drop(sub);
    log.close().await.unwrap();
}

#[tokio::test]
async fn close_then_append_fails() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    append_one(&log, ev("a", "1")).await;
    log.ready().unwrap();
    log.close().await.unwrap();
    assert!(matches!(
        log.append(vec![ev("a", "2")]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(log.maintain().await, Err(LogError::Closed)));
    assert!(matches!(log.ready(), Err(LogError::Closed)));
    log.close().await.unwrap();
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    if let Ok(meta) = std::fs::metadata(&wal) {
        assert_eq!(meta.len(), 0, "close truncates the WAL");
    }
    // What was acknowledged is still there.
    assert_eq!(log.read(&pats(&["a"]), 0, 10).await.unwrap().len(), 1);
}

/// Appends queued when `close` is called are finished, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_finishes_queued_work() {
    let dir = TempDir::new().unwrap();
    let log = Arc::new(open(dir.path()).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![ev("q", &i.to_string())]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    log.close().await.unwrap();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LogError::Closed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, log.head());
    drop(log);
    let log = open(dir.path()).await;
    assert_eq!(
        log.read(&pats(&["q"]), 0, 100).await.unwrap().len() as u64,
        ok
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn drop_without_close_does_not_hang() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    append_one(&log, ev("a", "1")).await;
    tokio::time::timeout(Duration::from_secs(5), async move { drop(log) })
        .await
        .unwrap();
    let log = open(dir.path()).await;
    assert_eq!(log.head(), 1);
    log.close().await.unwrap();
}

#[test]
fn open_blocking_creates_the_directory() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("x").join("y");
    let log = SqliteLog::open_blocking(&nested, Durability::Fsync, LogOptions::default()).unwrap();
    assert!(nested.join(DB_FILE).exists());
    assert_eq!(log.durability(), Durability::Fsync);
    assert_eq!("BATCH".parse::<Durability>().unwrap(), Durability::Batch);
    assert!("sometimes".parse::<Durability>().is_err());
    log.ready().unwrap();
}

#[tokio::test]
async fn all_durabilities_work() {
    for d in [Durability::Fsync, Durability::Batch, Durability::Memory] {
        let dir = TempDir::new().unwrap();
        let log = SqliteLog::open(dir.path(), d, LogOptions::default())
            .await
            .unwrap();
        assert_eq!(append_one(&log, ev("a", "1")).await, 1);
        log.close().await.unwrap();
        let log = SqliteLog::open(dir.path(), d, LogOptions::default())
            .await
            .unwrap();
        assert_eq!(log.head(), 1);
        log.close().await.unwrap();
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    append_one(&log, ev("a", "1")).await;
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute("UPDATE events SET data = 'not json' WHERE id = 1", [])
            .unwrap();
    }
    assert!(matches!(
        log.read(&pats(&["a"]), 0, 10).await,
        Err(LogError::Storage(_))
    ));
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_directory_in_use_is_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(dir.path()).await;
    let second = SqliteLog::open(dir.path(), Durability::Fsync, LogOptions::default()).await;
    assert!(
        matches!(second, Err(crate::StoreError::Locked(_))),
        "{second:?}"
    );
    log.close().await.unwrap();
    let again = open(dir.path()).await;
    again.ready().unwrap();
}

mod webhooks {
    use std::collections::HashSet;

    use herald_core::{
        Endpoint,
        webhook::{Attempt, NewDelivery, Next, Outcome, Status},
    };

    use super::*;

    fn endpoint(id: &str, topics: &[&str], events: &[&str]) -> Endpoint {
        let mut e = Endpoint::new(
            id,
            "http://127.0.0.1:9/hook",
            topics.iter().map(|s| s.to_string()).collect(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            1,
        );
        e.events = events.iter().map(|s| s.to_string()).collect();
        e
    }

    fn attempt(code: u16) -> Attempt {
        Attempt {
            at_ms: 5,
            status_code: Some(code),
            duration_ms: 3,
            error: None,
            response_body: "ok".into(),
        }
    }

    /// Deliveries are written by the append itself, match patterns and types, and survive a
    /// reopen with their endpoints; attempts, retries and stats round-trip.
    #[tokio::test]
    async fn outbox_is_written_with_the_event_and_survives_reopen() {
        let dir = TempDir::new().unwrap();
        {
            let log = open(dir.path()).await;
            let wh = log.webhooks();
            wh.create(endpoint("wh_a", &["orders.>"], &[]))
                .await
                .unwrap();
            wh.create(endpoint("wh_b", &["orders.eu"], &["paid"]))
                .await
                .unwrap();
            // A bad pattern is refused and stores nothing.
            assert!(matches!(
                wh.create(endpoint("wh_bad", &["orders..x"], &[])).await,
                Err(LogError::Invalid(_))
            ));
            let mut paid = ev("orders.eu", "1");
            paid.event = "paid".into();
            log.append(vec![ev("orders.us", "0"), paid, ev("users.x", "2")])
                .await
                .unwrap();
            let marked = wh.signal().take();
            assert_eq!(
                marked,
                HashSet::from(["wh_a".to_owned(), "wh_b".to_owned()])
            );
            // Dropped without close: as after a crash.
        }
        let log = open(dir.path()).await;
        let wh = log.webhooks();
        assert_eq!(wh.list().len(), 2);
        let a = wh.deliveries("wh_a", None, 0, 10).await.unwrap();
        assert_eq!(
            a.iter().map(|r| r.delivery.event_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(a[0].delivery.msg_id, "msg_1");
        let body: serde_json::Value = serde_json::from_str(&a[0].delivery.body).unwrap();
        assert_eq!(body["id"], "1");
        assert_eq!(body["topic"], "orders.us");
        let b = wh.deliveries("wh_b", None, 0, 10).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].delivery.event_type, "paid");

        // Due work, in flight skipped.
        let none = HashSet::new();
        let (due, next) = wh.due("wh_a", i64::MAX, 1, &none).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(next, Some(i64::MAX));
        let skip = HashSet::from([due[0].id]);
        let (due2, next2) = wh.due("wh_a", i64::MAX, 5, &skip).await.unwrap();
        assert_eq!(due2.len(), 1);
        assert_ne!(due2[0].id, due[0].id);
        assert_eq!(next2, None);

        // Record: one retry later, one failed.
        wh.record(vec![
            Outcome {
                delivery: due[0].id,
                attempt: attempt(500),
                next: Next::RetryAt(i64::MAX - 1),
            },
            Outcome {
                delivery: due2[0].id,
                attempt: attempt(400),
                next: Next::Failed,
            },
        ])
        .await
        .unwrap();
        let (due, next) = wh.due("wh_a", 10, 5, &none).await.unwrap();
        assert!(due.is_empty());
        assert_eq!(next, Some(i64::MAX - 1));
        let failed = wh
            .deliveries("wh_a", Some(Status::Failed), 0, 10)
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].attempts[0].status_code, Some(400));
        assert_eq!(failed[0].delivery.attempts, 1);
        let stats = wh.queue_stats().await.unwrap();
        assert_eq!(stats.len(), 2);

        // Recover failed ones: due now, last chance.
        assert_eq!(wh.retry("wh_a", None, 0).await.unwrap(), 1);
        let (due, _) = wh
            .due("wh_a", herald_core::event::now_ms() + 1000, 5, &none)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].last_chance);

        // Test messages, modify, delete.
        let ids = wh
            .enqueue(vec![NewDelivery {
                endpoint: "wh_b".into(),
                event_id: 0,
                msg_id: "msg_test".into(),
                event_type: "herald.test".into(),
                body: "{}".into(),
            }])
            .await
            .unwrap();
        assert_eq!(ids.len(), 1);
        let changed = wh
            .modify("wh_b", Box::new(|e| e.enabled = false))
            .await
            .unwrap()
            .unwrap();
        assert!(!changed.enabled);
        assert!(
            wh.modify("wh_zz", Box::new(|_| {}))
                .await
                .unwrap()
                .is_none()
        );
        // Disabled: new events get no delivery.
        let mut paid = ev("orders.eu", "3");
        paid.event = "paid".into();
        log.append(vec![paid]).await.unwrap();
        assert_eq!(wh.deliveries("wh_b", None, 0, 10).await.unwrap().len(), 2);
        assert!(wh.delete("wh_a").await.unwrap());
        assert!(!wh.delete("wh_a").await.unwrap());
        assert!(wh.deliveries("wh_a", None, 0, 10).await.unwrap().is_empty());
        log.close().await.unwrap();
    }
}
