use std::time::Duration;

use herald_core::webhook::Status;
use herald_webhooks::Settings;

use crate::support::{Harness, Receiver, Reply, eventually, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_succeeds_with_the_same_id() {
    let rx = Receiver::start(|i| Reply::status(if i < 2 { 500 } else { 200 })).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    let ids = h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    assert_eq!(d[0].delivery.attempts, 3);
    let codes: Vec<_> = d[0].attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.header("webhook-id"), format!("msg_{}", ids[0]));
        assert_eq!(r.body, reqs[0].body);
    }
    let m = h.dispatcher.metrics();
    assert_eq!((m.succeeded, m.retried, m.failed), (1, 2, 0));
    h.stop().await;
}

#[tokio::test]
async fn exhausted_schedule_fails_the_delivery() {
    let rx = Receiver::always(Reply::status(503).body("down")).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Failed);
    // The first attempt and one retry per scheduled delay.
    assert_eq!(d[0].attempts.len(), 4);
    assert!(d[0].attempts.iter().all(|a| a.status_code == Some(503)));
    assert!(d[0].attempts.iter().all(|a| a.response_body == "down"));
    assert_eq!(rx.count(), 4);
    // Retries are spaced by the schedule (100 ms, jitter -20 %).
    let reqs = rx.requests();
    for w in reqs.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_millis(75));
    }
    let m = h.dispatcher.metrics();
    assert_eq!((m.succeeded, m.retried, m.failed), (0, 3, 1));
    // Failing, not long enough to be disabled.
    let now = h.get(&ep);
    assert!(now.enabled);
    assert!(now.failing_since_ms.is_some());
    h.stop().await;
}

#[tokio::test]
async fn abort_message_stops_retrying() {
    let rx =
        Receiver::always(Reply::status(500).header("webhook-delivery", " Abort-Message ")).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Failed);
    assert_eq!(d[0].attempts.len(), 1);
    assert!(h.get(&ep).enabled);
    h.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let rx = Receiver::always(Reply::status(410)).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Failed);
    assert_eq!(d[0].attempts.len(), 1);
    let disabled = eventually("the endpoint disabled", || async {
        let e = h.get(&ep);
        (!e.enabled).then_some(e)
    })
    .await;
    assert!(
        disabled
            .disabled_reason
            .as_deref()
            .unwrap()
            .starts_with("410 Gone"),
        "{:?}",
        disabled.disabled_reason
    );
    // A disabled endpoint gets no new deliveries.
    h.publish(&ep, 1).await;
    assert_eq!(h.deliveries(&ep).await.len(), 1);
    assert_eq!(rx.count(), 1);
    h.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::status(429).header("retry-after", "1")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    // The schedule says 100 ms; the receiver asked for 1 s.
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
    let a = &d[0].attempts;
    assert!(a[1].at_ms - a[0].at_ms >= 900);
    h.stop().await;
}

#[tokio::test]
async fn manual_retry_makes_one_more_attempt() {
    let rx = Receiver::always(Reply::status(500)).await;
    let h = Harness::start(Settings {
        retry_schedule: vec![],
        ..settings()
    });
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Failed);
    assert_eq!(d[0].attempts.len(), 1);
    let id = d[0].delivery.id;

    // Still failing: exactly one more attempt, then failed again.
    assert_eq!(h.hooks.retry(&ep.id, Some(id), 0).await.unwrap(), 1);
    eventually("a second attempt", || async {
        let d = h.deliveries(&ep).await;
        (d[0].attempts.len() == 2 && d[0].delivery.status == Status::Failed).then_some(())
    })
    .await;

    rx.script(|_| Reply::status(200));
    assert_eq!(h.hooks.retry(&ep.id, Some(id), 0).await.unwrap(), 1);
    eventually("a third, successful attempt", || async {
        let d = h.deliveries(&ep).await;
        (d[0].delivery.status == Status::Succeeded).then_some(())
    })
    .await;
    let d = h.deliveries(&ep).await;
    assert_eq!(d[0].attempts.len(), 3);
    assert_eq!(rx.count(), 3);
    h.stop().await;
}

#[tokio::test]
async fn failing_too_long_disables_the_endpoint() {
    let rx = Receiver::always(Reply::status(500)).await;
    let h = Harness::start(Settings {
        // The first failure starts the clock, the next one finds it run out.
        disable_after: Duration::ZERO,
        retry_schedule: vec![Duration::from_millis(50); 5],
        ..settings()
    });
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    let disabled = eventually("the endpoint disabled", || async {
        let e = h.get(&ep);
        (!e.enabled).then_some(e)
    })
    .await;
    let reason = disabled.disabled_reason.unwrap();
    assert!(reason.starts_with("failing for "), "{reason}");
    // The delivery waits, pending, for the endpoint to be enabled again.
    let d = h.deliveries(&ep).await;
    assert_eq!(d[0].delivery.status, Status::Pending);
    assert_eq!(d[0].attempts.len(), 2);
    assert_eq!(rx.count(), 2);

    // Enabled again and fixed: the pending delivery goes out.
    rx.script(|_| Reply::status(200));
    h.hooks
        .modify(&ep.id, Box::new(|e| e.enabled = true))
        .await
        .unwrap();
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    assert_eq!(d[0].attempts.len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_success_clears_failing_since() {
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::status(500)
        } else {
            Reply::status(200).gated()
        }
    })
    .await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    // The retry is held by the receiver until the failure was seen.
    eventually("failing_since set", || async {
        h.get(&ep).failing_since_ms.map(|_| ())
    })
    .await;
    rx.open_gate();
    h.settled(&ep, 1).await;
    eventually("failing_since cleared", || async {
        h.get(&ep).failing_since_ms.is_none().then_some(())
    })
    .await;
    assert!(h.get(&ep).enabled);
    h.stop().await;
}
