//! Helpers shared by the door modules: publishing, SSE and WebSocket clients, problem+json
//! and metrics checks. Every wait here is under [`T`].

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use herald_protocol::sse::{SseDecoder, SseEvent};
use herald_test_support::TestServer;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// The longest any single wait in these tests may take.
pub(crate) const T: Duration = Duration::from_secs(20);

/// Publishes one event and returns the receipt (asserts 201).
pub(crate) async fn publish(srv: &TestServer, topic: &str, body: Value) -> Value {
    let r = srv
        .http()
        .post(srv.url(&format!("/api/v1/topics/{topic}/events")))
        .json(&body)
        .send()
        .await
        .expect("publish request");
    let status = r.status();
    let text = r.text().await.expect("publish body");
    assert_eq!(status, StatusCode::CREATED, "publish to {topic}: {text}");
    serde_json::from_str(&text).expect("receipt is JSON")
}

/// Publishes `data` to `topic` and returns the new id as a number.
pub(crate) async fn publish_data(srv: &TestServer, topic: &str, data: Value) -> u64 {
    let receipt = publish(srv, topic, serde_json::json!({ "data": data })).await;
    id_of(&receipt["id"])
}

/// An id as the server writes it (a decimal string), as a number.
pub(crate) fn id_of(v: &Value) -> u64 {
    v.as_str()
        .unwrap_or_else(|| panic!("id is not a string: {v}"))
        .parse()
        .unwrap_or_else(|_| panic!("id is not decimal: {v}"))
}

/// `GET` a JSON document (asserts 200).
pub(crate) async fn get_json(srv: &TestServer, path: &str) -> Value {
    let r = timeout(T, srv.http().get(srv.url(path)).send())
        .await
        .expect("GET timed out")
        .expect("GET");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
}

/// Asserts an RFC 9457 problem response with `status` and returns its body.
pub(crate) async fn assert_problem(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status of {}", resp.url());
    let headers = resp.headers().clone();
    assert_eq!(
        headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("")),
        Some("application/problem+json"),
        "content type of a {status}"
    );
    assert!(
        headers.contains_key("x-request-id"),
        "a {status} lacks x-request-id"
    );
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert!(body["type"].is_string(), "type: {body}");
    assert!(body["title"].is_string(), "title: {body}");
    assert_eq!(body["status"], status, "status field: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail: {body}"
    );
    body
}

/// Opens an SSE stream at `path` with extra headers (asserts 200).
pub(crate) async fn sse_open(srv: &TestServer, path: &str, headers: &[(&str, &str)]) -> Response {
    sse_open_with(&srv.http(), srv, path, headers).await
}

/// As [`sse_open`] with a given client.
pub(crate) async fn sse_open_with(
    http: &reqwest::Client,
    srv: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut req = http
        .get(srv.url(path))
        .header("accept", "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = timeout(T, req.send())
        .await
        .expect("SSE open timed out")
        .expect("SSE open");
    assert_eq!(resp.status(), StatusCode::OK, "SSE {path}");
    resp
}

/// A raw SSE reader: bytes as they come, decoded with the project's own parser.
pub(crate) struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: SseDecoder,
    ready: std::collections::VecDeque<SseEvent>,
    /// Every byte read so far.
    pub(crate) raw: Vec<u8>,
}

impl Sse {
    pub(crate) fn new(resp: Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            decoder: SseDecoder::new(),
            ready: Default::default(),
            raw: Vec::new(),
        }
    }

    /// The next event with data (a lone `retry:` block is skipped). `None` at the end.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(ev) = self.ready.pop_front() {
                if ev.retry.is_some() && ev.data.is_empty() && ev.id.is_none() {
                    continue;
                }
                return Some(ev);
            }
            let chunk = match timeout(T, self.body.next())
                .await
                .expect("SSE read timed out")
            {
                Some(Ok(c)) => c,
                Some(Err(_)) | None => return None,
            };
            self.raw.extend_from_slice(&chunk);
            let mut out = Vec::new();
            self.decoder.feed(&chunk, &mut out);
            self.ready.extend(out);
        }
    }

    /// The next event; panics at the end of the stream.
    pub(crate) async fn event(&mut self) -> SseEvent {
        self.next().await.expect("SSE stream ended early")
    }

    /// The next `n` events' ids.
    pub(crate) async fn ids(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let ev = self.event().await;
            ids.push(ev.id.expect("event has an id").parse().expect("decimal id"));
        }
        ids
    }

    /// Reads raw bytes until `needle` has been seen.
    pub(crate) async fn read_until(&mut self, needle: &[u8]) {
        while !self.raw.windows(needle.len()).any(|w| w == needle) {
            let chunk = timeout(T, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {:?} in {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&self.raw)
                    )
                })
                .expect("SSE stream ended early")
                .expect("SSE read");
            self.raw.extend_from_slice(&chunk);
            let mut out = Vec::new();
            self.decoder.feed(&chunk, &mut out);
            self.ready.extend(out);
        }
    }

    /// Waits for the end of the stream (panics if it does not end within [`T`]).
    pub(crate) async fn assert_ends(mut self) {
        timeout(T, async {
            while let Some(Ok(_)) = self.body.next().await {}
        })
        .await
        .expect("SSE stream did not end");
    }
}

/// The expected ids `a..=b`.
pub(crate) fn range(a: u64, b: u64) -> Vec<u64> {
    (a..=b).collect()
}

/// `/metrics` as text.
pub(crate) async fn metrics(srv: &TestServer) -> String {
    let r = timeout(T, srv.http().get(srv.url("/metrics")).send())
        .await
        .expect("metrics timed out")
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.expect("metrics body")
}

/// The value of one sample (`name` with its labels, exactly as exposed).
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// Polls `/metrics` until `name` satisfies `ok` (panics after [`T`]).
pub(crate) async fn wait_metric(srv: &TestServer, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    timeout(T, async {
        loop {
            let v = sample(&metrics(srv).await, name);
            if ok(v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("metric {name} never reached the expected value"))
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to the JSON WebSocket door.
pub(crate) async fn ws_connect(srv: &TestServer) -> Ws {
    let (ws, _) = timeout(
        T,
        tokio_tungstenite::connect_async(srv.ws_url("/api/v1/ws")),
    )
    .await
    .expect("WS connect timed out")
    .expect("WS connect");
    ws
}

/// Sends one JSON message.
pub(crate) async fn ws_send(ws: &mut Ws, msg: Value) {
    timeout(T, ws.send(Message::text(msg.to_string())))
        .await
        .expect("WS send timed out")
        .expect("WS send");
}

/// The next frame that is not a ping or pong.
pub(crate) async fn ws_frame(ws: &mut Ws) -> Option<Message> {
    loop {
        match timeout(T, ws.next()).await.expect("WS read timed out") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The next JSON text message.
pub(crate) async fn ws_recv(ws: &mut Ws) -> Value {
    match ws_frame(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(t.as_str()).expect("WS message is JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends a message and returns the next one.
pub(crate) async fn ws_call(ws: &mut Ws, msg: Value) -> Value {
    ws_send(ws, msg).await;
    ws_recv(ws).await
}
