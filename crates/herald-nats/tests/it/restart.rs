//! Losing and regaining the NATS server.

use std::{sync::Arc, time::Duration};

use herald_core::{Log, LogError};

use crate::support::{NatsServer, Recorder, ev, ids, open, pats};

async fn until_ok(log: &dyn Log, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while log.ready().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_restart_fails_fast_then_resumes_without_gap() {
    let mut server = NatsServer::start();
    let a = open(&server, "R1").await;
    let b = open(&server, "R1").await;
    let (sa, sb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    a.set_sink(sa.clone());
    b.set_sink(sb.clone());
    let mut acked = Vec::new();
    for i in 0..20 {
        let out = a.append(vec![ev("r", &i.to_string())]).await.unwrap();
        acked.push(out[0].event.id);
    }

    server.stop();
    // The client notices the lost connection at once (the socket closes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.ready().is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "ready() still ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(a.ready(), Err(LogError::Unavailable(_))));
    let started = tokio::time::Instant::now();
    let r = a.append(vec![ev("r", "lost")]).await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "append did not fail fast"
    );
    assert!(matches!(a.maintain().await, Err(LogError::Unavailable(_))));

    server.restart();
    until_ok(&a, "a").await;
    until_ok(&b, "b").await;
    for i in 20..40 {
        // Right after the reconnect JetStream may still be recovering the stream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match a.append(vec![ev("r", &i.to_string())]).await {
                Ok(out) => {
                    acked.push(out[0].event.id);
                    break;
                }
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "append after restart: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Appends on B work too, and both feeds saw every acknowledged event, in order.
    let out = b.append(vec![ev("r", "from b")]).await.unwrap();
    acked.push(out[0].event.id);
    let seen_a = sa.wait_for(acked.len()).await;
    let seen_b = sb.wait_for(acked.len()).await;
    assert_eq!(seen_a, acked);
    assert_eq!(seen_b, acked);
    let stored = a.read(&pats(&["r"]), 0, 100).await.unwrap();
    assert_eq!(ids(&stored), acked);
}
