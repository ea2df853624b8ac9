//! `herald webhooks bench`: outbound webhook throughput and latency against a running server.
//!
//! The command runs its own HTTP receiver on a loopback port, creates endpoints on the server
//! that point at it (healthy ones answer `200` at once, `--hanging` ones never answer), publishes
//! events in batches to one topic every endpoint subscribes to, and waits until every healthy
//! endpoint got every event. It reports deliveries per second (first publish to last delivery),
//! publish→delivery latency, duplicates and what the hanging endpoints cost the healthy ones.
//! The server must allow loopback targets (`webhooks.allow_private_targets = true`).

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::post,
};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    cli::ServerArgs,
    client::{Client, check, unix_nanos},
};

/// `herald webhooks bench`.
#[derive(Debug, Args)]
#[command(
    long_about = "Measure outbound webhook delivery: runs a local HTTP receiver, creates \
        --endpoints endpoints on the server pointing at it (plus --hanging endpoints whose \
        requests are never answered), publishes --events events in batches of --batch to one \
        topic they all subscribe to, and waits until every healthy endpoint got every event. \
        Reports deliveries/s, publish-to-delivery latency and duplicates, then deletes the \
        endpoints. The server must run with webhooks.allow_private_targets = true.",
    after_help = "EXAMPLES:\n  \
        HERALD_WEBHOOKS__ALLOW_PRIVATE_TARGETS=true herald serve --memory &\n  \
        herald webhooks bench --events 20000\n  \
        herald webhooks bench --endpoints 100 --events 500\n  \
        herald webhooks bench --endpoints 10 --hanging 10 --events 2000"
)]
pub(crate) struct WebhookBenchArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Healthy endpoints (each gets every event).
    #[arg(long, default_value_t = 1)]
    pub(crate) endpoints: usize,
    /// Endpoints whose receiver never answers (each holds its concurrency slots until the
    /// server's webhooks.timeout).
    #[arg(long, default_value_t = 0)]
    pub(crate) hanging: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) events: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = 100)]
    pub(crate) batch: u64,
    /// Address the receiver listens on (a loopback address; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) receiver: SocketAddr,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What the receiver saw.
struct Seen {
    /// Healthy deliveries received (duplicates included).
    received: AtomicU64,
    /// `(endpoint index, webhook-id)` seen, to count duplicates.
    ids: Mutex<HashSet<(u32, String)>>,
    duplicates: AtomicU64,
    /// Publish→delivery latency, microseconds.
    latency: Mutex<Histogram<u64>>,
    last_at: Mutex<Option<Instant>>,
}

async fn healthy(
    State(seen): State<Arc<Seen>>,
    Path(i): Path<u32>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = unix_nanos();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !seen.ids.lock().insert((i, id)) {
        seen.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(t) = v["data"]["t"].as_u64()
    {
        let micros = now.saturating_sub(t) / 1000;
        let _ = seen.latency.lock().record(micros.max(1));
    }
    *seen.last_at.lock() = Some(Instant::now());
    seen.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn hang() -> StatusCode {
    std::future::pending::<()>().await;
    StatusCode::OK
}

/// The measured figures.
#[derive(Debug, serde::Serialize)]
struct Report {
    endpoints: usize,
    hanging: usize,
    events: u64,
    expected_deliveries: u64,
    delivered: u64,
    duplicates: u64,
    seconds: f64,
    deliveries_per_second: f64,
    publish_seconds: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
}

async fn create(client: &Client, url: String, topic: &str) -> anyhow::Result<String> {
    let r = client
        .post(&client.url("/api/v1/webhooks"))
        .json(&json!({ "url": url, "topics": [topic], "description": "herald webhooks bench" }))
        .send()
        .await
        .context("creating an endpoint")?;
    let v: Value = check(r).await?.json().await?;
    v["id"]
        .as_str()
        .map(str::to_owned)
        .context("the server answered without an endpoint id")
}

pub(crate) async fn run(args: WebhookBenchArgs) -> anyhow::Result<()> {
    if args.endpoints == 0 || args.events == 0 || args.batch == 0 {
        bail!("--endpoints, --events and --batch must be at least 1");
    }
    let client = Client::new(&args.server)?;
    let seen = Arc::new(Seen {
        received: AtomicU64::new(0),
        ids: Mutex::new(HashSet::new()),
        duplicates: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new(3).context("histogram")?),
        last_at: Mutex::new(None),
    });
    let listener = TcpListener::bind(args.receiver)
        .await
        .with_context(|| format!("binding the receiver on {}", args.receiver))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/ok/{i}", post(healthy))
        .route("/hang/{i}", post(hang))
        .with_state(seen.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let receiver = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });

    let topic = format!("bench.webhooks.r{}", unix_nanos() % 1_000_000_000);
    let mut ids = Vec::new();
    let result = async {
        for i in 0..args.endpoints {
            ids.push(create(&client, format!("http://{addr}/ok/{i}"), &topic).await?);
        }
        for i in 0..args.hanging {
            ids.push(create(&client, format!("http://{addr}/hang/{i}"), &topic).await?);
        }
        measure(&args, &client, &topic, &seen).await
    }
    .await;
    // Deleting the endpoints also drops their pending deliveries (the hanging ones' included).
    for id in &ids {
        let _ = client
            .delete(&client.url(&format!("/api/v1/webhooks/{id}")))
            .send()
            .await;
    }
    stop.cancel();
    receiver.abort();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "webhooks: {} healthy endpoint(s), {} hanging, {} events\n  \
             delivered {}/{} ({} duplicates) in {:.2} s: {:.0} deliveries/s (publishing took {:.2} s)\n  \
             publish->delivery latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            report.endpoints,
            report.hanging,
            report.events,
            report.delivered,
            report.expected_deliveries,
            report.duplicates,
            report.seconds,
            report.deliveries_per_second,
            report.publish_seconds,
            report.latency_ms_p50,
            report.latency_ms_p99,
            report.latency_ms_max
        );
    }
    if report.delivered < report.expected_deliveries {
        bail!(
            "only {} of {} deliveries arrived within {} s",
            report.delivered,
            report.expected_deliveries,
            args.timeout
        );
    }
    Ok(())
}

async fn measure(
    args: &WebhookBenchArgs,
    client: &Client,
    topic: &str,
    seen: &Arc<Seen>,
) -> anyhow::Result<Report> {
    let expected = args.events * args.endpoints as u64;
    let bar = ProgressBar::new(expected).with_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("delivered");
    let start = Instant::now();
    let mut sent = 0;
    while sent < args.events {
        let n = args.batch.min(args.events - sent);
        let batch: Vec<Value> = (0..n)
            .map(|k| json!({ "topic": topic, "data": { "t": unix_nanos(), "n": sent + k } }))
            .collect();
        let r = client
            .post(&client.url("/api/v1/events"))
            .json(&batch)
            .send()
            .await
            .context("publishing")?;
        check(r).await?;
        sent += n;
        bar.set_position(seen.received.load(Ordering::Relaxed));
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    let deadline = start + Duration::from_secs(args.timeout);
    loop {
        let got = seen.received.load(Ordering::Relaxed) - seen.duplicates.load(Ordering::Relaxed);
        bar.set_position(got.min(expected));
        if got >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    let delivered = seen.received.load(Ordering::Relaxed) - seen.duplicates.load(Ordering::Relaxed);
    let end = seen.last_at.lock().unwrap_or_else(Instant::now);
    let seconds = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let h = seen.latency.lock();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        endpoints: args.endpoints,
        hanging: args.hanging,
        events: args.events,
        expected_deliveries: expected,
        delivered,
        duplicates: seen.duplicates.load(Ordering::Relaxed),
        seconds,
        deliveries_per_second: delivered as f64 / seconds,
        publish_seconds,
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        latency_ms_max: h.max() as f64 / 1000.0,
    })
}
