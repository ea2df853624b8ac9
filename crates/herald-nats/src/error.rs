//! [`NatsError`]: what can go wrong opening the JetStream log.

use thiserror::Error;

/// A failure to open or set up the JetStream log. Later failures (a lost connection, a
/// refused publish) surface as [`herald_core::LogError`]s from the [`herald_core::Log`] methods.
#[derive(Debug, Error)]
pub enum NatsError {
    /// The options are unusable (an invalid stream name, unreadable credentials).
    #[error("invalid cluster options: {0}")]
    Options(String),
    /// The NATS server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What the client said.
        message: String,
    },
    /// JetStream refused to create or read the stream, a consumer or a bucket.
    #[error("JetStream {what}: {message}")]
    JetStream {
        /// What was attempted.
        what: &'static str,
        /// What the server or client said.
        message: String,
    },
}

impl NatsError {
    pub(crate) fn js(what: &'static str, e: impl std::fmt::Display) -> Self {
        NatsError::JetStream {
            what,
            message: e.to_string(),
        }
    }
}

impl From<NatsError> for herald_core::LogError {
    fn from(e: NatsError) -> Self {
        herald_core::LogError::Unavailable(e.to_string())
    }
}
