//! Resuming across a server restart on the same SQLite data: no gap, no duplicate, and ids
//! keep increasing.

use herald_test_support::TestServer;
use serde_json::json;

use crate::util::{
    Sse, get_json, id_of, publish_data, range, sse_open, ws_call, ws_connect, ws_recv,
};

#[tokio::test]
async fn sse_resumes_across_a_restart() {
    let srv = TestServer::spawn().await;
    for i in 1..=50u64 {
        assert_eq!(publish_data(&srv, "orders.eu", json!({"n": i})).await, i);
    }
    // A client reads the first 20 and goes away.
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/orders.%3E/events?after=0", &[]).await);
    assert_eq!(sse.ids(20).await, range(1, 20));
    drop(sse);

    let srv = srv.restart().await;
    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/topics/orders.%3E/events",
            &[("last-event-id", "20")],
        )
        .await,
    );
    for want in 21..=50u64 {
        let ev = sse.event().await;
        assert_eq!(ev.event, "message", "no truncation notice");
        assert_eq!(ev.id, Some(want.to_string()));
        assert_eq!(ev.data, format!("{{\"n\":{want}}}"));
    }
    // Then live events, with ids continuing after the restart.
    let a = publish_data(&srv, "orders.eu", json!("live 1")).await;
    let b = publish_data(&srv, "orders.us", json!("live 2")).await;
    assert_eq!((a, b), (51, 52));
    assert_eq!(sse.ids(2).await, [51, 52]);
    drop(sse);

    // History and the topics list survived too.
    let page = get_json(&srv, "/api/v1/topics/orders.eu/events?after=45&limit=10").await;
    let ids: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| id_of(&e["id"]))
        .collect();
    assert_eq!(ids, [46, 47, 48, 49, 50, 51]);
    let topics = get_json(&srv, "/api/v1/topics?prefix=orders").await;
    assert_eq!(
        topics,
        json!([
            {"topic": "orders.eu", "last_id": "51", "count": 51},
            {"topic": "orders.us", "last_id": "52", "count": 1},
        ])
    );
    srv.stop().await;
}

#[tokio::test]
async fn ids_keep_increasing_over_several_restarts() {
    let mut srv = TestServer::spawn().await;
    let mut last = 0;
    for round in 0..3 {
        for _ in 0..5 {
            let id = publish_data(&srv, "seq", json!(round)).await;
            assert!(id > last, "id {id} after {last}");
            last = id;
        }
        srv = srv.restart().await;
    }
    assert_eq!(last, 15);
    // A WebSocket client resumes from a cursor taken before the restarts.
    let mut ws = ws_connect(&srv).await;
    ws_call(
        &mut ws,
        json!({"type": "subscribe", "topic": "seq", "after": "12"}),
    )
    .await;
    for want in 13..=15 {
        assert_eq!(id_of(&ws_recv(&mut ws).await["id"]), want);
    }
    let id = publish_data(&srv, "seq", json!("new")).await;
    assert_eq!(id, 16);
    assert_eq!(id_of(&ws_recv(&mut ws).await["id"]), 16);
    srv.stop().await;
}

#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let srv = TestServer::spawn().await;
    let first = crate::util::publish(&srv, "k", json!({"data": 1, "key": "abc"})).await;
    let srv = srv.restart().await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/topics/k/events"))
        .json(&json!({"data": 1, "key": "abc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    srv.stop().await;
}
