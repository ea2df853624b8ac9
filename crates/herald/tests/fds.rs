//! Out of file descriptors: the server keeps serving the connections it has, refuses new ones
//! without spinning, logs it once, and recovers when descriptors free up.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Opens an SSE request on a raw socket; returns it once the response head arrived (or
/// `Err` with the socket when it did not within `wait`).
async fn sse(port: u16, wait: Duration) -> Result<TcpStream, TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /api/v1/topics/fd.test/events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    match timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => Ok(s),
        _ => Err(s),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_is_survived() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {} serve --memory --listen 127.0.0.1:{port} 2>{}",
            env!("CARGO_BIN_EXE_herald"),
            log.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Guard(child);
    let pid = server.0.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Far more subscribers than descriptors.
    let mut open = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..160 {
        match sse(port, Duration::from_millis(300)).await {
            Ok(s) => open.push(s),
            Err(s) => waiting.push(s),
        }
    }
    assert!(open.len() > 50, "only {} subscribers served", open.len());
    assert!(
        !waiting.is_empty(),
        "the descriptor limit was never reached"
    );

    // Refusing without spinning: little CPU while out of descriptors.
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 30,
        "server used {used} ticks in 1 s while out of descriptors"
    );

    // The connections it has keep working: publish over the kept-alive connection.
    let r = http
        .post(format!("{base}/api/v1/topics/fd.test/events"))
        .json(&serde_json::json!({"data": "still here"}))
        .send()
        .await
        .expect("publish over the existing connection");
    assert_eq!(r.status(), 201);
    let mut buf = vec![0u8; 4096];
    for s in open.iter_mut().take(20) {
        let mut got = Vec::new();
        timeout(Duration::from_secs(10), async {
            while !String::from_utf8_lossy(&got).contains("still here") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "subscriber closed");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("subscriber got the event");
    }

    // Free descriptors: the waiting connections get accepted and answered.
    open.truncate(10);
    let mut answered = 0;
    for s in waiting.iter_mut().take(20) {
        let mut head = [0u8; 64];
        if let Ok(Ok(n)) = timeout(Duration::from_secs(10), s.read(&mut head)).await
            && n > 0
            && head.starts_with(b"HTTP/1.1 200")
        {
            answered += 1;
        }
    }
    assert!(
        answered > 0,
        "no waiting connection was served after descriptors freed up"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    // Logged once per episode: after recovering, the waiting connections may exhaust the
    // descriptors again, which starts a new episode (and a new line), never one line per retry.
    let exhausted = text.matches("cannot accept connections").count();
    let recovered = text.matches("accepting connections again").count();
    assert!(recovered >= 1, "{text}");
    assert!(
        exhausted == recovered || exhausted == recovered + 1,
        "the condition is logged once per episode:\n{text}"
    );
}
