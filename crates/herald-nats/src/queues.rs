//! Shared queues ([`herald_core::SharedQueues`]): STOMP `/queue/<name>` destinations as
//! durable pull consumers that every node pulls from.
//!
//! A queued message is an event on the topic `_queue.<name>` (subject
//! `<prefix>.ev._queue.<name>`), stored in the events stream like any other. Each queue has
//! one durable consumer, `<stream>_q_<name>` (dots written as `~`; a long name becomes
//! `<stream>_qh_<hash>`), created by the first node that has a consumer for it and starting at
//! the oldest retained message (messages sent before anybody listened are delivered). JetStream
//! hands each message to one pull request at a time and keeps it leased until the ack wait
//! (`lease`) runs out:
//! - acknowledged (`ack`, awaited with the server's confirmation): consumed for good;
//! - released (`nak`): handed out again at once, to whichever node pulls next;
//! - renewed (`+WPI`, "work in progress"): the node holding it renews every third of the
//!   lease while its consumer works on it;
//! - neither (the node died with `kill -9`): handed out again after the lease.
//!
//! The consumers are never deleted: a queue keeps its position while nobody listens, like a
//! broker's durable queue.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer, message::Acker};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use herald_core::{Lease, Leased, LogError, SharedQueues};
use tokio::sync::Mutex;

use crate::{codec, log::Shared};

/// Topic prefix of queued messages (the server's `/queue/<name>`).
const QUEUE_PREFIX: &str = "_queue.";
/// Unacknowledged messages one queue may have out (all nodes together).
const MAX_ACK_PENDING: i64 = 10_000;
/// How long a pull's answer may take beyond its own wait.
const PULL_WAIT: Duration = Duration::from_secs(2);
/// Longest queue name written readably into a consumer name.
const READABLE: usize = 150;

/// Every shared queue of the cluster, as this node sees them.
pub(crate) struct NatsQueues {
    shared: Arc<Shared>,
    lease: Duration,
    consumers: Mutex<HashMap<String, PullConsumer>>,
}

impl NatsQueues {
    pub(crate) fn new(shared: Arc<Shared>, lease: Duration) -> Self {
        Self {
            shared,
            lease,
            consumers: Mutex::default(),
        }
    }

    /// The durable consumer of a queue, created when it does not exist yet.
    async fn consumer(&self, name: &str) -> Result<PullConsumer, LogError> {
        let mut consumers = self.consumers.lock().await;
        if let Some(c) = consumers.get(name) {
            return Ok(c.clone());
        }
        let consumer = crate::log::open_shared_consumer(
            &self.shared.stream,
            &consumer_name(&self.shared.stream_name, name),
            format!("Herald queue /queue/{name}"),
            self.shared.subjects.topic(&format!("{QUEUE_PREFIX}{name}")),
            self.lease,
            MAX_ACK_PENDING,
        )
        .await
        .map_err(|e| self.shared.fail("open a queue consumer", e))?;
        consumers.insert(name.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Messages available now, up to `max` (a pull that does not wait).
    async fn available(
        &self,
        consumer: &PullConsumer,
        max: usize,
        expires: Option<Duration>,
    ) -> Result<Vec<Leased>, LogError> {
        let mut messages = match expires {
            None => consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(|e| self.shared.fail("pull from a queue", e))?,
            Some(wait) => consumer
                .batch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| self.shared.fail("pull from a queue", e))?,
        };
        let mut out = Vec::new();
        // A pull JetStream parks instead of answering (or a reconnect lost) must not hold
        // the consumer: what it may still bring comes back after the lease.
        let answer_within = expires.unwrap_or_default() + PULL_WAIT;
        loop {
            let Ok(next) = tokio::time::timeout(answer_within, messages.next()).await else {
                tracing::debug!("a queue pull went unanswered");
                break;
            };
            let Some(m) = next else { break };
            match m {
                Ok(m) => {
                    if let Some(leased) = self.leased(m).await {
                        out.push(leased);
                    }
                }
                // What came before the error is leased to us: hand it on.
                Err(e) if out.is_empty() => {
                    return Err(self.shared.fail("pull from a queue", e));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "queue pull ended early");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A pulled message as a leased event; one that is not an event is terminated.
    async fn leased(&self, m: Message) -> Option<Leased> {
        let seq = m.info().ok()?.stream_sequence;
        let decoded = codec::decode(
            &self.shared.subjects,
            seq,
            m.subject.as_str(),
            m.headers.as_ref(),
            &m.payload,
        );
        let (_, acker) = m.split();
        match decoded {
            Ok(event) => Some(Leased {
                event,
                lease: Arc::new(JsLease {
                    acker,
                    client: self.shared.client.clone(),
                }),
            }),
            Err(e) => {
                tracing::warn!(seq, reason = %e.0, "a queued message is not an event; dropping it");
                let _ = acker.ack_with(AckKind::Term).await;
                None
            }
        }
    }
}

impl SharedQueues for NatsQueues {
    fn take<'a>(
        &'a self,
        name: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>, LogError>> {
        async move {
            self.shared.connected()?;
            let max = max.max(1);
            let consumer = self.consumer(name).await?;
            let mut now = self.available(&consumer, max, None).await?;
            if !now.is_empty() || wait.is_zero() {
                now.sort_by_key(|m| m.event.id);
                return Ok(now);
            }
            // Nothing now: wait for one, then take whatever else came with it.
            let mut first = self
                .available(&consumer, 1, Some(wait.max(Duration::from_millis(100))))
                .await?;
            if !first.is_empty() && max > 1 {
                first.extend(self.available(&consumer, max - 1, None).await?);
            }
            // Released messages come back in no particular order: oldest first again.
            first.sort_by_key(|m| m.event.id);
            Ok(first)
        }
        .boxed()
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}

/// The lease of one pulled message.
struct JsLease {
    acker: Acker,
    /// To flush a release out before the node goes.
    client: async_nats::Client,
}

impl Lease for JsLease {
    fn ack(&self) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            self.acker
                .double_ack()
                .await
                .map_err(|e| LogError::Unavailable(format!("NATS queue acknowledgement: {e}")))
        }
        .boxed()
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        async move {
            // Flushed: a node releases what it holds as it shuts down, right before its
            // connection closes.
            let sent = match self.acker.ack_with(AckKind::Nak(None)).await {
                Ok(()) => self.client.flush().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "cannot release a queued message; its lease will run out");
            }
        }
        .boxed()
    }

    fn renew(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.acker.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "cannot renew the lease of a queued message");
            }
        }
        .boxed()
    }
}

/// The durable consumer name of a queue.
fn consumer_name(stream: &str, queue: &str) -> String {
    if queue.len() <= READABLE {
        format!("{stream}_q_{}", queue.replace('.', "~"))
    } else {
        // FNV-1a, 64 bits: only has to tell long queue names apart.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in queue.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{stream}_qh_{}_{h:016x}", &queue[..64].replace('.', "~"))
    }
}

#[cfg(test)]
mod tests {
    use super::consumer_name;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        assert_eq!(consumer_name("HERALD", "orders.eu"), "HERALD_q_orders~eu");
        let long_a = format!("{}.a", "x".repeat(200));
        let long_b = format!("{}.b", "x".repeat(200));
        let a = consumer_name("HERALD", &long_a);
        let b = consumer_name("HERALD", &long_b);
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() < 255);
            assert!(!n.contains(['.', '*', '>', ' ', '/']));
        }
    }
}
