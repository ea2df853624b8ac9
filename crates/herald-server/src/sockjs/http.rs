//! The HTTP side of SockJS: the greeting, `info`, the iframe page, the receiving transports
//! (polling: `xhr`, `jsonp`; streaming: `xhr_streaming`, `eventsource`, `htmlfile`), the
//! sending ones (`xhr_send`, `jsonp_send`), and the headers they need: CORS on the XHR
//! family, `JSESSIONID` when the service wants cookies, no caching on session URLs and
//! year-long caching on static ones.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::Stream;
use herald_protocol::sockjs::{self, Framing};

use super::{
    Service, SockJsOptions,
    session::{Attach, Receiver},
};
use crate::{error::ApiError, gateway::Principal, state::AppState};

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
const JAVASCRIPT: &str = "application/javascript; charset=UTF-8";
const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";
/// How long static answers (`iframe.html`, CORS preflights) may be cached.
const ONE_YEAR_SECS: u64 = 365 * 24 * 60 * 60;

/// 404 for paths under the prefix that SockJS does not define.
pub(super) fn not_found() -> Response {
    ApiError::not_found("no such SockJS endpoint").into_response()
}

/// 405 with `Allow`, no body and no content type (what SockJS clients and the protocol's
/// test suite expect).
pub(super) fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A `text/plain` answer (SockJS reports errors as plain text, not problem+json).
pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    resp
}

/// `GET <prefix>` and `<prefix>/`.
pub(super) fn greeting(req: &Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    text(StatusCode::OK, sockjs::WELCOME)
}

/// `<prefix>/info`: GET, and OPTIONS for CORS.
pub(super) fn info(options: &SockJsOptions, req: &Request) -> Response {
    match *req.method() {
        Method::GET => {
            // 32 random bits: ULIDs carry 80 from the OS's generator.
            let entropy = (ulid::Ulid::new().random() & u128::from(u32::MAX)) as u32;
            let body = sockjs::info_json(options.websocket, options.cookie_needed, entropy);
            let mut resp = (StatusCode::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            no_cache(h);
            cors(h, req.headers());
            resp
        }
        Method::OPTIONS => preflight(req.headers(), "OPTIONS, GET", None),
        _ => method_not_allowed("OPTIONS, GET"),
    }
}

/// `<prefix>/iframe*.html`: strongly cached, revalidated with its ETag.
pub(super) fn iframe(page: &str, etag: &str, req: &Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let mut resp = if if_none_match(req.headers(), etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut resp = (StatusCode::OK, page.to_owned()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        resp
    };
    let h = resp.headers_mut();
    cache_for_a_year(h);
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// A CORS preflight: 204, cacheable for a year.
fn preflight(req: &HeaderMap, methods: &'static str, cookie: Option<&SockJsOptions>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cache_for_a_year(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(ONE_YEAR_SECS),
    );
    cors(h, req);
    if let Some(options) = cookie {
        jsessionid(h, req, options);
    }
    resp
}

fn no_cache(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
}

fn cache_for_a_year(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = SystemTime::now() + Duration::from_secs(ONE_YEAR_SECS);
    if let Ok(v) = HeaderValue::from_str(&http_date(expires)) {
        h.insert(header::EXPIRES, v);
    }
}

/// CORS for the XHR transports and `info`: the caller's origin with credentials (so
/// `JSESSIONID` flies), or `*` for no origin and for `null` (pages opened from `file://`,
/// which browsers would refuse to match); requested headers are allowed as asked.
fn cors(h: &mut HeaderMap, req: &HeaderMap) {
    match req.get(header::ORIGIN) {
        Some(origin) if origin.as_bytes() != b"null" => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        _ => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(asked) = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
}

/// `Set-Cookie: JSESSIONID=...; path=/` when the service wants it: the client's own value
/// echoed (a load balancer may have set it), else `dummy`. Sent on every session request so
/// a sticky load balancer can attach its own cookie.
fn jsessionid(h: &mut HeaderMap, req: &HeaderMap, options: &SockJsOptions) {
    if !options.cookie_needed {
        return;
    }
    let theirs = req
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.split_once('=')?;
            (k.trim() == "JSESSIONID").then(|| v.trim().to_owned())
        })
        .filter(|v| !v.is_empty());
    let value = theirs.unwrap_or_else(|| "dummy".to_owned());
    let cookie = HeaderValue::from_str(&format!("JSESSIONID={value}; path=/"))
        .unwrap_or_else(|_| HeaderValue::from_static("JSESSIONID=dummy; path=/"));
    h.insert(header::SET_COOKIE, cookie);
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`
    let iso = herald_core::event::rfc3339_ms(secs * 1000);
    let part = |r: std::ops::Range<usize>| iso.get(r).unwrap_or("");
    let month = part(5..7)
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {} {month} {} {} GMT",
        part(8..10),
        part(0..4),
        part(11..19)
    )
}

/// The `c` (or `callback`) query parameter of `jsonp` and `htmlfile`; the error is the text
/// of the 500 SockJS answers.
fn callback(query: Option<&str>) -> Result<String, &'static str> {
    let query = query.unwrap_or("");
    let Some(cb) = sockjs::form_value(query, "c").or_else(|| sockjs::form_value(query, "callback"))
    else {
        return Err("\"callback\" parameter required");
    };
    if !sockjs::valid_callback(&cb) {
        return Err("invalid \"callback\" parameter");
    }
    Ok(cb)
}

/// The receiving transports: `xhr`, `xhr_streaming` (POST), `eventsource`, `htmlfile`,
/// `jsonp` (GET). A request for an unknown session opens it.
pub(super) async fn receive(
    svc: Arc<Service>,
    state: AppState,
    principal: Option<Principal>,
    session: String,
    transport: &str,
    req: Request,
) -> Response {
    let xhr = matches!(transport, "xhr" | "xhr_streaming");
    if xhr {
        match *req.method() {
            Method::POST => {}
            Method::OPTIONS => {
                return preflight(req.headers(), "OPTIONS, POST", Some(&svc.options));
            }
            _ => return method_not_allowed("OPTIONS, POST"),
        }
    } else if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let framing = match transport {
        "xhr" => Framing::Xhr,
        "xhr_streaming" => Framing::XhrStreaming,
        "eventsource" => Framing::EventSource,
        other => match callback(req.uri().query()) {
            Ok(cb) if other == "htmlfile" => Framing::HtmlFile(cb),
            Ok(cb) => Framing::Jsonp(cb),
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
    };
    let mut h = HeaderMap::new();
    let content_type = match framing {
        Framing::Xhr | Framing::XhrStreaming | Framing::Jsonp(_) => JAVASCRIPT,
        Framing::EventSource => "text/event-stream; charset=UTF-8",
        Framing::HtmlFile(_) => "text/html; charset=UTF-8",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_cache(&mut h);
    if xhr {
        cors(&mut h, req.headers());
    }
    jsessionid(&mut h, req.headers(), &svc.options);
    if matches!(framing, Framing::Jsonp(_)) {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if !framing.is_polling() {
        // Ask proxies (nginx) not to buffer the stream.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    let attach = match svc.attach(&state, &session, principal) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let body = if framing.is_polling() {
        // One frame per response; waiting here, a client that goes away drops the
        // receiver unfinished, which ends the session.
        let frame = match attach {
            Attach::Refused(mut frames) => frames.pop_front(),
            Attach::Attached(mut r) => {
                let frame = r.next_frame().await;
                r.complete();
                frame
            }
            Attach::Gone => None,
        };
        Body::from(frame.map(|f| framing.wrap(&f)).unwrap_or_default())
    } else {
        Body::from_stream(streaming(framing, attach, svc.options.response_limit))
    };
    (StatusCode::OK, h, body).into_response()
}

enum Source {
    /// Fixed frames, not attached (2010, a closed session).
    Frames(VecDeque<String>),
    /// Attached to the session.
    Live(Receiver),
}

struct Streaming {
    framing: Framing,
    prelude: Option<String>,
    source: Source,
    /// Bytes of frames written (the prelude does not count).
    sent: usize,
    limit: usize,
    done: bool,
}

/// The body of a streaming transport: the prelude, then frames until the close frame or
/// until `limit` bytes went out (the client then opens a new request on the session).
fn streaming(
    framing: Framing,
    attach: Attach,
    limit: usize,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let source = match attach {
        Attach::Attached(r) => Source::Live(r),
        Attach::Refused(frames) => Source::Frames(frames),
        Attach::Gone => Source::Frames(VecDeque::new()),
    };
    let st = Streaming {
        prelude: framing.prelude(),
        framing,
        source,
        sent: 0,
        limit,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if let Some(prelude) = st.prelude.take() {
            return Some((Ok(Bytes::from(prelude)), st));
        }
        if st.done {
            return None;
        }
        let frame = match &mut st.source {
            Source::Frames(frames) => frames.pop_front(),
            Source::Live(r) => {
                let frame = r.next_frame().await;
                if frame.is_none() {
                    r.complete();
                }
                frame
            }
        }?;
        let out = st.framing.wrap(&frame);
        st.sent += out.len();
        if let Source::Live(r) = &mut st.source {
            if st.sent >= st.limit {
                r.complete();
                st.done = true;
            }
            if r.finished() {
                st.done = true;
            }
        }
        Some((Ok(Bytes::from(out)), st))
    })
}

/// The sending transports: `xhr_send` (POST, a JSON array) and `jsonp_send` (POST, a form
/// with `d` or a raw JSON array). They never open a session: 404 for an unknown one.
pub(super) async fn send(
    svc: Arc<Service>,
    state: AppState,
    session: String,
    transport: &str,
    req: Request,
) -> Response {
    let xhr = transport == "xhr_send";
    match *req.method() {
        Method::POST => {}
        Method::OPTIONS if xhr => {
            return preflight(req.headers(), "OPTIONS, POST", Some(&svc.options));
        }
        _ if xhr => return method_not_allowed("OPTIONS, POST"),
        _ => return method_not_allowed("POST"),
    }
    let (parts, body) = req.into_parts();
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    no_cache(&mut h);
    if xhr {
        cors(&mut h, &parts.headers);
    }
    jsessionid(&mut h, &parts.headers, &svc.options);
    let max = state.config.limits.max_body_bytes;
    let Ok(body) = axum::body::to_bytes(body, max).await else {
        return (
            h,
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload larger than {max} bytes (limits.max_body_bytes)."),
            ),
        )
            .into_response();
    };
    let parsed = if xhr {
        sockjs::parse_messages(&body)
    } else {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        sockjs::parse_jsonp_send(ct, &body)
    };
    let messages = match parsed {
        Ok(m) => m,
        Err(e) => {
            return (h, text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())).into_response();
        }
    };
    let Some(session) = svc.existing(&session) else {
        return not_found();
    };
    // A closed session takes no more messages (the client learns it from the close frame).
    if let Some(incoming) = session.incoming() {
        for m in messages {
            if incoming.send(m).await.is_err() {
                break;
            }
        }
    }
    if xhr {
        (StatusCode::NO_CONTENT, h).into_response()
    } else {
        (StatusCode::OK, h, "ok").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn etag_matching() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"abc\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&h, "\"abc\""));
        assert!(!if_none_match(&h, "\"abd\""));
    }
}
