//! Outbound webhooks in cluster mode (SPEC 7.1 and 13): [`NatsWebhooks`], the [`Webhooks`]
//! of a [`crate::JetStreamLog`], shared by every node of the cluster.
//!
//! # Layout in JetStream
//! - **Endpoints**: the KV bucket `<stream>_webhooks`, id → [`Endpoint`] JSON, which every
//!   node loads at open and then watches (see `endpoints`).
//! - **Outbox**: the events stream itself, read by the durable consumer `<stream>_outbox`
//!   that all nodes pull from; an event is acknowledged only once its deliveries are stored,
//!   so the consumer is the durable dispatch cursor of SPEC 7.1 (see `outbox`).
//! - **Deliveries**: the stream `<stream>_DLV` on `<prefix>.dlv.<endpoint id>` holds each
//!   delivery's request body; its sequence is the delivery id (increasing, as the API wants).
//! - **Work queue**: the stream `<stream>_DLVQ` (work-queue retention) on
//!   `<prefix>.dlvq.<endpoint id>` holds one message per delivery to be made, `"<delivery id>
//!   <generation>"`, and each endpoint has one durable pull consumer, `<stream>_wh_<endpoint
//!   id>`, that every node pulls from (see below).
//! - **Delivery state**: the KV bucket `<stream>_dlvstate`, `<endpoint id>.<delivery id>` →
//!   status, attempts made, next attempt, last chance and generation (see `records`). Every
//!   node mirrors it in memory through a watch; listings and queue stats are answered from
//!   the mirror, and every change goes through compare-and-set on the key's revision.
//! - **Attempts**: the KV bucket `<stream>_attempts`, same keys → the latest
//!   [`MAX_ATTEMPTS_KEPT`] attempts as JSON.
//!
//! # One node at a time: the work queue
//! A node attempts a delivery only while it holds the delivery's work-queue message, which
//! JetStream hands to one pull at a time ([`Webhooks::due`] pulls as many as the dispatcher
//! has free slots for that endpoint):
//! - success or final failure: the message is acknowledged (awaiting the server's
//!   confirmation), which removes it from the work queue;
//! - a retry: the message is negatively acknowledged with the retry delay, so JetStream
//!   hands it out again (to any node) when the retry is due;
//! - while the attempt runs, the holder sends "work in progress" every third of the ack wait
//!   (`cluster.lease`);
//! - a node that stops gives what it holds back at once (a nak without delay); one that dies
//!   (`kill -9`) or loses NATS for longer than the ack wait has its messages handed out again
//!   when the ack wait runs out.
//!
//! Before attempting, a node reads the delivery's state: a message of a delivery that is
//! finished, removed, or of an older generation (a manual retry published a newer message)
//! is acknowledged and dropped; one that comes early (clocks) is put back with the rest of the
//! delay. A manual retry or recover sets the state due now with the next generation and
//! publishes a message of that generation (`Nats-Msg-Id: q.<id>.<generation>`, so a redo
//! stores nothing twice). The state and attempts stay in KV, because the API lists finished
//! deliveries, shows their attempts and answers queue stats, none of which a work queue keeps.
//!
//! # Signal
//! The state watch marks an endpoint whenever one of its deliveries is stored pending (new,
//! rescheduled, retried); the outbox and the API mark their own writes at once. Work-queue
//! messages that come back without a state change (a retry's delay ran out, another node
//! stopped or died) are found by asking again at the next known retry time, and at least
//! every [`POLL`] while the endpoint has pending deliveries.
//!
//! # Approximations
//! - Matching happens when the outbox takes the event, not at publish: an endpoint created,
//!   changed or disabled after an event was stored but before the outbox took it (normally
//!   milliseconds; longer while no node runs) is matched with its newer settings.
//! - Events of a batch rolled back after a failure (see the crate docs) may have been turned
//!   into deliveries already; events retention removes before the outbox took them (an
//!   outbox lagging by more than the retention) get none.
//! - A node that stalls past the ack wait without dying (a pause, a lost NATS connection
//!   while the attempt runs) may see its delivery attempted by another node too, and a manual
//!   retry of a delivery whose attempt is running may start a second attempt on another node:
//!   delivery is at least once, as `webhook-id` lets receivers dedupe.
//! - A manual retry whose state change is stored but whose work-queue message cannot be
//!   published answers an error; the delivery waits for the next retry (the API call again).
//! - A test message (`enqueue`) whose state is stored but whose work-queue message is not (a
//!   crash in between) is never attempted; outbox deliveries are redone by the outbox.
//! - A node that has not yet seen an endpoint's deletion may open its work-queue consumer
//!   again after the deleting node removed it; such a consumer stays until removed by hand.
//! - `modify` uses compare-and-set; when another node changed the endpoint meanwhile, the
//!   fields this change altered are laid over the newer value (the change cannot be run
//!   again), not the change re-applied.
//! - Attempts: the latest [`MAX_ATTEMPTS_KEPT`] per delivery are kept (the SQL stores keep
//!   all). Finished deliveries are removed after [`FINISHED_KEPT`], by every node's
//!   `maintain`.
//! - Each node keeps the state of every retained delivery in memory (a few hundred bytes
//!   each; bodies and attempts stay in JetStream).
//! - A body too large for one NATS message (near `max_payload`) is not stored; it is rebuilt
//!   from the event when needed, and the delivery fails if retention removed the event.
//! - Deliveries an outbox stored for an endpoint deleted at that moment are removed by a
//!   later sweep (after a minute), not by the delete.

mod endpoints;
mod outbox;
mod records;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{
        AckKind, Message,
        consumer::PullConsumer,
        context::GetStreamErrorKind,
        kv::{self, Operation, UpdateErrorKind},
        message::Acker,
        stream::{
            self, DirectGetErrorKind, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy,
            StorageType,
        },
    },
};
use bytes::Bytes;
use futures::{
    StreamExt, TryStreamExt,
    future::{BoxFuture, FutureExt},
};
use herald_core::{
    Endpoint, LogError, Webhooks,
    event::now_ms,
    webhook::{
        Attempt, Delivery, DeliveryRecord, Due, EndpointChange, NewDelivery, Outcome, QueueStats,
        Signal, Status,
    },
};
use parking_lot::Mutex;
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    NatsError, NatsOptions, codec, floors,
    log::{REQUEST_TIMEOUT, Shared},
};

use endpoints::{Applied, Endpoints, check_id};
use records::{Mirror, Rec, State, key, parse_key};

/// Attempts kept per delivery (the latest).
pub(crate) const MAX_ATTEMPTS_KEPT: usize = 50;

/// Finished deliveries (succeeded or failed) older than this are removed by `maintain`, as
/// in the SQL stores.
pub(crate) const FINISHED_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often `maintain` (called every second by the server) looks for deliveries to remove.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most finished deliveries removed per sweep.
const SWEEP_MAX: usize = 10_000;
/// Deliveries of an endpoint this node does not know are left alone this long (the
/// endpoint's creation may still be on its way here).
const ORPHAN_AFTER_MS: i64 = 60_000;

/// Compare-and-set attempts on one delivery state.
const CAS_ATTEMPTS: usize = 8;

/// Requests of one call that run at once.
const CONCURRENCY: usize = 16;

/// Publishes of one store call in flight at once.
const PIPELINE: usize = 128;

/// Work-queue messages held longer than this are no longer kept in progress (an attempt
/// never takes that long; a delivery the dispatcher forgot must not stay held forever).
const MAX_HOLD: Duration = Duration::from_secs(3600);

/// While an endpoint has pending deliveries, `due` is asked again at least this often (for
/// work-queue messages that come back without a state change: see the module docs).
const POLL_MS: i64 = 1_000;

/// How long a work-queue message whose delivery state is not readable yet (or whose slot is
/// not free yet) waits before it is handed out again, and how many hand-outs it gets.
const STATE_WAIT: Duration = Duration::from_millis(300);
const STATE_WAITS: i64 = 30;

/// How long one pull waits for JetStream's answer (a pull that JetStream parks instead of
/// answering, or that a reconnect lost, must not hold the dispatcher).
const PULL_WAIT: Duration = Duration::from_secs(2);

/// A work-queue message that comes more than this before its delivery's next attempt is put
/// back for the rest of the delay.
const EARLY_MS: i64 = 250;

/// Work-queue messages one endpoint may have handed out and not acknowledged, all nodes
/// together; messages waiting for a retry count too.
const MAX_ACK_PENDING: i64 = 1_000_000;

/// How long open waits for a bucket's replay before going on with a partial view (the
/// watch completes it in the background).
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// Pause before watching a bucket again after the watch ended.
const REWATCH_PAUSE: Duration = Duration::from_secs(1);

/// How long `close` waits for the webhook tasks.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Header of a delivery message whose body was too large to store: it is rebuilt from the
/// event when needed.
const BODY_HEADER: &str = "Herald-Body";
const BODY_FROM_EVENT: &str = "event";

/// A delivery whose work-queue message this node holds and has not recorded yet.
struct Held {
    endpoint: String,
    since: Instant,
    /// Acknowledges the message (shared with the progress task).
    acker: Arc<Acker>,
}

/// What the handle, the outbox, the watches and the renewals share.
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    /// The work-queue consumers' ack wait.
    pub(crate) lease: Duration,
    /// The outbox consumer's name.
    pub(crate) outbox: String,
    pub(crate) endpoints: Endpoints,
    states: kv::Store,
    attempts: kv::Store,
    dlv: stream::Stream,
    /// The work-queue stream.
    work: stream::Stream,
    /// Work-queue consumers by endpoint (opened on first use).
    consumers: Mutex<HashMap<String, PullConsumer>>,
    mirror: Mutex<Mirror>,
    held: Mutex<HashMap<u64, Held>>,
    signal: Arc<Signal>,
    last_sweep: Mutex<Option<Instant>>,
}

/// The [`Webhooks`] of a [`crate::JetStreamLog`] (see the module docs).
pub(crate) struct NatsWebhooks {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The deliveries stream's duplicate window: far longer than the outbox's ack wait, after
/// which a dead node's run is redone.
fn dedupe_window(lease: Duration) -> Duration {
    (lease * 20).max(Duration::from_secs(600))
}

/// Replays a bucket (the last value of every key) into `apply` and returns its watch once
/// caught up (or after [`REPLAY_WAIT`], with a warning).
async fn replay(store: &kv::Store, apply: impl Fn(&kv::Entry)) -> Result<kv::Watch, NatsError> {
    let info = store
        .stream
        .get_info()
        .await
        .map_err(|e| NatsError::js("read a KV bucket", e))?;
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| NatsError::js("watch a KV bucket", e))?;
    if info.state.messages == 0 {
        return Ok(watch);
    }
    let deadline = Instant::now() + REPLAY_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(entry))) => {
                apply(&entry);
                if entry.delta == 0 {
                    return Ok(watch);
                }
            }
            Ok(Some(Err(e))) => return Err(NatsError::js("read a KV bucket", e)),
            Ok(None) => return Err(NatsError::js("read a KV bucket", "the watch ended")),
            Err(_) => {
                tracing::warn!(bucket = %store.name, "KV bucket replay is slow; going on with what arrived");
                return Ok(watch);
            }
        }
    }
}

/// Follows a bucket until the log stops, watching it again (with a replay, which `apply`
/// takes idempotently) after errors and reconnects.
async fn follow(
    shared: Arc<Shared>,
    store: kv::Store,
    watch: kv::Watch,
    apply: impl Fn(&kv::Entry),
) {
    let mut watch = Some(watch);
    loop {
        if let Some(mut w) = watch.take() {
            loop {
                let next = tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    e = w.next() => e,
                };
                match next {
                    Some(Ok(entry)) => apply(&entry),
                    Some(Err(e)) => {
                        tracing::debug!(bucket = %store.name, error = %e, "KV watch interrupted");
                        break;
                    }
                    None => break,
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(REWATCH_PAUSE) => {}
        }
        match store.watch_with_history(">").await {
            Ok(w) => watch = Some(w),
            Err(e) => tracing::debug!(bucket = %store.name, error = %e, "cannot watch a KV bucket"),
        }
    }
}

impl NatsWebhooks {
    /// Creates or opens the buckets, the deliveries stream and the outbox consumer, loads the
    /// endpoints and delivery states, and starts this node's outbox, watches and renewals.
    pub(crate) async fn open(shared: Arc<Shared>, opts: &NatsOptions) -> Result<Self, NatsError> {
        let js = &shared.js;
        let name = |suffix: &str| format!("{}_{suffix}", opts.stream);
        let endpoints_kv = floors::bucket(
            js,
            &name("webhooks"),
            "Herald: webhook endpoints (id -> JSON)",
            opts.replicas,
        )
        .await?;
        let states = floors::bucket(
            js,
            &name("dlvstate"),
            "Herald: webhook delivery state (<endpoint>.<delivery id> -> JSON)",
            opts.replicas,
        )
        .await?;
        let attempts = floors::bucket(
            js,
            &name("attempts"),
            "Herald: webhook delivery attempts (<endpoint>.<delivery id> -> JSON list)",
            opts.replicas,
        )
        .await?;
        crate::log::retry_race(|| {
            js.create_or_update_stream(stream::Config {
                name: name("DLV"),
                description: Some(
                    "Herald webhook deliveries: request bodies (the sequence is the delivery id)"
                        .into(),
                ),
                subjects: vec![shared.subjects.all_deliveries()],
                storage: StorageType::File,
                num_replicas: opts.replicas,
                discard: DiscardPolicy::Old,
                duplicate_window: dedupe_window(opts.lease),
                allow_direct: true,
                ..Default::default()
            })
        })
        .await
        .map_err(|e| NatsError::js("create or update the deliveries stream", e))?;
        let dlv = js
            .get_stream(name("DLV"))
            .await
            .map_err(|e| NatsError::js("open the deliveries stream", e))?;
        // A cluster that ran before the work queue existed has pending deliveries without a
        // message: the node that creates the stream publishes theirs (below).
        let work_existed = match js.get_stream(name("DLVQ")).await {
            Ok(_) => true,
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    false
                }
                _ => return Err(NatsError::js("look for the webhook work-queue stream", e)),
            },
        };
        crate::log::retry_race(|| {
            js.create_or_update_stream(stream::Config {
                name: name("DLVQ"),
                description: Some(
                    "Herald webhook work queue: one message per delivery to make (\"<delivery id> <generation>\")"
                        .into(),
                ),
                subjects: vec![shared.subjects.all_work()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                num_replicas: opts.replicas,
                duplicate_window: dedupe_window(opts.lease),
                ..Default::default()
            })
        })
        .await
        .map_err(|e| NatsError::js("create or update the webhook work-queue stream", e))?;
        let work = js
            .get_stream(name("DLVQ"))
            .await
            .map_err(|e| NatsError::js("open the webhook work-queue stream", e))?;
        let outbox = name("outbox");
        crate::log::retry_race(|| {
            shared
                .stream
                .get_or_create_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    &outbox,
                    outbox::config(&outbox, opts.lease),
                )
        })
        .await
        .map_err(|e| NatsError::js("create the webhook outbox consumer", e))?;

        let inner = Arc::new(Inner {
            shared: shared.clone(),
            lease: opts.lease,
            outbox,
            endpoints: Endpoints::new(endpoints_kv.clone()),
            states: states.clone(),
            attempts,
            dlv,
            work,
            consumers: Mutex::default(),
            mirror: Mutex::default(),
            held: Mutex::default(),
            signal: Arc::default(),
            last_sweep: Mutex::new(None),
        });
        let endpoint_watch = replay(&endpoints_kv, |e| inner.apply_endpoint(e)).await?;
        let state_watch = replay(&states, |e| inner.apply_state(e)).await?;
        if !work_existed {
            inner
                .queue_pending()
                .await
                .map_err(|e| NatsError::js("queue pending webhook deliveries", e))?;
        }
        tracing::info!(
            endpoints = inner.endpoints.set.list().len(),
            "opened the cluster webhooks"
        );

        let on_endpoint = {
            let inner = inner.clone();
            move |e: &kv::Entry| inner.apply_endpoint(e)
        };
        let on_state = {
            let inner = inner.clone();
            move |e: &kv::Entry| inner.apply_state(e)
        };
        let tasks = vec![
            tokio::spawn(follow(
                shared.clone(),
                endpoints_kv,
                endpoint_watch,
                on_endpoint,
            )),
            tokio::spawn(follow(shared.clone(), states, state_watch, on_state)),
            tokio::spawn(outbox::run(inner.clone())),
            tokio::spawn(keep_in_progress(inner.clone())),
        ];
        Ok(Self {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// Stops the tasks (the log's stop token is cancelled already) and gives back the
    /// work-queue messages this node still holds, so other nodes attempt those deliveries at
    /// once.
    pub(crate) async fn close(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            if tokio::time::timeout(CLOSE_WAIT, t).await.is_err() {
                tracing::warn!("a webhook task did not stop in time");
            }
        }
        let inner = &self.inner;
        let held: Vec<Arc<Acker>> = inner.held.lock().drain().map(|(_, h)| h.acker).collect();
        if held.is_empty() || inner.shared.connected().is_err() {
            return;
        }
        let release = async {
            futures::stream::iter(held)
                .for_each_concurrent(CONCURRENCY, |acker| async move {
                    if let Err(e) = acker.ack_with(AckKind::Nak(None)).await {
                        tracing::debug!(error = %e, "cannot give a webhook delivery back; the ack wait runs out by itself");
                    }
                })
                .await;
            // Out before the connection closes.
            let _ = inner.shared.client.flush().await;
        };
        // Bounded: shutting down must not wait on a NATS that stopped answering.
        if tokio::time::timeout(REQUEST_TIMEOUT, release)
            .await
            .is_err()
        {
            tracing::debug!(
                "giving webhook deliveries back timed out; the ack wait runs out by itself"
            );
        }
    }

    /// Removes old finished deliveries and deliveries of deleted endpoints (at most every
    /// [`SWEEP_EVERY`]; cheap otherwise).
    pub(crate) async fn maintain(&self) -> Result<(), LogError> {
        self.inner.sweep().await
    }
}

/// Tells JetStream every third of the ack wait that the deliveries this node holds are being
/// worked on, so their messages are not handed to another node meanwhile.
async fn keep_in_progress(inner: Arc<Inner>) {
    let every = inner.lease / 3;
    loop {
        tokio::select! {
            _ = inner.shared.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Held longer than any attempt takes: forgotten, given back.
        let forgotten: Vec<Arc<Acker>> = {
            let mut held = inner.held.lock();
            let old: Vec<u64> = held
                .iter()
                .filter(|(_, h)| h.since.elapsed() >= MAX_HOLD)
                .map(|(id, _)| *id)
                .collect();
            old.iter()
                .filter_map(|id| held.remove(id))
                .map(|h| h.acker)
                .collect()
        };
        for acker in forgotten {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
        }
        let held: Vec<(u64, Arc<Acker>)> = inner
            .held
            .lock()
            .iter()
            .map(|(id, h)| (*id, h.acker.clone()))
            .collect();
        let inner = &inner;
        futures::stream::iter(held)
            .for_each_concurrent(CONCURRENCY, |(id, acker)| async move {
                // Recorded meanwhile: its nak (with the retry delay) must stay the last word.
                let still = inner
                    .held
                    .lock()
                    .get(&id)
                    .is_some_and(|h| Arc::ptr_eq(&h.acker, &acker));
                if !still {
                    return;
                }
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::debug!(delivery = id, error = %e, "cannot mark a webhook delivery in progress");
                }
            })
            .await;
    }
}

/// Acknowledges a stale work-queue message (its delivery finished or was retried since).
async fn drop_stale(acker: &Acker, id: u64) {
    if let Err(e) = acker.ack_with(AckKind::Ack).await {
        tracing::debug!(delivery = id, error = %e, "cannot drop a stale webhook work-queue message");
    }
}

/// A work-queue message: `"<delivery id> <generation>"`.
fn work_payload(id: u64, generation: u32) -> Bytes {
    Bytes::from(format!("{id} {generation}"))
}

fn parse_work(payload: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, generation) = text.split_once(' ')?;
    Some((id.parse().ok()?, generation.parse().ok()?))
}

/// The work-queue consumer of an endpoint (endpoint ids are `[A-Za-z0-9_-]`).
fn consumer_name(stream: &str, endpoint: &str) -> String {
    format!("{stream}_wh_{endpoint}")
}

impl Inner {
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> LogError {
        self.shared.fail(what, e)
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    /// An entry of the endpoints bucket.
    fn apply_endpoint(&self, entry: &kv::Entry) {
        match self.endpoints.apply(entry) {
            Applied::Put(id) => self.signal.mark([id.as_str()]),
            Applied::Removed(id) => {
                self.forget(&id);
                self.signal.wake();
            }
            Applied::Ignored => {}
        }
    }

    /// An entry of the state bucket.
    fn apply_state(&self, entry: &kv::Entry) {
        let Some((endpoint, id)) = parse_key(&entry.key) else {
            tracing::warn!(key = %entry.key, "ignoring a bad key in the delivery state bucket");
            return;
        };
        match entry.operation {
            Operation::Put => {
                let Some(state) = State::decode(&entry.value) else {
                    tracing::warn!(key = %entry.key, "ignoring a bad delivery state");
                    return;
                };
                let attemptable = state.status == Status::Pending;
                let applied = self.mirror.lock().put(endpoint, id, entry.revision, state);
                if applied && attemptable {
                    self.signal.mark([endpoint]);
                }
            }
            Operation::Delete | Operation::Purge => self.mirror.lock().remove(endpoint, id),
        }
    }

    /// Drops what this node keeps about an endpoint's deliveries.
    fn forget(&self, endpoint: &str) {
        self.mirror.lock().drop_endpoint(endpoint);
        self.held.lock().retain(|_, h| h.endpoint != endpoint);
        self.consumers.lock().remove(endpoint);
    }

    /// The work-queue consumer of an endpoint, created when it does not exist yet.
    async fn consumer(&self, endpoint: &str) -> Result<PullConsumer, LogError> {
        if let Some(c) = self.consumers.lock().get(endpoint) {
            return Ok(c.clone());
        }
        let consumer = crate::log::open_shared_consumer(
            &self.work,
            &consumer_name(&self.shared.stream_name, endpoint),
            format!("Herald webhook deliveries to {endpoint}"),
            self.shared.subjects.work(endpoint),
            self.lease,
            MAX_ACK_PENDING,
        )
        .await
        .map_err(|e| self.fail("open a webhook work-queue consumer", e))?;
        self.consumers
            .lock()
            .insert(endpoint.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Publishes the work-queue message of a delivery's generation (once: a repeat within the
    /// duplicate window stores nothing).
    async fn publish_work(&self, endpoint: &str, id: u64, generation: u32) -> Result<(), LogError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            codec::MSG_ID_HEADER,
            format!("q.{id}.{generation}").as_str(),
        );
        let shared = &self.shared;
        shared
            .js
            .publish_with_headers(
                shared.subjects.work(endpoint),
                headers,
                work_payload(id, generation),
            )
            .await
            .map_err(|e| self.fail("queue a webhook delivery", e))?
            .await
            .map_err(|e| self.fail("queue a webhook delivery", e))?;
        Ok(())
    }

    /// Publishes the work-queue messages of every pending delivery (a cluster upgraded from
    /// before the work queue).
    async fn queue_pending(&self) -> Result<(), LogError> {
        let pending = self.mirror.lock().pending();
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            deliveries = pending.len(),
            "queueing pending webhook deliveries in the new work queue"
        );
        futures::stream::iter(pending)
            .map(|(endpoint, id, generation)| async move {
                self.publish_work(&endpoint, id, generation).await
            })
            .buffer_unordered(PIPELINE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Waits until this node's endpoint set holds every write the bucket had when asked.
    pub(crate) async fn endpoints_current(&self, wait: Duration) -> Result<(), String> {
        let last = self
            .endpoints
            .kv
            .stream
            .get_info()
            .await
            .map_err(|e| format!("read the webhooks bucket: {e}"))?
            .state
            .last_sequence;
        let deadline = Instant::now() + wait;
        while self.endpoints.seen() < last {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the webhook endpoints watch lags (at {}, bucket at {last})",
                    self.endpoints.seen()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stores new deliveries: bodies in the deliveries stream (in order, pipelined), then a
    /// pending state each, then their work-queue messages. `msg_id` (a `Nats-Msg-Id`) makes a
    /// redo store nothing new. Returns the delivery ids.
    pub(crate) async fn store(
        &self,
        news: Vec<(NewDelivery, Option<String>)>,
    ) -> Result<Vec<u64>, LogError> {
        let shared = &self.shared;
        shared.connected()?;
        let now = now_ms();
        let max_payload = shared.client.server_info().max_payload;
        let mut rows: Vec<(String, State)> = Vec::with_capacity(news.len());
        let mut ids: Vec<u64> = Vec::with_capacity(news.len());
        let mut news = news.into_iter().peekable();
        while news.peek().is_some() {
            let mut pending = Vec::with_capacity(PIPELINE);
            for (d, msg_id) in news.by_ref().take(PIPELINE) {
                let mut headers = HeaderMap::new();
                if let Some(id) = &msg_id {
                    headers.insert(codec::MSG_ID_HEADER, id.as_str());
                }
                let state = State::new(&d, now);
                // Room for the headers; an event's body is rebuilt from the event instead.
                let body = if d.event_id != 0 && d.body.len().saturating_add(1024) > max_payload {
                    headers.insert(BODY_HEADER, BODY_FROM_EVENT);
                    Bytes::new()
                } else {
                    Bytes::from(d.body)
                };
                let ack = shared
                    .js
                    .publish_with_headers(shared.subjects.deliveries(&d.endpoint), headers, body)
                    .await
                    .map_err(|e| self.fail("store a webhook delivery", e))?;
                pending.push(ack);
                rows.push((d.endpoint, state));
            }
            for ack in pending {
                let ack = ack
                    .await
                    .map_err(|e| self.fail("store a webhook delivery", e))?;
                ids.push(ack.sequence);
            }
        }
        let work: Vec<(String, u64, State)> = rows
            .iter()
            .zip(&ids)
            .map(|((endpoint, state), id)| (endpoint.clone(), *id, state.clone()))
            .collect();
        let created: Vec<Result<(), LogError>> = futures::stream::iter(work)
            .map(|(endpoint, id, state)| async move {
                self.create_state(&endpoint, id, &state).await?;
                self.publish_work(&endpoint, id, 0).await
            })
            .buffer_unordered(PIPELINE)
            .collect()
            .await;
        created.into_iter().collect::<Result<Vec<()>, _>>()?;
        self.signal
            .mark(rows.iter().map(|(endpoint, _)| endpoint.as_str()));
        Ok(ids)
    }

    /// The state of a new delivery (nothing when an earlier try stored it).
    async fn create_state(&self, endpoint: &str, id: u64, state: &State) -> Result<(), LogError> {
        match self
            .states
            .update(key(endpoint, id), state.encode(), 0)
            .await
        {
            Ok(revision) => {
                self.mirror
                    .lock()
                    .put(endpoint, id, revision, state.clone());
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(self.fail("store a webhook delivery state", e)),
        }
    }

    /// A delivery's state as stored now.
    async fn read_state(&self, key: &str) -> Result<Option<Rec>, LogError> {
        let entry = self
            .states
            .entry(key)
            .await
            .map_err(|e| self.fail("read a webhook delivery state", e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| {
                let state = State::decode(&e.value);
                if state.is_none() {
                    tracing::warn!(key, "ignoring a bad delivery state");
                }
                state.map(|state| Rec {
                    revision: e.revision,
                    state,
                })
            }))
    }

    /// Changes a delivery's state with compare-and-set, reading it again on a conflict.
    /// `change` says whether to write at all; its answer counts only on a fresh read (the
    /// mirror may lag). `Ok(None)`: no such delivery, or nothing to change.
    async fn update_state(
        &self,
        endpoint: &str,
        id: u64,
        mut change: impl FnMut(&mut State) -> bool,
    ) -> Result<Option<State>, LogError> {
        let k = key(endpoint, id);
        let mut known = self.mirror.lock().get(endpoint, id);
        for _ in 0..CAS_ATTEMPTS {
            let (rec, fresh) = match known.take() {
                Some(r) => (r, false),
                None => match self.read_state(&k).await? {
                    Some(r) => (r, true),
                    None => return Ok(None),
                },
            };
            let mut state = rec.state.clone();
            if !change(&mut state) {
                if fresh {
                    return Ok(None);
                }
                continue;
            }
            match self.states.update(&k, state.encode(), rec.revision).await {
                Ok(revision) => {
                    self.mirror
                        .lock()
                        .put(endpoint, id, revision, state.clone());
                    return Ok(Some(state));
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(self.fail("update a webhook delivery", e)),
            }
        }
        Err(LogError::Unavailable(format!(
            "webhook delivery {id} keeps changing under this node; try again"
        )))
    }

    /// A delivery's request body: from the deliveries stream, or rebuilt from its event when
    /// it was too large to store. `None` when it is gone.
    async fn body(
        &self,
        endpoint: &str,
        id: u64,
        event_id: u64,
    ) -> Result<Option<String>, LogError> {
        let m = match self.dlv.direct_get(id).await {
            Ok(m) => m,
            // A replica that lags may not have it yet: only the leader's answer says "gone".
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                match self.dlv.get_raw_message(id).await {
                    Ok(m) => m,
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        return Ok(None);
                    }
                    Err(e) => return Err(self.fail("read a webhook delivery", e)),
                }
            }
            Err(e) => return Err(self.fail("read a webhook delivery", e)),
        };
        if m.subject.as_str() != self.shared.subjects.deliveries(endpoint) {
            return Ok(None);
        }
        if m.headers.get(BODY_HEADER).map(|v| v.as_str()) == Some(BODY_FROM_EVENT) {
            return Ok(self
                .shared
                .get(event_id)
                .await?
                .map(|ev| NewDelivery::for_event(endpoint, &ev).body));
        }
        Ok(Some(String::from_utf8_lossy(&m.payload).into_owned()))
    }

    async fn read_attempts(&self, key: &str) -> Result<Vec<Attempt>, LogError> {
        let value = self
            .attempts
            .get(key)
            .await
            .map_err(|e| self.fail("read webhook attempts", e))?;
        Ok(value
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    /// Appends an attempt (once: a repeated call after a failure finds it there).
    async fn append_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), LogError> {
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .attempts
                .entry(key)
                .await
                .map_err(|e| self.fail("read webhook attempts", e))?;
            let (revision, mut list): (u64, Vec<Attempt>) = match entry {
                Some(e) if e.operation == Operation::Put => (
                    e.revision,
                    serde_json::from_slice(&e.value).unwrap_or_default(),
                ),
                Some(e) => (e.revision, Vec::new()),
                None => (0, Vec::new()),
            };
            if list.last() == Some(attempt) {
                return Ok(());
            }
            list.push(attempt.clone());
            if list.len() > MAX_ATTEMPTS_KEPT {
                list.drain(..list.len() - MAX_ATTEMPTS_KEPT);
            }
            let value = serde_json::to_vec(&list)
                .map_err(|e| LogError::Storage(format!("cannot encode attempts: {e}")))?;
            match self
                .attempts
                .update(key, Bytes::from(value), revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(self.fail("store a webhook attempt", e)),
            }
        }
        Err(LogError::Unavailable(format!(
            "attempts of {key} keep changing under this node; try again"
        )))
    }

    /// Takes one pulled work-queue message of `endpoint`: the delivery to attempt, or `None`
    /// when the message is stale (acknowledged and dropped), early (put back for the rest of
    /// the delay), already held here, or its body is gone (then the delivery is failed here).
    async fn take(
        &self,
        endpoint: &str,
        m: Message,
        now: i64,
        skip: &HashSet<u64>,
    ) -> Result<Option<Delivery>, LogError> {
        let parsed = parse_work(&m.payload);
        let handed_out = m.info().map_or(1, |i| i.delivered);
        let (_, acker) = m.split();
        let Some((id, generation)) = parsed else {
            tracing::warn!(endpoint, "dropping a malformed webhook work-queue message");
            let _ = acker.ack_with(AckKind::Term).await;
            return Ok(None);
        };
        // Read fresh, not from the mirror: it must not be attempted again after it finished.
        let rec = match self.read_state(&key(endpoint, id)).await {
            Ok(rec) => rec,
            Err(e) => {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                return Err(e);
            }
        };
        // Dropped only on proof that it is stale: the delivery finished at this generation or
        // has a newer one. A state that is missing or older may be a write this node's read
        // has not seen yet (a lagging replica, or the message published first): it comes
        // back shortly, and is dropped after STATE_WAITS hand-outs.
        let state = match rec {
            Some(r) if r.state.generation == generation && r.state.status == Status::Pending => {
                r.state
            }
            Some(r) if r.state.generation >= generation => {
                drop_stale(&acker, id).await;
                return Ok(None);
            }
            _ if handed_out >= STATE_WAITS => {
                tracing::warn!(
                    endpoint,
                    delivery = id,
                    generation,
                    "dropping a webhook work-queue message whose delivery state never appeared"
                );
                drop_stale(&acker, id).await;
                return Ok(None);
            }
            _ => {
                let _ = acker.ack_with(AckKind::Nak(Some(STATE_WAIT))).await;
                return Ok(None);
            }
        };
        let acker = Arc::new(acker);
        let in_flight = {
            let mut held = self.held.lock();
            if let Some(h) = held.get_mut(&id) {
                // Handed out again while this node works on it (progress did not get through):
                // the newer hand-out is the one to acknowledge.
                h.acker = acker.clone();
                return Ok(None);
            }
            skip.contains(&id)
        };
        if in_flight {
            // Recorded a moment ago, its slot not freed yet: back in a moment.
            let _ = acker.ack_with(AckKind::Nak(Some(STATE_WAIT))).await;
            return Ok(None);
        }
        let wait = state.next_at_ms.saturating_sub(now_ms().max(now));
        if wait > EARLY_MS {
            let delay = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
            if let Err(e) = acker.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(delivery = id, error = %e, "cannot put an early webhook delivery back");
            }
            return Ok(None);
        }
        self.held.lock().insert(
            id,
            Held {
                endpoint: endpoint.to_owned(),
                since: Instant::now(),
                acker: acker.clone(),
            },
        );
        match self.body(endpoint, id, state.event_id).await {
            Ok(Some(body)) => Ok(Some(state.delivery(id, endpoint, body))),
            Ok(None) => {
                tracing::warn!(
                    endpoint,
                    delivery = id,
                    "webhook delivery body is gone; failing it"
                );
                let gone = Outcome {
                    delivery: id,
                    attempt: Attempt {
                        at_ms: now_ms(),
                        status_code: None,
                        duration_ms: 0,
                        error: Some(
                            "not attempted: the delivery's body (or its event) was removed".into(),
                        ),
                        response_body: String::new(),
                    },
                    next: herald_core::webhook::Next::Failed,
                };
                if let Err(e) = self.record_one(endpoint, &gone).await {
                    // Not recorded: give it back (it is not in the dispatcher's hands).
                    let held = self.held.lock().remove(&id);
                    if let Some(h) = held {
                        let _ = h.acker.ack_with(AckKind::Nak(Some(STATE_WAIT))).await;
                    }
                    return Err(e);
                }
                Ok(None)
            }
            Err(e) => {
                // Give it back so another try (here or elsewhere) does not wait for the ack wait.
                self.held.lock().remove(&id);
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                Err(e)
            }
        }
    }

    /// Records one outcome of a delivery this node holds.
    async fn record_one(&self, endpoint: &str, o: &Outcome) -> Result<(), LogError> {
        let id = o.delivery;
        self.append_attempt(&key(endpoint, id), &o.attempt).await?;
        self.update_state(endpoint, id, |st| {
            st.apply(o);
            true
        })
        .await?;
        let Some(held) = self.held.lock().remove(&id) else {
            return Ok(());
        };
        // The state is stored: a lost acknowledgement only means a stale message later.
        let done = match o.next {
            herald_core::webhook::Next::RetryAt(at) => {
                let wait = at.saturating_sub(now_ms()).max(0);
                let delay = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                held.acker.ack_with(AckKind::Nak(Some(delay))).await
            }
            _ => held.acker.double_ack().await,
        };
        if let Err(e) = done {
            tracing::debug!(delivery = id, error = %e, "cannot acknowledge a webhook work-queue message");
        }
        Ok(())
    }

    async fn due_inner(
        &self,
        endpoint: &str,
        now: i64,
        limit: usize,
        skip: &HashSet<u64>,
    ) -> Result<Due, LogError> {
        self.check_open()?;
        self.shared.connected()?;
        let consumer = self.consumer(endpoint).await?;
        let mut pulled = match consumer.fetch().max_messages(limit.max(1)).messages().await {
            Ok(p) => p,
            Err(e) => {
                // Opened again next time (someone may have deleted it).
                self.consumers.lock().remove(endpoint);
                return Err(self.fail("pull webhook deliveries", e));
            }
        };
        let mut messages = Vec::new();
        let mut failure: Option<LogError> = None;
        loop {
            let Ok(next) = tokio::time::timeout(PULL_WAIT, pulled.next()).await else {
                // Unanswered: what it may still bring is handed out again after the ack wait.
                tracing::debug!(endpoint, "a webhook work-queue pull went unanswered");
                break;
            };
            let Some(m) = next else { break };
            match m {
                Ok(m) => messages.push(m),
                Err(e) => {
                    // What came before the error is handed to us: take it. The consumer is
                    // opened again next time (someone may have deleted it).
                    self.consumers.lock().remove(endpoint);
                    failure = Some(self.fail("pull webhook deliveries", e));
                    break;
                }
            }
        }
        let full = messages.len() >= limit;
        let taken: Vec<Result<Option<Delivery>, LogError>> = futures::stream::iter(messages)
            .map(|m| self.take(endpoint, m, now, skip))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for t in taken {
            match t {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure
            && out.is_empty()
        {
            return Err(e);
        }
        out.sort_by_key(|d| d.id);
        // Ask again: at once when the pull was full, else at the next retry known here,
        // and while anything is pending at least every POLL_MS.
        let next = if full {
            Some(now)
        } else {
            self.mirror.lock().upcoming(endpoint, now).map(|soonest| {
                let poll = now.saturating_add(POLL_MS);
                soonest.map_or(poll, |t| t.min(poll))
            })
        };
        Ok((out, next))
    }

    async fn record_all(&self, outcomes: Vec<Outcome>) -> Result<(), LogError> {
        self.check_open()?;
        let work: Vec<(String, Outcome)> = {
            let held = self.held.lock();
            outcomes
                .into_iter()
                .filter_map(|o| match held.get(&o.delivery) {
                    Some(h) => Some((h.endpoint.clone(), o)),
                    None => {
                        // Recorded already (a repeated call), or its endpoint was deleted.
                        tracing::debug!(
                            delivery = o.delivery,
                            "no claim held on a recorded webhook delivery"
                        );
                        None
                    }
                })
                .collect()
        };
        let results: Vec<Result<(), LogError>> = futures::stream::iter(work)
            .map(|(endpoint, o)| async move { self.record_one(&endpoint, &o).await })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn list_deliveries(
        &self,
        endpoint: &str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, LogError> {
        let page = self.mirror.lock().page(endpoint, status, after, limit);
        futures::stream::iter(page)
            .map(|(id, state)| async move {
                let k = key(endpoint, id);
                let body = self
                    .body(endpoint, id, state.event_id)
                    .await?
                    .unwrap_or_default();
                let attempts = if state.attempts > 0 {
                    self.read_attempts(&k).await?
                } else {
                    Vec::new()
                };
                Ok(DeliveryRecord {
                    delivery: state.delivery(id, endpoint, body),
                    attempts,
                })
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn retry_some(
        &self,
        endpoint: &str,
        delivery: Option<u64>,
        since_ms: i64,
    ) -> Result<u64, LogError> {
        self.check_open()?;
        let now = now_ms();
        let ids = match delivery {
            Some(id) => vec![id],
            None => self.mirror.lock().failed_since(endpoint, since_ms),
        };
        let done: Vec<Result<bool, LogError>> = futures::stream::iter(ids)
            .map(|id| async move {
                let changed = self
                    .update_state(endpoint, id, |st| {
                        let hit = delivery.is_some()
                            || (st.status == Status::Failed && st.created_ms >= since_ms);
                        if hit {
                            st.retry_now(now);
                        }
                        hit
                    })
                    .await?;
                let Some(state) = changed else {
                    return Ok(false);
                };
                self.publish_work(endpoint, id, state.generation).await?;
                Ok(true)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut n = 0u64;
        for d in done {
            if d? {
                n += 1;
            }
        }
        if n > 0 {
            self.signal.mark([endpoint]);
        }
        Ok(n)
    }

    fn stats(&self) -> Vec<QueueStats> {
        let set = &self.endpoints.set;
        self.mirror
            .lock()
            .stats(|e| set.get(e).is_some())
            .into_iter()
            .map(|(endpoint, pending, oldest_due_ms)| QueueStats {
                endpoint,
                pending,
                oldest_due_ms,
            })
            .collect()
    }

    /// Removes every delivery of an endpoint from JetStream (best effort: what is left is an
    /// orphan a later sweep removes).
    async fn purge_endpoint(&self, endpoint: &str) {
        let purges = [
            (
                &self.states.stream,
                format!("{}{endpoint}.>", self.states.prefix),
            ),
            (
                &self.attempts.stream,
                format!("{}{endpoint}.>", self.attempts.prefix),
            ),
            (&self.dlv, self.shared.subjects.deliveries(endpoint)),
            (&self.work, self.shared.subjects.work(endpoint)),
        ];
        let durable = consumer_name(&self.shared.stream_name, endpoint);
        if let Err(e) = self.work.delete_consumer(&durable).await {
            tracing::debug!(endpoint, error = %e, "cannot remove a webhook work-queue consumer");
        }
        for (stream, filter) in purges {
            if let Err(e) = stream.purge().filter(filter.as_str()).await {
                tracing::warn!(endpoint, filter = %filter, error = %e, "cannot remove webhook deliveries");
            }
        }
    }

    async fn sweep(&self) -> Result<(), LogError> {
        {
            let mut last = self.last_sweep.lock();
            if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let now = now_ms();
        let known: HashSet<String> = self
            .endpoints
            .set
            .list()
            .iter()
            .map(|c| c.endpoint.id.clone())
            .collect();
        let (old, orphans) = {
            let mirror = self.mirror.lock();
            (
                mirror.finished_before(now.saturating_sub(millis(FINISHED_KEPT)), SWEEP_MAX),
                mirror.orphans(|e| known.contains(e), now.saturating_sub(ORPHAN_AFTER_MS)),
            )
        };
        for endpoint in orphans {
            tracing::info!(endpoint = %endpoint, "removing deliveries of a deleted webhook endpoint");
            self.purge_endpoint(&endpoint).await;
            self.forget(&endpoint);
        }
        if old.is_empty() {
            return Ok(());
        }
        let removed: Vec<Result<(), LogError>> = futures::stream::iter(old)
            .map(|(endpoint, id)| async move {
                let k = key(&endpoint, id);
                for (stream, prefix) in [
                    (&self.states.stream, &self.states.prefix),
                    (&self.attempts.stream, &self.attempts.prefix),
                ] {
                    stream
                        .purge()
                        .filter(format!("{prefix}{k}"))
                        .await
                        .map_err(|e| self.fail("remove an old webhook delivery", e))?;
                }
                if let Err(e) = self.dlv.delete_message(id).await {
                    tracing::debug!(delivery = id, error = %e, "cannot remove an old webhook delivery body");
                }
                self.mirror.lock().remove(&endpoint, id);
                Ok(())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        removed.into_iter().collect()
    }
}

impl Webhooks for NatsWebhooks {
    fn create(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Endpoint, LogError>> {
        async move {
            let inner = &self.inner;
            inner.check_open()?;
            let stored = inner.endpoints.create(&inner.shared, endpoint).await?;
            inner.signal.wake();
            Ok(stored)
        }
        .boxed()
    }

    fn modify(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> BoxFuture<'_, Result<Option<Endpoint>, LogError>> {
        let id = id.to_owned();
        async move {
            let inner = &self.inner;
            inner.check_open()?;
            let out = inner.endpoints.modify(&inner.shared, &id, change).await?;
            inner.signal.mark([id.as_str()]);
            Ok(out)
        }
        .boxed()
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool, LogError>> {
        let id = id.to_owned();
        async move {
            let inner = &self.inner;
            inner.check_open()?;
            let existed = inner.endpoints.delete(&inner.shared, &id).await?;
            if existed {
                inner.purge_endpoint(&id).await;
            }
            inner.forget(&id);
            Ok(existed)
        }
        .boxed()
    }

    fn get(&self, id: &str) -> Option<Endpoint> {
        self.inner.endpoints.set.get(id).map(|c| c.endpoint.clone())
    }

    fn list(&self) -> Vec<Endpoint> {
        self.inner
            .endpoints
            .set
            .list()
            .into_iter()
            .map(|c| c.endpoint.clone())
            .collect()
    }

    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        async move {
            let inner = &self.inner;
            inner.check_open()?;
            for d in &deliveries {
                check_id(&d.endpoint)?;
            }
            inner
                .store(deliveries.into_iter().map(|d| (d, None)).collect())
                .await
        }
        .boxed()
    }

    fn due<'a>(
        &'a self,
        endpoint: &'a str,
        now_ms: i64,
        limit: usize,
        skip: &'a HashSet<u64>,
    ) -> BoxFuture<'a, Result<Due, LogError>> {
        self.inner.due_inner(endpoint, now_ms, limit, skip).boxed()
    }

    fn record(&self, outcomes: Vec<Outcome>) -> BoxFuture<'_, Result<(), LogError>> {
        self.inner.record_all(outcomes).boxed()
    }

    fn deliveries<'a>(
        &'a self,
        endpoint: &'a str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>, LogError>> {
        self.inner
            .list_deliveries(endpoint, status, after, limit)
            .boxed()
    }

    fn retry(
        &self,
        endpoint: &str,
        delivery: Option<u64>,
        since_ms: i64,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        let endpoint = endpoint.to_owned();
        async move { self.inner.retry_some(&endpoint, delivery, since_ms).await }.boxed()
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStats>, LogError>> {
        futures::future::ready(Ok(self.inner.stats())).boxed()
    }

    fn signal(&self) -> Arc<Signal> {
        self.inner.signal.clone()
    }
}
