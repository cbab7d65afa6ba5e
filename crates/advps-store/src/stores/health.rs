//! Whether the store can still commit: the health check's probe.

use async_trait::async_trait;

use crate::db::query;
use crate::{SqlStore, StoreResult};

/// Whether the store can still commit.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Commits a one-row write that must reach the disk (a full disk, a
    /// read-only file system or a lost database server fail it).
    async fn check_writes(&self, now: i64) -> StoreResult<()>;
}

#[async_trait]
impl HealthStore for SqlStore {
    async fn check_writes(&self, now: i64) -> StoreResult<()> {
        query(
            "INSERT INTO heartbeat (id, at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(now)
        .execute(self.db.write_uncached())
        .await?;
        Ok(())
    }
}
