//! [`NatsServer`]: a `nats-server -js` of the test's own on a free port with its own store
//! directory (and optionally a config file of the test's: TLS, accounts), stopped by PID when
//! dropped. [`NatsCluster`]: three of them forming one JetStream cluster, each of which can be
//! stopped and started again.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// One JetStream server process with its store directory.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// The config file passed with `-c` ([`start_with_config`](Self::start_with_config)).
    config: Option<PathBuf>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory.
    pub fn start() -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            dir: TempDir::new().expect("temp dir"),
            config: None,
        };
        s.spawn();
        s
    }

    /// Starts a server as [`start`](Self::start) does, with `extra` as its config file
    /// (nats-server syntax, e.g. a `tls { ... }` block or `operator` / `resolver` settings).
    /// Address, port, JetStream and store directory still come from the command line, which
    /// takes precedence over the file. The server logs to [`log_file`](Self::log_file).
    pub fn start_with_config(extra: &str) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, extra).expect("write the nats-server config");
        let mut s = Self {
            child: None,
            port: free_port(),
            dir,
            config: Some(config),
        };
        s.spawn();
        s
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Where a server started [`with a config`](Self::start_with_config) logs (for failure
    /// messages; other servers log nowhere).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self) {
        let (port, store, log) = (self.port, self.store(), self.log_file());
        let config = self.config.clone();
        let stderr = self.dir.path().join("nats.stderr");
        let child = run_nats(&|c| {
            if let Some(config) = &config {
                // Config mistakes are reported on stderr, before the log file is opened.
                let file = std::fs::File::create(&stderr).expect("create nats.stderr");
                c.arg("-c").arg(config).arg("-l").arg(&log).stderr(file);
            }
            c.args(["-js", "-a", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-sd")
                .arg(&store);
        });
        // Held before waiting, so that a panic below still kills it (on drop).
        let child = self.child.insert(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let said = [&stderr, &log]
                    .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                    .join("");
                panic!("nats-server exited at start ({status}):\n{said}");
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL, by its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `nats-server` with `args` (Debian installs it in /usr/sbin, which is not on every
/// PATH). Its output goes nowhere unless `args` says otherwise.
fn run_nats(args: &dyn Fn(&mut Command)) -> Child {
    let run = |bin: &str| {
        let mut c = Command::new(bin);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        args(&mut c);
        c.spawn()
    };
    run("nats-server")
        .or_else(|_| run("/usr/sbin/nats-server"))
        .expect("nats-server on PATH (scripts/test-deps installs it)")
}

/// Waits until something accepts connections on `port` (panics after `within`).
fn wait_listening(port: u16, within: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many servers a [`NatsCluster`] has.
const CLUSTER_SIZE: usize = 3;

/// How long [`NatsCluster::ready`] waits for the cluster to settle.
const CLUSTER_READY: Duration = Duration::from_secs(30);

/// One server of a [`NatsCluster`].
struct Member {
    name: String,
    /// Client port.
    port: u16,
    /// HTTP monitoring port (`/healthz`, `/jsz`).
    monitor: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three `nats-server -js` processes forming one JetStream cluster on loopback: each with a
/// server name (`n0`..`n2`), its own client, route and monitoring ports, its own store
/// directory, and routes to the other two. Every process is killed by its PID on drop.
///
/// Each server is started from a config file in the cluster's temp dir (the same file on a
/// restart, so a server comes back with its name, ports and store).
pub struct NatsCluster {
    members: Vec<Member>,
    http: reqwest::Client,
    _dir: TempDir,
}

impl NatsCluster {
    /// How many servers it has.
    pub const SIZE: usize = CLUSTER_SIZE;

    /// Starts the three servers and waits until the cluster is [`ready`](Self::ready).
    pub async fn spawn() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..CLUSTER_SIZE)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut members = Vec::with_capacity(CLUSTER_SIZE);
        for (i, &(port, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &(_, r, _))| format!("    \"nats-route://127.0.0.1:{r}\""))
                .collect();
            let store = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            let config = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "server_name: \"{name}\"\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 http: \"127.0.0.1:{monitor}\"\n\
                 log_file: \"{log}\"\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  \
                 max_file_store: 1GB\n}}\n\
                 cluster {{\n  name: \"herald-test\"\n  listen: \"127.0.0.1:{route}\"\n  \
                 routes: [\n{routes}\n  ]\n}}\n",
                log = log.display(),
                store = store.display(),
                routes = routes.join("\n"),
            );
            std::fs::write(&config, text).expect("write a nats-server config");
            members.push(Member {
                name,
                port,
                monitor,
                config,
                log,
                child: None,
            });
        }
        let mut cluster = Self {
            members,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client"),
            _dir: dir,
        };
        for i in 0..CLUSTER_SIZE {
            cluster.start(i);
        }
        cluster.ready().await;
        cluster
    }

    /// Every server's URL, comma-separated: `nats://127.0.0.1:<p0>,nats://127.0.0.1:<p1>,...`.
    pub fn urls(&self) -> String {
        (0..CLUSTER_SIZE)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].port)
    }

    /// Server `i`'s name (`n<i>`, as the monitoring endpoints report leaders).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Whether server `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Kills server `i` (SIGKILL, by its PID) and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` (again: same name, ports and store) and waits until it accepts
    /// client connections. It may not have caught up with the cluster yet: see
    /// [`ready`](Self::ready).
    pub fn start(&mut self, i: usize) {
        if self.members[i].child.is_some() {
            return;
        }
        let m = &self.members[i];
        let config = m.config.clone();
        let child = run_nats(&|c| {
            c.arg("-c").arg(&config);
        });
        self.members[i].child = Some(child);
        wait_listening(
            self.members[i].port,
            Duration::from_secs(10),
            &format!("nats-server {}", self.members[i].name),
        );
    }

    /// Waits until every running server answers `/healthz` with 200 (on 2.9: JetStream on,
    /// the meta group and the streams it holds current) and knows the JetStream meta leader.
    ///
    /// # Panics
    /// After 30 s, with each server's last log lines.
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + CLUSTER_READY;
        loop {
            let mut waiting = Vec::new();
            for i in (0..CLUSTER_SIZE).filter(|&i| self.is_running(i)) {
                if let Err(why) = self.member_ready(i).await {
                    waiting.push(format!("{}: {why}", self.members[i].name));
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the NATS cluster did not become ready within {CLUSTER_READY:?}: {waiting:?}\n{}",
                self.log_tails(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn member_ready(&self, i: usize) -> Result<(), String> {
        let m = &self.members[i];
        let health = self
            .http
            .get(format!("http://127.0.0.1:{}/healthz", m.monitor))
            .send()
            .await
            .map_err(|e| format!("healthz: {e}"))?;
        if !health.status().is_success() {
            let status = health.status();
            let body = health.text().await.unwrap_or_default();
            return Err(format!("healthz {status}: {}", body.trim()));
        }
        match self.meta_leader(i).await {
            Some(_) => Ok(()),
            None => Err("no JetStream meta leader".into()),
        }
    }

    /// `/jsz?<query>` of server `i` (`None` when it does not answer).
    pub async fn jsz(&self, i: usize, query: &str) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/jsz?{query}", self.members[i].monitor);
        let r = self.http.get(url).send().await.ok()?;
        r.json().await.ok()
    }

    /// The JetStream meta leader's name as server `i` sees it.
    pub async fn meta_leader(&self, i: usize) -> Option<String> {
        let jsz = self.jsz(i, "").await?;
        let leader = jsz["meta_cluster"]["leader"].as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    /// The index of the server leading stream `stream` (asked of the running servers).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for i in (0..CLUSTER_SIZE).filter(|&i| self.is_running(i)) {
            let Some(jsz) = self.jsz(i, "accounts=true&streams=true").await else {
                continue;
            };
            let accounts = jsz["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for acc in accounts {
                let streams = acc["stream_detail"].as_array().cloned().unwrap_or_default();
                for s in streams {
                    if s["name"] == stream
                        && let Some(leader) = s["cluster"]["leader"].as_str()
                    {
                        return self.members.iter().position(|m| m.name == leader);
                    }
                }
            }
        }
        None
    }

    /// The last `n` lines of every server's log (for failure messages).
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ({}) ---\n", m.name, m.log.display()));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..CLUSTER_SIZE {
            self.stop(i);
        }
    }
}
