//! The reference design's demo endpoints (SPEC 11).

use futures::{SinkExt, StreamExt};
use herald_test_support::TestServer;
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{Sse, T, assert_problem, publish_data, sse_open};

#[tokio::test]
async fn heartbeat_stream_counts_from_zero() {
    let srv = TestServer::spawn().await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/events", &[]).await);
    for n in 0..2 {
        let ev = sse.event().await;
        assert_eq!(ev.id.as_deref(), Some(n.to_string().as_str()));
        assert_eq!(ev.event, "heartbeat");
        assert!(ev.data.starts_with("Ping 20"), "{}", ev.data);
    }
    srv.stop().await;
}

#[tokio::test]
async fn notifications_stream_has_retry_5000_and_resumes() {
    let srv = TestServer::spawn().await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/events/notifications", &[]).await);
    sse.read_until(b"retry: 5000\n\n").await;
    let id = publish_data(&srv, "notifications", json!({"title": "hi"})).await;
    publish_data(&srv, "other", json!(1)).await;
    let ev = sse.event().await;
    assert_eq!(ev.id, Some(id.to_string()));
    assert_eq!(ev.event, "message");
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap()["title"],
        "hi"
    );
    drop(sse);
    // Resume with Last-Event-ID.
    let id2 = publish_data(&srv, "notifications", json!(2)).await;
    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/events/notifications",
            &[("last-event-id", &id.to_string())],
        )
        .await,
    );
    assert_eq!(sse.event().await.id, Some(id2.to_string()));
    srv.stop().await;
}

#[tokio::test]
async fn broadcast_reaches_every_subscriber() {
    let srv = TestServer::spawn().await;
    let mut a = Sse::new(sse_open(&srv, "/api/v1/sse/subscribe", &[]).await);
    let mut b = Sse::new(sse_open(&srv, "/api/v1/sse/subscribe", &[]).await);
    let r = srv
        .http()
        .post(srv.url("/api/v1/sse/broadcast"))
        .json(&json!({"event": "news", "data": "hello all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for s in [&mut a, &mut b] {
        let ev = s.event().await;
        assert_eq!(ev.event, "news");
        assert_eq!(ev.data, "hello all");
    }
    let r = srv
        .http()
        .post(srv.url("/api/v1/sse/broadcast"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    srv.stop().await;
}

#[tokio::test]
async fn chat_echoes_to_every_client() {
    let srv = TestServer::spawn().await;
    let (mut a, _) = tokio_tungstenite::connect_async(srv.ws_url("/ws/chat"))
        .await
        .unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(srv.ws_url("/ws/chat"))
        .await
        .unwrap();
    a.send(Message::text("hello")).await.unwrap();
    for ws in [&mut a, &mut b] {
        let msg = timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), "Echo: hello");
    }
    srv.stop().await;
}

#[tokio::test]
async fn demo_can_be_disabled() {
    let srv = TestServer::spawn_with(|c| c.demo.enabled = false).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_problem(r, 405).await;
    let r = srv.http().get(srv.url("/ws/chat")).send().await.unwrap();
    assert_problem(r, 404).await;
    srv.stop().await;
}
