//! [`SqlStore`]: the store on either database, and what is particular to
//! opening each one (pools, pragmas, migrations, file modes, the watcher
//! that keeps the cache honest across processes).
//!
//! SQLite runs in WAL mode so readers never wait for the writer. Writes go
//! through a pool of one connection, which serialises this process's
//! writers without busy retries; other processes wait on the busy timeout.
//!
//! On PostgreSQL many processes write at once, each through its own pool,
//! so every state change that must not race is made atomic in the database
//! itself: a conditional `UPDATE ... WHERE <state it moves from>` whose row
//! count says who won; `INSERT ... ON CONFLICT` for counters and upserts; a
//! row lock taken first on the row that owns a decision (the account for
//! wallet checks, the service for task starts); and `FOR UPDATE SKIP
//! LOCKED` to hand out one of many interchangeable rows. Transactions run at
//! READ COMMITTED; locks are taken in one order, service before task.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::cache::{self, Cache};
use crate::db::{Db, Pools};
use crate::{StoreError, StoreResult};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "advps.db";

/// How the connection pool to PostgreSQL behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPoolSettings {
    /// Connections this process opens at most. Every instance has its own
    /// pool, so the server's `max_connections` must cover them all.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// PostgreSQL's `statement_timeout` on every connection: a statement
    /// (including its waits for row locks) running longer is cancelled, so
    /// a stuck query cannot hold a connection, or a lock, for ever.
    pub statement_timeout: Option<Duration>,
}

impl Default for PgPoolSettings {
    fn default() -> Self {
        PgPoolSettings {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            statement_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The store, on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) db: Db,
    pub(crate) cache: Arc<Cache>,
}

impl SqlStore {
    /// Opens (creating if needed) `advps.db` in `data_dir` and runs the
    /// migrations. The directory is made private to the service user (0700)
    /// and so is every file in it (0600), whether it existed or not: it holds
    /// customers' names and addresses, webhook URLs and the audit trail.
    pub async fn open_sqlite(data_dir: &Path) -> StoreResult<SqlStore> {
        create_private_dir(data_dir)?;
        Self::open_sqlite_file(&data_dir.join(DATABASE_FILE)).await
    }

    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite_file(path: &Path) -> StoreResult<SqlStore> {
        make_private_files(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // PostgreSQL's byte-order collation, so that statements that sort
            // text say `COLLATE "C"` once for both databases.
            .collation("C", |a: &str, b: &str| a.cmp(b));
        // No test query before each use of a pooled connection (sqlx's
        // default): a SQLite connection is a file this process holds open,
        // with no server that could have dropped it, and the test would be
        // one more trip to the connection's thread on every write and read,
        // queued behind SQLite's one writer. A connection whose transaction
        // state is unknown is closed instead of pooled (see `db::Tx`).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let applied = sqlite_applied(&writer).await?;
        refuse_newer(&SQLITE_MIGRATOR, &applied, &path.display().to_string())?;
        SQLITE_MIGRATOR.run(&writer).await?;
        // SQLite made the -wal and -shm files with the database's mode.
        make_private_files(path)?;
        // Keys and services are served from the process's cache, so the
        // readers see the catalogue, lists and pages: four are plenty on
        // any machine this serves, and each keeps a small page cache of its
        // own (the operating system caches the file for all of them), so
        // that a burst of reads does not leave megabytes of copies behind.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().read_only(true).pragma("cache_size", "-512"))
            .await?;
        let watcher = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        let cache = Arc::new(Cache::new());
        cache::watch_sqlite(watcher, cache.generation());
        Ok(SqlStore {
            db: Db::new(
                Pools::Sqlite { reader, writer },
                Arc::clone(cache.generation()),
            ),
            cache,
        })
    }

    /// Connects to the database at `url` (`postgres://user:pass@host/db`)
    /// and brings its schema up to date.
    pub async fn connect_postgres(url: &str, settings: &PgPoolSettings) -> StoreResult<SqlStore> {
        // The URL holds a password: the error names the problem, not the URL.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_postgres_with(options, settings).await
    }

    /// Connects with explicit options and brings the schema up to date.
    /// Safe to run from several instances at once: the migrator holds an
    /// advisory lock while it works, and each migration commits as one
    /// transaction.
    pub async fn connect_postgres_with(
        options: PgConnectOptions,
        settings: &PgPoolSettings,
    ) -> StoreResult<SqlStore> {
        let mut options = options.application_name("advps");
        if let Some(timeout) = settings.statement_timeout {
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .connect_with(options.clone())
            .await?;
        let applied = pg_applied(&pool).await?;
        refuse_newer(&PG_MIGRATOR, &applied, "the PostgreSQL database")?;
        PG_MIGRATOR.run(&pool).await?;
        // The rate windows' own few connections: their writes go on every
        // request and may lose the last instants in a database crash.
        let relaxed = PgPoolOptions::new()
            .max_connections((settings.max_connections / 2).max(1))
            .min_connections(settings.min_connections.min(1))
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        let cache = Arc::new(Cache::new());
        cache::watch_postgres(pool.clone(), cache.generation());
        Ok(SqlStore {
            db: Db::new(
                Pools::Postgres { pool, relaxed },
                Arc::clone(cache.generation()),
            ),
            cache,
        })
    }

    /// One round trip to the database (health checks).
    pub async fn ping(&self) -> StoreResult<()> {
        crate::db::query("SELECT 1").execute(self.db.read()).await?;
        Ok(())
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        match self.db.pools() {
            Pools::Sqlite { reader, writer } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres { pool, relaxed } => {
                relaxed.close().await;
                pool.close().await;
            }
        }
    }
}

/// The migrations applied to a SQLite database (none for a new one).
async fn sqlite_applied(pool: &sqlx::SqlitePool) -> StoreResult<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
    )
    .fetch_all(pool)
    .await?)
}

/// The migrations applied to a PostgreSQL database (none for a new one).
async fn pg_applied(pool: &sqlx::PgPool) -> StoreResult<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
    )
    .fetch_all(pool)
    .await?)
}

/// Refuses a database that a newer advps migrated: its schema has changes
/// this build does not know, and running on it could lose or corrupt them.
fn refuse_newer(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
    what: &str,
) -> StoreResult<()> {
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let newest_known = known.iter().copied().max().unwrap_or(0);
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|v| !known.contains(v))
        .collect();
    if let Some(newest) = unknown.iter().copied().max() {
        return Err(StoreError::Open(format!(
            "{what} was upgraded by a newer advps (schema version {newest}; this advps {} \
             knows versions up to {newest_known}): install that newer advps, or restore a \
             backup made before the upgrade",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

/// A migration of this build, and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStep {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// What `migrate` would do on a database, found without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Every migration this build has, in order.
    pub steps: Vec<MigrationStep>,
    /// Versions applied to the database that this build does not know (a
    /// newer advps migrated it).
    pub unknown: Vec<i64>,
}

/// Reads which migrations the configured database has, without running
/// any (nor creating the database).
pub async fn migration_plan(
    database_url: Option<&str>,
    data_dir: &Path,
) -> StoreResult<MigrationPlan> {
    let url = database_url.map(str::trim).filter(|u| !u.is_empty());
    let (backend, migrator, applied) = match url {
        Some(url) if is_postgres_url(url) => {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.application_name("advps"))
                .await?;
            let applied = pg_applied(&pool).await;
            pool.close().await;
            ("postgres", &PG_MIGRATOR, applied?)
        }
        Some(url) if !url.starts_with("sqlite:") => {
            return Err(StoreError::Open(format!(
                "unsupported database URL '{url}'"
            )));
        }
        _ => {
            let path = match url {
                Some(url) => {
                    let p = url.trim_start_matches("sqlite:").trim_start_matches("//");
                    std::path::PathBuf::from(p.split('?').next().unwrap_or(p))
                }
                None => data_dir.join(DATABASE_FILE),
            };
            let applied = if path.exists() {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        SqliteConnectOptions::new()
                            .filename(&path)
                            .read_only(true)
                            .busy_timeout(Duration::from_secs(10)),
                    )
                    .await?;
                let applied = sqlite_applied(&pool).await;
                pool.close().await;
                applied?
            } else {
                Vec::new()
            };
            ("sqlite", &SQLITE_MIGRATOR, applied)
        }
    };
    let steps = migrator
        .iter()
        .map(|m| MigrationStep {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect::<Vec<_>>();
    let unknown = applied
        .iter()
        .copied()
        .filter(|v| !steps.iter().any(|s| s.version == *v))
        .collect();
    Ok(MigrationPlan {
        backend,
        steps,
        unknown,
    })
}

/// Creates `dir` if needed and makes it private to this user.
fn create_private_dir(dir: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let open_err = |e: std::io::Error| {
        StoreError::Open(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(open_err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(open_err)
}

/// Makes the database file and its `-wal` and `-shm` companions 0600,
/// creating the database file empty if it does not exist yet so that SQLite
/// never makes it with the process's umask.
///
/// An existing file is never opened here, only changed by path: closing any
/// descriptor of a file drops every POSIX lock this process holds on it,
/// and SQLite's connections (of this store or another one in the process)
/// hold such locks on the database while they are open.
fn make_private_files(db: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let open_err =
        |e: std::io::Error| StoreError::Open(format!("cannot open {}: {e}", db.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(open_err(e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(e)),
        }
    }
    Ok(())
}
