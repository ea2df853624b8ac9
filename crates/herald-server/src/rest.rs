//! REST door: publish one event, publish a batch (all or nothing), list topics.

use std::collections::HashMap;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use herald_core::{Appended, NewEvent, Topic, event::compact_json};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::{ApiError, ApiResult},
    gateway::Principal,
    state::AppState,
};

/// Routes of this door.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/topics/{topic}/events",
            post(publish).get(crate::events::topic_events),
        )
        .route("/api/v1/events", post(publish_batch))
        .route("/api/v1/topics", get(list_topics))
}

/// Checks the media type and reads the body, mapping every failure to problem+json.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Bytes> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send the body as application/json (got {:?})", ct),
        ));
    }
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is larger than limits.max_body_bytes")
        } else {
            ApiError::new(status, e.body_text())
        }
    })
}

type Fields = HashMap<String, Box<RawValue>>;

fn str_field(fields: &Fields, name: &str) -> ApiResult<Option<String>> {
    match fields.get(name) {
        None => Ok(None),
        Some(v) => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| ApiError::unprocessable(format!("`{name}` must be a string"))),
    }
}

/// Builds a [`NewEvent`] from a JSON object's fields; `topic` comes from the URL for a
/// single publish, from the object for a batch.
pub(crate) fn new_event(mut fields: Fields, topic: Option<Topic>) -> ApiResult<NewEvent> {
    let topic = match topic {
        Some(t) => t,
        None => {
            let t = str_field(&fields, "topic")?
                .ok_or_else(|| ApiError::unprocessable("each event needs a `topic`"))?;
            Topic::new(&t).map_err(ApiError::from_body)?
        }
    };
    let event = str_field(&fields, "event")?;
    let key = str_field(&fields, "key")?;
    let data = fields
        .remove("data")
        .ok_or_else(|| ApiError::unprocessable("`data` is required (any JSON value)"))?;
    NewEvent::new(topic, event.as_deref(), compact_json(data), key).map_err(ApiError::from_body)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(format!("unexpected JSON shape: {e}"))
        } else {
            ApiError::bad_request(format!("malformed JSON: {e}"))
        }
    })
}

/// [`receipt`] as JSON text, written directly (the single publish's hot path): the same
/// bytes serde_json writes for it (keys in order, strings escaped by serde_json).
fn receipt_text(a: &Appended) -> String {
    let ev = &a.event;
    let mut out = Vec::with_capacity(96 + ev.topic.as_str().len() + ev.event.len());
    out.extend_from_slice(b"{\"event\":");
    let _ = serde_json::to_writer(&mut out, &*ev.event);
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(ev.id.to_string().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(ev.time_rfc3339().as_bytes());
    out.extend_from_slice(b"\",\"topic\":");
    let _ = serde_json::to_writer(&mut out, ev.topic.as_str());
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn receipt(a: &Appended) -> serde_json::Value {
    serde_json::json!({
        "id": a.event.id.to_string(),
        "topic": a.event.topic.as_str(),
        "event": &*a.event.event,
        "time": a.event.time_rfc3339(),
    })
}

/// `POST /api/v1/topics/{topic}/events`.
async fn publish(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    publish_one(&state, &principal, &topic, &headers, body).await
}

/// The single publish, for this route and for the HTTP/1.1 fast path (`h1pub`), which
/// serves the same requests without hyper and axum's routing.
pub(crate) async fn publish_one(
    state: &AppState,
    principal: &Principal,
    topic: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let topic = Topic::new(topic).map_err(ApiError::from_url)?;
    principal.check_publish(&topic)?;
    let body = json_body(headers, body)?;
    let fields: Fields = parse_json(&body)?;
    let new = new_event(fields, Some(topic))?;
    let appended = state.hub.publish_one(new).await?;
    let mut resp = (
        StatusCode::CREATED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        receipt_text(&appended),
    )
        .into_response();
    if appended.duplicate {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// `POST /api/v1/events`: all or nothing.
async fn publish_batch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = json_body(&headers, body)?;
    let items: Vec<Fields> = parse_json(&body)?;
    let limit = state.config.limits.max_batch;
    if items.len() > limit {
        return Err(ApiError::too_large(format!(
            "batch has {} events, more than the limit of {limit} (limits.max_batch)",
            items.len()
        )));
    }
    let mut batch = Vec::with_capacity(items.len());
    for (i, fields) in items.into_iter().enumerate() {
        let ev = new_event(fields, None).map_err(|mut e| {
            e.detail = format!("event [{i}]: {}", e.detail);
            e
        })?;
        principal.check_publish(&ev.topic).map_err(|mut e| {
            e.detail = format!("event [{i}]: {}", e.detail);
            e
        })?;
        batch.push(ev);
    }
    let appended = state.hub.publish(batch).await?;
    let out: Vec<serde_json::Value> = appended.iter().map(receipt).collect();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize)]
struct TopicsQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /api/v1/topics?prefix=`.
async fn list_topics(
    State(state): State<AppState>,
    query: Result<Query<TopicsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let topics = state.hub.topics(&q.prefix).await?;
    let out: Vec<serde_json::Value> = topics
        .iter()
        .map(|t| {
            serde_json::json!({
                "topic": t.topic.as_str(),
                "last_id": t.last_id.to_string(),
                "count": t.count,
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_core::{Appended, Event, NewEvent, Topic};

    /// The single publish's receipt, written by hand, is what serde_json writes for the
    /// receipt object.
    #[test]
    fn receipt_text_is_the_receipt_object() {
        for (topic, event) in [("orders.eu", "message"), ("a-b_c.d", "order.created:v1")] {
            let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
            let new = NewEvent::new(Topic::new(topic).unwrap(), Some(event), data, None).unwrap();
            let a = Appended {
                event: Arc::new(Event::from_new(42, new, 1_764_000_000_123)),
                duplicate: false,
            };
            assert_eq!(super::receipt_text(&a), super::receipt(&a).to_string());
        }
    }
}
