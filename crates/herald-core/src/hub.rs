//! The Hub: publish through the log, fan committed events out to subscribers through the
//! pattern index, and resume subscribers from a cursor with no gap and no duplicate.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use parking_lot::RwLock;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::{
    Appended, CommitSink, Event, Log, LogError, NewEvent, Pattern, PatternIndex, TopicInfo,
    ValidationError,
};

/// Events read from the log per history page while a subscriber catches up.
const HISTORY_PAGE: usize = 512;

/// Hub settings (from `[limits]`).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events queued per subscriber before it is dropped as too slow.
    pub subscriber_queue: usize,
    /// Largest event data, encoded.
    pub max_event_bytes: usize,
    /// Most events in one batch publish.
    pub max_batch: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            subscriber_queue: 1024,
            max_event_bytes: 1 << 20,
            max_batch: 1000,
        }
    }
}

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum HubError {
    /// An event's data is larger than `limits.max_event_bytes`.
    #[error("event data is {size} bytes, more than the limit of {limit} (limits.max_event_bytes)")]
    EventTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More events than `limits.max_batch` in one batch.
    #[error("batch has {size} events, more than the limit of {limit} (limits.max_batch)")]
    BatchTooLarge {
        /// Events in the batch.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An empty batch.
    #[error("batch is empty")]
    EmptyBatch,
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Only events published from now on.
    Live,
    /// Every retained event with a larger id, then live events.
    After(u64),
}

impl Cursor {
    /// Parses `now` or a decimal event id.
    ///
    /// # Errors
    /// [`ValidationError::Cursor`] for anything else.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if s == "now" {
            return Ok(Self::Live);
        }
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::Cursor(crate::topic::truncate_for_error(s)));
        }
        s.parse()
            .map(Self::After)
            .map_err(|_| ValidationError::Cursor(s.to_owned()))
    }
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// An event.
    Event(Arc<Event>),
    /// The cursor was older than retention: events between `requested` and `oldest` are gone.
    /// Sent first, as event type `herald.truncated`.
    Truncated {
        /// The cursor the client asked for.
        requested: u64,
        /// The id of the first event it will get.
        oldest: u64,
    },
}

/// Why a subscription ended.
#[derive(Debug, Error)]
pub enum SubscriptionError {
    /// The subscriber did not keep up: its queue overflowed. Reconnect with the last id.
    #[error("subscriber too slow: more than {0} events queued; resume from the last event id")]
    Lagged(usize),
    /// Reading history failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Events stored by publishes (duplicates excluded).
    pub published: AtomicU64,
    /// Events handed to subscriber queues.
    pub delivered: AtomicU64,
    /// Subscribers dropped because their queue overflowed.
    pub dropped_subscribers: AtomicU64,
    /// Live subscriptions.
    pub subscriptions: AtomicUsize,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Arc<Event>>,
    overflowed: AtomicBool,
    patterns: Arc<[Pattern]>,
}

/// Index entry: a slot compared by identity.
#[derive(Clone)]
struct SlotRef(Arc<Slot>);

impl PartialEq for SlotRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

struct HubInner {
    log: Arc<dyn Log>,
    index: RwLock<PatternIndex<SlotRef>>,
    next_slot: AtomicU64,
    config: HubConfig,
    stats: HubStats,
}

/// The hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct FanOut(Weak<HubInner>);

impl CommitSink for FanOut {
    fn committed(&self, events: &[Arc<Event>]) {
        if let Some(inner) = self.0.upgrade() {
            inner.fan_out(events);
        }
    }
}

impl HubInner {
    fn fan_out(&self, events: &[Arc<Event>]) {
        let mut overflowed: Vec<Arc<Slot>> = Vec::new();
        let mut delivered = 0u64;
        {
            let index = self.index.read();
            if index.is_empty() {
                return;
            }
            let mut hits: Vec<&SlotRef> = Vec::new();
            for ev in events {
                hits.clear();
                index.for_each_match(ev.topic.as_str(), |s| hits.push(s));
                if hits.len() > 1 {
                    // One subscription with overlapping patterns gets an event once.
                    hits.sort_unstable_by_key(|s| s.0.id);
                    hits.dedup_by_key(|s| s.0.id);
                }
                for slot in &hits {
                    match slot.0.tx.try_send(ev.clone()) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            if !slot.0.overflowed.swap(true, Ordering::AcqRel) {
                                overflowed.push(slot.0.clone());
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        if !overflowed.is_empty() {
            self.stats
                .dropped_subscribers
                .fetch_add(overflowed.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                subscribers = overflowed.len(),
                queue = self.config.subscriber_queue,
                "dropping slow subscribers"
            );
            let mut index = self.index.write();
            for slot in overflowed {
                unregister(&mut index, &slot);
            }
        }
    }
}

fn unregister(index: &mut PatternIndex<SlotRef>, slot: &Arc<Slot>) {
    let r = SlotRef(slot.clone());
    for p in slot.patterns.iter() {
        index.remove(p, &r);
    }
}

impl Hub {
    /// A hub over `log`; installs itself as the log's fan-out.
    pub fn new(log: Arc<dyn Log>, config: HubConfig) -> Self {
        let inner = Arc::new(HubInner {
            log: log.clone(),
            index: RwLock::new(PatternIndex::new()),
            next_slot: AtomicU64::new(1),
            config,
            stats: HubStats::default(),
        });
        log.set_sink(Arc::new(FanOut(Arc::downgrade(&inner))));
        Self { inner }
    }

    /// The log underneath (for readiness and shutdown).
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.inner.log
    }

    /// Outbound webhook endpoints and deliveries (kept by the log, which writes an event's
    /// deliveries in its own append).
    pub fn webhooks(&self) -> Arc<dyn crate::Webhooks> {
        self.inner.log.webhooks()
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Checks limits, stores a batch durably (all or nothing) and fans it out. Returns once
    /// durable, one result per event.
    ///
    /// # Errors
    /// Limits broken, or the log failed.
    pub async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, HubError> {
        let config = &self.inner.config;
        if batch.is_empty() {
            return Err(HubError::EmptyBatch);
        }
        if batch.len() > config.max_batch {
            return Err(HubError::BatchTooLarge {
                size: batch.len(),
                limit: config.max_batch,
            });
        }
        if let Some(big) = batch.iter().find(|e| e.data_len() > config.max_event_bytes) {
            return Err(HubError::EventTooLarge {
                size: big.data_len(),
                limit: config.max_event_bytes,
            });
        }
        let out = self.inner.log.append(batch).await?;
        let fresh = out.iter().filter(|a| !a.duplicate).count() as u64;
        self.inner
            .stats
            .published
            .fetch_add(fresh, Ordering::Relaxed);
        Ok(out)
    }

    /// Publishes one event.
    ///
    /// # Errors
    /// As [`Hub::publish`].
    pub async fn publish_one(&self, event: NewEvent) -> Result<Appended, HubError> {
        let mut out = self.publish(vec![event]).await?;
        out.pop()
            .ok_or_else(|| HubError::Log(LogError::Storage("append returned nothing".into())))
    }

    /// Subscribes to the patterns from `cursor`. Events come out of
    /// [`Subscription::recv`]: history first (with a `herald.truncated` notice when the
    /// cursor fell out of retention), then live, with no gap and no duplicate at the seam.
    pub fn subscribe(&self, patterns: Vec<Pattern>, cursor: Cursor) -> Subscription {
        let patterns: Arc<[Pattern]> = patterns.into();
        let mut sub = Subscription {
            hub: self.inner.clone(),
            patterns,
            slot: None,
            rx: None,
            phase: Phase::Live,
            last: 0,
            buffer: VecDeque::new(),
            notified_floor: 0,
        };
        match cursor {
            Cursor::Live => sub.register(),
            Cursor::After(n) => {
                sub.last = n;
                sub.phase = Phase::History { registered: false };
            }
        }
        self.inner
            .stats
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        sub
    }

    /// A history page: up to `limit` matching events after `after` in id order, or the
    /// newest `limit` when `after` is `None`.
    ///
    /// # Errors
    /// When the log fails.
    pub async fn history(
        &self,
        patterns: &[Pattern],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, LogError> {
        match after {
            Some(after) => self.inner.log.read(patterns, after, limit).await,
            None => self.inner.log.latest(patterns, limit).await,
        }
    }

    /// Topics with retained events.
    ///
    /// # Errors
    /// When the log fails.
    pub async fn topics(&self, prefix: &str) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.log.topics(prefix).await
    }

    /// The newest event id.
    pub fn head(&self) -> u64 {
        self.inner.log.head()
    }

    /// The highest id retention removed from a topic matching the patterns (0 when none): a
    /// cursor below it gets a `herald.truncated` notice.
    pub fn floor(&self, patterns: &[Pattern]) -> u64 {
        self.inner.log.floor(patterns)
    }

    /// Whether the log takes writes now (for readiness probes).
    ///
    /// # Errors
    /// The log's reason when it does not.
    pub fn ready(&self) -> Result<(), LogError> {
        self.inner.log.ready()
    }

    /// Background upkeep of the log (age retention, expired idempotency keys).
    ///
    /// # Errors
    /// When the log fails.
    pub async fn maintain(&self) -> Result<(), LogError> {
        self.inner.log.maintain().await
    }

    /// Entries in the pattern index.
    pub fn index_len(&self) -> usize {
        self.inner.index.read().len()
    }
}

enum Phase {
    /// Catching up from the log; `registered` once the live queue exists.
    History {
        registered: bool,
    },
    Live,
}

/// One subscription: a set of patterns with a cursor. Unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<HubInner>,
    patterns: Arc<[Pattern]>,
    slot: Option<Arc<Slot>>,
    rx: Option<mpsc::Receiver<Arc<Event>>>,
    phase: Phase,
    /// Id of the last event yielded (or the cursor).
    last: u64,
    buffer: VecDeque<Arc<Event>>,
    /// The retention floor already reported in a `herald.truncated` notice.
    notified_floor: u64,
}

impl Subscription {
    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Id of the last event yielded, or the starting cursor.
    pub fn last_id(&self) -> u64 {
        self.last
    }

    fn register(&mut self) {
        let (tx, rx) = mpsc::channel(self.hub.config.subscriber_queue.max(1));
        let slot = Arc::new(Slot {
            id: self.hub.next_slot.fetch_add(1, Ordering::Relaxed),
            tx,
            overflowed: AtomicBool::new(false),
            patterns: self.patterns.clone(),
        });
        {
            let mut index = self.hub.index.write();
            for p in self.patterns.iter() {
                index.insert(p, SlotRef(slot.clone()));
            }
        }
        self.slot = Some(slot);
        self.rx = Some(rx);
    }

    fn lagged(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| s.overflowed.load(Ordering::Acquire))
    }

    fn take_buffered(&mut self) -> Option<Item> {
        let ev = self.buffer.pop_front()?;
        self.last = ev.id;
        Some(Item::Event(ev))
    }

    /// Reads history pages until caught up; returns an item when one is ready.
    async fn catch_up(&mut self) -> Result<Option<Item>, SubscriptionError> {
        loop {
            if let Some(item) = self.take_buffered() {
                return Ok(Some(item));
            }
            let Phase::History { registered } = self.phase else {
                return Ok(None);
            };
            let page = self
                .hub
                .log
                .read(&self.patterns, self.last, HISTORY_PAGE)
                .await?;
            let short = page.len() < HISTORY_PAGE;
            // Checked at every history page, not only at the start: retention may prune
            // while a subscriber is catching up. The floor is read after the page, so pruning
            // that raced with the read can only cause a needless notice, never a silent gap.
            let floor = self.hub.log.floor(&self.patterns);
            if floor > self.last && floor > self.notified_floor {
                self.notified_floor = floor;
                let requested = self.last;
                let oldest = page
                    .first()
                    .map(|e| e.id)
                    .unwrap_or_else(|| self.hub.log.head() + 1);
                self.buffer.extend(page);
                return Ok(Some(Item::Truncated { requested, oldest }));
            }
            self.buffer.extend(page);
            if short {
                if registered {
                    // Caught up after registering: anything newer is in the live queue.
                    self.phase = Phase::Live;
                } else {
                    // Register the live queue, then read once more to close the gap
                    // between this page and the registration.
                    self.register();
                    self.phase = Phase::History { registered: true };
                }
            }
        }
    }

    /// The next item.
    ///
    /// # Errors
    /// [`SubscriptionError::Lagged`] when the subscriber fell behind (its queue overflowed;
    /// the caller should close the connection so the client resumes), or a log failure.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Result<Item, SubscriptionError> {
        if let Some(item) = self.catch_up().await? {
            return Ok(item);
        }
        loop {
            if self.lagged() {
                return Err(SubscriptionError::Lagged(self.hub.config.subscriber_queue));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Err(SubscriptionError::Log(LogError::Closed));
            };
            match rx.recv().await {
                Some(ev) if ev.id <= self.last => continue,
                Some(ev) => {
                    self.last = ev.id;
                    return Ok(Item::Event(ev));
                }
                None => return Err(SubscriptionError::Log(LogError::Closed)),
            }
        }
    }

    /// Waits for one item, then adds whatever else is ready at once (up to `max` in all), so
    /// that a transport can coalesce them into one write.
    ///
    /// # Errors
    /// As [`Subscription::recv`]; items already added to `out` are kept.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv_many(
        &mut self,
        out: &mut Vec<Item>,
        max: usize,
    ) -> Result<(), SubscriptionError> {
        out.push(self.recv().await?);
        while out.len() < max {
            if let Some(item) = self.take_buffered() {
                out.push(item);
                continue;
            }
            if !matches!(self.phase, Phase::Live) || self.lagged() {
                break;
            }
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(ev) if ev.id <= self.last => continue,
                Ok(ev) => {
                    self.last = ev.id;
                    out.push(Item::Event(ev));
                }
                Err(_) => break,
            }
        }
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if let Some(slot) = self.slot.take()
            && !slot.overflowed.load(Ordering::Acquire)
        {
            unregister(&mut self.hub.index.write(), &slot);
        }
    }
}
