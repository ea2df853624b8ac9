//! Reads: a small pool of read-only connections used from `spawn_blocking`, the query plans
//! for pattern reads, and turning rows back into [`Event`]s.
//!
//! In WAL mode a reader works on a snapshot and never waits for the writer (nor the writer
//! for it), so reads run on their own connections, off the async runtime's threads.

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use herald_core::{Event, LogError, Pattern, Topic};
use parking_lot::Mutex;
use rusqlite::{Connection, Row, Rows, params};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::{
    StoreError,
    schema::{id_from_sql, open_reader, to_sql_int},
};

/// Most read connections open at once (and most reads running at once). SQLite readers
/// scale with cores, but a handful is plenty next to one writer and keeps file handles low.
pub(crate) const MAX_READERS: usize = 4;

/// Read-only connections, opened on first use and reused.
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool. Waiting for a permit is
    /// async, so a burst of reads queues without tying up blocking threads.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LogError::Closed)?;
        let pool = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match pool.idle.lock().pop() {
                Some(c) => c,
                None => open_reader(&pool.path)?,
            };
            let out = f(&conn);
            pool.idle.lock().push(conn);
            out
        });
        match task.await {
            Ok(result) => result.map_err(LogError::from),
            Err(e) => Err(LogError::Storage(format!("read task failed: {e}"))),
        }
    }
}

/// How a pattern read finds its rows.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Few enough concrete topics: one index range per topic, merged by id.
    Topics(Vec<Topic>),
    /// Too many topics: walk the table by id and match in Rust, narrowed to
    /// `prefix <= topic < upper` when every pattern starts with the same literal text.
    Scan { range: Option<(String, String)> },
}

impl Plan {
    /// Topics up to which a read merges per-topic ranges instead of scanning by id.
    pub(crate) const MAX_TOPICS: usize = 64;

    pub(crate) fn scan(patterns: &[Pattern]) -> Self {
        let mut prefix: &str = match patterns.first() {
            Some(p) => p.literal_prefix(),
            None => "",
        };
        for p in patterns.iter().skip(1) {
            let other = p.literal_prefix();
            let common = prefix
                .bytes()
                .zip(other.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            prefix = &prefix[..common];
        }
        Plan::Scan {
            range: upper_bound(prefix).map(|upper| (prefix.to_owned(), upper)),
        }
    }
}

/// The smallest string greater than every string starting with `prefix`. Topics are ASCII
/// (`[A-Za-z0-9_.-]`), so bumping the last byte stays ASCII.
fn upper_bound(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.pop()?;
    if !last.is_ascii() || last == 0x7f {
        return None;
    }
    bytes.push(last + 1);
    String::from_utf8(bytes).ok()
}

/// Which end of the log a read starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Oldest first, after a cursor (`read`).
    Asc,
    /// Newest first (`latest`; the caller reverses).
    Desc,
}

/// Reuses `Topic` and event-type allocations across the rows of one query, so a page of
/// events from one topic shares one `Arc<str>` like live events do.
#[derive(Default)]
pub(crate) struct Interner {
    topics: HashSet<Topic>,
    types: HashSet<Arc<str>>,
}

impl Interner {
    pub(crate) fn with_topics(topics: &[Topic]) -> Self {
        Self {
            topics: topics.iter().cloned().collect(),
            types: HashSet::new(),
        }
    }

    fn topic(&mut self, s: &str) -> Result<Topic, StoreError> {
        if let Some(t) = self.topics.get(s) {
            return Ok(t.clone());
        }
        let t = Topic::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.topics.insert(t.clone());
        Ok(t)
    }

    fn event_type(&mut self, s: &str) -> Arc<str> {
        if let Some(t) = self.types.get(s) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(s);
        self.types.insert(t.clone());
        t
    }
}

/// A row of `id, topic, event, data, time_ms` (every event query selects these, in this
/// order) as an event. Bad rows are errors, never panics.
pub(crate) fn event_from_row(
    row: &Row<'_>,
    interner: &mut Interner,
) -> Result<Arc<Event>, StoreError> {
    let id = id_from_sql(row.get(0)?)?;
    let topic = interner.topic(row.get_ref(1)?.as_str()?)?;
    let event = interner.event_type(row.get_ref(2)?.as_str()?);
    let data: String = row.get(3)?;
    let data = RawValue::from_string(data)
        .map_err(|e| StoreError::Corrupt(format!("event {id} has invalid JSON data: {e}")))?;
    let time_ms: i64 = row.get(4)?;
    Ok(Arc::new(Event::new(id, topic, event, data, time_ms)))
}

fn next_event(
    rows: &mut Rows<'_>,
    interner: &mut Interner,
) -> Result<Option<Arc<Event>>, StoreError> {
    match rows.next()? {
        Some(row) => event_from_row(row, interner).map(Some),
        None => Ok(None),
    }
}

/// What one read asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Only ids above this.
    pub(crate) after: u64,
    /// Only ids up to this: the head when the plan was made. The plan's topic list is
    /// complete up to that head (the writer updates the topic stats before the head), and
    /// a newer commit may hold a new topic the plan does not know: returning its siblings
    /// without it would leave a gap that a resuming subscriber skips for good.
    pub(crate) upto: u64,
    /// Most events returned.
    pub(crate) limit: usize,
    /// Which end to start from.
    pub(crate) order: Order,
}

/// Up to `limit` events matching `patterns` in the window, oldest first (ascending) or
/// newest first (descending), following `plan`.
pub(crate) fn read(
    conn: &Connection,
    plan: &Plan,
    patterns: &[Pattern],
    window: Window,
) -> Result<Vec<Arc<Event>>, StoreError> {
    match plan {
        Plan::Topics(topics) => read_topics(conn, topics, window),
        Plan::Scan { range } => scan(conn, range.as_ref(), patterns, window),
    }
}

/// Merges one index range per topic by id: reads `limit` rows plus one look-ahead per
/// topic, however long each topic's retained history is.
fn read_topics(
    conn: &Connection,
    topics: &[Topic],
    window: Window,
) -> Result<Vec<Arc<Event>>, StoreError> {
    let Window {
        after,
        upto,
        limit,
        order,
    } = window;
    let sql = match order {
        Order::Asc => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE topic = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4"
        }
        Order::Desc => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE topic = ?1 AND id > ?2 AND id <= ?3 ORDER BY id DESC LIMIT ?4"
        }
    };
    // All cursors must see one snapshot. Without an explicit transaction SQLite ends the
    // read transaction whenever no statement is active (a topic's cursor that finds nothing
    // is reset at once), and a later cursor could see a newer commit: the merge would then
    // hold id N+2 of one topic without id N+1 of another, a gap a resuming subscriber would
    // never fill. Dropping the transaction rolls it back, which for reads just ends it.
    let _snapshot = if topics.len() > 1 {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    };
    let mut interner = Interner::with_topics(topics);
    let (after_sql, upto_sql) = (to_sql_int(after), to_sql_int(upto));
    let limit_sql = to_sql_int(limit as u64);
    let mut stmts = Vec::with_capacity(topics.len());
    for _ in topics {
        stmts.push(conn.prepare_cached(sql)?);
    }
    let mut cursors = Vec::with_capacity(topics.len());
    for (stmt, topic) in stmts.iter_mut().zip(topics) {
        cursors.push(stmt.query(params![topic.as_str(), after_sql, upto_sql, limit_sql])?);
    }
    let mut heads = Vec::with_capacity(cursors.len());
    for rows in &mut cursors {
        heads.push(next_event(rows, &mut interner)?);
    }
    let mut out = Vec::with_capacity(limit.min(1024));
    while out.len() < limit {
        let mut best: Option<(usize, u64)> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(ev) = head {
                let better = match (best, order) {
                    (None, _) => true,
                    (Some((_, b)), Order::Asc) => ev.id < b,
                    (Some((_, b)), Order::Desc) => ev.id > b,
                };
                if better {
                    best = Some((i, ev.id));
                }
            }
        }
        let Some((i, _)) = best else { break };
        let next = next_event(&mut cursors[i], &mut interner)?;
        if let Some(ev) = std::mem::replace(&mut heads[i], next) {
            out.push(ev);
        }
    }
    Ok(out)
}

/// Walks the table by id, matching topics in Rust, until `limit` matches.
fn scan(
    conn: &Connection,
    range: Option<&(String, String)>,
    patterns: &[Pattern],
    window: Window,
) -> Result<Vec<Arc<Event>>, StoreError> {
    let Window {
        after,
        upto,
        limit,
        order,
    } = window;
    let sql = match (range.is_some(), order) {
        (false, Order::Asc) => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE id > ?1 AND id <= ?2 ORDER BY id"
        }
        (false, Order::Desc) => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE id > ?1 AND id <= ?2 ORDER BY id DESC"
        }
        (true, Order::Asc) => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE id > ?1 AND id <= ?2 AND topic >= ?3 AND topic < ?4 ORDER BY id"
        }
        (true, Order::Desc) => {
            "SELECT id, topic, event, data, time_ms FROM events \
             WHERE id > ?1 AND id <= ?2 AND topic >= ?3 AND topic < ?4 ORDER BY id DESC"
        }
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let (after, upto) = (to_sql_int(after), to_sql_int(upto));
    let mut rows = match range {
        Some((lo, hi)) => stmt.query(params![after, upto, lo, hi])?,
        None => stmt.query(params![after, upto])?,
    };
    let mut interner = Interner::default();
    let mut out = Vec::with_capacity(limit.min(1024));
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        let topic = row.get_ref(1)?.as_str()?;
        if patterns.iter().any(|p| p.matches(topic)) {
            out.push(event_from_row(row, &mut interner)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_ranges() {
        let p =
            |s: &[&str]| -> Vec<Pattern> { s.iter().map(|s| Pattern::new(s).unwrap()).collect() };
        let range = |ps: &[&str]| match Plan::scan(&p(ps)) {
            Plan::Scan { range } => range,
            Plan::Topics(_) => unreachable!(),
        };
        assert_eq!(range(&[">"]), None);
        assert_eq!(
            range(&["orders.>"]),
            Some(("orders.".to_owned(), "orders/".to_owned()))
        );
        assert_eq!(
            range(&["orders.eu.*", "orders.us.>"]),
            Some(("orders.".to_owned(), "orders/".to_owned()))
        );
        assert_eq!(range(&["orders.>", "users.>"]), None);
        assert_eq!(
            range(&["ab", "ab.*"]),
            Some(("ab".to_owned(), "ac".to_owned()))
        );
    }
}
