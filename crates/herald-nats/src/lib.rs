//! Herald's cluster event log: [`JetStreamLog`], an implementation of [`herald_core::Log`] on
//! NATS JetStream, shared by every node of a cluster (SPEC section 13).
//!
//! # How it works
//! - **One stream, the sequence is the id.** Events live in the stream `<stream>` (default
//!   `HERALD`) on the subjects `<prefix>.ev.<topic>` (`<prefix>` = the stream name in lower
//!   case), so topic patterns are NATS filters as they are. Headers carry the event type and
//!   the time (the publishing node's clock, ms); the payload is the compact JSON data. Ids
//!   are strictly increasing but may skip numbers (rolled-back batches, other writers).
//! - **Appends** publish each event in order on the node's one connection, pipelined in
//!   chunks of 128, and await the acknowledgements in order. A batch is **best-effort all or nothing**: JetStream 2.9 has
//!   no atomic multi-message publish, so when one event of a batch fails the ones already
//!   stored are deleted again and the error returned. Between the store and the delete other
//!   nodes' subscribers may have been handed those events, and a delete that fails (the
//!   connection just went) leaves them stored.
//! - **Fan-out.** Every node runs one feed (an ephemeral pull consumer over `<prefix>.ev.>`,
//!   see `feed`) that hands events to the [`CommitSink`](herald_core::CommitSink) in id
//!   order from one task, whoever published them. The node's *head* is the last id handed
//!   over; `append` returns only once the head passed its events, so the sink saw them and
//!   reads on this node see them. Reads are capped at the head: no holes.
//! - **Idempotency keys** are `Nats-Msg-Id` (percent-encoded); the stream's duplicate window
//!   is `dedupe_window`. A duplicate answers with the earlier event, read back by sequence.
//! - **Retention.** The stream's own limits are a backstop above the rules; `maintain` applies
//!   the rules per topic with purges and records floors in the KV bucket `<stream>_floors`,
//!   which every node watches (see `retention` for the approximation of floors).
//! - **Lost connection.** `ready` and `append` answer [`LogError::Unavailable`]
//!   (503) while the connection is down; the client reconnects by itself and the feed resumes
//!   after its head with no gap.
//! - **Webhooks** (see `webhooks`): endpoints in the KV bucket `<stream>_webhooks`, watched
//!   by every node; the events stream is the outbox, read by the durable consumer
//!   `<stream>_outbox` that every node pulls from and acknowledges only once an event's
//!   deliveries are stored; delivery bodies in the stream `<stream>_DLV` (the sequence is the
//!   delivery id), their state in `<stream>_dlvstate` and attempts in `<stream>_attempts`.
//!   Each delivery to be made is a message of the work-queue stream `<stream>_DLVQ`, pulled
//!   by the nodes through one durable consumer per endpoint: one node holds it at a time,
//!   acknowledges it on success, answers a nak with the retry delay for a retry, and a dead
//!   node's messages go to the others when the ack wait (`lease`) runs out.
//! - **Queues** (see `queues`): STOMP `/queue/<name>` messages are events on `_queue.<name>`;
//!   each queue is a durable pull consumer every node pulls from, so each message is leased
//!   to one node at a time, acknowledged when consumed, released on NACK or disconnect, and
//!   handed to another node when its holder dies (after `lease`).
//!
//! # Server version
//! Works with nats-server 2.9 (Debian's): one filter subject per consumer, no batch publish.
//!
//! # Layout
//! - `log`: [`JetStreamLog`] (the [`herald_core::Log`] implementation), opening, appends.
//! - `options`: [`NatsOptions`].
//! - `codec`: subjects, headers and payloads; messages back into events.
//! - `feed`: the node's ordered feed into the sink.
//! - `read`: `read` and `latest` through ephemeral consumers.
//! - `retention`: `maintain` (purges per topic) and `floors` (the shared floors bucket).
//! - `queues`: the shared STOMP queues.
//! - `webhooks`: the cluster webhooks (endpoints, outbox, deliveries, work queue).
//! - `error`: [`NatsError`].
//!
//! [`LogError::Unavailable`]: herald_core::LogError::Unavailable

mod codec;
mod error;
mod feed;
mod floors;
mod log;
mod options;
mod queues;
mod read;
mod retention;
mod webhooks;

pub use error::NatsError;
pub use log::JetStreamLog;
pub use options::NatsOptions;
