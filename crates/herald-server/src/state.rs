//! Shared state of one server: [`AppState`], one `Arc` (every request clones it, some
//! several times through middleware and extractors).

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use herald_core::Hub;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{config::Config, error::ApiError, gateway::Principal};

/// Everything a handler needs; cloning it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The hub.
    pub hub: Hub,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Cancelled at shutdown; every stream ends when it is.
    pub token: CancellationToken,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The allow-all principal, built once.
    pub anyone: Principal,
    /// Background tasks to wait for at shutdown.
    pub tasks: TaskTracker,
    /// STOMP `/queue/` destinations.
    pub(crate) queues: Arc<crate::stomp::queue::Queues>,
    /// The outbound webhook dispatcher.
    pub dispatcher: Arc<herald_webhooks::Dispatcher>,
}

/// Which door a streaming connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket JSON.
    Ws,
    /// Long poll (while waiting).
    Poll,
    /// STOMP (over WebSocket, SockJS or TCP).
    Stomp,
}

impl Transport {
    fn index(self) -> usize {
        self as usize
    }

    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
            Self::Poll => "longpoll",
            Self::Stomp => "stomp",
        }
    }

    const ALL: [Transport; 4] = [
        Transport::Sse,
        Transport::Ws,
        Transport::Poll,
        Transport::Stomp,
    ];
}

/// Counters and gauges, per server instance (tests run many servers in one process, so no
/// global recorder).
#[derive(Debug, Default)]
pub struct Metrics {
    connections: [AtomicUsize; 4],
    connections_total: [AtomicU64; 4],
    refused: AtomicU64,
    /// Events written to subscribers, per transport.
    events_out: [AtomicU64; 4],
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
}

impl Metrics {
    /// Open streaming connections, all transports.
    pub fn open_connections(&self) -> usize {
        self.connections
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts events written to a subscriber.
    pub fn events_out(&self, t: Transport, n: u64) {
        self.events_out[t.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, hub: &Hub) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(2048);
        let stats = hub.stats();
        let _ = writeln!(
            s,
            "# HELP herald_connections Open streaming connections per transport.\n# TYPE herald_connections gauge"
        );
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "herald_connections{{transport=\"{}\"}} {}",
                t.label(),
                self.connections[t.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP herald_connections_total Streaming connections accepted per transport.\n# TYPE herald_connections_total counter"
        );
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "herald_connections_total{{transport=\"{}\"}} {}",
                t.label(),
                self.connections_total[t.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP herald_connections_refused_total Connections refused by limits.max_connections.\n# TYPE herald_connections_refused_total counter\nherald_connections_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP herald_events_in_total Events stored by publishes.\n# TYPE herald_events_in_total counter\nherald_events_in_total {}",
            stats.published.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP herald_events_out_total Events written to subscribers per transport.\n# TYPE herald_events_out_total counter"
        );
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "herald_events_out_total{{transport=\"{}\"}} {}",
                t.label(),
                self.events_out[t.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP herald_fanout_deliveries_total Events handed to subscriber queues.\n# TYPE herald_fanout_deliveries_total counter\nherald_fanout_deliveries_total {}",
            stats.delivered.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP herald_queue_drops_total Subscribers disconnected because their queue overflowed.\n# TYPE herald_queue_drops_total counter\nherald_queue_drops_total {}",
            stats.dropped_subscribers.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP herald_subscriptions Live subscriptions.\n# TYPE herald_subscriptions gauge\nherald_subscriptions {}",
            stats.subscriptions.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP herald_last_event_id Id of the newest stored event.\n# TYPE herald_last_event_id gauge\nherald_last_event_id {}",
            hub.head()
        );
        let _ = writeln!(
            s,
            "# HELP herald_http_requests_total HTTP requests answered.\n# TYPE herald_http_requests_total counter\nherald_http_requests_total {}",
            self.http_requests.load(Ordering::Relaxed)
        );
        s
    }
}

/// Holds one slot of `limits.max_connections`; frees it when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.transport.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Takes a connection slot for a streaming connection.
    ///
    /// # Errors
    /// 503 when `limits.max_connections` are open, or while shutting down.
    pub fn connect(&self, transport: Transport) -> Result<ConnGuard, ApiError> {
        if self.token.is_cancelled() {
            return Err(ApiError::unavailable("server is shutting down"));
        }
        let max = self.config.limits.max_connections;
        let gauge = &self.metrics.connections[transport.index()];
        gauge.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard {
            metrics: self.metrics.clone(),
            transport,
        };
        if self.metrics.open_connections() > max {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(format!(
                "too many connections (limits.max_connections = {max})"
            )));
        }
        self.metrics.connections_total[transport.index()].fetch_add(1, Ordering::Relaxed);
        Ok(guard)
    }
}
