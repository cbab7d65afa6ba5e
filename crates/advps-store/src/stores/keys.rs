//! API keys: stored as digests, found by digest, revoked once.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// API keys: stored as digests, found by digest, revoked once.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<()>;

    /// Finds a key by its digest, revoked or not (the caller decides).
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;

    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;

    /// Revokes a key; false when no unrevoked key has that id.
    async fn revoke_api_key(&self, key_id: &str, now: i64) -> StoreResult<bool>;

    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()>;
}

const KEY_SELECT: &str =
    "SELECT k.id, k.account_id, a.name AS account_name, k.mode, k.key_hash, k.last4, \
     k.created_at, k.last_used_at, k.revoked_at FROM api_keys k JOIN accounts a ON a.id = k.account_id";

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        query(
            "INSERT INTO api_keys (id, account_id, mode, key_hash, last4, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(key.account_id)
        .bind(key.mode.as_str())
        .bind(&key.key_hash)
        .bind(&key.last4)
        .bind(key.created_at)
        .execute(self.db.write())
        .await
        .map_err(|e| e.on_write(format!("key '{}'", key.id)))?;
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.cache
            .key(key_hash, || {
                query(format!("{KEY_SELECT} WHERE k.key_hash = $1"))
                    .bind(key_hash)
                    .fetch_optional(self.db.read())
            })
            .await
    }

    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
        query(format!(
            "{KEY_SELECT} WHERE k.account_id = $1 ORDER BY k.created_at, k.id COLLATE \"C\""
        ))
        .bind(account_id)
        .fetch_all(self.db.read())
        .await
    }

    async fn revoke_api_key(&self, key_id: &str, now: i64) -> StoreResult<bool> {
        // The commit drops this process's cached keys at once; other
        // processes drop theirs when they see the commit.
        let revoked =
            query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(key_id)
                .execute(self.db.write())
                .await?;
        Ok(revoked == 1)
    }

    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()> {
        query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(key_id)
            .execute(self.db.write())
            .await?;
        Ok(())
    }
}
