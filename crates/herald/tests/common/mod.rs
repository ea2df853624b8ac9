//! Helpers shared by the tests that drive the real binary with outside programs.
#![allow(dead_code)]

pub(crate) use herald_test_support::free_port;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Kills the server on drop, so a failing test leaves nothing behind.
pub(crate) struct ServerGuard(pub(crate) Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a program with a time limit; returns (success, combined output).
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/test-deps)"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                false,
                format!("timed out\n{}", String::from_utf8_lossy(&out.stdout)),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `herald` binary without the caller's `HERALD_*` or `RUST_LOG` settings.
pub(crate) fn herald_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `GET /healthz` on this port answered 200.
pub(crate) fn healthy(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Starts `herald serve --listen 127.0.0.1:<port> <args>` with `env` (logs at `warn` to
/// stderr) and waits until it is healthy; returns it and its base URL.
pub(crate) fn serve_on(
    port: u16,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (ServerGuard, String) {
    let mut cmd = herald_command();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("HERALD_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut guard = ServerGuard(cmd.spawn().expect("start herald"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("herald serve exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "herald serve not healthy after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

/// [`serve_on`] a free port.
pub(crate) fn serve(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (ServerGuard, String) {
    serve_on(free_port(), args, env)
}
