//! `herald bench`: fan-out measured from the outside.
//!
//! Phases: connect N subscribers (one tokio task and one connection each, at most
//! `--connect-concurrency` connecting at once) and wait until every one is subscribed;
//! optionally hold the idle connections (`--hold`) and read the server's memory; publish the
//! events with P concurrent HTTP publishers, round-robin over the topics, each carrying
//! `{"seq": n, "t": <send time, Unix ns>}`; wait until every subscriber has every event of its
//! topic (or the timeout passes); stop the subscribers and merge what they recorded.
//!
//! Subscribers speak SSE, the JSON WebSocket protocol, STOMP 1.2 over WebSocket, STOMP 1.2
//! over SockJS's `websocket` transport or long polling; with URL templates (`--sub-url`, `--pub-url`) the same measurements drive another
//! server, such as Nchan, that carries the `{"seq","t"}` object as its message.
//!
//! Each subscriber keeps its own latency histogram (no shared lock on the hot path) and a
//! bitmap of the sequence numbers it has seen, which tells lost from duplicated events; the
//! server ids tell whether events arrived out of order (or `seq`, with one publisher, when the
//! ids are not numbers). The only shared writes are two atomics per received chunk, which
//! drive the progress bar and the stop condition. The wire readers ([`wire`]) allocate
//! nothing per event.
//!
//! With `--server-pid`, [`procfs`] reads the server's resident memory before and after the
//! connections are made, and its CPU time over the publish and delivery phase; the bench's
//! own CPU share is always reported, because a saturated load generator makes a fan-out
//! figure a lower bound of what the server can do.

mod h1pub;
mod procfs;
mod wire;

use std::{
    borrow::Cow,
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest as _, protocol::WebSocketConfig},
};
use tokio_util::sync::CancellationToken;

use crate::{
    bench::h1pub::{H1Publisher, H1Target},
    cli::{BenchArgs, BenchVia},
    client::{self, Client, unix_nanos},
};

/// Attempts a subscriber makes to connect before the bench gives up on it.
const CONNECT_ATTEMPTS: u32 = 3;
/// Time allowed for one subscriber to connect and be subscribed.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one publish request.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest latency the histograms resolve, in microseconds (larger values are clamped; the
/// exact maximum is tracked separately).
const MAX_TRACKED_US: u64 = 60_000_000;
/// How often the progress bars and stop conditions are looked at.
const TICK: Duration = Duration::from_millis(20);
/// WebSocket read buffer per subscriber: tungstenite's default (128 KiB, allocated up front)
/// would dominate the memory of a large run. tungstenite zeroes the whole free part before
/// every read (also the last read of a burst, which finds nothing): with 4 KiB instead of
/// 16 KiB the SockJS generator delivered ~3 % more at the same CPU (three alternating runs).
const WS_READ_BUFFER: usize = 4 * 1024;
/// Long-poll wait per request, in seconds, and the page size.
const POLL_WAIT_SECS: u64 = 30;
const POLL_LIMIT: u64 = 1000;
/// Time allowed for one long poll: its wait plus slack.
const POLL_TIMEOUT: Duration = Duration::from_secs(POLL_WAIT_SECS + 15);
/// STOMP subprotocol offered on the WebSocket handshake.
const STOMP_SUBPROTOCOL: &str = "v12.stomp";
/// Most bytes of an incomplete STOMP frame a subscriber buffers before giving up.
const STOMP_MAX_PENDING: usize = 16 * 1024 * 1024;
/// Session URL path characters SockJS clients pick from (sockjs-client: 8 random ones).
const SOCKJS_ID_CHARS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz012345";

/// What the whole bench shares.
struct Shared {
    /// Cancelled when the subscribers should stop.
    stop: CancellationToken,
    /// Origin of the `*_ns` timestamps below.
    base: Instant,
    /// Subscribers subscribed.
    connected: AtomicUsize,
    /// Subscribers that gave up connecting.
    failed: AtomicUsize,
    /// The first connection error, for the report.
    first_error: Mutex<Option<String>>,
    /// Distinct expected events received, over all subscribers.
    delivered: AtomicU64,
    /// When the last of those arrived, in ns since `base`.
    last_delivery_ns: AtomicU64,
    /// Connections lost (and re-established) after subscribing.
    reconnects: AtomicU64,
    /// Limits how many subscribers connect at once.
    connect_slots: Semaphore,
}

impl Shared {
    fn new(connect_concurrency: usize) -> Self {
        Self {
            stop: CancellationToken::new(),
            base: Instant::now(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_slots: Semaphore::new(connect_concurrency),
        }
    }

    fn fail(&self, err: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(err);
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn first_error(&self) -> String {
        self.first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "unknown error".into())
    }

    fn since_base_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a subscriber as subscribed (once).
    fn subscribed(&self, subscribed: &mut bool) {
        if !*subscribed {
            *subscribed = true;
            self.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `data` of a bench event.
#[derive(Deserialize)]
struct Payload {
    seq: Option<u64>,
    t: Option<u64>,
}

/// What one subscriber has seen.
struct Tracker {
    topic: u64,
    topics: u64,
    events: u64,
    /// Bit `seq / topics` is set once `seq` was received.
    seen: Vec<u64>,
    /// Highest numeric server id received (the resume cursor, and the order check).
    last_id: Option<u64>,
    /// The last id received that is not a number (a foreign server's cursor), or empty.
    foreign_id: String,
    /// Check the order by `seq` for events without a numeric id: only meaningful when one
    /// publisher sends the events one after the other.
    seq_order: bool,
    last_seq: Option<u64>,
    received: u64,
    distinct: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
    /// Distinct events not yet added to `Shared::delivered`.
    pending: u64,
    /// Delivery latency in microseconds.
    latency: Histogram<u32>,
    max_latency_ns: u64,
}

/// What a subscriber hands back at the end.
struct SubReport {
    topic: u64,
    latency: Histogram<u32>,
    max_latency_ns: u64,
    received: u64,
    distinct: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
}

impl Tracker {
    fn new(topic: u64, topics: u64, events: u64, seq_order: bool) -> anyhow::Result<Self> {
        let per_topic = events_on(topic, topics, events);
        Ok(Self {
            topic,
            topics,
            events,
            seen: vec![0; usize::try_from(per_topic.div_ceil(64))?],
            last_id: None,
            foreign_id: String::new(),
            seq_order,
            last_seq: None,
            received: 0,
            distinct: 0,
            duplicated: 0,
            reordered: 0,
            unexpected: 0,
            pending: 0,
            latency: Histogram::new_with_bounds(1, MAX_TRACKED_US, 2)?,
            max_latency_ns: 0,
        })
    }

    /// Records one received event (anything that is not a bench event is ignored).
    fn record(&mut self, id: Option<&str>, data: &[u8], now_ns: u64) {
        let Some((seq, t)) =
            wire::bench_payload(data).or_else(|| match serde_json::from_slice::<Payload>(data) {
                Ok(Payload {
                    seq: Some(seq),
                    t: Some(t),
                }) => Some((seq, t)),
                _ => None,
            })
        else {
            return;
        };
        self.received += 1;
        if seq >= self.events || seq % self.topics != self.topic {
            self.unexpected += 1;
            return;
        }
        let bit = seq / self.topics;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let Some(w) = self.seen.get_mut(word) else {
            self.unexpected += 1;
            return;
        };
        if *w & mask != 0 {
            self.duplicated += 1;
            return;
        }
        *w |= mask;
        self.distinct += 1;
        self.pending += 1;
        match id.map(|s| (s, s.parse::<u64>())) {
            Some((_, Ok(n))) => match self.last_id {
                Some(last) if n < last => self.reordered += 1,
                _ => self.last_id = Some(n),
            },
            other => {
                if let Some((text, Err(_))) = other {
                    self.foreign_id.clear();
                    self.foreign_id.push_str(text);
                }
                if self.seq_order {
                    match self.last_seq {
                        Some(last) if seq < last => self.reordered += 1,
                        _ => self.last_seq = Some(seq),
                    }
                }
            }
        }
        let latency_ns = now_ns.saturating_sub(t);
        self.max_latency_ns = self.max_latency_ns.max(latency_ns);
        self.latency.saturating_record((latency_ns / 1000).max(1));
    }

    /// Where to resume after a dropped connection: the highest numeric id, else the last
    /// foreign id.
    fn cursor(&self) -> Option<String> {
        match self.last_id {
            Some(n) => Some(n.to_string()),
            None if !self.foreign_id.is_empty() => Some(self.foreign_id.clone()),
            None => None,
        }
    }

    /// Publishes the progress made since the last flush.
    fn flush(&mut self, shared: &Shared) {
        if self.pending > 0 {
            shared.delivered.fetch_add(self.pending, Ordering::Relaxed);
            shared
                .last_delivery_ns
                .fetch_max(shared.since_base_ns(), Ordering::Relaxed);
            self.pending = 0;
        }
    }

    fn finish(mut self, shared: &Shared) -> SubReport {
        self.flush(shared);
        SubReport {
            topic: self.topic,
            latency: self.latency,
            max_latency_ns: self.max_latency_ns,
            received: self.received,
            distinct: self.distinct,
            duplicated: self.duplicated,
            reordered: self.reordered,
            unexpected: self.unexpected,
        }
    }
}

/// How many of `0..events` fall on `topic` when spread round-robin over `topics`.
fn events_on(topic: u64, topics: u64, events: u64) -> u64 {
    events / topics + u64::from(topic < events % topics)
}

/// A URL template with its `{server}` and `{topic}` filled in (the topic percent-encoded as a
/// path segment, which is also safe in a query).
fn expand(template: &str, server: &str, topic: &str) -> String {
    template
        .replace("{server}", server.trim_end_matches('/'))
        .replace("{topic}", &client::encode_segment(topic))
}

/// `http(s)://` as `ws(s)://`; other URLs unchanged.
fn to_ws_scheme(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// Where subscribers connect and publishers post, per topic.
struct Targets {
    sub_urls: Vec<Arc<str>>,
    pub_urls: Arc<Vec<String>>,
    /// Publish the bare `{"seq","t"}` object instead of Herald's envelope.
    raw_publish: bool,
    /// WebSocket messages are bare event data.
    ws_raw: bool,
}

impl Targets {
    fn new(args: &BenchArgs, client: &Client, names: &[String]) -> anyhow::Result<Self> {
        let server = client.base.as_str();
        if let Some(t) = &args.sub_url {
            anyhow::ensure!(
                t.contains("{topic}") || matches!(args.via, BenchVia::Stomp | BenchVia::SockJs),
                "--sub-url needs a {{topic}} placeholder, e.g. http://127.0.0.1:8081/sub/{{topic}}"
            );
        }
        if let Some(t) = &args.pub_url {
            anyhow::ensure!(
                t.contains("{topic}"),
                "--pub-url needs a {{topic}} placeholder, e.g. http://127.0.0.1:8081/pub?chan={{topic}}"
            );
        }
        anyhow::ensure!(
            !args.ws_raw || (args.via == BenchVia::Ws && args.sub_url.is_some()),
            "--ws-raw goes with --via ws and a --sub-url"
        );
        let sub_urls = names
            .iter()
            .map(|name| {
                let url = match (&args.sub_url, args.via) {
                    (Some(t), BenchVia::Ws | BenchVia::Stomp | BenchVia::SockJs) => {
                        to_ws_scheme(&expand(t, server, name))
                    }
                    (Some(t), _) => expand(t, server, name),
                    (None, BenchVia::Sse | BenchVia::Longpoll) => client.events_url(name),
                    (None, BenchVia::Ws) => client.ws_url("/api/v1/ws"),
                    // STOMP's SockJS service is under /ws too (session URLs: see `sockjs_url`).
                    (None, BenchVia::Stomp | BenchVia::SockJs) => client.ws_url("/ws"),
                };
                reqwest::Url::parse(&url).with_context(|| format!("{url:?} is not a URL"))?;
                Ok(Arc::from(url))
            })
            .collect::<anyhow::Result<Vec<Arc<str>>>>()?;
        let pub_urls = names
            .iter()
            .map(|name| match (&args.pub_url, &args.pub_server) {
                (Some(t), _) => expand(t, server, name),
                (None, Some(other)) => format!(
                    "{}/api/v1/topics/{}/events",
                    other.trim_end_matches('/'),
                    client::encode_segment(name)
                ),
                (None, None) => client.events_url(name),
            })
            .collect();
        Ok(Self {
            sub_urls,
            pub_urls: Arc::new(pub_urls),
            raw_publish: args.pub_url.is_some(),
            ws_raw: args.via == BenchVia::Ws && (args.ws_raw || args.sub_url.is_some()),
        })
    }
}

/// How a WebSocket subscriber talks once connected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WsMode {
    /// Herald's JSON protocol: send `subscribe`, wait for `subscribed`, read `event`s.
    Json,
    /// Every message is one event's data (Nchan's websocket subscriber).
    Raw,
    /// STOMP 1.2: CONNECT, SUBSCRIBE with a receipt, MESSAGE frames.
    Stomp,
    /// The same STOMP 1.2 exchange in SockJS framing, on a fresh SockJS session per
    /// connection (`<url>/<server>/<session>/websocket`).
    SockJs,
}

/// How a subscriber reaches the server.
#[derive(Clone)]
enum Door {
    Sse {
        client: Client,
    },
    Poll {
        client: Client,
    },
    Ws {
        addr: SocketAddr,
        local: Option<IpAddr>,
        token: Option<String>,
        mode: WsMode,
    },
}

/// CPU clocks at one moment: the server's (if watched) and the bench's own, in ticks.
#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    server: Option<u64>,
    me: Option<u64>,
}

impl CpuMark {
    fn now(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            server: server_pid.and_then(|p| procfs::cpu_ticks(&p.to_string())),
            me: procfs::cpu_ticks("self"),
        }
    }

    /// `(server CPU seconds, own CPU share of one core)` from `self` to `later`.
    fn until(&self, later: &Self, hz: u64) -> (Option<f64>, Option<f64>) {
        let secs = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / hz as f64);
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let share = secs(self.me, later.me)
            .filter(|_| wall > 0.0)
            .map(|s| s / wall);
        (secs(self.server, later.server), share)
    }
}

/// Runs the bench and prints the report.
///
/// # Errors
/// Bad arguments, an unreachable server, subscribers that cannot connect, no event published.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report, args.rate, args.publishers)?;
    }
    out.flush()?;
    if args.events > 0 && report.published == 0 {
        anyhow::bail!(
            "no event could be published: {}",
            report
                .first_publish_error
                .as_deref()
                .unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Connects, publishes, waits for the deliveries and merges the subscribers' records.
async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    let run_start = CpuMark::now(None);
    let hz = procfs::ticks_per_second();
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be a number of events per second (0: as fast as possible)"
    );
    anyhow::ensure!(
        args.timeout.is_finite() && args.timeout >= 0.0,
        "--timeout must be a number of seconds"
    );
    anyhow::ensure!(
        args.hold.is_finite() && args.hold >= 0.0,
        "--hold must be a number of seconds"
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        args.batch == 1 || (args.pub_url.is_none() && args.pub_server.is_none()),
        "--batch publishes to Herald's /api/v1/events on --server; it does not go with --pub-url or --pub-server"
    );
    if let Some(pid) = args.server_pid {
        anyhow::ensure!(
            procfs::rss_bytes(pid).is_some(),
            "--server-pid {pid}: no such process on this machine (or /proc/{pid}/status is unreadable)"
        );
    }
    let n_subs = args.subscribers;
    let topics = args.topics;
    let names: Vec<String> = (0..topics)
        .map(|i| format!("{}.t{i}", args.topic_prefix))
        .collect();

    check_fd_limit(n_subs + usize::try_from(args.publishers).unwrap_or(usize::MAX) + 32);

    let publisher = Client::new(&args.server)?;
    let targets = Targets::new(args, &publisher, &names)?;
    reachable(args, &publisher, &targets).await?;
    // `--also-via`: the second transport's own URLs (and, below, doors).
    let second = match args.also_via {
        Some(via) if via != args.via => {
            let mut other = args.clone();
            other.via = via;
            other.also_via = None;
            let t = Targets::new(&other, &publisher, &names)?;
            reachable(&other, &publisher, &t).await?;
            Some((other, t))
        }
        _ => None,
    };

    let first_sub_url = targets
        .sub_urls
        .first()
        .map_or(publisher.base.as_str(), |u| u);
    let sources = source_addresses(
        first_sub_url,
        n_subs,
        usize::try_from(args.per_source).unwrap_or(usize::MAX),
    );
    let doors = doors(args, &publisher, &targets, &sources).await?;
    let second = match second {
        Some((other, t)) => {
            let d = self::doors(&other, &publisher, &t, &sources).await?;
            Some((t, d))
        }
        None => None,
    };

    let rss_before = args.server_pid.and_then(procfs::rss_bytes);
    let shared = Arc::new(Shared::new(usize::try_from(args.connect_concurrency)?));

    // Phase 1: connect.
    let bar = progress(n_subs as u64, "connecting");
    let mut subscribers = Vec::with_capacity(n_subs);
    let seq_order = args.publishers == 1;
    for i in 0..n_subs {
        let topic = i as u64 % topics;
        let tracker = Tracker::new(topic, topics, args.events, seq_order)?;
        let (door, url) = match &second {
            // Odd subscribers use the second transport.
            Some((t, d)) if i % 2 == 1 => (
                d[(i / 2) % d.len()].clone(),
                t.sub_urls[topic as usize].clone(),
            ),
            _ => {
                let k = if second.is_some() { i / 2 } else { i };
                (
                    doors[k % doors.len()].clone(),
                    targets.sub_urls[topic as usize].clone(),
                )
            }
        };
        let name = names[topic as usize].clone();
        subscribers.push(tokio::spawn(subscriber(
            shared.clone(),
            door,
            url,
            name,
            tracker,
        )));
    }
    loop {
        let done = shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        bar.set_position(done as u64);
        if done >= n_subs {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    bar.finish_and_clear();
    let failed = shared.failed.load(Ordering::Relaxed);
    if failed > 0 {
        shared.stop.cancel();
        anyhow::bail!(
            "{failed} of {n_subs} subscribers could not subscribe; first error: {}",
            shared.first_error()
        );
    }
    if args.hold > 0.0 {
        let bar = progress(0, "holding");
        bar.set_message(format!("{n_subs} connections for {} s", args.hold));
        bar.enable_steady_tick(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
        bar.finish_and_clear();
    }
    let rss_connected = args.server_pid.and_then(procfs::rss_bytes);

    // Phase 2: publish.
    let subs_on = |k: u64| (n_subs as u64) / topics + u64::from(k < n_subs as u64 % topics);
    let batch_url = format!(
        "{}/api/v1/events",
        publisher.base.as_str().trim_end_matches('/')
    );
    let h1 = H1Plan::new(&targets.pub_urls, &batch_url, publisher.token.clone()).await;
    let plan = Arc::new(PublishPlan {
        client: publisher.clone(),
        urls: targets.pub_urls.clone(),
        batch: args.batch,
        batch_url,
        names: names.clone(),
        h1,
        raw: targets.raw_publish,
        events: args.events,
        rate: args.rate,
        next: AtomicU64::new(0),
        ok_per_topic: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        start: Instant::now(),
    });
    let phase_start = CpuMark::now(args.server_pid);
    let publish_start_ns = u64::try_from(plan.start.duration_since(shared.base).as_nanos())?;
    let mut pub_latency = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3)?;
    let mut publish_errors = 0u64;
    let mut publish_error: Option<String> = None;
    let mut last_publish = plan.start;
    if args.events > 0 {
        let planned: u64 = (0..topics)
            .map(|k| events_on(k, topics, args.events) * subs_on(k))
            .sum();
        let bar = progress(planned, "delivering");
        let mut publishers = Vec::new();
        for _ in 0..args.publishers {
            let latency = Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)?;
            publishers.push(tokio::spawn(publish_loop(plan.clone(), latency)));
        }
        let all_published = futures::future::join_all(publishers);
        tokio::pin!(all_published);
        let results = loop {
            tokio::select! {
                r = &mut all_published => break r,
                _ = tokio::time::sleep(TICK) => {
                    bar.set_position(shared.delivered.load(Ordering::Relaxed));
                    bar.set_message(format!("published {}", plan.next.load(Ordering::Relaxed).min(args.events)));
                }
            }
        };
        for r in results {
            let r = r.context("a publisher task failed")?;
            pub_latency.add(&r.latency)?;
            publish_errors += r.errors;
            if publish_error.is_none() {
                publish_error = r.first_error;
            }
            last_publish = last_publish.max(r.last_end);
        }
        bar.set_message(format!("published {}", plan.published()));

        // Phase 3: wait for the deliveries.
        let expected: u64 = (0..topics)
            .map(|k| plan.ok_per_topic[k as usize].load(Ordering::Relaxed) * subs_on(k))
            .sum();
        let deadline = last_publish + Duration::from_secs_f64(args.timeout);
        loop {
            let delivered = shared.delivered.load(Ordering::Relaxed);
            bar.set_position(delivered);
            if delivered >= expected || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        bar.finish_and_clear();
    }
    let phase_end = CpuMark::now(args.server_pid);
    shared.stop.cancel();
    let published = plan.published();
    let expected: u64 = (0..topics)
        .map(|k| plan.ok_per_topic[k as usize].load(Ordering::Relaxed) * subs_on(k))
        .sum();

    // Merge.
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 2)?;
    let mut totals = Totals::default();
    for r in futures::future::join_all(subscribers).await {
        let r = r.context("a subscriber task failed")?;
        for v in r.latency.iter_recorded() {
            latency.record_n(v.value_iterated_to(), u64::from(v.count_at_value()))?;
        }
        let expect = plan.ok_per_topic[r.topic as usize].load(Ordering::Relaxed);
        totals.lost += expect.saturating_sub(r.distinct);
        totals.received += r.received;
        totals.duplicated += r.duplicated;
        totals.reordered += r.reordered;
        totals.unexpected += r.unexpected;
        totals.max_latency_ns = totals.max_latency_ns.max(r.max_latency_ns);
    }
    let rss_end = args.server_pid.and_then(procfs::rss_bytes);
    let run_end = CpuMark::now(None);

    let publish_secs = last_publish.duration_since(plan.start).as_secs_f64();
    let last_delivery_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let delivery_secs = last_delivery_ns.saturating_sub(publish_start_ns) as f64 / 1e9;
    let ms = |us: u64| round3(us as f64 / 1000.0);
    let (server_cpu, phase_share) = phase_start.until(&phase_end, hz);
    let (_, run_share) = run_start.until(&run_end, hz);
    let per = |n: u64| {
        server_cpu
            .filter(|_| n > 0)
            .map(|s| round3(s * 1e6 / n as f64))
    };
    Ok(Report {
        via: match (&second, args.also_via) {
            (Some(_), Some(also)) => format!("{}+{}", args.via.name(), also.name()),
            _ => args.via.name().to_owned(),
        },
        sub_url: targets.sub_urls.first().map(|u| u.to_string()),
        pub_url: targets.pub_urls.first().cloned(),
        subscribers: n_subs,
        topics,
        events: args.events,
        published,
        publish_errors,
        publish_seconds: round3(publish_secs),
        publish_rate: round3(rate(published, publish_secs)),
        publish_latency_ms: PublishLatency {
            p50: ms(pub_latency.value_at_quantile(0.5)),
            p99: ms(pub_latency.value_at_quantile(0.99)),
        },
        expected_deliveries: expected,
        deliveries: totals.received,
        delivery_seconds: round3(delivery_secs),
        delivered_per_sec: round3(rate(totals.received, delivery_secs)),
        latency_ms: DeliveryLatency {
            p50: ms(latency.value_at_quantile(0.5)),
            p90: ms(latency.value_at_quantile(0.9)),
            p99: ms(latency.value_at_quantile(0.99)),
            max: round3(totals.max_latency_ns as f64 / 1e6),
        },
        lost: totals.lost,
        duplicated: totals.duplicated,
        reordered: totals.reordered,
        unexpected: totals.unexpected,
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        hold_seconds: args.hold,
        server_pid: args.server_pid,
        server_rss_before_bytes: rss_before,
        server_rss_connected_bytes: rss_connected,
        server_rss_per_conn_bytes: match (rss_before, rss_connected) {
            (Some(b), Some(c)) if n_subs > 0 => Some(c.saturating_sub(b) / n_subs as u64),
            _ => None,
        },
        server_rss_end_bytes: rss_end,
        server_cpu_seconds: server_cpu.filter(|_| args.events > 0).map(round3),
        server_cpu_us_per_delivery: per(totals.received),
        server_cpu_us_per_publish: per(published),
        clock_ticks_per_second: hz,
        run_seconds: round3(run_end.at.duration_since(run_start.at).as_secs_f64()),
        generator_cpu_share: run_share.map(round3),
        generator_cpu_share_publishing: phase_share.filter(|_| args.events > 0).map(round3),
        first_publish_error: publish_error,
    })
}

/// Fails early, in one line, when the server is not there: Herald's `/healthz`, or for a
/// foreign server (a `--pub-url`) a TCP connection to its address.
async fn reachable(args: &BenchArgs, publisher: &Client, targets: &Targets) -> anyhow::Result<()> {
    if args.pub_url.is_none() {
        publisher
            .get(&publisher.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", publisher.base))?;
        return Ok(());
    }
    let Some(url) = targets.pub_urls.first() else {
        return Ok(());
    };
    let addr = resolve(url).await?;
    tokio::time::timeout(client::CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| Ok(r?))
        .with_context(|| format!("cannot reach {url}"))?;
    Ok(())
}

/// The socket address of a URL's host and port (IPv4 first: the source addresses are).
async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("{url} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{host} has no address"))
}

#[derive(Default)]
struct Totals {
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
    max_latency_ns: u64,
}

/// The results (also the `--json` line). Server figures are `null` without `--server-pid`.
#[derive(Serialize)]
struct Report {
    via: String,
    /// Where the first topic's subscribers connected and its events were published.
    sub_url: Option<String>,
    pub_url: Option<String>,
    subscribers: usize,
    topics: u64,
    events: u64,
    published: u64,
    publish_errors: u64,
    publish_seconds: f64,
    publish_rate: f64,
    publish_latency_ms: PublishLatency,
    expected_deliveries: u64,
    deliveries: u64,
    delivery_seconds: f64,
    delivered_per_sec: f64,
    latency_ms: DeliveryLatency,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
    reconnects: u64,
    hold_seconds: f64,
    server_pid: Option<u32>,
    /// Server RSS before the first connection, once all are subscribed (after `--hold`),
    /// and at the end; the growth while connecting divided by the subscribers.
    server_rss_before_bytes: Option<u64>,
    server_rss_connected_bytes: Option<u64>,
    server_rss_per_conn_bytes: Option<u64>,
    server_rss_end_bytes: Option<u64>,
    /// Server CPU time (user + system) from the first publish until the deliveries ended.
    server_cpu_seconds: Option<f64>,
    server_cpu_us_per_delivery: Option<f64>,
    server_cpu_us_per_publish: Option<f64>,
    clock_ticks_per_second: u64,
    /// The bench process: wall time, and CPU time as a share of one core over the whole
    /// run and over the publish and delivery phase.
    run_seconds: f64,
    generator_cpu_share: Option<f64>,
    generator_cpu_share_publishing: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_publish_error: Option<String>,
}

#[derive(Serialize)]
struct PublishLatency {
    p50: f64,
    p99: f64,
}

#[derive(Serialize)]
struct DeliveryLatency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(
    out: &mut impl Write,
    r: &Report,
    target_rate: f64,
    publishers: u64,
) -> std::io::Result<()> {
    let pace = if target_rate > 0.0 {
        format!("at {target_rate} /s")
    } else {
        "flat out".into()
    };
    writeln!(
        out,
        "herald bench: {} {} subscribers on {} topic(s); {} events {pace} from {publishers} publishers",
        r.subscribers, r.via, r.topics, r.events
    )?;
    if let (Some(s), Some(p)) = (&r.sub_url, &r.pub_url) {
        writeln!(out, "  subscribe at       {s}")?;
        writeln!(out, "  publish to         {p}")?;
    }
    if r.events > 0 {
        writeln!(
            out,
            "  published          {:>12} events in {:.3} s = {:.0} /s ({} errors)",
            r.published, r.publish_seconds, r.publish_rate, r.publish_errors
        )?;
        writeln!(
            out,
            "  publish latency    p50 {:.3} ms   p99 {:.3} ms",
            r.publish_latency_ms.p50, r.publish_latency_ms.p99
        )?;
        writeln!(
            out,
            "  delivered          {:>12} events in {:.3} s = {:.0} /s (expected {})",
            r.deliveries, r.delivery_seconds, r.delivered_per_sec, r.expected_deliveries
        )?;
        writeln!(
            out,
            "  delivery latency   p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   max {:.3} ms",
            r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
        )?;
    }
    writeln!(
        out,
        "  lost {}   duplicated {}   reordered {}   unexpected {}   reconnects {}",
        r.lost, r.duplicated, r.reordered, r.unexpected, r.reconnects
    )?;
    if let (Some(before), Some(with)) = (r.server_rss_before_bytes, r.server_rss_connected_bytes) {
        let per = r
            .server_rss_per_conn_bytes
            .map_or_else(|| "-".into(), |b| format!("{b} B"));
        write!(
            out,
            "  server memory      RSS {:.1} MiB before, {:.1} MiB with {} connections = {per} per connection",
            mib(before),
            mib(with),
            r.subscribers
        )?;
        if let Some(end) = r.server_rss_end_bytes {
            write!(out, "; {:.1} MiB at the end", mib(end))?;
        }
        writeln!(out)?;
    }
    if let Some(cpu) = r.server_cpu_seconds {
        write!(
            out,
            "  server CPU         {cpu:.2} s while publishing and delivering"
        )?;
        if let Some(d) = r.server_cpu_us_per_delivery {
            write!(out, " = {d:.2} µs per delivery")?;
        }
        if let Some(p) = r.server_cpu_us_per_publish {
            write!(out, ", {p:.1} µs per publish")?;
        }
        writeln!(out)?;
    }
    let pct = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{:.0} %", s * 100.0));
    writeln!(
        out,
        "  load generator     CPU {} of a core while publishing, {} over the whole run of {:.1} s",
        pct(r.generator_cpu_share_publishing),
        pct(r.generator_cpu_share),
        r.run_seconds
    )?;
    if let Some(e) = &r.first_publish_error {
        writeln!(out, "  first publish error: {e}")?;
    }
    Ok(())
}

fn progress(len: u64, what: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_prefix(what)
}

/// Raises the open-file limit and warns when it is still below what the run needs.
fn check_fd_limit(needed: usize) {
    let Some(limits) = crate::limits::raise_nofile() else {
        return;
    };
    if let Some(soft) = limits.soft
        && soft < needed as u64
    {
        eprintln!(
            "herald: warning: the open-file limit is {soft} but this run needs about {needed} \
             (one per connection); raise it with `ulimit -n`"
        );
    }
}

/// Source addresses for the subscribers: none (the OS picks) unless the subscribers connect
/// to loopback IPv4 and there are more of them than `per_source` (by default 25,000: one
/// address has about 28,000 ephemeral ports); then 127.0.0.2, 127.0.0.3, ... one per
/// `per_source` subscribers (at most 253 addresses).
fn source_addresses(url: &str, subscribers: usize, per_source: usize) -> Vec<Option<IpAddr>> {
    let loopback = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()))
        })
        .unwrap_or(false);
    if !loopback || subscribers <= per_source {
        return vec![None];
    }
    let n = subscribers.div_ceil(per_source.max(1)).min(253);
    (0..n)
        .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))))
        .collect()
}

/// One way in per source address.
async fn doors(
    args: &BenchArgs,
    publisher: &Client,
    targets: &Targets,
    sources: &[Option<IpAddr>],
) -> anyhow::Result<Vec<Door>> {
    let http = |src: &Option<IpAddr>, keep_alive: bool| {
        let mut b = reqwest::Client::builder()
            .connect_timeout(client::CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http1_only();
        if !keep_alive {
            // Streaming connections are never reused: keep no idle ones (and fds).
            b = b.pool_max_idle_per_host(0);
        }
        if let Some(ip) = src {
            b = b.local_address(*ip);
        }
        let http = b.build().context("building the HTTP client")?;
        Client::with_http(&args.server, http)
    };
    match args.via {
        BenchVia::Sse => sources
            .iter()
            .map(|src| {
                Ok(Door::Sse {
                    client: http(src, false)?,
                })
            })
            .collect(),
        // A long poller reuses its connection from one poll to the next.
        BenchVia::Longpoll => sources
            .iter()
            .map(|src| {
                Ok(Door::Poll {
                    client: http(src, true)?,
                })
            })
            .collect(),
        BenchVia::Ws | BenchVia::Stomp | BenchVia::SockJs => {
            let mode = match args.via {
                BenchVia::Stomp => WsMode::Stomp,
                BenchVia::SockJs => WsMode::SockJs,
                _ if targets.ws_raw => WsMode::Raw,
                _ => WsMode::Json,
            };
            let Some(first) = targets.sub_urls.first() else {
                return Ok(vec![]);
            };
            anyhow::ensure!(
                first.starts_with("ws://"),
                "bench over WebSocket needs a plain http:// (ws://) URL, not {first}"
            );
            // Every topic's URL must reach the same address: it is resolved once.
            let host_port = |u: &str| {
                reqwest::Url::parse(u)
                    .ok()
                    .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()))
            };
            anyhow::ensure!(
                targets
                    .sub_urls
                    .iter()
                    .all(|u| host_port(u) == host_port(first)),
                "--sub-url: {{topic}} may appear in the path or query, not in the host or port"
            );
            let addr = resolve(first).await?;
            Ok(sources
                .iter()
                .map(|src| Door::Ws {
                    addr,
                    local: *src,
                    token: publisher.token.clone(),
                    mode,
                })
                .collect())
        }
    }
}

/// One subscriber: connect (up to [`CONNECT_ATTEMPTS`] times), then read until stopped,
/// reconnecting with the last id as cursor if the connection drops.
async fn subscriber(
    shared: Arc<Shared>,
    door: Door,
    url: Arc<str>,
    topic: String,
    mut tr: Tracker,
) -> SubReport {
    let mut subscribed = false;
    let mut attempts = 0;
    // The long-poll cursor, kept across failed requests.
    let mut poll_next: Option<String> = None;
    loop {
        let outcome = match &door {
            Door::Sse { client } => {
                sse_session(&shared, client, &url, &mut tr, &mut subscribed).await
            }
            Door::Poll { client } => {
                let poll = Poller {
                    client,
                    url: &url,
                    next: &mut poll_next,
                };
                poll_session(&shared, poll, &mut tr, &mut subscribed).await
            }
            Door::Ws {
                addr,
                local,
                token,
                mode,
            } => {
                let target = WsTarget {
                    url: &url,
                    addr: *addr,
                    local: *local,
                    token: token.as_deref(),
                };
                match mode {
                    WsMode::Json => {
                        ws_session(&shared, &target, &topic, &mut tr, &mut subscribed).await
                    }
                    WsMode::Raw => raw_ws_session(&shared, &target, &mut tr, &mut subscribed).await,
                    WsMode::Stomp | WsMode::SockJs => {
                        let sockjs = *mode == WsMode::SockJs;
                        stomp_session(&shared, &target, &topic, &mut tr, &mut subscribed, sockjs)
                            .await
                    }
                }
            }
        };
        match outcome {
            Ok(()) => return tr.finish(&shared),
            Err(e) if !subscribed => {
                attempts += 1;
                if attempts >= CONNECT_ATTEMPTS {
                    shared.fail(format!("{e:#}"));
                    return tr.finish(&shared);
                }
            }
            Err(_) => {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pause = Duration::from_millis(200 * u64::from(attempts.max(1)));
        tokio::select! {
            _ = shared.stop.cancelled() => return tr.finish(&shared),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Waits for a connect slot (only before the first subscription).
async fn connect_slot(
    shared: &Shared,
    subscribed: bool,
) -> Option<tokio::sync::SemaphorePermit<'_>> {
    if subscribed {
        None
    } else {
        shared.connect_slots.acquire().await.ok()
    }
}

/// One SSE connection; `Ok` when stopped, `Err` when it failed or ended.
async fn sse_session(
    shared: &Shared,
    client: &Client,
    url: &str,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let slot = connect_slot(shared, *subscribed).await;
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(id) = tr.cursor() {
        req = req.header("last-event-id", id);
    }
    let resp = tokio::select! {
        _ = shared.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, req.send()) => r,
    };
    let resp = resp.map_err(|_| anyhow::anyhow!("timed out subscribing"))??;
    // The server registers the subscription before it sends the headers.
    let resp = client::check(resp).await?;
    drop(slot);
    shared.subscribed(subscribed);
    let mut body = resp.bytes_stream();
    let mut reader = wire::SseReader::default();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            c = body.next() => c,
        };
        let chunk = match chunk {
            Some(c) => c?,
            None => anyhow::bail!("the server ended the stream"),
        };
        let now = unix_nanos();
        reader.feed(&chunk, |id, data| tr.record(id, data, now));
        tr.flush(shared);
    }
}

/// A long-poll subscriber's URL and cursor.
struct Poller<'a> {
    client: &'a Client,
    url: &'a str,
    /// The `next` of the last page; `None` until the head was learnt.
    next: &'a mut Option<String>,
}

/// A long-poll page, as far as the bench reads it.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    events: Vec<PageEvent<'a>>,
    #[serde(borrow)]
    next: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PageEvent<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Long polling until stopped; `Err` when a request failed.
async fn poll_session(
    shared: &Shared,
    poll: Poller<'_>,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let sep = if poll.url.contains('?') { '&' } else { '?' };
    if poll.next.is_none() {
        // Learn the head: the newest event's id, or the hub's head when there is none.
        let slot = connect_slot(shared, *subscribed).await;
        let url = format!("{}{sep}limit=1", poll.url);
        let req = poll.client.get(&url).timeout(SUBSCRIBE_TIMEOUT).send();
        let resp = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            r = req => r?,
        };
        let body = client::check(resp).await?.bytes().await?;
        let page: Page<'_> = serde_json::from_slice(&body)
            .with_context(|| format!("{url}: not a long-poll page"))?;
        *poll.next = Some(page.next.into_owned());
        drop(slot);
        shared.subscribed(subscribed);
    }
    let prefix = format!(
        "{}{sep}wait={POLL_WAIT_SECS}&limit={POLL_LIMIT}&after=",
        poll.url
    );
    let mut url = String::with_capacity(prefix.len() + 24);
    loop {
        url.clear();
        url.push_str(&prefix);
        url.push_str(poll.next.as_deref().unwrap_or("now"));
        let req = async {
            let resp = poll.client.get(&url).timeout(POLL_TIMEOUT).send().await?;
            anyhow::Ok(client::check(resp).await?.bytes().await?)
        };
        let body = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            b = req => b?,
        };
        let now = unix_nanos();
        let page: Page<'_> = serde_json::from_slice(&body).context("not a long-poll page")?;
        for ev in &page.events {
            if let Some(data) = ev.data {
                tr.record(ev.id.as_deref(), data.get().as_bytes(), now);
            }
        }
        tr.flush(shared);
        if poll.next.as_deref() != Some(&*page.next) {
            *poll.next = Some(page.next.into_owned());
        }
    }
}

/// A server message of the JSON WebSocket protocol, as far as the bench reads it.
#[derive(Deserialize)]
struct WsMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// Where a WebSocket subscriber connects, and from where.
struct WsTarget<'a> {
    url: &'a str,
    addr: SocketAddr,
    local: Option<IpAddr>,
    token: Option<&'a str>,
}

async fn ws_connect(
    target: &WsTarget<'_>,
    subprotocol: Option<&str>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let WsTarget {
        url,
        addr,
        local,
        token,
    } = *target;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut req = url.into_client_request()?;
    if let Some(t) = token {
        req.headers_mut().insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse()?,
        );
    }
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert(reqwest::header::SEC_WEBSOCKET_PROTOCOL, p.parse()?);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// What a WebSocket read gave: a data message's payload, or nothing worth looking at.
fn ws_payload(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> anyhow::Result<Option<Message>> {
    match msg {
        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => Ok(Some(m)),
        Some(Ok(Message::Close(_))) | None => anyhow::bail!("the server closed the WebSocket"),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(e.into()),
    }
}

/// The bytes of a text or binary message.
fn message_bytes(m: &Message) -> &[u8] {
    match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => &[],
    }
}

/// Messages read in one go: after the first, the ones already buffered are taken without
/// waiting, so a burst costs one clock reading and one shared update.
const WS_BATCH: usize = 64;

/// The next message if it is already there (and the batch is not full); `None` to stop and
/// wait.
fn more(
    ws: &mut WebSocketStream<TcpStream>,
    batch: usize,
) -> Option<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>> {
    if batch >= WS_BATCH {
        return None;
    }
    ws.next().now_or_never()
}

/// One WebSocket connection of the JSON protocol; `Ok` when stopped, `Err` when it failed or
/// ended.
async fn ws_session(
    shared: &Shared,
    target: &WsTarget<'_>,
    topic: &str,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let mut slot = connect_slot(shared, *subscribed).await;
    let connect = async {
        let mut ws = ws_connect(target, None).await?;
        let mut sub = serde_json::json!({"type": "subscribe", "topic": topic});
        if let Some(id) = tr.cursor() {
            sub["after"] = serde_json::Value::String(id);
        }
        ws.send(Message::text(sub.to_string())).await?;
        anyhow::Ok(ws)
    };
    let ws = tokio::select! {
        _ = shared.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect) => r,
    };
    let mut ws = ws.map_err(|_| anyhow::anyhow!("timed out subscribing"))??;
    let mut waiting = true;
    let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
    loop {
        let mut msg = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline), if waiting => {
                anyhow::bail!("timed out waiting for `subscribed`")
            }
            m = ws.next() => m,
        };
        let now = unix_nanos();
        let mut batch = 0;
        loop {
            if let Some(msg) = ws_payload(msg)? {
                let bytes = message_bytes(&msg);
                if let Some((id, data)) = wire::ws_json_event(bytes) {
                    tr.record(Some(id), data, now);
                } else if let Ok(m) = serde_json::from_slice::<WsMessage<'_>>(bytes) {
                    match &*m.kind {
                        "event" => {
                            if let Some(data) = m.data {
                                tr.record(m.id.as_deref(), data.get().as_bytes(), now);
                            }
                        }
                        "subscribed" if waiting => {
                            waiting = false;
                            drop(slot.take());
                            shared.subscribed(subscribed);
                        }
                        "error" if waiting => {
                            anyhow::bail!(
                                "subscription refused: {}",
                                m.message.as_deref().unwrap_or("(no message)")
                            )
                        }
                        _ => {}
                    }
                }
            }
            batch += 1;
            match more(&mut ws, batch) {
                Some(m) => msg = m,
                None => break,
            }
        }
        tr.flush(shared);
    }
}

/// One WebSocket connection where every message is an event's data (Nchan's websocket
/// subscriber): subscribed once the handshake is done.
async fn raw_ws_session(
    shared: &Shared,
    target: &WsTarget<'_>,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let slot = connect_slot(shared, *subscribed).await;
    let ws = tokio::select! {
        _ = shared.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, ws_connect(target, None)) => r,
    };
    let mut ws = ws.map_err(|_| anyhow::anyhow!("timed out subscribing"))??;
    drop(slot);
    shared.subscribed(subscribed);
    loop {
        let mut msg = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            m = ws.next() => m,
        };
        let now = unix_nanos();
        let mut batch = 0;
        loop {
            if let Some(msg) = ws_payload(msg)? {
                tr.record(None, message_bytes(&msg), now);
            }
            batch += 1;
            match more(&mut ws, batch) {
                Some(m) => msg = m,
                None => break,
            }
        }
        tr.flush(shared);
    }
}

/// Where a STOMP session is.
#[derive(PartialEq, Eq)]
enum StompPhase {
    /// CONNECT sent, waiting for CONNECTED.
    Connecting,
    /// SUBSCRIBE sent, waiting for its RECEIPT.
    Subscribing,
    Live,
}

/// The STOMP side of a subscriber: the frames carried by WebSocket or SockJS messages.
struct StompReader {
    phase: StompPhase,
    /// Bytes of a frame that is not complete yet (frames may span messages).
    pending: Vec<u8>,
}

impl StompReader {
    fn new() -> Self {
        Self {
            phase: StompPhase::Connecting,
            pending: Vec::new(),
        }
    }

    /// Handles the frames `bytes` completes, recording MESSAGEs received at `now`; `Ok(true)`
    /// when CONNECTED came and SUBSCRIBE is due.
    fn feed(&mut self, bytes: &[u8], now: u64, tr: &mut Tracker) -> anyhow::Result<bool> {
        let from_pending = !self.pending.is_empty();
        if from_pending {
            self.pending.extend_from_slice(bytes);
        }
        let buf: &[u8] = if from_pending { &self.pending } else { bytes };
        let mut used = 0;
        let mut send_subscribe = false;
        loop {
            let (frame, n) = wire::parse_stomp(&buf[used..]).map_err(anyhow::Error::msg)?;
            used += n;
            let Some(f) = frame else { break };
            match f.command {
                b"MESSAGE" => {
                    let id = f.message_id.and_then(|i| std::str::from_utf8(i).ok());
                    tr.record(id, f.body, now);
                }
                b"CONNECTED" if self.phase == StompPhase::Connecting => {
                    self.phase = StompPhase::Subscribing;
                    send_subscribe = true;
                }
                b"RECEIPT" if f.receipt_id == Some(b"sub") => self.phase = StompPhase::Live,
                b"ERROR" => anyhow::bail!(
                    "STOMP ERROR: {}",
                    String::from_utf8_lossy(f.message.unwrap_or(f.body))
                ),
                _ => {}
            }
        }
        if from_pending {
            self.pending.drain(..used);
        } else if used < bytes.len() {
            self.pending.extend_from_slice(&bytes[used..]);
        }
        anyhow::ensure!(
            self.pending.len() <= STOMP_MAX_PENDING,
            "a STOMP frame larger than {STOMP_MAX_PENDING} bytes"
        );
        Ok(send_subscribe)
    }
}

/// A fresh SockJS session URL under the service URL `base`, as sockjs-client makes them:
/// `<base>/<server: 3 digits>/<session: 8 random characters>/websocket`.
fn sockjs_url(base: &str) -> anyhow::Result<String> {
    use std::hash::BuildHasher as _;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Randomly keyed SipHash of a counter: random enough for ids, no extra dependency.
    let r = std::collections::hash_map::RandomState::new()
        .hash_one(NEXT.fetch_add(1, Ordering::Relaxed));
    let server = format!("{:03}", r % 1000);
    let session: String = (0..8)
        .map(|i| char::from(SOCKJS_ID_CHARS[(r >> (16 + 5 * i)) as usize % 32]))
        .collect();
    let mut url = reqwest::Url::parse(base).with_context(|| format!("{base:?} is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base} cannot have a path"))?
        .pop_if_empty()
        .extend([server.as_str(), &session, "websocket"]);
    Ok(url.into())
}

/// Sends a STOMP frame: as the WebSocket message, or (SockJS) as the one string of a JSON
/// array, as sockjs-client does.
async fn stomp_send(
    ws: &mut WebSocketStream<TcpStream>,
    frame: String,
    sockjs: bool,
) -> anyhow::Result<()> {
    let text = if sockjs {
        serde_json::to_string(&[frame])?
    } else {
        frame
    };
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Waits for SockJS's open frame `o` on a new session.
async fn sockjs_open(ws: &mut WebSocketStream<TcpStream>) -> anyhow::Result<()> {
    loop {
        let Some(msg) = ws_payload(ws.next().await)? else {
            continue;
        };
        return match wire::sockjs_frame(message_bytes(&msg), &mut Vec::new())
            .map_err(anyhow::Error::msg)?
        {
            wire::SockJsFrame::Open => Ok(()),
            wire::SockJsFrame::Close(code, reason) => {
                anyhow::bail!("SockJS session closed: {code} {reason}")
            }
            other => anyhow::bail!("SockJS: {other:?} before the open frame"),
        };
    }
}

/// One STOMP 1.2 session over WebSocket, or with `sockjs` over a new SockJS session's
/// `websocket` transport; `Ok` when stopped, `Err` when it failed or ended.
async fn stomp_session(
    shared: &Shared,
    target: &WsTarget<'_>,
    topic: &str,
    tr: &mut Tracker,
    subscribed: &mut bool,
    sockjs: bool,
) -> anyhow::Result<()> {
    let mut slot = connect_slot(shared, *subscribed).await;
    let connect = async {
        let mut ws = if sockjs {
            // sockjs-client: no subprotocol; stompjs sends CONNECT once the session is open.
            let url = sockjs_url(target.url)?;
            let mut ws = ws_connect(
                &WsTarget {
                    url: &url,
                    ..*target
                },
                None,
            )
            .await?;
            sockjs_open(&mut ws).await?;
            ws
        } else {
            ws_connect(target, Some(STOMP_SUBPROTOCOL)).await?
        };
        let host = reqwest::Url::parse(target.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        let mut frame = format!("CONNECT\naccept-version:1.2\nhost:{host}\nheart-beat:0,0\n");
        if let Some(t) = target.token {
            frame.push_str(&format!("passcode:{}\n", stomp_escape(t)));
        }
        frame.push_str("\n\0");
        stomp_send(&mut ws, frame, sockjs).await?;
        anyhow::Ok(ws)
    };
    let ws = tokio::select! {
        _ = shared.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect) => r,
    };
    let mut ws = ws.map_err(|_| anyhow::anyhow!("timed out connecting"))??;
    let mut reader = StompReader::new();
    // SockJS: the STOMP bytes of the message frame at hand, unescaped (reused).
    let mut unwrapped: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
    loop {
        let mut msg = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline), if reader.phase != StompPhase::Live => {
                anyhow::bail!(if reader.phase == StompPhase::Connecting {
                    "timed out waiting for CONNECTED"
                } else {
                    "timed out waiting for the RECEIPT of SUBSCRIBE"
                })
            }
            m = ws.next() => m,
        };
        let now = unix_nanos();
        let mut batch = 0;
        loop {
            if let Some(msg) = ws_payload(msg)? {
                let bytes = message_bytes(&msg);
                let stomp: &[u8] = if sockjs {
                    unwrapped.clear();
                    match wire::sockjs_frame(bytes, &mut unwrapped).map_err(anyhow::Error::msg)? {
                        wire::SockJsFrame::Messages => &unwrapped,
                        wire::SockJsFrame::Open | wire::SockJsFrame::Heartbeat => &[],
                        wire::SockJsFrame::Close(code, reason) => {
                            anyhow::bail!("SockJS session closed: {code} {reason}")
                        }
                    }
                } else {
                    bytes
                };
                if reader.feed(stomp, now, tr)? {
                    stomp_send(&mut ws, stomp_subscribe(topic, tr.cursor()), sockjs).await?;
                }
                if reader.phase == StompPhase::Live && !*subscribed {
                    drop(slot.take());
                    shared.subscribed(subscribed);
                }
            }
            batch += 1;
            match more(&mut ws, batch) {
                Some(m) => msg = m,
                None => break,
            }
        }
        tr.flush(shared);
    }
}

/// The SUBSCRIBE frame for a topic, resuming after `after` if given (a Herald extension).
fn stomp_subscribe(topic: &str, after: Option<String>) -> String {
    let mut frame = format!(
        "SUBSCRIBE\nid:0\ndestination:/topic/{}\nack:auto\nreceipt:sub\n",
        stomp_escape(topic)
    );
    if let Some(after) = after {
        frame.push_str(&format!("after:{}\n", stomp_escape(&after)));
    }
    frame.push_str("\n\0");
    frame
}

/// A STOMP 1.2 header value escaped.
fn stomp_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['\\', '\n', '\r', ':']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// What the publishers share.
struct PublishPlan {
    client: Client,
    urls: Arc<Vec<String>>,
    /// Events per request (> 1: `POST /api/v1/events` with `names`).
    batch: u64,
    batch_url: String,
    names: Vec<String>,
    /// Plain `http://` targets: published over the bench's own HTTP/1.1 connections
    /// (`h1pub`) instead of `client`.
    h1: Option<H1Plan>,
    /// Post the bare `{"seq","t"}` object (a foreign server) instead of Herald's envelope.
    raw: bool,
    events: u64,
    rate: f64,
    /// The next sequence number to publish.
    next: AtomicU64,
    /// Successful publishes per topic.
    ok_per_topic: Vec<AtomicU64>,
    start: Instant,
}

impl PublishPlan {
    fn published(&self) -> u64 {
        self.ok_per_topic
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// Request targets for `h1pub`, one per topic URL, and the batch URL's.
struct H1Plan {
    target: H1Target,
    paths: Vec<String>,
    batch_path: String,
}

impl H1Plan {
    /// When every URL is plain `http://` on one host and port.
    async fn new(urls: &[String], batch_url: &str, token: Option<String>) -> Option<Self> {
        let (host, batch_path) = H1Target::split(batch_url)?;
        let mut paths = Vec::with_capacity(urls.len());
        for url in urls {
            let (h, path) = H1Target::split(url)?;
            if h != host {
                return None;
            }
            paths.push(path);
        }
        let addr = resolve(urls.first().map_or(batch_url, String::as_str))
            .await
            .ok()?;
        Some(Self {
            target: H1Target { addr, host, token },
            paths,
            batch_path,
        })
    }

    /// A publisher's own connection.
    fn connection(&self) -> H1Publisher {
        H1Publisher::new(self.target.clone())
    }
}

/// What one publisher hands back.
struct PublishReport {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    last_end: Instant,
}

/// Publishes until every sequence number is taken, pacing to `rate` if set.
async fn publish_loop(plan: Arc<PublishPlan>, latency: Histogram<u64>) -> PublishReport {
    let mut report = PublishReport {
        latency,
        errors: 0,
        first_error: None,
        last_end: plan.start,
    };
    let topics = plan.urls.len() as u64;
    let mut h1 = plan.h1.as_ref().map(H1Plan::connection);
    if plan.batch > 1 {
        return publish_batches(&plan, h1, report).await;
    }
    loop {
        let seq = plan.next.fetch_add(1, Ordering::Relaxed);
        if seq >= plan.events {
            return report;
        }
        if plan.rate > 0.0 {
            let due = plan.start + Duration::from_secs_f64(seq as f64 / plan.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let topic = (seq % topics) as usize;
        let t = unix_nanos();
        let body = if plan.raw {
            format!(r#"{{"seq":{seq},"t":{t}}}"#)
        } else {
            format!(r#"{{"event":"bench","data":{{"seq":{seq},"t":{t}}}}}"#)
        };
        let sent = Instant::now();
        let result = send(&plan, &mut h1, Some(topic), body).await;
        let end = Instant::now();
        report.last_end = report.last_end.max(end);
        match result {
            Ok(()) => {
                plan.ok_per_topic[topic].fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(end.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                report.latency.saturating_record(us.max(1));
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// One publish request to a topic's URL (`None`: the batch URL), over the publisher's own
/// HTTP/1.1 connection when it has one.
async fn send(
    plan: &PublishPlan,
    h1: &mut Option<H1Publisher>,
    topic: Option<usize>,
    body: String,
) -> anyhow::Result<()> {
    match (h1, &plan.h1) {
        (Some(conn), Some(h)) => {
            let path = topic.map_or(&h.batch_path, |t| &h.paths[t]);
            conn.post(path, body.as_bytes(), PUBLISH_TIMEOUT).await
        }
        _ => {
            let url = topic.map_or(&plan.batch_url, |t| &plan.urls[t]);
            post_json(plan, url, body).await
        }
    }
}

/// One publish request: any 2xx is success; the receipt is read so the connection can be
/// reused.
async fn post_json(plan: &PublishPlan, url: &str, body: String) -> anyhow::Result<()> {
    let resp = plan
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(PUBLISH_TIMEOUT)
        .body(body)
        .send()
        .await?;
    let resp = client::check(resp).await?;
    resp.bytes().await?;
    Ok(())
}

/// `--batch N`: publishes N events per `POST /api/v1/events` until every sequence number is
/// taken (latency is per request).
async fn publish_batches(
    plan: &PublishPlan,
    mut h1: Option<H1Publisher>,
    mut report: PublishReport,
) -> PublishReport {
    let topics = plan.names.len() as u64;
    loop {
        let first = plan.next.fetch_add(plan.batch, Ordering::Relaxed);
        if first >= plan.events {
            return report;
        }
        let last = (first + plan.batch).min(plan.events);
        if plan.rate > 0.0 {
            let due = plan.start + Duration::from_secs_f64(first as f64 / plan.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let t = unix_nanos();
        let mut body = String::with_capacity(((last - first) * 80) as usize);
        body.push('[');
        for seq in first..last {
            if seq > first {
                body.push(',');
            }
            let topic = &plan.names[(seq % topics) as usize];
            body.push_str(&format!(
                r#"{{"topic":"{topic}","event":"bench","data":{{"seq":{seq},"t":{t}}}}}"#
            ));
        }
        body.push(']');
        let sent = Instant::now();
        let result = send(plan, &mut h1, None, body).await;
        let end = Instant::now();
        report.last_end = report.last_end.max(end);
        match result {
            Ok(()) => {
                for seq in first..last {
                    plan.ok_per_topic[(seq % topics) as usize].fetch_add(1, Ordering::Relaxed);
                }
                let us = u64::try_from(end.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                report.latency.saturating_record(us.max(1));
            }
            Err(e) => {
                report.errors += (last - first).max(1);
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u64, t: u64) -> Vec<u8> {
        format!(r#"{{"seq":{seq},"t":{t}}}"#).into_bytes()
    }

    #[test]
    fn spreads_events_over_topics() {
        assert_eq!(events_on(0, 3, 10), 4);
        assert_eq!(events_on(1, 3, 10), 3);
        assert_eq!(events_on(2, 3, 10), 3);
        assert_eq!(events_on(0, 1, 10), 10);
    }

    #[test]
    fn tracker_tells_duplicates_reorders_and_strays_apart() {
        let sh = Shared::new(1);
        // Topic 1 of 2, 10 events: expects seq 1, 3, 5, 7, 9.
        let mut tr = Tracker::new(1, 2, 10, false).unwrap();
        let now = 5_000_000;
        tr.record(Some("10"), &data(1, now - 2_000_000), now);
        tr.record(Some("12"), &data(3, now - 1_000_000), now);
        tr.record(Some("12"), &data(3, now - 1_000_000), now); // duplicate
        tr.record(Some("11"), &data(5, now), now); // older id than the last: reordered
        tr.record(Some("13"), &data(2, now), now); // another topic's event
        tr.record(Some("14"), &data(99, now), now); // beyond the run
        tr.record(None, b"not json", now); // ignored
        tr.record(Some("15"), br#"{"requested":"1","oldest":"2"}"#, now); // a notice: ignored
        assert_eq!(tr.cursor().as_deref(), Some("12"));
        tr.flush(&sh);
        assert_eq!(sh.delivered.load(Ordering::Relaxed), 3);
        let r = tr.finish(&sh);
        assert_eq!(r.received, 6);
        assert_eq!(r.distinct, 3);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.reordered, 1);
        assert_eq!(r.unexpected, 2);
        assert_eq!(r.max_latency_ns, 2_000_000);
        assert_eq!(r.latency.len(), 3);
    }

    #[test]
    fn tracker_uses_seq_without_numeric_ids() {
        let sh = Shared::new(1);
        let now = 1_000;
        // One publisher: the seq order is the publish order.
        let mut tr = Tracker::new(0, 1, 10, true).unwrap();
        tr.record(Some("1700000000:0"), &data(0, now), now);
        tr.record(None, &data(2, now), now);
        tr.record(Some("1700000000:2"), &data(1, now), now); // reordered
        tr.record(Some("1700000000:2"), &data(1, now), now); // duplicate
        assert_eq!(tr.cursor().as_deref(), Some("1700000000:2"));
        let r = tr.finish(&sh);
        assert_eq!((r.distinct, r.duplicated, r.reordered), (3, 1, 1));
        // Several publishers: no order to check.
        let mut tr = Tracker::new(0, 1, 10, false).unwrap();
        tr.record(None, &data(2, now), now);
        tr.record(None, &data(1, now), now);
        assert_eq!(tr.cursor(), None);
        assert_eq!(tr.finish(&sh).reordered, 0);
    }

    #[test]
    fn url_templates() {
        assert_eq!(
            expand("http://127.0.0.1:8081/pub?chan={topic}", "x", "bench.t0"),
            "http://127.0.0.1:8081/pub?chan=bench.t0"
        );
        assert_eq!(
            expand("{server}/sub/{topic}", "http://h:1/", "a b"),
            "http://h:1/sub/a%20b"
        );
        assert_eq!(to_ws_scheme("http://h/ws/x"), "ws://h/ws/x");
        assert_eq!(to_ws_scheme("https://h/ws"), "wss://h/ws");
        assert_eq!(to_ws_scheme("ws://h/ws"), "ws://h/ws");
        assert_eq!(stomp_escape("a.b"), "a.b");
        assert_eq!(stomp_escape("a:b\\c\n"), "a\\cb\\\\c\\n");
    }

    #[test]
    fn sockjs_session_urls() {
        let a = sockjs_url("ws://127.0.0.1:8080/ws").unwrap();
        let b = sockjs_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_ne!(a, b, "a fresh session per connection");
        for url in [&a, &b] {
            let parts: Vec<&str> = url
                .strip_prefix("ws://127.0.0.1:8080/ws/")
                .unwrap()
                .split('/')
                .collect();
            assert_eq!(parts.len(), 3, "{url}");
            assert!(parts[0].len() == 3 && parts[0].bytes().all(|c| c.is_ascii_digit()));
            assert!(parts[1].len() == 8 && parts[1].bytes().all(|c| SOCKJS_ID_CHARS.contains(&c)));
            assert_eq!(parts[2], "websocket");
        }
        // A trailing slash and a query (a --sub-url) stay where they belong.
        let c = sockjs_url("ws://h/stomp/?k=v").unwrap();
        assert!(
            c.starts_with("ws://h/stomp/") && c.ends_with("/websocket?k=v"),
            "{c}"
        );
        assert_eq!(c.matches('/').count(), 6, "{c}");
    }

    #[test]
    fn source_addresses_only_for_big_loopback_runs() {
        assert_eq!(
            source_addresses("http://127.0.0.1:8080", 1000, 25_000),
            vec![None]
        );
        assert_eq!(
            source_addresses("http://10.0.0.5:8080", 100_000, 25_000),
            vec![None]
        );
        let s = source_addresses("http://localhost:8080", 60_000, 25_000);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(s[2], Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))));
        // WebSocket URLs too.
        assert_eq!(
            source_addresses("ws://127.0.0.1:8080/ws", 30_000, 25_000).len(),
            2
        );
        assert_eq!(source_addresses("ws://127.0.0.1:8080/ws", 20, 10).len(), 2);
    }
}
