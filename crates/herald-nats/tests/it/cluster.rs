//! Two nodes (two `JetStreamLog`s) on one NATS.

use std::{sync::Arc, time::Duration};

use herald_core::{Cursor, Hub, HubConfig, Item, Log, Pattern, Retention, RetentionRule};
use tokio::time::timeout;

use crate::support::{NatsServer, Recorder, ev, ids, keyed, open, open_with, pats};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sinks_see_every_event_in_the_same_order() {
    let server = NatsServer::start();
    let a = Arc::new(open(&server, "C1").await);
    let b = Arc::new(open(&server, "C1").await);
    let (sa, sb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    a.set_sink(sa.clone());
    b.set_sink(sb.clone());
    // Both publish at once, single events and batches.
    let mut tasks = Vec::new();
    for (n, log) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let topic = if i % 3 == 0 { "x.a" } else { "y" };
                if i % 10 == 0 {
                    log.append(vec![ev(topic, &format!("{n}-{i}")), ev("x.b", "2")])
                        .await
                        .unwrap();
                } else {
                    log.append(vec![ev(topic, &format!("{n}-{i}"))])
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
    }
    let total = 2 * (100 + 10);
    let seen_a = sa.wait_for(total).await;
    let seen_b = sb.wait_for(total).await;
    assert_eq!(seen_a, (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(seen_a, seen_b);
    // Reads on either node see what the other appended.
    let on_a = a.read(&pats(&[">"]), 0, 1000).await.unwrap();
    let on_b = b.read(&pats(&[">"]), 0, 1000).await.unwrap();
    assert_eq!(ids(&on_a), ids(&on_b));
    assert_eq!(on_a.len(), total);
    assert_eq!(a.topics("").await.unwrap(), b.topics("").await.unwrap());
}

#[tokio::test]
async fn reads_on_b_see_events_appended_on_a() {
    let server = NatsServer::start();
    let a = open(&server, "C2").await;
    let b = open(&server, "C2").await;
    let sb = Arc::new(Recorder::default());
    b.set_sink(sb.clone());
    let stored = a.append(vec![ev("t", "1"), ev("t", "2")]).await.unwrap();
    sb.wait_for(2).await;
    let got = b.read(&pats(&["t"]), 0, 10).await.unwrap();
    assert_eq!(ids(&got), [stored[0].event.id, stored[1].event.id]);
    assert_eq!(b.head(), a.head());
    // Dedupe is cluster-wide.
    let first = a.append(vec![keyed("t", "3", Some("k"))]).await.unwrap();
    let again = b.append(vec![keyed("t", "3", Some("k"))]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].event.id, first[0].event.id);
    assert_eq!(again[0].event.data.get(), "3");
}

/// A purge by one node's `maintain` reaches the other's floor (the floors bucket).
#[tokio::test]
async fn floors_are_shared() {
    let server = NatsServer::start();
    let options = herald_core::LogOptions {
        retention: Retention {
            rules: vec![RetentionRule {
                pattern: Pattern::new("r").unwrap(),
                max_events: 2,
                max_age: Duration::from_secs(3600),
            }],
            ..Retention::default()
        },
        ..Default::default()
    };
    let a = open_with(&server, "C3", options.clone()).await;
    let b = open_with(&server, "C3", options).await;
    let sb = Arc::new(Recorder::default());
    b.set_sink(sb.clone());
    for i in 0..6 {
        a.append(vec![ev("r", &i.to_string())]).await.unwrap();
    }
    sb.wait_for(6).await;
    a.maintain().await.unwrap();
    assert_eq!(a.floor(&pats(&["r"])), 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.floor(&pats(&["r"])) != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "floor did not reach B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B's own sweep finds nothing left to remove, and its counts follow the stream.
    b.maintain().await.unwrap();
    assert_eq!(b.topics("").await.unwrap()[0].count, 2);
    assert_eq!(ids(&b.read(&pats(&["r"]), 0, 10).await.unwrap()), [5, 6]);
}

/// Subscribers on B resume from a cursor while A publishes: no gap, no duplicate at the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_resume_across_nodes_has_no_seam() {
    let server = NatsServer::start();
    let a: Arc<dyn Log> = Arc::new(open(&server, "C4").await);
    let b: Arc<dyn Log> = Arc::new(open(&server, "C4").await);
    let hub_a = Hub::new(a.clone(), HubConfig::default());
    let hub_b = Hub::new(b.clone(), HubConfig::default());
    for i in 0..200 {
        hub_a.publish_one(ev("h.a", &i.to_string())).await.unwrap();
    }
    const ROUNDS: usize = 300;
    // `h.fin` goes out only once every subscriber is in place.
    let (all_started_tx, all_started) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn({
        let hub = hub_a.clone();
        async move {
            for i in 0..ROUNDS {
                let topic = if i % 2 == 0 { "h.b" } else { "other" };
                hub.publish(vec![ev(topic, "1"), ev("h.a", "2")])
                    .await
                    .unwrap();
            }
            all_started.await.unwrap();
            hub.publish_one(ev("h.fin", "0")).await.unwrap().event.id
        }
    });
    // Subscribers start at different points while A publishes.
    let mut readers = Vec::new();
    for k in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let cursor = match k % 3 {
            0 => 0,
            1 => hub_b.head().saturating_sub(50),
            _ => hub_b.head(),
        };
        let mut sub = hub_b.subscribe(pats(&["h.>"]), Cursor::After(cursor));
        let hub = hub_b.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let Ok(item) = timeout(Duration::from_secs(20), sub.recv()).await else {
                    panic!(
                        "subscriber from {cursor} timed out after {} events (last {:?}), head {}",
                        got.len(),
                        got.last(),
                        hub.head()
                    );
                };
                let item = item.unwrap();
                let Item::Event(e) = item else {
                    panic!("unexpected {item:?}")
                };
                got.push(e.id);
                if e.topic.as_str() == "h.fin" {
                    return (cursor, got);
                }
            }
        }));
    }
    all_started_tx.send(()).unwrap();
    let fin = timeout(Duration::from_secs(60), publisher)
        .await
        .unwrap()
        .unwrap();
    let all = a.read(&pats(&["h.>"]), 0, 10_000).await.unwrap();
    assert_eq!(all.last().map(|e| e.id), Some(fin));
    for r in readers {
        let (cursor, got) = timeout(Duration::from_secs(30), r).await.unwrap().unwrap();
        let expected: Vec<u64> = all.iter().map(|e| e.id).filter(|&id| id > cursor).collect();
        assert_eq!(got, expected, "subscriber from {cursor}");
    }
}
