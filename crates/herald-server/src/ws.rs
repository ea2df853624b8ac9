//! WebSocket JSON door (SPEC 6.1): subscribe/unsubscribe/publish/ping over text frames.
//!
//! One task per connection: a `select!` over the socket, the connection's subscriptions
//! (a `StreamMap` keyed by pattern), the ping timer and the shutdown token.

use axum::{
    Extension, Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, close_code,
            rejection::WebSocketUpgradeRejection,
        },
    },
    response::Response,
    routing::get,
};
use futures::{SinkExt, StreamExt, stream::BoxStream};
use herald_core::{
    Cursor, HubError, Item, NewEvent, Pattern, SubscriptionError, Topic, event::compact_json,
};
use herald_protocol::ws_json::{self, ClientMessage, ErrorCode};
use serde_json::value::RawValue;
use tokio_stream::StreamMap;

use crate::{
    error::{ApiError, ApiResult},
    gateway::Principal,
    state::{AppState, ConnGuard, Transport},
};

/// Malformed messages in a row before the connection is closed with 1008.
const MAX_GARBAGE: u32 = 10;
/// Events sent per wake-up before flushing.
const MAX_COALESCE: usize = 128;

/// Routes of this door.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let guard = state.connect(Transport::Ws)?;
    let max = state.config.limits.max_body_bytes;
    // tungstenite reserves 128 KiB per direction by default; most connections only ever
    // carry small JSON messages, and buffers grow when a big one comes. A 1 KiB read buffer
    // keeps an idle connection near 6.5 KiB (4 KiB: 9.6 KiB); a large inbound message is
    // read into a buffer reserved for its whole length once its frame header is parsed.
    Ok(ws
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let session = Session {
                state,
                principal,
                subs: StreamMap::new(),
                _guard: guard,
            };
            session.run(socket).await;
        }))
}

type SubStream = BoxStream<'static, Result<Vec<Item>, SubscriptionError>>;

struct Session {
    state: AppState,
    principal: Principal,
    subs: StreamMap<String, SubStream>,
    _guard: ConnGuard,
}

enum Flow {
    Continue,
    Close(u16, String),
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        let token = self.state.token.clone();
        let period = self.state.config.ws_ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut awaiting_pong = false;
        let mut garbage = 0u32;
        let close = loop {
            tokio::select! {
                _ = token.cancelled() => break Some((close_code::AWAY, "server shutting down".to_string())),
                msg = socket.recv() => {
                    let msg = match msg {
                        None => break None,
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            // tungstenite's capacity errors, seen through axum's opaque error.
                            let text = e.to_string();
                            let size = text.contains("too long") || text.contains("Space limit");
                            if size {
                                break Some((close_code::SIZE, "message too large (limits.max_body_bytes)".into()));
                            }
                            break None;
                        }
                    };
                    let reply = match msg {
                        Message::Text(t) => self.handle(t.as_str(), &mut garbage).await,
                        Message::Binary(_) => {
                            garbage += 1;
                            Err(ws_json::error(ErrorCode::BadRequest, "binary frames are not supported; send JSON text", None))
                        }
                        Message::Pong(_) => { awaiting_pong = false; continue }
                        Message::Ping(_) => continue,
                        Message::Close(_) => break None,
                    };
                    let out = match reply { Ok(s) | Err(s) => s };
                    if socket.send(text(out)).await.is_err() {
                        break None;
                    }
                    if garbage >= MAX_GARBAGE {
                        break Some((close_code::POLICY, "too many malformed messages".into()));
                    }
                }
                Some((pattern, r)) = self.subs.next(), if !self.subs.is_empty() => {
                    match self.deliver(&mut socket, &pattern, r).await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Close(code, reason)) => break Some((code, reason)),
                        Err(()) => break None,
                    }
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        break Some((close_code::POLICY, "no pong".into()));
                    }
                    awaiting_pong = true;
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                }
            }
        };
        if let Some((code, reason)) = close {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                })))
                .await;
        }
    }

    async fn deliver(
        &mut self,
        socket: &mut WebSocket,
        pattern: &str,
        r: Result<Vec<Item>, SubscriptionError>,
    ) -> Result<Flow, ()> {
        let items = match r {
            Ok(items) => items,
            Err(SubscriptionError::Lagged(n)) => {
                self.subs.remove(pattern);
                return Ok(Flow::Close(
                    close_code::POLICY,
                    format!("too slow: more than {n} events queued; resume with `after`"),
                ));
            }
            Err(e) => {
                self.subs.remove(pattern);
                let msg = ws_json::error(ErrorCode::Unavailable, &e.to_string(), None);
                socket.send(text(msg)).await.map_err(|_| ())?;
                return Ok(Flow::Continue);
            }
        };
        let mut n = 0u64;
        for item in &items {
            let msg = match item {
                Item::Event(e) => {
                    n += 1;
                    match Utf8Bytes::try_from(ws_json::event(e)) {
                        Ok(t) => Message::Text(t),
                        Err(_) => continue,
                    }
                }
                Item::Truncated { requested, oldest } => {
                    text(ws_json::truncated(pattern, *requested, *oldest))
                }
            };
            socket.feed(msg).await.map_err(|_| ())?;
        }
        socket.flush().await.map_err(|_| ())?;
        self.state.metrics.events_out(Transport::Ws, n);
        Ok(Flow::Continue)
    }

    /// Answers one text message: `Ok(reply)` or `Err(error reply)`.
    async fn handle(&mut self, text: &str, garbage: &mut u32) -> Result<String, String> {
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => {
                *garbage += 1;
                return Err(ws_json::error(
                    ErrorCode::BadRequest,
                    &e.message,
                    e.reference.as_deref(),
                ));
            }
        };
        *garbage = 0;
        let reference: Option<Box<RawValue>> = msg.reference().map(ToOwned::to_owned);
        let r = reference.as_deref();
        let err = |code, m: &str| Err(ws_json::error(code, m, r));
        match msg {
            ClientMessage::Ping { .. } => Ok(ws_json::pong(r)),
            ClientMessage::Subscribe { topic, after, .. } => {
                let pattern = match Pattern::new(&topic) {
                    Ok(p) => p,
                    Err(e) => return err(ErrorCode::BadRequest, &e.to_string()),
                };
                if !self.principal.can_subscribe(&pattern) {
                    return err(
                        ErrorCode::Forbidden,
                        &format!("not allowed to subscribe to {pattern}"),
                    );
                }
                let cursor = match after.map(|a| Cursor::parse(&a.as_text())).transpose() {
                    Ok(c) => c.unwrap_or(Cursor::Live),
                    Err(e) => return err(ErrorCode::BadRequest, &e.to_string()),
                };
                let max = self.state.config.limits.max_subscriptions_per_connection;
                if !self.subs.contains_key(&topic) && self.subs.len() >= max {
                    return err(
                        ErrorCode::TooLarge,
                        &format!(
                            "more than {max} subscriptions on one connection (limits.max_subscriptions_per_connection)"
                        ),
                    );
                }
                let sub = self.state.hub.subscribe(vec![pattern], cursor);
                let stream = futures::stream::unfold(sub, |mut sub| async move {
                    let mut items = Vec::new();
                    let r = sub.recv_many(&mut items, MAX_COALESCE).await;
                    Some((r.map(|()| items), sub))
                })
                .boxed();
                self.subs.insert(topic.clone(), stream);
                Ok(ws_json::subscribed(&topic, r))
            }
            ClientMessage::Unsubscribe { topic, .. } => {
                if self.subs.remove(&topic).is_some() {
                    Ok(ws_json::unsubscribed(&topic, r))
                } else {
                    err(ErrorCode::NotFound, &format!("not subscribed to {topic}"))
                }
            }
            ClientMessage::Publish {
                topic,
                event,
                data,
                key,
                ..
            } => {
                let topic = match Topic::new(&topic) {
                    Ok(t) => t,
                    Err(e) => return err(ErrorCode::BadRequest, &e.to_string()),
                };
                if !self.principal.can_publish(&topic) {
                    return err(
                        ErrorCode::Forbidden,
                        &format!("not allowed to publish to {topic}"),
                    );
                }
                let new = match NewEvent::new(topic, event.as_deref(), compact_json(data), key) {
                    Ok(n) => n,
                    Err(e) => return err(ErrorCode::BadRequest, &e.to_string()),
                };
                match self.state.hub.publish_one(new).await {
                    Ok(a) => Ok(ws_json::published(a.event.id, r)),
                    Err(e @ (HubError::EventTooLarge { .. } | HubError::BatchTooLarge { .. })) => {
                        err(ErrorCode::TooLarge, &e.to_string())
                    }
                    Err(e) => err(ErrorCode::Unavailable, &e.to_string()),
                }
            }
        }
    }
}
