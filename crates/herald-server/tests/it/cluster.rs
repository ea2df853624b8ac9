//! Cluster mode (SPEC 13): Herald nodes sharing one NATS JetStream (a real `nats-server -js`
//! started by the test). A publish on any node reaches SSE, WebSocket and long-poll
//! subscribers on the others in the same id order; a client resumes on another node with its
//! `Last-Event-ID`; a node that loses NATS answers 503 to publishes and `/readyz`, keeps its
//! subscribers, and catches up without a gap when NATS is back.

use std::time::Duration;

use herald_test_support::{NatsServer, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{Sse, T, get_json, publish_data, sse_open, ws_call, ws_connect, ws_recv};

fn quiet(_: &mut herald_server::config::RawConfig) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_every_door_on_the_others_in_order() {
    let nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), quiet).await;
    let b = TestServer::spawn_node(&nats.url(), quiet).await;
    let c = TestServer::spawn_node(&nats.url(), quiet).await;
    let ready = get_json(&b, "/readyz").await;
    assert_eq!(ready["backend"], "nats", "{ready}");

    let mut sse_b = Sse::new(sse_open(&b, "/api/v1/topics/orders.>/events", &[]).await);
    let mut sse_c = Sse::new(sse_open(&c, "/api/v1/topics/orders.>/events", &[]).await);
    let mut ws_c = ws_connect(&c).await;
    ws_call(&mut ws_c, json!({"type": "subscribe", "topic": "orders.>"})).await;
    // Publishes on A and on B, interleaved: every node sees one order.
    let mut ids = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        ids.push(publish_data(node, &format!("orders.n{i}"), json!(i)).await);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(sse_b.ids(10).await, ids);
    assert_eq!(sse_c.ids(10).await, ids);
    let mut ws_ids = Vec::new();
    while ws_ids.len() < 10 {
        let m = ws_recv(&mut ws_c).await;
        if m["type"] == "event" {
            ws_ids.push(m["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(ws_ids, ids);
    // History / long poll on C.
    let page = get_json(&c, "/api/v1/topics/orders.>/events?after=0").await;
    let got: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, ids);
    let last = *ids.last().unwrap();
    let poll = {
        let c = &c;
        async move {
            get_json(
                c,
                &format!("/api/v1/topics/orders.>/events?after={last}&wait=10"),
            )
            .await
        }
    };
    let (page, id) = tokio::join!(poll, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish_data(&a, "orders.late", json!("late")).await
    });
    assert_eq!(page["events"][0]["id"], id.to_string(), "{page}");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_without_gap_or_duplicate() {
    let nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), quiet).await;
    let b = TestServer::spawn_node(&nats.url(), quiet).await;
    let mut on_a = Sse::new(sse_open(&a, "/api/v1/topics/feed/events", &[]).await);
    let first: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(publish_data(&b, "feed", json!(i)).await);
        }
        v
    };
    assert_eq!(on_a.ids(5).await, first);
    // Node A dies; more events are published meanwhile on B.
    drop(on_a);
    a.stop().await;
    let mut more = Vec::new();
    for i in 5..9 {
        more.push(publish_data(&b, "feed", json!(i)).await);
    }
    let last_seen = first[4].to_string();
    let mut on_b = Sse::new(
        sse_open(
            &b,
            "/api/v1/topics/feed/events",
            &[("last-event-id", &last_seen)],
        )
        .await,
    );
    assert_eq!(on_b.ids(4).await, more);
    let live = publish_data(&b, "feed", json!("live")).await;
    assert_eq!(on_b.ids(1).await, vec![live]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_means_503_and_catching_up_without_gap() {
    let mut nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), quiet).await;
    let b = TestServer::spawn_node(&nats.url(), quiet).await;
    let mut sub = Sse::new(sse_open(&b, "/api/v1/topics/up/events", &[]).await);
    let before = publish_data(&a, "up", json!("before")).await;
    assert_eq!(sub.ids(1).await, vec![before]);

    nats.stop();
    // Publishes fail with 503 (not a hang, not a 500) and /readyz says why.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = a
            .http()
            .post(a.url("/api/v1/topics/up/events"))
            .json(&json!({"data": "during"}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let p: Value = r.json().await.unwrap();
            assert!(p["detail"].is_string(), "{p}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = a.http().get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    nats.restart();
    // Back: publishes work again and the subscriber on B (still connected) gets every
    // acknowledged event in order.
    let deadline = tokio::time::Instant::now() + T;
    let mut acked = Vec::new();
    while acked.len() < 3 {
        let r = a
            .http()
            .post(a.url("/api/v1/topics/up/events"))
            .json(&json!({"data": acked.len()}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::CREATED {
            let v: Value = r.json().await.unwrap();
            acked.push(v["id"].as_str().unwrap().parse::<u64>().unwrap());
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(sub.ids(3).await, acked);
    let r = b.http().get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    a.stop().await;
    b.stop().await;
}
