//! [`NatsServer`]: a `nats-server -js` of the test's own on a free port with its own store
//! directory (and optionally a config file of the test's: TLS, accounts), stopped by PID when
//! dropped. [`NatsCluster`]: three of them forming one JetStream cluster, each of which can be
//! stopped and started again.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::free_port;

/// One JetStream server process with its store directory.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// The config file passed with `-c` ([`start_with_config`](Self::start_with_config)).
    config: Option<PathBuf>,
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
        s.spawn_on_some_port();
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
        s.spawn_on_some_port();
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

    /// Spawns it; when it cannot start, once more on another port (another test's process may
    /// have taken the one picked), up to three times.
    fn spawn_on_some_port(&mut self) {
        let mut failures = Vec::new();
        for _ in 0..SPAWN_TRIES {
            match self.try_spawn() {
                Ok(()) => return,
                Err(why) => failures.push(why),
            }
            self.stop();
            self.port = free_port();
        }
        panic!("{}", failures.join("\n"));
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
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
        // Held before waiting, so that it is killed on drop whatever happens.
        let child = self.child.insert(child);
        wait_listening(child, port, Duration::from_secs(10)).map_err(|why| {
            let said = [&stderr, &log]
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .join("");
            format!("nats-server on port {port}: {why}\n{said}")
        })
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

/// Waits until `child` accepts connections on `port`; `Err` when it exits first (a port of
/// its was taken, say) or after `within`.
fn wait_listening(child: &mut Child, port: u16, within: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not listening after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// How many times [`NatsCluster::spawn`] picks new ports when a server cannot start.
const SPAWN_TRIES: usize = 3;

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

    /// Starts the three servers and waits until the cluster is [`ready`](Self::ready). When a
    /// server cannot start (another test's process took one of its ports between picking and
    /// binding), all three start again on new ports, up to three times.
    pub async fn spawn() -> Self {
        let mut failures = Vec::new();
        for _ in 0..SPAWN_TRIES {
            let mut cluster = Self::configure();
            match (0..CLUSTER_SIZE).try_for_each(|i| cluster.try_start(i)) {
                Ok(()) => {
                    cluster.ready().await;
                    return cluster;
                }
                Err(why) => failures.push(format!("{why}\n{}", cluster.log_tails(10))),
            }
        }
        panic!("the NATS cluster did not start:\n{}", failures.join("\n"));
    }

    /// Writes the three servers' config files (fresh ports, store directories) in a new temp
    /// dir; starts nothing.
    fn configure() -> Self {
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
        Self {
            members,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client"),
            _dir: dir,
        }
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
    ///
    /// # Panics
    /// When it exits at start or does not listen within 10 s, with its log.
    pub fn start(&mut self, i: usize) {
        if let Err(why) = self.try_start(i) {
            panic!("{why}\n{}", self.log_tails(20));
        }
    }

    fn try_start(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].child.is_some() {
            return Ok(());
        }
        let config = self.members[i].config.clone();
        let child = run_nats(&|c| {
            c.arg("-c").arg(&config);
        });
        let m = &mut self.members[i];
        // Held before waiting, so that it is killed on drop whatever happens.
        let child = m.child.insert(child);
        wait_listening(child, m.port, Duration::from_secs(10))
            .map_err(|why| format!("nats-server {}: {why}", m.name))
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
