//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{error::ApiError, state::AppState};

/// The OpenAPI 3.1 document of the REST API.
const OPENAPI: &str = include_str!("openapi.json");

/// Routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.token.is_cancelled() {
        return ApiError::unavailable("shutting down").into_response();
    }
    let backend = if state.config.cluster.is_some() {
        "nats"
    } else if state.config.memory {
        "memory"
    } else {
        "sqlite"
    };
    match state.hub.ready() {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"status\":\"ready\",\"store\":\"ok\",\"backend\":\"{backend}\"}}"),
        )
            .into_response(),
        Err(e) => ApiError::unavailable(format!("{backend} store not ready: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.hub);
    text.push_str(&crate::webhooks::render_metrics(&state).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
