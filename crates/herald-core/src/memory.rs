//! `MemoryLog`: the whole log in memory, for `--memory` and tests. Same contract as the
//! durable logs, nothing survives a restart.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use futures::future::{BoxFuture, FutureExt};
use parking_lot::{Mutex, RwLock};

use crate::{
    Appended, CommitSink, Event, Log, LogError, LogOptions, NewEvent, Pattern, TopicInfo,
    TopicTable, event::now_ms, webhook::MemoryWebhooks,
};

/// The in-memory log.
pub struct MemoryLog {
    inner: Mutex<State>,
    sink: RwLock<Option<Arc<dyn CommitSink>>>,
    options: LogOptions,
    webhooks: Arc<MemoryWebhooks>,
}

#[derive(Default)]
struct State {
    events: BTreeMap<u64, Arc<Event>>,
    /// Ids per topic, oldest first, for count retention.
    per_topic: HashMap<Arc<str>, VecDeque<u64>>,
    topics: TopicTable,
    /// Idempotency key -> (the event it stored, when). Holds the event itself so that a
    /// retry within the dedupe window is a duplicate even after retention removed the event.
    keys: HashMap<String, (Arc<Event>, i64)>,
    head: u64,
    closed: bool,
}

impl MemoryLog {
    /// An empty log.
    pub fn new(options: LogOptions) -> Self {
        Self {
            inner: Mutex::new(State::default()),
            sink: RwLock::new(None),
            options,
            webhooks: Arc::new(MemoryWebhooks::new()),
        }
    }

    fn prune_topic(state: &mut State, topic: &crate::Topic, max_events: u64) {
        let Some(ids) = state.per_topic.get_mut(topic.as_str()) else {
            return;
        };
        let mut removed = 0;
        let mut through = 0;
        while ids.len() as u64 > max_events {
            if let Some(id) = ids.pop_front() {
                state.events.remove(&id);
                removed += 1;
                through = id;
            }
        }
        if removed > 0 {
            state.topics.pruned(topic, removed, through);
        }
    }
}

fn matches_any(patterns: &[Pattern], topic: &str) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

impl Log for MemoryLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        let result = (|| {
            let window = self.options.dedupe_window.as_millis() as i64;
            let mut state = self.inner.lock();
            // Read the clock under the lock so that time never goes backwards along ids
            // (age retention relies on id order being time order).
            let now = now_ms();
            if state.closed {
                return Err(LogError::Closed);
            }
            let mut out = Vec::with_capacity(batch.len());
            let mut fresh = Vec::with_capacity(batch.len());
            for mut new in batch {
                if let Some(key) = &new.key
                    && let Some((ev, at)) = state.keys.get(key)
                    && now - *at < window
                {
                    out.push(Appended {
                        event: ev.clone(),
                        duplicate: true,
                    });
                    continue;
                }
                state.head += 1;
                let id = state.head;
                let key = new.key.take();
                let ev = Arc::new(Event::from_new(id, new, now));
                if let Some(key) = key {
                    state.keys.insert(key, (ev.clone(), now));
                }
                state.events.insert(id, ev.clone());
                state
                    .per_topic
                    .entry(Arc::from(ev.topic.as_str()))
                    .or_default()
                    .push_back(id);
                state.topics.appended(&ev.topic, id);
                let (max_events, _) = self.options.retention.limits(ev.topic.as_str());
                Self::prune_topic(&mut state, &ev.topic, max_events);
                fresh.push(ev.clone());
                out.push(Appended {
                    event: ev,
                    duplicate: false,
                });
            }
            // Deliveries "in the same append" (nothing here is durable anyway).
            self.webhooks.append_hook(&fresh);
            // Fan out under the lock: batches reach the sink in id order.
            if !fresh.is_empty()
                && let Some(sink) = self.sink.read().as_ref()
            {
                sink.committed(&fresh);
            }
            Ok(out)
        })();
        futures::future::ready(result).boxed()
    }

    fn read<'a>(
        &'a self,
        patterns: &'a [Pattern],
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        let state = self.inner.lock();
        let out: Vec<Arc<Event>> = state
            .events
            .range(after.saturating_add(1)..)
            .map(|(_, e)| e)
            .filter(|e| matches_any(patterns, e.topic.as_str()))
            .take(limit)
            .cloned()
            .collect();
        futures::future::ready(Ok(out)).boxed()
    }

    fn latest<'a>(
        &'a self,
        patterns: &'a [Pattern],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        let state = self.inner.lock();
        let mut out: Vec<Arc<Event>> = state
            .events
            .values()
            .rev()
            .filter(|e| matches_any(patterns, e.topic.as_str()))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        futures::future::ready(Ok(out)).boxed()
    }

    fn topics<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<TopicInfo>, LogError>> {
        let list = self.inner.lock().topics.list(prefix);
        futures::future::ready(Ok(list)).boxed()
    }

    fn head(&self) -> u64 {
        self.inner.lock().head
    }

    fn floor(&self, patterns: &[Pattern]) -> u64 {
        self.inner.lock().topics.floor(patterns)
    }

    fn set_sink(&self, sink: Arc<dyn CommitSink>) {
        *self.sink.write() = Some(sink);
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), LogError>> {
        let now = now_ms();
        let mut state = self.inner.lock();
        let window = self.options.dedupe_window.as_millis() as i64;
        state.keys.retain(|_, (_, at)| now - *at < window);
        let shortest = self.options.retention.shortest_age();
        let cutoff_any = now - shortest.as_millis() as i64;
        // Events are in id order, which is time order: stop at the first one young enough
        // for every rule.
        let mut expired: Vec<Arc<Event>> = Vec::new();
        for ev in state.events.values() {
            if ev.time_ms > cutoff_any {
                break;
            }
            let (_, max_age) = self.options.retention.limits(ev.topic.as_str());
            if now - ev.time_ms >= max_age.as_millis() as i64 {
                expired.push(ev.clone());
            }
        }
        for ev in expired {
            state.events.remove(&ev.id);
            if let Some(ids) = state.per_topic.get_mut(ev.topic.as_str()) {
                // Age order is id order within a topic: the expired id is almost always first.
                if ids.front() == Some(&ev.id) {
                    ids.pop_front();
                } else {
                    ids.retain(|&i| i != ev.id);
                }
            }
            state.topics.pruned(&ev.topic, 1, ev.id);
        }
        drop(state);
        futures::future::ready(Ok(())).boxed()
    }

    fn ready(&self) -> Result<(), LogError> {
        if self.inner.lock().closed {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn webhooks(&self) -> Arc<dyn crate::webhook::Webhooks> {
        self.webhooks.clone()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        self.inner.lock().closed = true;
        futures::future::ready(Ok(())).boxed()
    }
}
