use herald_core::{
    event::now_ms,
    webhook::{Signing, Status},
};
use herald_protocol::webhook::{
    self as sig, DEFAULT_TOLERANCE, Secret, SigningKey, StandardHeaders, VerifyKey,
};

use crate::support::{Harness, Received, Receiver, Reply, settings};

/// Checks `webhook-signature` of a request with exactly one key.
fn verify_with(r: &Received, key: &str) -> Result<(), sig::VerifyError> {
    let headers = StandardHeaders::from_lookup(|n| r.headers.get(n)?.to_str().ok()).unwrap();
    sig::verify(
        &headers,
        &r.body,
        &[VerifyKey::parse(key).unwrap()],
        now_ms() / 1000,
        DEFAULT_TOLERANCE,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_request_and_records_the_attempt() {
    let rx = Receiver::always(Reply::status(200).body("thanks")).await;
    let h = Harness::start(settings());
    let ep = h
        .endpoint(&rx.url(), |e| {
            e.headers.insert("X-Tenant".into(), "acme".into());
            // May not replace the real signature.
            e.headers
                .insert("webhook-signature".into(), "v1,forged".into());
        })
        .await;
    let ids = h.publish(&ep, 1).await;

    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    assert_eq!(d[0].attempts.len(), 1);
    let a = &d[0].attempts[0];
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.error, None);
    assert_eq!(a.response_body, "thanks");
    assert!(a.at_ms > 0);

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("herald/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.header("x-webhook-event"), "order.created");
    assert_eq!(r.header("webhook-id"), format!("msg_{}", ids[0]));
    assert_eq!(r.header("x-tenant"), "acme");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!((ts - now_ms() / 1000).abs() < 60, "{ts}");
    assert_eq!(r.headers.get_all("webhook-signature").iter().count(), 1);
    verify_with(r, &ep.secret).unwrap();
    sig::verify_github(
        &Secret::raw(&ep.secret).unwrap(),
        &r.body,
        r.header("x-hub-signature-256"),
    )
    .unwrap();

    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["id"], ids[0].to_string());
    assert_eq!(body["topic"], ep.id.as_str());
    assert_eq!(body["event"], "order.created");
    assert_eq!(body["data"], serde_json::json!({"n": 0}));
    assert!(body["time"].is_string());

    let m = h.dispatcher.metrics();
    assert_eq!((m.succeeded, m.retried, m.failed), (1, 0, 0));
    assert_eq!(m.attempt_count, 1);
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.attempt_seconds_buckets.last().unwrap().1, 1);
    // A healthy endpoint is not written to by its successes.
    assert_eq!(h.get(&ep), ep);
    h.stop().await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets() {
    let rx = Receiver::always(Reply::status(204)).await;
    let h = Harness::start(settings());
    let old = Secret::generate().unwrap().to_whsec();
    let ep = h
        .endpoint(&rx.url(), |e| {
            e.previous_secret = Some(old.clone());
            e.previous_until_ms = Some(now_ms() + 3_600_000);
        })
        .await;
    h.publish(&ep, 1).await;
    h.settled(&ep, 1).await;
    let r = &rx.requests()[0];
    let entries: Vec<&str> = r.header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|s| s.starts_with("v1,")));
    // Each key verifies on its own; the new one signs first.
    verify_with(r, &ep.secret).unwrap();
    verify_with(r, &old).unwrap();
    let mut first_only = r.clone();
    first_only
        .headers
        .insert("webhook-signature", entries[0].parse().unwrap());
    verify_with(&first_only, &ep.secret).unwrap();
    assert!(verify_with(&first_only, &old).is_err());
    // GitHub's header uses the current secret only.
    sig::verify_github(
        &Secret::raw(&ep.secret).unwrap(),
        &r.body,
        r.header("x-hub-signature-256"),
    )
    .unwrap();

    // Once the overlap is over, the old secret no longer signs.
    h.hooks
        .modify(
            &ep.id,
            Box::new(|e| e.previous_until_ms = Some(now_ms() - 1)),
        )
        .await
        .unwrap();
    h.publish(&ep, 1).await;
    h.settled(&ep, 2).await;
    let r = &rx.requests()[1];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    verify_with(r, &ep.secret).unwrap();
    assert!(verify_with(r, &old).is_err());
    h.stop().await;
}

#[tokio::test]
async fn ed25519_endpoint_verifies_with_public_key() {
    let rx = Receiver::always(Reply::status(200)).await;
    let h = Harness::start(settings());
    let key = SigningKey::generate().unwrap();
    let ep = h
        .endpoint(&rx.url(), |e| {
            e.signing = Signing::Ed25519;
            e.secret = key.to_whsk();
        })
        .await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    let r = &rx.requests()[0];
    assert!(r.header("webhook-signature").starts_with("v1a,"));
    verify_with(r, &key.public_key().to_whpk()).unwrap();
    assert!(r.headers.get("x-hub-signature-256").is_none());
    h.stop().await;
}

#[tokio::test]
async fn long_response_body_is_cut() {
    let rx = Receiver::always(Reply::status(200).body("é".repeat(10_000))).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 2).await;
    let d = h.settled(&ep, 2).await;
    for r in &d {
        let body = &r.attempts[0].response_body;
        assert_eq!(body.len(), 4096, "two-byte characters, cut at a boundary");
        assert!(body.chars().all(|c| c == 'é'));
    }
    h.stop().await;
}
