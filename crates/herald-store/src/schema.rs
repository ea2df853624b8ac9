//! Connections, pragmas, the schema and loading the in-memory state at start-up.
//!
//! The schema (version 1, kept in `PRAGMA user_version`):
//! - `events(id INTEGER PRIMARY KEY, topic, event, data, time_ms)`: `id` is the rowid, so
//!   reads by id range walk the table b-tree directly; `events_topic_id` on `(topic, id)`
//!   serves per-topic reads and count retention.
//! - `topics(topic PRIMARY KEY, pruned_through)`: the highest id retention removed per topic,
//!   which `floor` needs and which cannot be recomputed once the rows are gone.
//! - `keys(key PRIMARY KEY, id, at_ms)`: idempotency keys, with `keys_at` on `at_ms` so that
//!   expiring them is a range delete.
//! - `meta(name PRIMARY KEY, value)`: `head`, the highest id assigned, as written by earlier
//!   versions at every commit; still read at start. It is not needed: an id is never reused
//!   because start-up takes the head as the highest of the ids in `events` and every topic's
//!   `pruned_through` (retention deletes rows only through `pruned_through`), so a commit now
//!   writes one page less.
//!
//! Version 2 adds the outbound webhooks (a version 1 file is upgraded in place at open):
//! - `webhooks(id PRIMARY KEY, body)`: endpoints as JSON ([`herald_core::Endpoint`]).
//! - `deliveries(id INTEGER PRIMARY KEY, endpoint, event_id, msg_id, event_type, body, status,
//!   attempts, next_at, last_chance, created_ms)`: one row per event and matching endpoint,
//!   written in the event's own transaction; `deliveries_due` on `(endpoint, status, next_at)`
//!   finds an endpoint's due work, `deliveries_endpoint` on `(endpoint, id)` pages its list.
//! - `attempts(delivery, n, at_ms, status_code, duration_ms, error, response_body)`.

use std::{path::Path, time::Duration};

use herald_core::{Topic, TopicTable};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Durability, StoreError};

/// The schema version this code writes and understands.
const SCHEMA_VERSION: i64 = 2;

/// How long a connection waits on a lock before giving up with `SQLITE_BUSY`. In WAL mode
/// readers and the writer do not block each other; this only covers start-up (a previous
/// writer of the same file still closing) and the final checkpoint.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    topic   TEXT    NOT NULL,
    event   TEXT    NOT NULL,
    data    TEXT    NOT NULL,
    time_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_topic_id ON events (topic, id);
CREATE TABLE IF NOT EXISTS topics (
    topic          TEXT    PRIMARY KEY,
    pruned_through INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
    key   TEXT    PRIMARY KEY,
    id    INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_at ON keys (at_ms);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhooks (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    endpoint    TEXT    NOT NULL,
    event_id    INTEGER NOT NULL,
    msg_id      TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    last_chance INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (endpoint, status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_endpoint ON deliveries (endpoint, id);
CREATE TABLE IF NOT EXISTS attempts (
    delivery      INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    status_code   INTEGER,
    duration_ms   INTEGER NOT NULL,
    error         TEXT,
    response_body TEXT    NOT NULL,
    PRIMARY KEY (delivery, n)
) WITHOUT ROWID;
";

/// Opens the one read-write connection (the writer thread's), switches the file to WAL,
/// applies the durability and creates or checks the schema.
pub(crate) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} cannot use write-ahead logging (journal mode stays {mode:?})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    // Temporary b-trees (sorts) stay in memory; the WAL is capped after checkpoints so one
    // burst does not leave a huge file behind.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "journal_size_limit", 64i64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(32);
    stable_plans(&conn)?;

    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {version}, newer than this herald understands ({SCHEMA_VERSION})",
            path.display()
        )));
    }
    // One transaction, so that a crash half-way through creation leaves nothing behind.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))?;
    Ok(conn)
}

/// Opens a read-only connection for the reader pool.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(16);
    stable_plans(&conn)?;
    Ok(conn)
}

/// Turns on SQLite's query planner stability guarantee: a cached statement keeps its plan
/// whatever values are bound. Without it SQLite re-parses and re-plans a statement each
/// time a new value is bound to a `LIMIT`/`OFFSET` parameter (count retention's
/// `... LIMIT 1 OFFSET ?2` ran on every group commit and was the writer's costliest step:
/// 14 % of its time went to re-preparing). The plans of these statements do not depend on
/// the values.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// What the log keeps in memory, rebuilt from the database at start-up.
pub(crate) struct Loaded {
    pub(crate) topics: TopicTable,
    /// Highest id ever assigned.
    pub(crate) head: u64,
    /// Time of the newest event, so that stored times never go backwards across a restart.
    pub(crate) last_time_ms: i64,
    /// Outbound webhook endpoints.
    pub(crate) endpoints: herald_core::webhook::EndpointSet,
}

pub(crate) fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let mut topics = TopicTable::new();
    let mut head = 0u64;

    let mut stmt = conn.prepare("SELECT topic, max(id), count(*) FROM events GROUP BY topic")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name = row.get_ref(0)?.as_str()?;
        let Ok(topic) = Topic::new(name) else {
            // A row no valid publish could have written: keep serving the rest.
            tracing::warn!(topic = name, "ignoring stored events with an invalid topic");
            continue;
        };
        let last_id = id_from_sql(row.get(1)?)?;
        let count = u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
        let stats = topics.entry(&topic);
        stats.last_id = last_id;
        stats.count = count;
        head = head.max(last_id);
    }
    drop(rows);
    drop(stmt);

    let mut stmt = conn.prepare("SELECT topic, pruned_through FROM topics")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name = row.get_ref(0)?.as_str()?;
        let Ok(topic) = Topic::new(name) else {
            tracing::warn!(topic = name, "ignoring retention state of an invalid topic");
            continue;
        };
        let through = id_from_sql(row.get(1)?)?;
        let stats = topics.entry(&topic);
        stats.pruned_through = stats.pruned_through.max(through);
        head = head.max(through);
    }
    drop(rows);
    drop(stmt);

    let stored_head: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'head'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(h) = stored_head {
        head = head.max(id_from_sql(h)?);
    }
    let last_time_ms: i64 = conn
        .query_row(
            "SELECT time_ms FROM events ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let endpoints = herald_core::webhook::EndpointSet::new();
    let mut stmt = conn.prepare("SELECT id, body FROM webhooks")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let body = row.get_ref(1)?.as_str()?;
        match serde_json::from_str::<herald_core::Endpoint>(body)
            .map_err(|e| e.to_string())
            .and_then(|e| herald_core::webhook::CompiledEndpoint::new(e).map_err(|e| e.to_string()))
        {
            Ok(c) => endpoints.put(std::sync::Arc::new(c)),
            Err(e) => {
                tracing::warn!(endpoint = id, error = %e, "ignoring an unreadable webhook endpoint")
            }
        }
    }
    drop(rows);
    drop(stmt);
    Ok(Loaded {
        topics,
        head,
        last_time_ms,
        endpoints,
    })
}

/// Ids are positive in the database; anything else is corruption, not a panic.
pub(crate) fn id_from_sql(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative event id {v}")))
}

/// SQLite integers are signed; ids and limits above `i64::MAX` are clamped (they cannot
/// occur in practice, and clamping keeps `id > ?` meaning "nothing newer").
pub(crate) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
