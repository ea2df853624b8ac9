//! Cluster webhooks: two nodes (two `JetStreamLog`s) on one NATS share endpoints, turn each
//! event into one delivery per matching endpoint, never hand one delivery to both (each
//! endpoint's deliveries are a JetStream work queue with one durable consumer that both pull
//! from), and take over a dead node's deliveries when their ack wait runs out.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use herald_core::{
    Endpoint, Log, LogOptions, NewEvent, Topic, Webhooks,
    event::now_ms,
    webhook::{Attempt, Delivery, NewDelivery, Next, Outcome, Status},
};
use herald_nats::{JetStreamLog, NatsOptions};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::support::{NatsServer, ev};

const T: Duration = Duration::from_secs(20);

async fn node(server: &NatsServer, stream: &str, lease: Duration) -> JetStreamLog {
    let opts = NatsOptions {
        stream: stream.into(),
        lease,
        ..NatsOptions::new(server.url())
    };
    JetStreamLog::open(opts, LogOptions::default())
        .await
        .expect("open the log")
}

fn endpoint(id: &str, topics: &[&str], events: &[&str]) -> Endpoint {
    let mut e = Endpoint::new(
        id,
        "http://127.0.0.1:9/",
        topics.iter().map(|s| s.to_string()).collect(),
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        1,
    );
    e.events = events.iter().map(|s| s.to_string()).collect();
    e
}

fn typed(topic: &str, event: &str, data: &str) -> NewEvent {
    NewEvent::new(
        Topic::new(topic).unwrap(),
        Some(event),
        RawValue::from_string(data.to_owned()).unwrap(),
        None,
    )
    .unwrap()
}

fn attempt(code: u16) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        status_code: Some(code),
        duration_ms: 1,
        error: None,
        response_body: format!("answered {code}"),
    }
}

fn outcome(d: &Delivery, code: u16, next: Next) -> Outcome {
    Outcome {
        delivery: d.id,
        attempt: attempt(code),
        next,
    }
}

/// Polls `check` until it gives `Some` (bounded by [`T`]).
async fn until<R, F: std::future::Future<Output = Option<R>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> R {
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = check().await {
            return r;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `wh` lists exactly `n` deliveries of `endpoint` (and no more show up soon).
async fn deliveries_of(wh: &dyn Webhooks, endpoint: &str, n: usize) -> Vec<Delivery> {
    let list = until(&format!("{n} deliveries of {endpoint}"), || async {
        let l = wh.deliveries(endpoint, None, 0, 1000).await.unwrap();
        (l.len() >= n).then_some(l)
    })
    .await;
    assert_eq!(list.len(), n, "{endpoint}: {list:#?}");
    list.into_iter().map(|r| r.delivery).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_are_shared_and_each_event_makes_one_delivery_per_matching_endpoint() {
    let server = NatsServer::start();
    let a = Arc::new(node(&server, "W1", Duration::from_secs(30)).await);
    let b = Arc::new(node(&server, "W1", Duration::from_secs(30)).await);
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_orders", &["orders.>"], &[]))
        .await
        .unwrap();
    wb.create(endpoint("wh_paid", &[">"], &["paid"]))
        .await
        .unwrap();
    // Read-your-writes on the writing node, the watch on the other.
    assert!(wa.get("wh_orders").is_some());
    until("B sees A's endpoint", || async {
        wb.get("wh_orders").map(|_| ())
    })
    .await;
    until("A sees B's endpoint", || async {
        wa.get("wh_paid").map(|_| ())
    })
    .await;
    assert_eq!(wa.list(), wb.list());

    // Both nodes publish; both outboxes run.
    let mut orders = HashSet::new();
    let mut paid = HashSet::new();
    for i in 0..30 {
        let log = if i % 2 == 0 { &a } else { &b };
        let topic = if i % 3 == 0 { "orders.eu" } else { "users.x" };
        let kind = if i % 4 == 0 { "paid" } else { "message" };
        let stored = log.append(vec![typed(topic, kind, "1")]).await.unwrap();
        let id = stored[0].event.id;
        if topic.starts_with("orders.") {
            orders.insert(id);
        }
        if kind == "paid" {
            paid.insert(id);
        }
    }
    for wh in [&wa, &wb] {
        let got = deliveries_of(&**wh, "wh_orders", orders.len()).await;
        let ids: HashSet<u64> = got.iter().map(|d| d.event_id).collect();
        assert_eq!(ids, orders);
        let got = deliveries_of(&**wh, "wh_paid", paid.len()).await;
        let ids: HashSet<u64> = got.iter().map(|d| d.event_id).collect();
        assert_eq!(ids, paid);
        for d in &got {
            assert_eq!(d.status, Status::Pending);
            assert_eq!(d.msg_id, format!("msg_{}", d.event_id));
            assert_eq!(d.event_type, "paid");
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(body["id"], d.event_id.to_string());
        }
    }
    // Settled: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = wb.deliveries("wh_orders", None, 0, 1000).await.unwrap();
    assert_eq!(again.len(), orders.len());
    let stats = wa.queue_stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(
        stats.iter().map(|s| s.pending).sum::<u64>(),
        (orders.len() + paid.len()) as u64
    );
}

/// An endpoint created on one node gets an event published right after on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_gets_every_event_published_after_its_creation_on_any_node() {
    let server = NatsServer::start();
    let a = node(&server, "W2", Duration::from_secs(30)).await;
    let b = node(&server, "W2", Duration::from_secs(30)).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    let mut expected = HashMap::new();
    for k in 0..8 {
        let id = format!("wh_{k}");
        let topic = format!("t{k}");
        let (creator, publisher) = if k % 2 == 0 { (&wa, &b) } else { (&wb, &a) };
        creator.create(endpoint(&id, &[&topic], &[])).await.unwrap();
        let stored = publisher.append(vec![ev(&topic, "1")]).await.unwrap();
        expected.insert(id, stored[0].event.id);
    }
    for (id, event) in &expected {
        let got = deliveries_of(&*wa, id, 1).await;
        assert_eq!(got[0].event_id, *event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_hold_the_same_delivery() {
    let server = NatsServer::start();
    let a = node(&server, "W3", Duration::from_secs(30)).await;
    let b = node(&server, "W3", Duration::from_secs(30)).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_1", &["jobs"], &[])).await.unwrap();
    until("B sees the endpoint", || async {
        wb.get("wh_1").map(|_| ())
    })
    .await;
    let n = 60;
    for i in 0..n {
        let log = if i % 2 == 0 { &a } else { &b };
        log.append(vec![ev("jobs", "1")]).await.unwrap();
    }
    deliveries_of(&*wa, "wh_1", n).await;
    deliveries_of(&*wb, "wh_1", n).await;

    // A holds some without recording: B gets none of them.
    let held_by_a = wa
        .due("wh_1", now_ms(), 10, &HashSet::new())
        .await
        .unwrap()
        .0;
    assert_eq!(held_by_a.len(), 10);
    let held_ids: HashSet<u64> = held_by_a.iter().map(|d| d.id).collect();
    let (on_b, next) = wb
        .due("wh_1", now_ms(), 1000, &HashSet::new())
        .await
        .unwrap();
    assert_eq!(on_b.len(), n - 10);
    assert!(on_b.iter().all(|d| !held_ids.contains(&d.id)));
    // What is left is A's: B looks again within a second (should A die, its messages come
    // back without any state change to signal it).
    assert!(next.is_some_and(|t| t <= now_ms() + 1_000), "{next:?}");
    let b_ids: HashSet<u64> = on_b.iter().map(|d| d.id).collect();
    assert!(
        wa.due("wh_1", now_ms(), 1000, &held_ids)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    wb.record(
        on_b.iter()
            .map(|d| outcome(d, 200, Next::Succeeded))
            .collect(),
    )
    .await
    .unwrap();
    wa.record(
        held_by_a
            .iter()
            .map(|d| outcome(d, 200, Next::Succeeded))
            .collect(),
    )
    .await
    .unwrap();
    assert!(held_ids.is_disjoint(&b_ids));

    // Both dispatch at once, as the dispatcher does: every delivery attempted exactly once.
    for _ in 0..n {
        a.append(vec![ev("jobs", "2")]).await.unwrap();
    }
    deliveries_of(&*wa, "wh_1", 2 * n).await;
    let run = |wh: Arc<dyn Webhooks>| async move {
        let mut got = Vec::new();
        let deadline = Instant::now() + T;
        let mut idle = 0;
        while idle < 20 && Instant::now() < deadline {
            let (due, _) = wh.due("wh_1", now_ms(), 4, &HashSet::new()).await.unwrap();
            if due.is_empty() {
                idle += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            idle = 0;
            tokio::time::sleep(Duration::from_millis(2)).await;
            wh.record(
                due.iter()
                    .map(|d| outcome(d, 200, Next::Succeeded))
                    .collect(),
            )
            .await
            .unwrap();
            got.extend(due.iter().map(|d| d.id));
        }
        got
    };
    let (ga, gb) = tokio::join!(tokio::spawn(run(wa.clone())), tokio::spawn(run(wb.clone())));
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    let mut all: Vec<u64> = ga.iter().chain(&gb).copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a delivery was handed out twice");
    assert_eq!(all.len(), n, "A took {}, B took {}", ga.len(), gb.len());
    let list = wb
        .deliveries("wh_1", Some(Status::Succeeded), 0, 1000)
        .await
        .unwrap();
    assert_eq!(list.len(), 2 * n);
    assert!(list.iter().all(|r| r.attempts.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_retry_recover_enqueue_and_stats_round_trip_across_nodes() {
    let server = NatsServer::start();
    let a = node(&server, "W4", Duration::from_secs(30)).await;
    let b = node(&server, "W4", Duration::from_secs(30)).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_r", &["r"], &[])).await.unwrap();
    let e1 = a.append(vec![ev("r", "1")]).await.unwrap()[0].event.id;
    let e2 = a.append(vec![ev("r", "2")]).await.unwrap()[0].event.id;
    deliveries_of(&*wa, "wh_r", 2).await;
    let stats = until("B counts 2 pending", || async {
        let s = wb.queue_stats().await.unwrap();
        (s.len() == 1 && s[0].pending == 2).then_some(s)
    })
    .await;
    assert_eq!(stats[0].endpoint, "wh_r");

    let (mut due, _) = wa.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
    // Oldest due first; two nodes' outboxes may have stored them in either order.
    due.sort_by_key(|d| d.id);
    let events: HashSet<u64> = due.iter().map(|d| d.event_id).collect();
    assert_eq!(events, HashSet::from([e1, e2]));
    assert_eq!(due[0].attempts, 0);
    let (first, second) = (&due[0], &due[1]);
    let retry_at = now_ms() + 400;
    wa.record(vec![
        outcome(first, 500, Next::RetryAt(retry_at)),
        outcome(second, 500, Next::Failed),
    ])
    .await
    .unwrap();
    // Recording twice (a recorder retrying) changes nothing.
    wa.record(vec![outcome(first, 500, Next::Failed)])
        .await
        .unwrap();
    // B sees the outcomes.
    let list = until("B sees the outcomes", || async {
        let l = wb.deliveries("wh_r", None, 0, 10).await.unwrap();
        (l.len() == 2 && l[1].delivery.status == Status::Failed && l[0].delivery.attempts == 1)
            .then_some(l)
    })
    .await;
    assert_eq!(list[0].delivery.status, Status::Pending);
    assert_eq!(list[0].delivery.next_at_ms, retry_at);
    assert_eq!(list[0].attempts.len(), 1);
    assert_eq!(list[0].attempts[0].status_code, Some(500));
    assert_eq!(list[0].attempts[0].response_body, "answered 500");
    let failed = wb
        .deliveries("wh_r", Some(Status::Failed), 0, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].delivery.id, second.id);
    let after = wb.deliveries("wh_r", None, first.id, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    let stats = wb.queue_stats().await.unwrap();
    assert_eq!(stats[0].pending, 1);
    assert_eq!(stats[0].oldest_due_ms, Some(retry_at));

    // Not due yet: nothing, and when.
    let (none, next) = wb.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(next, Some(retry_at));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (due, _) = wb.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, first.id);
    assert_eq!(due[0].attempts, 1);
    wb.record(vec![outcome(&due[0], 200, Next::Succeeded)])
        .await
        .unwrap();

    // Recover on A: the failed one, for a last chance, handed out at once.
    let n = until("A sees the success", || async {
        let l = wa
            .deliveries("wh_r", Some(Status::Succeeded), 0, 10)
            .await
            .unwrap();
        (l.len() == 1).then_some(())
    });
    n.await;
    assert_eq!(wa.retry("wh_r", None, now_ms() + 60_000).await.unwrap(), 0);
    assert_eq!(wa.retry("wh_r", None, 0).await.unwrap(), 1);
    let (due, _) = wa.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, second.id);
    assert!(due[0].last_chance);
    wa.record(vec![outcome(&due[0], 503, Next::Failed)])
        .await
        .unwrap();
    // Retry of one delivery (a succeeded one), of an unknown one.
    assert_eq!(wb.retry("wh_r", Some(first.id), 0).await.unwrap(), 1);
    assert_eq!(wb.retry("wh_r", Some(999_999), 0).await.unwrap(), 0);
    assert_eq!(wb.retry("wh_other", Some(first.id), 0).await.unwrap(), 0);
    let (due, _) = wa.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].last_chance);
    wa.record(vec![outcome(&due[0], 200, Next::Succeeded)])
        .await
        .unwrap();
    let list = wa.deliveries("wh_r", None, 0, 10).await.unwrap();
    assert_eq!(list[0].attempts.len(), 3);
    assert_eq!(list[1].attempts.len(), 2);

    // A test message (enqueue) on B, due at once on A.
    let ids = wb
        .enqueue(vec![NewDelivery {
            endpoint: "wh_r".into(),
            event_id: 0,
            msg_id: "msg_test_1".into(),
            event_type: "herald.test".into(),
            body: "{\"test\":true}".into(),
        }])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert!(ids[0] > second.id);
    let due = until("A gets the test message", || async {
        let (d, _) = wa.due("wh_r", now_ms(), 10, &HashSet::new()).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(due[0].id, ids[0]);
    assert_eq!(due[0].body, "{\"test\":true}");
    assert_eq!(due[0].event_type, "herald.test");

    // Changes from both nodes at once: neither is lost.
    let (x, y) = tokio::join!(
        wa.modify(
            "wh_r",
            Box::new(|e: &mut Endpoint| e.description = "from a".into())
        ),
        wb.modify("wh_r", Box::new(|e: &mut Endpoint| e.rate_limit = Some(7)))
    );
    x.unwrap().unwrap();
    y.unwrap().unwrap();
    let both = until("both changes", || async {
        wb.get("wh_r")
            .filter(|e| e.description == "from a" && e.rate_limit == Some(7))
    })
    .await;
    assert!(both.enabled);
    assert!(
        wa.modify(
            "wh_r",
            Box::new(|e: &mut Endpoint| e.topics = vec!["a..b".into()])
        )
        .await
        .is_err(),
        "an invalid change is an error"
    );
    assert!(
        wa.modify("wh_none", Box::new(|_| {}))
            .await
            .unwrap()
            .is_none()
    );

    // Delete on B: gone everywhere, with its deliveries.
    assert!(wb.delete("wh_r").await.unwrap());
    assert!(!wb.delete("wh_r").await.unwrap());
    until("A forgets the endpoint", || async {
        wa.get("wh_r").is_none().then_some(())
    })
    .await;
    assert!(wa.deliveries("wh_r", None, 0, 10).await.unwrap().is_empty());
    assert!(wa.queue_stats().await.unwrap().is_empty());
    wa.record(vec![outcome(&due[0], 200, Next::Succeeded)])
        .await
        .unwrap();
}

/// A node that dies holding deliveries (no record, no close: `kill -9`): another node gets
/// them once their ack wait (`lease`) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_deliveries_go_to_another_node_when_their_ack_wait_runs_out() {
    let server = NatsServer::start();
    let lease = Duration::from_secs(1);
    let a = node(&server, "W5", lease).await;
    let b = node(&server, "W5", lease).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_k", &["k"], &[])).await.unwrap();
    for i in 0..5 {
        a.append(vec![ev("k", &i.to_string())]).await.unwrap();
    }
    deliveries_of(&*wb, "wh_k", 5).await;
    let (taken, _) = wa.due("wh_k", now_ms(), 3, &HashSet::new()).await.unwrap();
    assert_eq!(taken.len(), 3);
    // Held past the ack wait while A lives: "in progress" keeps them A's.
    tokio::time::sleep(lease * 2).await;
    let (rest, _) = wb.due("wh_k", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert_eq!(rest.len(), 2, "A's messages in progress keep B off");
    let killed = Instant::now();
    drop(wa);
    drop(a);
    let taken_ids: HashSet<u64> = taken.iter().map(|d| d.id).collect();
    let skip: HashSet<u64> = rest.iter().map(|d| d.id).collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    while got.len() < 3 {
        assert!(Instant::now() < deadline, "B got {got:?}");
        let (d, next) = wb.due("wh_k", now_ms(), 10, &skip).await.unwrap();
        if d.is_empty() {
            // Told to look again (while anything is pending, at least every second).
            assert!(next.is_some(), "B must look again");
        }
        got.extend(d);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed.elapsed() >= lease / 2, "{:?}", killed.elapsed());
    let got_ids: HashSet<u64> = got.iter().map(|d| d.id).collect();
    assert_eq!(got_ids, taken_ids);
    assert!(got.iter().all(|d| d.attempts == 0 && !d.body.is_empty()));
}

/// A node that closes gives its work-queue messages back: another node attempts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closing_node_gives_its_deliveries_back_at_once() {
    let server = NatsServer::start();
    let a = node(&server, "W6", Duration::from_secs(30)).await;
    let b = node(&server, "W6", Duration::from_secs(30)).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_c", &["c"], &[])).await.unwrap();
    a.append(vec![ev("c", "1"), ev("c", "2")]).await.unwrap();
    deliveries_of(&*wb, "wh_c", 2).await;
    let (taken, _) = wa.due("wh_c", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert_eq!(taken.len(), 2);
    a.close().await.unwrap();
    let got = until("B gets them", || async {
        let (d, _) = wb.due("wh_c", now_ms(), 10, &HashSet::new()).await.unwrap();
        (d.len() == 2).then_some(d)
    })
    .await;
    assert_eq!(got[0].id, taken[0].id);
    assert!(matches!(
        wa.record(vec![outcome(&taken[0], 200, Next::Succeeded)])
            .await,
        Err(herald_core::LogError::Closed)
    ));
}

/// Bad input is an error, never a panic.
#[tokio::test]
async fn invalid_endpoints_and_deliveries_are_refused() {
    let server = NatsServer::start();
    let a = node(&server, "W7", Duration::from_secs(30)).await;
    let wh = a.webhooks();
    for bad in [
        endpoint("has.dot", &["a"], &[]),
        endpoint("", &["a"], &[]),
        endpoint("wh_ok", &["a..b"], &[]),
    ] {
        assert!(matches!(
            wh.create(bad).await,
            Err(herald_core::LogError::Invalid(_))
        ));
    }
    let r = wh
        .enqueue(vec![NewDelivery {
            endpoint: "a b".into(),
            event_id: 0,
            msg_id: "m".into(),
            event_type: "t".into(),
            body: String::new(),
        }])
        .await;
    assert!(matches!(r, Err(herald_core::LogError::Invalid(_))));
    assert!(wh.list().is_empty());
    assert!(
        wh.due("nope", now_ms(), 5, &HashSet::new())
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(wh.deliveries("nope", None, 0, 5).await.unwrap().is_empty());
    assert_eq!(wh.retry("nope", None, 0).await.unwrap(), 0);
}

/// Endpoints and deliveries outlive the nodes: a node opened later loads them.
#[tokio::test]
async fn a_new_node_loads_endpoints_and_deliveries() {
    let server = NatsServer::start();
    let a = node(&server, "W8", Duration::from_secs(30)).await;
    a.webhooks()
        .create(endpoint("wh_p", &["p"], &[]))
        .await
        .unwrap();
    a.append(vec![ev("p", "1")]).await.unwrap();
    deliveries_of(&*a.webhooks(), "wh_p", 1).await;
    a.close().await.unwrap();
    drop(a);
    let b = node(&server, "W8", Duration::from_secs(30)).await;
    let wb = b.webhooks();
    assert!(wb.get("wh_p").is_some(), "loaded at open");
    let list = wb.deliveries("wh_p", None, 0, 10).await.unwrap();
    assert_eq!(list.len(), 1, "loaded at open");
    b.append(vec![ev("p", "2")]).await.unwrap();
    deliveries_of(&*wb, "wh_p", 2).await;
}

/// The outbox of a node that died after taking events (never acknowledged) and after storing
/// one of their deliveries: another node turns them into deliveries once the ack wait ran
/// out, and the delivery stored already is not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_outbox_work_is_redone_once_by_another_node() {
    use async_nats::jetstream::{self, consumer::PullConsumer};
    use futures::StreamExt;

    let server = NatsServer::start();
    let lease = Duration::from_secs(1);
    let a = node(&server, "W9", lease).await;
    a.webhooks()
        .create(endpoint("wh_o", &["o"], &[]))
        .await
        .unwrap();
    // No node's outbox runs from here on until B opens.
    a.close().await.unwrap();
    drop(a);

    // The dying node: publishes three events, takes them from the outbox, stores the
    // delivery of the first one, and dies before acknowledging anything.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut events = Vec::new();
    for i in 0..3 {
        let ack = js
            .publish("w9.ev.o", i.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        events.push(ack.sequence);
    }
    let stream = js.get_stream("W9").await.unwrap();
    let outbox: PullConsumer = stream.get_consumer("W9_outbox").await.unwrap();
    let taken: Vec<_> = outbox
        .fetch()
        .max_messages(10)
        .messages()
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(taken.len(), 3);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("d.{}.wh_o", events[0]).as_str());
    let early = js
        .publish_with_headers("w9.dlv.wh_o", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    drop(taken);

    let started = Instant::now();
    let b = node(&server, "W9", lease).await;
    let got = deliveries_of(&*b.webhooks(), "wh_o", 3).await;
    assert!(started.elapsed() >= lease / 2, "{:?}", started.elapsed());
    let by_event: HashMap<u64, u64> = got.iter().map(|d| (d.event_id, d.id)).collect();
    assert_eq!(by_event.len(), 3);
    assert_eq!(
        by_event[&events[0]], early,
        "the delivery stored before the crash is the one kept"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.webhooks()
            .deliveries("wh_o", None, 0, 100)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// The deliveries are a JetStream work queue: one durable consumer per endpoint that every
/// node pulls from, acknowledged on success (gone from the stream), negatively acknowledged
/// with the retry delay for a retry (handed out again, to any node, when it is due), and a
/// manual retry publishes a newer generation that makes the old message stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_a_work_queue_acked_on_success_and_redelivered_after_the_retry_delay() {
    let server = NatsServer::start();
    let a = node(&server, "WQ", Duration::from_secs(30)).await;
    let b = node(&server, "WQ", Duration::from_secs(30)).await;
    let (wa, wb) = (a.webhooks(), b.webhooks());
    wa.create(endpoint("wh_q", &["q"], &[])).await.unwrap();
    a.append(vec![ev("q", "1"), ev("q", "2")]).await.unwrap();
    deliveries_of(&*wb, "wh_q", 2).await;

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut work = js.get_stream("WQ_DLVQ").await.unwrap();
    let info = work.info().await.unwrap().clone();
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(info.state.messages, 2, "one message per delivery");

    let (mut due, _) = wa.due("wh_q", now_ms(), 10, &HashSet::new()).await.unwrap();
    due.sort_by_key(|d| d.id);
    assert_eq!(due.len(), 2);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        work.get_consumer("WQ_wh_wh_q").await.unwrap();
    let ci = consumer.info().await.unwrap().clone();
    assert_eq!(ci.num_ack_pending, 2, "both handed out to A");
    assert_eq!(ci.config.ack_wait, Duration::from_secs(30));

    // Success: acknowledged, gone. Failure: back after the retry delay.
    let retry_in = Duration::from_millis(1500);
    let retry_at = now_ms() + retry_in.as_millis() as i64;
    let recorded = Instant::now();
    wa.record(vec![
        outcome(&due[0], 200, Next::Succeeded),
        outcome(&due[1], 500, Next::RetryAt(retry_at)),
    ])
    .await
    .unwrap();
    assert_eq!(work.info().await.unwrap().state.messages, 1);
    // Not handed out before the delay, to either node.
    let (early, next) = wb.due("wh_q", now_ms(), 10, &HashSet::new()).await.unwrap();
    assert!(early.is_empty(), "{early:?}");
    assert!(next.is_some_and(|t| t <= retry_at), "{next:?}");
    let again = until("B gets the retry", || async {
        let (d, _) = wb.due("wh_q", now_ms(), 10, &HashSet::new()).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert!(
        recorded.elapsed() >= retry_in - Duration::from_millis(300),
        "{:?}",
        recorded.elapsed()
    );
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (due[1].id, 1));
    let ci = consumer.info().await.unwrap().clone();
    assert!(ci.num_redelivered >= 1, "{ci:?}");

    // Failed for good, then retried by hand: a new generation is queued and attempted once.
    wb.record(vec![outcome(&again[0], 500, Next::Failed)])
        .await
        .unwrap();
    assert_eq!(work.info().await.unwrap().state.messages, 0);
    assert_eq!(wa.retry("wh_q", Some(due[1].id), 0).await.unwrap(), 1);
    assert_eq!(work.info().await.unwrap().state.messages, 1);
    let last = until("A gets the manual retry", || async {
        let (d, _) = wa.due("wh_q", now_ms(), 10, &HashSet::new()).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(last.len(), 1);
    assert!(last[0].last_chance);
    wa.record(vec![outcome(&last[0], 200, Next::Succeeded)])
        .await
        .unwrap();
    assert_eq!(work.info().await.unwrap().state.messages, 0);

    // Deleting the endpoint removes its consumer.
    assert!(wa.delete("wh_q").await.unwrap());
    assert!(
        work.get_consumer::<async_nats::jetstream::consumer::pull::Config>("WQ_wh_wh_q")
            .await
            .is_err()
    );
}
