//! The recorder: the one task that writes attempt outcomes to the store (whatever is queued,
//! in one [`Webhooks::record`] call) and keeps endpoint health (`failing_since_ms`,
//! disabling). Being the only writer of both, its writes never race each other.

use std::{collections::HashMap, sync::Arc, time::Duration};

use herald_core::{
    event::{now_ms, rfc3339_ms},
    webhook::{Endpoint, EndpointChange, Outcome, Webhooks},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::policy::{Verdict, millis};

/// Most outcomes written in one call.
const MAX_BATCH: usize = 1024;
/// First and longest pause before writing a batch again after the store failed.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// An attempt's result on its way to the store.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The endpoint's id.
    pub(crate) endpoint: String,
    /// What to record.
    pub(crate) outcome: Outcome,
    /// What it means for the endpoint's health.
    pub(crate) verdict: Verdict,
}

/// Deliveries whose outcome is stored, by endpoint: the loop may hand them out again.
pub(crate) type Released = Vec<(String, u64)>;

/// Runs until `token` is cancelled; then records, once, what is already queued (an outcome
/// lost here only means one more attempt after the next start).
pub(crate) async fn run(
    store: Arc<dyn Webhooks>,
    disable_after: Duration,
    mut queue: UnboundedReceiver<Finished>,
    released: UnboundedSender<Released>,
    token: CancellationToken,
) {
    let health = Health {
        store: store.clone(),
        disable_after_ms: millis(disable_after),
    };
    let mut unrecorded = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = token.cancelled() => break,
            f = queue.recv() => f,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|f| f.outcome.clone()).collect();
        if !record(&*store, outcomes, &token).await {
            unrecorded = batch;
            break;
        }
        health.update(&batch).await;
        // The loop is gone only when shutting down.
        let _ = released.send(
            batch
                .into_iter()
                .map(|f| (f.endpoint, f.outcome.delivery))
                .collect(),
        );
    }
    while let Ok(f) = queue.try_recv() {
        unrecorded.push(f);
    }
    if !unrecorded.is_empty() {
        let outcomes = unrecorded.into_iter().map(|f| f.outcome).collect();
        if let Err(e) = store.record(outcomes).await {
            warn!(error = %e, "webhook attempts not recorded at shutdown; they will be repeated");
        }
    }
}

/// Writes a batch, retrying with backoff while the store fails. False when cancelled first.
async fn record(store: &dyn Webhooks, outcomes: Vec<Outcome>, token: &CancellationToken) -> bool {
    let mut pause = BACKOFF.0;
    loop {
        match store.record(outcomes.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                // The deliveries stay in flight meanwhile: handing them out again would
                // repeat attempts that already happened.
                warn!(error = %e, retry_in = ?pause, "cannot record webhook attempts");
            }
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// Endpoint health: when every attempt has been failing since, and disabling.
struct Health {
    store: Arc<dyn Webhooks>,
    disable_after_ms: i64,
}

impl Health {
    /// Applies the health consequences of a batch, in order. Endpoints are read from the
    /// store once per batch and then followed through this task's own writes, so a success
    /// writes nothing unless the endpoint was failing.
    async fn update(&self, batch: &[Finished]) {
        let mut known: HashMap<&str, Option<Endpoint>> = HashMap::new();
        for f in batch {
            let current = known
                .entry(f.endpoint.as_str())
                .or_insert_with(|| self.store.get(&f.endpoint));
            // Deleted meanwhile: nothing to keep.
            let Some(before) = current.as_ref() else {
                continue;
            };
            let Some(change) = change(before, f.verdict, now_ms(), self.disable_after_ms) else {
                continue;
            };
            match self.store.modify(&f.endpoint, change).await {
                Ok(after) => {
                    if let Some(after) = after.as_ref().filter(|a| before.enabled && !a.enabled) {
                        warn!(
                            endpoint = %after.id,
                            url = %after.url,
                            reason = after.disabled_reason.as_deref().unwrap_or_default(),
                            "webhook endpoint disabled"
                        );
                    } else {
                        debug!(endpoint = %f.endpoint, "webhook endpoint health updated");
                    }
                    *current = after;
                }
                Err(e) => {
                    warn!(endpoint = %f.endpoint, error = %e, "cannot update webhook endpoint health");
                }
            }
        }
    }
}

/// The change an attempt's verdict makes to an endpoint as it was last seen (`None`: none).
/// The change itself checks again, since it applies to the endpoint as stored.
fn change(
    ep: &Endpoint,
    verdict: Verdict,
    now: i64,
    disable_after_ms: i64,
) -> Option<EndpointChange> {
    match verdict {
        Verdict::Delivered => ep
            .failing_since_ms
            .is_some()
            .then(|| Box::new(|e: &mut Endpoint| e.failing_since_ms = None) as EndpointChange),
        Verdict::Gone => ep.enabled.then(|| {
            Box::new(move |e: &mut Endpoint| {
                if e.enabled {
                    disable(
                        e,
                        "410 Gone: the receiver asked for no more deliveries",
                        now,
                    );
                }
            }) as EndpointChange
        }),
        Verdict::Aborted | Verdict::Retry { .. } => match ep.failing_since_ms {
            None => Some(Box::new(move |e: &mut Endpoint| {
                if e.failing_since_ms.is_none() {
                    e.failing_since_ms = Some(now);
                }
            })),
            Some(since) if ep.enabled && now.saturating_sub(since) >= disable_after_ms => {
                Some(Box::new(move |e: &mut Endpoint| {
                    if let Some(since) = e.failing_since_ms
                        && e.enabled
                        && now.saturating_sub(since) >= disable_after_ms
                    {
                        let reason = format!(
                            "failing for {} (every attempt since {} failed; webhooks.disable_after)",
                            human(now.saturating_sub(since)),
                            rfc3339_ms(since)
                        );
                        disable(e, &reason, now);
                    }
                }))
            }
            Some(_) => None,
        },
    }
}

/// Disables an endpoint with a reason. The failure clock restarts: an endpoint enabled again
/// gets a whole `disable_after` before being disabled again.
fn disable(e: &mut Endpoint, reason: &str, now: i64) {
    e.enabled = false;
    e.disabled_reason = Some(reason.to_owned());
    e.failing_since_ms = None;
    e.updated_ms = now;
}

/// `5d 3h`, `2h 10m`, `4m 7s`, `12s`.
fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            "wh_1",
            "http://example.com/",
            vec![">".into()],
            "whsec_AAAA",
            0,
        )
    }

    fn apply(ep: &Endpoint, v: Verdict, now: i64, limit: i64) -> Option<Endpoint> {
        change(ep, v, now, limit).map(|c| {
            let mut e = ep.clone();
            c(&mut e);
            e
        })
    }

    const FAIL: Verdict = Verdict::Retry { retry_after: None };

    #[test]
    fn health_transitions() {
        let ep = endpoint();
        // Healthy and delivered: no write at all.
        assert!(change(&ep, Verdict::Delivered, 10, 100).is_none());
        // First failure starts the clock.
        let failing = apply(&ep, FAIL, 10, 100).unwrap();
        assert_eq!(failing.failing_since_ms, Some(10));
        assert!(failing.enabled);
        // Later failures within the limit: no write.
        assert!(change(&failing, FAIL, 109, 100).is_none());
        assert!(change(&failing, Verdict::Aborted, 50, 100).is_none());
        // A success clears it.
        let healed = apply(&failing, Verdict::Delivered, 60, 100).unwrap();
        assert_eq!(healed.failing_since_ms, None);
        // At the limit: disabled, and the clock restarts.
        let off = apply(&failing, FAIL, 110, 100).unwrap();
        assert!(!off.enabled);
        assert_eq!(off.failing_since_ms, None);
        assert_eq!(off.updated_ms, 110);
        assert!(
            off.disabled_reason
                .as_deref()
                .unwrap()
                .starts_with("failing for 0s (every attempt since 1970-01-01T00:00:00.010Z"),
            "{:?}",
            off.disabled_reason
        );
        // Already disabled: nothing more.
        let mut was_off = failing.clone();
        was_off.enabled = false;
        assert!(change(&was_off, FAIL, 500, 100).is_none());
        assert!(change(&was_off, Verdict::Gone, 500, 100).is_none());
        // 410 disables at once.
        let gone = apply(&ep, Verdict::Gone, 7, 100).unwrap();
        assert!(!gone.enabled);
        assert!(gone.disabled_reason.unwrap().starts_with("410 Gone"));
    }

    #[test]
    fn change_rechecks_the_stored_endpoint() {
        let ep = endpoint();
        let c = change(&ep, FAIL, 10, 100).unwrap();
        // Meanwhile another failure set the clock earlier: kept.
        let mut stored = ep.clone();
        stored.failing_since_ms = Some(3);
        c(&mut stored);
        assert_eq!(stored.failing_since_ms, Some(3));
        let mut failing = ep.clone();
        failing.failing_since_ms = Some(0);
        let c = change(&failing, FAIL, 200, 100).unwrap();
        // Meanwhile a success cleared it: not disabled.
        let mut stored = ep.clone();
        c(&mut stored);
        assert!(stored.enabled);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(59_999), "59s");
        assert_eq!(human(61_000), "1m 1s");
        assert_eq!(human(3_600_000 * 2 + 60_000 * 10), "2h 10m");
        assert_eq!(human(5 * 86_400_000 + 3 * 3_600_000), "5d 3h");
        assert_eq!(human(-5), "0s");
    }
}
