//! Operations endpoints: health, readiness, metrics, OpenAPI.

use herald_test_support::TestServer;
use serde_json::{Value, json};

use crate::util::{Sse, metrics, publish_data, sample, sse_open, wait_metric, ws_call, ws_connect};

#[tokio::test]
async fn health_and_readiness() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    for path in ["/healthz", "/readyz"] {
        let r = http.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().contains_key("x-request-id"));
        let body: Value = r.json().await.unwrap();
        assert!(body["status"].is_string(), "{path}: {body}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn metrics_count_connections_and_events() {
    let srv = TestServer::spawn().await;
    let r = srv.http().get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = r.text().await.unwrap();
    for name in [
        "herald_connections{transport=\"sse\"}",
        "herald_connections{transport=\"ws\"}",
        "herald_connections{transport=\"longpoll\"}",
        "herald_events_in_total",
        "herald_events_out_total{transport=\"sse\"}",
        "herald_queue_drops_total",
    ] {
        assert_eq!(sample(&text, name), 0.0, "{name} at start");
    }
    assert!(text.contains("# TYPE herald_connections gauge"));
    assert!(text.contains("# TYPE herald_events_out_total counter"));

    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/m/events", &[]).await);
    let mut ws = ws_connect(&srv).await;
    ws_call(&mut ws, json!({"type": "subscribe", "topic": "m"})).await;
    let text = metrics(&srv).await;
    assert_eq!(sample(&text, "herald_connections{transport=\"sse\"}"), 1.0);
    assert_eq!(sample(&text, "herald_connections{transport=\"ws\"}"), 1.0);
    assert_eq!(
        sample(&text, "herald_connections_total{transport=\"sse\"}"),
        1.0
    );

    for i in 0..3 {
        publish_data(&srv, "m", json!(i)).await;
    }
    assert_eq!(sse.ids(3).await, [1, 2, 3]);
    for _ in 0..3 {
        crate::util::ws_recv(&mut ws).await;
    }
    let text = metrics(&srv).await;
    assert_eq!(sample(&text, "herald_events_in_total"), 3.0);
    assert_eq!(
        sample(&text, "herald_events_out_total{transport=\"sse\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "herald_events_out_total{transport=\"ws\"}"),
        3.0
    );
    assert_eq!(sample(&text, "herald_last_event_id"), 3.0);

    // Closing the stream takes the gauge back down.
    drop(sse);
    wait_metric(&srv, "herald_connections{transport=\"sse\"}", |v| v == 0.0).await;
    drop(ws);
    wait_metric(&srv, "herald_connections{transport=\"ws\"}", |v| v == 0.0).await;
    srv.stop().await;
}

#[tokio::test]
async fn openapi_document() {
    let srv = TestServer::spawn().await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = r.json().await.unwrap();
    let version = doc["openapi"].as_str().expect("`openapi` field");
    assert!(version.starts_with("3.1"), "{version}");
    assert!(doc["paths"].is_object());
    assert!(doc["paths"]["/api/v1/topics/{topic}/events"].is_object());
    for p in [
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}",
        "/api/v1/webhooks/{id}/deliveries",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    srv.stop().await;
}

/// HTTP/2 without TLS (prior knowledge) is served on the same port as HTTP/1.1.
#[tokio::test]
async fn h2c_on_the_same_port() {
    let srv = TestServer::spawn().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = h2
        .post(srv.url("/api/v1/topics/h2.test/events"))
        .json(&json!({"data": "over h2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let page: Value = h2
        .get(srv.url("/api/v1/topics/h2.test/events?after=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["data"], "over h2");
    srv.stop().await;
}
