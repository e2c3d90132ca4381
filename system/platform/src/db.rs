//! One database handle over SQLite or Postgres, chosen by `DATABASE_URL`.
//!
//! Queries go through sqlx's `Any` driver and are written once, with `$1, $2, ...` placeholders
//! numbered in order of first appearance (SQLite reads those as named parameters bound by
//! position, so the same text works on both). Where the dialects really differ (row locking,
//! `BEGIN IMMEDIATE`), code asks [`Db::dialect`]. Each dialect has its own migrations.
//!
//! SQLite runs in WAL mode with a busy timeout, so several instances of one service (separate
//! processes) share one database file safely. Write transactions start with `BEGIN IMMEDIATE`:
//! a deferred transaction that later upgrades to a writer can fail at once with SQLITE_BUSY
//! instead of waiting, which is what made concurrent instances trip over each other.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::Instrument;

/// The platform's own tables (outbox, inbox), in every service database.
static PLATFORM_SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static PLATFORM_POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("concurrent update of {0}; retry")]
    Conflict(String),
}

impl DbError {
    /// Whether running the same transaction again may succeed: SQLite busy/locked, Postgres
    /// serialization failures, deadlocks and lost or refused connections (a restarting server,
    /// a network fault: the pool opens a new connection), and our own optimistic-concurrency
    /// conflicts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict(_) => true,
            Self::Sqlx(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                matches!(code.as_ref(), "5" | "6" | "517" | "261" | "40001" | "40P01")
                    // Postgres class 08 (connection exception) and 57P01-03 (the server is
                    // shutting down or starting up).
                    || code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
                    || db.message().contains("database is locked")
            }
            Self::Sqlx(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

/// A write transaction from [`Db::begin`]. Queries run on it as on sqlx's transaction (it derefs
/// to the connection); [`Tx::commit`] ends it, dropping it rolls it back. On SQLite it also holds
/// this process's writer turn until it ends.
pub struct Tx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    _turn: Option<WriterTurn>,
}

/// This process's writer turn and, across processes, the lock file's lock (released when
/// dropped, also by the kernel when the process dies).
struct WriterTurn {
    _in_process: OwnedMutexGuard<()>,
    _across_processes: Option<Flock<File>>,
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// A pooled connection outside any transaction, holding this process's writer turn as a [`Tx`]
/// does: each statement on it commits on its own. From [`Db::autocommit`], for a write that is a
/// single statement, where `BEGIN` and `COMMIT` would be two more round trips (on SQLite, two
/// more hand-offs to the connection's thread and back) for nothing: SQLite and Postgres both run
/// one statement atomically.
pub struct Autocommit {
    conn: PoolConnection<Any>,
    _turn: Option<WriterTurn>,
}

impl std::ops::Deref for Autocommit {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Autocommit {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite has one writer at a time, and its busy handler makes a waiting writer sleep in
    /// steps of up to 100 ms instead of waking it when the lock frees: with two instances of a
    /// service on one file, writers spent most of their time asleep (measured at 160 journeys/s:
    /// the order service's statements took 9 ms per saga at p50 and 277 ms at p99). So writers
    /// take turns before SQLite sees them: in this process in order here, and across the
    /// processes sharing the file with an exclusive `flock` on `<db>.writer`, which the kernel
    /// hands to the next waiter the moment it is released.
    writers: Arc<Mutex<()>>,
    lock_file: Option<Arc<File>>,
}

impl Db {
    /// Connects (creating a SQLite file if needed). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection it hands out by default. A SQLite connection is a
            // file opened in this process and cannot go stale, and its ping is a hand-off to the
            // connection's worker thread and back: half the cost of a one-statement read. A
            // Postgres connection can (a reset link, a restarted server), so it keeps the ping.
            .test_before_acquire(dialect == Dialect::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // A page cache of up to 64 MiB and reads through a memory map: with
                        // SQLite's default 2 MiB cache, an order database that had grown to
                        // 200 MB in a capacity run read its index pages back from the kernel
                        // with a system call each, and the knee fell as the run went on
                        // (docs/performance.md, row 14).
                        //
                        // A checkpoint every 10,000 pages of log (40 MB) instead of 1,000: it
                        // runs inside the `COMMIT` that crosses the mark, while every other
                        // writer of the file waits for its turn, and the same hot index pages
                        // were copied back ten times as often. At 480 journeys/s the saga p99
                        // went from 1.14-1.29 s to 0.41-0.64 s (row 18). A checkpoint from a
                        // background connection instead was tried: it never lets a writer find
                        // the log fully copied, so the log is never restarted and grew to 1 GB
                        // in 35 s.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                             PRAGMA cache_size = -65536; PRAGMA mmap_size = 1073741824; \
                             PRAGMA wal_autocheckpoint = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let lock_file = match dialect {
            Dialect::Sqlite => sqlite_path(&url)
                .map(|path| {
                    let lock = format!("{path}.writer");
                    OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock)
                        .map(Arc::new)
                        .map_err(|e| DbError::Corrupt(format!("cannot open {lock}: {e}")))
                })
                .transpose()?,
            Dialect::Postgres => None,
        };
        Ok(Self {
            pool,
            dialect,
            writers: Arc::default(),
            lock_file,
        })
    }

    /// Applies the platform's migrations, then the service's own for this dialect.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<(), DbError> {
        let (platform, service) = match self.dialect {
            Dialect::Sqlite => (&PLATFORM_SQLITE, sqlite),
            Dialect::Postgres => (&PLATFORM_POSTGRES, postgres),
        };
        for m in [platform, service] {
            // The two migrators share `_sqlx_migrations`; each must ignore the other's rows.
            let m = Migrator {
                migrations: m.migrations.clone(),
                ignore_missing: true,
                locking: m.locking,
                no_tx: m.no_tx,
            };
            m.run(&self.pool).await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite), in a `BEGIN` client span: on
    /// SQLite that is where a writer waits for the others, which sqlx's per-statement spans do
    /// not show.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        let span = tracing::info_span!(
            "db.begin",
            otel.name = "BEGIN",
            otel.kind = "client",
            db.system.name = self.system_name(),
            db.operation.name = "BEGIN",
            db.query.text = match self.dialect {
                Dialect::Sqlite => "BEGIN IMMEDIATE",
                Dialect::Postgres => "BEGIN",
            },
        );
        // sqlx 0.8's `begin` is not cancel-safe: a caller dropped after the database ran BEGIN but
        // before the `Transaction` exists (an HTTP handler whose client went away, a timeout)
        // returns the connection to the pool inside a transaction nobody ends (sqlx issues 3932,
        // 4393). On SQLite that connection keeps the write lock and fails every later
        // `begin_with` ("non-zero transaction depth"); seen in chaos-matrix as a dead-lettered
        // event. In a task of its own the begin always completes; if the caller is gone by then,
        // the `Transaction` is dropped there and rolled back as usual.
        let (pool, dialect, writers) = (self.pool.clone(), self.dialect, self.writers.clone());
        let lock_file = self.lock_file.clone();
        let begun = tokio::spawn(
            async move {
                match dialect {
                    Dialect::Sqlite => {
                        let in_process = writers.lock_owned().await;
                        let across_processes = match lock_file {
                            Some(file) => Some(lock_exclusively(&file).await?),
                            None => None,
                        };
                        let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                        Ok(Tx {
                            tx,
                            dialect: Dialect::Sqlite,
                            _turn: Some(WriterTurn {
                                _in_process: in_process,
                                _across_processes: across_processes,
                            }),
                        })
                    }
                    Dialect::Postgres => Ok(Tx {
                        tx: pool.begin().await?,
                        dialect: Dialect::Postgres,
                        _turn: None,
                    }),
                }
            }
            .instrument(span),
        )
        .await
        .map_err(|e| DbError::Corrupt(format!("the task beginning a transaction failed: {e}")))?;
        begun.map_err(DbError::Sqlx)
    }

    /// A connection for single-statement writes outside a transaction ([`Autocommit`]). On
    /// SQLite the writers take turns as in [`Db::begin`]: without the turn, writers of two
    /// processes would meet SQLite's busy handler instead (row 4 of docs/performance.md).
    pub async fn autocommit(&self) -> Result<Autocommit, DbError> {
        let turn = match self.dialect {
            Dialect::Sqlite => {
                let in_process = self.writers.clone().lock_owned().await;
                let across_processes = match &self.lock_file {
                    Some(file) => Some(lock_exclusively(file).await?),
                    None => None,
                };
                Some(WriterTurn {
                    _in_process: in_process,
                    _across_processes: across_processes,
                })
            }
            Dialect::Postgres => None,
        };
        Ok(Autocommit {
            conn: self.pool.acquire().await?,
            _turn: turn,
        })
    }

    /// The semantic conventions' `db.system.name`.
    pub fn system_name(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgresql",
        }
    }

    /// Sets the pool gauges (`db_pool_connections{state}`, `db_pool_max_connections`).
    pub fn record_pool(&self) {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        metrics::gauge!(crate::metrics::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
        metrics::gauge!(crate::metrics::DB_POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
        metrics::gauge!(crate::metrics::DB_POOL_MAX).set(self.pool.options().get_max_connections());
    }

    /// `FOR UPDATE` on Postgres, nothing on SQLite (whose write transactions are exclusive).
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Deletes, at most `batch` at a time, the rows `sql` selects as older than `retention`: `sql` is
/// a `DELETE` that binds the cut-off (ms since the epoch) as `$1` and the batch as `$2`. Returns
/// how many it deleted. What the outbox, inbox and idempotency-key pruning share.
///
/// The delete takes its writer turn ([`Db::autocommit`]) like every other write: straight on the
/// pool it would take SQLite's write lock outside the turns, and the writer whose turn it was
/// would meet SQLite's busy handler, which sleeps in steps of up to 100 ms.
pub async fn delete_older_than(
    db: &Db,
    sql: &str,
    retention: std::time::Duration,
    batch: i64,
) -> Result<u64, DbError> {
    let before = crate::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut conn = db.autocommit().await?;
    let deleted = sqlx::query(sql)
        .bind(before)
        .bind(batch)
        .execute(&mut *conn)
        .await?;
    Ok(deleted.rows_affected())
}

/// Runs `op` again while it fails with a retryable error, at most `attempts` times, with
/// jittered backoff. For whole transactions: `op` must begin and commit its own.
pub async fn retry<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    let mut n = 0;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && n + 1 < attempts => {
                n += 1;
                let base = 10u64 << n.min(6);
                let jitter = rand::random::<u64>() % base;
                tracing::debug!(error = %e, attempt = n, "retrying transaction");
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            other => return other,
        }
    }
}

/// The file of a `sqlite://PATH[?...]` URL; `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.to_owned())
}

/// Takes the exclusive `flock` of `file` (on a duplicate of its descriptor, released when the
/// returned lock drops): at once if it is free, else on a blocking thread until it is.
async fn lock_exclusively(file: &File) -> Result<Flock<File>, sqlx::Error> {
    let io = |e: std::io::Error| sqlx::Error::Io(e);
    let handle = file.try_clone().map_err(io)?;
    match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(locked),
        Err((handle, Errno::EWOULDBLOCK)) => tokio::task::spawn_blocking(move || {
            Flock::lock(handle, FlockArg::LockExclusive)
                .map_err(|(_, errno)| io(std::io::Error::from(errno)))
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?,
        Err((_, errno)) => Err(io(std::io::Error::from(errno))),
    }
}

/// A value bound to a [`Script`]'s statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

/// Writes to run one after the other in the caller's transaction, each statement written with
/// its own placeholders (`$1`, `$2`, ...).
///
/// On SQLite the statements go to the connection as one script, in one hand-off to its worker
/// thread, instead of one hand-off (and two thread switches) each: sqlx runs every SQLite
/// connection on a thread of its own, and those switches were most of a busy service's time
/// (docs/performance.md). A script's placeholders are numbered across all its statements, which
/// sqlx's SQLite driver binds by number. Postgres takes one statement per request with
/// parameters, so there they are sent one by one, as before.
#[derive(Debug, Default)]
pub struct Script {
    statements: Vec<(String, Vec<Value>)>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a statement whose placeholders `$1..$n` are `values`, in order.
    pub fn push(&mut self, sql: impl Into<String>, values: Vec<Value>) {
        self.statements.push((sql.into(), values));
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs the statements; returns the rows they changed, all together.
    pub async fn execute(self, tx: &mut Tx) -> Result<u64, DbError> {
        if self.statements.is_empty() {
            return Ok(0);
        }
        match tx.dialect() {
            Dialect::Sqlite => {
                let (sql, values) = self.into_one();
                Ok(bind_all(sqlx::query(&sql), values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected())
            }
            Dialect::Postgres => self.execute_each(tx).await,
        }
    }

    /// Runs the statements one by one on `conn`, whatever its dialect; returns the rows they
    /// changed, all together.
    pub async fn execute_each(self, conn: &mut AnyConnection) -> Result<u64, DbError> {
        let mut changed = 0;
        for (sql, values) in self.statements {
            changed += bind_all(sqlx::query(&sql), values)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        Ok(changed)
    }

    /// The statements as one script, each one's placeholders moved past those before it.
    fn into_one(self) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut all = Vec::new();
        for (statement, values) in self.statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&renumber(&statement, all.len()));
            all.extend(values);
        }
        (sql, all)
    }
}

/// `sql` with every placeholder `$n` written `$(n + offset)`. The statements given to a
/// [`Script`] are the services' own, with no `$` inside a literal.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    values: Vec<Value>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match value {
            Value::Text(v) => query.bind(v),
            Value::Int(v) => query.bind(v),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_script_numbers_each_statement_s_placeholders_after_those_before_it() {
        let mut script = Script::new();
        script.push(
            "UPDATE t SET a = $1 WHERE id = $2",
            vec![1.into(), "x".into()],
        );
        script.push("INSERT INTO u VALUES ($1, $2), ($3, $10)", vec![]);
        let (sql, _) = script.into_one();
        assert_eq!(
            sql,
            "UPDATE t SET a = $1 WHERE id = $2;\nINSERT INTO u VALUES ($3, $4), ($5, $12)"
        );
        assert_eq!(renumber("$ and $x", 3), "$ and $x");
    }

    use super::*;

    #[test]
    fn lost_connections_are_worth_retrying_and_bad_sql_is_not() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(DbError::Sqlx(sqlx::Error::Io(reset)).is_retryable());
        assert!(DbError::Sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(DbError::Sqlx(sqlx::Error::WorkerCrashed).is_retryable());
        assert!(!DbError::Sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert!(!DbError::Corrupt("bad".into()).is_retryable());
    }

    #[tokio::test]
    async fn an_unknown_url_scheme_is_refused_with_the_url() {
        let err = Db::connect("mysql://x").await.err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mysql://x")));
    }

    /// Every pooled SQLite connection is set up as docs/performance.md measured it: WAL, a
    /// 64 MiB page cache, and a checkpoint only every 10,000 pages of log (row 18).
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn sqlite_connections_use_wal_a_large_cache_and_rare_checkpoints() {
        use sqlx::Row;
        let (_dir, db, _) = two_instances_on_one_file().await;
        let mut conn = db.pool().acquire().await.unwrap();
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("cache_size", "-65536"),
            ("wal_autocheckpoint", "10000"),
        ] {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let value = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }

    /// Two handles on one SQLite file with a table `t (n)`, standing for two instances of a
    /// service; the temp dir lives as long as the first value.
    #[allow(clippy::unwrap_used)]
    async fn two_instances_on_one_file() -> (tempfile::TempDir, Db, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let (first, second) = (
            Db::connect(&url).await.unwrap(),
            Db::connect(&url).await.unwrap(),
        );
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(first.pool())
            .await
            .unwrap();
        (dir, first, second)
    }

    /// Two handles on one file stand for two instances of a service: the second writer waits
    /// for the first's commit (on the lock file, not in SQLite's sleeping busy handler) and then
    /// goes on at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn writers_sharing_a_file_take_turns() {
        let (_dir, first, second) = two_instances_on_one_file().await;
        let mut holding = first.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (1)")
            .execute(&mut *holding)
            .await
            .unwrap();
        let waiting = tokio::spawn(async move {
            let mut tx = second.begin().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (2)")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the second writer waits its turn");
        holding.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second writer goes on once the first commits")
            .unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY n")
            .fetch_all(first.pool())
            .await
            .unwrap();
        assert_eq!(rows, [1, 2]);
    }

    /// A single-statement write outside a transaction takes its turn like a transaction: it
    /// waits for another instance's open transaction on the file, then commits on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn autocommit_writes_take_their_turn_and_commit_on_their_own() {
        let (_dir, first, second) = two_instances_on_one_file().await;
        let holding = first.begin().await.unwrap();
        let waiting = tokio::spawn(async move {
            let mut conn = second.autocommit().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (2)")
                .execute(&mut *conn)
                .await
                .unwrap();
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the single write waits its turn");
        holding.rollback().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the single write goes on once the transaction ends")
            .unwrap();
        // Committed by itself: another handle sees it with no commit called.
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM t")
            .fetch_all(first.pool())
            .await
            .unwrap();
        assert_eq!(rows, [2]);
    }

    /// Pruning old rows is a write like any other: it waits while another instance holds the
    /// writer turn, instead of taking SQLite's lock from under it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn pruning_takes_its_writer_turn() {
        let (_dir, first, second) = two_instances_on_one_file().await;
        sqlx::query("INSERT INTO t (n) VALUES (1)")
            .execute(first.pool())
            .await
            .unwrap();
        // The turn alone: no SQLite lock is held, so only the turn can hold the prune back.
        let turn = first.autocommit().await.unwrap();
        let waiting = tokio::spawn(async move {
            delete_older_than(
                &second,
                "DELETE FROM t WHERE rowid IN (SELECT rowid FROM t WHERE n < $1 LIMIT $2)",
                Duration::ZERO,
                10,
            )
            .await
            .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the prune waits for the turn");
        drop(turn);
        let deleted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the prune goes on once the turn is free")
            .unwrap();
        assert_eq!(deleted, 1);
    }

    /// A caller dropped while its transaction is being begun (a client gone, a timeout) must
    /// not leave a connection inside a transaction: on SQLite that one keeps the write lock and
    /// fails every later BEGIN on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn begins_cancelled_at_any_point_leave_no_connection_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(db.pool())
            .await
            .unwrap();
        for round in 0..400u64 {
            // Drop the begin after a different number of polls and microseconds each round, so
            // some drops land between the database's BEGIN and the transaction's creation.
            let begin = db.begin();
            let _ = tokio::time::timeout(Duration::from_micros(round % 200), begin).await;
            let mut tx = tokio::time::timeout(Duration::from_secs(15), db.begin())
                .await
                .unwrap_or_else(|_| panic!("round {round}: a dropped begin kept the write lock"))
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            sqlx::query("INSERT INTO t (n) VALUES ($1)")
                .bind(i64::try_from(round).unwrap())
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(count, 400);
    }
}
