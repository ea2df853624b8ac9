//! STOMP over WebSocket at `GET /ws` (subprotocols `v12.stomp`, `v11.stomp`, `v10.stomp`).
//! Everything else under `/ws` is SockJS carrying STOMP (SPEC 6.3).

use axum::{
    Extension, Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, Utf8Bytes, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use futures::SinkExt;
use herald_core::Event;
use herald_protocol::stomp::Version;

use super::Wire;
use crate::{
    config::Config,
    error::ApiError,
    gateway::Principal,
    sockjs::{self, SockJsConn, SockJsOptions, SockJsSocket},
    state::{AppState, Transport},
};

/// Routes of this door: SockJS under `/ws` (as Spring's `.withSockJS()`), whose `GET /ws`
/// with a WebSocket upgrade is plain STOMP over WebSocket.
pub(crate) fn router(config: &Config) -> Router<AppState> {
    let mut options = SockJsOptions::from_config(config);
    options.upgrade = Some(get(upgrade));
    options.count_as = Transport::Stomp;
    options.websocket_handler = Some(sockjs::websocket_handler(over_sockjs_websocket));
    sockjs::service("/ws", sockjs::handler(over_sockjs), options)
}

/// STOMP carried by a SockJS session (any of its transports).
async fn over_sockjs(state: AppState, conn: SockJsConn) {
    let principal = conn.principal.clone().unwrap_or_else(Principal::nobody);
    let wire = SockJsWire {
        conn,
        queued: Vec::new(),
    };
    super::serve(state, principal, wire).await;
}

/// STOMP carried by a SockJS `websocket` session, framed in place.
async fn over_sockjs_websocket(
    state: AppState,
    principal: Option<Principal>,
    socket: SockJsSocket,
) -> SockJsSocket {
    let principal = principal.unwrap_or_else(Principal::nobody);
    super::serve(state, principal, SockJsWsWire(socket)).await.0
}

/// STOMP frames as the messages of a SockJS `websocket` session: one frame per message,
/// every frame fed between two flushes in one `a[...]` WebSocket message.
struct SockJsWsWire(SockJsSocket);

impl Wire for SockJsWsWire {
    async fn recv(&mut self) -> Option<Bytes> {
        self.0.recv().await.map(Bytes::from)
    }

    async fn feed(&mut self, frame: Bytes) -> Result<(), ()> {
        match std::str::from_utf8(&frame) {
            Ok(text) => self.0.push(text),
            Err(_) => self.0.push(&String::from_utf8_lossy(&frame)),
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        self.0.flush().await
    }

    async fn feed_event(
        &mut self,
        head: &[u8],
        _shareable: bool,
        event: &Event,
        version: Version,
    ) -> Result<(), ()> {
        // The event's part is escaped once per event, for every SockJS socket.
        let tail = herald_protocol::stomp::event_message_for_sockjs(event, version);
        let tail = std::str::from_utf8(&tail).map_err(|_| ())?;
        match std::str::from_utf8(head) {
            Ok(head) => self.0.push_escaped(head, tail),
            Err(_) => self.0.push_escaped(&String::from_utf8_lossy(head), tail),
        }
        Ok(())
    }
}

/// STOMP frames as SockJS messages (SockJS carries text: one frame per message).
struct SockJsWire {
    conn: SockJsConn,
    queued: Vec<String>,
}

impl Wire for SockJsWire {
    async fn recv(&mut self) -> Option<Bytes> {
        self.conn.incoming.recv().await.map(Bytes::from)
    }

    async fn feed(&mut self, frame: Bytes) -> Result<(), ()> {
        self.queued
            .push(String::from_utf8_lossy(&frame).into_owned());
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        for msg in self.queued.drain(..) {
            self.conn.outgoing.send(msg).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::new(e.status(), e.body_text()).into_response(),
    };
    let guard = match state.connect(Transport::Stomp) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let max = state.config.limits.max_event_bytes + 64 * 1024;
    ws.protocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            super::serve(state, principal, WsWire(socket)).await;
            drop(guard);
        })
}

/// STOMP frames as WebSocket messages: one frame (or heart-beat) per message, text when the
/// frame is UTF-8 (what browser clients expect), binary otherwise.
pub(crate) struct WsWire(pub(crate) WebSocket);

impl Wire for WsWire {
    async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.0.recv().await? {
                Ok(Message::Text(t)) => return Some(Bytes::from(t)),
                Ok(Message::Binary(b)) => return Some(b),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    async fn feed(&mut self, frame: Bytes) -> Result<(), ()> {
        // One UTF-8 check (a clone of `Bytes` is a reference count).
        let msg = match Utf8Bytes::try_from(frame.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(frame),
        };
        self.0.feed(msg).await.map_err(|_| ())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        self.0.flush().await.map_err(|_| ())
    }
}
