//! Outbound webhooks through the whole server (SPEC 7.1): the endpoint API, deliveries written
//! with the event in SQLite, sent to real local receivers, recorded attempts, manual retry,
//! recover, the test message, the SSRF guard, 410 disabling, metrics and admin-only access.

use std::time::Duration;

use herald_protocol::webhook::{self, Secret, VerifyKey};
use herald_server::config::RawConfig;
use herald_test_support::{Answer, TestServer, WebhookReceiver};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{T, assert_problem, get_json, publish_data};

/// One request with an optional JSON body.
async fn call(
    srv: &TestServer,
    method: &str,
    path: impl AsRef<str>,
    body: Option<Value>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = srv.http().request(method, srv.url(path.as_ref()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

fn now_s() -> i64 {
    herald_core::event::now_ms() / 1000
}

fn fast(c: &mut RawConfig) {
    c.webhooks.allow_private_targets = true;
    c.webhooks.retry_schedule = vec!["50ms".into(), "50ms".into(), "50ms".into()];
    c.webhooks.timeout = "2s".into();
}

fn guarded(c: &mut RawConfig) {
    fast(c);
    c.webhooks.allow_private_targets = false;
}

async fn create(srv: &TestServer, body: Value) -> Value {
    let r = call(srv, "POST", "/api/v1/webhooks", Some(body)).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

/// Polls the deliveries API until `done` holds (bounded).
async fn deliveries_until(
    srv: &TestServer,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let v = get_json(srv, &format!("/api/v1/webhooks/{id}/deliveries")).await;
        let list = v["deliveries"].as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn endpoint_api_validates_and_round_trips() {
    let srv = TestServer::spawn_with(fast).await;
    let v = create(
        &srv,
        json!({"url": "http://127.0.0.1:9/x", "topics": ["orders.>"], "events": ["paid"],
               "description": "d", "headers": {"x-team": "a"}, "rate_limit": 5}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"), "{v}");
    let secret = v["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{v}");
    Secret::parse(secret).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["rate_limit"], 5);

    let got = get_json(&srv, &format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(got["url"], "http://127.0.0.1:9/x");
    let all = get_json(&srv, "/api/v1/webhooks").await;
    assert_eq!(all["webhooks"].as_array().unwrap().len(), 1);

    let patch = |body: Value| {
        let srv = &srv;
        let id = id.clone();
        async move { call(srv, "PATCH", &format!("/api/v1/webhooks/{id}"), Some(body)).await }
    };
    let r = patch(json!({"enabled": false, "rate_limit": null, "topics": ["a.*"]})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["enabled"], false);
    assert_eq!(v["rate_limit"], Value::Null);
    assert_eq!(v["topics"], json!(["a.*"]));

    // Bad input: 422 for a well-formed but invalid body, 400 for malformed JSON, 404.
    for bad in [
        json!({"url": "ftp://x/y", "topics": [">"]}),
        json!({"url": "not a url", "topics": [">"]}),
        json!({"url": "http://h/", "topics": []}),
        json!({"url": "http://h/", "topics": ["a..b"]}),
        json!({"url": "http://h/", "topics": [">"], "events": ["has space"]}),
        json!({"url": "http://h/", "topics": [">"], "secret": "whsec_!!"}),
        json!({"url": "http://h/", "topics": [">"], "secret": "whsec_YQ=="}),
        json!({"url": "http://h/", "topics": [">"], "headers": {"webhook-signature": "x"}}),
        json!({"url": "http://h/", "topics": [">"], "rate_limit": 0}),
        json!({"url": "http://h/", "topics": [">"], "colour": "red"}),
        json!({"topics": [">"]}),
    ] {
        let r = call(&srv, "POST", "/api/v1/webhooks", Some(bad)).await;
        assert_problem(r, 422).await;
    }
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    assert_problem(patch(json!({"secret": 3})).await, 422).await;
    assert_problem(patch(json!({"bogus": 1})).await, 422).await;
    let r = call(&srv, "GET", "/api/v1/webhooks/wh_nope", None).await;
    assert_problem(r, 404).await;
    let r = call(
        &srv,
        "GET",
        &format!("/api/v1/webhooks/{id}/deliveries?status=lost"),
        None,
    )
    .await;
    assert_problem(r, 400).await;

    let r = call(&srv, "DELETE", &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(&srv, "DELETE", &format!("/api/v1/webhooks/{id}"), None).await;
    assert_problem(r, 404).await;
    srv.stop().await;
}

#[tokio::test]
async fn events_are_delivered_signed_and_retried_until_they_succeed() {
    // Fails twice, then succeeds.
    let rx = WebhookReceiver::scripted(|n, _| {
        if n < 2 {
            Answer::Status(500, vec![], "not yet".into())
        } else {
            Answer::ok()
        }
    })
    .await;
    let srv = TestServer::spawn_with(fast).await;
    let ep = create(
        &srv,
        json!({"url": rx.url("/hook"), "topics": ["orders.>"], "headers": {"x-team": "blue"}}),
    )
    .await;
    let id = ep["id"].as_str().unwrap();
    let secret = ep["secret"].as_str().unwrap().to_owned();
    publish_data(&srv, "users.x", json!("not for this endpoint")).await;
    let event_id = publish_data(&srv, "orders.eu", json!({"n": 1})).await;

    let got = rx.wait_for(3, T).await;
    let msg = format!("msg_{event_id}");
    for r in &got {
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.header("webhook-id"),
            Some(msg.as_str()),
            "same id every attempt"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-webhook-event"), Some("message"));
        assert_eq!(r.header("x-team"), Some("blue"));
        assert!(r.header("user-agent").unwrap().starts_with("herald/"));
        let key = VerifyKey::parse(&secret).unwrap();
        let headers = webhook::StandardHeaders::from_lookup(|h| r.header(h)).unwrap();
        webhook::verify(
            &headers,
            &r.body,
            &[key],
            now_s(),
            webhook::DEFAULT_TOLERANCE,
        )
        .unwrap();
        webhook::verify_github(
            &Secret::raw(&secret).unwrap(),
            &r.body,
            r.header("x-hub-signature-256").unwrap(),
        )
        .unwrap();
        let body = r.json();
        assert_eq!(body["id"], event_id.to_string());
        assert_eq!(body["topic"], "orders.eu");
        assert_eq!(body["event"], "message");
        assert_eq!(body["data"], json!({"n": 1}));
        assert!(body["time"].as_str().unwrap().ends_with('Z'));
    }
    let list = deliveries_until(&srv, id, |l| l.len() == 1 && l[0]["status"] == "succeeded").await;
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["response_body"], "not yet");
    assert_eq!(attempts[2]["status_code"], 200);
    assert_eq!(list[0]["event_id"], event_id.to_string());

    let metrics = call(&srv, "GET", "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_webhook_attempts_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_webhook_attempts_total{outcome=\"retried\"} 2"));
    assert!(metrics.contains("herald_webhook_attempt_seconds_count 3"));
    srv.stop().await;
}

#[tokio::test]
async fn exhausted_deliveries_fail_and_can_be_retried_and_recovered() {
    let rx = WebhookReceiver::scripted(|_, r| {
        // Healthy only once the test flips the switch via a marker header in the body.
        if r.json()["data"]["ok"] == true {
            Answer::ok()
        } else {
            Answer::status(503)
        }
    })
    .await;
    let srv = TestServer::spawn_with(fast).await;
    let ep = create(&srv, json!({"url": rx.url("/"), "topics": ["jobs"]})).await;
    let id = ep["id"].as_str().unwrap();
    publish_data(&srv, "jobs", json!({"ok": false})).await;
    publish_data(&srv, "jobs", json!({"ok": false})).await;
    // 1 attempt + 3 retries each, then failed.
    let list = deliveries_until(&srv, id, |l| {
        l.len() == 2 && l.iter().all(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(list[0]["attempts"].as_array().unwrap().len(), 4);
    let failed = get_json(
        &srv,
        &format!("/api/v1/webhooks/{id}/deliveries?status=failed"),
    )
    .await;
    assert_eq!(failed["deliveries"].as_array().unwrap().len(), 2);
    let first = list[0]["id"].as_str().unwrap().to_owned();

    // Manual retry: one more attempt (still failing), then failed again.
    let before = rx.received().len();
    let r = call(
        &srv,
        "POST",
        &format!("/api/v1/webhooks/{id}/deliveries/{first}/retry"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    rx.wait_for(before + 1, T).await;
    deliveries_until(&srv, id, |l| {
        l[0]["attempts"].as_array().unwrap().len() == 5 && l[0]["status"] == "failed"
    })
    .await;
    assert_eq!(
        rx.received().len(),
        before + 1,
        "a manual retry is one attempt"
    );
    let r = call(
        &srv,
        "POST",
        &format!("/api/v1/webhooks/{id}/deliveries/999999/retry"),
        None,
    )
    .await;
    assert_problem(r, 404).await;

    // Recover since a time: every failed delivery is sent again.
    let r = call(
        &srv,
        "POST",
        &format!("/api/v1/webhooks/{id}/recover"),
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["recovered"], 2);
    rx.wait_for(before + 3, T).await;
    let r = call(
        &srv,
        "POST",
        &format!("/api/v1/webhooks/{id}/recover"),
        Some(json!({"since": "yesterday"})),
    )
    .await;
    assert_problem(r, 422).await;

    // The test message goes to this endpoint only, typed herald.test.
    let r = call(&srv, "POST", &format!("/api/v1/webhooks/{id}/test"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = rx.wait_for(before + 4, T).await;
    let test = got
        .iter()
        .find(|r| r.header("x-webhook-event") == Some("herald.test"))
        .expect("test message");
    assert!(test.header("webhook-id").unwrap().starts_with("msg_test_"));
    srv.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_reenabling_resumes() {
    let rx = WebhookReceiver::scripted(|_, _| Answer::status(410)).await;
    let srv = TestServer::spawn_with(fast).await;
    let ep = create(&srv, json!({"url": rx.url("/"), "topics": ["t"]})).await;
    let id = ep["id"].as_str().unwrap();
    publish_data(&srv, "t", json!(1)).await;
    deliveries_until(&srv, id, |l| l.len() == 1 && l[0]["status"] == "failed").await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let v = get_json(&srv, &format!("/api/v1/webhooks/{id}")).await;
        if v["enabled"] == false {
            assert!(
                v["disabled_reason"].as_str().unwrap().contains("410"),
                "{v}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rx.received().len(), 1, "410 is not retried");
    // Disabled: new events make no delivery.
    publish_data(&srv, "t", json!(2)).await;
    let v = get_json(&srv, &format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 1);
    let r = call(
        &srv,
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["disabled_reason"], Value::Null);
    srv.stop().await;
}

#[tokio::test]
async fn private_targets_are_refused_at_connect_time() {
    let rx = WebhookReceiver::ok().await;
    let srv = TestServer::spawn_with(guarded).await;
    let by_ip = create(&srv, json!({"url": rx.url("/"), "topics": ["t"]})).await;
    let by_name = create(
        &srv,
        json!({"url": format!("http://localhost:{}/", rx.addr.port()), "topics": ["t"]}),
    )
    .await;
    publish_data(&srv, "t", json!(1)).await;
    for ep in [&by_ip, &by_name] {
        let id = ep["id"].as_str().unwrap();
        let list = deliveries_until(&srv, id, |l| {
            l.len() == 1 && !l[0]["attempts"].as_array().unwrap().is_empty()
        })
        .await;
        let error = list[0]["attempts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("refused"), "{error}");
        assert!(error.contains("allow_private_targets"), "{error}");
    }
    assert!(
        rx.received().is_empty(),
        "nothing reached the private address"
    );
    srv.stop().await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_ed25519_endpoints_publish_a_key() {
    let rx = WebhookReceiver::ok().await;
    let srv = TestServer::spawn_with(fast).await;
    let ep = create(&srv, json!({"url": rx.url("/hmac"), "topics": ["r"]})).await;
    let id = ep["id"].as_str().unwrap();
    let old = ep["secret"].as_str().unwrap().to_owned();
    let r = call(
        &srv,
        "POST",
        &format!("/api/v1/webhooks/{id}/secret/rotate"),
        None,
    )
    .await;
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires"].is_string(), "{rotated}");

    let ed = create(
        &srv,
        json!({"url": rx.url("/ed"), "topics": ["r"], "signing": "ed25519"}),
    )
    .await;
    assert!(
        ed.get("secret").is_none(),
        "the private key is never shown: {ed}"
    );
    let public = ed["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"));

    publish_data(&srv, "r", json!("x")).await;
    let got = rx.wait_for(2, T).await;
    for r in &got {
        let headers = webhook::StandardHeaders::from_lookup(|h| r.header(h)).unwrap();
        if r.path == "/hmac" {
            let sigs = r.header("webhook-signature").unwrap();
            assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
            for s in [&old, &new] {
                let key = VerifyKey::parse(s).unwrap();
                webhook::verify(
                    &headers,
                    &r.body,
                    &[key],
                    now_s(),
                    webhook::DEFAULT_TOLERANCE,
                )
                .unwrap();
            }
        } else {
            assert!(r.header("webhook-signature").unwrap().starts_with("v1a,"));
            assert!(r.header("x-hub-signature-256").is_none());
            let key = VerifyKey::parse(&public).unwrap();
            webhook::verify(
                &headers,
                &r.body,
                &[key],
                now_s(),
                webhook::DEFAULT_TOLERANCE,
            )
            .unwrap();
        }
    }
    srv.stop().await;
}

fn keys(c: &mut RawConfig) {
    fast(c);
    c.auth.keys = vec![
        herald_server::config::AuthKeySection {
            key: "k-admin".into(),
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            admin: true,
        },
        herald_server::config::AuthKeySection {
            key: "k-user".into(),
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            admin: false,
        },
    ];
}

#[tokio::test]
async fn managing_webhooks_needs_an_admin_key() {
    let srv = TestServer::spawn_with(keys).await;
    let body = json!({"url": "http://127.0.0.1:9/", "topics": [">"]});
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks"))
        .bearer_auth("k-user")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(r, 403).await;
    let r = call(&srv, "GET", "/api/v1/webhooks", None).await;
    assert_problem(r, 401).await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks"))
        .bearer_auth("k-admin")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    srv.stop().await;
}

#[tokio::test]
async fn endpoints_and_pending_deliveries_survive_a_restart() {
    let srv = TestServer::spawn_with(fast).await;
    // Disabled endpoint: deliveries of events published before disabling wait.
    let rx = WebhookReceiver::ok().await;
    let ep = create(
        &srv,
        json!({"url": rx.url("/"), "topics": ["p"], "enabled": true}),
    )
    .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    rx.wait_for(0, T).await;
    let r = call(
        &srv,
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(json!({"url": "http://127.0.0.1:9/nowhere"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let srv = srv.restart().await;
    let v = get_json(&srv, &format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(v["url"], "http://127.0.0.1:9/nowhere");
    // Point it back at the receiver; a publish after the restart is delivered.
    call(
        &srv,
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(json!({"url": rx.url("/back")})),
    )
    .await;
    publish_data(&srv, "p", json!("after restart")).await;
    let got = rx.wait_for(1, T).await;
    assert_eq!(got[0].path, "/back");
    srv.stop().await;
}

/// `https://` targets are spoken to over TLS (here a plain-HTTP port, so the handshake fails
/// and the attempt records why instead of an unsupported scheme).
#[tokio::test]
async fn https_targets_use_tls() {
    let rx = WebhookReceiver::ok().await;
    let srv = TestServer::spawn_with(fast).await;
    let ep = create(
        &srv,
        json!({"url": format!("https://127.0.0.1:{}/", rx.addr.port()), "topics": ["s"]}),
    )
    .await;
    let id = ep["id"].as_str().unwrap();
    publish_data(&srv, "s", json!(1)).await;
    let list = deliveries_until(&srv, id, |l| {
        l.len() == 1 && !l[0]["attempts"].as_array().unwrap().is_empty()
    })
    .await;
    let error = list[0]["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!error.is_empty(), "{list:?}");
    assert!(!error.contains("scheme"), "{error}");
    assert!(
        rx.received().is_empty(),
        "no plain-text request was made: {error}"
    );
    srv.stop().await;
}
