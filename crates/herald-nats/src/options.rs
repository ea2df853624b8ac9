//! [`NatsOptions`]: how to reach NATS and which stream to use (`[cluster]`).

use std::{path::PathBuf, time::Duration};

use crate::NatsError;

/// Where the cluster's JetStream is and how the log uses it.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port` (several comma-separated URLs are allowed).
    pub url: String,
    /// The events stream (`cluster.stream`, default `HERALD`). Subjects are
    /// `<stream in lower case>.ev.<topic>`; the other streams and buckets are named after it.
    pub stream: String,
    /// Replicas of every stream and bucket (`cluster.replicas`, default 1).
    pub replicas: usize,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for `tls://` URLs.
    pub tls_ca: Option<PathBuf>,
    /// How long connecting may take at start-up.
    pub connect_timeout: Duration,
    /// How long a node's claim on shared work lasts unless renewed (`cluster.lease`): the
    /// ack wait of the webhook work queue (a delivery it is attempting, marked in progress
    /// every third of this while the attempt runs), of the outbox consumer (the events it is
    /// turning into deliveries) and of the STOMP queues (messages it holds for its consumers).
    /// When a node dies (`kill -9`), the other nodes take its work over after at most this
    /// long. Default 30 s.
    pub lease: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "HERALD".into(),
            replicas: 1,
            credentials: None,
            tls_ca: None,
            connect_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        }
    }
}

impl NatsOptions {
    /// Options for a server at `url`, defaults otherwise.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The subject prefix: the stream name in lower case.
    pub(crate) fn prefix(&self) -> String {
        self.stream.to_ascii_lowercase()
    }

    /// Checks what the server would refuse later with a less helpful message.
    pub(crate) fn validate(&self) -> Result<(), NatsError> {
        let ok = !self.stream.is_empty()
            && self.stream.len() <= 32
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(NatsError::Options(format!(
                "stream name {:?}: use 1-32 characters of [A-Za-z0-9_-]",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(NatsError::Options(format!(
                "replicas = {}: use 1 to 5",
                self.replicas
            )));
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.lease) {
            return Err(NatsError::Options(format!(
                "lease = {:?}: use {MIN_LEASE:?} to {MAX_LEASE:?}",
                self.lease
            )));
        }
        Ok(())
    }
}

/// Bounds of [`NatsOptions::lease`]: renewals every third of it must keep up, and a
/// dead node's work should not wait for hours.
const MIN_LEASE: Duration = Duration::from_millis(300);
const MAX_LEASE: Duration = Duration::from_secs(3600);
