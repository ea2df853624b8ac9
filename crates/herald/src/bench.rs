//! `herald bench`: fan-out measured from the outside.
//!
//! Phases: connect N subscribers (one tokio task and one connection each, at most
//! `--connect-concurrency` connecting at once) and wait until every one is subscribed; publish
//! the events with P concurrent HTTP publishers, round-robin over the topics, each carrying
//! `{"seq": n, "t": <send time, Unix ns>}`; wait until every subscriber has every event of its
//! topic (or the timeout passes); stop the subscribers and merge what they recorded.
//!
//! Each subscriber keeps its own latency histogram (no shared lock on the hot path) and a
//! bitmap of the sequence numbers it has seen, which tells lost from duplicated events; the
//! server ids tell whether events arrived out of order. The only shared writes are two atomics
//! per received chunk, which drive the progress bar and the stop condition.

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
use futures::{SinkExt as _, StreamExt as _};
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
    cli::{BenchArgs, BenchVia},
    client::{self, Client, unix_nanos},
};

/// Subscribers per source address before another loopback address is used (the ephemeral
/// port range of one address is about 28,000 ports).
const PER_SOURCE: usize = 25_000;
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
/// would dominate the memory of a large run.
const WS_READ_BUFFER: usize = 16 * 1024;

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
    /// Highest server id received, and its text (the resume cursor).
    last_id: Option<u64>,
    last_id_text: Option<String>,
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
    fn new(topic: u64, topics: u64, events: u64) -> anyhow::Result<Self> {
        let per_topic = events_on(topic, topics, events);
        Ok(Self {
            topic,
            topics,
            events,
            seen: vec![0; usize::try_from(per_topic.div_ceil(64))?],
            last_id: None,
            last_id_text: None,
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
    fn record(&mut self, id: Option<&str>, data: &str, now_ns: u64) {
        let Ok(Payload {
            seq: Some(seq),
            t: Some(t),
        }) = serde_json::from_str::<Payload>(data)
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
        let id = id.and_then(|s| s.parse::<u64>().ok().map(|n| (n, s)));
        if let Some((n, text)) = id {
            match self.last_id {
                Some(last) if n < last => self.reordered += 1,
                _ => {
                    self.last_id = Some(n);
                    self.last_id_text = Some(text.to_owned());
                }
            }
        }
        let latency_ns = now_ns.saturating_sub(t);
        self.max_latency_ns = self.max_latency_ns.max(latency_ns);
        self.latency.saturating_record((latency_ns / 1000).max(1));
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

/// How a subscriber reaches the server.
#[derive(Clone)]
enum Door {
    Sse {
        client: Client,
    },
    Ws {
        url: String,
        addr: SocketAddr,
        local: Option<IpAddr>,
        token: Option<String>,
    },
}

/// Runs the bench and prints the report.
///
/// # Errors
/// Bad arguments, an unreachable server, subscribers that cannot connect.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be a number of events per second (0: as fast as possible)"
    );
    anyhow::ensure!(
        args.timeout.is_finite() && args.timeout >= 0.0,
        "--timeout must be a number of seconds"
    );
    let n_subs = args.subscribers;
    let topics = args.topics;
    let names: Vec<String> = (0..topics)
        .map(|i| format!("{}.t{i}", args.topic_prefix))
        .collect();

    check_fd_limit(n_subs + usize::try_from(args.publishers).unwrap_or(usize::MAX) + 32);

    let publisher = Client::new(&args.server)?;
    // Fail early, in one line, when the server is not there.
    publisher
        .get(&publisher.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", publisher.base))?;

    let sources = source_addresses(&publisher.base, n_subs);
    let doors = doors(&args, &publisher, &sources).await?;

    let shared = Arc::new(Shared {
        stop: CancellationToken::new(),
        base: Instant::now(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        connect_slots: Semaphore::new(usize::try_from(args.connect_concurrency)?),
    });

    // Phase 1: connect.
    let bar = progress(n_subs as u64, "connecting");
    let mut subscribers = Vec::with_capacity(n_subs);
    for i in 0..n_subs {
        let topic = i as u64 % topics;
        let tracker = Tracker::new(topic, topics, args.events)?;
        let door = doors[i % doors.len()].clone();
        let name = names[topic as usize].clone();
        subscribers.push(tokio::spawn(subscriber(
            shared.clone(),
            door,
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

    // Phase 2: publish.
    let subs_on = |k: u64| (n_subs as u64) / topics + u64::from(k < n_subs as u64 % topics);
    let planned: u64 = (0..topics)
        .map(|k| events_on(k, topics, args.events) * subs_on(k))
        .sum();
    let bar = progress(planned, "delivering");
    let urls: Arc<Vec<String>> = Arc::new(names.iter().map(|t| publisher.events_url(t)).collect());
    let plan = Arc::new(PublishPlan {
        client: publisher.clone(),
        urls,
        events: args.events,
        rate: args.rate,
        next: AtomicU64::new(0),
        ok_per_topic: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        start: Instant::now(),
    });
    let publish_start_ns = u64::try_from(plan.start.duration_since(shared.base).as_nanos())?;
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
    let mut pub_latency = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3)?;
    let mut publish_errors = 0u64;
    let mut publish_error: Option<String> = None;
    let mut last_publish = plan.start;
    for r in results {
        let r = r.context("a publisher task failed")?;
        pub_latency.add(&r.latency)?;
        publish_errors += r.errors;
        if publish_error.is_none() {
            publish_error = r.first_error;
        }
        last_publish = last_publish.max(r.last_end);
    }
    let published: u64 = plan
        .ok_per_topic
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    bar.set_message(format!("published {published}"));

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
    shared.stop.cancel();

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

    let publish_secs = last_publish.duration_since(plan.start).as_secs_f64();
    let last_delivery_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let delivery_secs = last_delivery_ns.saturating_sub(publish_start_ns) as f64 / 1e9;
    let ms = |us: u64| round3(us as f64 / 1000.0);
    let report = Report {
        via: args.via.name(),
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
        first_publish_error: publish_error,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report, args.rate, args.publishers)?;
    }
    out.flush()?;
    if report.published == 0 {
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

#[derive(Default)]
struct Totals {
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
    max_latency_ns: u64,
}

/// The results (also the `--json` line).
#[derive(Serialize)]
struct Report {
    via: &'static str,
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
    writeln!(
        out,
        "  lost {}   duplicated {}   reordered {}   unexpected {}   reconnects {}",
        r.lost, r.duplicated, r.reordered, r.unexpected, r.reconnects
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

/// Source addresses for the subscribers: none (the OS picks) unless the server is on loopback
/// IPv4 and there are more subscribers than one address has ephemeral ports; then 127.0.0.2,
/// 127.0.0.3, ... one per [`PER_SOURCE`] subscribers.
fn source_addresses(base: &str, subscribers: usize) -> Vec<Option<IpAddr>> {
    let loopback = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()))
        })
        .unwrap_or(false);
    if !loopback || subscribers <= PER_SOURCE {
        return vec![None];
    }
    let n = subscribers.div_ceil(PER_SOURCE).min(253);
    (0..n)
        .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))))
        .collect()
}

/// One way in per source address.
async fn doors(
    args: &BenchArgs,
    publisher: &Client,
    sources: &[Option<IpAddr>],
) -> anyhow::Result<Vec<Door>> {
    match args.via {
        BenchVia::Sse => sources
            .iter()
            .map(|src| {
                let mut b = reqwest::Client::builder()
                    .connect_timeout(client::CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http1_only()
                    // Subscriber connections are never reused: keep no idle ones (and fds).
                    .pool_max_idle_per_host(0);
                if let Some(ip) = src {
                    b = b.local_address(*ip);
                }
                let http = b.build().context("building the HTTP client")?;
                Ok(Door::Sse {
                    client: Client::with_http(&args.server, http)?,
                })
            })
            .collect(),
        BenchVia::Ws => {
            let url = publisher.ws_url("/api/v1/ws");
            anyhow::ensure!(
                url.starts_with("ws://"),
                "bench over WebSocket needs an http:// server URL"
            );
            let parsed = reqwest::Url::parse(&publisher.base)?;
            let host = parsed.host_str().context("the server URL has no host")?;
            let port = parsed.port_or_known_default().unwrap_or(80);
            let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
                .await
                .with_context(|| format!("resolving {host}"))?
                .next()
                .with_context(|| format!("{host} has no address"))?;
            Ok(sources
                .iter()
                .map(|src| Door::Ws {
                    url: url.clone(),
                    addr,
                    local: *src,
                    token: publisher.token.clone(),
                })
                .collect())
        }
    }
}

/// One subscriber: connect (up to [`CONNECT_ATTEMPTS`] times), then read until stopped,
/// reconnecting with the last id as cursor if the connection drops.
async fn subscriber(shared: Arc<Shared>, door: Door, topic: String, mut tr: Tracker) -> SubReport {
    let mut subscribed = false;
    let mut attempts = 0;
    loop {
        let outcome = match &door {
            Door::Sse { client } => {
                sse_session(&shared, client, &topic, &mut tr, &mut subscribed).await
            }
            Door::Ws {
                url,
                addr,
                local,
                token,
            } => {
                let target = WsTarget {
                    url,
                    addr: *addr,
                    local: *local,
                    token: token.as_deref(),
                };
                ws_session(&shared, &target, &topic, &mut tr, &mut subscribed).await
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
    topic: &str,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let slot = connect_slot(shared, *subscribed).await;
    let mut req = client
        .get(&client.events_url(topic))
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(id) = &tr.last_id_text {
        req = req.header("last-event-id", id.as_str());
    }
    let resp = tokio::select! {
        _ = shared.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, req.send()) => r,
    };
    let resp = resp.map_err(|_| anyhow::anyhow!("timed out subscribing"))??;
    // The server registers the subscription before it sends the headers.
    let resp = client::check(resp).await?;
    drop(slot);
    if !*subscribed {
        *subscribed = true;
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    let mut body = resp.bytes_stream();
    let mut decoder = herald_protocol::sse::SseDecoder::new();
    let mut events = Vec::new();
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
        decoder.feed(&chunk, &mut events);
        let now = unix_nanos();
        for ev in events.drain(..) {
            tr.record(ev.id.as_deref(), &ev.data, now);
        }
        tr.flush(shared);
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

async fn ws_connect(target: &WsTarget<'_>) -> anyhow::Result<WebSocketStream<TcpStream>> {
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
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// One WebSocket connection; `Ok` when stopped, `Err` when it failed or ended.
async fn ws_session(
    shared: &Shared,
    target: &WsTarget<'_>,
    topic: &str,
    tr: &mut Tracker,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let mut slot = connect_slot(shared, *subscribed).await;
    let connect = async {
        let mut ws = ws_connect(target).await?;
        let mut sub = serde_json::json!({"type": "subscribe", "topic": topic});
        if let Some(id) = &tr.last_id_text {
            sub["after"] = serde_json::Value::String(id.clone());
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
        let msg = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline), if waiting => {
                anyhow::bail!("timed out waiting for `subscribed`")
            }
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => anyhow::bail!("the server closed the WebSocket"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        let Ok(m) = serde_json::from_str::<WsMessage<'_>>(text.as_str()) else {
            continue;
        };
        match &*m.kind {
            "event" => {
                if let Some(data) = m.data {
                    tr.record(m.id.as_deref(), data.get(), unix_nanos());
                    tr.flush(shared);
                }
            }
            "subscribed" if waiting => {
                waiting = false;
                drop(slot.take());
                if !*subscribed {
                    *subscribed = true;
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                }
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

/// What the publishers share.
struct PublishPlan {
    client: Client,
    urls: Arc<Vec<String>>,
    events: u64,
    rate: f64,
    /// The next sequence number to publish.
    next: AtomicU64,
    /// Successful publishes per topic.
    ok_per_topic: Vec<AtomicU64>,
    start: Instant,
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
        let body = format!(r#"{{"event":"bench","data":{{"seq":{seq},"t":{t}}}}}"#);
        let sent = Instant::now();
        let result = async {
            let resp = plan
                .client
                .post(&plan.urls[topic])
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(PUBLISH_TIMEOUT)
                .body(body)
                .send()
                .await?;
            let resp = client::check(resp).await?;
            // Read the receipt so the connection can be reused.
            resp.bytes().await?;
            anyhow::Ok(())
        }
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            stop: CancellationToken::new(),
            base: Instant::now(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_slots: Semaphore::new(1),
        }
    }

    fn data(seq: u64, t: u64) -> String {
        format!(r#"{{"seq":{seq},"t":{t}}}"#)
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
        let sh = shared();
        // Topic 1 of 2, 10 events: expects seq 1, 3, 5, 7, 9.
        let mut tr = Tracker::new(1, 2, 10).unwrap();
        let now = 5_000_000;
        tr.record(Some("10"), &data(1, now - 2_000_000), now);
        tr.record(Some("12"), &data(3, now - 1_000_000), now);
        tr.record(Some("12"), &data(3, now - 1_000_000), now); // duplicate
        tr.record(Some("11"), &data(5, now), now); // older id than the last: reordered
        tr.record(Some("13"), &data(2, now), now); // another topic's event
        tr.record(Some("14"), &data(99, now), now); // beyond the run
        tr.record(None, "not json", now); // ignored
        tr.record(Some("15"), r#"{"requested":"1","oldest":"2"}"#, now); // a notice: ignored
        assert_eq!(tr.last_id_text.as_deref(), Some("12"));
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
    fn source_addresses_only_for_big_loopback_runs() {
        assert_eq!(source_addresses("http://127.0.0.1:8080", 1000), vec![None]);
        assert_eq!(
            source_addresses("http://10.0.0.5:8080", 100_000),
            vec![None]
        );
        let s = source_addresses("http://localhost:8080", 60_000);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(s[2], Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))));
    }
}
