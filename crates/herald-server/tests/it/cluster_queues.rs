//! STOMP `/queue/...` destinations in cluster mode: competing consumers on different nodes
//! share one queue. Each message goes to one consumer of one node; messages a node holds for
//! a consumer that goes away are handed to another node's; a NACK with no other consumer on
//! the node gives the message back to the cluster. (`kill -9` of a node holding messages:
//! `crates/herald/tests/cluster_crash.rs`.)

use std::collections::{BTreeMap, BTreeSet};

use herald_test_support::{NatsServer, TestServer};
use tokio::time::{Duration, Instant, timeout};

use crate::{
    stomp::{connected, frame, send},
    util::{T, Ws},
};

fn quiet(_: &mut herald_server::config::RawConfig) {}

/// A MESSAGE frame's body and `ack` header.
fn message(f: &str) -> (String, Option<String>) {
    assert!(f.starts_with("MESSAGE\n"), "{f}");
    let (head, body) = f.split_once("\n\n").expect("a frame with a body");
    let ack = head
        .lines()
        .find_map(|l| l.strip_prefix("ack:"))
        .map(str::to_owned);
    (body.trim_end_matches('\0').to_owned(), ack)
}

async fn subscribe(srv: &TestServer, ack: &str) -> Ws {
    let mut ws = connected(srv).await;
    send(
        &mut ws,
        &format!("SUBSCRIBE\nid:q\ndestination:/queue/jobs\nack:{ack}\nreceipt:sub\n\n\0"),
    )
    .await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:sub"), "{f}");
    ws
}

async fn send_jobs(ws: &mut Ws, range: std::ops::Range<usize>) {
    for i in range {
        send(
            ws,
            &format!("SEND\ndestination:/queue/jobs\nreceipt:r{i}\n\njob-{i}\0"),
        )
        .await;
        let f = frame(ws).await.unwrap();
        assert!(f.starts_with("RECEIPT"), "{f}");
    }
}

/// Messages arriving on a consumer within `quiet` of each other (ACKing them when asked).
async fn drain(ws: &mut Ws, ack: bool, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(f) = timeout(quiet, frame(ws)).await {
        let (body, id) = message(&f.expect("the connection stays open"));
        if ack {
            send(ws, &format!("ACK\nid:{}\n\n\0", id.expect("an ack id"))).await;
        }
        got.push(body);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_on_two_nodes_share_one_queue_and_take_over_released_messages() {
    const N: usize = 60;
    let nats = NatsServer::start();
    let a = TestServer::spawn_node(&nats.url(), quiet).await;
    let b = TestServer::spawn_node(&nats.url(), quiet).await;
    // A's consumer never acknowledges: A holds at most its prefetch for it, so B's consumer
    // (which acknowledges) must get the rest.
    let mut on_a = subscribe(&a, "client-individual").await;
    let mut on_b = subscribe(&b, "client-individual").await;
    let mut sender_a = connected(&a).await;
    let mut sender_b = connected(&b).await;
    send_jobs(&mut sender_a, 0..N / 2).await;
    send_jobs(&mut sender_b, N / 2..N).await;

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let deadline = Instant::now() + T;
    while got_a.len() + got_b.len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} + {} of {N} messages arrived",
            got_a.len(),
            got_b.len()
        );
        tokio::select! {
            f = frame(&mut on_a) => got_a.push(message(&f.unwrap()).0),
            f = frame(&mut on_b) => {
                let (body, id) = message(&f.unwrap());
                send(&mut on_b, &format!("ACK\nid:{}\n\n\0", id.unwrap())).await;
                got_b.push(body);
            }
        }
    }
    // Nothing more, and nothing twice.
    got_a.extend(drain(&mut on_a, false, Duration::from_millis(500)).await);
    got_b.extend(drain(&mut on_b, true, Duration::from_millis(500)).await);
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    for body in got_a.iter().chain(&got_b) {
        *all.entry(body.as_str()).or_default() += 1;
    }
    assert_eq!(all.len(), N, "{all:?}");
    assert!(all.values().all(|&n| n == 1), "delivered twice: {all:?}");
    assert!(
        got_a.len() <= herald_server_prefetch(),
        "node A took {} for one consumer",
        got_a.len()
    );
    assert!(!got_b.is_empty());

    // A's consumer goes away without acknowledging: B's consumer gets exactly those.
    drop(on_a);
    let mut again = Vec::new();
    let deadline = Instant::now() + T;
    while again.len() < got_a.len() {
        assert!(Instant::now() < deadline, "{again:?} of {got_a:?}");
        let (body, id) = message(&frame(&mut on_b).await.unwrap());
        send(&mut on_b, &format!("ACK\nid:{}\n\n\0", id.unwrap())).await;
        again.push(body);
    }
    again.extend(drain(&mut on_b, true, Duration::from_millis(500)).await);
    let want: BTreeSet<&String> = got_a.iter().collect();
    let have: BTreeSet<&String> = again.iter().collect();
    assert_eq!(have, want);
    assert_eq!(again.len(), got_a.len(), "redelivered twice: {again:?}");

    // A NACK where the node has no other consumer: back to the cluster, and to a consumer
    // again (here B's, the only one left).
    send_jobs(&mut sender_a, N..N + 1).await;
    let (body, id) = message(&frame(&mut on_b).await.unwrap());
    assert_eq!(body, format!("job-{N}"));
    send(&mut on_b, &format!("NACK\nid:{}\n\n\0", id.unwrap())).await;
    let (body, id) = message(&frame(&mut on_b).await.unwrap());
    assert_eq!(body, format!("job-{N}"));
    send(
        &mut on_b,
        &format!("ACK\nid:{}\nreceipt:done\n\n\0", id.unwrap()),
    )
    .await;
    let f = frame(&mut on_b).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:done"), "{f}");

    // Consumed for good: a new consumer on either node gets nothing.
    drop(on_b);
    let mut late = subscribe(&a, "auto").await;
    assert!(
        drain(&mut late, false, Duration::from_secs(1))
            .await
            .is_empty()
    );
    a.stop().await;
    b.stop().await;
}

/// The server's per-consumer prefetch in cluster mode (see `stomp::queue::PREFETCH`).
fn herald_server_prefetch() -> usize {
    32
}
