//! The durable event log beneath the hub, as a trait with an in-memory implementation here
//! and SQLite / NATS JetStream implementations in their own crates.
//!
//! Contract every implementation keeps:
//! - ids are one global, strictly increasing sequence (1, 2, ...), assigned at append;
//! - `append` returns only once the batch is durable under the configured durability, and
//!   a batch is all or nothing;
//! - after the batch is durable and before `append` returns, the [`CommitSink`] is called with
//!   the new events, from one place at a time, in id order (the hub's fan-out relies on it);
//! - a read issued after the sink saw an event also sees that event (no seam at resume);
//! - reads have no holes: if a read returns event N, it also returns every earlier retained
//!   matching event after the cursor (a log that commits or becomes visible out of order must
//!   cap reads at its committed head);
//! - reads keep working after `close` (shutdown drains streams that may still read);
//! - a publish whose idempotency key was seen within the dedupe window stores nothing and
//!   answers with the earlier event.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;

use crate::{Event, LogError, NewEvent, Pattern, Topic};

/// Result of appending one event.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored event (for a duplicate: the earlier one).
    pub event: Arc<Event>,
    /// True when the idempotency key matched an earlier publish.
    pub duplicate: bool,
}

/// Receives committed events in id order (the hub's fan-out).
pub trait CommitSink: Send + Sync + 'static {
    /// Called once per committed batch, never concurrently, in id order.
    fn committed(&self, events: &[Arc<Event>]);
}

/// What `GET /api/v1/topics` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: Topic,
    /// Id of its newest event.
    pub last_id: u64,
    /// Events retained.
    pub count: u64,
}

/// The durable log. Held as `Arc<dyn Log>`; the backend is chosen at start-up.
pub trait Log: Send + Sync + 'static {
    /// Stores a batch durably, all or nothing. One result per input, in order.
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>>;

    /// Up to `limit` retained events with id > `after` whose topic matches any pattern,
    /// in id order.
    fn read<'a>(
        &'a self,
        patterns: &'a [Pattern],
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>>;

    /// The newest `limit` matching events, in id order.
    fn latest<'a>(
        &'a self,
        patterns: &'a [Pattern],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>>;

    /// Topics with retained events whose name starts with `prefix`, sorted by name.
    fn topics<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<TopicInfo>, LogError>>;

    /// The id of the newest committed event (0 when empty).
    fn head(&self) -> u64;

    /// The highest id that retention removed from any topic matching the patterns (0 when
    /// none): a cursor below it may have missed events.
    fn floor(&self, patterns: &[Pattern]) -> u64;

    /// Installs the fan-out. Called once, before the first append.
    fn set_sink(&self, sink: Arc<dyn CommitSink>);

    /// Background upkeep: age-based retention, expired idempotency keys. Called periodically.
    fn maintain(&self) -> BoxFuture<'_, Result<(), LogError>>;

    /// Whether the log can take writes now (for `/readyz`).
    fn ready(&self) -> Result<(), LogError>;

    /// Outbound webhook endpoints and deliveries. Deliveries for published events are
    /// written by `append` in the same durable write as the events.
    fn webhooks(&self) -> std::sync::Arc<dyn crate::webhook::Webhooks>;

    /// Queues shared with the other nodes of a cluster. `None` (a log of one node): the
    /// server keeps its queues itself, as events in this log.
    fn shared_queues(&self) -> Option<Arc<dyn crate::queue::SharedQueues>> {
        None
    }

    /// Flushes and stops; later appends fail with [`LogError::Closed`].
    fn close(&self) -> BoxFuture<'_, Result<(), LogError>>;
}

/// Limits for the topics matching one pattern.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// Which topics; the first rule that matches wins.
    pub pattern: Pattern,
    /// Events kept per topic.
    pub max_events: u64,
    /// Age after which events are removed.
    pub max_age: Duration,
}

/// Retention per topic: the first matching rule, else the default.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Rules in config order.
    pub rules: Vec<RetentionRule>,
    /// Events kept per topic when no rule matches (default 10,000).
    pub default_max_events: u64,
    /// Age limit when no rule matches (default 24 h).
    pub default_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default_max_events: 10_000,
            default_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl Retention {
    /// `(max_events, max_age)` for a topic.
    pub fn limits(&self, topic: &str) -> (u64, Duration) {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(topic))
            .map(|r| (r.max_events, r.max_age))
            .unwrap_or((self.default_max_events, self.default_max_age))
    }

    /// The longest age any rule keeps (for a quick "is anything old enough to prune" test).
    pub fn longest_age(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.max_age)
            .chain([self.default_max_age])
            .max()
            .unwrap_or_default()
    }

    /// The shortest age any rule keeps.
    pub fn shortest_age(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.max_age)
            .chain([self.default_max_age])
            .min()
            .unwrap_or_default()
    }
}

/// Settings every log takes.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Retention per topic.
    pub retention: Retention,
    /// How long an idempotency key is remembered (default 2 min).
    pub dedupe_window: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            dedupe_window: Duration::from_secs(120),
        }
    }
}

/// Per-topic bookkeeping shared by the log implementations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Newest event id in the topic.
    pub last_id: u64,
    /// Events retained.
    pub count: u64,
    /// Highest id that retention removed from this topic.
    pub pruned_through: u64,
}

/// Per-topic stats keyed by topic, kept in memory by every log for `topics`, `floor` and
/// narrowing pattern reads to concrete topics.
#[derive(Debug, Default)]
pub struct TopicTable {
    map: HashMap<Topic, TopicStats>,
}

impl TopicTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stats of one topic.
    pub fn get(&self, topic: &str) -> Option<&TopicStats> {
        self.map.get(topic)
    }

    /// Stats of one topic, created empty when missing.
    pub fn entry(&mut self, topic: &Topic) -> &mut TopicStats {
        if !self.map.contains_key(topic.as_str()) {
            self.map.insert(topic.clone(), TopicStats::default());
        }
        self.map.get_mut(topic.as_str()).expect("inserted above")
    }

    /// Records an appended event.
    pub fn appended(&mut self, topic: &Topic, id: u64) {
        let s = self.entry(topic);
        s.last_id = s.last_id.max(id);
        s.count += 1;
    }

    /// Records `n` events removed from a topic, the newest of them being `through`.
    pub fn pruned(&mut self, topic: &Topic, n: u64, through: u64) {
        let s = self.entry(topic);
        s.count = s.count.saturating_sub(n);
        s.pruned_through = s.pruned_through.max(through);
    }

    /// See [`Log::floor`].
    pub fn floor(&self, patterns: &[Pattern]) -> u64 {
        let mut floor = 0;
        for p in patterns {
            if p.is_literal() {
                if let Some(s) = self.map.get(p.as_str()) {
                    floor = floor.max(s.pruned_through);
                }
            } else {
                for (t, s) in &self.map {
                    if s.pruned_through > floor && p.matches(t.as_str()) {
                        floor = s.pruned_through;
                    }
                }
            }
        }
        floor
    }

    /// See [`Log::topics`].
    pub fn list(&self, prefix: &str) -> Vec<TopicInfo> {
        let mut out: Vec<TopicInfo> = self
            .map
            .iter()
            .filter(|(t, s)| s.count > 0 && t.as_str().starts_with(prefix))
            .map(|(t, s)| TopicInfo {
                topic: t.clone(),
                last_id: s.last_id,
                count: s.count,
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// The concrete topics with retained events matching the patterns, or `None` when
    /// there are more than `max` (the caller then scans by id instead).
    pub fn resolve(&self, patterns: &[Pattern], max: usize) -> Option<Vec<Topic>> {
        let mut out = Vec::new();
        if patterns.iter().all(Pattern::is_literal) {
            for p in patterns {
                if let Some((t, s)) = self.map.get_key_value(p.as_str())
                    && s.count > 0
                    && !out.contains(t)
                {
                    out.push(t.clone());
                }
            }
            return Some(out);
        }
        for (t, s) in &self.map {
            if s.count > 0 && patterns.iter().any(|p| p.matches(t.as_str())) {
                if out.len() == max {
                    return None;
                }
                out.push(t.clone());
            }
        }
        Some(out)
    }

    /// Every topic and its stats.
    pub fn iter(&self) -> impl Iterator<Item = (&Topic, &TopicStats)> {
        self.map.iter()
    }

    /// Drops topics with nothing retained and nothing pruned worth remembering.
    pub fn forget_empty(&mut self) {
        self.map.retain(|_, s| s.count > 0 || s.pruned_through > 0);
    }
}
