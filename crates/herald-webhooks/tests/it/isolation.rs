use std::time::Duration;

use herald_core::{Log, webhook::Status};
use herald_webhooks::Settings;

use crate::support::{Harness, Receiver, Reply, eventually, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_another() {
    let dead = Receiver::always(Reply::hang()).await;
    let live = Receiver::always(Reply::status(200)).await;
    let h = Harness::start(Settings {
        timeout: Duration::from_secs(2),
        ..settings()
    });
    let slow = h.endpoint(&dead.url(), |_| {}).await;
    let fast = h.endpoint(&live.url(), |_| {}).await;
    h.publish(&slow, 12).await;
    // Every slot of the dead endpoint is taken...
    dead.wait_for(8).await;
    // ...and the other endpoint's deliveries go out regardless.
    h.publish(&fast, 20).await;
    let d = h.settled(&fast, 20).await;
    assert!(d.iter().all(|r| r.delivery.status == Status::Succeeded));
    // All of that happened while the dead endpoint's first attempts were still hanging.
    let stuck = h.deliveries(&slow).await;
    assert!(
        stuck.iter().all(|r| r.attempts.is_empty()),
        "the live endpoint waited for the dead one's timeouts"
    );
    assert_eq!(dead.count(), 8, "at most 8 in flight per endpoint");
    // The hanging attempts end as timeouts, recorded and retried.
    let timed_out = eventually("a recorded timeout", || async {
        h.deliveries(&slow)
            .await
            .into_iter()
            .find_map(|r| r.attempts.first().cloned())
    })
    .await;
    assert_eq!(timed_out.status_code, None);
    let error = timed_out.error.unwrap();
    assert!(error.starts_with("timed out after 2s"), "{error}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_per_endpoint_is_capped() {
    let rx = Receiver::always(Reply::status(200).delay(Duration::from_millis(200))).await;
    let h = Harness::start(Settings {
        concurrency_per_endpoint: 3,
        ..settings()
    });
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 12).await;
    let d = h.settled(&ep, 12).await;
    assert!(d.iter().all(|r| r.delivery.status == Status::Succeeded));
    assert_eq!(rx.count(), 12);
    assert_eq!(rx.max_concurrent(), 3);
    h.stop().await;
}

#[tokio::test]
async fn rate_limit_is_respected() {
    let rx = Receiver::always(Reply::status(200)).await;
    let h = Harness::start(settings());
    let ep = h.endpoint(&rx.url(), |e| e.rate_limit = Some(5)).await;
    h.publish(&ep, 15).await;
    let d = h.settled(&ep, 15).await;
    assert!(d.iter().all(|r| r.delivery.status == Status::Succeeded));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 15);
    let first = reqs[0].at;
    // A burst of 5, then 5 per second: the last ones need about 2 s.
    let span = reqs[14].at - first;
    assert!(span >= Duration::from_millis(1500), "{span:?}");
    // Within any one second from the start, at most the burst plus a second's worth.
    let in_first_second = reqs
        .iter()
        .filter(|r| r.at - first < Duration::from_secs(1))
        .count();
    assert!(in_first_second <= 11, "{in_first_second}");
    h.stop().await;
}

#[tokio::test]
async fn stopping_abandons_attempts_and_a_restart_sends_them() {
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::hang()
        } else {
            Reply::status(200)
        }
    })
    .await;
    let h = Harness::start(Settings {
        timeout: Duration::from_secs(60),
        ..settings()
    });
    let ep = h.endpoint(&rx.url(), |_| {}).await;
    h.publish(&ep, 1).await;
    rx.wait_for(1).await;
    let log = h.log.clone();
    // Cancelling does not wait for the hanging request.
    h.stop().await;
    let d = log
        .webhooks()
        .deliveries(&ep.id, None, 0, 10)
        .await
        .unwrap();
    assert_eq!(d[0].delivery.status, Status::Pending);
    assert!(d[0].attempts.is_empty());

    let h = Harness::start_on(log, settings());
    let d = h.settled(&ep, 1).await;
    assert_eq!(d[0].delivery.status, Status::Succeeded);
    assert_eq!(d[0].attempts.len(), 1);
    assert_eq!(rx.count(), 2);
    h.stop().await;
}
