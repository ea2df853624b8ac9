//! SSE door: headers, `retry:` first, heartbeats, resume (`Last-Event-ID`, `?after=`,
//! `after=now`), multi-line data, several patterns and wildcards, `herald.truncated`,
//! graceful shutdown.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use herald_server::config::RetentionSection;
use herald_test_support::TestServer;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::util::{Sse, T, get_json, publish, publish_data, range, sse_open, sse_open_with};

#[tokio::test]
async fn headers_and_retry_first() {
    let srv = TestServer::spawn().await;
    let resp = sse_open(&srv, "/api/v1/topics/news/events", &[]).await;
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(h.contains_key("x-request-id"));
    let mut body = resp.bytes_stream();
    let mut raw = Vec::new();
    while raw.len() < b"retry: 3000\n\n".len() {
        let chunk = timeout(T, body.next()).await.unwrap().unwrap().unwrap();
        raw.extend_from_slice(&chunk);
    }
    assert!(
        raw.starts_with(b"retry: 3000\n\n"),
        "first bytes: {:?}",
        String::from_utf8_lossy(&raw)
    );
    drop(body);
    srv.stop().await;
}

#[tokio::test]
async fn retry_follows_configuration() {
    let srv = TestServer::spawn_with(|raw| raw.sse.retry = "1.5s".into()).await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/news/events", &[]).await);
    sse.read_until(b"\n\n").await;
    assert!(sse.raw.starts_with(b"retry: 1500\n\n"));
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn heartbeat_comment_while_idle() {
    let srv = TestServer::spawn_with(|raw| raw.sse.heartbeat = "200ms".into()).await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/quiet/events", &[]).await);
    sse.read_until(b"\n\n: ping\n\n").await;
    // Heartbeats are comments: they are not events, and events still flow after them.
    let id = publish_data(&srv, "quiet", json!("hello")).await;
    let ev = sse.event().await;
    assert_eq!(ev.id, Some(id.to_string()));
    assert_eq!(ev.data, "hello");
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn events_are_written_in_the_spec_format() {
    let srv = TestServer::spawn().await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/fmt/events", &[]).await);
    let a = publish(
        &srv,
        "fmt",
        json!({"event": "user.updated", "data": {"a": [1, 2]}}),
    )
    .await;
    let b = publish_data(&srv, "fmt", json!("plain text")).await;
    let c = publish_data(&srv, "fmt", json!(7)).await;
    sse.read_until(format!("id: {c}\n").as_bytes()).await;
    sse.read_until(b"data: 7\n\n").await;
    let text = String::from_utf8(sse.raw.clone()).unwrap();
    let expected = format!(
        "retry: 3000\n\nid: {}\nevent: user.updated\ndata: {{\"a\":[1,2]}}\n\n\
         id: {b}\nevent: message\ndata: plain text\n\n\
         id: {c}\nevent: message\ndata: 7\n\n",
        a["id"].as_str().unwrap()
    );
    assert_eq!(text, expected);
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn multi_line_string_data() {
    let srv = TestServer::spawn().await;
    let resp = sse_open(&srv, "/api/v1/topics/lines/events", &[]).await;
    let mut events = resp.bytes_stream().eventsource();
    let text = "first line\nsecond line\n\nfourth after an empty one";
    publish_data(&srv, "lines", json!(text)).await;
    let ev = timeout(T, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev.data, text);
    assert_eq!(ev.event, "message");
    drop(events);

    // On the wire: one `data:` line per line of text.
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/lines/events?after=0", &[]).await);
    sse.read_until(b"fourth after an empty one\n\n").await;
    let raw = String::from_utf8(sse.raw.clone()).unwrap();
    assert!(
        raw.contains(
            "data: first line\ndata: second line\ndata: \ndata: fourth after an empty one\n\n"
        ),
        "{raw:?}"
    );
    drop(sse);
    srv.stop().await;
}

async fn publish_n(srv: &TestServer, topic: &str, n: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(publish_data(srv, topic, json!({"i": i})).await);
    }
    ids
}

#[tokio::test]
async fn resume_with_last_event_id() {
    let srv = TestServer::spawn().await;
    publish_n(&srv, "r", 5).await;
    let mut sse =
        Sse::new(sse_open(&srv, "/api/v1/topics/r/events", &[("last-event-id", "2")]).await);
    assert_eq!(sse.ids(3).await, [3, 4, 5]);
    // Then live, with no gap and no duplicate at the seam.
    publish_n(&srv, "r", 2).await;
    assert_eq!(sse.ids(2).await, [6, 7]);
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn resume_with_after() {
    let srv = TestServer::spawn().await;
    publish_n(&srv, "r", 5).await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/r/events?after=2", &[]).await);
    assert_eq!(sse.ids(3).await, [3, 4, 5]);
    publish_n(&srv, "r", 1).await;
    assert_eq!(sse.ids(1).await, [6]);
    drop(sse);

    // `after=0` is the whole retained history.
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/r/events?after=0", &[]).await);
    assert_eq!(sse.ids(6).await, range(1, 6));
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn after_now_and_no_cursor_are_live_only() {
    let srv = TestServer::spawn().await;
    publish_n(&srv, "live", 3).await;
    let mut now = Sse::new(sse_open(&srv, "/api/v1/topics/live/events?after=now", &[]).await);
    let mut bare = Sse::new(sse_open(&srv, "/api/v1/topics/live/events", &[]).await);
    let id = publish_data(&srv, "live", json!("new")).await;
    assert_eq!(id, 4);
    assert_eq!(now.ids(1).await, [4]);
    assert_eq!(bare.ids(1).await, [4]);
    drop((now, bare));
    srv.stop().await;
}

#[tokio::test]
async fn last_event_id_wins_over_after() {
    let srv = TestServer::spawn().await;
    publish_n(&srv, "w", 6).await;
    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/topics/w/events?after=1",
            &[("last-event-id", "4")],
        )
        .await,
    );
    assert_eq!(sse.ids(2).await, [5, 6]);
    drop(sse);
    // An empty Last-Event-ID is ignored (a fresh EventSource sends none).
    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/topics/w/events?after=3",
            &[("last-event-id", "")],
        )
        .await,
    );
    assert_eq!(sse.ids(3).await, [4, 5, 6]);
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn subscribe_to_several_patterns() {
    let srv = TestServer::spawn().await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/subscribe?topic=a&topic=b.*", &[]).await);
    let mut want = Vec::new();
    want.push(publish_data(&srv, "a", json!(1)).await);
    publish_data(&srv, "c", json!(2)).await;
    want.push(publish_data(&srv, "b.x", json!(3)).await);
    publish_data(&srv, "b.x.y", json!(4)).await;
    publish_data(&srv, "b", json!(5)).await;
    publish_data(&srv, "a.a", json!(6)).await;
    want.push(publish_data(&srv, "b.y", json!(7)).await);
    want.push(publish_data(&srv, "a", json!(8)).await);
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let ev = sse.event().await;
        got.push(ev.id.unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(got, want);
    drop(sse);

    // Overlapping patterns deliver an event once; resume works across patterns.
    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/subscribe?topic=b.*&topic=b.%3E&topic=%3E&after=6",
            &[],
        )
        .await,
    );
    assert_eq!(sse.ids(2).await, [7, 8]);
    let next = publish_data(&srv, "b.z", json!(9)).await;
    assert_eq!(sse.ids(1).await, [next]);
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn wildcard_patterns() {
    let srv = TestServer::spawn().await;
    let mut tail = Sse::new(sse_open(&srv, "/api/v1/topics/orders.%3E/events", &[]).await);
    let mut star = Sse::new(sse_open(&srv, "/api/v1/topics/orders.*/events", &[]).await);
    let mut all = Sse::new(sse_open(&srv, "/api/v1/topics/%3E/events", &[]).await);
    let mid = Sse::new(sse_open(&srv, "/api/v1/topics/orders.*.created/events", &[]).await);
    let mut mid = mid;
    let o = publish_data(&srv, "orders", json!(0)).await;
    let eu = publish_data(&srv, "orders.eu", json!(1)).await;
    let created = publish_data(&srv, "orders.eu.created", json!(2)).await;
    let other = publish_data(&srv, "users.eu", json!(3)).await;
    let us = publish_data(&srv, "orders.us", json!(4)).await;
    assert_eq!(tail.ids(3).await, [eu, created, us]);
    assert_eq!(star.ids(2).await, [eu, us]);
    assert_eq!(all.ids(5).await, [o, eu, created, other, us]);
    let last = publish_data(&srv, "orders.us.created", json!(5)).await;
    assert_eq!(mid.ids(2).await, [created, last]);
    drop((tail, star, all, mid));
    srv.stop().await;
}

#[tokio::test]
async fn cursor_older_than_retention_gets_truncated_notice() {
    let srv = TestServer::spawn_with(|raw| {
        raw.retention.push(RetentionSection {
            pattern: "trunc.>".into(),
            max_events: 3,
            max_age: "24h".into(),
        });
    })
    .await;
    let ids = publish_n(&srv, "trunc.a", 10).await;
    assert_eq!(ids, range(1, 10));
    // Retention may run in the background: wait until only the newest 3 remain.
    timeout(T, async {
        loop {
            let page = get_json(&srv, "/api/v1/topics/trunc.a/events").await;
            if page["events"].as_array().unwrap().len() == 3 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("retention never pruned to 3 events");

    let mut sse = Sse::new(
        sse_open(
            &srv,
            "/api/v1/topics/trunc.%3E/events",
            &[("last-event-id", "2")],
        )
        .await,
    );
    let notice = sse.event().await;
    assert_eq!(notice.event, "herald.truncated");
    assert_eq!(
        notice.id, None,
        "the notice does not move the client's cursor"
    );
    let data: Value = serde_json::from_str(&notice.data).unwrap();
    assert_eq!(data, json!({"requested": "2", "oldest": "8"}));
    assert_eq!(sse.ids(3).await, [8, 9, 10]);
    let id = publish_data(&srv, "trunc.a", json!("live")).await;
    assert_eq!(sse.ids(1).await, [id]);
    drop(sse);

    // A cursor inside retention gets no notice.
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/trunc.a/events?after=8", &[]).await);
    let ev = sse.event().await;
    assert_eq!(ev.event, "message");
    assert_eq!(ev.id.as_deref(), Some("9"));
    drop(sse);

    // The long poll reports it too.
    let page = get_json(&srv, "/api/v1/topics/trunc.a/events?after=1&limit=2").await;
    assert_eq!(page["events"][0]["event"], "herald.truncated");
    assert_eq!(page["events"][0]["data"]["requested"], "1");
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let mut a = Sse::new(sse_open_with(&http, &srv, "/api/v1/topics/s/events", &[]).await);
    let b = Sse::new(sse_open_with(&http, &srv, "/api/v1/subscribe?topic=%3E", &[]).await);
    publish_data(&srv, "s", json!(1)).await;
    assert_eq!(a.ids(1).await, [1]);
    // `stop` asserts that the server exits cleanly within its own timeout while the streams
    // are open; then both streams end.
    timeout(T, srv.stop()).await.expect("stop timed out");
    a.assert_ends().await;
    b.assert_ends().await;
}
