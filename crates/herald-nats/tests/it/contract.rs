//! The `Log` contract on one node.

use std::{sync::Arc, time::Duration};

use herald_core::{Log, LogError, LogOptions, Pattern, Retention, RetentionRule};

use crate::support::{NatsServer, Recorder, ev, ids, keyed, open, open_with, pats};

#[tokio::test]
async fn append_read_latest_topics_head() {
    let server = NatsServer::start();
    let log = open(&server, "T1").await;
    let sink = Arc::new(Recorder::default());
    log.set_sink(sink.clone());
    assert_eq!(log.head(), 0);
    log.ready().unwrap();

    let a = log
        .append(vec![
            ev("a.x", "1"),
            ev("b", "{\"k\": [1, 2]}"),
            ev("a.y", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(a.iter().map(|a| a.event.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(a.iter().all(|a| !a.duplicate));
    // The sink saw them before append returned, and the head moved.
    assert_eq!(sink.seen(), [1, 2, 3]);
    assert_eq!(log.head(), 3);
    for i in 0..20 {
        log.append(vec![ev(
            if i % 2 == 0 { "a.x" } else { "c.d.e" },
            &i.to_string(),
        )])
        .await
        .unwrap();
    }
    assert_eq!(log.head(), 23);
    assert_eq!(sink.seen(), (1..=23).collect::<Vec<_>>());

    let all = log.read(&pats(&[">"]), 0, 100).await.unwrap();
    assert_eq!(ids(&all), (1..=23).collect::<Vec<_>>());
    assert_eq!(all[1].topic.as_str(), "b");
    assert_eq!(all[1].data.get(), "{\"k\": [1, 2]}");
    assert_eq!(&*all[1].event, "message");
    assert!(all[1].time_ms > 0);

    let ax = log.read(&pats(&["a.x"]), 0, 100).await.unwrap();
    assert_eq!(ids(&ax), [1, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]);
    let page = log.read(&pats(&["a.*"]), 4, 3).await.unwrap();
    assert_eq!(ids(&page), [6, 8, 10]);
    // Several patterns: merged by id, overlapping ones once.
    let two = log.read(&pats(&["b", "c.>", "c.d.*"]), 0, 5).await.unwrap();
    assert_eq!(ids(&two), [2, 5, 7, 9, 11]);
    assert!(
        log.read(&pats(&["nothing"]), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(log.read(&pats(&[">"]), 23, 10).await.unwrap().is_empty());

    let latest = log.latest(&pats(&["a.x"]), 3).await.unwrap();
    assert_eq!(ids(&latest), [18, 20, 22]);
    let latest = log.latest(&pats(&[">"]), 2).await.unwrap();
    assert_eq!(ids(&latest), [22, 23]);
    let latest = log.latest(&pats(&["b", "a.y"]), 10).await.unwrap();
    assert_eq!(ids(&latest), [2, 3]);

    let topics = log.topics("").await.unwrap();
    let names: Vec<_> = topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["a.x", "a.y", "b", "c.d.e"]);
    assert_eq!((topics[0].last_id, topics[0].count), (22, 11));
    assert_eq!(log.topics("c.").await.unwrap().len(), 1);
    assert_eq!(log.floor(&pats(&[">"])), 0);
    log.close().await.unwrap();
}

/// Many patterns take the one-consumer plan with matching in memory.
#[tokio::test]
async fn reads_with_many_patterns_match_like_the_filter() {
    let server = NatsServer::start();
    let log = open(&server, "T2").await;
    let topics = ["s.a", "s.b", "s.c.d", "t.a", "t.b.c", "u"];
    for i in 0..120 {
        log.append(vec![ev(topics[i % topics.len()], &i.to_string())])
            .await
            .unwrap();
    }
    let all = log.read(&pats(&[">"]), 0, 1000).await.unwrap();
    assert_eq!(all.len(), 120);
    for list in [
        &["s.a", "s.b", "t.a", "t.b.c", "u"][..],
        &["s.a", "s.b", "s.c.d", "s.c.*", "s.*"][..],
        &["*.a", "s.b", "t.>", "u", "s.c.d"][..],
    ] {
        let ps = pats(list);
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| ps.iter().any(|p| p.matches(e.topic.as_str())))
            .map(|e| e.id)
            .collect();
        for (after, limit) in [(0, 1000), (7, 5), (50, 17), (119, 3)] {
            let got = log.read(&ps, after, limit).await.unwrap();
            let want: Vec<u64> = expected
                .iter()
                .copied()
                .filter(|&id| id > after)
                .take(limit)
                .collect();
            assert_eq!(ids(&got), want, "{list:?} after {after} limit {limit}");
        }
        let latest = log.latest(&ps, 7).await.unwrap();
        let skip = expected.len().saturating_sub(7);
        assert_eq!(ids(&latest), expected[skip..].to_vec(), "latest {list:?}");
    }
}

#[tokio::test]
async fn dedupe_within_and_across_batches() {
    let server = NatsServer::start();
    let log = open(&server, "T3").await;
    let first = log
        .append(vec![
            keyed("k", "1", Some("key-1")),
            keyed("k", "2", Some("key 2\r\n")),
        ])
        .await
        .unwrap();
    assert_eq!(first[0].event.id, 1);
    let again = log
        .append(vec![
            keyed("k", "x", Some("key-3")),
            keyed("k", "1", Some("key-1")),
            keyed("k", "y", Some("key-3")),
            keyed("k", "2", Some("key 2\r\n")),
        ])
        .await
        .unwrap();
    assert!(!again[0].duplicate);
    assert_eq!(again[0].event.id, 3);
    assert!(again[1].duplicate);
    assert_eq!(again[1].event.id, 1);
    assert_eq!(again[1].event.data.get(), "1");
    assert!(again[2].duplicate);
    assert_eq!(again[2].event.id, 3);
    assert!(again[3].duplicate);
    assert_eq!(again[3].event.id, 2);
    assert_eq!(log.head(), 3);
    assert_eq!(log.read(&pats(&["k"]), 0, 10).await.unwrap().len(), 3);
    assert_eq!(log.topics("").await.unwrap()[0].count, 3);
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

#[tokio::test]
async fn count_retention_via_maintain_raises_the_floor() {
    let server = NatsServer::start();
    let log = open_with(
        &server,
        "T4",
        retention("r.>", 3, Duration::from_secs(3600)),
    )
    .await;
    for i in 0..10 {
        log.append(vec![ev("r.a", &i.to_string()), ev("keep", "1")])
            .await
            .unwrap();
    }
    // r.a holds 1, 3, ..., 19.
    log.maintain().await.unwrap();
    let left = log.read(&pats(&["r.a"]), 0, 100).await.unwrap();
    assert_eq!(ids(&left), [15, 17, 19]);
    // The floor is "everything before the first retained event" (see the retention docs).
    let floor = log.floor(&pats(&["r.>"]));
    assert!((13..15).contains(&floor), "floor {floor}");
    assert_eq!(log.floor(&pats(&["keep"])), 0);
    assert_eq!(log.read(&pats(&["keep"]), 0, 100).await.unwrap().len(), 10);
    let topics = log.topics("r.").await.unwrap();
    assert_eq!(topics[0].count, 3);
    // A second sweep has nothing to do.
    log.maintain().await.unwrap();
    assert_eq!(log.read(&pats(&["r.a"]), 0, 100).await.unwrap().len(), 3);
    log.close().await.unwrap();

    // The floor survives a reopen (the floors bucket).
    let again = open_with(
        &server,
        "T4",
        retention("r.>", 3, Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(again.floor(&pats(&["r.a"])), floor);
    assert_eq!(again.head(), 20);
    assert_eq!(again.topics("r.").await.unwrap()[0].count, 3);
}

#[tokio::test]
async fn age_retention_via_maintain() {
    let server = NatsServer::start();
    let log = open_with(
        &server,
        "T5",
        retention("old.>", 1000, Duration::from_millis(600)),
    )
    .await;
    log.append(vec![ev("old.a", "1"), ev("young", "2"), ev("old.a", "3")])
        .await
        .unwrap();
    log.maintain().await.unwrap();
    assert_eq!(log.read(&pats(&["old.a"]), 0, 10).await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    log.append(vec![ev("old.a", "4")]).await.unwrap();
    log.maintain().await.unwrap();
    let left = log.read(&pats(&["old.a"]), 0, 10).await.unwrap();
    assert_eq!(ids(&left), [4]);
    assert_eq!(log.floor(&pats(&["old.*"])), 3);
    assert_eq!(log.read(&pats(&["young"]), 0, 10).await.unwrap().len(), 1);
    assert_eq!(log.topics("old").await.unwrap()[0].count, 1);
    // Everything expires: the topic is empty, its floor is its last id.
    tokio::time::sleep(Duration::from_millis(800)).await;
    log.maintain().await.unwrap();
    assert!(log.read(&pats(&["old.a"]), 0, 10).await.unwrap().is_empty());
    assert_eq!(log.floor(&pats(&["old.a"])), 4);
    assert!(log.topics("old").await.unwrap().is_empty());
}

/// A batch whose second event the client refuses (larger than the server's max payload):
/// the first one is removed again.
#[tokio::test]
async fn failed_batch_is_rolled_back() {
    let server = NatsServer::start();
    let log = open(&server, "T6").await;
    log.append(vec![ev("a", "0")]).await.unwrap();
    let big = format!("\"{}\"", "x".repeat(2 << 20));
    let r = log
        .append(vec![ev("a", "1"), ev("a", &big), ev("a", "3")])
        .await;
    assert!(r.is_err(), "{r:?}");
    log.append(vec![ev("a", "4")]).await.unwrap();
    let left = log.read(&pats(&["a"]), 0, 10).await.unwrap();
    let data: Vec<_> = left.iter().map(|e| e.data.get().to_owned()).collect();
    assert_eq!(data, ["0", "4"]);
}

/// Retrying a rolled-back keyed event stores it (its key points at a deleted message).
#[tokio::test]
async fn retry_of_a_rolled_back_key_is_stored() {
    let server = NatsServer::start();
    let log = open(&server, "T7").await;
    let big = format!("\"{}\"", "x".repeat(2 << 20));
    assert!(
        log.append(vec![keyed("a", "1", Some("k1")), ev("a", &big)])
            .await
            .is_err()
    );
    let again = log.append(vec![keyed("a", "1", Some("k1"))]).await.unwrap();
    assert!(!again[0].duplicate);
    let third = log.append(vec![keyed("a", "1", Some("k1"))]).await.unwrap();
    assert!(third[0].duplicate);
    assert_eq!(third[0].event.id, again[0].event.id);
    assert_eq!(log.read(&pats(&["a"]), 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn close_then_append_fails_reads_work() {
    let server = NatsServer::start();
    let log = open(&server, "T8").await;
    log.append(vec![ev("a", "1")]).await.unwrap();
    log.close().await.unwrap();
    assert!(matches!(
        log.append(vec![ev("a", "2")]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(log.ready(), Err(LogError::Closed)));
    assert!(matches!(log.maintain().await, Err(LogError::Closed)));
    assert_eq!(log.read(&pats(&["a"]), 0, 10).await.unwrap().len(), 1);
    log.close().await.unwrap();
}

#[tokio::test]
async fn bad_options_and_unreachable_server_are_errors() {
    let server = NatsServer::start();
    let bad = herald_nats::NatsOptions {
        stream: "has.dot".into(),
        ..herald_nats::NatsOptions::new(server.url())
    };
    assert!(
        herald_nats::JetStreamLog::open(bad, LogOptions::default())
            .await
            .is_err()
    );
    let url = server.url();
    drop(server);
    let opts = herald_nats::NatsOptions {
        connect_timeout: Duration::from_secs(1),
        ..herald_nats::NatsOptions::new(url)
    };
    assert!(
        herald_nats::JetStreamLog::open(opts, LogOptions::default())
            .await
            .is_err()
    );
}

/// A batch larger than the publish pipeline keeps its order, and every event reaches the sink.
#[tokio::test]
async fn large_batch_keeps_order() {
    let server = NatsServer::start();
    let log = open(&server, "T10").await;
    let sink = Arc::new(Recorder::default());
    log.set_sink(sink.clone());
    let batch: Vec<_> = (0..1000)
        .map(|i| ev(if i % 2 == 0 { "l.a" } else { "l.b" }, &i.to_string()))
        .collect();
    let out = log.append(batch).await.unwrap();
    let got: Vec<u64> = out.iter().map(|a| a.event.id).collect();
    assert_eq!(got, (1..=1000).collect::<Vec<_>>());
    assert_eq!(out[999].event.data.get(), "999");
    assert_eq!(sink.seen(), got);
    let read = log.read(&pats(&["l.*"]), 0, 2000).await.unwrap();
    assert_eq!(ids(&read), got);
    let data: Vec<String> = read.iter().map(|e| e.data.get().to_owned()).collect();
    assert_eq!(data, (0..1000).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(
        ids(&log.latest(&pats(&["l.b"]), 2).await.unwrap()),
        [998, 1000]
    );
}

/// Overlapping patterns, one of them `>`, after a cursor (the SSE suite's resume case).
#[tokio::test]
async fn overlapping_patterns_with_the_full_wildcard() {
    let server = NatsServer::start();
    let log = open(&server, "OVERLAP").await;
    for t in ["a", "c", "b.x", "b.x.y", "b", "a.a", "b.y", "a"] {
        log.append(vec![ev(t, "1")]).await.unwrap();
    }
    // nats-server 2.9 used to leave this read waiting: a start sequence with a filter equal
    // to the stream's whole subject space.
    let read = |p: Vec<Pattern>, after| {
        let log = &log;
        async move {
            let events = tokio::time::timeout(Duration::from_secs(10), log.read(&p, after, 100))
                .await
                .expect("read finished")
                .unwrap();
            ids(&events)
        }
    };
    assert_eq!(read(pats(&[">"]), 6).await, [7, 8]);
    assert_eq!(read(pats(&["b.*", "b.>", ">"]), 6).await, [7, 8]);
    assert_eq!(read(pats(&["b.*", ">"]), 0).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(read(pats(&["b.*"]), 0).await, [3, 7]);
    log.close().await.unwrap();
}
