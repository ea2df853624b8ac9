//! Inbound webhook receivers (SPEC 7.2): requests signed the way GitHub, Standard Webhooks
//! senders and generic HMAC senders sign them, checked over the raw body; published events,
//! dedupe by delivery id, and the refusals (401, 400, 404, 413).

use herald_core::event::now_ms;
use herald_protocol::webhook::{self, Encoding, Secret, Signer, SigningKey};
use herald_server::config::{InboundSection, RawConfig};
use herald_test_support::TestServer;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::util::{assert_problem, get_json};

const GH_SECRET: &str = "It's a Secret to Everybody";
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HMAC_SECRET: &str = "plain text secret";
/// A fixed ed25519 seed (base64 of 32 bytes), so the config (a `fn`) can name its public key.
const ED_SEED: &str = "whsk_TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=";

fn section(name: &str, kind: &str, secret: &str) -> InboundSection {
    InboundSection {
        name: name.into(),
        kind: kind.into(),
        secret: secret.into(),
        topic: None,
        header: None,
        encoding: None,
        prefix: None,
    }
}

fn ed_public() -> String {
    SigningKey::parse(ED_SEED).unwrap().public_key().to_whpk()
}

fn receivers(c: &mut RawConfig) {
    c.inbound = vec![
        section("github", "github", GH_SECRET),
        section("std", "standard", STD_SECRET),
        section("ed", "standard", &ed_public()),
        InboundSection {
            header: Some("X-Signature".into()),
            encoding: Some("base64".into()),
            prefix: Some("sha256=".into()),
            topic: Some("ci.{name}.{event}".into()),
            ..section("ci", "hmac", HMAC_SECRET)
        },
        InboundSection {
            topic: Some("fixed.topic".into()),
            ..section("fixed", "github", GH_SECRET)
        },
    ];
}

async fn post(srv: &TestServer, name: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    let mut req = srv
        .http()
        .post(srv.url(&format!("/api/v1/webhooks/{name}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.expect("inbound POST")
}

async fn json_of(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn github_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let secret = Secret::raw(GH_SECRET).unwrap();
    vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", delivery.to_owned()),
        (
            "x-hub-signature-256",
            webhook::github_signature(&secret, body),
        ),
    ]
}

fn standard_headers(
    id: &str,
    ts: i64,
    body: &[u8],
    signer: &Signer,
) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            webhook::sign(id, ts, body, std::slice::from_ref(signer)),
        ),
    ]
}

fn now() -> i64 {
    now_ms() / 1000
}

#[tokio::test]
async fn github_receiver_publishes_and_dedupes() {
    let srv = TestServer::spawn_with(receivers).await;
    let body = br#"{"action": "opened", "number": 7, "pull_request": {"title": "Hi"}}"#;
    let h = github_headers("pull_request", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body);
    let first = json_of(post(&srv, "github", &h, body).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["topic"], "webhooks.github.pull_request.opened");
    assert_eq!(first["event"], "pull_request.opened");
    assert!(
        first["id"].is_string() && first["time"].is_string(),
        "{first}"
    );
    assert!(first.get("duplicate").is_none());

    // The same delivery again (GitHub's "redeliver"): a duplicate, nothing new stored.
    let again = json_of(post(&srv, "github", &h, body).await, StatusCode::OK).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);

    let page = get_json(&srv, "/api/v1/topics/webhooks.github.%3E/events").await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["event"], "pull_request.opened");
    assert_eq!(events[0]["data"]["number"], 7);
    assert_eq!(events[0]["data"]["pull_request"]["title"], "Hi");

    // No `action`: the header alone; a non-string `action` is ignored too.
    let ping = br#"{"zen": "Keep it logically awesome."}"#;
    let r = post(&srv, "github", &github_headers("ping", "d-2", ping), ping).await;
    let r = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(r["topic"], "webhooks.github.ping");
    assert_eq!(r["event"], "ping");
    let odd = br#"{"action": 5}"#;
    let r = post(&srv, "github", &github_headers("push", "d-3", odd), odd).await;
    assert_eq!(json_of(r, StatusCode::ACCEPTED).await["event"], "push");

    // A fixed topic template.
    let r = post(&srv, "fixed", &github_headers("issues", "d-4", body), body).await;
    let r = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(r["topic"], "fixed.topic");
    assert_eq!(r["event"], "issues.opened");
    srv.stop().await;
}

#[tokio::test]
async fn github_refusals() {
    let srv = TestServer::spawn_with(receivers).await;
    let body = br#"{"action":"opened"}"#;
    let good = github_headers("issues", "d-1", body);

    // Tampered body, missing signature, another secret, a bare hex without `sha256=`.
    let p = assert_problem(
        post(&srv, "github", &good, br#"{"action":"closed"}"#).await,
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("signature"), "{p}");
    let unsigned: Vec<_> = good
        .iter()
        .filter(|(k, _)| *k != "x-hub-signature-256")
        .cloned()
        .collect();
    let p = assert_problem(post(&srv, "github", &unsigned, body).await, 401).await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("x-hub-signature-256"),
        "{p}"
    );
    let other = Secret::raw("another secret").unwrap();
    let mut wrong = unsigned.clone();
    wrong.push((
        "x-hub-signature-256",
        webhook::github_signature(&other, body),
    ));
    assert_problem(post(&srv, "github", &wrong, body).await, 401).await;
    let mut bare = unsigned.clone();
    let sig = webhook::github_signature(&Secret::raw(GH_SECRET).unwrap(), body);
    bare.push((
        "x-hub-signature-256",
        sig.trim_start_matches("sha256=").to_owned(),
    ));
    assert_problem(post(&srv, "github", &bare, body).await, 401).await;

    // Signed but malformed: not JSON, no event header.
    let text = b"payload=%7B%7D";
    assert_problem(
        post(&srv, "github", &github_headers("issues", "d-2", text), text).await,
        400,
    )
    .await;
    let no_event: Vec<_> = good
        .iter()
        .filter(|(k, _)| *k != "x-github-event")
        .cloned()
        .collect();
    assert_problem(post(&srv, "github", &no_event, body).await, 400).await;

    // Nothing was published by any of them.
    let page = get_json(&srv, "/api/v1/topics/webhooks.%3E/events").await;
    assert_eq!(page["events"], json!([]), "{page}");

    // Unknown receiver: 404; GET on a receiver: not a route of this door.
    assert_problem(post(&srv, "nope", &good, body).await, 404).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/webhooks/github"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    srv.stop().await;
}

#[tokio::test]
async fn standard_receiver_verifies_dedupes_and_types() {
    let srv = TestServer::spawn_with(receivers).await;
    let signer = Signer::parse(STD_SECRET).unwrap();
    let body = br#"{"type": "invoice.paid", "timestamp": "2022-11-03T20:26:10.344522Z", "data": {"amount": 42}}"#;
    let h = standard_headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now(), body, &signer);
    let first = json_of(post(&srv, "std", &h, body).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["topic"], "webhooks.std.invoice.paid");
    assert_eq!(first["event"], "invoice.paid");
    let again = json_of(post(&srv, "std", &h, body).await, StatusCode::OK).await;
    assert_eq!(
        again,
        json!({"duplicate": true, "id": first["id"], "topic": first["topic"], "event": first["event"], "time": first["time"]})
    );

    // The same id re-signed at a later time (a sender's retry) is still the same delivery.
    let retry = standard_headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now() + 1, body, &signer);
    let r = json_of(post(&srv, "std", &retry, body).await, StatusCode::OK).await;
    assert_eq!(r["id"], first["id"]);

    // No `type`: `message`; odd characters are mapped for the type and the topic.
    let plain = br#"{"hello": "world"}"#;
    let r = post(
        &srv,
        "std",
        &standard_headers("msg_b", now(), plain, &signer),
        plain,
    )
    .await;
    let r = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(
        (r["topic"].as_str(), r["event"].as_str()),
        (Some("webhooks.std.message"), Some("message"))
    );
    let odd = br#"{"type": "order shipped/eu"}"#;
    let r = post(
        &srv,
        "std",
        &standard_headers("msg_c", now(), odd, &signer),
        odd,
    )
    .await;
    let r = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(r["event"], "order_shipped/eu");
    assert_eq!(r["topic"], "webhooks.std.order_shipped_eu");

    // Rotation: a signature header with an unknown key first, ours second.
    let other = Signer::Hmac(Secret::generate().unwrap());
    let ts = now();
    let both = webhook::sign("msg_d", ts, plain, &[other.clone(), signer.clone()]);
    let h = vec![
        ("webhook-id", "msg_d".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", both),
    ];
    json_of(post(&srv, "std", &h, plain).await, StatusCode::ACCEPTED).await;
    srv.stop().await;
}

#[tokio::test]
async fn standard_refusals() {
    let srv = TestServer::spawn_with(receivers).await;
    let signer = Signer::parse(STD_SECRET).unwrap();
    let body = br#"{"type":"a.b"}"#;
    // Timestamps outside the 5-minute tolerance, either way, even when correctly signed.
    for ts in [now() - 400, now() + 400] {
        let h = standard_headers("msg_old", ts, body, &signer);
        let p = assert_problem(post(&srv, "std", &h, body).await, 401).await;
        assert!(p["detail"].as_str().unwrap().contains("timestamp"), "{p}");
    }
    // Tampered body, id, timestamp; a wrong key; each header missing.
    let h = standard_headers("msg_x", now(), body, &signer);
    assert_problem(post(&srv, "std", &h, br#"{"type":"a.c"}"#).await, 401).await;
    let mut other_id = h.clone();
    other_id[0].1 = "msg_y".into();
    assert_problem(post(&srv, "std", &other_id, body).await, 401).await;
    let mut other_ts = h.clone();
    other_ts[1].1 = (now() - 5).to_string();
    assert_problem(post(&srv, "std", &other_ts, body).await, 401).await;
    let wrong = Signer::Hmac(Secret::generate().unwrap());
    assert_problem(
        post(
            &srv,
            "std",
            &standard_headers("msg_x", now(), body, &wrong),
            body,
        )
        .await,
        401,
    )
    .await;
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let partial: Vec<_> = h.iter().filter(|(k, _)| *k != missing).cloned().collect();
        let p = assert_problem(post(&srv, "std", &partial, body).await, 401).await;
        assert!(p["detail"].as_str().unwrap().contains(missing), "{p}");
    }
    let page = get_json(&srv, "/api/v1/topics/webhooks.%3E/events").await;
    assert_eq!(page["events"], json!([]), "{page}");
    srv.stop().await;
}

#[tokio::test]
async fn standard_ed25519_receiver() {
    let srv = TestServer::spawn_with(receivers).await;
    let key = Signer::parse(ED_SEED).unwrap();
    let body = br#"{"type":"user.created","data":{"id":1}}"#;
    let h = standard_headers("msg_ed", now(), body, &key);
    assert!(h[2].1.starts_with("v1a,"));
    let r = json_of(post(&srv, "ed", &h, body).await, StatusCode::ACCEPTED).await;
    assert_eq!(r["topic"], "webhooks.ed.user.created");
    // Another key pair's signature, and an HMAC signature, are refused.
    let other = Signer::Ed25519(SigningKey::generate().unwrap());
    assert_problem(
        post(
            &srv,
            "ed",
            &standard_headers("msg_e2", now(), body, &other),
            body,
        )
        .await,
        401,
    )
    .await;
    let hmac = Signer::parse(STD_SECRET).unwrap();
    assert_problem(
        post(
            &srv,
            "ed",
            &standard_headers("msg_e3", now(), body, &hmac),
            body,
        )
        .await,
        401,
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn hmac_receiver() {
    let srv = TestServer::spawn_with(receivers).await;
    let secret = Secret::raw(HMAC_SECRET).unwrap();
    let body = br#"{"build": 12, "status": "green"}"#;
    let sig = webhook::hmac_signature(&secret, body, Encoding::Base64, "sha256=");
    let h = vec![
        ("x-signature", sig.clone()),
        ("x-webhook-event", "build finished".to_owned()),
    ];
    // No delivery id: every request is a new event.
    let a = json_of(post(&srv, "ci", &h, body).await, StatusCode::ACCEPTED).await;
    let b = json_of(post(&srv, "ci", &h, body).await, StatusCode::ACCEPTED).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["topic"], "ci.ci.build_finished");
    assert_eq!(a["event"], "build_finished");
    // With `x-webhook-id`: deduped.
    let mut with_id = h.clone();
    with_id.push(("x-webhook-id", "run-12".to_owned()));
    let c = json_of(post(&srv, "ci", &with_id, body).await, StatusCode::ACCEPTED).await;
    let d = json_of(post(&srv, "ci", &with_id, body).await, StatusCode::OK).await;
    assert_eq!((d["duplicate"].as_bool(), &d["id"]), (Some(true), &c["id"]));
    // No event header: `message`.
    let plain = vec![("x-signature", sig.clone())];
    let e = json_of(post(&srv, "ci", &plain, body).await, StatusCode::ACCEPTED).await;
    assert_eq!(e["topic"], "ci.ci.message");

    // Hex where base64 is configured, no prefix, wrong body, missing header: 401.
    let hex = webhook::hmac_signature(&secret, body, Encoding::Hex, "sha256=");
    assert_problem(post(&srv, "ci", &[("x-signature", hex)], body).await, 401).await;
    let bare = sig.trim_start_matches("sha256=").to_owned();
    assert_problem(post(&srv, "ci", &[("x-signature", bare)], body).await, 401).await;
    assert_problem(
        post(&srv, "ci", &h, br#"{"build": 13, "status": "green"}"#).await,
        401,
    )
    .await;
    let p = assert_problem(post(&srv, "ci", &[], body).await, 401).await;
    assert!(p["detail"].as_str().unwrap().contains("x-signature"), "{p}");
    srv.stop().await;
}

fn with_auth(c: &mut RawConfig) {
    receivers(c);
    c.auth.keys = vec![herald_server::config::AuthKeySection {
        key: "k-admin".into(),
        publish: vec![">".into()],
        subscribe: vec![">".into()],
        admin: true,
    }];
}

#[tokio::test]
async fn receivers_bypass_api_keys_only_for_their_own_path() {
    let srv = TestServer::spawn_with(with_auth).await;
    let body = br#"{"action":"created"}"#;
    // GitHub cannot present an API key: the signature is the credential.
    let r = post(&srv, "github", &github_headers("star", "d-1", body), body).await;
    json_of(r, StatusCode::ACCEPTED).await;
    // Without a valid signature there is still no way in.
    assert_problem(post(&srv, "github", &[], body).await, 401).await;
    // Unknown names, other methods and other paths still need a key.
    assert_problem(post(&srv, "nope", &[], body).await, 401).await;
    let r = srv
        .http()
        .get(srv.url("/api/v1/webhooks/github"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401).await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks/github/x"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401).await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401).await;
    // With a key, an unknown receiver is a 404.
    let r = srv
        .http()
        .post(srv.url("/api/v1/webhooks/nope"))
        .bearer_auth("k-admin")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404).await;
    srv.stop().await;
}

fn small_limits(c: &mut RawConfig) {
    receivers(c);
    c.limits.max_body_bytes = 64;
    c.limits.max_inbound_body = 4096;
}

#[tokio::test]
async fn inbound_body_limit_is_its_own() {
    let srv = TestServer::spawn_with(small_limits).await;
    // Larger than limits.max_body_bytes, within limits.max_inbound_body: accepted.
    let body = serde_json::to_vec(&json!({"action": "edited", "text": "x".repeat(2000)})).unwrap();
    let r = post(
        &srv,
        "github",
        &github_headers("issues", "d-1", &body),
        &body,
    )
    .await;
    json_of(r, StatusCode::ACCEPTED).await;
    // The general limit still holds for the REST door.
    let r = srv
        .http()
        .post(srv.url("/api/v1/topics/t/events"))
        .json(&json!({"data": "x".repeat(200)}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413).await;
    // Over limits.max_inbound_body: 413 before any verification.
    let big = serde_json::to_vec(&json!({"text": "x".repeat(5000)})).unwrap();
    let p = assert_problem(
        post(&srv, "github", &github_headers("issues", "d-2", &big), &big).await,
        413,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("max_inbound_body"),
        "{p}"
    );
    srv.stop().await;
}
