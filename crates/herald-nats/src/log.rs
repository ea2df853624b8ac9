//! [`JetStreamLog`]: the handle the hub holds, opening, appends and the shared state.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{
    Client, ConnectOptions,
    connection::State,
    jetstream::{
        self,
        context::PublishAckFuture,
        kv,
        stream::{self, DiscardPolicy, StorageType},
    },
};
use futures::{
    StreamExt, TryStreamExt,
    future::{BoxFuture, FutureExt},
};
use herald_core::{
    Appended, CommitSink, Event, Log, LogError, LogOptions, NewEvent, Pattern, Topic, TopicInfo,
    TopicTable, event::now_ms,
};
use parking_lot::{Mutex, RwLock};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    NatsError, NatsOptions,
    codec::{self, Subjects},
    feed, floors,
    queues::NatsQueues,
    webhooks::NatsWebhooks,
};

/// Bound of every JetStream API request and publish acknowledgement.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an append waits for this node's feed to hand its events to the sink.
const VISIBLE_WAIT: Duration = Duration::from_secs(10);

/// How long `close` waits for the feed to deliver what this node stored.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Publishes of one append in flight at once.
const PIPELINE: usize = 128;

/// Acknowledgements the node awaits at once (all appends together). Past it a publish fails
/// at once (`Unavailable`) instead of waiting for a permit that appends holding others'
/// acknowledgements might never free.
const MAX_ACKS_IN_FLIGHT: usize = 65_536;

/// Subject lookups at open that run at once.
const OPEN_CONCURRENCY: usize = 16;

/// How many times an append re-publishes an event whose key points to a message a failed
/// batch rolled back (see [`JetStreamLog`]).
const ORPHAN_RETRIES: usize = 4;

/// The oldest retained event of a topic: its id and the stream's timestamp of it (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Oldest {
    pub(crate) seq: u64,
    pub(crate) at_ms: i64,
}

/// Per-topic state in memory.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    /// Last id, count and pruned-through per topic.
    pub(crate) table: TopicTable,
    /// Oldest retained event per topic, for age retention without a scan.
    pub(crate) oldest: HashMap<Topic, Oldest>,
}

/// State shared by the handle, the feed task and the webhooks.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) stream_name: String,
    pub(crate) subjects: Subjects,
    pub(crate) options: LogOptions,
    /// The last id handed to the sink (everything up to it is readable here).
    pub(crate) head: AtomicU64,
    /// The same, for waiting.
    pub(crate) head_tx: watch::Sender<u64>,
    /// The highest id this node stored (what `close` waits for).
    pub(crate) stored: AtomicU64,
    pub(crate) topics: RwLock<Topics>,
    pub(crate) sink: RwLock<Option<Arc<dyn CommitSink>>>,
    pub(crate) closed: AtomicBool,
    /// Stops the background tasks.
    pub(crate) stop: CancellationToken,
    pub(crate) floors: kv::Store,
    /// Why the last check of the events stream failed (`None`: it answered).
    pub(crate) stream_trouble: Mutex<Option<String>>,
}

impl Shared {
    /// Fails fast when the connection is down.
    pub(crate) fn connected(&self) -> Result<(), LogError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(LogError::Unavailable(
                "the connection to NATS is down".into(),
            )),
        }
    }

    /// A NATS failure as a log error. Every one of them is the infrastructure's, and worth a
    /// retry later: `Unavailable` (a 503).
    pub(crate) fn fail(&self, what: &str, e: impl fmt::Display) -> LogError {
        match self.client.connection_state() {
            State::Connected => LogError::Unavailable(format!("NATS {what}: {e}")),
            _ => LogError::Unavailable(format!("the connection to NATS is down ({what}: {e})")),
        }
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Hands a run of events to the sink: stats first, then the head, then the sink, then
    /// the waiters (an append returns only after its events reached the sink).
    pub(crate) fn deliver(&self, events: &[(Arc<Event>, i64)], through: u64) {
        if !events.is_empty() {
            let mut topics = self.topics.write();
            for (ev, at_ms) in events {
                topics.table.appended(&ev.topic, ev.id);
                topics.oldest.entry(ev.topic.clone()).or_insert(Oldest {
                    seq: ev.id,
                    at_ms: *at_ms,
                });
            }
        }
        if through > self.head() {
            self.head.store(through, Ordering::Release);
        }
        if !events.is_empty() {
            let sink = self.sink.read().clone();
            if let Some(sink) = sink {
                let list: Vec<Arc<Event>> = events.iter().map(|(e, _)| e.clone()).collect();
                sink.committed(&list);
            }
        }
        self.head_tx.send_if_modified(|h| {
            if through > *h {
                *h = through;
                true
            } else {
                false
            }
        });
    }

    /// Waits until the feed handed event `seq` (or a later one) to the sink.
    async fn visible(&self, seq: u64) -> Result<(), LogError> {
        let mut rx = self.head_tx.subscribe();
        match tokio::time::timeout(VISIBLE_WAIT, rx.wait_for(|h| *h >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(LogError::Closed),
            Err(_) => Err(LogError::Unavailable(format!(
                "event {seq} is stored, but this node's event feed has not caught up with it"
            ))),
        }
    }

    /// The stored event at `seq`, if it is still there.
    pub(crate) async fn get(&self, seq: u64) -> Result<Option<Arc<Event>>, LogError> {
        match self.stream.direct_get(seq).await {
            Ok(m) => codec::decode(
                &self.subjects,
                m.sequence,
                m.subject.as_str(),
                Some(&m.headers),
                &m.payload,
            )
            .map(Some)
            .map_err(|e| LogError::Storage(e.0)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("get", e)),
        }
    }

    /// Deletes what a failed batch stored (best effort: a failure is logged).
    async fn roll_back(&self, seqs: &[u64]) {
        for &seq in seqs.iter().rev() {
            if let Err(e) = self.stream.delete_message(seq).await {
                tracing::warn!(seq, error = %e, "cannot roll back an event of a failed batch");
            }
        }
    }
}

/// The cluster event log on NATS JetStream. See the [crate docs](crate).
pub struct JetStreamLog {
    shared: Arc<Shared>,
    webhooks: Arc<NatsWebhooks>,
    queues: Arc<NatsQueues>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("stream", &self.shared.stream_name)
            .field("head", &self.shared.head())
            .finish_non_exhaustive()
    }
}

/// Runs a create-or-open step again when it fails: nodes starting together race to create the
/// same streams, buckets and consumers, and the loser of such a race gets an error although
/// the thing now exists. A few tries with a short pause, then the last error.
/// How often a node asks JetStream about the events stream (for `ready`).
const STREAM_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long that question may take.
const STREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes JetStream every second, so that `ready` also fails when the connection is up but
/// JetStream cannot store (no quorum, no leader).
async fn check_stream(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(STREAM_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if shared.client.connection_state() != State::Connected {
            continue;
        }
        let trouble = tokio::time::timeout(STREAM_CHECK_TIMEOUT, stream_trouble(&shared))
            .await
            .unwrap_or_else(|_| {
                Some(format!(
                    "JetStream did not answer within {STREAM_CHECK_TIMEOUT:?}"
                ))
            });
        let mut slot = shared.stream_trouble.lock();
        if *slot != trouble {
            match &trouble {
                Some(why) => tracing::warn!(reason = %why, "not ready"),
                None => tracing::info!("the events stream answers again"),
            }
            *slot = trouble;
        }
    }
}

/// The key every node writes into the floors bucket to see whether JetStream can store
/// (not a topic, so never a floor).
pub(crate) const PROBE_KEY: &str = "=ready";

/// What keeps JetStream from storing now, if anything: a write of the probe key (a KV put
/// needs the bucket's leader and, with replicas, a majority of its servers, like a publish).
/// Read-only questions are no test: a server that lost its peers still answers them.
async fn stream_trouble(shared: &Shared) -> Option<String> {
    match shared
        .floors
        .put(PROBE_KEY, bytes::Bytes::from_static(b"1"))
        .await
    {
        Ok(_) => None,
        Err(e) => Some(format!("JetStream cannot store (no quorum?): {e}")),
    }
}

/// A durable pull consumer that every node pulls from and that hands each message to one
/// pull at a time until it is acknowledged or `ack_wait` runs out (shared queues, the
/// webhook work queue): explicit acks, from the first retained message, never given up.
pub(crate) async fn open_shared_consumer(
    stream: &async_nats::jetstream::stream::Stream,
    durable: &str,
    description: String,
    filter_subject: String,
    ack_wait: std::time::Duration,
    max_ack_pending: i64,
) -> Result<async_nats::jetstream::consumer::PullConsumer, String> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let config = pull::Config {
        durable_name: Some(durable.to_owned()),
        description: Some(description),
        filter_subject,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending,
        ..Default::default()
    };
    retry_race(|| stream.get_or_create_consumer(durable, config.clone()))
        .await
        .map_err(|e| e.to_string())
}

pub(crate) async fn retry_race<T, E, F, Fut>(mut step: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0u64;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 5 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
            }
        }
    }
}

async fn connect(opts: &NatsOptions) -> Result<Client, NatsError> {
    // rustls is built with two crypto back-ends in this binary (reqwest brings aws-lc-rs,
    // async-nats ring), so it cannot pick one by itself and TLS to NATS would panic: pick one
    // for the process unless something already did.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let mut co = ConnectOptions::new()
        .name("herald")
        .connection_timeout(opts.connect_timeout)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // Reconnect quickly (a restarted server is back in well under a second), forever.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(
                u64::try_from(attempts)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(100),
            )
            .min(Duration::from_secs(1))
        })
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        });
    if let Some(path) = &opts.credentials {
        co = co.credentials_file(path).await.map_err(|e| {
            NatsError::Options(format!("cannot read credentials {}: {e}", path.display()))
        })?;
    }
    if let Some(ca) = &opts.tls_ca {
        co = co.add_root_certificates(ca.clone()).require_tls(true);
    }
    // Several servers of one cluster: `nats://a:4222,nats://b:4222`.
    let urls = opts
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| NatsError::Connect {
                    url: u.to_owned(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    co.connect(urls.as_slice())
        .await
        .map_err(|e| NatsError::Connect {
            url: opts.url.clone(),
            message: e.to_string(),
        })
}

/// The events stream. Its own limits are a backstop set above the retention rules (twice the
/// largest `max_events` per topic, the longest `max_age` plus 10 %, at least a minute):
/// [`Log::maintain`] applies the rules per topic first and records what it removed (for
/// `floor`), which a limit the stream applies by itself would not.
fn stream_config(opts: &NatsOptions, log: &LogOptions, subjects: &Subjects) -> stream::Config {
    let r = &log.retention;
    let most = r
        .rules
        .iter()
        .map(|r| r.max_events)
        .chain([r.default_max_events])
        .max()
        .unwrap_or(0);
    let longest = r.longest_age();
    let max_age = if longest.is_zero() {
        Duration::ZERO
    } else {
        longest + (longest / 10).max(Duration::from_secs(60))
    };
    let mut dedupe = log.dedupe_window;
    if !max_age.is_zero() {
        dedupe = dedupe.min(max_age);
    }
    stream::Config {
        name: opts.stream.clone(),
        description: Some("Herald events (the sequence is the event id)".into()),
        subjects: vec![subjects.all_events()],
        max_messages_per_subject: i64::try_from(most.saturating_mul(2)).unwrap_or(i64::MAX),
        max_age,
        duplicate_window: dedupe,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

/// Per-topic stats from the stream: counts, newest and oldest id per subject.
async fn load_topics(
    stream: &stream::Stream,
    subjects: &Subjects,
) -> Result<(Topics, u64), NatsError> {
    // The head first: everything up to it is in the stream (or was removed), and the feed
    // starts after it. Subjects read later may already hold newer events, which only makes
    // their stats a little ahead until the feed gets there.
    let info = stream
        .get_info()
        .await
        .map_err(|e| NatsError::js("stream info", e))?;
    let head = info.state.last_sequence;
    let mut per_subject = Vec::new();
    if info.state.messages > 0 {
        let mut list = stream
            .info_with_subjects(subjects.all_events())
            .await
            .map_err(|e| NatsError::js("stream subjects", e))?;
        while let Some((subject, count)) = list
            .try_next()
            .await
            .map_err(|e| NatsError::js("stream subjects", e))?
        {
            match subjects.topic_of(&subject).map(Topic::new) {
                Some(Ok(topic)) => per_subject.push((topic, subject, count as u64)),
                _ => tracing::warn!(subject, "ignoring a subject that is not a topic"),
            }
        }
    }
    let loaded: Vec<_> = futures::stream::iter(per_subject)
        .map(|(topic, subject, count)| async move {
            let first = stream.direct_get_first_for_subject(subject.clone()).await;
            let last = stream.direct_get_last_for_subject(subject).await;
            (topic, count, first, last)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let mut topics = Topics::default();
    for (topic, count, first, last) in loaded {
        let (Ok(first), Ok(last)) = (first, last) else {
            // Removed since the listing.
            continue;
        };
        let s = topics.table.entry(&topic);
        s.last_id = last.sequence;
        s.count = count;
        topics.oldest.insert(
            topic,
            Oldest {
                seq: first.sequence,
                at_ms: codec::datetime_ms(&first.time),
            },
        );
    }
    Ok((topics, head))
}

impl JetStreamLog {
    /// Connects, creates or updates the events stream and the floors bucket, loads the
    /// per-topic stats and starts this node's feed after the stream's current last event.
    ///
    /// # Errors
    /// Invalid options, NATS unreachable, or JetStream refusing the stream or a bucket (for
    /// instance more replicas than the cluster has servers).
    pub async fn open(opts: NatsOptions, log_opts: LogOptions) -> Result<JetStreamLog, NatsError> {
        opts.validate()?;
        let subjects = Subjects::new(&opts.prefix());
        let client = connect(&opts).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(false)
            .build(client.clone());
        retry_race(|| js.create_or_update_stream(stream_config(&opts, &log_opts, &subjects)))
            .await
            .map_err(|e| NatsError::js("create or update the events stream", e))?;
        let stream = js
            .get_stream(&opts.stream)
            .await
            .map_err(|e| NatsError::js("open the events stream", e))?;
        let floors_kv = floors::open(&js, &opts).await?;
        let (mut topics, head) = load_topics(&stream, &subjects).await?;
        floors::load(&floors_kv, &mut topics.table).await?;
        tracing::info!(
            url = %opts.url,
            stream = %opts.stream,
            head,
            topics = topics.oldest.len(),
            "opened the JetStream event log"
        );
        let (head_tx, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            client,
            js,
            stream,
            stream_name: opts.stream.clone(),
            subjects,
            options: log_opts,
            head: AtomicU64::new(head),
            head_tx,
            stored: AtomicU64::new(0),
            topics: RwLock::new(topics),
            sink: RwLock::new(None),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            floors: floors_kv,
            stream_trouble: Mutex::new(None),
        });
        let webhooks = NatsWebhooks::open(shared.clone(), &opts).await?;
        let tasks = vec![
            tokio::spawn(feed::run(shared.clone())),
            tokio::spawn(floors::watch(shared.clone())),
            tokio::spawn(check_stream(shared.clone())),
        ];
        Ok(JetStreamLog {
            queues: Arc::new(NatsQueues::new(shared.clone(), opts.lease)),
            shared,
            webhooks: Arc::new(webhooks),
            tasks: Mutex::new(tasks),
        })
    }

    /// The events stream's name.
    pub fn stream_name(&self) -> &str {
        &self.shared.stream_name
    }

    /// Publishes a batch; see [`Log::append`] and the crate docs for the batch semantics.
    async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        shared.connected()?;
        let now = now_ms();
        // Pipelined in chunks: the publishes of a chunk go out in order on the one
        // connection (so the stream stores them in batch order), then their acknowledgements
        // are awaited in order. Chunks bound the acknowledgements one append holds open.
        let mut acks = Vec::with_capacity(batch.len());
        let mut failure: Option<LogError> = None;
        for chunk in batch.chunks(PIPELINE) {
            let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(chunk.len());
            for new in chunk {
                let sent = shared
                    .js
                    .publish_with_headers(
                        shared.subjects.topic(new.topic.as_str()),
                        codec::headers(new, now),
                        codec::payload(new),
                    )
                    .await;
                match sent {
                    Ok(ack) => pending.push(ack),
                    Err(e) => {
                        failure = Some(shared.fail("publish", e));
                        break;
                    }
                }
            }
            for ack in pending {
                match ack.await {
                    Ok(ack) => acks.push(Some(ack)),
                    Err(e) => {
                        acks.push(None);
                        failure.get_or_insert_with(|| shared.fail("publish", e));
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        let fresh: Vec<u64> = acks
            .iter()
            .flatten()
            .filter(|a| !a.duplicate)
            .map(|a| a.sequence)
            .collect();
        if let Some(max) = fresh.iter().max() {
            shared.stored.fetch_max(*max, Ordering::AcqRel);
        }
        if let Some(e) = failure {
            shared.roll_back(&fresh).await;
            return Err(e);
        }

        let mut out: Vec<Appended> = Vec::with_capacity(batch.len());
        let mut added = fresh.clone();
        for (new, ack) in batch.into_iter().zip(acks) {
            let Some(ack) = ack else {
                // Unreachable: a missing ack is a failure, handled above.
                return Err(LogError::Storage("publish acknowledgement missing".into()));
            };
            if !ack.duplicate {
                out.push(Appended {
                    event: Arc::new(Event::from_new(ack.sequence, new, now)),
                    duplicate: false,
                });
                continue;
            }
            match self
                .resolve_duplicate(ack.sequence, new, now, &out, &mut added)
                .await
            {
                Ok(a) => out.push(a),
                Err(e) => {
                    shared.roll_back(&added).await;
                    return Err(e);
                }
            }
        }
        if let Some(&max) = added.iter().max() {
            shared.visible(max).await?;
        }
        Ok(out)
    }

    /// The answer for a publish JetStream found a duplicate of: the earlier event at `seq`.
    /// When that message is gone, either retention removed it (the answer is rebuilt from the
    /// retry, which carries the same event) or a failed batch rolled it back, in which case
    /// the event is stored now under a derived message id (`<key> <seq>`; the space never
    /// occurs in an encoded key), which every node derives alike.
    async fn resolve_duplicate(
        &self,
        seq: u64,
        new: NewEvent,
        now: i64,
        earlier: &[Appended],
        added: &mut Vec<u64>,
    ) -> Result<Appended, LogError> {
        let shared = &self.shared;
        if let Some(a) = earlier.iter().find(|a| a.event.id == seq) {
            return Ok(Appended {
                event: a.event.clone(),
                duplicate: true,
            });
        }
        let mut seq = seq;
        let mut msg_id = new
            .key
            .as_deref()
            .map(codec::encode_key)
            .unwrap_or_default();
        for _ in 0..ORPHAN_RETRIES {
            if let Some(event) = shared.get(seq).await? {
                return Ok(Appended {
                    event,
                    duplicate: true,
                });
            }
            let pruned = shared
                .topics
                .read()
                .table
                .get(new.topic.as_str())
                .is_some_and(|s| s.pruned_through >= seq);
            if pruned {
                return Ok(Appended {
                    event: Arc::new(Event::from_new(seq, new, now)),
                    duplicate: true,
                });
            }
            msg_id = format!("{msg_id} {seq}");
            let mut headers = codec::headers(&new, now);
            headers.insert(codec::MSG_ID_HEADER, msg_id.as_str());
            let ack = shared
                .js
                .publish_with_headers(
                    shared.subjects.topic(new.topic.as_str()),
                    headers,
                    codec::payload(&new),
                )
                .await
                .map_err(|e| shared.fail("publish", e))?
                .await
                .map_err(|e| shared.fail("publish", e))?;
            if !ack.duplicate {
                added.push(ack.sequence);
                shared.stored.fetch_max(ack.sequence, Ordering::AcqRel);
                return Ok(Appended {
                    event: Arc::new(Event::from_new(ack.sequence, new, now)),
                    duplicate: false,
                });
            }
            seq = ack.sequence;
        }
        Err(LogError::Storage(format!(
            "idempotency key of an event in {} keeps pointing at removed events",
            new.topic
        )))
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        // The tasks hold the shared state; without this they would run on after the handle.
        self.shared.stop.cancel();
    }
}

impl Log for JetStreamLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        self.publish(batch).boxed()
    }

    fn read<'a>(
        &'a self,
        patterns: &'a [Pattern],
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        let upto = self.shared.head();
        crate::read::read(&self.shared, patterns, after, upto, limit).boxed()
    }

    fn latest<'a>(
        &'a self,
        patterns: &'a [Pattern],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        crate::read::latest(&self.shared, patterns, limit).boxed()
    }

    fn topics<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<TopicInfo>, LogError>> {
        let list = self.shared.topics.read().table.list(prefix);
        futures::future::ready(Ok(list)).boxed()
    }

    fn head(&self) -> u64 {
        self.shared.head()
    }

    fn floor(&self, patterns: &[Pattern]) -> u64 {
        self.shared.topics.read().table.floor(patterns)
    }

    fn set_sink(&self, sink: Arc<dyn CommitSink>) {
        *self.shared.sink.write() = Some(sink);
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            crate::retention::maintain(&self.shared).await?;
            self.webhooks.maintain().await
        }
        .boxed()
    }

    fn ready(&self) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.shared.connected()?;
        match self.shared.stream_trouble.lock().clone() {
            None => Ok(()),
            Some(why) => Err(LogError::Unavailable(why)),
        }
    }

    fn webhooks(&self) -> Arc<dyn herald_core::Webhooks> {
        self.webhooks.clone()
    }

    fn shared_queues(&self) -> Option<Arc<dyn herald_core::SharedQueues>> {
        Some(self.queues.clone())
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            let shared = &self.shared;
            if shared.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            // Let the feed hand over what this node stored, so subscribers of this node see
            // every event it acknowledged, then stop it.
            let stored = shared.stored.load(Ordering::Acquire);
            if stored > shared.head() {
                let _ = shared.visible(stored).await;
            }
            shared.stop.cancel();
            let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
            for t in tasks {
                if tokio::time::timeout(CLOSE_WAIT, t).await.is_err() {
                    tracing::warn!("a JetStream log task did not stop in time");
                }
            }
            self.webhooks.close().await;
            // Reads keep working after close, so the connection stays; flush what is queued.
            match tokio::time::timeout(REQUEST_TIMEOUT, shared.client.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(shared.fail("flush", e)),
                Err(_) => Err(LogError::Unavailable("NATS flush timed out".into())),
            }
        }
        .boxed()
    }
}
