//! Test helpers: a real Herald server in-process on `127.0.0.1:0` with its own temp data
//! directory and cancellation token.
//!
//! # Layout
//! - [`TestServer`]: spawn, URLs, a client, restart on the same data, clean stop.
//! - [`NatsServer`]: a `nats-server -js` process of the test's own.
//! - [`free_port`]: a port for a server process of the test's own.
//! - [`WebhookReceiver`]: a recording, scriptable HTTP receiver for outbound webhooks.

mod nats;
mod ports;
mod receiver;

pub use nats::{NatsCluster, NatsServer};
pub use ports::free_port;
pub use receiver::{Answer, Received, WebhookReceiver};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use herald_server::config::{Config, RawConfig};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    tweak: fn(&mut RawConfig),
    /// Cluster mode: the NATS URL.
    nats: Option<String>,
    /// The NATS server this test server started for itself (`HERALD_TEST_BACKEND=nats`).
    own_nats: Option<Arc<NatsServer>>,
}

/// Environment variable that runs every [`TestServer`] on NATS JetStream instead of SQLite:
/// `HERALD_TEST_BACKEND=nats` (each server gets a `nats-server -js` of its own).
pub const BACKEND_ENV: &str = "HERALD_TEST_BACKEND";

/// Whether the tests run on NATS JetStream (see [`BACKEND_ENV`]).
pub fn on_nats() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v == "nats")
}

fn no_tweak(_: &mut RawConfig) {}

impl TestServer {
    /// A server on a fresh SQLite store in a temp dir, default configuration.
    pub async fn spawn() -> Self {
        Self::spawn_with(no_tweak).await
    }

    /// A server with configuration changed by `tweak` (on top of the defaults).
    pub async fn spawn_with(tweak: fn(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut s = Self::start(&data_dir, tweak).await;
        s.dir = Some(dir);
        s
    }

    /// A server on an existing data directory (not removed at the end).
    pub async fn spawn_in(data_dir: &Path, tweak: fn(&mut RawConfig)) -> Self {
        Self::start(data_dir, tweak).await
    }

    /// A cluster node on the NATS server at `nats_url` (stream `HERALD`), configured by
    /// `tweak`. Its temp data directory only holds what a node keeps locally (nothing yet).
    pub async fn spawn_node(nats_url: &str, tweak: fn(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut s = Self::start_as(&data_dir, tweak, Some(nats_url.to_owned())).await;
        s.dir = Some(dir);
        s
    }

    async fn start(data_dir: &Path, tweak: fn(&mut RawConfig)) -> Self {
        if on_nats() {
            let nats = Arc::new(NatsServer::start());
            let mut s = Self::start_as(data_dir, tweak, Some(nats.url())).await;
            s.own_nats = Some(nats);
            return s;
        }
        Self::start_as(data_dir, tweak, None).await
    }

    async fn start_as(data_dir: &Path, tweak: fn(&mut RawConfig), nats: Option<String>) -> Self {
        let mut raw = Config::defaults().expect("default config").raw;
        raw.server.data_dir = data_dir.to_path_buf();
        raw.server.listen = "127.0.0.1:0".into();
        raw.server.shutdown_grace = "5s".into();
        raw.server.durability = "batch".into();
        raw.cluster.nats_url = nats.clone();
        tweak(&mut raw);
        let config = Config::validate(raw).expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let token = CancellationToken::new();
        let mut task = tokio::spawn(herald_server::run(config, listener, token.clone()));
        if nats.is_some() {
            // A cluster node opens its log over the network: wait until it serves, and say why
            // when it cannot start (instead of a later "connection refused").
            let client = reqwest::Client::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if task.is_finished() {
                    let outcome = (&mut task).await;
                    panic!("the cluster node did not start: {outcome:?}");
                }
                let url = format!("http://{addr}/healthz");
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster node did not answer /healthz within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Self {
            addr,
            token,
            task: Some(task),
            dir: None,
            data_dir: data_dir.to_path_buf(),
            tweak,
            nats,
            own_nats: None,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A plain HTTP client.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// Cancels the server and asserts it shut down cleanly within 15 s.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server did not stop within 15 s");
            r.expect("server task panicked")
                .expect("server returned an error");
        }
    }

    /// Stops the server and starts a new one on the same data directory and configuration
    /// (a new port).
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let mut next = Self::start_as(&self.data_dir, self.tweak, self.nats.clone()).await;
        next.dir = self.dir.take();
        next.own_nats = self.own_nats.take();
        next
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
