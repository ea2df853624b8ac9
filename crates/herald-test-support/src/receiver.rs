//! [`WebhookReceiver`]: a real HTTP server on `127.0.0.1:0` that records every request it
//! gets and answers as a test scripts it (fail N times, `410`, hang, `429` + `Retry-After`).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the receiver answers its `n`-th request (0-based, counted per receiver).
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status with these headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answers (the connection stays open until the client gives up).
    Hang,
}

impl Answer {
    /// `200 OK`.
    pub fn ok() -> Self {
        Answer::Status(200, Vec::new(), "ok".into())
    }

    /// A bare status.
    pub fn status(code: u16) -> Self {
        Answer::Status(code, Vec::new(), String::new())
    }
}

type Script = Arc<dyn Fn(usize, &Received) -> Answer + Send + Sync>;

struct Inner {
    got: Mutex<Vec<Received>>,
    script: Script,
    notify: Notify,
}

/// A recording webhook receiver; stops when dropped.
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    token: CancellationToken,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let r = Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        at: Instant::now(),
    };
    let n = {
        let mut got = inner.got.lock().expect("lock");
        got.push(r.clone());
        got.len() - 1
    };
    inner.notify.notify_waiters();
    match (inner.script)(n, &r) {
        Answer::Status(code, headers, body) => {
            let mut resp =
                (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), body).into_response();
            for (k, v) in headers {
                if let Ok(v) = v.parse() {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

impl WebhookReceiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Self {
        Self::scripted(|_, _| Answer::ok()).await
    }

    /// Answers as `script` says for the n-th request.
    pub async fn scripted(
        script: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let inner = Arc::new(Inner {
            got: Mutex::new(Vec::new()),
            script: Arc::new(script),
            notify: Notify::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let token = CancellationToken::new();
        let app = Router::new()
            .fallback(any(handle))
            .with_state(inner.clone());
        let stop = token.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self { addr, inner, token }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.got.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "webhook receiver got {} requests, expected {n}",
                    got.len()
                );
                return got;
            }
        }
    }
}
