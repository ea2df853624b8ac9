//! Fan-out: many subscribers on one topic each get every event in order; a stalled
//! subscriber is disconnected without holding the others back.

use std::time::Duration;

use futures::{StreamExt, stream};
use herald_protocol::sse::SseDecoder;
use herald_test_support::TestServer;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
    time::timeout,
};

use crate::util::{Sse, T, metrics, publish_data, range, sample, sse_open_with, wait_metric};

/// Reads an SSE body until `n` events arrived; returns their ids.
async fn collect_ids(resp: reqwest::Response, n: usize) -> Vec<u64> {
    let mut body = resp.bytes_stream();
    let mut decoder = SseDecoder::new();
    let mut out = Vec::new();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let Some(chunk) = body.next().await else {
            break;
        };
        let Ok(chunk) = chunk else { break };
        decoder.feed(&chunk, &mut out);
        ids.extend(out.drain(..).filter_map(|e| e.id?.parse::<u64>().ok()));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_subscribers_get_every_event_in_order() {
    const SSE: usize = 600;
    const WS: usize = 400;
    const EVENTS: u64 = 100;
    let srv = TestServer::spawn().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Open every subscription before publishing: an SSE response's headers mean the
    // subscription is registered, a WebSocket `subscribed` reply likewise.
    let sse_path = "/api/v1/topics/fan.out/events";
    let responses: Vec<reqwest::Response> = timeout(
        Duration::from_secs(60),
        stream::iter(0..SSE)
            .map(|_| sse_open_with(&http, &srv, sse_path, &[]))
            .buffer_unordered(64)
            .collect(),
    )
    .await
    .expect("opening SSE subscribers timed out");
    let mut tasks = JoinSet::new();
    for resp in responses {
        tasks.spawn(collect_ids(resp, EVENTS as usize));
    }
    let sockets: Vec<crate::util::Ws> = timeout(
        Duration::from_secs(60),
        stream::iter(0..WS)
            .map(|_| async {
                let mut ws = crate::util::ws_connect(&srv).await;
                crate::util::ws_call(&mut ws, json!({"type": "subscribe", "topic": "fan.*"})).await;
                ws
            })
            .buffer_unordered(64)
            .collect(),
    )
    .await
    .expect("opening WebSocket subscribers timed out");
    for mut ws in sockets {
        tasks.spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS as usize);
            while ids.len() < EVENTS as usize {
                match ws.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        ids.push(crate::util::id_of(&v["id"]));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            ids
        });
    }
    let text = metrics(&srv).await;
    assert_eq!(
        sample(&text, "herald_connections{transport=\"sse\"}"),
        SSE as f64
    );
    assert_eq!(
        sample(&text, "herald_connections{transport=\"ws\"}"),
        WS as f64
    );

    // Half one by one, half in batches.
    for i in 0..EVENTS / 2 {
        publish_data(&srv, "fan.out", json!({"i": i, "pad": "x".repeat(200)})).await;
    }
    for chunk in 0..5 {
        let batch: Vec<_> = (0..EVENTS / 10)
            .map(|i| json!({"topic": "fan.out", "data": {"chunk": chunk, "i": i}}))
            .collect();
        let r = srv
            .http()
            .post(srv.url("/api/v1/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    let want = range(1, EVENTS);
    let mut done = 0;
    timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            let ids = r.unwrap();
            assert_eq!(
                ids, want,
                "subscriber #{done} got a gap, a duplicate or disorder"
            );
            done += 1;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {done} of {} subscribers got every event", SSE + WS));
    assert_eq!(done, SSE + WS);
    let text = metrics(&srv).await;
    assert_eq!(sample(&text, "herald_queue_drops_total"), 0.0);
    assert_eq!(
        sample(&text, "herald_events_out_total{transport=\"sse\"}"),
        (SSE as u64 * EVENTS) as f64
    );
    srv.stop().await;
}

/// A client that sends an SSE request, reads the response head, then never reads again. A
/// small receive buffer makes its socket fill quickly.
async fn stalled_sse_client(srv: &TestServer, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = timeout(T, socket.connect(srv.addr)).await.unwrap().unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        srv.addr
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = timeout(T, stalled.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stalled
}

/// Reads what the server had buffered for a stalled client; the stream must then end.
async fn assert_closed_by_server(mut stalled: TcpStream) {
    timeout(T, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the stalled connection was not closed by the server");
}

/// Reads a healthy SSE subscriber until the event whose data is `done`; returns the ids.
fn read_until_done(mut sse: Sse) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            let ev = sse.event().await;
            ids.push(ev.id.unwrap().parse().unwrap());
            if ev.data == "done" {
                return ids;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_disconnected() {
    // Small enough to overflow soon once the stalled socket is full, large enough that the
    // healthy reader keeps up on a busy test machine.
    let srv = TestServer::spawn_with(|raw| raw.limits.subscriber_queue = 48).await;
    let path = "/api/v1/topics/big/events";
    let stalled = stalled_sse_client(&srv, path).await;
    let healthy = read_until_done(Sse::new(sse_open_with(&srv.http(), &srv, path, &[]).await));

    // Big events until the hub drops the stalled subscriber (its queue overflowed).
    let pad = "x".repeat(64 * 1024);
    let mut published = Vec::new();
    let mut dropped = false;
    for _ in 0..1000 {
        published.push(publish_data(&srv, "big", json!(pad)).await);
        if sample(&metrics(&srv).await, "herald_queue_drops_total") >= 1.0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled subscriber was never dropped");
    // Some more, which the healthy subscriber must still get.
    for _ in 0..20 {
        published.push(publish_data(&srv, "big", json!(pad)).await);
    }
    published.push(publish_data(&srv, "big", json!("done")).await);
    let ids = timeout(T, healthy)
        .await
        .expect("healthy subscriber stuck")
        .unwrap();
    assert_eq!(
        ids, published,
        "the healthy subscriber got every event in order"
    );

    // The server let go of the stalled connection while the client still read nothing ...
    wait_metric(&srv, "herald_connections{transport=\"sse\"}", |v| v == 1.0).await;
    // ... and closed it: reading now drains what was buffered, then the stream ends.
    assert_closed_by_server(stalled).await;
    srv.stop().await;
}

/// With the default (long) queue, the socket buffers fill before the queue overflows, and
/// the server's writer is parked on the full socket: the write-stall bound ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_disconnected_before_its_queue_overflows() {
    let srv = TestServer::spawn_with(|raw| {
        // The stall bound is two heartbeats / ping intervals.
        raw.sse.heartbeat = "250ms".into();
        raw.ws.ping_interval = "250ms".into();
    })
    .await;
    let path = "/api/v1/topics/big/events";
    let stalled = stalled_sse_client(&srv, path).await;
    let healthy = read_until_done(Sse::new(sse_open_with(&srv.http(), &srv, path, &[]).await));
    let pad = "x".repeat(8 * 1024);
    let mut published = Vec::new();
    timeout(T, async {
        loop {
            let batch: Vec<_> = (0..50)
                .map(|_| json!({"topic": "big", "data": pad}))
                .collect();
            let r = srv
                .http()
                .post(srv.url("/api/v1/events"))
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let receipts: Vec<serde_json::Value> = r.json().await.unwrap();
            published.extend(receipts.iter().map(|r| crate::util::id_of(&r["id"])));
            let m = metrics(&srv).await;
            if sample(&m, "herald_connections{transport=\"sse\"}") == 1.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stalled SSE connection was never closed");
    published.push(publish_data(&srv, "big", json!("done")).await);
    let ids = timeout(T, healthy)
        .await
        .expect("healthy subscriber stuck")
        .unwrap();
    assert_eq!(ids, published);
    assert_closed_by_server(stalled).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_subscriber_is_disconnected() {
    let srv = TestServer::spawn_with(|raw| {
        raw.sse.heartbeat = "250ms".into();
        raw.ws.ping_interval = "250ms".into();
    })
    .await;
    // A small receive buffer, so that the socket fills quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = timeout(T, socket.connect(srv.addr)).await.unwrap().unwrap();
    let (mut stalled, _) = timeout(
        T,
        tokio_tungstenite::client_async(
            srv.ws_url("/api/v1/ws"),
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    crate::util::ws_call(&mut stalled, json!({"type": "subscribe", "topic": "big"})).await;
    let healthy = read_until_done(Sse::new(
        sse_open_with(&srv.http(), &srv, "/api/v1/topics/big/events", &[]).await,
    ));
    // The WebSocket client now never reads (so it answers no pings either). Big batches
    // fill its socket at once, so the session is parked in a write before its
    // first ping: only the write-stall bound can end it.
    let pad = "x".repeat(64 * 1024);
    let mut published = Vec::new();
    for _ in 0..3 {
        let batch: Vec<_> = (0..50)
            .map(|_| json!({"topic": "big", "data": pad}))
            .collect();
        let r = srv
            .http()
            .post(srv.url("/api/v1/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let receipts: Vec<serde_json::Value> = r.json().await.unwrap();
        published.extend(receipts.iter().map(|r| crate::util::id_of(&r["id"])));
    }
    wait_metric(&srv, "herald_connections{transport=\"ws\"}", |v| v == 0.0).await;
    published.push(publish_data(&srv, "big", json!("done")).await);
    let ids = timeout(T, healthy)
        .await
        .expect("healthy subscriber stuck")
        .unwrap();
    assert_eq!(ids, published);
    // Reading now drains what was buffered; then the connection is over.
    timeout(T, async { while let Some(Ok(_)) = stalled.next().await {} })
        .await
        .expect("the stalled WebSocket was not closed by the server");
    srv.stop().await;
}
