//! The gateway layer in front of every door: it resolves the caller's [`Principal`] once per
//! request or connection, however the credentials were presented, so that every door asks
//! the same object "may this caller publish here / subscribe there?".
//!
//! With no API keys (and no JWT) configured, every caller is [`Principal::anyone`]: everything
//! is allowed. With keys configured, a request without a valid key gets 401, except the
//! probes and `POST /api/v1/webhooks/{name}` to a configured inbound receiver, which is
//! authenticated by its signature instead.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use herald_core::{Pattern, Topic};

use crate::{config::AuthKeySection, error::ApiError, state::AppState};

/// What a caller may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who (the key's position or `anonymous`), for logs.
    pub name: Arc<str>,
    /// Patterns it may publish to.
    pub publish: Arc<[Pattern]>,
    /// Patterns it may subscribe to.
    pub subscribe: Arc<[Pattern]>,
    /// May manage webhooks and read admin endpoints.
    pub admin: bool,
}

impl Principal {
    /// Allowed everything: the principal when no auth is configured.
    pub fn anyone() -> Self {
        let all: Arc<[Pattern]> = Arc::from(vec![Pattern::new(">").expect("valid pattern")]);
        Self {
            name: Arc::from("anonymous"),
            publish: all.clone(),
            subscribe: all,
            admin: true,
        }
    }

    /// Allowed nothing: a STOMP connection before its CONNECT frame presented credentials.
    pub fn nobody() -> Self {
        let none: Arc<[Pattern]> = Arc::from(Vec::new());
        Self {
            name: Arc::from("unauthenticated"),
            publish: none.clone(),
            subscribe: none,
            admin: false,
        }
    }

    /// May it publish to this topic?
    pub fn can_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|p| p.matches(topic.as_str()))
    }

    /// May it subscribe to this pattern (every topic the pattern matches is allowed)?
    pub fn can_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe.iter().any(|p| pattern.is_covered_by(p))
    }

    /// 403 unless it may publish to `topic`.
    ///
    /// # Errors
    /// 403 naming the topic.
    pub fn check_publish(&self, topic: &Topic) -> Result<(), ApiError> {
        if self.can_publish(topic) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "not allowed to publish to {topic}"
            )))
        }
    }

    /// 403 unless it may subscribe to every pattern.
    ///
    /// # Errors
    /// 403 naming the first pattern refused.
    pub fn check_subscribe(&self, patterns: &[Pattern]) -> Result<(), ApiError> {
        match patterns.iter().find(|p| !self.can_subscribe(p)) {
            None => Ok(()),
            Some(p) => Err(ApiError::forbidden(format!(
                "not allowed to subscribe to {p}"
            ))),
        }
    }
}

/// One configured API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    key: String,
    principal: Principal,
}

impl ApiKey {
    /// From an `[[auth.keys]]` entry.
    ///
    /// # Errors
    /// A message when the key is empty or a pattern is invalid.
    pub fn from_config(k: &AuthKeySection) -> Result<Self, String> {
        if k.key.is_empty() {
            return Err("`key` is empty".into());
        }
        let parse = |list: &[String]| -> Result<Arc<[Pattern]>, String> {
            list.iter()
                .map(|p| Pattern::new(p).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map(Arc::from)
        };
        let shown: String = k.key.chars().take(4).collect();
        Ok(Self {
            key: k.key.clone(),
            principal: Principal {
                name: Arc::from(format!("key:{shown}…")),
                publish: parse(&k.publish)?,
                subscribe: parse(&k.subscribe)?,
                admin: k.admin,
            },
        })
    }
}

/// Finds the credential: `Authorization: Bearer`, `?access_token=`, or cookie `herald_token`.
pub fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("access_token=") {
                return Some(percent_decode(v));
            }
        }
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for c in cookies.split(';') {
            if let Some(v) = c.trim().strip_prefix("herald_token=") {
                return Some(v.to_owned());
            }
        }
    }
    None
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Constant-time string comparison, so a key cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Resolves the principal of a request.
///
/// # Errors
/// 401 when auth is configured and the credential is missing or unknown.
pub fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Principal, ApiError> {
    let keys = &state.config.auth_keys;
    if keys.is_empty() {
        return Ok(state.anyone.clone());
    }
    let Some(token) = credential(headers, query) else {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "missing credentials: send `Authorization: Bearer <key>`, `?access_token=` or cookie `herald_token`",
        ));
    };
    lookup(state, &token)
        .ok_or_else(|| ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "invalid credentials"))
}

/// The principal of a token (an API key), when auth is configured; `anyone` otherwise.
pub fn lookup(state: &AppState, token: &str) -> Option<Principal> {
    let keys = &state.config.auth_keys;
    if keys.is_empty() {
        return Some(state.anyone.clone());
    }
    keys.iter()
        .find(|k| same(&k.key, token))
        .map(|k| k.principal.clone())
}

/// STOMP and SockJS under `/ws` carry their credentials in the CONNECT frame, which comes
/// after the HTTP request: those requests pass without credentials, as `nobody` until CONNECT.
fn credentials_in_protocol(path: &str) -> bool {
    path == "/ws" || (path.starts_with("/ws/") && path != "/ws/chat")
}

/// Middleware: resolves the principal and stores it in the request extensions, where every
/// door's handler takes it from.
pub async fn principal_layer(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    // Probes and metrics stay open so orchestrators can reach them.
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        req.extensions_mut().insert(state.anyone.clone());
        return next.run(req).await;
    }
    // Inbound webhook receivers authenticate by the request's signature (their handler
    // refuses unsigned requests), and the senders (GitHub, ...) cannot present an API key.
    // Only POSTs to a configured receiver's name pass; they get no rights of their own.
    if req.method() == axum::http::Method::POST
        && crate::inbound::receiver_for_path(&state.config, path).is_some()
    {
        req.extensions_mut().insert(Principal::nobody());
        return next.run(req).await;
    }
    match resolve(&state, req.headers(), req.uri().query()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(_) if credentials_in_protocol(path) => {
            req.extensions_mut().insert(Principal::nobody());
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
