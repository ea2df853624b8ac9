//! Browser and third-party client tests: the real `herald` binary, driven by Debian's
//! Chromium (playwright-core) and by client libraries nobody here wrote. `scripts/test-deps`
//! installs them; these tests fail (they are never skipped) when they are missing.

mod common;

use common::{ServerGuard, repo, run_bounded};
use herald_test_support::free_port;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Starts `herald serve --memory` with extra `HERALD_*` settings; returns its base URL.
fn start(env: &[(&str, &str)]) -> (ServerGuard, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args([
        "serve",
        "--memory",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("HERALD_LOG__LEVEL", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let guard = ServerGuard(cmd.spawn().expect("start herald"));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, base)
}

#[test]
fn reference_design_snippets_run_in_chromium() {
    let (_server, base) = start(&[]);
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/browser/run.mjs")).arg(&base);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(120));
    println!("{out}");
    assert!(ok, "browser checks failed:\n{out}");
    assert!(!out.contains("FAIL"));
}

#[test]
fn stomp_py_over_tcp_and_websocket() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_server, base) = start(&[("HERALD_STOMP__TCP_LISTEN", &listen)]);
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("tests/clients/stomp_py.py"))
        .arg(&base)
        .arg(port.to_string());
    let (ok, out) = run_bounded(cmd, Duration::from_secs(180));
    println!("{out}");
    assert!(ok, "stomp.py checks failed:\n{out}");
}

#[test]
fn stompjs_over_websocket() {
    let (_server, base) = start(&[]);
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/browser/stompjs_node.mjs"))
        .arg(format!("{}/ws", base.replace("http://", "ws://")));
    let (ok, out) = run_bounded(cmd, Duration::from_secs(60));
    println!("{out}");
    assert!(ok, "@stomp/stompjs check failed:\n{out}");
}
