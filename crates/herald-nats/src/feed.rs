//! This node's feed: one ephemeral pull consumer (no acks, in memory) over every event
//! subject, started after the head, whose messages are handed to the
//! [`CommitSink`](herald_core::CommitSink) in stream order from this one task, a run of
//! ready messages at a time.
//!
//! The consumer sequence of a consumer without acks counts its deliveries one by one, so a
//! message lost on the way shows as a jump; the feed then (and on any error, a missed
//! heartbeat or a lost connection) drops the consumer and creates a new one that starts
//! right after the head. Every stored event therefore reaches the sink exactly once and in
//! order, across reconnects and server restarts.

use std::{sync::Arc, time::Duration};

use async_nats::{
    connection::State,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    },
};
use futures::{FutureExt, StreamExt};
use herald_core::Event;

use crate::{
    codec,
    log::{REQUEST_TIMEOUT, Shared},
};

/// Most messages handed to the sink in one call (and asked for in one pull).
const BATCH: usize = 1024;
/// Idle heartbeat of the pulls: two missed ones end the consumer.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lifetime of one pull request.
const EXPIRES: Duration = Duration::from_secs(10);
/// The server removes a consumer idle for this long (this node died).
const INACTIVE: Duration = Duration::from_secs(30);
/// How often the connection state is checked while the stream is idle.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Waits between attempts to recreate the consumer.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// A consumer that ran this long resets the retry delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

type Item = Option<Result<jetstream::Message, pull::MessagesError>>;

/// Runs the feed until the log stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut delay = RETRY_MIN;
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        if shared.client.connection_state() == State::Connected {
            let started = tokio::time::Instant::now();
            match follow(&shared).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, head = shared.head(), "event feed interrupted; resuming after the head");
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

/// One consumer's life: create, pump, delete.
async fn follow(shared: &Shared) -> Result<(), String> {
    let config = pull::Config {
        description: Some("herald node feed".into()),
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: shared.head() + 1,
        },
        ack_policy: AckPolicy::None,
        filter_subject: shared.subjects.all_events(),
        inactive_threshold: INACTIVE,
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    };
    let consumer: PullConsumer = shared
        .js
        .create_consumer_on_stream(config, &shared.stream_name)
        .await
        .map_err(|e| format!("create the feed consumer: {e}"))?;
    let name = consumer.cached_info().name.clone();
    let result = pump(shared, &consumer).await;
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT,
        shared
            .js
            .delete_consumer_from_stream(&name, &shared.stream_name),
    )
    .await;
    result
}

async fn pump(shared: &Shared, consumer: &PullConsumer) -> Result<(), String> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .expires(EXPIRES)
        .messages()
        .await
        .map_err(|e| format!("pull from the feed consumer: {e}"))?;
    let mut expected = 1u64;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        let first = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            _ = check.tick() => {
                if shared.client.connection_state() != State::Connected {
                    return Err("the connection to NATS is down".into());
                }
                continue;
            }
            m = messages.next() => m,
        };
        let mut run = Run {
            events: Vec::new(),
            through: 0,
        };
        let mut outcome = run.take(shared, first, &mut expected);
        while outcome.is_ok() && run.events.len() < BATCH {
            match messages.next().now_or_never() {
                Some(m) => outcome = run.take(shared, m, &mut expected),
                None => break,
            }
        }
        if run.through > 0 {
            shared.deliver(&run.events, run.through);
        }
        outcome?;
    }
}

/// Messages ready at once: the events among them (with the stream's timestamp, ms) and the
/// highest stream sequence seen.
struct Run {
    events: Vec<(Arc<Event>, i64)>,
    through: u64,
}

impl Run {
    fn take(&mut self, shared: &Shared, item: Item, expected: &mut u64) -> Result<(), String> {
        let msg = match item {
            None => return Err("the feed consumer's message stream ended".into()),
            Some(Err(e)) => return Err(format!("feed consumer: {e}")),
            Some(Ok(m)) => m,
        };
        let info = msg
            .info()
            .map_err(|e| format!("feed message without JetStream metadata: {e}"))?;
        if info.consumer_sequence != *expected {
            return Err(format!(
                "feed consumer skipped from delivery {} to {}",
                *expected - 1,
                info.consumer_sequence
            ));
        }
        *expected += 1;
        let seq = info.stream_sequence;
        if seq <= shared.head() || seq <= self.through {
            return Ok(());
        }
        let at_ms = codec::datetime_ms(&info.published);
        match codec::decode(
            &shared.subjects,
            seq,
            msg.subject.as_str(),
            msg.headers.as_ref(),
            &msg.payload,
        ) {
            Ok(ev) => self.events.push((ev, at_ms)),
            Err(e) => tracing::warn!(seq, reason = %e.0, "skipping a message that is not an event"),
        }
        self.through = seq;
        Ok(())
    }
}
