//! `herald webhooks ...` from the outside: the real binary against a real `herald serve`
//! delivering to a real local receiver ([`WebhookReceiver`]): add → list → publish →
//! deliveries → retry → test → rotate-secret → disable/enable → rm, and the errors (an
//! unknown id is one line and exit 1, a bad argument is a usage error and exit 2).

mod common;

use std::time::Duration;

use herald_protocol::webhook::{self, StandardHeaders, VerifyKey};
use herald_test_support::{Received, WebhookReceiver};
use serde_json::Value;

/// Upper bound for one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a delivery to arrive or show in the API.
const WAIT: Duration = Duration::from_secs(20);

/// What a finished command did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `herald <args> --server <server>` (no `HERALD_*` from the caller) with a timeout.
fn herald(server: &str, args: &[&str]) -> Run {
    let mut cmd = assert_cmd::Command::from_std(common::herald_command());
    cmd.args(args).args(["--server", server]);
    cmd.timeout(COMMAND_TIMEOUT);
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The same, which must succeed; returns stdout.
fn ok(server: &str, args: &[&str]) -> String {
    let r = herald(server, args);
    assert_eq!(
        r.code,
        Some(0),
        "herald {args:?} failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    r.stdout
}

/// The same with `--json`, parsed.
fn ok_json(server: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(server, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("herald {args:?}: {e}: {out}"))
}

/// The one line a failing command wrote to stderr.
fn one_line(r: &Run) -> &str {
    assert!(r.stdout.is_empty(), "stdout of a failure: {:?}", r.stdout);
    assert_eq!(
        r.stderr.lines().count(),
        1,
        "expected one line: {:?}",
        r.stderr
    );
    assert!(r.stderr.starts_with("herald: "), "{:?}", r.stderr);
    r.stderr.trim_end()
}

/// Polls `herald webhooks deliveries ID --json` until `done` holds.
fn deliveries_until(server: &str, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = ok_json(server, &["webhooks", "deliveries", id]);
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting on the deliveries of {id}: {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The request verifies with `secret` (Standard Webhooks, 5 minutes tolerance).
fn assert_signed(r: &Received, secret: &str) {
    let headers = StandardHeaders::from_lookup(|name| r.header(name)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    webhook::verify(
        &headers,
        &r.body,
        &[VerifyKey::parse(secret).unwrap()],
        now,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("signature does not verify with {secret}: {e}"));
}

#[test]
fn add_list_deliveries_retry_test_and_rm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(WebhookReceiver::ok());
    let (_server, s) = common::serve(
        &["--memory".as_ref()],
        &[("HERALD_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")],
    );
    let s = s.as_str();
    let hook = receiver.url("/hook");

    // add (JSON form): the endpoint view, with its secret.
    let view = ok_json(
        s,
        &[
            "webhooks",
            "add",
            "--url",
            &hook,
            "--topic",
            "orders.>",
            "--topic",
            "refunds.*",
            "--event",
            "created",
            "--header",
            "x-team=pay=ments",
            "--description",
            "from the CLI test",
            "--rate-limit",
            "100",
        ],
    );
    let id = view["id"].as_str().unwrap().to_owned();
    let secret = view["secret"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"), "{view}");
    assert!(secret.starts_with("whsec_"), "{view}");
    assert_eq!(view["topics"], serde_json::json!(["orders.>", "refunds.*"]));
    assert_eq!(view["events"], serde_json::json!(["created"]));
    assert_eq!(view["headers"]["x-team"], "pay=ments");
    assert_eq!(view["rate_limit"], 100);
    assert_eq!(view["enabled"], true);

    // add (human form), ed25519 and disabled: id, URL, public key and the hints.
    let out = ok(
        s,
        &[
            "webhooks",
            "add",
            "--url",
            "http://127.0.0.1:9/never",
            "--topic",
            "audit.>",
            "--ed25519",
            "--disabled",
        ],
    );
    assert!(out.starts_with("created webhook endpoint wh_"), "{out}");
    assert!(out.contains("http://127.0.0.1:9/never"), "{out}");
    assert!(out.contains("whpk_") && out.contains("public key"), "{out}");
    assert!(out.contains("herald webhooks enable wh_"), "{out}");
    let ed_id = out.split_whitespace().nth(3).unwrap().trim().to_owned();
    assert!(ed_id.starts_with("wh_"), "{out}");

    // list: a table with both; the disabled one says so.
    let out = ok(s, &["webhooks", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for col in ["ID", "ENABLED", "URL", "TOPICS"] {
        assert!(lines[0].contains(col), "{out}");
    }
    let row = |id: &str| *lines.iter().find(|l| l.starts_with(id)).unwrap();
    assert!(
        row(&id).contains(" yes ") && row(&id).contains(&hook),
        "{out}"
    );
    assert!(row(&id).contains("orders.>,refunds.*"), "{out}");
    assert!(row(&ed_id).contains(" no "), "{out}");
    let all = ok_json(s, &["webhooks", "list"]);
    assert_eq!(all["webhooks"].as_array().unwrap().len(), 2, "{all}");

    // Publish: the matching event is delivered, signed with the secret; the other type is
    // filtered out by --event.
    ok(
        s,
        &["publish", "orders.eu", r#"{"n": 1}"#, "--event", "other"],
    );
    let receipt: Value = serde_json::from_str(&ok(
        s,
        &["publish", "orders.eu", r#"{"n": 2}"#, "--event", "created"],
    ))
    .unwrap();
    let event_id = receipt["id"].as_str().unwrap().to_owned();
    let got = rt.block_on(receiver.wait_for(1, WAIT));
    let first = &got[0];
    assert_eq!(first.path, "/hook");
    let msg_id = format!("msg_{event_id}");
    assert_eq!(first.header("webhook-id"), Some(msg_id.as_str()));
    assert_eq!(first.header("x-team"), Some("pay=ments"));
    assert_eq!(first.json()["data"]["n"], 2);
    assert_signed(first, &secret);

    // deliveries: succeeded after one attempt, shown in the table.
    let list = deliveries_until(s, &id, |l| l.len() == 1 && l[0]["status"] == "succeeded");
    let delivery = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["event_id"], event_id.as_str());
    assert_eq!(list[0]["msg_id"], msg_id.as_str());
    let out = ok(s, &["webhooks", "deliveries", &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for col in ["ID", "EVENT ID", "STATUS", "ATTEMPTS", "LAST RESULT"] {
        assert!(lines[0].contains(col), "{out}");
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            delivery.as_str(),
            event_id.as_str(),
            "succeeded",
            "1",
            "HTTP",
            "200"
        ],
        "{out}"
    );
    let failed = ok(s, &["webhooks", "deliveries", &id, "--status", "failed"]);
    assert!(failed.starts_with("no deliveries"), "{failed}");

    // retry: the same message again (same webhook-id), a second attempt.
    let out = ok(s, &["webhooks", "retry", &id, &delivery]);
    assert!(out.contains(&delivery), "{out}");
    let got = rt.block_on(receiver.wait_for(2, WAIT));
    assert_eq!(got[1].header("webhook-id"), Some(msg_id.as_str()));
    assert_signed(&got[1], &secret);
    deliveries_until(s, &id, |l| {
        l.len() == 1
            && l[0]["status"] == "succeeded"
            && l[0]["attempts"].as_array().is_some_and(|a| a.len() == 2)
    });

    // test: a herald.test message to this endpoint only.
    let v = ok_json(s, &["webhooks", "test", &id]);
    assert!(v["msg_id"].as_str().unwrap().starts_with("msg_"), "{v}");
    let got = rt.block_on(receiver.wait_for(3, WAIT));
    assert_eq!(got[2].header("x-webhook-event"), Some("herald.test"));
    assert_eq!(got[2].header("webhook-id"), v["msg_id"].as_str());

    // rotate-secret: a new secret; the old one still signs during the overlap.
    let out = ok(s, &["webhooks", "rotate-secret", &id]);
    assert!(
        out.contains("whsec_") && out.contains("previous key"),
        "{out}"
    );
    let rotated = ok_json(s, &["webhooks", "show", &id]);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(out.contains(&new_secret), "{out}");
    ok(s, &["webhooks", "test", &id]);
    let got = rt.block_on(receiver.wait_for(4, WAIT));
    assert_signed(&got[3], &new_secret);
    assert_signed(&got[3], &secret);

    // show: pretty JSON.
    let out = ok(s, &["webhooks", "show", &id]);
    assert!(out.lines().count() > 5, "not pretty: {out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], id.as_str());

    // disable / enable.
    let out = ok(s, &["webhooks", "disable", &id]);
    assert!(out.starts_with("disabled webhook endpoint"), "{out}");
    assert_eq!(ok_json(s, &["webhooks", "show", &id])["enabled"], false);
    let v = ok_json(s, &["webhooks", "enable", &id]);
    assert_eq!(v["enabled"], true, "{v}");

    // recover: nothing failed.
    let v = ok_json(
        s,
        &[
            "webhooks",
            "recover",
            &id,
            "--since",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert_eq!(v["recovered"], 0, "{v}");

    // rm: gone from the list; its id is unknown from then on.
    let out = ok(s, &["webhooks", "rm", &id]);
    assert!(out.contains(&id), "{out}");
    let all = ok_json(s, &["webhooks", "list"]);
    let ids: Vec<&str> = all["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, [ed_id.as_str()]);
    for args in [
        vec!["webhooks", "show", id.as_str()],
        vec!["webhooks", "rm", id.as_str()],
        vec!["webhooks", "deliveries", id.as_str()],
        vec!["webhooks", "enable", id.as_str()],
        vec!["webhooks", "retry", id.as_str(), delivery.as_str()],
        vec!["webhooks", "test", id.as_str(), "--json"],
    ] {
        let r = herald(s, &args);
        assert_eq!(r.code, Some(1), "{args:?}: {}{}", r.stdout, r.stderr);
        let line = one_line(&r);
        assert!(
            line.contains("404") && line.contains("no webhook endpoint") && line.contains(&id),
            "{args:?}: {line}"
        );
    }
    let out = ok(s, &["webhooks", "rm", &ed_id, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(ok(s, &["webhooks", "list"]).trim(), "no webhook endpoints");
}

#[test]
fn webhooks_errors_are_one_line_with_the_right_exit_code() {
    let (_server, s) = common::serve(&["--memory".as_ref()], &[]);
    let s = s.as_str();

    // Usage errors (clap): exit 2, before anything is sent.
    for args in [
        vec![
            "webhooks",
            "add",
            "--url",
            "http://x/",
            "--topic",
            "a",
            "--header",
            "nonsense",
        ],
        vec![
            "webhooks",
            "add",
            "--url",
            "http://x/",
            "--topic",
            "a",
            "--header",
            "=v",
        ],
        vec!["webhooks", "add", "--url", "http://x/"],
        vec![
            "webhooks",
            "add",
            "--url",
            "http://x/",
            "--topic",
            "a",
            "--rate-limit",
            "0",
        ],
        vec!["webhooks", "deliveries", "wh_x", "--status", "lost"],
        vec!["webhooks", "deliveries", "wh_x", "--limit", "0"],
        vec!["webhooks", "show", ""],
        vec!["webhooks", "retry", "wh_x"],
        vec!["webhooks", "recover", "wh_x"],
    ] {
        let r = herald(s, &args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    }
    let r = herald(
        s,
        &[
            "webhooks",
            "add",
            "--url",
            "http://x/",
            "--topic",
            "a",
            "--header",
            "nonsense",
        ],
    );
    assert!(r.stderr.contains("NAME=VALUE"), "{}", r.stderr);

    // The server refuses: exit 1, one line with its explanation.
    let cases: [(&[&str], &[&str]); 3] = [
        (&["webhooks", "show", "wh_nope"], &["404", "wh_nope"]),
        (
            &["webhooks", "add", "--url", "ftp://x/", "--topic", "a"],
            &["422", "url"],
        ),
        (
            &["webhooks", "add", "--url", "http://x/", "--topic", "a..b"],
            &["422"],
        ),
    ];
    for (args, want) in cases {
        let r = herald(s, args);
        assert_eq!(r.code, Some(1), "{args:?}: {}{}", r.stdout, r.stderr);
        let line = one_line(&r);
        for w in want {
            assert!(line.contains(w), "{args:?}: {line}");
        }
    }
    // An unknown delivery of a known endpoint names the delivery.
    let v = ok_json(
        s,
        &[
            "webhooks",
            "add",
            "--url",
            "http://x.invalid/",
            "--topic",
            "a",
        ],
    );
    let id = v["id"].as_str().unwrap();
    let r = herald(s, &["webhooks", "retry", id, "999"]);
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r).contains("999"), "{}", r.stderr);
    // A time that is not RFC 3339.
    let r = herald(s, &["webhooks", "recover", id, "--since", "yesterday"]);
    assert_eq!(r.code, Some(1));
    let line = one_line(&r);
    assert!(line.contains("422") && line.contains("yesterday"), "{line}");

    // An unreachable server: exit 1, one line.
    let port = common::free_port();
    let r = herald(&format!("http://127.0.0.1:{port}"), &["webhooks", "list"]);
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r).contains("listing"), "{}", r.stderr);

    // Every webhooks command has examples in its help.
    for cmd in [
        "add",
        "list",
        "show",
        "rm",
        "enable",
        "disable",
        "deliveries",
        "retry",
        "recover",
        "test",
        "rotate-secret",
    ] {
        let r = herald(s, &["webhooks", cmd, "--help"]);
        assert_eq!(r.code, Some(0), "{cmd}: {}", r.stderr);
        assert!(
            r.stdout.contains("EXAMPLES"),
            "`herald webhooks {cmd} --help`"
        );
        assert!(
            r.stdout.contains("--json"),
            "`herald webhooks {cmd} --help`"
        );
    }
}

#[test]
fn webhooks_commands_send_the_token_and_need_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[[auth.keys]]\nkey = \"admin-key-for-tests-0123456789\"\npublish = [\">\"]\n\
         subscribe = [\">\"]\nadmin = true\n\n\
         [[auth.keys]]\nkey = \"plain-key-for-tests-0123456789\"\npublish = [\">\"]\n\
         subscribe = [\">\"]\nadmin = false\n",
    )
    .unwrap();
    let (_server, s) = common::serve(&["--memory".as_ref(), "-c".as_ref(), config.as_ref()], &[]);
    let s = s.as_str();

    let r = herald(s, &["webhooks", "list"]);
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r).contains("401"), "{}", r.stderr);
    let r = herald(
        s,
        &[
            "webhooks",
            "list",
            "--token",
            "plain-key-for-tests-0123456789",
        ],
    );
    assert_eq!(r.code, Some(1));
    let line = one_line(&r);
    assert!(line.contains("403") && line.contains("admin"), "{line}");
    let out = ok(
        s,
        &[
            "webhooks",
            "list",
            "--token",
            "admin-key-for-tests-0123456789",
        ],
    );
    assert_eq!(out.trim(), "no webhook endpoints");
    // HERALD_TOKEN works as well as --token.
    let mut cmd = assert_cmd::Command::from_std(common::herald_command());
    cmd.args(["webhooks", "list", "--json", "--server", s])
        .env("HERALD_TOKEN", "admin-key-for-tests-0123456789")
        .timeout(COMMAND_TIMEOUT);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["webhooks"], serde_json::json!([]));
}
