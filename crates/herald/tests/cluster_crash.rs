//! Cluster crash tests with the real binary: two `herald serve --nats` nodes share one NATS
//! JetStream server; one node is killed with SIGKILL and the other carries on (SSE resume with
//! `Last-Event-ID`, webhook deliveries the dead node held, queued STOMP messages the dead node
//! held for its consumer).

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{ServerGuard, free_port, herald_command};
use futures::StreamExt as _;
use herald_protocol::sse::{SseDecoder, SseEvent};
use herald_test_support::{Answer, NatsServer, WebhookReceiver};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Starts `herald serve --nats <nats> --listen 127.0.0.1:<free port> --data-dir <data>` with
/// `env` and waits until `/readyz` answers 200; returns it and its base URL.
async fn node(
    http: &reqwest::Client,
    nats: &str,
    data: &Path,
    env: &[(&str, &str)],
) -> (ServerGuard, String) {
    let port = free_port();
    let mut cmd = herald_command();
    cmd.args(["serve", "--nats", nats, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .env("HERALD_LOG__LEVEL", "warn")
        .env("HERALD_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut guard = ServerGuard(cmd.spawn().expect("start herald"));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return (guard, base);
        }
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("herald serve exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "herald serve not ready after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Publishes `data` on `topic` at `base`; returns the acknowledged id.
async fn publish(http: &reqwest::Client, base: &str, topic: &str, data: Value) -> String {
    let r = http
        .post(format!("{base}/api/v1/topics/{topic}/events"))
        .json(&json!({ "data": data }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "publish on {base}");
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// An open SSE stream of a topic.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: SseDecoder,
    pending: std::collections::VecDeque<SseEvent>,
}

impl Sse {
    async fn open(base: &str, topic: &str, last_event_id: Option<&str>) -> Self {
        // No overall timeout: the stream stays open; reads are bounded by `next_id`.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut req = http
            .get(format!("{base}/api/v1/topics/{topic}/events"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("SSE connect timed out")
            .unwrap();
        assert_eq!(resp.status(), 200, "SSE on {base}");
        Self {
            body: resp.bytes_stream().boxed(),
            decoder: SseDecoder::new(),
            pending: Default::default(),
        }
    }

    /// The id of the next event that carries one (panics after `timeout`).
    async fn next_id(&mut self, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(ev) = self.pending.pop_front() {
                if let Some(id) = ev.id
                    && !ev.data.is_empty()
                {
                    return id;
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no SSE event in time")
                .expect("the SSE stream ended")
                .expect("reading the SSE stream");
            let mut out = Vec::new();
            self.decoder.feed(&chunk, &mut out);
            self.pending.extend(out);
        }
    }

    /// Nothing more arrives within `wait`.
    async fn assert_quiet(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(ev) = self.pending.pop_front() {
                assert!(
                    ev.id.is_none() || ev.data.is_empty(),
                    "unexpected extra event {:?}",
                    ev.id
                );
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return,
                Ok(Some(Ok(chunk))) => {
                    let mut out = Vec::new();
                    self.decoder.feed(&chunk, &mut out);
                    self.pending.extend(out);
                }
                Ok(other) => panic!("SSE stream ended: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_after_kill_9() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let nats = NatsServer::start();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let http = client();
        let (mut a, base_a) = node(&http, &nats.url(), dir_a.path(), &[]).await;
        let (_b, base_b) = node(&http, &nats.url(), dir_b.path(), &[]).await;

        let mut sse_a = Sse::open(&base_a, "feed", None).await;
        // Let the subscription settle before publishing on the other node.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut first = Vec::new();
        for n in 0..20 {
            first.push(publish(&http, &base_b, "feed", json!({ "n": n })).await);
        }
        let mut read = Vec::new();
        for _ in 0..20 {
            read.push(sse_a.next_id(Duration::from_secs(15)).await);
        }
        assert_eq!(read, first, "node A's client read the 20 events in order");
        let last = read.last().unwrap().clone();

        a.0.kill().expect("kill -9 node A");
        let _ = a.0.wait();
        drop(sse_a);

        let mut second = Vec::new();
        for n in 20..40 {
            second.push(publish(&http, &base_b, "feed", json!({ "n": n })).await);
        }
        let mut sse_b = Sse::open(&base_b, "feed", Some(&last)).await;
        let mut resumed = Vec::new();
        for _ in 0..20 {
            resumed.push(sse_b.next_id(Duration::from_secs(15)).await);
        }
        assert_eq!(
            resumed, second,
            "resumed on node B after {last}: exactly the 20 later events, in order"
        );
        sse_b.assert_quiet(Duration::from_secs(1)).await;
        drop(a);
    })
    .await
    .expect("test took longer than 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_held_by_a_node_killed_with_kill_9_are_delivered_by_another() {
    const N: usize = 10;
    tokio::time::timeout(Duration::from_secs(150), async {
        // Hangs until `healthy`, then answers 200 and records the accepted message ids.
        let healthy = Arc::new(AtomicBool::new(false));
        let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
        let receiver = {
            let (healthy, accepted) = (healthy.clone(), accepted.clone());
            WebhookReceiver::scripted(move |_, r| {
                if healthy.load(Ordering::SeqCst) {
                    if let Some(id) = r.header("webhook-id") {
                        accepted.lock().unwrap().insert(id.to_owned());
                    }
                    Answer::ok()
                } else {
                    Answer::Hang
                }
            })
            .await
        };
        let env = [
            (
                "HERALD_WEBHOOKS__RETRY_SCHEDULE",
                r#"["200ms","200ms","200ms","200ms","200ms","200ms","200ms","200ms","200ms","200ms"]"#,
            ),
            ("HERALD_WEBHOOKS__TIMEOUT", "30s"),
            ("HERALD_WEBHOOKS__CONCURRENCY_PER_ENDPOINT", "16"),
            // The ack wait of the webhook work queue: how long a dead node's deliveries wait.
            ("HERALD_CLUSTER__LEASE", "3s"),
        ];

        let nats = NatsServer::start();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let http = client();
        let (mut a, base_a) = node(&http, &nats.url(), dir_a.path(), &env).await;

        let r = http
            .post(format!("{base_a}/api/v1/webhooks"))
            .json(&json!({"url": receiver.url("/jobs"), "topics": ["jobs"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);

        let mut want = HashSet::new();
        for n in 0..N {
            let id = publish(&http, &base_a, "jobs", json!({ "n": n })).await;
            want.insert(format!("msg_{id}"));
        }
        // Node A holds every delivery in flight (the receiver hangs).
        let seen = receiver.wait_for(N, Duration::from_secs(30)).await;
        assert!(accepted.lock().unwrap().is_empty());
        let attempted: HashSet<String> = seen
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect();
        assert_eq!(attempted, want, "node A attempted every event");

        let killed = Instant::now();
        a.0.kill().expect("kill -9 node A");
        let _ = a.0.wait();
        let (_b, _base_b) = node(&http, &nats.url(), dir_b.path(), &env).await;
        healthy.store(true, Ordering::SeqCst);

        let deadline = Instant::now() + Duration::from_secs(75);
        loop {
            let missing: Vec<String> = {
                let got = accepted.lock().unwrap();
                want.iter().filter(|m| !got.contains(*m)).cloned().collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {N} deliveries never made by node B, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "all {N} deliveries made {:.1} s after kill -9 ({} requests in all)",
            killed.elapsed().as_secs_f64(),
            receiver.received().len()
        );
        drop(a);
    })
    .await
    .expect("test took longer than 150 s");
}

/// A STOMP 1.2 connection over raw TCP (`stomp.tcp_listen`), frames as text.
struct Stomp {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Stomp {
    /// Connects to `127.0.0.1:<port>` and completes CONNECT / CONNECTED (no heart-beats).
    async fn connect(port: u16) -> Self {
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("STOMP connect timed out")
        .expect("STOMP connect");
        let mut s = Self {
            stream,
            read: Vec::new(),
        };
        s.send("CONNECT\naccept-version:1.2\nhost:herald\nheart-beat:0,0\n\n\0")
            .await;
        let f = s.frame(Duration::from_secs(10)).await.expect("CONNECTED");
        assert!(f.starts_with("CONNECTED\n"), "{f}");
        s
    }

    async fn send(&mut self, frame: &str) {
        self.stream
            .write_all(frame.as_bytes())
            .await
            .expect("write a STOMP frame");
    }

    /// Sends `frame` (which asks for receipt `id`) and waits for that RECEIPT.
    async fn send_with_receipt(&mut self, frame: &str, id: &str) {
        self.send(frame).await;
        let f = self
            .frame(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no RECEIPT {id}"));
        assert!(f.starts_with(&format!("RECEIPT\nreceipt-id:{id}\n")), "{f}");
    }

    /// Subscribes to `/queue/jobs` in ack mode `ack` (with a receipt).
    async fn subscribe_jobs(&mut self, ack: &str) {
        self.send_with_receipt(
            &format!("SUBSCRIBE\nid:q\ndestination:/queue/jobs\nack:{ack}\nreceipt:sub\n\n\0"),
            "sub",
        )
        .await;
    }

    /// The next frame that is not a heart-beat, without its NUL; `None` when nothing came
    /// within `wait`. Panics when the server closed the connection.
    async fn frame(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let start = self
                .read
                .iter()
                .position(|&b| b != b'\n' && b != b'\r')
                .unwrap_or(self.read.len());
            self.read.drain(..start);
            if let Some(end) = self.read.iter().position(|&b| b == 0) {
                let f: Vec<u8> = self.read.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&f[..end]).into_owned());
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("the STOMP connection closed"),
                Ok(Ok(n)) => self.read.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("reading STOMP: {e}"),
            }
        }
    }

    /// The next MESSAGE within `wait`: its body and `ack` header.
    async fn message(&mut self, wait: Duration) -> Option<(String, String)> {
        let f = self.frame(wait).await?;
        assert!(f.starts_with("MESSAGE\n"), "{f}");
        let (head, body) = f.split_once("\n\n").expect("a frame with a body");
        let ack = head
            .lines()
            .find_map(|l| l.strip_prefix("ack:"))
            .expect("an ack header (client-individual)");
        Some((body.to_owned(), ack.to_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_held_by_a_node_killed_with_kill_9_go_to_another_node() {
    const N: usize = 10;
    const LEASE: Duration = Duration::from_secs(2);
    tokio::time::timeout(Duration::from_secs(120), async {
        let nats = NatsServer::start();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let http = client();
        let (stomp_a, stomp_b) = (free_port(), free_port());
        let (listen_a, listen_b) = (
            format!("127.0.0.1:{stomp_a}"),
            format!("127.0.0.1:{stomp_b}"),
        );
        let env_a = [
            ("HERALD_CLUSTER__LEASE", "2s"),
            ("HERALD_STOMP__TCP_LISTEN", listen_a.as_str()),
        ];
        let env_b = [
            ("HERALD_CLUSTER__LEASE", "2s"),
            ("HERALD_STOMP__TCP_LISTEN", listen_b.as_str()),
        ];
        let (mut a, _) = node(&http, &nats.url(), dir_a.path(), &env_a).await;
        let (_b, _) = node(&http, &nats.url(), dir_b.path(), &env_b).await;

        // A's consumer takes every message and never acknowledges: node A holds them all.
        let mut on_a = Stomp::connect(stomp_a).await;
        on_a.subscribe_jobs("client-individual").await;
        let mut sender = Stomp::connect(stomp_b).await;
        let want: HashSet<String> = (0..N).map(|i| format!("job-{i}")).collect();
        for i in 0..N {
            sender
                .send_with_receipt(
                    &format!("SEND\ndestination:/queue/jobs\nreceipt:r{i}\n\njob-{i}\0"),
                    &format!("r{i}"),
                )
                .await;
        }
        let mut held = HashSet::new();
        while held.len() < N {
            let (body, _) = on_a
                .message(Duration::from_secs(15))
                .await
                .unwrap_or_else(|| panic!("A's consumer got only {held:?}"));
            assert!(held.insert(body.clone()), "{body} twice on A");
        }
        assert_eq!(held, want, "A's consumer got every message");

        // While A lives (renewing its leases), B's consumer gets none of them, even after a
        // whole lease.
        let mut on_b = Stomp::connect(stomp_b).await;
        on_b.subscribe_jobs("client-individual").await;
        let f = on_b.frame(LEASE + Duration::from_secs(1)).await;
        assert!(f.is_none(), "B's consumer got a message A holds: {f:?}");

        let killed = Instant::now();
        a.0.kill().expect("kill -9 node A");
        let _ = a.0.wait();

        let mut got: HashMap<String, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + LEASE + Duration::from_secs(30);
        while got.len() < N {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((body, ack)) = on_b.message(wait).await else {
                panic!(
                    "B's consumer got {} of {N} within {:?} of kill -9: {got:?}",
                    got.len(),
                    killed.elapsed()
                );
            };
            assert!(want.contains(&body), "unexpected message {body:?}");
            *got.entry(body).or_default() += 1;
            on_b.send(&format!("ACK\nid:{ack}\n\n\0")).await;
        }
        let after = killed.elapsed();
        // Nothing twice and nothing more, on this consumer or (once the ACKs took) on a new one
        // after another lease.
        while let Some((body, ack)) = on_b.message(Duration::from_secs(1)).await {
            assert!(want.contains(&body), "unexpected message {body:?}");
            *got.entry(body).or_default() += 1;
            on_b.send(&format!("ACK\nid:{ack}\n\n\0")).await;
        }
        on_b.send_with_receipt("DISCONNECT\nreceipt:bye\n\n\0", "bye")
            .await;
        let mut late = Stomp::connect(stomp_b).await;
        late.subscribe_jobs("client-individual").await;
        let extra = late.frame(LEASE + Duration::from_secs(1)).await;
        assert!(extra.is_none(), "a consumed message came back: {extra:?}");
        assert!(got.values().all(|&n| n == 1), "delivered twice: {got:?}");
        println!(
            "all {N} queued messages reached node B's consumer {:.1} s after kill -9 (lease {LEASE:?})",
            after.as_secs_f64()
        );
        drop(a);
    })
    .await
    .expect("test took longer than 120 s");
}
