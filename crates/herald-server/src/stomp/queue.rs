//! `/queue/<name>` destinations: competing consumers over the durable log.
//!
//! A SEND to `/queue/orders` is an event on topic `_queue.orders` (so queued messages are in
//! the log and survive restarts, on any backend). Consumption is recorded as events too: an
//! acknowledgement is an event on `_qack.orders` with data `{"id":"<message id>"}`. At start
//! the server rebuilds every queue from the retained `_queue.>` and `_qack.>` events (a
//! message without an ack is pending), then follows both patterns live, so acknowledgements
//! written by any node apply everywhere.
//!
//! Each message goes to exactly one consumer (round robin over the queue's consumers). In
//! `auto` ack mode the session acknowledges as soon as the MESSAGE is written; in `client` / `client-individual`
//! modes it stays in flight until ACK, goes back to the front of the queue on NACK, and every
//! in-flight message of a consumer goes back when the consumer unsubscribes or disconnects.
//!
//! **Cluster mode.** When the log is shared by several nodes ([`Log::shared_queues`]), the
//! queues are not rebuilt from the log: each node *takes* messages of a queue from the shared
//! queue (leased to it, at most [`PREFETCH`] per local consumer beyond what its consumers
//! hold) and hands them to its own consumers as above. An ACK acknowledges the lease (the
//! message is consumed cluster-wide); a NACK keeps the message on this node when another
//! local consumer can take it and releases it to the cluster otherwise; when a queue's last
//! local consumer goes, every message this node holds for it is released; the node renews its
//! leases every third of the lease while it holds them, so a message is handed to another
//! node only when this one dies (or stays cut off from NATS for a whole lease).
//!
//! [`Log::shared_queues`]: herald_core::Log::shared_queues

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use std::time::Duration;

use herald_core::{
    Cursor, Event, Hub, HubError, Item, Lease, LogError, NewEvent, Pattern, SharedQueues, Topic,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Topic prefix of queued messages.
pub(crate) const QUEUE_PREFIX: &str = "_queue";
/// Topic prefix of acknowledgements.
pub(crate) const ACK_PREFIX: &str = "_qack";

/// Cluster mode: messages a node takes per local consumer of a queue, beyond what its
/// consumers hold.
pub(crate) const PREFETCH: usize = 32;
/// Cluster mode: how long one take waits for a message before asking again. A take is
/// never abandoned half way (a message the shared queue hands to an abandoned take would stay
/// leased to nobody until its lease ran out), so this also bounds how long shutdown waits for
/// the takers.
const TAKE_WAIT: Duration = Duration::from_secs(1);
/// Cluster mode: pause after a failed take.
const TAKE_RETRY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct QueueState {
    /// Messages waiting for a consumer, in id order (NACKed ones go to the front).
    pending: VecDeque<Arc<Event>>,
    /// Message ids known (pending, in flight or acknowledged), to ignore repeats.
    seen: HashSet<u64>,
    /// Acknowledged ids whose message may not have been seen yet.
    acked: HashSet<u64>,
    /// Consumers in round-robin order.
    consumers: Vec<u64>,
    next: usize,
    /// Cluster mode: the leases of the messages this node holds (pending or in flight).
    leases: HashMap<u64, Arc<dyn Lease>>,
    /// Cluster mode: a task is taking messages for this queue.
    pulling: bool,
    /// Cluster mode: wakes the taking task when room frees up.
    room: Arc<Notify>,
}

impl QueueState {
    /// Takes the leases of messages out of the queue's books.
    fn unlease(&mut self, ids: impl IntoIterator<Item = u64>) -> Vec<Arc<dyn Lease>> {
        let out = ids
            .into_iter()
            .filter_map(|id| self.leases.remove(&id))
            .collect();
        self.room.notify_one();
        out
    }
}

struct ConsumerState {
    queue: String,
    tx: mpsc::UnboundedSender<Arc<Event>>,
    /// Delivered, not yet acknowledged, in delivery order.
    in_flight: VecDeque<Arc<Event>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, QueueState>,
    consumers: HashMap<u64, ConsumerState>,
}

/// Every queue of this server.
pub(crate) struct Queues {
    hub: Hub,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Cluster mode: the queues shared by the nodes.
    shared: Option<Arc<dyn SharedQueues>>,
    token: CancellationToken,
    tasks: TaskTracker,
}

/// One consumer's end: messages arrive on `rx`.
pub(crate) struct Consumer {
    /// Identifies the consumer to [`Queues::ack`] and friends.
    pub(crate) id: u64,
    /// Messages for this consumer.
    pub(crate) rx: mpsc::UnboundedReceiver<Arc<Event>>,
}

fn topic(prefix: &str, name: &str) -> Result<Topic, herald_core::ValidationError> {
    Topic::new(&format!("{prefix}.{name}"))
}

impl Queues {
    /// Rebuilds the queues from the log and starts following it.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub(crate) async fn start(
        hub: Hub,
        token: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>, herald_core::LogError> {
        let shared = hub.log().shared_queues();
        let queues = Arc::new(Self {
            hub: hub.clone(),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            shared: shared.clone(),
            token: token.clone(),
            tasks: tasks.clone(),
        });
        if let Some(shared) = shared {
            tasks.spawn(queues.clone().renew(shared.lease() / 3));
            return Ok(queues);
        }
        let patterns = vec![
            Pattern::new(&format!("{QUEUE_PREFIX}.>")).expect("valid pattern"),
            Pattern::new(&format!("{ACK_PREFIX}.>")).expect("valid pattern"),
        ];
        // History first: everything retained, in id order.
        let mut after = 0;
        loop {
            let page = hub.history(&patterns, Some(after), 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let mut state = queues.state.lock();
            for ev in &page {
                apply(&mut state, ev);
            }
        }
        // Then live, from exactly where history ended.
        let mut sub = hub.subscribe(patterns, Cursor::After(after));
        let follower = queues.clone();
        tasks.spawn(async move {
            let mut items = Vec::new();
            loop {
                items.clear();
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = sub.recv_many(&mut items, 256) => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "queue follower stopped");
                            return;
                        }
                    }
                }
                let mut state = follower.state.lock();
                for item in &items {
                    if let Item::Event(ev) = item {
                        apply(&mut state, ev);
                    }
                }
                dispatch_all(&mut state);
            }
        });
        Ok(queues)
    }

    /// Validates a queue name (a topic suffix).
    pub(crate) fn valid_name(name: &str) -> bool {
        topic(QUEUE_PREFIX, name).is_ok()
    }

    /// Queues a message.
    ///
    /// # Errors
    /// Invalid name, limits, or the log failing.
    pub(crate) async fn send(
        &self,
        name: &str,
        event: Option<&str>,
        data: Box<RawValue>,
    ) -> Result<u64, QueueError> {
        let topic = topic(QUEUE_PREFIX, name).map_err(QueueError::Invalid)?;
        let new = NewEvent::new(topic, event, data, None).map_err(QueueError::Invalid)?;
        Ok(self.hub.publish_one(new).await?.event.id)
    }

    /// Adds a consumer to a queue.
    pub(crate) fn subscribe(self: &Arc<Self>, name: &str) -> Consumer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state.lock();
        state.consumers.insert(
            id,
            ConsumerState {
                queue: name.to_owned(),
                tx,
                in_flight: VecDeque::new(),
            },
        );
        let q = state.queues.entry(name.to_owned()).or_default();
        q.consumers.push(id);
        q.room.notify_one();
        if self.shared.is_some() && !q.pulling {
            q.pulling = true;
            self.tasks.spawn(self.clone().take(name.to_owned()));
        }
        dispatch(&mut state, name);
        Consumer { id, rx }
    }

    /// Removes a consumer; its unacknowledged messages go back to the queue.
    pub(crate) fn unsubscribe(&self, consumer: u64) {
        let mut state = self.state.lock();
        let Some(c) = state.consumers.remove(&consumer) else {
            return;
        };
        let name = c.queue.clone();
        let mut release = Vec::new();
        if let Some(q) = state.queues.get_mut(&name) {
            q.consumers.retain(|&id| id != consumer);
            for ev in c.in_flight.into_iter().rev() {
                q.pending.push_front(ev);
            }
            if self.shared.is_some() && q.consumers.is_empty() {
                // Nobody here wants them: back to the cluster.
                let ids: Vec<u64> = q.pending.drain(..).map(|e| e.id).collect();
                release = q.unlease(ids);
            }
        }
        dispatch(&mut state, &name);
        drop(state);
        self.release(release);
    }

    /// Acknowledges messages of a consumer (the STOMP session resolves `client` mode's
    /// cumulative ACKs into ids). Ids the consumer does not hold are ignored.
    pub(crate) async fn ack(&self, consumer: u64, ids: &[u64]) -> Result<(), QueueError> {
        let (queue, ids) = {
            let mut state = self.state.lock();
            let Some(c) = state.consumers.get_mut(&consumer) else {
                return Ok(());
            };
            let before = c.in_flight.len();
            c.in_flight.retain(|e| !ids.contains(&e.id));
            if c.in_flight.len() == before {
                return Ok(());
            }
            (c.queue.clone(), ids.to_vec())
        };
        if self.shared.is_none() {
            return self.record_acks(&queue, &ids).await;
        }
        let leases = {
            let mut state = self.state.lock();
            match state.queues.get_mut(&queue) {
                Some(q) => q.unlease(ids),
                None => Vec::new(),
            }
        };
        for lease in leases {
            lease.ack().await.map_err(QueueError::Log)?;
        }
        Ok(())
    }

    /// Gives messages back: they go to the front of the queue, to another consumer when
    /// there is one.
    pub(crate) fn nack(&self, consumer: u64, ids: &[u64]) {
        let mut state = self.state.lock();
        let Some(c) = state.consumers.get_mut(&consumer) else {
            return;
        };
        let mut back = Vec::new();
        c.in_flight.retain(|e| {
            if ids.contains(&e.id) {
                back.push(e.clone());
                false
            } else {
                true
            }
        });
        let name = c.queue.clone();
        let q = state.queues.entry(name.clone()).or_default();
        if self.shared.is_some() && q.consumers.len() <= 1 {
            // No other consumer here: another node's may take them.
            let release = q.unlease(back.iter().map(|e| e.id));
            drop(state);
            self.release(release);
            return;
        }
        for ev in back.into_iter().rev() {
            q.pending.push_front(ev);
        }
        // Prefer another consumer for the redelivery.
        if q.consumers.len() > 1
            && let Some(pos) = q.consumers.iter().position(|&c| c == consumer)
        {
            q.next = pos + 1;
        }
        dispatch(&mut state, &name);
    }

    /// Cluster mode: gives leased messages back to the cluster (in the background).
    fn release(&self, leases: Vec<Arc<dyn Lease>>) {
        if leases.is_empty() {
            return;
        }
        self.tasks.spawn(async move {
            for lease in leases {
                lease.release().await;
            }
        });
    }

    /// Cluster mode: takes messages of one queue for this node's consumers while it has any.
    async fn take(self: Arc<Self>, name: String) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        loop {
            let (room, wake) = {
                let mut state = self.state.lock();
                let held: usize = state
                    .consumers
                    .values()
                    .filter(|c| c.queue == name)
                    .map(|c| c.in_flight.len())
                    .sum();
                let q = state.queues.entry(name.clone()).or_default();
                if q.consumers.is_empty() {
                    q.pulling = false;
                    return;
                }
                let room = (q.consumers.len() * PREFETCH).saturating_sub(held + q.pending.len());
                (room, q.room.clone())
            };
            if room == 0 {
                tokio::select! {
                    _ = self.token.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(TAKE_WAIT) => {}
                }
                continue;
            }
            let taken = shared.take(&name, room, TAKE_WAIT).await;
            if self.token.is_cancelled() {
                // Shutting down: whatever came goes back.
                if let Ok(list) = taken {
                    for m in list {
                        m.lease.release().await;
                    }
                }
                return;
            }
            match taken {
                Ok(list) => {
                    let mut release = Vec::new();
                    {
                        let mut state = self.state.lock();
                        let q = state.queues.entry(name.clone()).or_default();
                        for m in list {
                            if q.consumers.is_empty() {
                                release.push(m.lease);
                            } else if q.leases.insert(m.event.id, m.lease).is_none() {
                                // Oldest first, also for messages another node released.
                                let at = q.pending.partition_point(|e| e.id < m.event.id);
                                q.pending.insert(at, m.event);
                            }
                        }
                        dispatch(&mut state, &name);
                    }
                    self.release(release);
                }
                Err(e) => {
                    tracing::debug!(queue = %name, error = %e, "cannot take queued messages; trying again");
                    tokio::select! {
                        _ = self.token.cancelled() => return,
                        _ = tokio::time::sleep(TAKE_RETRY) => {}
                    }
                }
            }
        }
    }

    /// Cluster mode: renews every lease this node holds, every `every`; at shutdown gives
    /// them all back.
    async fn renew(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let leases = self.held();
            for lease in leases {
                lease.renew().await;
            }
        }
        for lease in self.held() {
            lease.release().await;
        }
    }

    fn held(&self) -> Vec<Arc<dyn Lease>> {
        let state = self.state.lock();
        state
            .queues
            .values()
            .flat_map(|q| q.leases.values().cloned())
            .collect()
    }

    async fn record_acks(&self, queue: &str, ids: &[u64]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let topic = topic(ACK_PREFIX, queue).map_err(QueueError::Invalid)?;
        let batch = ids
            .iter()
            .map(|id| {
                let data = RawValue::from_string(format!("{{\"id\":\"{id}\"}}")).map_err(|e| {
                    QueueError::Invalid(herald_core::ValidationError::Data(e.to_string()))
                })?;
                NewEvent::new(topic.clone(), Some("ack"), data, None).map_err(QueueError::Invalid)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.hub.publish(batch).await?;
        Ok(())
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    /// Bad destination or message.
    #[error(transparent)]
    Invalid(herald_core::ValidationError),
    /// The hub refused the write.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Cluster mode: the shared queue did not record an acknowledgement.
    #[error(transparent)]
    Log(LogError),
}

/// Applies one logged event (a message or an acknowledgement) to the state.
fn apply(state: &mut State, ev: &Arc<Event>) {
    let t = ev.topic.as_str();
    if let Some(name) = t
        .strip_prefix(QUEUE_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
    {
        let q = state.queues.entry(name.to_owned()).or_default();
        if !q.seen.insert(ev.id) {
            return;
        }
        if q.acked.remove(&ev.id) {
            return;
        }
        q.pending.push_back(ev.clone());
    } else if let Some(name) = t.strip_prefix(ACK_PREFIX).and_then(|r| r.strip_prefix('.')) {
        #[derive(serde::Deserialize)]
        struct Ack {
            id: String,
        }
        let Ok(ack) = serde_json::from_str::<Ack>(ev.data.get()) else {
            return;
        };
        let Ok(id) = ack.id.parse::<u64>() else {
            return;
        };
        let q = state.queues.entry(name.to_owned()).or_default();
        if q.seen.contains(&id) {
            q.pending.retain(|e| e.id != id);
        } else {
            q.acked.insert(id);
        }
        // Acknowledged elsewhere (another node, or this one after a restart): not in flight
        // here any more.
        for c in state.consumers.values_mut() {
            if c.queue == name {
                c.in_flight.retain(|e| e.id != id);
            }
        }
    }
}

fn dispatch_all(state: &mut State) {
    let names: Vec<String> = state
        .queues
        .iter()
        .filter(|(_, q)| !q.pending.is_empty() && !q.consumers.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    for n in names {
        dispatch(state, &n);
    }
}

/// Hands pending messages of a queue to its consumers, round robin.
fn dispatch(state: &mut State, name: &str) {
    let State { queues, consumers } = state;
    let Some(q) = queues.get_mut(name) else {
        return;
    };
    while !q.pending.is_empty() && !q.consumers.is_empty() {
        let idx = q.next % q.consumers.len();
        q.next = idx + 1;
        let cid = q.consumers[idx];
        let Some(c) = consumers.get_mut(&cid) else {
            q.consumers.remove(idx);
            continue;
        };
        let Some(ev) = q.pending.pop_front() else {
            break;
        };
        if c.tx.send(ev.clone()).is_err() {
            // The consumer is gone without unsubscribing yet: keep the message.
            q.pending.push_front(ev);
            q.consumers.remove(idx);
            continue;
        }
        // Auto mode too: the session acknowledges right after writing the MESSAGE, so a
        // message lost with a dying connection is delivered again.
        c.in_flight.push_back(ev);
    }
}
