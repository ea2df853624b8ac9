//! What the client commands share: the server's base URL and token, URL building, and turning
//! HTTP error responses (problem+json) into one-line errors.

use std::{fmt, time::Duration};

use anyhow::Context as _;
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::cli::ServerArgs;

/// Time allowed to open a TCP connection to the server.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured connection to one Herald server.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The HTTP client (connection pool).
    pub(crate) http: reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub(crate) base: String,
    /// Bearer token, if any.
    pub(crate) token: Option<String>,
}

impl Client {
    /// A client for `args.server` with a default HTTP client.
    ///
    /// # Errors
    /// When the URL is not `http://` or `https://`, or the HTTP client cannot be built.
    pub(crate) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Self::with_http(args, http)
    }

    /// A client for `args.server` using `http`.
    ///
    /// # Errors
    /// When the URL is not `http://` or `https://`.
    pub(crate) fn with_http(args: &ServerArgs, http: reqwest::Client) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .with_context(|| format!("--server {:?} is not a URL", args.server))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            anyhow::bail!(
                "--server {:?} must be an http:// URL, e.g. http://127.0.0.1:8080",
                args.server
            );
        }
        Ok(Self {
            http,
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL of a topic's or pattern's events: `/api/v1/topics/{topic}/events`.
    pub(crate) fn events_url(&self, topic: &str) -> String {
        self.url(&format!("/api/v1/topics/{}/events", encode_segment(topic)))
    }

    /// The WebSocket URL of `path` (`http` becomes `ws`, `https` becomes `wss`).
    pub(crate) fn ws_url(&self, path: &str) -> String {
        let url = self.url(path);
        if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url
        }
    }

    /// A GET request, with the token.
    pub(crate) fn get(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.get(url))
    }

    /// A POST request, with the token.
    pub(crate) fn post(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.post(url))
    }

    /// A PATCH request, with the token.
    pub(crate) fn patch(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.patch(url))
    }

    /// A DELETE request, with the token.
    pub(crate) fn delete(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.delete(url))
    }

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so `>`,
/// `*` and anything unexpected reach the server intact (it decodes them and validates).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP error answer from the server.
#[derive(Debug)]
pub(crate) struct HttpError {
    /// The status.
    pub(crate) status: StatusCode,
    /// problem+json `detail` (or `title`), or the start of the body.
    pub(crate) detail: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server answered {}: {}", self.status, self.detail)
    }
}

impl std::error::Error for HttpError {}

/// Passes a successful response through; turns an error status into an [`HttpError`] carrying
/// the problem+json `detail`.
///
/// # Errors
/// [`HttpError`] for a 4xx or 5xx answer.
pub(crate) async fn check(resp: Response) -> Result<Response, HttpError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(HttpError {
        status,
        detail: problem_detail(&body),
    })
}

/// The most useful line of an error body: problem+json `detail`, else `title`, else the text.
pub(crate) fn problem_detail(body: &str) -> String {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(body) {
        for k in ["detail", "title"] {
            if let Some(serde_json::Value::String(s)) = o.get(k)
                && !s.is_empty()
            {
                return s.clone();
            }
        }
    }
    let text = body.trim();
    if text.is_empty() {
        return "(no details)".into();
    }
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\n', '\r'], " ")
}

/// Whether an error is worth retrying by reconnecting: anything but an HTTP 4xx answer.
pub(crate) fn is_retryable(err: &anyhow::Error) -> bool {
    !err.chain().any(|e| {
        e.downcast_ref::<HttpError>()
            .is_some_and(|h| h.status.is_client_error())
    })
}

/// Nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_patterns() {
        assert_eq!(encode_segment("orders.>"), "orders.%3E");
        assert_eq!(encode_segment("orders.*.created"), "orders.%2A.created");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn urls() {
        let c = Client::new(&ServerArgs {
            server: "http://127.0.0.1:8080/".into(),
            token: Some(String::new()),
        })
        .unwrap();
        assert_eq!(c.token, None);
        assert_eq!(
            c.events_url("a.>"),
            "http://127.0.0.1:8080/api/v1/topics/a.%3E/events"
        );
        assert_eq!(c.ws_url("/api/v1/ws"), "ws://127.0.0.1:8080/api/v1/ws");
        assert!(
            Client::new(&ServerArgs {
                server: "ftp://x".into(),
                token: None
            })
            .is_err()
        );
    }

    #[test]
    fn problem_details() {
        assert_eq!(
            problem_detail(
                r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"bad topic"}"#
            ),
            "bad topic"
        );
        assert_eq!(problem_detail(r#"{"title":"Nope"}"#), "Nope");
        assert_eq!(problem_detail("plain\ntext"), "plain text");
        assert_eq!(problem_detail(""), "(no details)");
    }
}
