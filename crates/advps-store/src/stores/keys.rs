//! API keys: stored as digests, found by digest, revoked once.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use advps_domain::Mode;

use crate::db::query;
use crate::model::*;
use crate::stores::shared::lock_account;
use crate::{SqlStore, StoreResult};

/// What revoking one of an account's own keys came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRevocation {
    Revoked,
    /// No unrevoked key of that id in that account and mode.
    NotFound,
    /// It is the account's last unrevoked key in that mode: revoking it
    /// would lock the account out of the API.
    LastKey,
}

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

    /// Revokes a key of `account_id` in `mode`, unless it is the last
    /// unrevoked one there. Decided under the account's row lock, so two
    /// revocations at once cannot both pass the check and leave none.
    async fn revoke_own_api_key(
        &self,
        account_id: i64,
        mode: Mode,
        key_id: &str,
        now: i64,
    ) -> StoreResult<KeyRevocation>;
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

    async fn revoke_own_api_key(
        &self,
        account_id: i64,
        mode: Mode,
        key_id: &str,
        now: i64,
    ) -> StoreResult<KeyRevocation> {
        let mut tx = self.db.begin().await?;
        lock_account(&mut tx, account_id).await?;
        let active = query(
            "SELECT id FROM api_keys WHERE account_id = $1 AND mode = $2 AND revoked_at IS NULL",
        )
        .bind(account_id)
        .bind(mode.as_str())
        .rows(&mut tx)
        .await?;
        let ids = active
            .iter()
            .map(|r| r.get::<String>("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let outcome = if !ids.iter().any(|id| id == key_id) {
            KeyRevocation::NotFound
        } else if ids.len() <= 1 {
            KeyRevocation::LastKey
        } else {
            query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(key_id)
                .execute(&mut tx)
                .await?;
            KeyRevocation::Revoked
        };
        if outcome == KeyRevocation::Revoked {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcome)
    }
}
