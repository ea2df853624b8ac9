//! [`SqliteWebhooks`]: outbound webhook endpoints and deliveries in the log's database.
//!
//! Writes (endpoint changes, recorded attempts, retries) run on the writer thread as
//! [`Command::Exec`] closures, so they are serialized with appends: an append matches events
//! against exactly the endpoints committed before it, and its deliveries are rows of its own
//! transaction (the outbox). Reads (due work, the deliveries API, queue stats) use the read
//! pool and never wait for the writer.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt};
use herald_core::{
    Endpoint, LogError, Webhooks,
    webhook::{
        Attempt, CompiledEndpoint, Delivery, DeliveryRecord, Due, EndpointChange, NewDelivery,
        Next, Outcome, QueueStats, Signal, Status,
    },
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot};

use crate::{
    StoreError,
    reader::ReadPool,
    schema::{id_from_sql, to_sql_int},
    writer::{Command, Shared, Writer},
};

/// Finished deliveries (succeeded or failed) older than this are removed by maintenance.
pub(crate) const FINISHED_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The [`Webhooks`] of a [`crate::SqliteLog`].
pub(crate) struct SqliteWebhooks {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    pool: Arc<ReadPool>,
}

/// Inserts one pending delivery, due at `now`.
pub(crate) fn insert_delivery(
    conn: &Connection,
    d: &NewDelivery,
    now: i64,
) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO deliveries \
         (endpoint, event_id, msg_id, event_type, body, status, attempts, next_at, last_chance, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, 0, ?6)",
    )?
    .execute(params![
        d.endpoint,
        to_sql_int(d.event_id),
        d.msg_id,
        d.event_type,
        d.body,
        now
    ])?;
    id_from_sql(conn.last_insert_rowid())
}

const DELIVERY_COLUMNS: &str = "id, endpoint, event_id, msg_id, event_type, body, status, \
                                attempts, next_at, last_chance, created_ms";

fn delivery_from_row(row: &Row<'_>) -> Result<Delivery, StoreError> {
    let status: i64 = row.get(6)?;
    Ok(Delivery {
        id: id_from_sql(row.get(0)?)?,
        endpoint: row.get(1)?,
        event_id: id_from_sql(row.get(2)?)?,
        msg_id: row.get(3)?,
        event_type: row.get(4)?,
        body: row.get(5)?,
        status: Status::from_code(status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status}")))?,
        attempts: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX),
        next_at_ms: row.get(8)?,
        last_chance: row.get::<_, i64>(9)? != 0,
        created_ms: row.get(10)?,
    })
}

fn write_endpoint(conn: &Connection, e: &Endpoint) -> Result<(), StoreError> {
    let body = serde_json::to_string(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO webhooks (id, body) VALUES (?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
    )?
    .execute(params![e.id, body])?;
    Ok(())
}

impl Writer {
    /// Finished deliveries past [`FINISHED_KEPT`] (run by maintenance). Rows are in creation
    /// order, so the walk stops at the first young row.
    pub(crate) fn prune_deliveries(&mut self, now: i64) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(i64::try_from(FINISHED_KEPT.as_millis()).unwrap_or(0));
        let first_young: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM deliveries WHERE created_ms >= ?1 ORDER BY id LIMIT 1")?
            .query_row([cutoff], |r| r.get(0))
            .optional()?;
        let bound = first_young.unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "DELETE FROM attempts WHERE delivery IN \
                 (SELECT id FROM deliveries WHERE id < ?1 AND status != 0)",
            )?
            .execute([bound])?;
        let n = self
            .conn
            .prepare_cached("DELETE FROM deliveries WHERE id < ?1 AND status != 0")?
            .execute([bound])?;
        if n > 0 {
            tracing::debug!(deliveries = n, "removed old finished webhook deliveries");
        }
        Ok(())
    }
}

impl SqliteWebhooks {
    pub(crate) fn new(shared: Arc<Shared>, tx: mpsc::Sender<Command>, pool: Arc<ReadPool>) -> Self {
        Self { shared, tx, pool }
    }

    /// Runs `f` on the writer thread and returns its answer.
    async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Exec(Box::new(move |w: &mut Writer| {
            let _ = reply.send(f(w));
        }));
        self.tx.send(cmd).await.map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }
}

impl Webhooks for SqliteWebhooks {
    fn create(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Endpoint, LogError>> {
        async move {
            let compiled = CompiledEndpoint::new(endpoint.clone())
                .map_err(|e| LogError::Invalid(e.to_string()))?;
            self.exec(move |w| {
                w.in_transaction(|w| write_endpoint(&w.conn, &compiled.endpoint))?;
                w.shared.endpoints.put(Arc::new(compiled));
                Ok(())
            })
            .await?;
            self.shared.signal.wake();
            Ok(endpoint)
        }
        .boxed()
    }

    fn modify(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> BoxFuture<'_, Result<Option<Endpoint>, LogError>> {
        let id = id.to_owned();
        async move {
            let marked = id.clone();
            let out = self
                .exec(move |w| {
                    let Some(current) = w.shared.endpoints.get(&id) else {
                        return Ok(None);
                    };
                    let mut e = current.endpoint.clone();
                    change(&mut e);
                    let compiled =
                        CompiledEndpoint::new(e).map_err(|e| LogError::Invalid(e.to_string()))?;
                    w.in_transaction(|w| write_endpoint(&w.conn, &compiled.endpoint))?;
                    let e = compiled.endpoint.clone();
                    w.shared.endpoints.put(Arc::new(compiled));
                    Ok(Some(e))
                })
                .await?;
            self.shared.signal.mark([marked.as_str()]);
            Ok(out)
        }
        .boxed()
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool, LogError>> {
        let id = id.to_owned();
        async move {
            self.exec(move |w| {
                let existed = w.in_transaction(|w| {
                    w.conn
                        .prepare_cached(
                            "DELETE FROM attempts WHERE delivery IN \
                             (SELECT id FROM deliveries WHERE endpoint = ?1)",
                        )?
                        .execute([&id])?;
                    w.conn
                        .prepare_cached("DELETE FROM deliveries WHERE endpoint = ?1")?
                        .execute([&id])?;
                    Ok(w.conn
                        .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                        .execute([&id])?
                        > 0)
                })?;
                w.shared.endpoints.remove(&id);
                Ok(existed)
            })
            .await
        }
        .boxed()
    }

    fn get(&self, id: &str) -> Option<Endpoint> {
        self.shared.endpoints.get(id).map(|c| c.endpoint.clone())
    }

    fn list(&self) -> Vec<Endpoint> {
        self.shared
            .endpoints
            .list()
            .into_iter()
            .map(|c| c.endpoint.clone())
            .collect()
    }

    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        async move {
            let marked: Vec<String> = deliveries.iter().map(|d| d.endpoint.clone()).collect();
            let ids = self
                .exec(move |w| {
                    let now = w.tick();
                    Ok(w.in_transaction(|w| {
                        deliveries
                            .iter()
                            .map(|d| insert_delivery(&w.conn, d, now))
                            .collect::<Result<Vec<_>, _>>()
                    })?)
                })
                .await?;
            self.shared.signal.mark(marked.iter().map(String::as_str));
            Ok(ids)
        }
        .boxed()
    }

    fn due<'a>(
        &'a self,
        endpoint: &'a str,
        now_ms: i64,
        limit: usize,
        skip: &'a HashSet<u64>,
    ) -> BoxFuture<'a, Result<Due, LogError>> {
        let endpoint = endpoint.to_owned();
        let skip = skip.clone();
        async move {
            self.pool
                .run(move |conn| {
                    let fetch = limit.saturating_add(skip.len()).saturating_add(1);
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                         WHERE endpoint = ?1 AND status = 0 ORDER BY next_at, id LIMIT ?2"
                    ))?;
                    let mut rows =
                        stmt.query(params![endpoint, i64::try_from(fetch).unwrap_or(i64::MAX)])?;
                    let mut out = Vec::new();
                    let mut next = None;
                    while let Some(row) = rows.next()? {
                        let d = delivery_from_row(row)?;
                        if skip.contains(&d.id) {
                            continue;
                        }
                        if d.next_at_ms <= now_ms && out.len() < limit {
                            out.push(d);
                        } else {
                            next = Some(d.next_at_ms.max(now_ms));
                            break;
                        }
                    }
                    Ok((out, next))
                })
                .await
        }
        .boxed()
    }

    fn record(&self, outcomes: Vec<Outcome>) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            if outcomes.is_empty() {
                return Ok(());
            }
            self.exec(move |w| {
                Ok(w.in_transaction(|w| {
                    for o in &outcomes {
                        let (status, next_at) = match o.next {
                            Next::Succeeded => (Status::Succeeded, o.attempt.at_ms),
                            Next::Failed => (Status::Failed, o.attempt.at_ms),
                            Next::RetryAt(t) => (Status::Pending, t),
                        };
                        let n: Option<i64> = w
                            .conn
                            .prepare_cached(
                                "UPDATE deliveries SET attempts = attempts + 1, status = ?2, \
                                 next_at = ?3, last_chance = 0 WHERE id = ?1 RETURNING attempts",
                            )?
                            .query_row(
                                params![to_sql_int(o.delivery), status.code(), next_at],
                                |r| r.get(0),
                            )
                            .optional()?;
                        // Deleted meanwhile (its endpoint was removed): nothing to record.
                        let Some(n) = n else { continue };
                        let a = &o.attempt;
                        w.conn
                            .prepare_cached(
                                "INSERT OR REPLACE INTO attempts \
                                 (delivery, n, at_ms, status_code, duration_ms, error, response_body) \
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            )?
                            .execute(params![
                                to_sql_int(o.delivery),
                                n,
                                a.at_ms,
                                a.status_code,
                                to_sql_int(a.duration_ms),
                                a.error,
                                a.response_body
                            ])?;
                    }
                    Ok(())
                })?)
            })
            .await
        }
        .boxed()
    }

    fn deliveries<'a>(
        &'a self,
        endpoint: &'a str,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>, LogError>> {
        let endpoint = endpoint.to_owned();
        async move {
            self.pool
                .run(move |conn| {
                    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                    let mut out = Vec::new();
                    {
                        let mut stmt = conn.prepare_cached(&format!(
                            "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                             WHERE endpoint = ?1 AND id > ?2 AND (?3 IS NULL OR status = ?3) \
                             ORDER BY id LIMIT ?4"
                        ))?;
                        let mut rows = stmt.query(params![
                            endpoint,
                            to_sql_int(after),
                            status.map(Status::code),
                            limit
                        ])?;
                        while let Some(row) = rows.next()? {
                            out.push(DeliveryRecord {
                                delivery: delivery_from_row(row)?,
                                attempts: Vec::new(),
                            });
                        }
                    }
                    let mut stmt = conn.prepare_cached(
                        "SELECT at_ms, status_code, duration_ms, error, response_body \
                         FROM attempts WHERE delivery = ?1 ORDER BY n",
                    )?;
                    for r in &mut out {
                        let mut rows = stmt.query([to_sql_int(r.delivery.id)])?;
                        while let Some(row) = rows.next()? {
                            let code: Option<i64> = row.get(1)?;
                            r.attempts.push(Attempt {
                                at_ms: row.get(0)?,
                                status_code: code.and_then(|c| u16::try_from(c).ok()),
                                duration_ms: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                                error: row.get(3)?,
                                response_body: row.get(4)?,
                            });
                        }
                    }
                    Ok(out)
                })
                .await
        }
        .boxed()
    }

    fn retry(
        &self,
        endpoint: &str,
        delivery: Option<u64>,
        since_ms: i64,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        let endpoint = endpoint.to_owned();
        async move {
            let ep = endpoint.clone();
            let n = self
                .exec(move |w| {
                    let now = w.tick();
                    Ok(w.in_transaction(|w| {
                        let n = match delivery {
                            Some(id) => w
                                .conn
                                .prepare_cached(
                                    "UPDATE deliveries SET \
                                     last_chance = CASE WHEN status != 0 THEN 1 ELSE last_chance END, \
                                     status = 0, next_at = ?3 WHERE endpoint = ?1 AND id = ?2",
                                )?
                                .execute(params![ep, to_sql_int(id), now])?,
                            None => w
                                .conn
                                .prepare_cached(
                                    "UPDATE deliveries SET last_chance = 1, status = 0, next_at = ?3 \
                                     WHERE endpoint = ?1 AND status = 2 AND created_ms >= ?2",
                                )?
                                .execute(params![ep, since_ms, now])?,
                        };
                        Ok(n as u64)
                    })?)
                })
                .await?;
            if n > 0 {
                self.shared.signal.mark([endpoint.as_str()]);
            }
            Ok(n)
        }
        .boxed()
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStats>, LogError>> {
        async move {
            self.pool
                .run(|conn| {
                    let mut stmt = conn.prepare_cached(
                        "SELECT endpoint, count(*), min(next_at) FROM deliveries \
                         WHERE status = 0 GROUP BY endpoint ORDER BY endpoint",
                    )?;
                    let mut rows = stmt.query([])?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        out.push(QueueStats {
                            endpoint: row.get(0)?,
                            pending: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                            oldest_due_ms: row.get(2)?,
                        });
                    }
                    Ok(out)
                })
                .await
        }
        .boxed()
    }

    fn signal(&self) -> Arc<Signal> {
        self.shared.signal.clone()
    }
}
