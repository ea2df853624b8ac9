//! Webhook signatures against third-party libraries: Herald's signer
//! (`herald_protocol::webhook`) must produce what the Standard Webhooks reference library
//! (`standardwebhooks`) and GitHub's `@octokit/webhooks-methods` verify, and the real
//! `herald` binary's `[[inbound]]` receivers must accept what those libraries sign.
//! `tests/browser/webhook_sigs.mjs` does the checking; `scripts/test-deps` installs the npm
//! packages, and this test fails (it is never skipped) when they are missing.

mod common;

use common::{ServerGuard, repo, run_bounded};

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use herald_protocol::webhook::{self, Secret, Signer};
use serde_json::json;

/// Starts `herald serve --memory -c <config>`; returns its base URL.
fn start(config: &std::path::Path) -> (ServerGuard, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--memory",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-c")
        .arg(config)
        .env("HERALD_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start herald");
    let mut guard = ServerGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("herald exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn signatures_interoperate_with_standardwebhooks_and_octokit() {
    // A freshly generated secret: the format Herald hands out must work in the libraries.
    let secret = Secret::generate().unwrap();
    let whsec = secret.to_whsec();
    let github_secret = format!("gh-{}", &whsec[6..22]);
    let ts = unix_now();
    let body = r#"{"type":"user.created","data":{"id":"u_1","name":"Zoë"}}"#;
    let ours = Signer::Hmac(secret.clone());
    let rotated = Signer::Hmac(Secret::generate().unwrap());
    let gh = Secret::raw(&github_secret).unwrap();
    let samples = json!({
        "standard_secret": whsec,
        "github_secret": github_secret,
        "standard": {
            "single": {
                "id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                "timestamp": ts,
                "body": body,
                "signature": webhook::sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, body.as_bytes(), std::slice::from_ref(&ours)),
            },
            "rotation": {
                "id": "msg_rotation",
                "timestamp": ts,
                "body": "{\"a\": [1, 2, 3]}",
                "signature": webhook::sign("msg_rotation", ts, b"{\"a\": [1, 2, 3]}", &[rotated, ours]),
            },
        },
        "github": [
            { "body": body, "signature": webhook::github_signature(&gh, body.as_bytes()) },
            { "body": "{}", "signature": webhook::github_signature(&gh, b"{}") },
        ],
    });
    let dir = tempfile::tempdir().unwrap();
    let samples_path = dir.path().join("samples.json");
    std::fs::write(&samples_path, samples.to_string()).unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[[inbound]]\nname = \"std\"\nkind = \"standard\"\nsecret = \"{}\"\n\n\
             [[inbound]]\nname = \"github\"\nkind = \"github\"\nsecret = \"{}\"\n",
            samples["standard_secret"].as_str().unwrap(),
            samples["github_secret"].as_str().unwrap(),
        ),
    )
    .unwrap();

    let (_server, base) = start(&config);
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/browser/webhook_sigs.mjs"))
        .arg(&base)
        .arg(&samples_path);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(60));
    println!("{out}");
    assert!(ok, "webhook signature checks failed:\n{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("all webhook signature checks passed"), "{out}");
}
