//! One delivery attempt: the shared HTTP client, the request with its Standard Webhooks and
//! GitHub signatures, the response (status, the headers that steer retries, the first bytes
//! of the body) and the error text recorded when there was no response.

use std::{
    error::Error as _,
    sync::Arc,
    time::{Duration, SystemTime},
};

use herald_core::webhook::{Attempt, Delivery, Endpoint, RESPONSE_BODY_KEPT, Signing};
use herald_protocol::webhook::{self as sig, Secret, Signer};
use reqwest::{
    Client, Response, StatusCode, Url,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    redirect,
};
use tokio::time::Instant;

use crate::{
    Settings,
    guard::{self, GuardedResolver, Refused},
    policy::{self, Verdict},
};

/// `user-agent` of every request.
const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));
/// The event type header.
const EVENT_HEADER: &str = "x-webhook-event";
/// The response header a receiver uses to stop retries of a message.
const DELIVERY_HEADER: &str = "webhook-delivery";
/// Response body bytes read (and thrown away) after the kept ones so that the connection
/// can go back to the pool; a longer body closes the connection instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Headers an endpoint's custom `headers` may not set: the ones that carry the message's
/// identity and signatures (a receiver must be able to trust them) and the ones that frame
/// the request.
const RESERVED: &[&str] = &[
    "content-type",
    "user-agent",
    EVENT_HEADER,
    sig::HEADER_ID,
    sig::HEADER_TIMESTAMP,
    sig::HEADER_SIGNATURE,
    sig::GITHUB_HEADER,
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The one client every attempt shares: keep-alive pool sized to the per-endpoint
/// concurrency, no redirects (a 3xx is a failed attempt: following it would bypass the
/// guard's view of the target and resend the body elsewhere), no proxies (a proxy would
/// resolve the target itself, out of the guard's reach), and the guarded resolver unless
/// private targets are allowed.
///
/// # Errors
/// When the HTTP stack cannot be initialised (a TLS backend failing to load).
pub(crate) fn client(settings: &Settings) -> reqwest::Result<Client> {
    let mut builder = Client::builder()
        .pool_max_idle_per_host(settings.concurrency_per_endpoint)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout);
    if !settings.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build()
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) struct Tried {
    /// As recorded.
    pub(crate) attempt: Attempt,
    /// What it means for the delivery and the endpoint.
    pub(crate) verdict: Verdict,
    /// How long it took.
    pub(crate) took: Duration,
}

/// Makes one attempt of `delivery` to `endpoint`. Never fails: an attempt that could not
/// even be sent is a failed attempt with an error text.
pub(crate) async fn run(
    client: &Client,
    settings: &Settings,
    endpoint: &Endpoint,
    delivery: &Delivery,
) -> Tried {
    let at_ms = herald_core::event::now_ms();
    let started = Instant::now();
    let result = send(client, settings, endpoint, delivery, at_ms).await;
    let took = started.elapsed();
    let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let (attempt, verdict) = match result {
        Ok(answer) => (
            Attempt {
                at_ms,
                status_code: Some(answer.status.as_u16()),
                duration_ms,
                error: None,
                response_body: answer.body,
            },
            Verdict::of_response(answer.status.as_u16(), answer.abort, answer.retry_after),
        ),
        Err(error) => (
            Attempt {
                at_ms,
                status_code: None,
                duration_ms,
                error: Some(error),
                response_body: String::new(),
            },
            Verdict::Retry { retry_after: None },
        ),
    };
    Tried {
        attempt,
        verdict,
        took,
    }
}

/// A response, reduced to what the dispatcher uses.
struct Answer {
    status: StatusCode,
    /// `webhook-delivery: abort-message`.
    abort: bool,
    /// `Retry-After` of a 429 or 503, bounded.
    retry_after: Option<Duration>,
    /// The first [`RESPONSE_BODY_KEPT`] bytes, as text.
    body: String,
}

async fn send(
    client: &Client,
    settings: &Settings,
    endpoint: &Endpoint,
    delivery: &Delivery,
    now_ms: i64,
) -> Result<Answer, String> {
    let url = Url::parse(&endpoint.url).map_err(|e| format!("invalid url: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported url scheme `{other}`: only http and https are delivered to"
            ));
        }
    }
    if !settings.allow_private_targets {
        // The client connects to IP literals without asking the resolver.
        guard::check_literal(&url).map_err(|e| e.to_string())?;
    }
    let headers = headers(endpoint, delivery, now_ms.div_euclid(1000))?;
    let response = client
        .post(url)
        .headers(headers)
        .body(delivery.body.clone())
        .timeout(settings.timeout)
        .send()
        .await
        .map_err(|e| describe(&e, settings.timeout))?;
    let status = response.status();
    let abort = response
        .headers()
        .get_all(DELIVERY_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("abort-message"));
    let retry_after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| policy::parse_retry_after(v, SystemTime::now())),
        _ => None,
    };
    let body = read_body(response).await;
    Ok(Answer {
        status,
        abort,
        retry_after,
        body,
    })
}

/// The request headers: the fixed ones and the signatures, plus the endpoint's own (except
/// [`RESERVED`] names and anything that is no valid header).
///
/// # Errors
/// A secret that cannot sign, or an event type or message id that is no valid header value.
fn headers(endpoint: &Endpoint, delivery: &Delivery, timestamp: i64) -> Result<HeaderMap, String> {
    let value = |what: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("the {what} is not a valid header value"))
    };
    let mut h = HeaderMap::new();
    for (name, v) in &endpoint.headers {
        let (Ok(name), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            tracing::debug!(endpoint = %endpoint.id, header = %name, "invalid custom header skipped");
            continue;
        };
        if RESERVED.contains(&name.as_str()) {
            tracing::debug!(endpoint = %endpoint.id, header = %name, "reserved custom header skipped");
            continue;
        }
        h.insert(name, v);
    }
    let signature = signature(endpoint, delivery, timestamp)?;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    h.insert(EVENT_HEADER, value("event type", &delivery.event_type)?);
    h.insert(sig::HEADER_ID, value("message id", &delivery.msg_id)?);
    h.insert(sig::HEADER_TIMESTAMP, HeaderValue::from(timestamp));
    h.insert(sig::HEADER_SIGNATURE, value("signature", &signature)?);
    if endpoint.signing == Signing::Hmac {
        // GitHub style: keyed by the whole secret string, prefix included.
        let secret = Secret::raw(&endpoint.secret)
            .map_err(|e| format!("cannot sign: the endpoint secret is unusable: {e}"))?;
        let gh = sig::github_signature(&secret, delivery.body.as_bytes());
        h.insert(sig::GITHUB_HEADER, value("signature", &gh)?);
    }
    Ok(h)
}

/// `webhook-signature`: the current secret, and during a rotation the previous one after it.
fn signature(endpoint: &Endpoint, delivery: &Delivery, timestamp: i64) -> Result<String, String> {
    let current = Signer::parse(&endpoint.secret)
        .map_err(|e| format!("cannot sign: the endpoint secret is unusable: {e}"))?;
    let mut keys = vec![current];
    let rotating = endpoint
        .previous_until_ms
        .is_some_and(|until| until > herald_core::event::now_ms());
    if let Some(previous) = endpoint.previous_secret.as_deref().filter(|_| rotating) {
        match Signer::parse(previous) {
            Ok(k) => keys.push(k),
            // The new secret still signs; a broken old one only loses the overlap.
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.id, error = %e, "previous secret unusable")
            }
        }
    }
    Ok(sig::sign(
        &delivery.msg_id,
        timestamp,
        delivery.body.as_bytes(),
        &keys,
    ))
}

/// Reads the first [`RESPONSE_BODY_KEPT`] bytes of the body, then up to [`DRAIN_LIMIT`]
/// more so that the connection can be reused; a longer body is dropped unread, which closes
/// the connection. Errors while reading end the body: the status already decided.
async fn read_body(mut response: Response) -> String {
    let too_long = response
        .content_length()
        .is_some_and(|n| n > (RESPONSE_BODY_KEPT + DRAIN_LIMIT) as u64);
    let mut kept = Vec::new();
    let mut drained = 0usize;
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = RESPONSE_BODY_KEPT - kept.len();
        let take = room.min(chunk.len());
        kept.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            truncated = true;
            drained += chunk.len() - take;
        }
        if truncated && (too_long || drained > DRAIN_LIMIT) {
            break;
        }
    }
    text(&kept, truncated)
}

/// Bytes as text, invalid UTF-8 replaced; when the bytes were cut short, a character cut in
/// two at the end is dropped rather than replaced.
fn text(bytes: &[u8], truncated: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut chunks = bytes.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        out.push_str(chunk.valid());
        // A cut character can only be the last chunk's invalid tail.
        let cut = truncated && chunks.peek().is_none();
        if !(chunk.invalid().is_empty() || cut) {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out
}

/// The error text of a request that got no response: the guard's refusal as it is, a
/// timeout with its limit, otherwise the chain of causes (the outermost reqwest message
/// only repeats the URL): `connection failed: tcp connect error: Connection refused`.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        let text = s.to_string();
        // hyper's client wrapper ("client error (Connect)") only repeats what follows.
        if !text.starts_with("client error (") {
            causes.push(text);
        }
        source = s.source();
    }
    if e.is_timeout() {
        return format!("timed out after {timeout:?} (webhooks.timeout)");
    }
    let what = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    if causes.is_empty() {
        format!("{what}: {e}")
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {

    use herald_core::webhook::Status;
    use herald_protocol::webhook::{SigningKey, StandardHeaders, VerifyKey};

    use super::*;

    fn endpoint(secret: &str) -> Endpoint {
        Endpoint::new("wh_1", "http://example.com/", vec![">".into()], secret, 0)
    }

    fn delivery() -> Delivery {
        Delivery {
            id: 7,
            endpoint: "wh_1".into(),
            event_id: 3,
            msg_id: "msg_3".into(),
            event_type: "order.created".into(),
            body: r#"{"id":3}"#.into(),
            status: Status::Pending,
            attempts: 0,
            next_at_ms: 0,
            last_chance: false,
            created_ms: 0,
        }
    }

    fn verify(h: &HeaderMap, key: &str, body: &str, ts: i64) {
        let headers =
            StandardHeaders::from_lookup(|n| h.get(n).and_then(|v| v.to_str().ok())).unwrap();
        sig::verify(
            &headers,
            body.as_bytes(),
            &[VerifyKey::parse(key).unwrap()],
            ts,
            sig::DEFAULT_TOLERANCE,
        )
        .unwrap();
    }

    #[test]
    fn request_headers() {
        let secret = Secret::generate().unwrap().to_whsec();
        let mut ep = endpoint(&secret);
        ep.headers.insert("X-Tenant".into(), "acme".into());
        ep.headers
            .insert("Webhook-Signature".into(), "v1,forged".into());
        ep.headers.insert("content-length".into(), "1".into());
        ep.headers.insert("bad header".into(), "x".into());
        ep.headers.insert("x-bad-value".into(), "a\nb".into());
        let d = delivery();
        let h = headers(&ep, &d, 1_700_000_000).unwrap();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["user-agent"], USER_AGENT);
        assert!(USER_AGENT.starts_with("herald/"));
        assert_eq!(h["x-webhook-event"], "order.created");
        assert_eq!(h["webhook-id"], "msg_3");
        assert_eq!(h["webhook-timestamp"], "1700000000");
        assert_eq!(h["x-tenant"], "acme");
        assert!(h.get("content-length").is_none());
        assert!(h.get("x-bad-value").is_none());
        assert_eq!(h.get_all("webhook-signature").iter().count(), 1);
        verify(&h, &secret, &d.body, 1_700_000_000);
        let gh = h["x-hub-signature-256"].to_str().unwrap();
        sig::verify_github(&Secret::raw(&secret).unwrap(), d.body.as_bytes(), gh).unwrap();
    }

    #[test]
    fn rotation_signs_with_both_until_the_end() {
        let new = Secret::generate().unwrap().to_whsec();
        let old = Secret::generate().unwrap().to_whsec();
        let mut ep = endpoint(&new);
        ep.previous_secret = Some(old.clone());
        ep.previous_until_ms = Some(herald_core::event::now_ms() + 60_000);
        let d = delivery();
        let s = signature(&ep, &d, 5).unwrap();
        let (first, second) = s.split_once(' ').unwrap();
        let only = |k: &str, sig: &str| {
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_static("msg_3"));
            h.insert("webhook-timestamp", HeaderValue::from_static("5"));
            h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
            verify(&h, k, &d.body, 5);
        };
        only(&new, first);
        only(&old, second);
        ep.previous_until_ms = Some(herald_core::event::now_ms() - 1);
        assert!(!signature(&ep, &d, 5).unwrap().contains(' '));
        ep.previous_until_ms = None;
        assert!(!signature(&ep, &d, 5).unwrap().contains(' '));
    }

    #[test]
    fn ed25519_has_no_github_header() {
        let key = SigningKey::generate().unwrap();
        let mut ep = endpoint(&key.to_whsk());
        ep.signing = Signing::Ed25519;
        let d = delivery();
        let h = headers(&ep, &d, 9).unwrap();
        assert!(h.get("x-hub-signature-256").is_none());
        assert!(h["webhook-signature"].to_str().unwrap().starts_with("v1a,"));
        verify(&h, &key.public_key().to_whpk(), &d.body, 9);
    }

    #[test]
    fn unusable_secret_is_an_error() {
        let ep = endpoint("whsec_!!!");
        let e = headers(&ep, &delivery(), 1).unwrap_err();
        assert!(e.starts_with("cannot sign: "), "{e}");
    }

    #[test]
    fn text_of_cut_bodies() {
        assert_eq!(text(b"plain", false), "plain");
        assert_eq!(text(b"a\xffb", false), "a\u{fffd}b");
        // "é" is c3 a9: cut after c3.
        assert_eq!(text(b"caf\xc3", true), "caf");
        assert_eq!(text(b"caf\xc3", false), "caf\u{fffd}");
        assert_eq!(text(b"\xff caf\xc3", true), "\u{fffd} caf");
        assert_eq!(text(b"", true), "");
    }
}
