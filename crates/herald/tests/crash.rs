//! Crash test with the real binary: publishers run while `kill -9` hits the server; after a
//! restart on the same data directory every acknowledged event is there, in order.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Kills the child on drop, so a failing test leaves no server behind.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &Path, port: u16) -> ServerGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
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
    let mut server = start(dir.path(), port);
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
    let _server = start(dir.path(), port);
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
