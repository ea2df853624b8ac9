//! Outbound webhooks as the log sees them: endpoints (subscriptions), deliveries and their
//! attempts, and the [`Webhooks`] trait every [`Log`](crate::Log) implements.
//!
//! The no-loss rule: a delivery for every enabled endpoint matching an event is written in the
//! same durable append as the event ([`EndpointSet::matching`] is called by the log inside
//! its append), so an acknowledged publish can never lose a delivery. The dispatcher (another
//! crate) only reads due deliveries and records the outcome of each attempt.
//!
//! Shared by every implementation: the endpoint model (stored as JSON), the in-memory
//! [`EndpointSet`] with compiled patterns, [`Delivery`] and [`Attempt`], and the state
//! transitions in [`Outcome`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{Event, LogError, Pattern};

/// How an endpoint's requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// Standard Webhooks `v1` (HMAC-SHA256 with a `whsec_` secret) plus `x-hub-signature-256`.
    #[default]
    Hmac,
    /// Standard Webhooks `v1a` (ed25519 with a `whsk_` key; receivers hold the `whpk_` key).
    Ed25519,
}

/// An outbound webhook subscription, as stored (JSON) and served by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `wh_<ulid>`.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Topic patterns; an event matching any of them is delivered.
    pub topics: Vec<String>,
    /// Event types delivered; empty means every type.
    #[serde(default)]
    pub events: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most requests per second (none: unlimited).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Disabled endpoints get no new deliveries and their pending ones wait.
    pub enabled: bool,
    /// Why the server disabled it (`410 Gone`, failing for too long).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// How requests are signed.
    #[serde(default)]
    pub signing: Signing,
    /// `whsec_...` (hmac) or `whsk_...` (ed25519).
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until_ms`.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// End of the rotation overlap.
    #[serde(default)]
    pub previous_until_ms: Option<i64>,
    /// Since when every attempt failed (cleared by a success).
    #[serde(default)]
    pub failing_since_ms: Option<i64>,
    /// Created at (ms since the epoch).
    pub created_ms: i64,
    /// Last changed at.
    pub updated_ms: i64,
}

impl Endpoint {
    /// An enabled HMAC endpoint with no filters beyond its topics, no custom headers, no rate
    /// limit and no history, created at `now_ms` (callers then set what differs).
    pub fn new(
        id: impl Into<String>,
        url: impl Into<String>,
        topics: Vec<String>,
        secret: impl Into<String>,
        now_ms: i64,
    ) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            topics,
            events: Vec::new(),
            description: String::new(),
            headers: BTreeMap::new(),
            rate_limit: None,
            enabled: true,
            disabled_reason: None,
            signing: Signing::Hmac,
            secret: secret.into(),
            previous_secret: None,
            previous_until_ms: None,
            failing_since_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// An endpoint with its patterns parsed, as the log matches events against it.
#[derive(Debug)]
pub struct CompiledEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    patterns: Vec<Pattern>,
}

impl CompiledEndpoint {
    /// Parses the patterns.
    ///
    /// # Errors
    /// A pattern that does not parse.
    pub fn new(endpoint: Endpoint) -> Result<Self, crate::ValidationError> {
        let patterns = endpoint
            .topics
            .iter()
            .map(|p| Pattern::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { endpoint, patterns })
    }

    /// Whether an event goes to this endpoint (ignoring `enabled`).
    pub fn wants(&self, event: &Event) -> bool {
        self.patterns
            .iter()
            .any(|p| p.matches(event.topic.as_str()))
            && (self.endpoint.events.is_empty()
                || self.endpoint.events.iter().any(|t| **t == *event.event))
    }
}

/// The endpoints in memory, shared by a log's webhook handle and its writer.
#[derive(Debug, Default)]
pub struct EndpointSet {
    map: RwLock<BTreeMap<String, Arc<CompiledEndpoint>>>,
}

impl EndpointSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one.
    pub fn put(&self, endpoint: Arc<CompiledEndpoint>) {
        self.map
            .write()
            .insert(endpoint.endpoint.id.clone(), endpoint);
    }

    /// Removes one; whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.map.write().remove(id).is_some()
    }

    /// One endpoint.
    pub fn get(&self, id: &str) -> Option<Arc<CompiledEndpoint>> {
        self.map.read().get(id).cloned()
    }

    /// Every endpoint, by id.
    pub fn list(&self) -> Vec<Arc<CompiledEndpoint>> {
        self.map.read().values().cloned().collect()
    }

    /// Whether there are none (appends then skip matching entirely).
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// The enabled endpoints an event goes to.
    pub fn matching(&self, event: &Event) -> Vec<Arc<CompiledEndpoint>> {
        self.map
            .read()
            .values()
            .filter(|e| e.endpoint.enabled && e.wants(event))
            .cloned()
            .collect()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its first or next attempt.
    Pending,
    /// A 2xx answered.
    Succeeded,
    /// No more attempts (schedule exhausted, aborted, endpoint gone).
    Failed,
}

impl Status {
    /// As stored.
    pub fn code(self) -> i64 {
        match self {
            Status::Pending => 0,
            Status::Succeeded => 1,
            Status::Failed => 2,
        }
    }

    /// From the stored code.
    pub fn from_code(c: i64) -> Option<Self> {
        match c {
            0 => Some(Status::Pending),
            1 => Some(Status::Succeeded),
            2 => Some(Status::Failed),
            _ => None,
        }
    }

    /// `pending`, `succeeded`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Status::Pending),
            "succeeded" => Some(Status::Succeeded),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A delivery not stored yet (the `test` endpoint; appends build theirs from the event).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The endpoint.
    pub endpoint: String,
    /// The event (0 for a test message).
    pub event_id: u64,
    /// `webhook-id`, the same on every attempt.
    pub msg_id: String,
    /// `x-webhook-event`.
    pub event_type: String,
    /// The request body.
    pub body: String,
}

impl NewDelivery {
    /// The delivery of a stored event to an endpoint: `webhook-id: msg_<event id>` and the
    /// body `{"id","topic","event","data","time"}`.
    pub fn for_event(endpoint: &str, event: &Event) -> Self {
        let mut body = Vec::with_capacity(event.data.get().len() + 128);
        event.write_json(&mut body);
        Self {
            endpoint: endpoint.to_owned(),
            event_id: event.id,
            msg_id: format!("msg_{}", event.id),
            event_type: event.event.to_string(),
            body: String::from_utf8(body).unwrap_or_default(),
        }
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Store-assigned, increasing.
    pub id: u64,
    /// The endpoint.
    pub endpoint: String,
    /// The event (0 for a test message).
    pub event_id: u64,
    /// `webhook-id`.
    pub msg_id: String,
    /// `x-webhook-event`.
    pub event_type: String,
    /// The request body.
    pub body: String,
    /// Where it stands.
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only), ms since the epoch.
    pub next_at_ms: i64,
    /// Set by a manual retry or recover: one more attempt, then `failed` if it fails.
    pub last_chance: bool,
    /// Created at.
    pub created_ms: i64,
}

/// One attempt, as recorded and served by the deliveries API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Started at (ms since the epoch).
    pub at_ms: i64,
    /// The response status, if one came.
    pub status_code: Option<u16>,
    /// How long it took.
    pub duration_ms: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: String,
}

/// Most response body bytes kept per attempt.
pub const RESPONSE_BODY_KEPT: usize = 4096;

/// A delivery with its attempts (deliveries API).
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// The delivery.
    pub delivery: Delivery,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered.
    Succeeded,
    /// Try again at this time.
    RetryAt(i64),
    /// No more attempts.
    Failed,
}

/// An attempt's result, recorded by [`Webhooks::record`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery.
    pub delivery: u64,
    /// The attempt.
    pub attempt: Attempt,
    /// Its new state.
    pub next: Next,
}

/// Pending work of one endpoint (metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The endpoint.
    pub endpoint: String,
    /// Pending deliveries.
    pub pending: u64,
    /// The earliest `next_at` among them (ms since the epoch).
    pub oldest_due_ms: Option<i64>,
}

/// Which endpoints got new due deliveries, and a wake-up for the dispatcher.
#[derive(Debug, Default)]
pub struct Signal {
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Signal {
    /// Marks endpoints as having new due work and wakes the dispatcher.
    pub fn mark<'a>(&self, endpoints: impl IntoIterator<Item = &'a str>) {
        let mut dirty = self.dirty.lock();
        let before = dirty.len();
        for e in endpoints {
            if !dirty.contains(e) {
                dirty.insert(e.to_owned());
            }
        }
        let changed = dirty.len() != before;
        drop(dirty);
        if changed {
            self.notify.notify_one();
        }
    }

    /// Wakes the dispatcher without naming endpoints (endpoint changes).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Takes the marked endpoints.
    pub fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.dirty.lock())
    }

    /// Waits for the next mark or wake.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// What [`Webhooks::due`] answers: the due deliveries, and when the next one is due.
pub type Due = (Vec<Delivery>, Option<i64>);

/// A change to an endpoint, applied where the log serializes its writes.
pub type EndpointChange = Box<dyn FnOnce(&mut Endpoint) + Send>;

/// Outbound webhook storage: endpoints and deliveries. Every [`Log`](crate::Log) has one
/// ([`Log::webhooks`](crate::Log::webhooks)); deliveries of published events are written by
/// the log's append itself.
pub trait Webhooks: Send + Sync + 'static {
    /// Stores a new endpoint (its id is set by the caller).
    fn create(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Endpoint, LogError>>;

    /// Applies `change` to an endpoint and stores it; `None` when there is no such endpoint.
    /// An invalid result (bad pattern) is an error and changes nothing.
    fn modify(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> BoxFuture<'_, Result<Option<Endpoint>, LogError>>;

    /// Removes an endpoint and its deliveries; whether it existed.
    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool, LogError>>;

    /// One endpoint (from memory).
    fn get(&self, id: &str) -> Option<Endpoint>;

    /// Every endpoint, by id (from memory).
    fn list(&self) -> Vec<Endpoint>;

    /// Stores deliveries outside an append (the `test` message), due now.
    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> BoxFuture<'_, Result<Vec<u64>, LogError>>;

    /// Up to `limit` pending deliveries of an endpoint due at `now_ms`, skipping the ids in
    /// `skip` (in flight), oldest due first; and the due time of the next pending delivery
    /// not returned (`Some(now_ms)` when more are due already).
    fn due<'a>(
        &'a self,
        endpoint: &'a str,
        now_ms: i64,
        limit: usize,
        skip: &'a HashSet<u64>,
    ) -> BoxFuture<'a, Result<Due, LogError>>;

    /// Records attempts and the deliveries' new states.
    fn record(&self, outcomes: Vec<Outcome>) -> BoxFuture<'_, Result<(), LogError>>;

    /// Up to `limit` of an endpoint's deliveries with id > `after`, oldest first, optionally
    /// of one status, with their attempts.
    fn deliveries<'a>(
        &'a self,
        endpoint: &'a str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>, LogError>>;

    /// Makes deliveries due now for one last attempt: one delivery (`delivery = Some`), or
    /// every failed delivery created at or after `since_ms`. Returns how many.
    fn retry(
        &self,
        endpoint: &str,
        delivery: Option<u64>,
        since_ms: i64,
    ) -> BoxFuture<'_, Result<u64, LogError>>;

    /// Pending deliveries per endpoint (metrics).
    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStats>, LogError>>;

    /// The dispatcher's wake-up.
    fn signal(&self) -> Arc<Signal>;
}

/// Applies outcomes to deliveries kept in memory (the [`MemoryLog`](crate::MemoryLog)) and
/// computes the same transitions the SQL stores make.
pub fn apply_outcome(d: &mut Delivery, o: &Outcome) {
    d.attempts += 1;
    match o.next {
        Next::Succeeded => d.status = Status::Succeeded,
        Next::Failed => d.status = Status::Failed,
        Next::RetryAt(t) => {
            d.status = Status::Pending;
            d.next_at_ms = t;
        }
    }
    d.last_chance = false;
}

/// Outbound webhooks kept in memory: the [`MemoryLog`](crate::MemoryLog)'s.
#[derive(Debug, Default)]
pub struct MemoryWebhooks {
    endpoints: EndpointSet,
    state: Mutex<MemoryDeliveries>,
    signal: Arc<Signal>,
}

#[derive(Debug, Default)]
struct MemoryDeliveries {
    next_id: u64,
    by_id: BTreeMap<u64, DeliveryRecord>,
    by_endpoint: HashMap<String, BTreeSet<u64>>,
}

impl MemoryDeliveries {
    fn insert(&mut self, new: NewDelivery, now_ms: i64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.by_endpoint
            .entry(new.endpoint.clone())
            .or_default()
            .insert(id);
        self.by_id.insert(
            id,
            DeliveryRecord {
                delivery: Delivery {
                    id,
                    endpoint: new.endpoint,
                    event_id: new.event_id,
                    msg_id: new.msg_id,
                    event_type: new.event_type,
                    body: new.body,
                    status: Status::Pending,
                    attempts: 0,
                    next_at_ms: now_ms,
                    last_chance: false,
                    created_ms: now_ms,
                },
                attempts: Vec::new(),
            },
        );
        id
    }
}

impl MemoryWebhooks {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the log for every appended event, in id order: one delivery per matching
    /// enabled endpoint.
    pub fn append_hook(&self, events: &[Arc<Event>]) {
        if self.endpoints.is_empty() {
            return;
        }
        let now = crate::event::now_ms();
        let mut marked = Vec::new();
        let mut state = self.state.lock();
        for ev in events {
            for ep in self.endpoints.matching(ev) {
                state.insert(NewDelivery::for_event(&ep.endpoint.id, ev), now);
                marked.push(ep.endpoint.id.clone());
            }
        }
        drop(state);
        self.signal.mark(marked.iter().map(String::as_str));
    }
}

fn invalid(e: impl std::fmt::Display) -> LogError {
    LogError::Invalid(e.to_string())
}

impl Webhooks for MemoryWebhooks {
    fn create(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Endpoint, LogError>> {
        let r = CompiledEndpoint::new(endpoint.clone())
            .map(|c| {
                self.endpoints.put(Arc::new(c));
                self.signal.wake();
                endpoint
            })
            .map_err(invalid);
        Box::pin(async move { r })
    }

    fn modify(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> BoxFuture<'_, Result<Option<Endpoint>, LogError>> {
        let r = (|| {
            let _serial = self.state.lock();
            let Some(cur) = self.endpoints.get(id) else {
                return Ok(None);
            };
            let mut ep = cur.endpoint.clone();
            change(&mut ep);
            let c = CompiledEndpoint::new(ep.clone()).map_err(invalid)?;
            self.endpoints.put(Arc::new(c));
            Ok(Some(ep))
        })();
        self.signal.mark([id]);
        Box::pin(async move { r })
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool, LogError>> {
        let mut state = self.state.lock();
        let existed = self.endpoints.remove(id);
        if let Some(ids) = state.by_endpoint.remove(id) {
            for d in ids {
                state.by_id.remove(&d);
            }
        }
        drop(state);
        Box::pin(async move { Ok(existed) })
    }

    fn get(&self, id: &str) -> Option<Endpoint> {
        self.endpoints.get(id).map(|c| c.endpoint.clone())
    }

    fn list(&self) -> Vec<Endpoint> {
        self.endpoints
            .list()
            .into_iter()
            .map(|c| c.endpoint.clone())
            .collect()
    }

    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        let now = crate::event::now_ms();
        let mut state = self.state.lock();
        let mut marked = Vec::new();
        let ids = deliveries
            .into_iter()
            .map(|d| {
                marked.push(d.endpoint.clone());
                state.insert(d, now)
            })
            .collect();
        drop(state);
        self.signal.mark(marked.iter().map(String::as_str));
        Box::pin(async move { Ok(ids) })
    }

    fn due<'a>(
        &'a self,
        endpoint: &'a str,
        now_ms: i64,
        limit: usize,
        skip: &'a HashSet<u64>,
    ) -> BoxFuture<'a, Result<Due, LogError>> {
        let state = self.state.lock();
        let mut pending: Vec<&Delivery> = state
            .by_endpoint
            .get(endpoint)
            .into_iter()
            .flatten()
            .filter_map(|id| state.by_id.get(id))
            .map(|r| &r.delivery)
            .filter(|d| d.status == Status::Pending && !skip.contains(&d.id))
            .collect();
        pending.sort_by_key(|d| (d.next_at_ms, d.id));
        let mut out = Vec::new();
        let mut next = None;
        for d in pending {
            if d.next_at_ms <= now_ms && out.len() < limit {
                out.push(d.clone());
            } else {
                next = Some(d.next_at_ms.max(now_ms));
                break;
            }
        }
        drop(state);
        Box::pin(async move { Ok((out, next)) })
    }

    fn record(&self, outcomes: Vec<Outcome>) -> BoxFuture<'_, Result<(), LogError>> {
        let mut state = self.state.lock();
        for o in outcomes {
            if let Some(r) = state.by_id.get_mut(&o.delivery) {
                apply_outcome(&mut r.delivery, &o);
                r.attempts.push(o.attempt);
            }
        }
        drop(state);
        Box::pin(async { Ok(()) })
    }

    fn deliveries<'a>(
        &'a self,
        endpoint: &'a str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>, LogError>> {
        let state = self.state.lock();
        let out = state
            .by_endpoint
            .get(endpoint)
            .into_iter()
            .flat_map(|ids| ids.range(after + 1..))
            .filter_map(|id| state.by_id.get(id))
            .filter(|r| status.is_none_or(|s| r.delivery.status == s))
            .take(limit)
            .cloned()
            .collect();
        drop(state);
        Box::pin(async move { Ok(out) })
    }

    fn retry(
        &self,
        endpoint: &str,
        delivery: Option<u64>,
        since_ms: i64,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        let now = crate::event::now_ms();
        let mut state = self.state.lock();
        let ids: Vec<u64> = state
            .by_endpoint
            .get(endpoint)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut n = 0;
        for id in ids {
            let Some(r) = state.by_id.get_mut(&id) else {
                continue;
            };
            let d = &mut r.delivery;
            let hit = match delivery {
                Some(one) => one == id,
                None => d.status == Status::Failed && d.created_ms >= since_ms,
            };
            if hit {
                retry_now(d, now);
                n += 1;
            }
        }
        drop(state);
        if n > 0 {
            self.signal.mark([endpoint]);
        }
        Box::pin(async move { Ok(n) })
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStats>, LogError>> {
        let state = self.state.lock();
        let mut per: BTreeMap<&str, (u64, Option<i64>)> = BTreeMap::new();
        for r in state.by_id.values() {
            if r.delivery.status == Status::Pending {
                let e = per.entry(r.delivery.endpoint.as_str()).or_default();
                e.0 += 1;
                e.1 = Some(e.1.map_or(r.delivery.next_at_ms, |t| t.min(r.delivery.next_at_ms)));
            }
        }
        let out = per
            .into_iter()
            .map(|(e, (pending, oldest))| QueueStats {
                endpoint: e.to_owned(),
                pending,
                oldest_due_ms: oldest,
            })
            .collect();
        drop(state);
        Box::pin(async move { Ok(out) })
    }

    fn signal(&self) -> Arc<Signal> {
        self.signal.clone()
    }
}

/// A manual retry: due now; a delivery that had finished gets one last attempt.
pub fn retry_now(d: &mut Delivery, now_ms: i64) {
    if d.status != Status::Pending {
        d.last_chance = true;
    }
    d.status = Status::Pending;
    d.next_at_ms = now_ms;
}
