//! The demo endpoints of the reference design (SPEC 11), on when `demo.enabled`: the browser
//! snippets of that design run against Herald unchanged.
//!
//! - `GET /api/v1/events`: a heartbeat SSE stream (`id: 0,1,2...`, `event: heartbeat`,
//!   `data: Ping <local date-time>`), one event per second, per connection.
//! - `GET /api/v1/events/notifications`: SSE of topic `notifications`, `retry: 5000`.
//! - `GET /api/v1/sse/subscribe` + `POST /api/v1/sse/broadcast {"event","data"}`: an
//!   SseEmitter-style broadcast, through topic `broadcast`.
//! - `GET /ws/chat`: a plain WebSocket where every text message goes to every chat client as
//!   `Echo: <message>`, through topic `demo.chat` (so it works across a cluster too).
//!
//! All of them go through the Hub like every other door: a REST publish to `notifications`
//! reaches the notifications stream, and so on.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{
        RawQuery, State, WebSocketUpgrade,
        rejection::BytesRejection,
        ws::{Message, Utf8Bytes, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use futures::SinkExt;
use herald_core::{Cursor, Item, NewEvent, Topic, event::now_ms};
use herald_protocol::sse;
use serde_json::value::RawValue;

use crate::{
    error::{ApiError, ApiResult},
    events::{StreamRequest, parse_request, query_pairs},
    gateway::Principal,
    rest::{json_body, new_event, receipt},
    state::{AppState, Transport},
};

/// Topic behind `/api/v1/events/notifications`.
const NOTIFICATIONS: &str = "notifications";
/// Topic behind `/api/v1/sse/subscribe`.
const BROADCAST: &str = "broadcast";
/// Topic behind `/ws/chat`.
const CHAT: &str = "demo.chat";

/// Routes (only mounted when `demo.enabled`).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events", get(heartbeat))
        .route("/api/v1/events/notifications", get(notifications))
        .route("/api/v1/sse/subscribe", get(broadcast_stream))
        .route("/api/v1/sse/broadcast", post(broadcast_send))
        .route("/ws/chat", get(chat))
}

/// `Ping 2026-11-28T01:23:45.123` (the server's clock in UTC, like Java's `LocalDateTime`
/// on a UTC host).
fn ping_text() -> String {
    let t = herald_core::event::rfc3339_ms(now_ms());
    format!("Ping {}", t.trim_end_matches('Z'))
}

fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

async fn heartbeat(State(state): State<AppState>) -> ApiResult<Response> {
    let guard = state.connect(Transport::Sse)?;
    let token = state.token.clone();
    let start = tokio::time::Instant::now() + Duration::from_secs(1);
    let ticks = tokio::time::interval_at(start, Duration::from_secs(1));
    let body = futures::stream::unfold(
        (0u64, ticks, token, guard),
        |(n, mut ticks, token, guard)| async move {
            tokio::select! {
                _ = token.cancelled() => None,
                _ = ticks.tick() => {
                    let frame = sse::frame(Some(&n.to_string()), "heartbeat", &ping_text());
                    Some((Ok::<Bytes, Infallible>(frame), (n + 1, ticks, token, guard)))
                }
            }
        },
    );
    Ok(sse_response(Body::from_stream(body)))
}

/// SSE of one fixed topic with `retry: 5000`, resuming with `Last-Event-ID` like every
/// other SSE stream.
fn topic_stream(
    state: &AppState,
    principal: &Principal,
    topic: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let pairs: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "after")
        .collect();
    let mut req: StreamRequest =
        parse_request(state, vec![topic.to_owned()], &pairs, headers, true)?;
    principal.check_subscribe(&req.patterns)?;
    req.retry_ms = Some(5000);
    if req.cursor.is_none() {
        req.cursor = Some(Cursor::Live);
    }
    crate::sse::stream(state, req)
}

async fn notifications(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    topic_stream(
        &state,
        &principal,
        NOTIFICATIONS,
        query.as_deref(),
        &headers,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

async fn broadcast_stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    topic_stream(&state, &principal, BROADCAST, query.as_deref(), &headers)
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/v1/sse/broadcast {"event","data"}`: publishes to topic `broadcast`.
async fn broadcast_send(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let topic = Topic::new(BROADCAST).map_err(ApiError::internal)?;
    principal.check_publish(&topic)?;
    let body = json_body(&headers, body)?;
    let fields = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let new = new_event(fields, Some(topic))?;
    let a = state.hub.publish_one(new).await?;
    Ok((StatusCode::CREATED, Json(receipt(&a))).into_response())
}

async fn chat(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let topic = Topic::new(CHAT).map_err(ApiError::internal)?;
    if !principal.can_publish(&topic) || !principal.can_subscribe(&topic.clone().into()) {
        return Err(ApiError::forbidden("not allowed to use the chat"));
    }
    let guard = state.connect(Transport::Ws)?;
    let max = state.config.limits.max_event_bytes;
    Ok(ws
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(max)
        .on_upgrade(move |socket| async move {
            chat_session(state, topic, socket).await;
            drop(guard);
        }))
}

async fn chat_session(state: AppState, topic: Topic, mut socket: WebSocket) {
    let mut sub = state
        .hub
        .subscribe(vec![topic.clone().into()], Cursor::Live);
    let token = state.token.clone();
    let mut items = Vec::new();
    loop {
        items.clear();
        tokio::select! {
            _ = token.cancelled() => break,
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let text = format!("Echo: {}", t.as_str());
                    let Ok(data) = RawValue::from_string(
                        serde_json::to_string(&text).unwrap_or_default(),
                    ) else { continue };
                    let Ok(new) = NewEvent::new(topic.clone(), None, data, None) else { continue };
                    if let Err(e) = state.hub.publish_one(new).await {
                        tracing::warn!(error = %e, "chat publish failed");
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            r = sub.recv_many(&mut items, 64) => {
                if r.is_err() { break }
                for item in &items {
                    let Item::Event(e) = item else { continue };
                    let text: String = serde_json::from_str(e.data.get()).unwrap_or_default();
                    if socket.feed(Message::Text(Utf8Bytes::from(text))).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
