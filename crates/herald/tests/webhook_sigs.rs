//! Webhook signatures against third-party libraries: Herald's signer
//! (`herald_protocol::webhook`) must produce what the Standard Webhooks reference library
//! (`standardwebhooks`) and GitHub's `@octokit/webhooks-methods` verify, the real
//! `herald` binary's `[[inbound]]` receivers must accept what those libraries sign, and the
//! deliveries the real binary sends (outbound, SPEC 7.1) must verify with those libraries in a
//! Node receiver.
//! `tests/browser/webhook_sigs.mjs` and `tests/node/webhook_receiver.mjs` (in this crate) do
//! the checking; `scripts/test-deps` installs the npm packages, and these tests fail (they are
//! never skipped) when they are missing.

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

/// The Node receiver of `tests/node/webhook_receiver.mjs`, running; its output lines (one per
/// delivery) arrive on `lines`.
struct NodeReceiver {
    _process: ServerGuard,
    /// `http://127.0.0.1:<port>`.
    base: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

/// Starts the Node receiver. The npm project is `tests/browser` at the repository root, and
/// Node resolves bare imports from the script's own directory, so a copy of the script runs
/// next to a `node_modules` link to that project's.
async fn start_node_receiver() -> NodeReceiver {
    let modules = repo().join("tests/browser/node_modules");
    for package in ["standardwebhooks", "@octokit/webhooks-methods"] {
        assert!(
            modules.join(package).join("package.json").exists(),
            "npm package {package} missing from {} (run scripts/test-deps)",
            modules.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).unwrap();
    let script = dir.path().join("webhook_receiver.mjs");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/webhook_receiver.mjs"),
        &script,
    )
    .unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (run scripts/test-deps)"));
    let stdout = child.stdout.take().unwrap();
    let process = ServerGuard(child);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await
        .expect("the Node receiver did not start within 20 s")
        .expect("the Node receiver exited");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let port = v["listening"]
        .as_u64()
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    NodeReceiver {
        _process: process,
        base: format!("http://127.0.0.1:{port}"),
        lines,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_deliveries_verify_with_standardwebhooks_and_octokit() {
    use serde_json::Value;

    let mut receiver = start_node_receiver().await;
    let (_server, base) = common::serve(
        &["--memory".as_ref()],
        &[("HERALD_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let mut req = http.request(method.clone(), &url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(status.is_success(), "{method} {url}: {status} {text}");
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }
    };
    let create = |path: &str, extra: Value| {
        let mut body = json!({"url": format!("{}{path}", receiver.base), "topics": ["sigs.>"]});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        call(reqwest::Method::POST, "/api/v1/webhooks".into(), Some(body))
    };

    // 1. A generated HMAC secret.
    let plain = create("/hmac", json!({})).await;
    let plain_secret = plain["secret"].as_str().unwrap().to_owned();
    // 2. A secret chosen by the client: 64 random bytes, the longest Herald hands out.
    let chosen = Secret::generate_len(64).unwrap().to_whsec();
    let custom = create("/chosen", json!({"secret": chosen})).await;
    assert_eq!(custom["secret"], chosen.as_str());
    // 3. A rotated secret: both signatures are sent during the overlap, and each must verify
    //    with its own secret.
    let rotated = create("/rotated", json!({})).await;
    let old_secret = rotated["secret"].as_str().unwrap().to_owned();
    let rotated_id = rotated["id"].as_str().unwrap().to_owned();
    let after = call(
        reqwest::Method::POST,
        format!("/api/v1/webhooks/{rotated_id}/secret/rotate"),
        None,
    )
    .await;
    let new_secret = after["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(after["previous_secret_expires"].is_string(), "{after}");
    // 4. ed25519: `v1a` signatures, checked with the `whpk_` public key.
    let ed = create("/ed25519", json!({"signing": "ed25519"})).await;
    let public_key = ed["public_key"].as_str().unwrap().to_owned();
    assert!(ed.get("secret").is_none(), "{ed}");

    let routes = json!({
        "/hmac": {"standard": [plain_secret], "v1": 1, "github": plain_secret},
        "/chosen": {"standard": [chosen], "v1": 1, "github": chosen},
        // x-hub-signature-256 is keyed by the current secret only.
        "/rotated": {"standard": [new_secret, old_secret], "v1": 2, "github": new_secret},
        "/ed25519": {"ed25519": [public_key], "v1": 0, "github": null},
    });
    let r = http
        .put(format!("{}/_routes", receiver.base))
        .json(&routes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Bodies that are easy to get wrong: non-ASCII, escapes, a large one, null data.
    let events = [
        json!({"event": "created", "data": {"name": "Zoë", "note": "ünïcödé ✓ 🎉", "n": 1}}),
        json!({"data": "line 1\nline 2\t\"quoted\" \\ back / slash </script>"}),
        json!({"event": "bulk", "data": {"blob": "x".repeat(200_000), "list": [1, 2.5, -3e10, true, null]}}),
        json!({"event": "deleted", "data": null}),
    ];
    let mut expected: std::collections::HashSet<(String, String)> = Default::default();
    let paths = ["/hmac", "/chosen", "/rotated", "/ed25519"];
    for (i, e) in events.iter().enumerate() {
        let receipt = call(
            reqwest::Method::POST,
            format!("/api/v1/topics/sigs.t{i}/events"),
            Some(e.clone()),
        )
        .await;
        let id = receipt["id"].as_str().unwrap();
        for p in paths {
            expected.insert((p.to_owned(), format!("msg_{id}")));
        }
    }
    // And each endpoint's `herald.test` message.
    let ids = [&plain, &custom, &rotated, &ed].map(|v| v["id"].as_str().unwrap().to_owned());
    for (p, id) in paths.iter().zip(&ids) {
        let v = call(
            reqwest::Method::POST,
            format!("/api/v1/webhooks/{id}/test"),
            None,
        )
        .await;
        expected.insert(((*p).to_owned(), v["msg_id"].as_str().unwrap().to_owned()));
    }

    // Every delivery is checked by the receiver; none may fail.
    let mut seen: Vec<String> = Vec::new();
    let mut verified: std::collections::HashSet<(String, String)> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&verified) {
        let line = tokio::time::timeout_at(deadline, receiver.lines.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "gave up: {} of {} deliveries verified; receiver said:\n{}",
                    verified.len(),
                    expected.len(),
                    seen.join("\n")
                )
            })
            .expect("the Node receiver exited");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "a delivery failed the checks: {line}");
        let key = (
            v["path"].as_str().unwrap_or_default().to_owned(),
            v["id"].as_str().unwrap_or_default().to_owned(),
        );
        seen.push(line);
        verified.insert(key);
    }
    // What was checked, once per kind of endpoint.
    for p in paths {
        if let Some(line) = seen
            .iter()
            .find(|l| l.contains(&format!("\"path\":\"{p}\"")))
        {
            let v: Value = serde_json::from_str(line).unwrap();
            println!("{p}: {}", v["passed"]);
        }
    }

    // The receiver answered 200 only after verifying: the deliveries API agrees.
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = call(
                reqwest::Method::GET,
                format!("/api/v1/webhooks/{id}/deliveries"),
                None,
            )
            .await;
            let list = v["deliveries"].as_array().unwrap();
            if list.len() == events.len() + 1 && list.iter().all(|d| d["status"] == "succeeded") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries of {id} not all succeeded: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
