//! Herald's heart: events, topics and patterns, the pattern index, the [`Hub`] and the
//! [`Log`] trait with its in-memory implementation.
//!
//! Nothing here does network I/O or knows a wire protocol: doors (HTTP, WebSocket, STOMP...)
//! call the [`Hub`], and the [`Log`] implementations live in their own crates.
//!
//! # Layout
//! - [`topic`]: [`Topic`] and [`Pattern`] validation and matching (`*`, `>`).
//! - [`event`]: [`Event`] (stored, shared by `Arc`, caches its transport encodings) and
//!   [`NewEvent`] (what a publisher hands in).
//! - [`index`]: [`PatternIndex`], the trie that finds a topic's subscribers.
//! - [`log`]: the [`Log`] trait, retention rules and per-topic bookkeeping.
//! - [`memory`]: the in-memory log, [`MemoryLog`].
//! - [`webhook`]: outbound webhook endpoints and deliveries, the [`Webhooks`] trait every log
//!   implements (deliveries are written in the event's own append), [`webhook::MemoryWebhooks`].
//! - [`queue`]: [`SharedQueues`], competing consumers shared by the nodes of a cluster.
//! - [`hub`]: [`Hub`], [`Subscription`] and the seam-free resume.
//! - [`error`]: [`ValidationError`] (client's fault) and [`LogError`] (storage's).

pub mod error;
pub mod event;
pub mod hub;
pub mod index;
pub mod log;
pub mod memory;
pub mod queue;
pub mod topic;
pub mod webhook;

pub use error::{LogError, ValidationError};
pub use event::{Event, NewEvent};
pub use hub::{Cursor, Hub, HubConfig, HubError, Item, Subscription, SubscriptionError};
pub use index::PatternIndex;
pub use log::{
    Appended, CommitSink, Log, LogOptions, Retention, RetentionRule, TopicInfo, TopicStats,
    TopicTable,
};
pub use memory::MemoryLog;
pub use queue::{Lease, Leased, SharedQueues};
pub use topic::{Pattern, Topic};
pub use webhook::{Endpoint, Webhooks};
