//! Outbound webhooks in cluster mode (SPEC 7.1, 13): two Herald nodes on one NATS JetStream
//! share endpoints and deliveries. Every event is delivered once, whichever node it was
//! published on and whichever node sends it; when a node stops, the other delivers what it
//! left pending.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use herald_server::config::RawConfig;
use herald_test_support::{Answer, NatsServer, TestServer, WebhookReceiver};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{T, get_json, publish_data};

/// Private targets allowed, quick retries.
fn fast(c: &mut RawConfig) {
    c.webhooks.allow_private_targets = true;
    c.webhooks.retry_schedule = vec!["50ms".into(), "50ms".into(), "50ms".into()];
    c.webhooks.timeout = "2s".into();
}

/// Quick retries for long enough (about 10 s) that deliveries stay pending while a node stops.
fn patient(c: &mut RawConfig) {
    fast(c);
    c.webhooks.retry_schedule = vec!["100ms".into(); 100];
}

async fn create_endpoint(srv: &TestServer, body: Value) -> String {
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Waits until `srv` serves the endpoint (the other node's write reached it).
async fn until_known(srv: &TestServer, id: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = srv
            .http()
            .get(srv.url(&format!("/api/v1/webhooks/{id}")))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a node's deliveries API until every delivery of the endpoint has `status` and there
/// are `n` of them.
async fn until_all(srv: &TestServer, id: &str, n: usize, status: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let v = get_json(srv, &format!("/api/v1/webhooks/{id}/deliveries?limit=1000")).await;
        let list = v["deliveries"].as_array().unwrap().clone();
        if list.len() == n && list.iter().all(|d| d["status"] == status) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {n} {status}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn webhook_ids(rx: &WebhookReceiver) -> Vec<String> {
    rx.received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_published_on_any_node_is_delivered_exactly_once() {
    let nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), fast).await;
    let b = TestServer::spawn_node(&nats.url(), fast).await;
    let rx = WebhookReceiver::ok().await;
    let id = create_endpoint(&a, json!({"url": rx.url("/hook"), "topics": ["jobs.>"]})).await;
    until_known(&b, &id).await;

    let n = 40;
    let mut expected = HashSet::new();
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        let event = publish_data(node, &format!("jobs.n{}", i % 5), json!(i)).await;
        expected.insert(format!("msg_{event}"));
    }
    // Not for this endpoint.
    publish_data(&a, "other", json!("x")).await;
    rx.wait_for(n, T).await;
    // Both nodes report every delivery succeeded, with one attempt each.
    for node in [&a, &b] {
        let list = until_all(node, &id, n, "succeeded").await;
        assert!(
            list.iter()
                .all(|d| d["attempts"].as_array().unwrap().len() == 1),
            "{list:#?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = webhook_ids(&rx);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for i in &ids {
        *seen.entry(i.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let got: HashSet<String> = ids.into_iter().collect();
    assert_eq!(got, expected);
    for r in rx.received() {
        assert_eq!(r.path, "/hook");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_a_stopped_node_left_pending_are_delivered_by_another() {
    let nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), patient).await;
    let b = TestServer::spawn_node(&nats.url(), patient).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let rx = {
        let healthy = healthy.clone();
        WebhookReceiver::scripted(move |_, _| {
            if healthy.load(Ordering::SeqCst) {
                Answer::ok()
            } else {
                Answer::status(503)
            }
        })
        .await
    };
    let id = create_endpoint(&a, json!({"url": rx.url("/"), "topics": ["orders"]})).await;
    until_known(&b, &id).await;
    let n = 12;
    let mut expected = HashSet::new();
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        let event = publish_data(node, "orders", json!(i)).await;
        expected.insert(format!("msg_{event}"));
    }
    // Every delivery was attempted (and failed) at least once, by either node.
    let deadline = tokio::time::Instant::now() + T;
    while webhook_ids(&rx).into_iter().collect::<HashSet<_>>() != expected {
        assert!(tokio::time::Instant::now() < deadline, "not all attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A goes away with deliveries pending (some of them in its hands).
    a.stop().await;
    let failures = rx.received().len();
    healthy.store(true, Ordering::SeqCst);
    let list = until_all(&b, &id, n, "succeeded").await;
    assert!(
        list.iter()
            .all(|d| d["attempts"].as_array().unwrap().len() >= 2),
        "{list:#?}"
    );
    let ok: HashSet<String> = rx.received()[failures..]
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(ok, expected, "B delivered every one of them");
    b.stop().await;
}
