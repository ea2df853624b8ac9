//! Configured limits: event, body and batch sizes (413), `max_wait` (400), streaming
//! connections (503), patterns per connection (422).

use herald_test_support::TestServer;
use serde_json::json;

use crate::util::{assert_problem, get_json, publish, publish_data, sse_open};

#[tokio::test]
async fn wait_longer_than_max_wait_is_400() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_wait = "2s".into()).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/topics/t/events?wait=3"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("max_wait"),
        "{body}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn event_over_max_event_bytes_is_413() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_event_bytes = 64).await;
    let http = srv.http();
    // Exactly at the limit: `"` + 62 bytes + `"` is 64 bytes of JSON.
    publish(&srv, "t", json!({"data": "x".repeat(62)})).await;
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .json(&json!({"data": "x".repeat(63)}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    let r = http
        .post(srv.url("/api/v1/events"))
        .json(&json!([{"topic": "t", "data": 1}, {"topic": "t", "data": "y".repeat(100)}]))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    let page = get_json(&srv, "/api/v1/topics/t/events?after=0").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_body_bytes = 1024).await;
    let http = srv.http();
    let big = json!({"data": "x".repeat(2000)});
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    let r = http
        .post(srv.url("/api/v1/events"))
        .json(&json!([{"topic": "t", "data": "x".repeat(2000)}]))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    // Without a content-length (chunked), the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"data\":\"".into()),
        Ok("y".repeat(1500)),
        Ok("\"}".into()),
    ];
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    publish_data(&srv, "t", json!("small")).await;
    srv.stop().await;
}

#[tokio::test]
async fn batch_over_max_batch_is_413() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_batch = 3).await;
    let item = json!({"topic": "t", "data": 1});
    let r = srv
        .http()
        .post(srv.url("/api/v1/events"))
        .json(&json!([item, item, item, item]))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/events"))
        .json(&json!([item, item, item]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    srv.stop().await;
}

#[tokio::test]
async fn over_max_connections_is_503() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_connections = 2).await;
    let a = sse_open(&srv, "/api/v1/topics/t/events", &[]).await;
    let b = sse_open(&srv, "/api/v1/subscribe?topic=u", &[]).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/topics/t/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let retry_after = r.headers().get("retry-after").cloned();
    assert_problem(r, 503).await;
    assert!(retry_after.is_some(), "a 503 says when to retry");
    // Plain requests are not streaming connections and still work.
    publish_data(&srv, "t", json!(1)).await;
    // Closing one frees its slot.
    drop(a);
    tokio::time::timeout(crate::util::T, async {
        loop {
            let r = srv
                .http()
                .get(srv.url("/api/v1/topics/t/events"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return r;
            }
            assert_problem(r, 503).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("slot never freed");
    drop(b);
    srv.stop().await;
}

#[tokio::test]
async fn too_many_sse_patterns_is_422() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_subscriptions_per_connection = 3).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/subscribe?topic=a&topic=b&topic=c&topic=d"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_subscriptions_per_connection"),
        "{body}"
    );
    let ok = sse_open(&srv, "/api/v1/subscribe?topic=a&topic=b&topic=c", &[]).await;
    drop(ok);
    srv.stop().await;
}
