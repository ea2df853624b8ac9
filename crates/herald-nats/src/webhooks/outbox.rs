//! The outbox: the events stream read by the durable pull consumer `<stream>_outbox`, which
//! every node pulls from (each event goes to one node at a time).
//!
//! A node takes a run of events, waits until its endpoint set holds every endpoint write
//! made before it looked (so an endpoint created before an event was published is matched
//! against it on any node), stores one delivery per enabled endpoint that wants each event,
//! and only then acknowledges the events. A node that dies in between leaves its events
//! unacknowledged: after the ack wait (`lease`) another node takes them, and the
//! message ids `d.<event id>.<endpoint id>` make the deliveries already stored duplicates the
//! deliveries stream drops (its duplicate window is far longer than the ack wait).

use std::{sync::Arc, time::Duration};

use async_nats::{
    connection::State as Connection,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    },
};
use futures::{FutureExt, StreamExt};
use herald_core::webhook::NewDelivery;

use super::Inner;
use crate::codec;

/// Most events taken in one run.
const BATCH: usize = 64;
/// Idle heartbeat of the pulls: two missed ones end the pull.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lifetime of one pull request.
const EXPIRES: Duration = Duration::from_secs(10);
/// Unacknowledged events one consumer may have out (all nodes together).
const MAX_ACK_PENDING: i64 = 4096;
/// How long a run waits for this node's endpoint set to catch up with the bucket.
const CURRENT_WAIT: Duration = Duration::from_secs(5);
/// A run that could not be stored is handed out again after this.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Waits between attempts to pull again after a failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A pull that ran this long resets the retry delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The outbox consumer. Created once for the cluster: it starts with the events stored after
/// it exists (webhooks cannot be set up before a node opened the log, which creates it).
pub(crate) fn config(name: &str, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some("Herald webhook outbox: events not yet turned into deliveries".into()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// Runs this node's share of the outbox until the log stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let shared = inner.shared.clone();
    let mut delay = RETRY_MIN;
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        if shared.client.connection_state() == Connection::Connected {
            let started = tokio::time::Instant::now();
            match follow(&inner).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "webhook outbox interrupted; pulling again");
                    if started.elapsed() > HEALTHY_AFTER {
                        delay = RETRY_MIN;
                    }
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn follow(inner: &Inner) -> Result<(), String> {
    let shared = &inner.shared;
    let consumer: PullConsumer = shared
        .stream
        .get_or_create_consumer(&inner.outbox, config(&inner.outbox, inner.lease))
        .await
        .map_err(|e| format!("open the outbox consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .expires(EXPIRES)
        .messages()
        .await
        .map_err(|e| format!("pull from the outbox consumer: {e}"))?;
    loop {
        let first = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let mut run = Vec::with_capacity(BATCH);
        let mut ended = take(first, &mut run).err();
        while ended.is_none() && run.len() < BATCH {
            match messages.next().now_or_never() {
                Some(m) => ended = take(m, &mut run).err(),
                None => break,
            }
        }
        if !run.is_empty() {
            let turned = tokio::select! {
                // Unacknowledged: another node (or this one) takes them again later.
                _ = shared.stop.cancelled() => return Ok(()),
                t = turn(inner, &run) => t,
            };
            if let Err(e) = turned {
                for m in &run {
                    let _ = m.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                }
                return Err(e);
            }
        }
        if let Some(e) = ended {
            return Err(e);
        }
    }
}

type Item = Option<Result<jetstream::Message, pull::MessagesError>>;

fn take(item: Item, run: &mut Vec<jetstream::Message>) -> Result<(), String> {
    match item {
        None => Err("the outbox consumer's message stream ended".into()),
        Some(Err(e)) => Err(format!("outbox consumer: {e}")),
        Some(Ok(m)) => {
            run.push(m);
            Ok(())
        }
    }
}

/// Turns a run of events into deliveries, then acknowledges the events.
async fn turn(inner: &Inner, run: &[jetstream::Message]) -> Result<(), String> {
    inner.endpoints_current(CURRENT_WAIT).await?;
    let shared = &inner.shared;
    let mut news: Vec<(NewDelivery, Option<String>)> = Vec::new();
    for m in run {
        let Ok(info) = m.info() else {
            continue;
        };
        let seq = info.stream_sequence;
        match codec::decode(
            &shared.subjects,
            seq,
            m.subject.as_str(),
            m.headers.as_ref(),
            &m.payload,
        ) {
            Ok(ev) => {
                for ep in inner.endpoints.set.matching(&ev) {
                    let id = &ep.endpoint.id;
                    news.push((
                        NewDelivery::for_event(id, &ev),
                        Some(format!("d.{seq}.{id}")),
                    ));
                }
            }
            Err(e) => tracing::debug!(seq, reason = %e.0, "outbox: not an event"),
        }
    }
    if !news.is_empty() {
        inner.store(news).await.map_err(|e| e.to_string())?;
    }
    for m in run {
        // A lost ack means the event comes again; its deliveries are then duplicates.
        if let Err(e) = m.ack().await {
            tracing::debug!(error = %e, "outbox: cannot acknowledge an event");
        }
    }
    Ok(())
}
