//! The `herald` binary from the outside: help, configuration errors and their exit codes, and
//! a round trip `serve` → `publish` → `tail` (poll, SSE, WebSocket) → `bench` (SSE, WebSocket,
//! STOMP, long polling, with the server's PID) → SIGTERM.
//!
//! Every command runs under a timeout, and every process a test starts is killed when the test
//! ends, even when it fails ([`ChildGuard`]).

use herald_test_support::free_port;
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Upper bound for one short command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `herald` with a clean environment (no `HERALD_*` from the caller) and a timeout.
fn herald() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.timeout(COMMAND_TIMEOUT);
    cmd
}

/// The same for a process the test keeps running.
fn herald_process() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Kills the process on drop, so a failing test leaves nothing behind.
struct ChildGuard(Child);

impl ChildGuard {
    /// Waits up to `limit` for the process to exit on its own.
    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one line a failing command wrote to stderr.
fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).into_owned();
    assert_eq!(text.lines().count(), 1, "expected one line, got: {text:?}");
    assert!(text.starts_with("herald: "), "{text:?}");
    text
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn help_lists_the_commands() {
    let out = herald()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "serve", "config", "publish", "tail", "webhooks", "bench", "EXAMPLES",
    ] {
        assert!(text.contains(cmd), "`{cmd}` missing from:\n{text}");
    }
    for cmd in ["serve", "config", "publish", "tail", "webhooks", "bench"] {
        let out = herald()
            .args([cmd, "--help"])
            .assert()
            .success()
            .get_output()
            .clone();
        assert!(
            String::from_utf8(out.stdout).unwrap().contains("EXAMPLES"),
            "`herald {cmd} --help` has no examples"
        );
    }
}

#[test]
fn version() {
    let out = herald()
        .arg("--version")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn config_check_accepts_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    herald()
        .current_dir(dir.path())
        .args(["config", "check"])
        .assert()
        .success()
        .stdout("configuration OK\n");
}

#[test]
fn config_check_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "h.toml", "[limits]\nmax_evnt_bytes = 5\n");
    let out = herald()
        .args(["config", "check", "-c"])
        .arg(&file)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(line.contains("max_evnt_bytes"), "{line}");
    assert!(out.stdout.is_empty());
}

#[test]
fn config_check_rejects_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "h.toml", "[server]\ndurability = \"x\"\n");
    let out = herald()
        .args(["config", "check", "-c"])
        .arg(&file)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(line.contains("server.durability"), "{line}");
}

#[test]
fn config_check_rejects_a_bad_environment_variable() {
    let out = herald()
        .env("HERALD_LIMITS__MAX_EVENT_BYTES", "abc")
        .args(["config", "check"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.to_ascii_lowercase().contains("max_event_bytes"),
        "{line}"
    );
}

#[test]
fn config_check_rejects_a_bad_log_level() {
    let out = herald()
        .env("HERALD_LOG__LEVEL", "loud=very=much")
        .args(["config", "check"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(one_line(&out.stderr).contains("log.level"));
}

#[test]
fn config_check_reports_a_missing_file() {
    let out = herald()
        .args(["config", "check", "-c", "/nonexistent/herald.toml"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(one_line(&out.stderr).contains("/nonexistent/herald.toml"));
}

#[test]
fn config_print_shows_the_effective_values() {
    let out = herald()
        .args(["config", "print"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_event_bytes = 1048576"), "{text}");

    let out = herald()
        .env("HERALD_LIMITS__MAX_EVENT_BYTES", "2048")
        .args(["config", "print"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_event_bytes = 2048"), "{text}");
}

#[test]
fn serve_exits_2_on_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "h.toml", "[server]\nlisten = \"nowhere\"\n");
    let out = herald()
        .current_dir(dir.path())
        .args(["serve", "--memory", "-c"])
        .arg(&file)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(one_line(&out.stderr).contains("server.listen"));
}

#[test]
fn serve_exits_1_when_the_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = herald()
        .current_dir(dir.path())
        .args(["serve", "--memory", "--listen", &addr])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let line = one_line(&out.stderr);
    assert!(
        line.contains("cannot listen on") && line.contains(&addr),
        "{line}"
    );
}

#[test]
fn publish_reports_an_unreachable_server() {
    let port = free_port();
    let out = herald()
        .args(["publish", "a.b", "1", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    one_line(&out.stderr);
}

/// `GET /healthz` answered 200.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
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

/// Starts `herald tail` and returns its first output line (within 10 s).
fn first_tail_line(server: &str, via: &str) -> Value {
    let mut child = ChildGuard(
        herald_process()
            .args([
                "tail", "orders.>", "--after", "0", "--via", via, "--server", server,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("`herald tail --via {via}` printed nothing within 10 s"));
    drop(child); // kills tail, which ends the reader thread
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{via}: not JSON ({e}): {line}"))
}

/// Runs `herald bench --json` against `server` and returns its report.
fn bench(server: &str, args: &[&str]) -> Value {
    let out = herald()
        .args(["bench", "--json", "--server", server])
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn serve_publish_tail_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut serve = ChildGuard(
        herald_process()
            .current_dir(dir.path())
            .args([
                "serve",
                "--memory",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !healthy(port) {
        if let Some(status) = serve.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("herald serve exited with {status}:\n{log}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "herald serve not healthy after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Publish: the receipt is printed.
    let out = herald()
        .args([
            "publish",
            "orders.eu",
            r#"{"n": 1}"#,
            "--event",
            "created",
            "--server",
            &server,
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["topic"], "orders.eu");
    assert_eq!(receipt["event"], "created");
    let id = receipt["id"].as_str().unwrap().to_owned();

    // Text that is not JSON is sent as a string.
    herald()
        .args(["publish", "orders.us", "-", "--server", &server])
        .write_stdin("plain text\n")
        .assert()
        .success();

    // An HTTP error prints the problem detail and exits 1.
    let out = herald()
        .args(["publish", "bad topic", "1", "--server", &server])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(one_line(&out.stderr).contains("400"));

    // Tail from the start, over every transport.
    for via in ["poll", "sse", "ws"] {
        let line = first_tail_line(&server, via);
        assert_eq!(line["id"], id.as_str(), "{via}: {line}");
        assert_eq!(line["event"], "created", "{via}: {line}");
        assert_eq!(line["data"], serde_json::json!({"n": 1}), "{via}: {line}");
        if via != "sse" {
            assert_eq!(line["topic"], "orders.eu", "{via}: {line}");
            assert!(line["time"].is_string(), "{via}: {line}");
        }
    }

    // A small bench over every transport, from two source addresses: everything arrives,
    // once and in order.
    // `--batch`: events published 10 per request over the bench's own HTTP/1.1 connections.
    for (via, events, batch) in [
        ("sse", 50, "1"),
        ("ws", 50, "1"),
        ("stomp", 200, "1"),
        ("sockjs", 200, "1"),
        ("longpoll", 200, "1"),
        ("sse", 200, "10"),
    ] {
        let report = bench(
            &server,
            &[
                "--via",
                via,
                "--subscribers",
                "20",
                "--topics",
                "2",
                "--events",
                &events.to_string(),
                "--batch",
                batch,
                "--topic-prefix",
                &format!("bench_{via}_{batch}"),
                // Two source addresses, 127.0.0.2 and 127.0.0.3.
                "--per-source",
                "10",
            ],
        );
        assert_eq!(report["via"], via, "{report}");
        assert_eq!(report["published"], events, "{via}: {report}");
        assert_eq!(
            report["expected_deliveries"],
            events * 10,
            "{via}: {report}"
        );
        assert_eq!(report["deliveries"], events * 10, "{via}: {report}");
        for k in ["lost", "duplicated", "reordered", "unexpected"] {
            assert_eq!(report[k], 0, "{via}: {k} in {report}");
        }
        assert!(
            report["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert!(report["server_rss_per_conn_bytes"].is_null(), "{report}");
    }

    // With the server's PID: its memory per connection and CPU per delivery, and the
    // bench's own CPU share.
    let pid = serve.0.id().to_string();
    let report = bench(
        &server,
        &[
            "--via",
            "sse",
            "--subscribers",
            "20",
            "--events",
            "100",
            "--hold",
            "0.2",
            "--server-pid",
            &pid,
            "--topic-prefix",
            "bench_pid",
        ],
    );
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["server_pid"].as_u64(), Some(u64::from(serve.0.id())));
    for k in [
        "server_rss_before_bytes",
        "server_rss_connected_bytes",
        "server_rss_end_bytes",
    ] {
        assert!(report[k].as_u64().unwrap() > 1_000_000, "{k} in {report}");
    }
    for k in [
        "server_rss_per_conn_bytes",
        "clock_ticks_per_second",
        "server_cpu_seconds",
        "server_cpu_us_per_delivery",
        "server_cpu_us_per_publish",
        "generator_cpu_share",
        "generator_cpu_share_publishing",
    ] {
        assert!(report[k].is_number(), "{k} in {report}");
    }
    assert_eq!(report["hold_seconds"], 0.2, "{report}");

    // Only connect and hold (idle memory): nothing published, no error.
    let report = bench(
        &server,
        &[
            "--via",
            "stomp",
            "--subscribers",
            "10",
            "--events",
            "0",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(report["published"], 0, "{report}");
    assert!(report["server_rss_per_conn_bytes"].is_number(), "{report}");

    // SIGTERM: a clean exit within 10 s.
    let pid = serve.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = serve
        .wait_timeout(Duration::from_secs(10))
        .expect("herald serve did not exit within 10 s of SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(status.success(), "exit status {status}; log:\n{log}");
}
