//! Inbound webhook receivers (SPEC 7.2): `POST /api/v1/webhooks/{name}` for each
//! `[[inbound]]`, authenticated by the request's signature instead of an API key.
//!
//! A request is handled in this order, so an unsigned caller learns nothing about the body
//! rules: read the raw body (at most `limits.max_inbound_body`, 413 beyond); verify the
//! signature over those exact bytes (constant-time; 401 problem+json when missing, wrong or,
//! for Standard Webhooks, outside the 5-minute timestamp tolerance); parse the body as JSON
//! (400 otherwise); derive the event type, the topic and the delivery id; publish with the
//! idempotency key `inbound:{name}:{delivery id}`. A first delivery answers `202` with the
//! receipt `{"id","topic","event","time"}`; a repeat inside `server.dedupe_window` answers
//! `200` with the same receipt and `"duplicate": true`.
//!
//! | kind | signature | event type | delivery id |
//! |---|---|---|---|
//! | `github` | `x-hub-signature-256` | `x-github-event` (400 without it), plus `.{action}` when the body has a string `action` | `x-github-delivery` |
//! | `standard` | `webhook-id`, `webhook-timestamp`, `webhook-signature` | the body's `type` when a string, else `message` | `webhook-id` |
//! | `hmac` | the configured header | `x-webhook-event` when present, else `message` | `x-webhook-id` or `webhook-id` when present |
//!
//! Without a delivery id the event is published without an idempotency key (no dedupe).
//! Event types are made valid for Herald (characters other than printable ASCII become `_`,
//! at most 128 bytes); in the topic, `{event}` becomes the type's dot-separated segments with
//! characters outside `[A-Za-z0-9_-]` replaced by `_` (`webhooks.github.pull_request.opened`).

use axum::{
    Json,
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{MethodRouter, post},
};
use bytes::Bytes;
use herald_core::{
    NewEvent, Topic,
    event::{DEFAULT_EVENT_TYPE, MAX_EVENT_TYPE_LEN, MAX_KEY_LEN, compact_json, now_ms},
};
use herald_protocol::webhook::{self, StandardHeaders, VerifyError};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Digest as _;

use crate::{
    config::{Config, InboundReceiver, InboundVerifier},
    error::{ApiError, ApiResult},
    rest::receipt,
    state::AppState,
};

/// The route. Its parameter is named `id` so that the outbound webhook API can add
/// `GET/PATCH/DELETE /api/v1/webhooks/{id}` on the same path (axum merges the methods of one
/// path; two different parameter names there would conflict).
pub(crate) const PATH: &str = "/api/v1/webhooks/{id}";
const PREFIX: &str = "/api/v1/webhooks/";

/// The POST handler of [`PATH`] (mounted by the outbound webhook router, which owns the
/// other methods of that path): the receivers' bodies are bounded by
/// `limits.max_inbound_body` instead of the general `limits.max_body_bytes`.
pub(crate) fn method_router(config: &Config) -> MethodRouter<AppState> {
    post(receive).layer(DefaultBodyLimit::max(config.limits.max_inbound_body))
}

/// The receiver a request path addresses, if any (for the gateway's exemption from API-key
/// auth: receivers authenticate by signature).
pub(crate) fn receiver_for_path<'a>(config: &'a Config, path: &str) -> Option<&'a InboundReceiver> {
    let name = path.strip_prefix(PREFIX)?;
    config.inbound.iter().find(|r| r.name == name)
}

/// What a verified request says about itself.
struct Delivery {
    event: String,
    id: Option<String>,
}

/// The fields of a JSON body the event type may come from.
#[derive(Deserialize, Default)]
struct Probe {
    #[serde(default)]
    action: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unauthorized(e: VerifyError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!("webhook signature rejected: {e}"),
    )
}

/// Verifies the signature over the raw body: 401 when it is missing or wrong.
fn verify(rx: &InboundReceiver, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    match &rx.verifier {
        InboundVerifier::Github(secret) => {
            let sig = header(headers, webhook::GITHUB_HEADER)
                .ok_or(VerifyError::MissingHeader(webhook::GITHUB_HEADER))
                .map_err(unauthorized)?;
            webhook::verify_github(secret, body, sig).map_err(unauthorized)
        }
        InboundVerifier::Standard(keys) => {
            let h =
                StandardHeaders::from_lookup(|name| header(headers, name)).map_err(unauthorized)?;
            let now = now_ms().div_euclid(1000);
            webhook::verify(&h, body, keys, now, webhook::DEFAULT_TOLERANCE).map_err(unauthorized)
        }
        InboundVerifier::Hmac {
            secret,
            header: name,
            encoding,
            prefix,
        } => {
            let sig = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("webhook signature rejected: missing `{name}` header"),
                    )
                })?;
            webhook::verify_hmac(secret, body, sig, *encoding, prefix).map_err(unauthorized)
        }
    }
}

/// The event type and delivery id of a verified request.
fn describe(rx: &InboundReceiver, headers: &HeaderMap, data: &RawValue) -> ApiResult<Delivery> {
    let probe = || serde_json::from_str::<Probe>(data.get()).unwrap_or_default();
    let as_string = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(match &rx.verifier {
        InboundVerifier::Github(_) => {
            let name = header(headers, "x-github-event")
                .ok_or_else(|| ApiError::bad_request("missing `x-github-event` header"))?;
            let event = match as_string(probe().action) {
                Some(action) => format!("{name}.{action}"),
                None => name.to_owned(),
            };
            Delivery {
                event,
                id: header(headers, "x-github-delivery").map(str::to_owned),
            }
        }
        InboundVerifier::Standard(_) => Delivery {
            event: as_string(probe().kind).unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned()),
            id: header(headers, webhook::HEADER_ID).map(str::to_owned),
        },
        InboundVerifier::Hmac { .. } => Delivery {
            event: header(headers, "x-webhook-event")
                .unwrap_or(DEFAULT_EVENT_TYPE)
                .to_owned(),
            id: header(headers, "x-webhook-id")
                .or_else(|| header(headers, webhook::HEADER_ID))
                .map(str::to_owned),
        },
    })
}

/// A valid Herald event type from whatever the sender called it: printable ASCII without
/// spaces (others become `_`), 1–128 bytes, `message` when empty.
pub(crate) fn event_type(raw: &str) -> String {
    if raw.trim().is_empty() {
        return DEFAULT_EVENT_TYPE.to_owned();
    }
    raw.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_EVENT_TYPE_LEN)
        .collect()
}

/// The event type as topic segments: split on `.`, characters outside `[A-Za-z0-9_-]`
/// become `_`, empty segments `_`.
pub(crate) fn topic_segments(event: &str) -> String {
    event
        .split('.')
        .map(|seg| {
            if seg.is_empty() {
                return "_".to_owned();
            }
            seg.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect::<Vec<String>>()
        .join(".")
}

/// `inbound:{name}:{delivery id}`; an id that would make the key longer than 255 bytes is
/// replaced by its SHA-256.
pub(crate) fn idempotency_key(name: &str, id: &str) -> String {
    let key = format!("inbound:{name}:{id}");
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("inbound:{name}:sha256:{hex}")
}

/// `POST /api/v1/webhooks/{name}`.
async fn receive(
    State(state): State<AppState>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let config = state.config.clone();
    let name = name.map(|Path(n)| n).unwrap_or_default();
    let Some(rx) = config.inbound.iter().find(|r| r.name == name) else {
        return Err(ApiError::not_found(format!(
            "no inbound webhook receiver named {name:?} (configure one with [[inbound]])"
        )));
    };
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is larger than limits.max_inbound_body")
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    if let Err(e) = verify(rx, &headers, &body) {
        tracing::debug!(receiver = %rx.name, detail = %e.detail, "inbound webhook refused");
        return Err(e);
    }
    let data: Box<RawValue> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); receivers accept application/json payloads"
        ))
    })?;
    let delivery = describe(rx, &headers, &data)?;
    let event = event_type(&delivery.event);
    let topic_text = rx.topic.replace("{event}", &topic_segments(&event));
    let topic = Topic::new(&topic_text).map_err(|e| {
        ApiError::unprocessable(format!(
            "event type {event:?} does not fit the receiver's topic template: {e}"
        ))
    })?;
    let key = delivery
        .id
        .as_deref()
        .map(|id| idempotency_key(&rx.name, id));
    let new =
        NewEvent::new(topic, Some(&event), compact_json(data), key).map_err(ApiError::from_body)?;
    let appended = state.hub.publish_one(new).await?;
    let mut out = receipt(&appended);
    if appended.duplicate {
        out["duplicate"] = serde_json::Value::Bool(true);
        return Ok((StatusCode::OK, Json(out)).into_response());
    }
    tracing::debug!(receiver = %rx.name, id = appended.event.id, "inbound webhook published");
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_become_valid() {
        assert_eq!(event_type("pull_request.opened"), "pull_request.opened");
        assert_eq!(event_type("a b\tc\u{e9}"), "a_b_c_");
        assert_eq!(event_type(""), "message");
        assert_eq!(event_type("   "), "message");
        assert_eq!(event_type(&"x".repeat(300)).len(), MAX_EVENT_TYPE_LEN);
        assert!(
            herald_core::event::validate_event_type(&event_type("é".repeat(200).as_str())).is_ok()
        );
    }

    #[test]
    fn topic_segments_keep_dots() {
        assert_eq!(topic_segments("pull_request.opened"), "pull_request.opened");
        assert_eq!(topic_segments("invoice:paid/v2"), "invoice_paid_v2");
        assert_eq!(topic_segments("a..b."), "a._.b._");
        assert_eq!(topic_segments(".x"), "_.x");
        assert!(Topic::new(&format!("webhooks.gh.{}", topic_segments("*.>.#"))).is_ok());
    }

    #[test]
    fn keys_fit() {
        assert_eq!(idempotency_key("gh", "abc"), "inbound:gh:abc");
        let long = idempotency_key("gh", &"x".repeat(400));
        assert!(long.starts_with("inbound:gh:sha256:") && long.len() <= MAX_KEY_LEN);
        assert_ne!(long, idempotency_key("gh", &"x".repeat(401)));
    }
}
