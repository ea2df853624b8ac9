use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use herald_test_support::TestServer;
use serde_json::{Value, json};
use tokio::time::timeout;

#[tokio::test]
async fn publish_reaches_sse_subscriber_and_history() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let resp = http
        .get(srv.url("/api/v1/topics/news/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = resp.bytes_stream().eventsource();
    let r = http
        .post(srv.url("/api/v1/topics/news/events"))
        .json(&json!({"event": "user-update", "data": {"hello": "world"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], "1");
    let ev = timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.id, "1");
    assert_eq!(ev.event, "user-update");
    assert_eq!(ev.data, r#"{"hello":"world"}"#);
    let page: Value = http
        .get(srv.url("/api/v1/topics/news/events?after=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["data"]["hello"], "world");
    assert_eq!(page["next"], "1");
    drop(events);
    srv.stop().await;
}
