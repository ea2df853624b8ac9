//! A dispatcher over a `MemoryLog`, and a scriptable webhook receiver on port 0.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use herald_core::{
    Endpoint, Log, MemoryLog, NewEvent, Topic, Webhooks,
    webhook::{DeliveryRecord, Signing, Status},
};
use herald_protocol::webhook::Secret;
use herald_webhooks::{Dispatcher, Settings};
use tokio::{
    net::TcpListener,
    sync::watch,
    time::{Instant, timeout},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Longest any test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// Settings for tests: private targets allowed (receivers are on 127.0.0.1), fast retries.
pub fn settings() -> Settings {
    Settings {
        timeout: Duration::from_secs(5),
        retry_schedule: vec![Duration::from_millis(100); 3],
        allow_private_targets: true,
        ..Settings::default()
    }
}

/// Polls `check` every 10 ms until it gives a value, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A dispatcher running over an in-memory log.
pub struct Harness {
    pub log: Arc<MemoryLog>,
    pub hooks: Arc<dyn Webhooks>,
    pub dispatcher: Arc<Dispatcher>,
    token: CancellationToken,
    tasks: TaskTracker,
}

static NEXT_ENDPOINT: AtomicU64 = AtomicU64::new(1);

impl Harness {
    pub fn start(settings: Settings) -> Self {
        Self::start_on(Arc::new(MemoryLog::new(Default::default())), settings)
    }

    /// A dispatcher over an existing log (a restart).
    pub fn start_on(log: Arc<MemoryLog>, settings: Settings) -> Self {
        let hooks = log.webhooks();
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let dispatcher = Dispatcher::start(hooks.clone(), settings, token.clone(), &tasks);
        Self {
            log,
            hooks,
            dispatcher,
            token,
            tasks,
        }
    }

    /// Creates an endpoint for `url` subscribed to the topic named like its id; `tweak`
    /// adjusts it before it is stored.
    pub async fn endpoint(&self, url: &str, tweak: impl FnOnce(&mut Endpoint)) -> Endpoint {
        let n = NEXT_ENDPOINT.fetch_add(1, Ordering::Relaxed);
        let id = format!("wh_{n}");
        let mut ep = Endpoint {
            id: id.clone(),
            url: url.to_owned(),
            topics: vec![id.clone()],
            events: vec![],
            description: String::new(),
            headers: BTreeMap::new(),
            rate_limit: None,
            enabled: true,
            disabled_reason: None,
            signing: Signing::Hmac,
            secret: Secret::generate().unwrap().to_whsec(),
            previous_secret: None,
            previous_until_ms: None,
            failing_since_ms: None,
            created_ms: 0,
            updated_ms: 0,
        };
        tweak(&mut ep);
        self.hooks.create(ep).await.unwrap()
    }

    /// Publishes `n` events (`{"n": i}`, type `order.created`) to the endpoint's topic, in
    /// one append; their ids.
    pub async fn publish(&self, ep: &Endpoint, n: usize) -> Vec<u64> {
        let batch = (0..n)
            .map(|i| {
                let data =
                    serde_json::value::RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap();
                NewEvent::new(
                    Topic::new(&ep.id).unwrap(),
                    Some("order.created"),
                    data,
                    None,
                )
                .unwrap()
            })
            .collect();
        let appended = self.log.append(batch).await.unwrap();
        appended.iter().map(|a| a.event.id).collect()
    }

    /// The endpoint's deliveries with their attempts, oldest first.
    pub async fn deliveries(&self, ep: &Endpoint) -> Vec<DeliveryRecord> {
        self.hooks.deliveries(&ep.id, None, 0, 1000).await.unwrap()
    }

    /// Waits until the endpoint has `n` deliveries, all done (succeeded or failed).
    pub async fn settled(&self, ep: &Endpoint, n: usize) -> Vec<DeliveryRecord> {
        eventually(&format!("{n} settled deliveries of {}", ep.id), || async {
            let d = self.deliveries(ep).await;
            (d.len() == n && d.iter().all(|r| r.delivery.status != Status::Pending)).then_some(d)
        })
        .await
    }

    /// The endpoint as stored now.
    pub fn get(&self, ep: &Endpoint) -> Endpoint {
        self.hooks.get(&ep.id).unwrap()
    }

    /// Cancels and asserts every task ends promptly.
    pub async fn stop(self) {
        self.token.cancel();
        self.tasks.close();
        timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .expect("dispatcher tasks end promptly after cancellation");
    }
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Never answer.
    pub hang: bool,
    /// Answer only once the receiver's gate is open.
    pub gated: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
            hang: false,
            gated: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::status(200)
        }
    }

    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

type Script = Box<dyn Fn(usize) -> Reply + Send + Sync>;

struct Inner {
    requests: Mutex<Vec<Received>>,
    script: Mutex<Arc<Script>>,
    gate: watch::Sender<bool>,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers per a script
/// (request index -> reply).
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(Box::new(script))),
            gate: watch::Sender::new(false),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, inner }
    }

    /// Always answers `reply`.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_| reply.clone()).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Replaces the script.
    pub fn script(&self, script: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *self.inner.script.lock().unwrap() = Arc::new(Box::new(script));
    }

    pub fn open_gate(&self) {
        self.inner.gate.send_replace(true);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// Most requests being answered at the same time so far.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests"), || async {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

/// Decrements the concurrency count however the handler ends (a hanging one is dropped
/// when the client goes away).
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = inner.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
    let _busy = Busy(&inner.concurrent);
    inner.max_concurrent.fetch_max(now, Ordering::SeqCst);
    let index = {
        let mut r = inner.requests.lock().unwrap();
        r.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        r.len() - 1
    };
    let script = inner.script.lock().unwrap().clone();
    let reply = script(index);
    if reply.hang {
        std::future::pending::<()>().await;
    }
    if reply.gated {
        let mut gate = inner.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
