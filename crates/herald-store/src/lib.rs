//! Herald's embedded event log: [`SqliteLog`], an implementation of [`herald_core::Log`] on
//! one SQLite database, `<data dir>/herald.db`.
//!
//! # How it works
//! - **WAL mode, one writer.** A dedicated OS thread owns the only read-write connection.
//!   `append` sends its batch over a channel and awaits a oneshot answer. The thread does
//!   *group commit*: it takes one request, drains every other queued request (up to a few
//!   thousand events), writes them all in one transaction and commits once, so one fsync
//!   acknowledges many publishers. Each request runs under its own `SAVEPOINT`: a batch is
//!   all or nothing, and a failing batch fails alone.
//! - **Commit, then fan out, then answer.** After the commit the thread updates the
//!   in-memory stats, calls the [`CommitSink`](herald_core::CommitSink) with the new events
//!   in id order, and only then answers the callers: once `append` returns, subscribers
//!   have been handed the event and every read sees it.
//! - **Ids** are one global sequence assigned by the writer (head + 1) as the table's
//!   `INTEGER PRIMARY KEY`. At open the head is the highest id in `events` or in any topic's
//!   `pruned_through` (retention records how far it deleted), so ids continue after a
//!   restart and are never reused, even when retention removed every row.
//! - **Readers never block the writer.** `read` and `latest` run on a small pool of
//!   read-only connections (at most 4, opened lazily) on tokio's blocking pool. WAL gives
//!   each read a consistent snapshot while the writer keeps committing. A read for a few
//!   concrete topics merges per-topic index ranges; a read for a pattern that matches many
//!   topics walks the table by id (narrowed by the patterns' common literal prefix) and
//!   matches topics in Rust.
//! - **Memory.** Per-topic stats (newest id, count, pruned-through) and the head live in
//!   memory ([`herald_core::TopicTable`], an atomic), rebuilt at open; `head`, `floor` and
//!   `topics` never touch the disk.
//! - **Idempotency keys** are a table (key → id, time), so they survive restarts; a key seen
//!   within `dedupe_window` returns the earlier event and stores nothing, also when the
//!   first use is earlier in the same batch or group.
//! - **Retention.** Count limits are enforced by the writer in the append's own
//!   transaction; age limits and expired keys by [`Log::maintain`](herald_core::Log::maintain),
//!   which the writer thread runs between groups. The highest pruned id per topic is
//!   persisted (`floor` needs it after a restart).
//! - **Shutdown.** [`Log::close`](herald_core::Log::close) lets the writer finish what is
//!   queued, checkpoints and truncates the WAL, and stops the thread; later appends get
//!   [`LogError::Closed`](herald_core::LogError::Closed). Dropping the log without `close`
//!   stops the writer too (in the background; nothing waits for it).
//!
//! # Durability
//! [`Durability`] maps `server.durability` to `PRAGMA synchronous` (in WAL mode):
//! - `fsync` → `FULL`: the WAL is fsynced at each group commit before the appends in it are
//!   acknowledged. Acknowledged events survive power loss.
//! - `batch` → `NORMAL`: each commit is written to the WAL file (the OS page cache) before
//!   the acknowledgement; fsync happens at checkpoints. Survives a process crash
//!   (`kill -9`), not a power loss or kernel crash.
//! - `memory` → `OFF`: no fsync at all. Survives a process crash; a power loss may lose
//!   recent events or corrupt the file. For tests and disposable data.
//!
//! # Opening
//! [`SqliteLog::open`] (also [`open`]) is async and does its file work on tokio's blocking
//! pool; [`SqliteLog::open_blocking`] is the same for code without a runtime. Both create
//! the directory when missing.
//!
//! # Layout
//! - `log`: [`SqliteLog`] (the [`herald_core::Log`] implementation the hub holds),
//!   [`Durability`], [`open`].
//! - `writer`: the writer thread: group commit, savepoints, dedupe, count and age
//!   retention, the final checkpoint.
//! - `reader`: the read-only connection pool and the read plans (per-topic merge or
//!   prefix-narrowed scan), rows back into events.
//! - `schema`: connections and pragmas, the schema (documented there), loading the
//!   in-memory state at open.
//! - `error`: [`StoreError`].

mod error;
mod log;
mod reader;
mod schema;
mod webhooks;
mod writer;

#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use log::{DB_FILE, Durability, SqliteLog, open};
