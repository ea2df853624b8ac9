//! The writer thread: the only owner of the read-write connection.
//!
//! One OS thread (not a tokio task) because every SQLite call blocks, and a commit under
//! `synchronous=FULL` blocks for an fsync; keeping it off the runtime means a slow disk
//! delays publishers, never unrelated tasks.
//!
//! Group commit: the thread takes one command, then drains whatever appends are already
//! queued (up to [`MAX_GROUP_EVENTS`] events) and writes them all in one transaction, so a
//! single fsync acknowledges many publishers. No timer is involved: while one commit is on
//! disk the next group queues up by itself, so batching grows with load and costs nothing
//! when idle. Each append call that is more than one statement gets a `SAVEPOINT`, so a
//! failing batch is rolled back alone while the rest of the group commits (a one-statement
//! append is undone by SQLite itself when it fails).
//!
//! After a commit, in this order: the in-memory topic stats and head are updated, the
//! [`CommitSink`](herald_core::CommitSink) is called with the new events in id order, and
//! only then are the callers answered. So when `append` returns, fan-out has happened and
//! reads see the event; and since only this thread calls the sink, calls never overlap.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use herald_core::{
    Appended, CommitSink, Event, LogError, LogOptions, NewEvent, Topic, TopicTable,
    event::now_ms,
    webhook::{EndpointSet, NewDelivery, Signal},
};
use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::{
    StoreError,
    reader::{Interner, event_from_row},
    schema::to_sql_int,
};

/// Most events written in one group transaction (the first append of a group is always
/// taken whole, however large). Bounds the time one commit holds the write lock and the
/// memory of one fan-out call.
pub(crate) const MAX_GROUP_EVENTS: usize = 4096;

/// What the log keeps in memory, shared by the writer thread and the [`crate::SqliteLog`]
/// handle. Only the writer thread changes `topics` and `head`.
pub(crate) struct Shared {
    pub(crate) topics: RwLock<TopicTable>,
    pub(crate) head: AtomicU64,
    pub(crate) sink: RwLock<Option<Arc<dyn CommitSink>>>,
    /// Set by `close()`: new appends are refused at once.
    pub(crate) closed: AtomicBool,
    /// Cleared when the writer thread exits, however it exits.
    pub(crate) writer_alive: AtomicBool,
    pub(crate) options: LogOptions,
    /// The data directory's lock, held while the writer thread lives.
    pub(crate) lock: parking_lot::Mutex<Option<std::fs::File>>,
    /// Outbound webhook endpoints; only the writer thread changes them, so an append
    /// matches against exactly the endpoints committed before it.
    pub(crate) endpoints: EndpointSet,
    /// Wakes the webhook dispatcher when deliveries are written.
    pub(crate) signal: Arc<Signal>,
}

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

/// A request to the writer thread.
pub(crate) enum Command {
    Append {
        batch: Vec<NewEvent>,
        reply: Reply<Vec<Appended>>,
    },
    Maintain(Reply<()>),
    Close(Reply<()>),
    /// Any other write (webhook endpoints and deliveries): runs on the writer thread, which
    /// serializes it with appends; the closure answers its caller itself.
    Exec(Box<dyn FnOnce(&mut Writer) + Send>),
}

/// Changes to one topic's stats made by an uncommitted transaction; applied to the shared
/// [`TopicTable`] only once the commit succeeded.
#[derive(Debug, Default)]
struct Delta {
    last_id: u64,
    added: u64,
    removed: u64,
    pruned_through: u64,
}

type Deltas = HashMap<Topic, Delta>;

/// What a committed group hands back.
struct Group {
    results: Vec<Result<Vec<Appended>, LogError>>,
    fresh: Vec<Arc<Event>>,
    deltas: Deltas,
    head: u64,
    /// Endpoints that got deliveries.
    marked: Vec<String>,
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    /// Newest time stamped on an event; times never go backwards, so id order is time order
    /// and age retention can stop at the first young row.
    last_time_ms: i64,
    dedupe_window_ms: i64,
}

/// Marks the writer dead when its thread ends, also by a panic.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.writer_alive.store(false, Ordering::Release);
        // No more writes from this process: another log may open the directory.
        self.0.lock.lock().take();
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        last_time_ms: i64,
    ) -> Self {
        let dedupe_window_ms = millis(shared.options.dedupe_window);
        Self {
            conn,
            shared,
            rx,
            last_time_ms,
            dedupe_window_ms,
        }
    }

    /// The thread's body: serve commands until `close` or until every sender is gone
    /// (the log was dropped without `close`).
    pub(crate) fn run(mut self) {
        let _alive = AliveGuard(self.shared.clone());
        let mut pending: Option<Command> = None;
        loop {
            let cmd = match pending.take() {
                Some(cmd) => cmd,
                None => match self.rx.blocking_recv() {
                    Some(cmd) => cmd,
                    None => break,
                },
            };
            match cmd {
                Command::Append { batch, reply } => {
                    let mut events = batch.len();
                    let mut group = vec![(batch, reply)];
                    while events < MAX_GROUP_EVENTS {
                        match self.rx.try_recv() {
                            Ok(Command::Append { batch, reply }) => {
                                events += batch.len();
                                group.push((batch, reply));
                            }
                            // Maintenance and close keep their place in the queue: run them
                            // after this group.
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Command::Maintain(reply) => {
                    let result = self.maintain().map_err(|e| {
                        tracing::error!(error = %e, "event log maintenance failed");
                        LogError::from(e)
                    });
                    let _ = reply.send(result);
                }
                Command::Close(reply) => {
                    let _ = reply.send(self.checkpoint().map_err(LogError::from));
                    break;
                }
                Command::Exec(f) => {
                    if std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut self))).is_err() {
                        tracing::error!("a store write panicked");
                        self.rollback();
                    }
                }
            }
        }
        // Whatever was queued behind `close` is refused rather than silently dropped.
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Append { reply, .. } => {
                    let _ = reply.send(Err(LogError::Closed));
                }
                Command::Maintain(reply) => {
                    let _ = reply.send(Err(LogError::Closed));
                }
                Command::Close(reply) => {
                    let _ = reply.send(Ok(()));
                }
                // Dropping it drops its reply sender: the caller sees the log closed.
                Command::Exec(_) => {}
            }
        }
        tracing::debug!("event log writer stopped");
    }

    /// A timestamp for the next write, never earlier than the previous one.
    pub(crate) fn tick(&mut self) -> i64 {
        self.last_time_ms = now_ms().max(self.last_time_ms);
        self.last_time_ms
    }

    fn exec(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    pub(crate) fn rollback(&self) {
        // SQLite may already have rolled back by itself (I/O errors, SQLITE_FULL).
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback failed");
        }
    }

    /// Runs `f` in one write transaction: commits on success, rolls back otherwise.
    pub(crate) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.exec("BEGIN IMMEDIATE")?;
        let result = f(self).and_then(|v| {
            self.exec("COMMIT")?;
            Ok(v)
        });
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn commit_group(&mut self, group: Vec<(Vec<NewEvent>, Reply<Vec<Appended>>)>) {
        let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let now = self.tick();
        match self.in_transaction(|w| w.write_group(batches, now)) {
            Ok(group) => {
                self.apply(group.deltas);
                self.shared.head.fetch_max(group.head, Ordering::AcqRel);
                if !group.marked.is_empty() {
                    self.shared
                        .signal
                        .mark(group.marked.iter().map(String::as_str));
                }
                if !group.fresh.is_empty() {
                    self.fan_out(&group.fresh);
                }
                for (reply, result) in replies.into_iter().zip(group.results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, appends = replies.len(), "group commit failed");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(LogError::Storage(msg.clone())));
                }
            }
        }
    }

    /// Calls the sink. A panicking sink is a bug above the log; it must not kill the only
    /// writer (every later publish would fail), so it is caught and logged.
    fn fan_out(&self, events: &[Arc<Event>]) {
        let sink = self.shared.sink.read().clone();
        if let Some(sink) = sink
            && std::panic::catch_unwind(AssertUnwindSafe(|| sink.committed(events))).is_err()
        {
            tracing::error!(events = events.len(), "commit sink panicked");
        }
    }

    fn write_group(&mut self, batches: Vec<Vec<NewEvent>>, now: i64) -> Result<Group, StoreError> {
        let first_id = self.shared.head.load(Ordering::Acquire) + 1;
        let mut next_id = first_id;
        let mut results = Vec::with_capacity(batches.len());
        let mut fresh: Vec<Arc<Event>> = Vec::new();
        let mut deltas = Deltas::new();
        let mut marked = Vec::new();
        // With one append in the group the transaction itself is its all-or-nothing unit.
        let several = batches.len() > 1;
        // Without endpoints an append of one event without a key is one INSERT, and SQLite
        // undoes a failed statement by itself: no savepoint needed (they cost two more
        // statements and a statement journal per append).
        let plain = self.shared.endpoints.is_empty();
        for batch in batches {
            let savepoints = several && !(plain && batch.len() == 1 && batch[0].key.is_none());
            if savepoints {
                self.exec("SAVEPOINT batch")?;
            }
            let start_len = fresh.len();
            let start_id = next_id;
            match self.append_batch(batch, &mut next_id, now, &mut fresh, &mut marked) {
                Ok(out) => {
                    if savepoints {
                        self.exec("RELEASE batch")?;
                    }
                    for ev in &fresh[start_len..] {
                        let d = deltas.entry(ev.topic.clone()).or_default();
                        d.last_id = ev.id;
                        d.added += 1;
                    }
                    results.push(Ok(out));
                }
                Err(e) if several && !self.conn.is_autocommit() => {
                    // Only this batch fails; its ids are handed out again, so the sequence
                    // stays gapless.
                    if savepoints {
                        self.exec("ROLLBACK TO batch")?;
                        self.exec("RELEASE batch")?;
                    }
                    fresh.truncate(start_len);
                    next_id = start_id;
                    tracing::warn!(error = %e, "append rolled back");
                    results.push(Err(LogError::from(e)));
                }
                // The transaction is gone (or was only this batch): the whole group fails.
                Err(e) => return Err(e),
            }
        }
        for (topic, d) in &mut deltas {
            self.enforce_count(topic, d)?;
        }
        // The head is not stored: every id ever assigned is either still in `events` or at
        // most its topic's `pruned_through`, which is what start-up reads (see `schema`).
        let head = next_id - 1;
        Ok(Group {
            results,
            fresh,
            deltas,
            head,
            marked,
        })
    }

    /// Inserts one append call's events (or finds their earlier duplicates).
    fn append_batch(
        &mut self,
        batch: Vec<NewEvent>,
        next_id: &mut u64,
        now: i64,
        fresh: &mut Vec<Arc<Event>>,
        marked: &mut Vec<String>,
    ) -> Result<Vec<Appended>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        for new in batch {
            if let Some(key) = &new.key
                && let Some(earlier) = self.find_key(key, now)?
            {
                out.push(Appended {
                    event: earlier,
                    duplicate: true,
                });
                continue;
            }
            let id = *next_id;
            self.conn
                .prepare_cached(
                    "INSERT INTO events (id, topic, event, data, time_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    to_sql_int(id),
                    new.topic.as_str(),
                    &*new.event,
                    new.data.get(),
                    now
                ])?;
            if let Some(key) = &new.key {
                // Replaces an expired key (or one whose event retention removed).
                self.conn
                    .prepare_cached(
                        "INSERT INTO keys (key, id, at_ms) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO UPDATE SET id = excluded.id, at_ms = excluded.at_ms",
                    )?
                    .execute(params![key, to_sql_int(id), now])?;
            }
            *next_id += 1;
            let ev = Arc::new(Event::from_new(id, new, now));
            // The outbox: a delivery per matching endpoint, in the event's own transaction.
            if !self.shared.endpoints.is_empty() {
                for ep in self.shared.endpoints.matching(&ev) {
                    let d = NewDelivery::for_event(&ep.endpoint.id, &ev);
                    crate::webhooks::insert_delivery(&self.conn, &d, now)?;
                    marked.push(d.endpoint);
                }
            }
            fresh.push(ev.clone());
            out.push(Appended {
                event: ev,
                duplicate: false,
            });
        }
        Ok(out)
    }

    /// The event an idempotency key points to, when the key is inside the dedupe window and
    /// the event is still retained. Reads through the open transaction, so it also sees keys
    /// written earlier in the same group or batch.
    fn find_key(&self, key: &str, now: i64) -> Result<Option<Arc<Event>>, StoreError> {
        let found: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT id, at_ms FROM keys WHERE key = ?1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((id, at_ms)) = found else {
            return Ok(None);
        };
        if now.saturating_sub(at_ms) >= self.dedupe_window_ms {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, topic, event, data, time_ms FROM events WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(event_from_row(row, &mut Interner::default())?)),
            None => Ok(None),
        }
    }

    /// Count retention for one topic: removes its oldest rows beyond `max_events`.
    fn enforce_count(&mut self, topic: &Topic, d: &mut Delta) -> Result<(), StoreError> {
        let (max_events, _) = self.shared.options.retention.limits(topic.as_str());
        let base = self
            .shared
            .topics
            .read()
            .get(topic.as_str())
            .map_or(0, |s| s.count);
        let count = (base + d.added).saturating_sub(d.removed);
        if count <= max_events {
            return Ok(());
        }
        let excess = count - max_events;
        let through: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM events WHERE topic = ?1 ORDER BY id LIMIT 1 OFFSET ?2")?
            .query_row(params![topic.as_str(), to_sql_int(excess - 1)], |r| {
                r.get(0)
            })
            .optional()?;
        match through {
            Some(through) => self.prune_through(topic, through, d),
            None => {
                // Fewer rows than the stats say: they drifted from the database (which
                // cannot happen while only this thread writes). Correct the count instead of
                // guessing what to delete; the next append prunes if still needed.
                let rows: i64 = self
                    .conn
                    .prepare_cached("SELECT count(*) FROM events WHERE topic = ?1")?
                    .query_row([topic.as_str()], |r| r.get(0))?;
                let rows = u64::try_from(rows).unwrap_or(0);
                tracing::warn!(topic = %topic, stats = count, rows, "topic stats out of step with the database");
                d.removed = (base + d.added).saturating_sub(rows);
                Ok(())
            }
        }
    }

    /// Deletes a topic's rows with id <= `through` and records `through` as pruned.
    fn prune_through(
        &mut self,
        topic: &Topic,
        through: i64,
        d: &mut Delta,
    ) -> Result<(), StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM events WHERE topic = ?1 AND id <= ?2")?
            .execute(params![topic.as_str(), through])?;
        self.conn
            .prepare_cached(
                "INSERT INTO topics (topic, pruned_through) VALUES (?1, ?2) \
                 ON CONFLICT (topic) DO UPDATE \
                 SET pruned_through = max(pruned_through, excluded.pruned_through)",
            )?
            .execute(params![topic.as_str(), through])?;
        d.removed += n as u64;
        d.pruned_through = d.pruned_through.max(u64::try_from(through).unwrap_or(0));
        Ok(())
    }

    /// Applies committed changes to the shared topic stats.
    fn apply(&self, deltas: Deltas) {
        if deltas.is_empty() {
            return;
        }
        let mut table = self.shared.topics.write();
        for (topic, d) in deltas {
            let s = table.entry(&topic);
            s.last_id = s.last_id.max(d.last_id);
            s.count = (s.count + d.added).saturating_sub(d.removed);
            s.pruned_through = s.pruned_through.max(d.pruned_through);
        }
    }

    /// Expired idempotency keys, age retention, and count retention (which appends enforce
    /// already; here it catches topics whose limit was lowered by a config change).
    fn maintain(&mut self) -> Result<(), StoreError> {
        let now = self.tick();
        let deltas = self.in_transaction(|w| {
            let cutoff = now.saturating_sub(w.dedupe_window_ms);
            let keys = w
                .conn
                .prepare_cached("DELETE FROM keys WHERE at_ms <= ?1")?
                .execute([cutoff])?;
            if keys > 0 {
                tracing::debug!(keys, "expired idempotency keys");
            }
            let mut deltas = Deltas::new();
            w.expire_by_age(now, &mut deltas)?;
            w.prune_deliveries(now)?;
            let topics: Vec<Topic> = w
                .shared
                .topics
                .read()
                .iter()
                .filter(|(_, s)| s.count > 0)
                .map(|(t, _)| t.clone())
                .collect();
            for topic in topics {
                let mut d = deltas.remove(&topic).unwrap_or_default();
                w.enforce_count(&topic, &mut d)?;
                if d.removed > 0 {
                    deltas.insert(topic, d);
                }
            }
            Ok(deltas)
        })?;
        self.apply(deltas);
        Ok(())
    }

    fn expire_by_age(&mut self, now: i64, deltas: &mut Deltas) -> Result<(), StoreError> {
        let retention = &self.shared.options.retention;
        let shortest = millis(retention.shortest_age());
        // Times grow with ids: if the oldest row is young enough for every rule, so is the
        // rest, and maintenance costs one index lookup.
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT time_ms FROM events ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        match oldest {
            Some(t) if now.saturating_sub(t) >= shortest => {}
            _ => return Ok(()),
        }
        let topics: Vec<Topic> = self
            .shared
            .topics
            .read()
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in topics {
            let (_, max_age) = self.shared.options.retention.limits(topic.as_str());
            let cutoff = now.saturating_sub(millis(max_age));
            let mut through = None;
            {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, time_ms FROM events WHERE topic = ?1 ORDER BY id",
                )?;
                let mut rows = stmt.query([topic.as_str()])?;
                while let Some(row) = rows.next()? {
                    let (id, t): (i64, i64) = (row.get(0)?, row.get(1)?);
                    if t > cutoff {
                        break;
                    }
                    through = Some(id);
                }
            }
            if let Some(through) = through {
                let d = deltas.entry(topic.clone()).or_default();
                self.prune_through(&topic, through, d)?;
            }
        }
        Ok(())
    }

    /// Final work of `close`: fold the WAL back into the database and truncate it, so the
    /// data directory is one self-contained file when the process is gone.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.conn.execute_batch("PRAGMA optimize") {
            tracing::debug!(error = %e, "PRAGMA optimize failed");
        }
        let (busy, log, done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            // A reader still holds an old snapshot; the WAL is complete and will be folded
            // in by the next checkpoint, so this is no data loss.
            tracing::warn!(
                wal_frames = log,
                checkpointed = done,
                "WAL checkpoint incomplete at close"
            );
        }
        Ok(())
    }
}
