//! Herald's outbound webhook dispatcher (SPEC 7.1): it takes the due deliveries out of a
//! [`Webhooks`](herald_core::Webhooks) store, POSTs them signed to their endpoints, and
//! records every attempt with the delivery's next state.
//!
//! The store decides *what* is owed (a delivery is written in the same durable append as its
//! event); this crate only decides *when* and *how* to send it, so a crash or a cancelled
//! attempt costs at most a repeated request, never a lost one (at-least-once).
//!
//! # How it works
//! - **One loop, many attempts.** [`Dispatcher::start`] spawns a loop that asks the store for
//!   the due deliveries of each enabled endpoint with free slots, and spawns one task per
//!   delivery. The loop itself never waits on a receiver: a slow or dead endpoint only ever
//!   occupies its own `concurrency_per_endpoint` slots. The loop caches each endpoint's next
//!   due time and sleeps until the earliest one (at most 1 s), a store
//!   [`Signal`](herald_core::webhook::Signal), a finished attempt or cancellation.
//! - **One recorder.** Attempt outcomes go to a single recorder task that writes whatever is
//!   queued in one [`Webhooks::record`](herald_core::Webhooks::record) call. A delivery stays
//!   "in flight" for the loop until its outcome is stored, so it is never handed out twice.
//!   The recorder is also the only writer of endpoint health (`failing_since_ms`, disabling
//!   after `410 Gone` or `disable_after` of failures), so those writes never race.
//! - **Requests** are Standard Webhooks: `webhook-id`, `webhook-timestamp`,
//!   `webhook-signature` (both keys during a secret rotation), plus GitHub's
//!   `x-hub-signature-256` for HMAC endpoints; one shared HTTP client with keep-alive, no
//!   redirects, no proxies.
//! - **SSRF guard**: hostnames go through a resolver that drops forbidden addresses
//!   ([`is_forbidden_ip`]) and refuses a name that has nothing else; IP literals (which skip
//!   the resolver) are checked before sending.
//!
//! # Layout
//! - `dispatch`: [`Dispatcher`], the loop and the per-endpoint state (slots, cached next due
//!   time, rate-limit bucket).
//! - `recorder`: batches outcomes into the store, keeps endpoint health.
//! - `attempt`: one HTTP attempt: headers and signatures, the response, the error text.
//! - `policy`: what happens after an attempt: retry schedule with jitter, `Retry-After`.
//! - `guard`: the SSRF guard: [`is_forbidden_ip`] and the resolver.
//! - `rate`: the token bucket behind an endpoint's `rate_limit`.
//! - `metrics`: counters and the attempt latency histogram, [`MetricsSnapshot`].

use std::time::Duration;

mod attempt;
mod dispatch;
mod guard;
mod metrics;
mod policy;
mod rate;
mod recorder;

pub use dispatch::Dispatcher;
pub use guard::is_forbidden_ip;
pub use metrics::MetricsSnapshot;

/// The dispatcher's configuration (`[webhooks]` in the server configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `webhooks.timeout`: the whole attempt (connect, request, response body) must finish
    /// within this, or the attempt failed. Default 10 s.
    pub timeout: Duration,
    /// `webhooks.retry_schedule`: the delay before each retry (N delays, N retries after the
    /// first attempt), each with ±20 % jitter. Default `5s, 5m, 30m, 2h, 5h, 10h, 10h`.
    pub retry_schedule: Vec<Duration>,
    /// `webhooks.allow_private_targets`: allow loopback, private, link-local... targets.
    /// Default false (they are refused at connect time).
    pub allow_private_targets: bool,
    /// `webhooks.disable_after`: an endpoint whose attempts have all failed for this long is
    /// disabled. Default 5 days.
    pub disable_after: Duration,
    /// Most attempts in flight per endpoint (0 is taken as 1). Default 8.
    pub concurrency_per_endpoint: usize,
}

impl Default for Settings {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        Self {
            timeout: Duration::from_secs(10),
            retry_schedule: [
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
            allow_private_targets: false,
            disable_after: Duration::from_secs(5 * 24 * HOUR),
            concurrency_per_endpoint: 8,
        }
    }
}
