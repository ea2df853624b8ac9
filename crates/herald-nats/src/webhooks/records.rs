//! Delivery state: the small, changing part of a delivery, stored as JSON in the KV bucket
//! `<stream>_dlvstate` under `<endpoint id>.<delivery id>`, and [`Mirror`], every node's copy
//! of that bucket in memory.
//!
//! The request body never changes and lives in the deliveries stream (its sequence is the
//! delivery id); attempts live in `<stream>_attempts`. Keeping the state small keeps the
//! watch that every node runs over it cheap, and the mirror too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use herald_core::webhook::{Delivery, NewDelivery, Next, Outcome, Status};
use serde::{Deserialize, Serialize};

/// Everything about a delivery except its body and its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) event_id: u64,
    pub(crate) msg_id: String,
    pub(crate) event_type: String,
    pub(crate) status: Status,
    pub(crate) attempts: u32,
    pub(crate) next_at_ms: i64,
    #[serde(default)]
    pub(crate) last_chance: bool,
    pub(crate) created_ms: i64,
    /// The generation of its work-queue message: a manual retry publishes a new message with
    /// the next generation, and a message of an older one is stale (dropped when it comes).
    #[serde(default)]
    pub(crate) generation: u32,
}

impl State {
    /// A new delivery, due at `now_ms`.
    pub(crate) fn new(d: &NewDelivery, now_ms: i64) -> Self {
        Self {
            event_id: d.event_id,
            msg_id: d.msg_id.clone(),
            event_type: d.event_type.clone(),
            status: Status::Pending,
            attempts: 0,
            next_at_ms: now_ms,
            last_chance: false,
            created_ms: now_ms,
            generation: 0,
        }
    }

    /// An attempt's outcome (the transitions of [`herald_core::webhook::apply_outcome`] and
    /// the SQL stores).
    pub(crate) fn apply(&mut self, o: &Outcome) {
        self.attempts = self.attempts.saturating_add(1);
        match o.next {
            Next::Succeeded => {
                self.status = Status::Succeeded;
                self.next_at_ms = o.attempt.at_ms;
            }
            Next::Failed => {
                self.status = Status::Failed;
                self.next_at_ms = o.attempt.at_ms;
            }
            Next::RetryAt(t) => {
                self.status = Status::Pending;
                self.next_at_ms = t;
            }
        }
        self.last_chance = false;
    }

    /// A manual retry ([`herald_core::webhook::retry_now`]): due now; a finished delivery gets
    /// one last attempt. The next generation: its work-queue message is published anew (an
    /// attempt in progress records over it).
    pub(crate) fn retry_now(&mut self, now_ms: i64) {
        if self.status != Status::Pending {
            self.last_chance = true;
        }
        self.status = Status::Pending;
        self.next_at_ms = now_ms;
        self.generation = self.generation.wrapping_add(1);
    }

    /// The delivery as the dispatcher and the API see it.
    pub(crate) fn delivery(&self, id: u64, endpoint: &str, body: String) -> Delivery {
        Delivery {
            id,
            endpoint: endpoint.to_owned(),
            event_id: self.event_id,
            msg_id: self.msg_id.clone(),
            event_type: self.event_type.clone(),
            body,
            status: self.status,
            attempts: self.attempts,
            next_at_ms: self.next_at_ms,
            last_chance: self.last_chance,
            created_ms: self.created_ms,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        // A struct of strings and numbers always serializes.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

/// `<endpoint>.<id>`: the key of a delivery in the state and attempts buckets.
pub(crate) fn key(endpoint: &str, id: u64) -> String {
    format!("{endpoint}.{id}")
}

/// The endpoint and delivery id of a key.
pub(crate) fn parse_key(key: &str) -> Option<(&str, u64)> {
    let (endpoint, id) = key.rsplit_once('.')?;
    let id = id.parse().ok()?;
    (!endpoint.is_empty()).then_some((endpoint, id))
}

/// One delivery's state at a revision of the bucket.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) revision: u64,
    pub(crate) state: State,
}

#[derive(Debug, Default)]
struct Recs {
    all: BTreeMap<u64, Rec>,
    /// Ids of the pending ones (due work is looked up among these only).
    pending: BTreeSet<u64>,
}

/// Pending work of one endpoint: how many, and the earliest next attempt.
pub(crate) type Stats = (String, u64, Option<i64>);

/// This node's copy of the state bucket, by endpoint and id.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    endpoints: HashMap<String, Recs>,
}

impl Mirror {
    /// Takes a state at a revision unless a newer one is known; whether it did.
    pub(crate) fn put(&mut self, endpoint: &str, id: u64, revision: u64, state: State) -> bool {
        if !self.endpoints.contains_key(endpoint) {
            self.endpoints.insert(endpoint.to_owned(), Recs::default());
        }
        let Some(recs) = self.endpoints.get_mut(endpoint) else {
            return false;
        };
        if recs.all.get(&id).is_some_and(|r| r.revision >= revision) {
            return false;
        }
        if state.status == Status::Pending {
            recs.pending.insert(id);
        } else {
            recs.pending.remove(&id);
        }
        recs.all.insert(id, Rec { revision, state });
        true
    }

    pub(crate) fn remove(&mut self, endpoint: &str, id: u64) {
        if let Some(recs) = self.endpoints.get_mut(endpoint) {
            recs.all.remove(&id);
            recs.pending.remove(&id);
            if recs.all.is_empty() {
                self.endpoints.remove(endpoint);
            }
        }
    }

    pub(crate) fn drop_endpoint(&mut self, endpoint: &str) {
        self.endpoints.remove(endpoint);
    }

    pub(crate) fn get(&self, endpoint: &str, id: u64) -> Option<Rec> {
        self.endpoints.get(endpoint)?.all.get(&id).cloned()
    }

    /// Every pending delivery: endpoint, id, generation.
    pub(crate) fn pending(&self) -> Vec<(String, u64, u32)> {
        self.endpoints
            .iter()
            .flat_map(|(e, r)| {
                r.pending.iter().filter_map(move |id| {
                    r.all
                        .get(id)
                        .map(|rec| (e.clone(), *id, rec.state.generation))
                })
            })
            .collect()
    }

    /// Whether an endpoint has pending deliveries, and the earliest next attempt among them
    /// that lies after `now_ms` (`None`: none pending; `Some(None)`: pending ones, all due).
    pub(crate) fn upcoming(&self, endpoint: &str, now_ms: i64) -> Option<Option<i64>> {
        let recs = self.endpoints.get(endpoint)?;
        if recs.pending.is_empty() {
            return None;
        }
        Some(
            recs.pending
                .iter()
                .filter_map(|id| recs.all.get(id))
                .map(|r| r.state.next_at_ms)
                .filter(|&t| t > now_ms)
                .min(),
        )
    }

    /// Up to `limit` deliveries of an endpoint with id > `after`, optionally of one status.
    pub(crate) fn page(
        &self,
        endpoint: &str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> Vec<(u64, State)> {
        let Some(recs) = self.endpoints.get(endpoint) else {
            return Vec::new();
        };
        recs.all
            .range(after.saturating_add(1)..)
            .filter(|(_, r)| status.is_none_or(|s| r.state.status == s))
            .take(limit)
            .map(|(id, r)| (*id, r.state.clone()))
            .collect()
    }

    /// Failed deliveries of an endpoint created at or after `since_ms`.
    pub(crate) fn failed_since(&self, endpoint: &str, since_ms: i64) -> Vec<u64> {
        let Some(recs) = self.endpoints.get(endpoint) else {
            return Vec::new();
        };
        recs.all
            .iter()
            .filter(|(_, r)| r.state.status == Status::Failed && r.state.created_ms >= since_ms)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Pending work per endpoint, for the endpoints `wanted` says yes to, by endpoint id.
    pub(crate) fn stats(&self, wanted: impl Fn(&str) -> bool) -> Vec<Stats> {
        let mut out: Vec<Stats> = self
            .endpoints
            .iter()
            .filter(|(e, r)| !r.pending.is_empty() && wanted(e))
            .map(|(e, r)| {
                let oldest = r
                    .pending
                    .iter()
                    .filter_map(|id| r.all.get(id))
                    .map(|r| r.state.next_at_ms)
                    .min();
                (e.clone(), r.pending.len() as u64, oldest)
            })
            .collect();
        out.sort();
        out
    }

    /// Finished deliveries created before `cutoff_ms` (at most `limit`).
    pub(crate) fn finished_before(&self, cutoff_ms: i64, limit: usize) -> Vec<(String, u64)> {
        self.endpoints
            .iter()
            .flat_map(|(e, r)| {
                r.all
                    .iter()
                    .filter(|(_, r)| r.state.status != Status::Pending)
                    .filter(move |(_, r)| r.state.created_ms < cutoff_ms)
                    .map(move |(id, _)| (e.clone(), *id))
            })
            .take(limit)
            .collect()
    }

    /// Endpoints with deliveries that `known` does not know, whose newest delivery was created
    /// before `cutoff_ms` (left by a delete racing an outbox).
    pub(crate) fn orphans(&self, known: impl Fn(&str) -> bool, cutoff_ms: i64) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|(e, _)| !known(e))
            .filter(|(_, r)| {
                r.all
                    .values()
                    .map(|r| r.state.created_ms)
                    .max()
                    .is_none_or(|t| t < cutoff_ms)
            })
            .map(|(e, _)| e.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use herald_core::webhook::Attempt;

    use super::*;

    fn state(created: i64) -> State {
        State {
            event_id: 7,
            msg_id: "msg_7".into(),
            event_type: "message".into(),
            status: Status::Pending,
            attempts: 0,
            next_at_ms: created,
            last_chance: false,
            created_ms: created,
            generation: 0,
        }
    }

    fn outcome(next: Next) -> Outcome {
        Outcome {
            delivery: 1,
            attempt: Attempt {
                at_ms: 50,
                status_code: Some(500),
                duration_ms: 3,
                error: None,
                response_body: String::new(),
            },
            next,
        }
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(key("wh_1", 42), "wh_1.42");
        assert_eq!(parse_key("wh_1.42"), Some(("wh_1", 42)));
        assert_eq!(parse_key("wh_1"), None);
        assert_eq!(parse_key(".4"), None);
        assert_eq!(parse_key("wh_1.x"), None);
    }

    #[test]
    fn outcomes_and_retries_move_the_state() {
        let mut s = state(10);
        s.apply(&outcome(Next::RetryAt(80)));
        assert_eq!(
            (s.status, s.attempts, s.next_at_ms),
            (Status::Pending, 1, 80)
        );
        s.apply(&outcome(Next::Failed));
        assert_eq!(
            (s.status, s.attempts, s.next_at_ms),
            (Status::Failed, 2, 50)
        );
        s.retry_now(90);
        assert_eq!(
            (s.status, s.next_at_ms, s.last_chance, s.generation),
            (Status::Pending, 90, true, 1)
        );
        s.apply(&outcome(Next::Succeeded));
        assert_eq!((s.status, s.last_chance), (Status::Succeeded, false));
        let back = State::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert!(State::decode(b"{").is_none());
    }

    #[test]
    fn the_mirror_keeps_the_newest_revision_and_indexes_pending_work() {
        let mut m = Mirror::default();
        assert!(m.put("e", 1, 5, state(10)));
        assert!(!m.put("e", 1, 4, state(99)), "older revision");
        assert_eq!(m.get("e", 1).unwrap().state.created_ms, 10);
        let mut done = state(20);
        done.status = Status::Failed;
        assert!(m.put("e", 2, 6, done));
        assert!(m.put("e", 3, 7, state(5)));
        assert_eq!(m.upcoming("e", 10), Some(None), "both pending ones are due");
        assert_eq!(m.upcoming("e", 7), Some(Some(10)));
        assert_eq!(m.upcoming("x", 7), None);
        assert_eq!(m.stats(|_| true), vec![("e".to_owned(), 2, Some(5))]);
        assert!(m.stats(|_| false).is_empty());
        assert_eq!(m.page("e", None, 1, 10).len(), 2);
        assert_eq!(m.page("e", Some(Status::Failed), 0, 10)[0].0, 2);
        assert_eq!(m.failed_since("e", 20), vec![2]);
        assert!(m.failed_since("e", 21).is_empty());
        assert_eq!(m.finished_before(21, 10), vec![("e".to_owned(), 2)]);
        assert_eq!(m.orphans(|_| false, 100), vec!["e".to_owned()]);
        assert!(m.orphans(|_| false, 20).is_empty(), "too young");
        m.remove("e", 2);
        assert!(m.get("e", 2).is_none());
        m.drop_endpoint("e");
        assert!(m.get("e", 1).is_none());
    }
}
