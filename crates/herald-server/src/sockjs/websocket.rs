//! The WebSocket transports. `/{server}/{session}/websocket` carries SockJS framing (`o`,
//! `h`, `a[...]`, `c[...]` out; a JSON array or string per text frame in); `<prefix>/websocket`
//! is raw (one message per text frame, pings instead of `h`). Either way a session lives
//! exactly as long as its WebSocket and is not in the session map: session ids may repeat.
//!
//! A service with a [`WebSocketHandler`](super::WebSocketHandler) runs `websocket` sessions
//! on a [`SockJsSocket`] (framing done in place, in the handler's own task); the others run
//! their [`SessionHandler`](super::SessionHandler) in a task of its own, with this module's
//! loop moving messages between its channels and the socket.

use std::{collections::VecDeque, sync::Arc};

use axum::{
    extract::{
        FromRequestParts as _, Request, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::{Method, StatusCode, Version, header},
    response::{IntoResponse as _, Response},
};
use herald_protocol::sockjs::{self, close_code};
use tokio::{sync::mpsc, time::Instant};

use super::{
    CloseSlot, Closer, INCOMING_QUEUE, OUTGOING_QUEUE, Service, SockJsConn, SockJsTransport, drain,
    http::{method_not_allowed, text},
};
use crate::{gateway::Principal, state::AppState};

/// Client messages read ahead of a handler that is slow to take them; beyond, the socket is
/// not read (TCP pushes back on the client).
const MAX_READ_AHEAD: usize = 256;

/// Whether a request asks for a WebSocket (an HTTP/1.1 `Upgrade: websocket`, or an HTTP/2
/// extended CONNECT).
pub(super) fn wants_upgrade(req: &Request) -> bool {
    if req.version() >= Version::HTTP_2 {
        return req.method() == Method::CONNECT;
    }
    header_has(req, header::UPGRADE, "websocket")
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Validates and accepts a WebSocket for one of the two transports.
pub(super) async fn upgrade(
    svc: Arc<Service>,
    state: AppState,
    principal: Option<Principal>,
    transport: SockJsTransport,
    req: Request,
) -> Response {
    let h2 = req.version() >= Version::HTTP_2;
    if !(req.method() == Method::GET || (h2 && req.method() == Method::CONNECT)) {
        return method_not_allowed("GET");
    }
    if !h2 {
        if !header_has(&req, header::UPGRADE, "websocket") {
            return text(
                StatusCode::BAD_REQUEST,
                "Can \"Upgrade\" only to \"WebSocket\".",
            );
        }
        if !header_has(&req, header::CONNECTION, "upgrade") {
            return text(
                StatusCode::BAD_REQUEST,
                "\"Connection\" must be \"Upgrade\".",
            );
        }
    }
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(e) => return text(e.status(), e.body_text()),
    };
    let guard = match state.connect(svc.options.count_as) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let max = state.config.limits.max_body_bytes;
    ws.read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            match svc.options.websocket_handler.clone() {
                Some(direct) if transport == SockJsTransport::WebSocket => {
                    run_direct(&svc, direct, state, principal, socket).await;
                }
                _ => run(svc, state, principal, transport, socket).await,
            }
            drop(guard);
        })
}

/// One session of the `websocket` transport run by a [`WebSocketHandler`]: `o`, the
/// handler, then the close the way the channel loop ends it.
///
/// [`WebSocketHandler`]: super::WebSocketHandler
async fn run_direct(
    svc: &Service,
    handler: super::WebSocketHandler,
    state: AppState,
    principal: Option<Principal>,
    socket: WebSocket,
) {
    let token = state.token.clone();
    let mut socket = SockJsSocket {
        socket,
        heartbeat: svc.options.heartbeat,
        last_out: Instant::now(),
        inbox: VecDeque::new(),
        out: String::new(),
        end: None,
        last_len: 0,
    };
    if socket.send(sockjs::OPEN.to_owned()).await.is_err() {
        return;
    }
    let mut socket = handler(state, principal, socket).await;
    let end = socket.end.take().unwrap_or_else(|| {
        if token.is_cancelled() {
            End::Close(close_code::GOING_AWAY, "Server shutting down".into())
        } else {
            End::Close(close_code::NORMAL, sockjs::NORMAL_REASON.into())
        }
    });
    let mut ws = socket.socket;
    match end {
        End::Gone => {}
        End::Broken => {
            let _ = ws
                .send(close_message(close_code::GO_AWAY, "Broken framing."))
                .await;
        }
        End::Close(code, reason) => {
            let left = (!socket.out.is_empty()).then(|| {
                socket.out.push(']');
                std::mem::take(&mut socket.out)
            });
            close_framed(&mut ws, left, code, &reason).await;
        }
    }
}

/// Ends a SockJS-framed WebSocket: the `a[...]` frame still to send, if any, the close frame
/// `c[code,"reason"]`, then a WebSocket close.
async fn close_framed(ws: &mut WebSocket, left: Option<String>, code: u16, reason: &str) {
    if let Some(frame) = left
        && send_text(ws, frame).await.is_err()
    {
        return;
    }
    if send_text(ws, sockjs::close_frame(code, reason))
        .await
        .is_err()
    {
        return;
    }
    let _ = ws.send(close_message(close_code::NORMAL, "")).await;
}

/// The WebSocket of a `websocket` session as a [`WebSocketHandler`](super::WebSocketHandler)
/// sees it: client messages out of the JSON frames, messages to the client gathered into one
/// `a[...]` frame per [`flush`](Self::flush), `h` after `heartbeat` of silence while the
/// handler waits in [`recv`](Self::recv).
pub(crate) struct SockJsSocket {
    socket: WebSocket,
    heartbeat: std::time::Duration,
    last_out: Instant,
    /// Client messages of a frame not handed out yet.
    inbox: VecDeque<String>,
    /// `a[` and the messages queued since the last flush, or empty.
    out: String,
    /// Set once the connection is gone or the client broke the framing.
    end: Option<End>,
    /// The length of the last frame sent: the next one starts with that much room.
    last_len: usize,
}

/// Most room reserved up front for an `a[...]` frame.
const MAX_RESERVE: usize = 64 * 1024;

/// What one wait in [`SockJsSocket::recv`] brought.
enum Woken {
    Frame(Option<Result<Message, axum::Error>>),
    Heartbeat,
}

impl SockJsSocket {
    /// The next client message; `None` once the connection is gone or the client sent a
    /// frame that is not JSON (then the service drops the connection). Sends `h` frames
    /// while it waits. Cancel-safe: a message read is kept for the next call.
    pub(crate) async fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            if self.end.is_some() {
                return None;
            }
            let woken = tokio::select! {
                m = self.socket.recv() => Woken::Frame(m),
                _ = tokio::time::sleep_until(self.last_out + self.heartbeat) => Woken::Heartbeat,
            };
            match woken {
                Woken::Frame(Some(Ok(Message::Text(t)))) => match sockjs::parse_websocket(&t) {
                    Ok(messages) => self.inbox.extend(messages),
                    Err(_) => self.end = Some(End::Broken),
                },
                Woken::Frame(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => {
                    self.end = Some(End::Gone);
                }
                Woken::Frame(Some(Ok(_))) => {}
                Woken::Heartbeat => {
                    if self.send(sockjs::HEARTBEAT.to_owned()).await.is_err() {
                        self.end = Some(End::Gone);
                    }
                }
            }
        }
    }

    /// Queues a message for the next [`flush`](Self::flush), escaped in place.
    pub(crate) fn push(&mut self, message: &str) {
        self.open_or_continue();
        sockjs::quote_into(&mut self.out, message);
    }

    /// Starts the `a[...]` frame (with room for one as long as the last) or adds a comma.
    fn open_or_continue(&mut self) {
        if self.out.is_empty() {
            self.out.reserve(self.last_len.min(MAX_RESERVE));
            self.out.push_str("a[");
        } else {
            self.out.push(',');
        }
    }

    /// Queues a message made of `head` (escaped here) and `escaped_tail` (escaped already, as
    /// by [`sockjs::escape_into`]: an encoding shared by many sockets).
    pub(crate) fn push_escaped(&mut self, head: &str, escaped_tail: &str) {
        self.open_or_continue();
        self.out.reserve(head.len() + escaped_tail.len() + 2);
        self.out.push('"');
        sockjs::escape_into(&mut self.out, head);
        self.out.push_str(escaped_tail);
        self.out.push('"');
    }

    /// Sends what was queued as one `a[...]` frame.
    pub(crate) async fn flush(&mut self) -> Result<(), ()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.out.push(']');
        let frame = std::mem::take(&mut self.out);
        self.last_len = frame.len();
        if self.send(frame).await.is_err() {
            self.end = Some(End::Gone);
            return Err(());
        }
        Ok(())
    }

    async fn send(&mut self, frame: String) -> Result<(), axum::Error> {
        send_text(&mut self.socket, frame).await?;
        self.last_out = Instant::now();
        Ok(())
    }
}

/// What the loop sends before ending.
enum End {
    /// The peer is gone: nothing.
    Gone,
    /// A SockJS close (or, raw, a WebSocket close with that code).
    Close(u16, String),
    /// Unparsable client data: a WebSocket close right away.
    Broken,
}

async fn run(
    svc: Arc<Service>,
    state: AppState,
    principal: Option<Principal>,
    transport: SockJsTransport,
    mut socket: WebSocket,
) {
    let raw = transport == SockJsTransport::RawWebSocket;
    let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let close = Arc::new(CloseSlot::default());
    let conn = SockJsConn {
        incoming: in_rx,
        outgoing: out_tx,
        closer: Closer(close.clone()),
        principal,
        transport,
    };
    let token = state.token.clone();
    let handler = (svc.handler)(state.clone(), conn);
    let handler_token = token.clone();
    state.tasks.spawn(async move {
        tokio::select! {
            _ = handler => {}
            _ = handler_token.cancelled() => {}
        }
    });
    let heartbeat = svc.options.heartbeat;
    if !raw
        && send_text(&mut socket, sockjs::OPEN.to_owned())
            .await
            .is_err()
    {
        return;
    }
    let mut last_out = Instant::now();
    // Client messages read but not yet taken by the handler.
    let mut read_ahead: VecDeque<String> = VecDeque::new();
    let mut handler_listens = true;
    let end = loop {
        let notified = close.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some((code, reason)) = close.get() {
            break End::Close(code, reason);
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                break End::Close(close_code::GOING_AWAY, "Server shutting down".into());
            }
            _ = &mut notified => continue,
            m = out_rx.recv() => {
                let Some(m) = m else {
                    // The handler is done.
                    let (code, reason) = close.set(close_code::NORMAL, sockjs::NORMAL_REASON);
                    break End::Close(code, reason);
                };
                let sent = if raw {
                    send_text(&mut socket, m).await
                } else {
                    let batch = drain(&mut out_rx, vec![m]);
                    send_text(&mut socket, sockjs::message_frame(&batch)).await
                };
                if sent.is_err() {
                    break End::Gone;
                }
                last_out = Instant::now();
            }
            permit = in_tx.reserve(), if handler_listens && !read_ahead.is_empty() => match permit {
                Ok(p) => {
                    if let Some(m) = read_ahead.pop_front() {
                        p.send(m);
                    }
                }
                Err(_) => {
                    handler_listens = false;
                    read_ahead.clear();
                }
            },
            msg = socket.recv(), if read_ahead.len() < MAX_READ_AHEAD => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) if raw => match String::from_utf8(b.to_vec()) {
                        Ok(t) => t,
                        Err(_) => continue,
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::Gone,
                    Some(Ok(_)) => continue,
                };
                if !handler_listens {
                    continue;
                }
                if raw {
                    read_ahead.push_back(text);
                } else {
                    match sockjs::parse_websocket(&text) {
                        Ok(messages) => read_ahead.extend(messages),
                        Err(_) => break End::Broken,
                    }
                }
            }
            _ = tokio::time::sleep_until(last_out + heartbeat) => {
                let sent = if raw {
                    socket.send(Message::Ping(Default::default())).await
                } else {
                    send_text(&mut socket, sockjs::HEARTBEAT.to_owned()).await
                };
                if sent.is_err() {
                    break End::Gone;
                }
                last_out = Instant::now();
            }
        }
    };
    // Ends the handler's `incoming`.
    drop(in_tx);
    match end {
        End::Gone => {}
        End::Broken => {
            let _ = socket
                .send(close_message(close_code::GO_AWAY, "Broken framing."))
                .await;
        }
        End::Close(code, reason) => {
            if raw {
                // What the handler queued before closing, then a WebSocket close.
                for m in drain(&mut out_rx, Vec::new()) {
                    if send_text(&mut socket, m).await.is_err() {
                        return;
                    }
                }
                let code = if valid_ws_close_code(code) {
                    code
                } else {
                    close_code::NORMAL
                };
                let _ = socket.send(close_message(code, &reason)).await;
            } else {
                let left = drain(&mut out_rx, Vec::new());
                let left = (!left.is_empty()).then(|| sockjs::message_frame(&left));
                close_framed(&mut socket, left, code, &reason).await;
            }
        }
    }
}

async fn send_text(socket: &mut WebSocket, s: String) -> Result<(), axum::Error> {
    socket.send(Message::Text(Utf8Bytes::from(s))).await
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// Codes a WebSocket close frame may carry (RFC 6455 7.4): SockJS's own (2010) may not.
fn valid_ws_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
