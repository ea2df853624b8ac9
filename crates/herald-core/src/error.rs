//! Errors of the core: bad input, and failures of the log underneath the hub.

use thiserror::Error;

/// Input that breaks SPEC section 1. Every variant is the client's fault (a 400).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// Not a valid topic.
    #[error("invalid topic {0:?}: use 1-255 bytes of dot-separated [A-Za-z0-9_-] segments")]
    Topic(String),
    /// Not a valid pattern.
    #[error(
        "invalid pattern {0:?}: use dot-separated [A-Za-z0-9_-] segments, `*` for one segment, a final `>` for the rest"
    )]
    Pattern(String),
    /// Not a valid event type.
    #[error("invalid event type {0:?}: use 1-128 printable ASCII characters without spaces")]
    EventType(String),
    /// Not a valid cursor.
    #[error("invalid cursor {0:?}: use an event id (a decimal number) or `now`")]
    Cursor(String),
    /// Not valid JSON data.
    #[error("invalid event data: {0}")]
    Data(String),
    /// An idempotency key that is empty or too long.
    #[error("invalid idempotency key: use 1-255 bytes")]
    Key,
}

/// A failure of the durable log. Never the client's fault (a 500 or a 503).
#[derive(Debug, Error)]
pub enum LogError {
    /// The log is shutting down or has shut down.
    #[error("the event log is closed")]
    Closed,
    /// The log cannot be reached (a cluster backend lost its connection).
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// The request is invalid for the store (an endpoint with a bad pattern).
    #[error("invalid: {0}")]
    Invalid(String),
    /// Any other storage failure.
    #[error("storage error: {0}")]
    Storage(String),
}
