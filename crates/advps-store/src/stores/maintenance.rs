//! Maintenance of the database itself: consistent snapshots for backups,
//! SQLite's integrity check, and the schema version the database is at.
//!
//! The trait and its one implementation, on both databases.

use std::path::Path;

use async_trait::async_trait;

use crate::db::{query, Dialect};
use crate::{SqlStore, StoreError, StoreResult};

/// Maintenance of the database itself.
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Writes a consistent copy of the SQLite database to `path` (which must
    /// not exist) with `VACUUM INTO`, while this and other processes go on
    /// reading and writing: the copy is one read transaction's view. False on
    /// PostgreSQL, whose own tools (`pg_dump`) make its backups.
    async fn snapshot_into(&self, path: &Path) -> StoreResult<bool>;

    /// What SQLite's `PRAGMA integrity_check` finds: `["ok"]` for a sound
    /// database. PostgreSQL checks its own pages; one round trip answers
    /// `["ok"]` there.
    async fn integrity_check(&self) -> StoreResult<Vec<String>>;

    /// The newest migration applied to the database.
    async fn schema_version(&self) -> StoreResult<i64>;

    /// Work waiting for a worker, and how much of it has waited since
    /// before `stale_before` (a sign that no worker runs).
    async fn backlog(&self, stale_before: i64) -> StoreResult<Backlog>;
}

/// Work waiting for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub tasks_open: i64,
    pub tasks_stale: i64,
    pub deliveries_pending: i64,
    pub deliveries_stale: i64,
}

#[async_trait]
impl MaintenanceStore for SqlStore {
    fn backend(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn snapshot_into(&self, path: &Path) -> StoreResult<bool> {
        if self.db.dialect() == Dialect::Postgres {
            return Ok(false);
        }
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::Open(format!("{} is not UTF-8", path.display())))?;
        // On a reader connection: the snapshot is a read transaction, so the
        // writer (and the server's requests) never wait for it.
        query("VACUUM INTO $1")
            .bind(target)
            .execute(self.db.read())
            .await?;
        Ok(true)
    }

    async fn integrity_check(&self) -> StoreResult<Vec<String>> {
        if self.db.dialect() == Dialect::Postgres {
            query("SELECT 1").execute(self.db.read()).await?;
            return Ok(vec!["ok".into()]);
        }
        query("PRAGMA integrity_check")
            .rows(self.db.read())
            .await?
            .iter()
            .map(|row| row.get::<String>("integrity_check"))
            .collect()
    }

    async fn backlog(&self, stale_before: i64) -> StoreResult<Backlog> {
        let row = query(
            "SELECT \
             (SELECT COUNT(*) FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS')) AS tasks_open, \
             (SELECT COUNT(*) FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS') \
                AND COALESCE(due_at, updated_at) < $1) AS tasks_stale, \
             (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending') AS deliveries_pending, \
             (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending' \
                AND next_attempt_at < $1) AS deliveries_stale",
        )
        .bind(stale_before)
        .row(self.db.read())
        .await?;
        Ok(Backlog {
            tasks_open: row.get("tasks_open")?,
            tasks_stale: row.get("tasks_stale")?,
            deliveries_pending: row.get("deliveries_pending")?,
            deliveries_stale: row.get("deliveries_stale")?,
        })
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        query("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE")
            .scalar(self.db.read())
            .await
    }
}
