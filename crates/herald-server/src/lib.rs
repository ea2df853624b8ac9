//! Herald's HTTP server: the doors (REST publish, SSE, long polling, WebSocket JSON), the
//! gateway layer in front of them, health, metrics and OpenAPI, wired to one [`Hub`].
//!
//! [`run`] takes an already-bound listener and a [`CancellationToken`], so tests start many
//! servers in one process on port 0, and shutdown is explicit.
//!
//! # Layout
//! - [`config`]: the embedded `config.default.toml`, loading (file, env, flags) and validation.
//! - [`gateway`]: the [`gateway::Principal`] resolved once per request, API keys.
//! - [`error`]: `ApiError`, the one place problem+json responses are made.
//! - [`state`]: `AppState`, metrics, the connection limit.
//! - `rest`: publish and batch publish, topics list.
//! - `events`: GET events / subscribe, dispatching to `sse` or to the long poll.
//! - `sse`, `ws`: the streaming doors.
//! - `sockjs`: SockJS 0.3.3 services under a prefix (SPEC 6.3), and the protocol's test
//!   services when `sockjs.test_endpoints`.
//! - `demo`: the reference design's demo endpoints (SPEC 11).
//! - `inbound`: inbound webhook receivers `POST /api/v1/webhooks/{name}` (SPEC 7.2),
//!   authenticated by signature (GitHub, Standard Webhooks, generic HMAC).
//! - `conn`: the listener; its connections fail writes that stall (peers that stopped reading).
//! - `ops`: `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::Response,
    serve::ListenerExt as _,
};
use herald_core::{Hub, HubConfig, Log, LogOptions, MemoryLog};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

pub mod config;
mod conn;
mod demo;
pub mod error;
mod events;
pub mod gateway;
mod h1pub;
mod h1sse;
mod inbound;
mod ops;
mod rest;
mod sockjs;
mod sse;
pub mod state;
mod stomp;
pub mod webhooks;
mod ws;

pub use config::Config;

use crate::{error::ApiError, gateway::Principal, state::AppState};

/// How often retention and expired idempotency keys are swept.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct MakeUlid;

impl MakeRequestId for MakeUlid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// The whole application router for a state.
pub fn router(state: AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let body_limit = state.config.limits.max_body_bytes;
    let demo = if state.config.raw.demo.enabled {
        demo::router()
    } else {
        Router::new()
    };
    let sockjs_tests = if state.config.raw.sockjs.test_endpoints {
        sockjs::test_services(&state.config)
    } else {
        Router::new()
    };
    Router::new()
        .merge(rest::router())
        .merge(webhooks::router(&state.config))
        .merge(demo)
        .merge(sockjs_tests)
        .merge(events::router())
        .merge(ws::router())
        .merge(stomp::router(&state.config))
        .merge(ops::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        // `h1pub::serve` does these layers' work by hand for the plain publishes it serves
        // without hyper: a layer added here must be added there too.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gateway::principal_layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeUlid))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state
        .metrics
        .http_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    next.run(req).await
}

/// Opens the log the configuration asks for.
///
/// # Errors
/// When the SQLite store cannot be opened.
pub async fn open_log(config: &Config) -> anyhow::Result<Arc<dyn Log>> {
    let options = LogOptions {
        retention: config.retention.clone(),
        dedupe_window: config.dedupe_window,
    };
    if let Some(c) = &config.cluster {
        let opts = herald_nats::NatsOptions {
            stream: c.stream.clone(),
            replicas: c.replicas,
            credentials: c.credentials.clone(),
            tls_ca: c.tls_ca.clone(),
            lease: c.lease,
            ..herald_nats::NatsOptions::new(c.nats_url.clone())
        };
        let log = herald_nats::JetStreamLog::open(opts, options)
            .await
            .with_context(|| format!("joining the cluster through NATS at {}", c.nats_url))?;
        tracing::info!(url = %c.nats_url, stream = %c.stream, "cluster mode: the log is NATS JetStream");
        return Ok(Arc::new(log));
    }
    if config.memory {
        return Ok(Arc::new(MemoryLog::new(options)));
    }
    let log = herald_store::SqliteLog::open(&config.data_dir, config.durability, options)
        .await
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(log))
}

/// Builds the state for a configuration and an opened log.
///
/// # Errors
/// When the STOMP queues cannot be rebuilt from the log.
pub async fn build_state(
    config: Config,
    log: Arc<dyn Log>,
    token: CancellationToken,
) -> anyhow::Result<AppState> {
    let hub = Hub::new(
        log,
        HubConfig {
            subscriber_queue: config.limits.subscriber_queue,
            max_event_bytes: config.limits.max_event_bytes,
            max_batch: config.limits.max_batch,
        },
    );
    let tasks = TaskTracker::new();
    let queues = stomp::queue::Queues::start(hub.clone(), token.clone(), &tasks)
        .await
        .context("rebuilding STOMP queues from the log")?;
    let w = &config.webhooks;
    let dispatcher = herald_webhooks::Dispatcher::start(
        hub.webhooks(),
        herald_webhooks::Settings {
            timeout: w.timeout,
            retry_schedule: w.retry_schedule.clone(),
            allow_private_targets: w.allow_private_targets,
            disable_after: w.disable_after,
            concurrency_per_endpoint: w.concurrency_per_endpoint,
        },
        token.clone(),
        &tasks,
    );
    Ok(AppState::new(crate::state::Shared {
        dispatcher,
        hub,
        config: Arc::new(config),
        token,
        metrics: Arc::default(),
        anyone: Principal::anyone(),
        tasks,
        queues,
    }))
}

/// Serves until `token` is cancelled, then shuts down gracefully: stops accepting, ends every
/// stream, waits up to `server.shutdown_grace`, and closes (flushes) the log.
///
/// # Errors
/// When the store cannot be opened or the listener fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let log = open_log(&config).await?;
    if config.auth_keys.is_empty() {
        tracing::warn!("no authentication configured: every request is allowed");
    }
    let state = build_state(config, log.clone(), token.clone()).await?;
    let grace = state.config.shutdown_grace;
    let tasks = state.tasks.clone();
    tasks.spawn(maintain(state.hub.clone(), token.clone()));
    if let Some(addr) = state.config.stomp_tcp_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the STOMP TCP listener on {addr}"))?;
        tracing::info!(%addr, "STOMP over TCP listening");
        tasks.spawn(stomp::listen_tcp(state.clone(), l));
    }
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, memory = state.config.memory, "herald listening");
    let stall = write_stall(&state.config);
    let app = router(state.clone());
    // `tap_io` does nothing to the connection: axum implements `ConnectInfo<SocketAddr>` for
    // any listener wrapped in it, which keeps the client address available to handlers.
    let listener =
        conn::Listener::start(listener, stall, app.clone(), state, token.clone(), &tasks)
            .tap_io(|_| ());
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(token.clone().cancelled_owned());
    let outcome = tokio::select! {
        r = std::future::IntoFuture::into_future(serve) => r.context("serving HTTP"),
        _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "connections outlived the shutdown grace period");
            Ok(())
        }
    };
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "background tasks outlived the shutdown grace period"
        );
    }
    log.close().await.context("closing the store")?;
    tracing::info!("herald stopped");
    outcome
}

/// How long a write to a client may make no progress before its connection is dropped:
/// two of the longer keep-alive periods (SSE heartbeat, WebSocket ping interval). A peer
/// that accepted not one byte of two heartbeats or pings is gone or stalled (SPEC 6.1:
/// "closes peers that stop answering"); slower readers still make progress and stay.
fn write_stall(config: &Config) -> Duration {
    config.sse_heartbeat.max(config.ws_ping_interval) * 2
}

async fn maintain(hub: Hub, token: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = hub.maintain().await {
                    tracing::warn!(error = %e, "retention sweep failed");
                }
            }
        }
    }
}
