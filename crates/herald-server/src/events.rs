//! `GET /api/v1/topics/{pattern}/events` and `GET /api/v1/subscribe?topic=…`: one request
//! shape, answered as SSE (`Accept: text/event-stream`) or as a history page / long poll.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
    routing::get,
};
use herald_core::{Cursor, Item, Pattern};

use crate::{
    error::{ApiError, ApiResult},
    gateway::Principal,
    state::{AppState, Transport},
};

/// Routes of this door (the per-topic path is registered with the REST publish route).
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/subscribe", get(subscribe_many))
}

/// A parsed subscribe request.
pub(crate) struct StreamRequest {
    pub(crate) patterns: Vec<Pattern>,
    /// `after` (or `Last-Event-ID` for SSE); `None` when absent.
    pub(crate) cursor: Option<Cursor>,
    pub(crate) limit: usize,
    pub(crate) wait: Option<Duration>,
    /// SSE `retry:` in ms, when not `sse.retry` (the demo endpoints use 5000).
    pub(crate) retry_ms: Option<u64>,
}

/// Splits a query string into decoded pairs.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                crate::gateway::percent_decode(k),
                crate::gateway::percent_decode(v),
            )
        })
        .collect()
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

pub(crate) fn parse_request(
    state: &AppState,
    mut patterns: Vec<String>,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    sse: bool,
) -> ApiResult<StreamRequest> {
    let limits = &state.config.limits;
    let mut after = None;
    let mut limit = 100usize;
    let mut wait = None;
    for (k, v) in pairs {
        match k.as_str() {
            "topic" => patterns.push(v.clone()),
            "after" => after = Some(Cursor::parse(v).map_err(ApiError::from_url)?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid limit {v:?}: use a number from 1 to 1000"
                        ))
                    })?;
            }
            "wait" => {
                let max = limits.max_wait;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid wait {v:?}: use seconds"))
                    })?;
                if secs > max.as_secs_f64() {
                    return Err(ApiError::bad_request(format!(
                        "wait {v} is longer than the limit of {}s (limits.max_wait)",
                        max.as_secs_f64()
                    )));
                }
                wait = Some(Duration::from_secs_f64(secs));
            }
            _ => {}
        }
    }
    if sse
        && let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok())
        && !id.trim().is_empty()
    {
        // A reconnecting EventSource keeps the URL (with its original `after`) and sends
        // the newer position here: it wins.
        after = Some(Cursor::parse(id).map_err(ApiError::from_url)?);
    }
    if patterns.is_empty() {
        return Err(ApiError::bad_request(
            "no topic: pass one or more `topic=` parameters",
        ));
    }
    let max = limits.max_subscriptions_per_connection;
    if patterns.len() > max {
        return Err(ApiError::unprocessable(format!(
            "{} patterns, more than the limit of {max} (limits.max_subscriptions_per_connection)",
            patterns.len()
        )));
    }
    let patterns = patterns
        .iter()
        .map(|p| Pattern::new(p).map_err(ApiError::from_url))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamRequest {
        patterns,
        cursor: after,
        limit,
        wait,
        retry_ms: None,
    })
}

/// `GET /api/v1/topics/{pattern}/events`.
pub(crate) async fn topic_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(pattern): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pairs: Vec<(String, String)> = query_pairs(query.as_deref())
        .into_iter()
        .filter(|(k, _)| k != "topic")
        .collect();
    answer(&state, &principal, vec![pattern], &pairs, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/subscribe?topic=P&topic=Q`.
async fn subscribe_many(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    answer(&state, &principal, Vec::new(), &pairs, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    state: &AppState,
    principal: &Principal,
    patterns: Vec<String>,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let sse = wants_sse(headers);
    let req = parse_request(state, patterns, pairs, headers, sse)?;
    principal.check_subscribe(&req.patterns)?;
    if sse {
        crate::sse::stream(state, req)
    } else {
        poll(state, req).await
    }
}

/// History page or long poll (SPEC 5).
async fn poll(state: &AppState, req: StreamRequest) -> ApiResult<Response> {
    let hub = &state.hub;
    let after = match req.cursor {
        Some(Cursor::After(n)) => Some(n),
        Some(Cursor::Live) => Some(hub.head()),
        None => None,
    };
    let mut items: Vec<Item> = Vec::new();
    if let Some(n) = after {
        let floor = hub.floor(&req.patterns);
        let page = hub.history(&req.patterns, Some(n), req.limit).await?;
        if n < floor {
            let oldest = page.first().map(|e| e.id).unwrap_or(hub.head() + 1);
            items.push(Item::Truncated {
                requested: n,
                oldest,
            });
        }
        items.extend(page.into_iter().map(Item::Event));
    } else if req.wait.is_none() {
        let page = hub.history(&req.patterns, None, req.limit).await?;
        items.extend(page.into_iter().map(Item::Event));
    }
    let has_events = items.iter().any(|i| matches!(i, Item::Event(_)));
    if !has_events && let Some(wait) = req.wait.filter(|w| !w.is_zero()) {
        let _guard = state.connect(Transport::Poll)?;
        let start = after.unwrap_or_else(|| hub.head());
        let mut sub = hub.subscribe(req.patterns.clone(), Cursor::After(start));
        let token = state.token.clone();
        let limit = req.limit;
        tokio::select! {
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
            r = sub.recv_many(&mut items, limit) => { r?; }
        }
        state
            .metrics
            .events_out(Transport::Poll, items.len() as u64);
    }
    let next = items
        .iter()
        .rev()
        .find_map(|i| match i {
            Item::Event(e) => Some(e.id),
            Item::Truncated { .. } => None,
        })
        .or(after)
        .unwrap_or_else(|| hub.head());
    let pattern_text: Arc<str> = Arc::from(
        req.patterns
            .iter()
            .map(Pattern::as_str)
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut body = Vec::with_capacity(64 + items.len() * 128);
    body.extend_from_slice(b"{\"events\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match item {
            Item::Event(e) => body.extend_from_slice(&herald_protocol::event_json(e)),
            Item::Truncated { requested, oldest } => {
                let v = serde_json::json!({
                    "topic": &*pattern_text,
                    "event": "herald.truncated",
                    "data": {"requested": requested.to_string(), "oldest": oldest.to_string()},
                });
                body.extend_from_slice(v.to_string().as_bytes());
            }
        }
    }
    body.extend_from_slice(format!("],\"next\":\"{next}\"}}").as_bytes());
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from(body),
    )
        .into_response())
}
