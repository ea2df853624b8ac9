//! SockJS 0.3.3 (SPEC 6.3): a generic SockJS service mounted under a prefix, carrying
//! whatever its [`SessionHandler`] speaks (STOMP at `/ws`, echo for the protocol test
//! services).
//!
//! A handler sees one [`SockJsConn`] per SockJS session: messages in, messages out, and a
//! [`Closer`]. It runs in its own task (tracked by `state.tasks`, ended by `state.token`) and
//! should return once `incoming` yields `None` (the session is gone) or `outgoing` refuses a
//! message; returning closes the session with `c[1000,"Normal closure"]`.
//!
//! Routes under the prefix (the framing itself is in [`herald_protocol::sockjs`]):
//! - `GET <prefix>`, `<prefix>/`: `Welcome to SockJS!\n`. With [`SockJsOptions::upgrade`],
//!   a `GET <prefix>` asking for a WebSocket upgrade goes to that router instead (STOMP over
//!   plain WebSocket at `/ws` while SockJS lives under it).
//! - `<prefix>/info` (GET, OPTIONS), `<prefix>/iframe*.html`.
//! - `<prefix>/websocket`: a raw WebSocket, one message per text frame, no SockJS framing.
//! - `<prefix>/{server}/{session}/{transport}`: `websocket`, `xhr`, `xhr_send`,
//!   `xhr_streaming`, `eventsource`, `htmlfile`, `jsonp`, `jsonp_send`.
//!
//! Decisions where the protocol leaves room:
//! - Payload errors on `xhr_send`/`jsonp_send` and a missing `jsonp`/`htmlfile` callback
//!   are `500 text/plain` with the protocol's exact texts (`Broken JSON encoding.`, ...), not
//!   problem+json: SockJS clients and the protocol test suite expect them.
//! - A receiving request cut by the network ends its session at once (its handler sees
//!   `incoming` end); the next request opens a new session (`o`).
//! - Each HTTP session and each WebSocket session holds one `limits.max_connections` slot
//!   (of [`SockJsOptions::count_as`], `ws` by default) for its whole life.
//!
//! # Layout
//! - this file: options, the handler interface, routing, the test services.
//! - `session`: the session map entries, receiving requests, timeouts.
//! - `http`: the HTTP transports, CORS, cookies and caching headers.
//! - `websocket`: the `websocket` transport and the raw WebSocket.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::{Path, Request, State, rejection::PathRejection},
    response::Response,
    routing::{MethodRouter, any},
};
use futures::future::BoxFuture;
use herald_protocol::sockjs;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::{
    config::{Config, parse_duration},
    gateway::Principal,
    state::{AppState, Transport},
};

mod http;
mod session;
mod websocket;

use session::Session;
pub(crate) use websocket::SockJsSocket;

/// Where `iframe.html` loads the SockJS client from (jsDelivr, the CDN Spring points at).
pub(crate) const DEFAULT_SOCKJS_URL: &str =
    "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js";
/// Messages a client may have in flight towards a handler before `xhr_send` waits.
const INCOMING_QUEUE: usize = 64;
/// Messages a handler may queue towards a client before `outgoing.send` waits: while no
/// request is receiving, this is what the session buffers.
const OUTGOING_QUEUE: usize = 256;
/// Most messages put in one `a[...]` frame.
const MAX_BATCH: usize = 128;

/// One SockJS session as its handler sees it.
pub(crate) struct SockJsConn {
    /// Messages from the client, in order. `None` once the session is gone.
    pub(crate) incoming: mpsc::Receiver<String>,
    /// Messages to the client. Fails once the session is gone.
    pub(crate) outgoing: mpsc::Sender<String>,
    /// Closes the session with a code and a reason, after what `outgoing` already holds.
    pub(crate) closer: Closer,
    /// The principal of the request that opened the session, when the gateway resolved one.
    pub(crate) principal: Option<Principal>,
    /// Which transport opened the session.
    pub(crate) transport: SockJsTransport,
}

/// The transport a session was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SockJsTransport {
    /// `/{server}/{session}/websocket`: SockJS framing over one WebSocket.
    WebSocket,
    /// `<prefix>/websocket`: one message per WebSocket text frame.
    RawWebSocket,
    /// The HTTP transports (polling, streaming), one session across many requests.
    Http,
}

/// The per-session handler: runs once per session, in its own task.
pub(crate) type SessionHandler =
    Arc<dyn Fn(AppState, SockJsConn) -> BoxFuture<'static, ()> + Send + Sync>;

/// A handler that runs on the `websocket` transport's WebSocket itself (no task and no
/// channels between it and the socket, see [`SockJsSocket`]): it gets the opened socket and
/// hands it back when done; the service then closes it.
pub(crate) type WebSocketHandler = Arc<
    dyn Fn(AppState, Option<Principal>, SockJsSocket) -> BoxFuture<'static, SockJsSocket>
        + Send
        + Sync,
>;

/// Makes a [`WebSocketHandler`] from an async function.
pub(crate) fn websocket_handler<F, Fut>(f: F) -> WebSocketHandler
where
    F: Fn(AppState, Option<Principal>, SockJsSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SockJsSocket> + Send + 'static,
{
    Arc::new(move |state, principal, socket| Box::pin(f(state, principal, socket)))
}

/// Makes a [`SessionHandler`] from an async function.
pub(crate) fn handler<F, Fut>(f: F) -> SessionHandler
where
    F: Fn(AppState, SockJsConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |state, conn| Box::pin(f(state, conn)))
}

/// How a service behaves.
#[derive(Clone)]
pub(crate) struct SockJsOptions {
    /// Offer the `websocket` transports (`info` says so; off: they answer 404).
    pub(crate) websocket: bool,
    /// Set a `JSESSIONID` cookie on session requests (for sticky load balancers).
    pub(crate) cookie_needed: bool,
    /// An `h` frame after this much silence while a request is receiving.
    pub(crate) heartbeat: Duration,
    /// Streaming responses end after this many bytes of frames; the client reopens.
    pub(crate) response_limit: usize,
    /// A session without a receiving request for this long is closed and forgotten.
    pub(crate) disconnect_delay: Duration,
    /// Where `iframe.html` loads the SockJS client from.
    pub(crate) sockjs_url: String,
    /// Serves `GET <prefix>` requests that ask for a WebSocket upgrade; `None`: they get the
    /// greeting like any other `GET <prefix>`.
    pub(crate) upgrade: Option<MethodRouter<AppState>>,
    /// The transport whose `limits.max_connections` slot (and metrics gauge) each session
    /// holds.
    pub(crate) count_as: Transport,
    /// Runs sessions of the `websocket` transport (SockJS framing) on the socket itself
    /// instead of through the [`SessionHandler`]'s channels: the same protocol for the
    /// client, one task less and no copies per message. `None`: the session handler.
    pub(crate) websocket_handler: Option<WebSocketHandler>,
}

impl SockJsOptions {
    /// `[sockjs]` of the configuration: WebSocket on, no cookie, no upgrade router, sessions
    /// counted as `ws` connections.
    pub(crate) fn from_config(config: &Config) -> Self {
        let s = &config.raw.sockjs;
        // Config::validate checked these keys; the fallbacks are the documented defaults.
        let heartbeat = parse_duration(&s.heartbeat)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(25));
        let disconnect_delay =
            parse_duration(&s.disconnect_delay).unwrap_or(Duration::from_secs(5));
        Self {
            websocket: true,
            cookie_needed: false,
            heartbeat,
            response_limit: usize::try_from(s.response_limit)
                .unwrap_or(usize::MAX)
                .max(1),
            disconnect_delay,
            sockjs_url: DEFAULT_SOCKJS_URL.to_owned(),
            upgrade: None,
            count_as: Transport::Ws,
            websocket_handler: None,
        }
    }
}

/// A close requested by a handler (or implied by its end), shared with whoever is writing
/// to the client.
#[derive(Default)]
pub(crate) struct CloseSlot {
    reason: Mutex<Option<(u16, String)>>,
    /// Wakes the writer (the receiving request or the WebSocket loop).
    notify: Notify,
}

impl CloseSlot {
    fn get(&self) -> Option<(u16, String)> {
        self.reason.lock().clone()
    }

    /// Records a close unless one is recorded; returns the one that holds.
    fn set(&self, code: u16, reason: &str) -> (u16, String) {
        let held = self
            .reason
            .lock()
            .get_or_insert_with(|| (code, reason.to_owned()))
            .clone();
        self.notify.notify_one();
        held
    }
}

/// Closes a session (see [`SockJsConn::closer`]).
#[derive(Clone)]
pub(crate) struct Closer(Arc<CloseSlot>);

impl Closer {
    /// Closes the session with `code` and `reason` once the messages already sent are out:
    /// the client gets `c[code,"reason"]`, later requests on the session get it again, and
    /// the session stops accepting messages. Only the first close counts.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.0.set(code, reason);
    }
}

/// A SockJS service: its options, handler and sessions.
struct Service {
    handler: SessionHandler,
    options: SockJsOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    iframe: String,
    etag: String,
}

/// The routes of a SockJS service under `prefix` (`"/ws"`, `"/echo"`: a leading slash and no
/// trailing one).
///
/// # Panics
/// When `prefix` does not start with `/`, ends with `/`, or its routes overlap ones already
/// in the router it is merged into (start-up wiring mistakes).
pub(crate) fn service(
    prefix: &str,
    handler: SessionHandler,
    options: SockJsOptions,
) -> Router<AppState> {
    assert!(
        prefix.starts_with('/') && !prefix.ends_with('/'),
        "a SockJS prefix starts with / and does not end with one: {prefix:?}"
    );
    let iframe = sockjs::iframe_page(&options.sockjs_url);
    let etag = sockjs::etag(&iframe);
    let svc = Arc::new(Service {
        handler,
        options,
        sessions: Mutex::new(HashMap::new()),
        iframe,
        etag,
    });
    let (a, b, c, d) = (svc.clone(), svc.clone(), svc.clone(), svc);
    Router::new()
        .route(
            prefix,
            any(move |State(state): State<AppState>, req: Request| {
                let svc = a.clone();
                async move { svc.greeting(state, req, true).await }
            }),
        )
        .route(
            &format!("{prefix}/"),
            any(move |State(state): State<AppState>, req: Request| {
                let svc = b.clone();
                async move { svc.greeting(state, req, false).await }
            }),
        )
        .route(
            &format!("{prefix}/{{name}}"),
            any(
                move |State(state): State<AppState>,
                      principal: Option<Extension<Principal>>,
                      path: Result<Path<String>, PathRejection>,
                      req: Request| {
                    let svc = c.clone();
                    async move {
                        let Ok(Path(name)) = path else {
                            return http::not_found();
                        };
                        svc.top(state, principal.map(|p| p.0), &name, req).await
                    }
                },
            ),
        )
        .route(
            &format!("{prefix}/{{server}}/{{session}}/{{transport}}"),
            any(
                move |State(state): State<AppState>,
                      principal: Option<Extension<Principal>>,
                      path: Result<Path<(String, String, String)>, PathRejection>,
                      req: Request| {
                    let svc = d.clone();
                    async move {
                        let Ok(Path((server, session, transport))) = path else {
                            return http::not_found();
                        };
                        if !sockjs::valid_id(&server) || !sockjs::valid_id(&session) {
                            return http::not_found();
                        }
                        let principal = principal.map(|p| p.0);
                        svc.transport(state, principal, session, &transport, req)
                            .await
                    }
                },
            ),
        )
}

impl Service {
    async fn greeting(self: Arc<Self>, state: AppState, req: Request, root: bool) -> Response {
        if root
            && let Some(upgrade) = &self.options.upgrade
            && websocket::wants_upgrade(&req)
        {
            use tower::ServiceExt as _;
            let svc = upgrade.clone().with_state(state);
            return match svc.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
        }
        http::greeting(&req)
    }

    /// `<prefix>/{name}`: `info`, the iframe page, the raw WebSocket.
    async fn top(
        self: Arc<Self>,
        state: AppState,
        principal: Option<Principal>,
        name: &str,
        req: Request,
    ) -> Response {
        match name {
            "info" => http::info(&self.options, &req),
            "websocket" if self.options.websocket => {
                websocket::upgrade(self, state, principal, SockJsTransport::RawWebSocket, req).await
            }
            name if sockjs::is_iframe_path(name) => http::iframe(&self.iframe, &self.etag, &req),
            _ => http::not_found(),
        }
    }

    /// `<prefix>/{server}/{session}/{transport}`.
    async fn transport(
        self: Arc<Self>,
        state: AppState,
        principal: Option<Principal>,
        session: String,
        transport: &str,
        req: Request,
    ) -> Response {
        match transport {
            "websocket" if self.options.websocket => {
                websocket::upgrade(self, state, principal, SockJsTransport::WebSocket, req).await
            }
            "xhr" | "xhr_streaming" | "eventsource" | "htmlfile" | "jsonp" => {
                http::receive(self, state, principal, session, transport, req).await
            }
            "xhr_send" | "jsonp_send" => http::send(self, state, session, transport, req).await,
            _ => http::not_found(),
        }
    }

    fn remove(&self, session: &Arc<Session>) {
        let mut map = self.sessions.lock();
        if map
            .get(session.id())
            .is_some_and(|held| Arc::ptr_eq(held, session))
        {
            map.remove(session.id());
        }
    }
}

/// The SockJS protocol test services at the root (`sockjs.test_endpoints`): `/echo`,
/// `/close`, `/disabled_websocket_echo`, `/cookie_needed_echo`.
pub(crate) fn test_services(config: &Config) -> Router<AppState> {
    let base = SockJsOptions::from_config(config);
    Router::new()
        .merge(service("/echo", handler(echo), base.clone()))
        .merge(service("/close", handler(close), base.clone()))
        .merge(service(
            "/disabled_websocket_echo",
            handler(echo),
            SockJsOptions {
                websocket: false,
                ..base.clone()
            },
        ))
        .merge(service(
            "/cookie_needed_echo",
            handler(echo),
            SockJsOptions {
                cookie_needed: true,
                ..base
            },
        ))
}

/// Sends every message back.
async fn echo(_: AppState, mut conn: SockJsConn) {
    tracing::debug!(
        transport = ?conn.transport,
        authenticated = conn.principal.is_some(),
        "sockjs echo session"
    );
    while let Some(m) = conn.incoming.recv().await {
        if conn.outgoing.send(m).await.is_err() {
            break;
        }
    }
}

/// Closes every session at once with `c[3000,"Go away!"]`.
async fn close(_: AppState, conn: SockJsConn) {
    conn.closer.close(sockjs::close_code::GO_AWAY, "Go away!");
}

/// Takes what is queued in `rx` without waiting, up to [`MAX_BATCH`] messages in all.
fn drain(rx: &mut mpsc::Receiver<String>, mut into: Vec<String>) -> Vec<String> {
    while into.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(m) => into.push(m),
            Err(_) => break,
        }
    }
    into
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_coexist_with_other_routes_under_the_prefix() {
        let config = Config::defaults().unwrap();
        let mut options = SockJsOptions::from_config(&config);
        options.upgrade = Some(axum::routing::get(|| async { "upgraded" }));
        // The demo's `/ws/chat` and SockJS under `/ws` share the prefix.
        let _router: Router<AppState> = Router::new()
            .merge(crate::demo::router())
            .merge(service("/ws", handler(echo), options))
            .merge(test_services(&config));
    }

    async fn state() -> AppState {
        let config = Config::defaults().unwrap();
        let log = herald_core::MemoryLog::new(herald_core::LogOptions {
            retention: config.retention.clone(),
            dedupe_window: config.dedupe_window,
        });
        crate::build_state(
            config,
            Arc::new(log),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    async fn body_of(router: &Router, req: Request) -> (axum::http::StatusCode, String) {
        use tower::ServiceExt as _;
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn upgrade_requests_on_the_prefix_go_to_the_upgrade_router() {
        let state = state().await;
        let mut options = SockJsOptions::from_config(&state.config);
        options.upgrade = Some(axum::routing::get(|| async { "upgraded" }));
        let router = service("/ws", handler(echo), options).with_state(state);
        let get = |path: &str| Request::get(path).body(axum::body::Body::empty()).unwrap();

        let mut req = get("/ws");
        req.headers_mut()
            .insert("upgrade", axum::http::HeaderValue::from_static("websocket"));
        req.headers_mut().insert(
            "connection",
            axum::http::HeaderValue::from_static("Upgrade"),
        );
        assert_eq!(body_of(&router, req).await.1, "upgraded");
        // Without the header, and on `/ws/`: the greeting.
        assert_eq!(body_of(&router, get("/ws")).await.1, sockjs::WELCOME);
        let mut req = get("/ws/");
        req.headers_mut()
            .insert("upgrade", axum::http::HeaderValue::from_static("websocket"));
        assert_eq!(body_of(&router, req).await.1, sockjs::WELCOME);
        let (status, info) = body_of(&router, get("/ws/info")).await;
        assert_eq!(status, axum::http::StatusCode::OK);
        assert!(info.contains("\"origins\":[\"*:*\"]"), "{info}");
    }

    #[test]
    #[should_panic(expected = "a SockJS prefix")]
    fn prefix_must_not_end_with_a_slash() {
        let config = Config::defaults().unwrap();
        let _ = service("/ws/", handler(echo), SockJsOptions::from_config(&config));
    }
}
