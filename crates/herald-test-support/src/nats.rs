//! [`NatsServer`]: a `nats-server -js` of the test's own on a free port with its own store
//! directory, stopped by PID when dropped.

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
        };
        s.spawn();
        s
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    fn spawn(&mut self) {
        // Debian installs it in /usr/sbin, which is not on every PATH.
        let run = |bin: &str| {
            Command::new(bin)
                .args(["-js", "-a", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .arg("-sd")
                .arg(self.store())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = run("nats-server")
            .or_else(|_| run("/usr/sbin/nats-server"))
            .expect("nats-server on PATH (scripts/test-deps installs it)");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
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
