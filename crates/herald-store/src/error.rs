//! [`StoreError`]: what can go wrong opening or running the SQLite log.

use std::path::PathBuf;

use herald_core::LogError;
use thiserror::Error;

/// A failure of the SQLite store. At the [`herald_core::Log`] boundary it becomes a
/// [`LogError::Storage`], since none of it is the client's fault.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory or the writer thread could not be created.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database holds something this version cannot use (a newer schema, a row that is
    /// not a valid event).
    #[error("bad data in the event store: {0}")]
    Corrupt(String),
    /// `server.durability` is none of `fsync`, `batch`, `memory`.
    #[error("unknown durability {0:?}: use fsync, batch or memory")]
    Durability(String),
    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another herald process")]
    Locked(PathBuf),
    /// A blocking task of the store died (it panicked or the runtime shut down).
    #[error("store task failed: {0}")]
    Task(String),
}

impl From<StoreError> for LogError {
    fn from(e: StoreError) -> Self {
        LogError::Storage(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Sqlite(e.into())
    }
}
