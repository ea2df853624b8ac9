//! Crash tests with the real binary: publishers run while `kill -9` hits the server; after a
//! restart on the same data directory every acknowledged event is there, in order, and every
//! webhook delivery owed for an acknowledged event is still made (SPEC 7.1, durability).

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use herald_test_support::{Answer, WebhookReceiver, free_port};
use serde_json::{Value, json};

/// Kills the child on drop, so a failing test leaves no server behind.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` on `data` (default durability: fsync) with `extra` arguments.
fn start(data: &Path, port: u16, extra: &[&OsStr]) -> ServerGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("HERALD_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start herald");
    ServerGuard(child)
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = start(dir.path(), port, &[]);
    wait_healthy(&http, &base).await;

    // publisher -> [(id, n)] of acknowledged publishes, in the order acknowledged.
    type Acked = HashMap<usize, Vec<(u64, u64)>>;
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..8usize {
        let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let r = http
                    .post(format!("{base}/api/v1/topics/crash.p{p}/events"))
                    .json(&json!({"data": {"p": p, "n": n}}))
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status() != 201 {
                    return;
                }
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let id: u64 = body["id"].as_str().unwrap().parse().unwrap();
                acked.lock().unwrap().entry(p).or_default().push((id, n));
            }
        }));
    }
    // Let publishers get going, then kill -9 mid-flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().values().map(Vec::len).sum::<usize>() < 300 {
        assert!(Instant::now() < deadline, "publishers made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("publisher stopped")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total >= 300);

    // Restart on the same data and read everything back.
    drop(server);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start(dir.path(), port, &[]);
    wait_healthy(&http, &base).await;
    let mut stored: HashMap<u64, (String, u64)> = HashMap::new();
    let mut after = 0u64;
    let mut last = 0u64;
    loop {
        let page: Value = http
            .get(format!(
                "{base}/api/v1/topics/crash.%3E/events?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            let id: u64 = e["id"].as_str().unwrap().parse().unwrap();
            assert!(id > last, "ids out of order: {id} after {last}");
            last = id;
            stored.insert(
                id,
                (
                    e["topic"].as_str().unwrap().to_owned(),
                    e["data"]["n"].as_u64().unwrap(),
                ),
            );
        }
        after = page["next"].as_str().unwrap().parse().unwrap();
    }
    for (p, list) in &acked {
        let mut prev_id = 0;
        for (i, (id, n)) in list.iter().enumerate() {
            let (topic, stored_n) = stored
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged event {id} (publisher {p}) lost"));
            assert_eq!(topic, &format!("crash.p{p}"));
            assert_eq!(*stored_n, *n);
            assert_eq!(
                *n, i as u64,
                "publisher {p} acknowledgements out of sequence"
            );
            assert!(*id > prev_id, "publisher {p}: ids not increasing");
            prev_id = *id;
        }
    }
    // A new publish after the restart gets a larger id than anything before the crash.
    let r: Value = http
        .post(format!("{base}/api/v1/topics/crash.after/events"))
        .json(&json!({"data": "after"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: u64 = r["id"].as_str().unwrap().parse().unwrap();
    assert!(id > last);
}

/// A configuration for the webhook crash test: private (loopback) targets allowed, and a retry
/// schedule that is quick at first and then tries every second for two minutes, so no delivery
/// runs out of attempts while the receiver is down, and pending ones are tried again within
/// about a second of the restart.
fn webhook_config(dir: &Path) -> std::path::PathBuf {
    let mut schedule = vec!["\"100ms\"", "\"200ms\"", "\"500ms\""];
    schedule.extend(std::iter::repeat_n("\"1s\"", 120));
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "[webhooks]\nallow_private_targets = true\ntimeout = \"5s\"\nretry_schedule = [{}]\n",
            schedule.join(", ")
        ),
    )
    .unwrap();
    path
}

/// Every delivery of an endpoint: `msg_id` -> status.
async fn delivery_states(http: &reqwest::Client, base: &str, id: &str) -> HashMap<String, String> {
    let mut states = HashMap::new();
    let mut after = "0".to_owned();
    loop {
        let page: Value = http
            .get(format!(
                "{base}/api/v1/webhooks/{id}/deliveries?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = page["deliveries"].as_array().unwrap();
        let Some(last) = list.last() else {
            return states;
        };
        after = last["id"].as_str().unwrap().to_owned();
        for d in list {
            states.insert(
                d["msg_id"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_of_acknowledged_events_survive_kill_9() {
    // The receiver answers 503 until `healthy`; it keeps running across the crash and
    // records which messages it accepted.
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
                Answer::status(503)
            }
        })
        .await
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = webhook_config(dir.path());
    let args: [&OsStr; 2] = ["-c".as_ref(), config.as_os_str()];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start(&data, port, &args);
    wait_healthy(&http, &base).await;

    let r = http
        .post(format!("{base}/api/v1/webhooks"))
        .json(&json!({"url": receiver.url("/crash"), "topics": ["crash.wh.>"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let endpoint: Value = r.json().await.unwrap();
    let id = endpoint["id"].as_str().unwrap().to_owned();

    // Publishers run until the server dies; `acked` holds the ids of acknowledged events.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..4usize {
        let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let Ok(r) = http
                    .post(format!("{base}/api/v1/topics/crash.wh.p{p}/events"))
                    .json(&json!({"data": {"p": p, "n": n}}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != 201 {
                    return;
                }
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let id: u64 = body["id"].as_str().unwrap().parse().unwrap();
                acked.lock().unwrap().push(id);
            }
        }));
    }
    // Kill -9 once enough events are acknowledged and their deliveries are being retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 || receiver.received().len() < 100 {
        assert!(
            Instant::now() < deadline,
            "no progress: {} acknowledged, {} attempts",
            acked.lock().unwrap().len(),
            receiver.received().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("publisher stopped")
            .unwrap();
    }
    drop(server);
    let attempts_before = receiver.received().len();
    let acked: HashSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|id| format!("msg_{id}"))
        .collect();
    assert!(acked.len() >= 200);
    assert!(
        accepted.lock().unwrap().is_empty(),
        "nothing may be accepted before the restart"
    );

    // Restart on the same data: every acknowledged event still owes its delivery.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start(&data, port, &args);
    wait_healthy(&http, &base).await;
    let states = delivery_states(&http, &base, &id).await;
    for msg in &acked {
        match states.get(msg).map(String::as_str) {
            Some("pending") => {}
            other => panic!("delivery of acknowledged {msg} after the restart: {other:?}"),
        }
    }

    // The receiver recovers: every acknowledged event arrives (at least once), and the
    // deliveries API shows each as succeeded.
    healthy.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<String> = {
            let got = accepted.lock().unwrap();
            acked
                .iter()
                .filter(|m| !got.contains(*m))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never delivered, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{} events acknowledged before kill -9 ({attempts_before} failed attempts), {} \
         requests to the receiver in all",
        acked.len(),
        receiver.received().len()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = delivery_states(&http, &base, &id).await;
        let not_done: Vec<(&String, Option<&String>)> = acked
            .iter()
            .map(|m| (m, states.get(m)))
            .filter(|(_, s)| s.map(String::as_str) != Some("succeeded"))
            .collect();
        if not_done.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} deliveries not shown as succeeded, e.g. {:?}",
            not_done.len(),
            &not_done[..not_done.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
