//! Queues shared by the nodes of a cluster: competing consumers whose messages are leased to
//! one node at a time (STOMP `/queue/...` destinations).
//!
//! A single node keeps its queues itself (the messages and acknowledgements are events in
//! its log). A log shared by several nodes also offers [`SharedQueues`]: a node *takes*
//! messages of a queue for its own consumers, and each taken message stays leased to that
//! node until it is acknowledged (consumed, never handed out again), released (handed out
//! again at once, to any node) or its lease runs out without renewal (the node died).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;

use crate::{Event, LogError};

/// A message taken from a shared queue, leased to this node.
pub struct Leased {
    /// The queued message (an event on `_queue.<name>`).
    pub event: Arc<Event>,
    /// Settles the lease.
    pub lease: Arc<dyn Lease>,
}

impl std::fmt::Debug for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased")
            .field("event", &self.event.id)
            .finish_non_exhaustive()
    }
}

/// The lease on one taken message.
pub trait Lease: Send + Sync + 'static {
    /// Consumed: the message is never handed out again. Returns once the queue recorded it.
    fn ack(&self) -> BoxFuture<'_, Result<(), LogError>>;
    /// Given back: the message is handed out again at once, to any node.
    fn release(&self) -> BoxFuture<'_, ()>;
    /// Still being worked on: the lease starts over.
    fn renew(&self) -> BoxFuture<'_, ()>;
}

/// Queues shared by every node of a cluster.
pub trait SharedQueues: Send + Sync + 'static {
    /// Takes up to `max` messages of queue `name` for this node, oldest first, waiting at most
    /// `wait` for the first one (an empty result when none came).
    fn take<'a>(
        &'a self,
        name: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>, LogError>>;

    /// How long a lease lasts without renewal; holders renew every third of it.
    fn lease(&self) -> Duration;
}
