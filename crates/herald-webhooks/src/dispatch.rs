//! [`Dispatcher`]: the loop that hands due deliveries to attempt tasks, endpoint by
//! endpoint, within each endpoint's slots and rate limit.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use herald_core::{
    event::now_ms,
    webhook::{Delivery, Endpoint, Outcome, Signal, Webhooks},
};
use parking_lot::Mutex;
use reqwest::Client;
use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, warn};

use crate::{
    Settings, attempt,
    metrics::{Metrics, MetricsSnapshot},
    policy::{self, Rng, millis},
    rate::TokenBucket,
    recorder::{self, Finished, Released},
};

/// Longest sleep of the loop: endpoint changes made without a signal (another process, a
/// store without one) are seen within this.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Every this long, every endpoint's pending deliveries are looked up again, whatever the
/// cache says: a safety net for work a store added without marking its [`Signal`].
const RESYNC: Duration = Duration::from_secs(60);
/// Pause before asking the store again about an endpoint after `due` failed.
const DUE_ERROR_PAUSE_MS: i64 = 1000;
/// When a store says more is due now but handed out less than asked (it should not), look
/// again after this rather than spinning.
const SHORT_ANSWER_PAUSE_MS: i64 = 100;

/// The outbound webhook dispatcher (SPEC 7.1). Started once per server with
/// [`Dispatcher::start`]; the handle only serves [`metrics`](Dispatcher::metrics).
#[derive(Debug)]
pub struct Dispatcher {
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Starts the dispatch loop (and its recorder) as tasks on `tasks`; they stop when
    /// `token` is cancelled. In-flight attempts are then abandoned: their deliveries stay
    /// pending in the store and are attempted again after the next start. Outcomes already
    /// known are recorded before the recorder ends.
    ///
    /// Must be called within a Tokio runtime. Should the HTTP client fail to build (a TLS
    /// backend that does not load), the error is logged and nothing is dispatched; the
    /// deliveries wait in the store.
    pub fn start(
        store: Arc<dyn Webhooks>,
        settings: Settings,
        token: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Dispatcher> {
        let mut settings = settings;
        settings.concurrency_per_endpoint = settings.concurrency_per_endpoint.max(1);
        let metrics = Arc::new(Metrics::default());
        let client = match attempt::client(&settings) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot build the webhook HTTP client; no webhooks will be sent");
                return Arc::new(Dispatcher { metrics });
            }
        };
        let (finished, queue) = mpsc::unbounded_channel();
        let (released_tx, released) = mpsc::unbounded_channel();
        tasks.spawn(recorder::run(
            store.clone(),
            settings.disable_after,
            queue,
            released_tx,
            token.clone(),
        ));
        let signal = store.signal();
        let shared = Arc::new(Shared {
            client,
            settings,
            metrics: metrics.clone(),
            finished,
            rng: Mutex::new(Rng::from_os()),
        });
        let dispatch = Loop {
            store,
            signal,
            shared,
            released,
            token: token.clone(),
            tasks: tasks.clone(),
            states: HashMap::new(),
            last_resync: Instant::now(),
        };
        tasks.spawn(async move {
            // Every await of the loop (store calls included) gives way to shutdown.
            tokio::select! {
                () = token.cancelled() => {}
                () = dispatch.run() => {}
            }
        });
        Arc::new(Dispatcher { metrics })
    }

    /// The counters now, for the server's Prometheus endpoint.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

/// What the attempt tasks share.
struct Shared {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// To the recorder.
    finished: UnboundedSender<Finished>,
    /// Jitter.
    rng: Mutex<Rng>,
}

/// The loop's view of one endpoint.
#[derive(Debug)]
struct EndpointState {
    /// Deliveries handed to an attempt whose outcome is not stored yet.
    in_flight: HashSet<u64>,
    /// When the store next has something due for it, as far as known: `None` nothing
    /// pending; a time at or before now means "ask".
    next_due: Option<i64>,
    /// Whether it was enabled at the last look (enabling again means asking again).
    enabled: bool,
    /// Its rate limit, if it has one.
    bucket: Option<TokenBucket>,
}

impl EndpointState {
    fn new() -> Self {
        Self {
            in_flight: HashSet::new(),
            // Never asked: ask.
            next_due: Some(i64::MIN),
            enabled: true,
            bucket: None,
        }
    }
}

struct Loop {
    store: Arc<dyn Webhooks>,
    signal: Arc<Signal>,
    shared: Arc<Shared>,
    /// From the recorder.
    released: UnboundedReceiver<Released>,
    token: CancellationToken,
    tasks: TaskTracker,
    states: HashMap<String, EndpointState>,
    last_resync: Instant,
}

impl Loop {
    async fn run(mut self) {
        loop {
            let wake = self.pass().await;
            let sleep = wake.map_or(MAX_SLEEP, |at| {
                let ms = at.saturating_sub(now_ms()).max(0);
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(MAX_SLEEP)
            });
            tokio::select! {
                biased;
                () = self.token.cancelled() => return,
                done = self.released.recv() => match done {
                    Some(done) => self.release(done),
                    // The recorder ended: shutting down.
                    None => return,
                },
                () = self.signal.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Frees the slots of deliveries whose outcome is stored; their endpoints are asked
    /// again (a retried delivery has a new due time the cache does not know).
    fn release(&mut self, done: Released) {
        for (endpoint, delivery) in done {
            if let Some(st) = self.states.get_mut(&endpoint) {
                st.in_flight.remove(&delivery);
                st.next_due = Some(i64::MIN);
            }
        }
    }

    /// One look at every endpoint: starts what is due and allowed. Returns when the loop
    /// should look again (the earliest known due time of an endpoint with a free slot).
    async fn pass(&mut self) -> Option<i64> {
        while let Ok(done) = self.released.try_recv() {
            self.release(done);
        }
        let marked = self.signal.take();
        let resync = self.last_resync.elapsed() >= RESYNC;
        if resync {
            self.last_resync = Instant::now();
        }
        let endpoints = self.store.list();
        let known: HashSet<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
        // Deleted endpoints: forgotten once nothing of theirs is in flight.
        self.states
            .retain(|id, st| known.contains(id.as_str()) || !st.in_flight.is_empty());

        let concurrency = self.shared.settings.concurrency_per_endpoint;
        let now = now_ms();
        let mut wake: Option<i64> = None;
        for ep in endpoints {
            // Shared by this pass's attempts instead of one copy each.
            let ep = Arc::new(ep);
            let st = self
                .states
                .entry(ep.id.clone())
                .or_insert_with(EndpointState::new);
            if !ep.enabled {
                st.enabled = false;
                continue;
            }
            if !st.enabled || resync || marked.contains(&ep.id) {
                st.enabled = true;
                st.next_due = Some(i64::MIN);
            }
            let instant = Instant::now();
            match (ep.rate_limit, &mut st.bucket) {
                (None, b) => *b = None,
                (Some(n), Some(b)) => b.set_rate(n, instant),
                (Some(n), b @ None) => *b = Some(TokenBucket::new(n, instant)),
            }
            let free = concurrency.saturating_sub(st.in_flight.len());
            // A full endpoint is looked at again when one of its attempts is recorded.
            if free == 0 {
                continue;
            }
            let Some(due_at) = st.next_due else {
                continue;
            };
            if due_at <= now {
                let tokens = st
                    .bucket
                    .as_mut()
                    .map_or(usize::MAX, |b| b.available(instant));
                let limit = free.min(tokens);
                if limit > 0 {
                    match self.store.due(&ep.id, now, limit, &st.in_flight).await {
                        Ok((due, next)) => {
                            let short = due.len() < limit;
                            for d in due {
                                if let Some(b) = st.bucket.as_mut() {
                                    b.take();
                                }
                                st.in_flight.insert(d.id);
                                spawn_attempt(&self.shared, &self.tasks, &self.token, &ep, d);
                            }
                            st.next_due = match next {
                                Some(t) if short && t <= now => {
                                    Some(now.saturating_add(SHORT_ANSWER_PAUSE_MS))
                                }
                                other => other,
                            };
                        }
                        Err(e) => {
                            warn!(endpoint = %ep.id, error = %e, "cannot read due webhook deliveries");
                            st.next_due = Some(now.saturating_add(DUE_ERROR_PAUSE_MS));
                        }
                    }
                }
                // Due but out of tokens: due when the next token is.
                if let (Some(t), Some(b)) = (st.next_due, st.bucket.as_ref())
                    && t <= now
                    && b.wait() > Duration::ZERO
                {
                    st.next_due = Some(now.saturating_add(millis(b.wait())).saturating_add(1));
                }
            }
            if st.in_flight.len() < concurrency
                && let Some(t) = st.next_due
            {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        wake
    }
}

/// Starts one attempt as a task: it sends, decides the delivery's next state and queues the
/// outcome for the recorder; on cancellation it is abandoned (nothing recorded, the
/// delivery stays pending).
fn spawn_attempt(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    token: &CancellationToken,
    endpoint: &Arc<Endpoint>,
    delivery: Delivery,
) {
    let shared = shared.clone();
    let token = token.clone();
    let endpoint = Arc::clone(endpoint);
    tasks.spawn(async move {
        let in_flight = shared.metrics.in_flight();
        let tried = tokio::select! {
            biased;
            () = token.cancelled() => return,
            t = attempt::run(&shared.client, &shared.settings, &endpoint, &delivery) => t,
        };
        // Over before its outcome is visible anywhere.
        drop(in_flight);
        let unit = shared.rng.lock().unit();
        let next = policy::next(
            &delivery,
            tried.verdict,
            &shared.settings.retry_schedule,
            now_ms(),
            unit,
        );
        shared.metrics.observe(tried.took, next);
        debug!(
            endpoint = %endpoint.id,
            delivery = delivery.id,
            msg_id = %delivery.msg_id,
            attempt = delivery.attempts.saturating_add(1),
            status = ?tried.attempt.status_code,
            duration_ms = tried.attempt.duration_ms,
            error = tried.attempt.error.as_deref().unwrap_or_default(),
            next = ?next,
            "webhook attempt"
        );
        // The recorder is gone only when shutting down.
        let _ = shared.finished.send(Finished {
            endpoint: endpoint.id.clone(),
            outcome: Outcome {
                delivery: delivery.id,
                attempt: tried.attempt,
                next,
            },
            verdict: tried.verdict,
        });
    });
}
