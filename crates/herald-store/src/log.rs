//! [`SqliteLog`]: the handle the hub holds, and [`Durability`].

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::future::{BoxFuture, FutureExt};
use herald_core::{
    Appended, CommitSink, Event, Log, LogError, LogOptions, NewEvent, Pattern, TopicInfo,
};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::{
    StoreError,
    reader::{self, Order, Plan, ReadPool, Window},
    schema,
    webhooks::SqliteWebhooks,
    writer::{Command, Shared, Writer},
};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "herald.db";

/// Appends queued for the writer before `append` waits for room (back-pressure on
/// publishers instead of unbounded memory).
const QUEUE: usize = 1024;

/// When an append is acknowledged (`server.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every group commit before any of its
    /// appends is acknowledged. An acknowledged event survives a power loss.
    #[default]
    Fsync,
    /// `synchronous=NORMAL`: commits reach the operating system (the WAL file) before the
    /// acknowledgement, fsync happens only at checkpoints. Survives a crash or `kill -9` of
    /// the process, may lose the last commits on a power loss or kernel crash.
    Batch,
    /// `synchronous=OFF`: SQLite never fsyncs. Survives a process crash in practice, but a
    /// power loss may lose recent events or, at worst, corrupt the database. For tests and
    /// throw-away data.
    Memory,
}

impl Durability {
    /// The configuration spelling: `fsync`, `batch` or `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Batch => "batch",
            Durability::Memory => "memory",
        }
    }

    /// The `PRAGMA synchronous` value.
    pub(crate) fn synchronous(self) -> &'static str {
        match self {
            Durability::Fsync => "FULL",
            Durability::Batch => "NORMAL",
            Durability::Memory => "OFF",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fsync" => Ok(Durability::Fsync),
            "batch" => Ok(Durability::Batch),
            "memory" => Ok(Durability::Memory),
            _ => Err(StoreError::Durability(s.to_owned())),
        }
    }
}

/// The embedded event log: SQLite in WAL mode, one writer thread with group commit,
/// readers on their own connections. See the [crate docs](crate).
pub struct SqliteLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    pool: Arc<ReadPool>,
    path: PathBuf,
    durability: Durability,
    webhooks: Arc<SqliteWebhooks>,
}

/// Takes the exclusive lock on `<dir>/LOCK`, so that two processes never write one store
/// (both would hand out the same ids). The OS releases it when the process dies, `kill -9`
/// included. A log dropped in this process a moment ago may still be finishing its last
/// commit, so a held lock is retried for a few seconds before giving up.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Io {
            what: "cannot open the lock file",
            path: path.clone(),
            source,
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    what: "cannot lock",
                    path,
                    source,
                });
            }
        }
    }
}

impl fmt::Debug for SqliteLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLog")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

/// Opens (creating when missing) the log in `dir`; see [`SqliteLog::open`].
///
/// # Errors
/// As [`SqliteLog::open`].
pub async fn open(
    dir: &Path,
    durability: Durability,
    options: LogOptions,
) -> Result<SqliteLog, StoreError> {
    SqliteLog::open(dir, durability, options).await
}

impl SqliteLog {
    /// Opens the log in `dir` (created when missing; the database is `<dir>/herald.db`),
    /// loads the per-topic stats and starts the writer thread. The file work runs on
    /// tokio's blocking pool, so this needs a tokio runtime; use
    /// [`SqliteLog::open_blocking`] outside one.
    ///
    /// # Errors
    /// When the directory cannot be created, the database cannot be opened in WAL mode, its
    /// schema is newer than this version, or the writer thread cannot be started.
    pub async fn open(
        dir: &Path,
        durability: Durability,
        options: LogOptions,
    ) -> Result<SqliteLog, StoreError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, durability, options))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// [`SqliteLog::open`] for synchronous callers: blocks on file I/O.
    ///
    /// # Errors
    /// As [`SqliteLog::open`].
    pub fn open_blocking(
        dir: &Path,
        durability: Durability,
        options: LogOptions,
    ) -> Result<SqliteLog, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            what: "cannot create the data directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = schema::open_writer(&path, durability)?;
        let loaded = schema::load(&conn)?;
        tracing::info!(
            path = %path.display(),
            durability = %durability,
            head = loaded.head,
            "opened event log"
        );
        let shared = Arc::new(Shared {
            topics: RwLock::new(loaded.topics),
            head: AtomicU64::new(loaded.head),
            sink: RwLock::new(None),
            closed: AtomicBool::new(false),
            writer_alive: AtomicBool::new(true),
            options,
            lock: parking_lot::Mutex::new(Some(lock)),
            endpoints: loaded.endpoints,
            signal: Arc::default(),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer::new(conn, shared.clone(), rx, loaded.last_time_ms);
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                what: "cannot start the writer thread for",
                path: path.clone(),
                source,
            })?;
        let pool = Arc::new(ReadPool::new(path.clone()));
        Ok(SqliteLog {
            webhooks: Arc::new(SqliteWebhooks::new(
                shared.clone(),
                tx.clone(),
                pool.clone(),
            )),
            shared,
            tx,
            pool,
            path,
            durability,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability it was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Sends a command to the writer and waits for its answer. A writer that is gone (or
    /// goes while the command waits) means the log is closed.
    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Command,
    ) -> Result<T, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// How a pattern read should find its rows, from the in-memory topic stats.
    fn plan(&self, patterns: &[Pattern]) -> Plan {
        match self
            .shared
            .topics
            .read()
            .resolve(patterns, Plan::MAX_TOPICS)
        {
            Some(topics) => Plan::Topics(topics),
            None => Plan::scan(patterns),
        }
    }

    async fn query(
        &self,
        patterns: &[Pattern],
        after: u64,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Arc<Event>>, LogError> {
        // The head first, then the plan: the writer updates the topic stats before it moves
        // the head, so the plan knows every topic with events up to this head, and the read
        // is bounded by it (see `reader::Window::upto`). The head moves before the sink runs,
        // so the bound never hides an event a subscriber was already handed, and a read at
        // the head (the hub's seam check) needs no trip to the database.
        let upto = self.head();
        if patterns.is_empty() || limit == 0 || after >= upto {
            return Ok(Vec::new());
        }
        let plan = self.plan(patterns);
        if matches!(&plan, Plan::Topics(t) if t.is_empty()) {
            return Ok(Vec::new());
        }
        let patterns = patterns.to_vec();
        let window = Window {
            after,
            upto,
            limit,
            order,
        };
        self.pool
            .run(move |conn| reader::read(conn, &plan, &patterns, window))
            .await
    }
}

impl Log for SqliteLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        async move {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            self.command(|reply| Command::Append { batch, reply }).await
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        patterns: &'a [Pattern],
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        self.query(patterns, after, limit, Order::Asc).boxed()
    }

    fn latest<'a>(
        &'a self,
        patterns: &'a [Pattern],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<Event>>, LogError>> {
        async move {
            let mut out = self.query(patterns, 0, limit, Order::Desc).await?;
            out.reverse();
            Ok(out)
        }
        .boxed()
    }

    fn topics<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<TopicInfo>, LogError>> {
        let list = self.shared.topics.read().list(prefix);
        futures::future::ready(Ok(list)).boxed()
    }

    fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn floor(&self, patterns: &[Pattern]) -> u64 {
        self.shared.topics.read().floor(patterns)
    }

    fn set_sink(&self, sink: Arc<dyn CommitSink>) {
        *self.shared.sink.write() = Some(sink);
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            self.command(Command::Maintain).await
        }
        .boxed()
    }

    fn ready(&self) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else if !self.shared.writer_alive.load(Ordering::Acquire) {
            Err(LogError::Unavailable(
                "the SQLite writer thread stopped".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn webhooks(&self) -> Arc<dyn herald_core::Webhooks> {
        self.webhooks.clone()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            self.shared.closed.store(true, Ordering::Release);
            // Queued appends are ahead of this command and are finished first. A writer that
            // is already gone has nothing left to flush.
            match self.command(Command::Close).await {
                Ok(()) | Err(LogError::Closed) => Ok(()),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }
}
