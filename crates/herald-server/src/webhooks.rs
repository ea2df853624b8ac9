//! The outbound webhook API (SPEC 7.1): endpoint subscriptions and their deliveries.
//!
//! Endpoints and deliveries live in the log ([`herald_core::Webhooks`]); the dispatcher
//! (`herald-webhooks`) sends them. Every route here needs an admin principal.
//!
//! Decisions where the SPEC is silent (also in docs/protocols.md):
//! - `GET /api/v1/webhooks` answers `{"webhooks": [...]}`; an endpoint is shown with its
//!   `secret` (HMAC endpoints; admins only) or its `public_key` (ed25519 endpoints, whose
//!   private key never leaves the server).
//! - `PATCH` with `"secret"` rotates to that secret, `POST .../secret/rotate` to a generated
//!   one; the previous secret keeps signing (both signatures sent) for 24 hours.
//! - Delivery ids are decimal strings, increasing; `after` pages by them.
//! - Re-enabling an endpoint (`"enabled": true`) clears the reason it was disabled and its
//!   failure streak; its pending deliveries resume.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use herald_core::{
    Endpoint, Pattern,
    event::{now_ms, parse_rfc3339_ms, rfc3339_ms, validate_event_type},
    webhook::{DeliveryRecord, NewDelivery, Signing, Status},
};
use herald_protocol::webhook::{MAX_SECRET_BYTES, MIN_SECRET_BYTES, Secret, SigningKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{ApiError, ApiResult},
    gateway::Principal,
    inbound,
    state::AppState,
};

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Most endpoint patterns, event types and custom headers.
const MAX_LIST: usize = 100;
/// Longest URL and description.
const MAX_TEXT: usize = 2048;
/// Deliveries per page by default and at most.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// Headers an endpoint may not set (Herald sets them).
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-webhook-event",
    "x-hub-signature-256",
    "transfer-encoding",
    "connection",
];

pub(crate) fn router(config: &crate::config::Config) -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        // The same path as the inbound receivers' POST (see `inbound::PATH`).
        .route(
            inbound::PATH,
            get(read)
                .patch(update)
                .delete(remove)
                .merge(inbound::method_router(config)),
        )
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery}/retry",
            post(retry),
        )
        .route("/api/v1/webhooks/{id}/recover", post(recover))
        .route("/api/v1/webhooks/{id}/test", post(test))
        .route("/api/v1/webhooks/{id}/secret/rotate", post(rotate))
}

fn admin(p: &Principal) -> ApiResult<()> {
    if p.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "managing webhooks needs an admin key (admin = true)",
        ))
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is larger than limits.max_body_bytes")
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(format!("unexpected JSON shape: {e}"))
        } else {
            ApiError::bad_request(format!("malformed JSON: {e}"))
        }
    })
}

/// The API view of an endpoint.
fn view(e: &Endpoint) -> Value {
    let mut v = json!({
        "id": e.id,
        "url": e.url,
        "topics": e.topics,
        "events": e.events,
        "description": e.description,
        "headers": e.headers,
        "rate_limit": e.rate_limit,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "signing": match e.signing { Signing::Hmac => "hmac", Signing::Ed25519 => "ed25519" },
        "created": rfc3339_ms(e.created_ms),
        "updated": rfc3339_ms(e.updated_ms),
    });
    match e.signing {
        Signing::Hmac => v["secret"] = json!(e.secret),
        Signing::Ed25519 => {
            if let Ok(k) = SigningKey::parse(&e.secret) {
                v["public_key"] = json!(k.public_key().to_whpk());
            }
        }
    }
    if let (Some(_), Some(until)) = (&e.previous_secret, e.previous_until_ms)
        && until > now_ms()
    {
        v["previous_secret_expires"] = json!(rfc3339_ms(until));
    }
    v
}

/// A URL without its user name and password (for logs).
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => String::from("(unparsable)"),
    }
}

fn check_url(url: &str) -> ApiResult<()> {
    if url.len() > MAX_TEXT {
        return Err(ApiError::unprocessable("`url` is too long"));
    }
    let u = reqwest::Url::parse(url)
        .map_err(|e| ApiError::unprocessable(format!("`url` {url:?} is not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(ApiError::unprocessable(format!(
            "`url` {url:?} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(())
}

fn check_topics(topics: &[String]) -> ApiResult<()> {
    if topics.is_empty() || topics.len() > MAX_LIST {
        return Err(ApiError::unprocessable(format!(
            "`topics` needs 1 to {MAX_LIST} patterns"
        )));
    }
    for t in topics {
        Pattern::new(t).map_err(ApiError::from_body)?;
    }
    Ok(())
}

fn check_events(events: &[String]) -> ApiResult<()> {
    if events.len() > MAX_LIST {
        return Err(ApiError::unprocessable(format!(
            "`events` takes at most {MAX_LIST} types"
        )));
    }
    for e in events {
        validate_event_type(e).map_err(ApiError::from_body)?;
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>) -> ApiResult<()> {
    if headers.len() > MAX_LIST {
        return Err(ApiError::unprocessable(format!(
            "`headers` takes at most {MAX_LIST} entries"
        )));
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ApiError::unprocessable(format!("{k:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "header {k:?} is set by Herald and cannot be overridden"
            )));
        }
        HeaderValue::from_str(v)
            .map_err(|_| ApiError::unprocessable(format!("header {k:?} has an invalid value")))?;
    }
    Ok(())
}

fn check_rate(rate: Option<u32>) -> ApiResult<()> {
    if rate == Some(0) {
        return Err(ApiError::unprocessable(
            "`rate_limit` must be at least 1 request per second (leave it out for none)",
        ));
    }
    Ok(())
}

/// A secret given by the client, checked against the endpoint's signing kind.
fn given_secret(signing: Signing, s: &str) -> ApiResult<String> {
    match signing {
        Signing::Hmac => {
            let k =
                Secret::parse(s).map_err(|e| ApiError::unprocessable(format!("`secret`: {e}")))?;
            let n = k.key().len();
            if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
                return Err(ApiError::unprocessable(format!(
                    "`secret` must be whsec_ + base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes (this one has {n})"
                )));
            }
            Ok(k.to_whsec())
        }
        Signing::Ed25519 => SigningKey::parse(s)
            .map(|k| k.to_whsk())
            .map_err(|e| ApiError::unprocessable(format!("`secret` (a whsk_ key): {e}"))),
    }
}

fn generated_secret(signing: Signing) -> ApiResult<String> {
    match signing {
        Signing::Hmac => Secret::generate()
            .map(|s| s.to_whsec())
            .map_err(ApiError::internal),
        Signing::Ed25519 => SigningKey::generate()
            .map(|k| k.to_whsk())
            .map_err(ApiError::internal),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    topics: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    secret: Option<String>,
    description: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    rate_limit: Option<u32>,
    #[serde(default)]
    signing: Signing,
    enabled: Option<bool>,
}

/// `POST /api/v1/webhooks`.
async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    admin(&principal)?;
    let b: CreateBody = json_body(body)?;
    check_url(&b.url)?;
    check_topics(&b.topics)?;
    check_events(&b.events)?;
    check_headers(&b.headers)?;
    check_rate(b.rate_limit)?;
    let description = b.description.unwrap_or_default();
    if description.len() > MAX_TEXT {
        return Err(ApiError::unprocessable("`description` is too long"));
    }
    let secret = match &b.secret {
        Some(s) => given_secret(b.signing, s)?,
        None => generated_secret(b.signing)?,
    };
    let now = now_ms();
    let endpoint = Endpoint {
        id: format!("wh_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
        url: b.url,
        topics: b.topics,
        events: b.events,
        description,
        headers: b.headers,
        rate_limit: b.rate_limit,
        enabled: b.enabled.unwrap_or(true),
        disabled_reason: None,
        signing: b.signing,
        secret,
        previous_secret: None,
        previous_until_ms: None,
        failing_since_ms: None,
        created_ms: now,
        updated_ms: now,
    };
    let stored = state.hub.webhooks().create(endpoint).await?;
    tracing::info!(endpoint = %stored.id, url = %redacted(&stored.url), "webhook endpoint created");
    Ok((StatusCode::CREATED, Json(view(&stored))).into_response())
}

/// `GET /api/v1/webhooks`.
async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    let all: Vec<Value> = state.hub.webhooks().list().iter().map(view).collect();
    Ok(Json(json!({ "webhooks": all })))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook endpoint {id:?}"))
}

fn existing(state: &AppState, id: &str) -> ApiResult<Endpoint> {
    state.hub.webhooks().get(id).ok_or_else(|| not_found(id))
}

/// `GET /api/v1/webhooks/{id}`.
async fn read(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    Ok(Json(view(&existing(&state, &id)?)))
}

/// A field that may be absent, `null` or a value.
fn patch_field<T: for<'de> Deserialize<'de>>(
    body: &serde_json::Map<String, Value>,
    name: &str,
) -> ApiResult<Option<T>> {
    match body.get(name) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::unprocessable(format!("`{name}`: {e}"))),
    }
}

const PATCH_FIELDS: &[&str] = &[
    "url",
    "topics",
    "events",
    "description",
    "headers",
    "rate_limit",
    "enabled",
    "secret",
];

/// `PATCH /api/v1/webhooks/{id}`: any of the creation fields, `enabled`, and `secret`
/// (a rotation).
async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    let body: serde_json::Map<String, Value> = json_body(body)?;
    if let Some(k) = body.keys().find(|k| !PATCH_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::unprocessable(format!(
            "unknown field `{k}` (can change: {})",
            PATCH_FIELDS.join(", ")
        )));
    }
    let current = existing(&state, &id)?;
    let url: Option<String> = patch_field(&body, "url")?;
    if let Some(u) = &url {
        check_url(u)?;
    }
    let topics: Option<Vec<String>> = patch_field(&body, "topics")?;
    if let Some(t) = &topics {
        check_topics(t)?;
    }
    let events: Option<Vec<String>> = patch_field(&body, "events")?;
    if let Some(e) = &events {
        check_events(e)?;
    }
    let description: Option<String> =
        patch_field::<Option<String>>(&body, "description")?.map(Option::unwrap_or_default);
    if description.as_ref().is_some_and(|d| d.len() > MAX_TEXT) {
        return Err(ApiError::unprocessable("`description` is too long"));
    }
    let headers: Option<BTreeMap<String, String>> = patch_field(&body, "headers")?;
    if let Some(h) = &headers {
        check_headers(h)?;
    }
    let rate_given = body.contains_key("rate_limit");
    let rate: Option<u32> = patch_field::<Option<u32>>(&body, "rate_limit")?.flatten();
    check_rate(rate)?;
    let enabled: Option<bool> = patch_field(&body, "enabled")?;
    let secret: Option<String> = patch_field::<String>(&body, "secret")?
        .map(|s| given_secret(current.signing, &s))
        .transpose()?;
    let now = now_ms();
    let changed = state
        .hub
        .webhooks()
        .modify(
            &id,
            Box::new(move |e| {
                if let Some(v) = url {
                    e.url = v;
                }
                if let Some(v) = topics {
                    e.topics = v;
                }
                if let Some(v) = events {
                    e.events = v;
                }
                if let Some(v) = description {
                    e.description = v;
                }
                if let Some(v) = headers {
                    e.headers = v;
                }
                if rate_given {
                    e.rate_limit = rate;
                }
                if let Some(on) = enabled {
                    if on && !e.enabled {
                        e.disabled_reason = None;
                        e.failing_since_ms = None;
                    }
                    e.enabled = on;
                }
                if let Some(s) = secret {
                    rotate_to(e, s, now);
                }
                e.updated_ms = now;
            }),
        )
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&changed)))
}

/// A new secret; the old one keeps signing for [`ROTATION_OVERLAP`].
fn rotate_to(e: &mut Endpoint, secret: String, now: i64) {
    if secret == e.secret {
        return;
    }
    let old = std::mem::replace(&mut e.secret, secret);
    e.previous_secret = Some(old);
    e.previous_until_ms =
        Some(now.saturating_add(i64::try_from(ROTATION_OVERLAP.as_millis()).unwrap_or(0)));
}

/// `POST /api/v1/webhooks/{id}/secret/rotate`: a generated secret (body may name one as
/// `{"secret": "..."}`).
async fn rotate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        secret: Option<String>,
    }
    let b: Body = json_body(body)?;
    let current = existing(&state, &id)?;
    let secret = match b.secret {
        Some(s) => given_secret(current.signing, &s)?,
        None => generated_secret(current.signing)?,
    };
    let now = now_ms();
    let changed = state
        .hub
        .webhooks()
        .modify(
            &id,
            Box::new(move |e| {
                rotate_to(e, secret, now);
                e.updated_ms = now;
            }),
        )
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&changed)))
}

/// `DELETE /api/v1/webhooks/{id}`: the endpoint and its deliveries.
async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    admin(&principal)?;
    if state.hub.webhooks().delete(&id).await? {
        tracing::info!(endpoint = %id, "webhook endpoint deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn delivery_view(r: &DeliveryRecord) -> Value {
    let d = &r.delivery;
    let mut v = json!({
        "id": d.id.to_string(),
        "event_id": d.event_id.to_string(),
        "msg_id": d.msg_id,
        "event": d.event_type,
        "status": d.status.as_str(),
        "created": rfc3339_ms(d.created_ms),
        "attempts": r.attempts.iter().map(|a| json!({
            "at": rfc3339_ms(a.at_ms),
            "status_code": a.status_code,
            "duration_ms": a.duration_ms,
            "error": a.error,
            "response_body": a.response_body,
        })).collect::<Vec<_>>(),
    });
    if d.status == Status::Pending {
        v["next_attempt"] = json!(rfc3339_ms(d.next_at_ms));
    }
    v
}

/// `GET /api/v1/webhooks/{id}/deliveries?status=&after=&limit=`.
async fn deliveries(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    existing(&state, &id)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {s:?} is not one of pending, succeeded, failed"
            ))
        })?),
    };
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("after {a:?} is not a delivery id")))?,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit {l:?} must be between 1 and {MAX_PAGE}"))
            })?,
    };
    let list = state
        .hub
        .webhooks()
        .deliveries(&id, status, after, limit)
        .await?;
    Ok(Json(
        json!({ "deliveries": list.iter().map(delivery_view).collect::<Vec<_>>() }),
    ))
}

/// `POST /api/v1/webhooks/{id}/deliveries/{delivery}/retry`.
async fn retry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, delivery)): Path<(String, String)>,
) -> ApiResult<Response> {
    admin(&principal)?;
    existing(&state, &id)?;
    let n: u64 = delivery
        .parse()
        .map_err(|_| ApiError::not_found(format!("no delivery {delivery:?}")))?;
    match state.hub.webhooks().retry(&id, Some(n), 0).await? {
        0 => Err(ApiError::not_found(format!(
            "endpoint {id:?} has no delivery {delivery:?}"
        ))),
        _ => Ok((StatusCode::ACCEPTED, Json(json!({ "retried": 1 }))).into_response()),
    }
}

/// `POST /api/v1/webhooks/{id}/recover` `{"since": "<RFC 3339>"}`.
async fn recover(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    admin(&principal)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        since: String,
    }
    existing(&state, &id)?;
    let b: Body = json_body(body)?;
    let since = parse_rfc3339_ms(&b.since).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "`since` {:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z",
            b.since
        ))
    })?;
    let n = state.hub.webhooks().retry(&id, None, since).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "recovered": n }))).into_response())
}

/// `POST /api/v1/webhooks/{id}/test`: a `herald.test` message to this endpoint only (not
/// published to any topic).
async fn test(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    admin(&principal)?;
    existing(&state, &id)?;
    let now = now_ms();
    let msg = format!(
        "msg_test_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let body = json!({
        "id": "0",
        "topic": "herald.test",
        "event": "herald.test",
        "data": { "message": "a test delivery from Herald", "endpoint": id },
        "time": rfc3339_ms(now),
    });
    let ids = state
        .hub
        .webhooks()
        .enqueue(vec![NewDelivery {
            endpoint: id.clone(),
            event_id: 0,
            msg_id: msg.clone(),
            event_type: "herald.test".into(),
            body: body.to_string(),
        }])
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "delivery": ids.first().map(u64::to_string),
            "msg_id": msg,
        })),
    )
        .into_response())
}

/// The webhook part of `/metrics`: deliveries by outcome, attempt latency, and per endpoint
/// the pending queue and how overdue its oldest delivery is.
pub(crate) async fn render_metrics(state: &AppState) -> String {
    use std::fmt::Write as _;
    let m = state.dispatcher.metrics();
    let mut s = String::with_capacity(1024);
    let _ = writeln!(
        s,
        "# HELP herald_webhook_attempts_total Webhook attempts by outcome (succeeded, retried: failed and rescheduled, failed: no more attempts).\n# TYPE herald_webhook_attempts_total counter"
    );
    for (outcome, n) in [
        ("succeeded", m.succeeded),
        ("retried", m.retried),
        ("failed", m.failed),
    ] {
        let _ = writeln!(
            s,
            "herald_webhook_attempts_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP herald_webhook_attempt_seconds Webhook attempt latency.\n# TYPE herald_webhook_attempt_seconds histogram"
    );
    for (le, n) in &m.attempt_seconds_buckets {
        let le = if le.is_infinite() {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        let _ = writeln!(
            s,
            "herald_webhook_attempt_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "herald_webhook_attempt_seconds_sum {}\nherald_webhook_attempt_seconds_count {}",
        m.attempt_seconds_sum, m.attempt_count
    );
    let _ = writeln!(
        s,
        "# HELP herald_webhook_in_flight Webhook attempts in progress.\n# TYPE herald_webhook_in_flight gauge\nherald_webhook_in_flight {}",
        m.in_flight
    );
    let _ = writeln!(
        s,
        "# HELP herald_webhook_endpoints Webhook endpoints by state.\n# TYPE herald_webhook_endpoints gauge"
    );
    let endpoints = state.hub.webhooks().list();
    let enabled = endpoints.iter().filter(|e| e.enabled).count();
    let _ = writeln!(
        s,
        "herald_webhook_endpoints{{state=\"enabled\"}} {enabled}\nherald_webhook_endpoints{{state=\"disabled\"}} {}",
        endpoints.len() - enabled
    );
    match state.hub.webhooks().queue_stats().await {
        Ok(stats) => {
            let now = now_ms();
            let _ = writeln!(
                s,
                "# HELP herald_webhook_queue_depth Pending deliveries per endpoint.\n# TYPE herald_webhook_queue_depth gauge"
            );
            for q in &stats {
                let _ = writeln!(
                    s,
                    "herald_webhook_queue_depth{{endpoint=\"{}\"}} {}",
                    q.endpoint, q.pending
                );
            }
            let _ = writeln!(
                s,
                "# HELP herald_webhook_oldest_due_seconds Per endpoint, how long its earliest pending delivery has been due (negative: due in the future).\n# TYPE herald_webhook_oldest_due_seconds gauge"
            );
            for q in &stats {
                if let Some(t) = q.oldest_due_ms {
                    let _ = writeln!(
                        s,
                        "herald_webhook_oldest_due_seconds{{endpoint=\"{}\"}} {:.3}",
                        q.endpoint,
                        (now - t) as f64 / 1000.0
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read webhook queue stats for /metrics"),
    }
    s
}
