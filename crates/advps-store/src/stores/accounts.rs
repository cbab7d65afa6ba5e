//! Accounts, each with its sandbox fleet and starting credit.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::{sandbox, PowerState};
use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::{SqlStore, StoreResult, DAY_MS};

/// Accounts, each with its sandbox fleet and starting credit.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account together with its sandbox fleet and the sandbox
    /// wallet's starting credit, in one transaction.
    /// A name that exists is [`StoreError::Conflict`].
    async fn create_account(&self, name: &str, now: i64) -> StoreResult<Account>;

    async fn list_accounts(&self) -> StoreResult<Vec<Account>>;

    async fn find_account(&self, name: &str) -> StoreResult<Option<Account>>;

    async fn count_accounts(&self) -> StoreResult<i64>;
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, name: &str, now: i64) -> StoreResult<Account> {
        // It writes services: a cached transaction.
        let mut tx = self.db.begin().await?;
        let id: i64 = query("INSERT INTO accounts (name, created_at) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(now)
            .scalar(&mut tx)
            .await
            .map_err(|e| e.on_write(format!("account '{name}'")))?;
        for seed in sandbox::FLEET {
            let os = sandbox::os_image(seed.os);
            let started_at = seed
                .running
                .then_some(now - sandbox::INITIAL_UPTIME_SECS * 1000);
            let state = if seed.running {
                PowerState::Running
            } else {
                PowerState::Stopped
            };
            query(
                "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, \
                 ip, reserved_ip, os_slug, os_name, started_at, expires_at, created_at) \
                 VALUES ($1, 'test', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(id)
            .bind(seed.id)
            .bind(seed.service_type.as_str())
            .bind(seed.vmid)
            .bind(state.as_str())
            .bind(seed.ip)
            .bind(seed.reserved_ip)
            .bind(seed.os)
            .bind(os.map(|o| o.name))
            .bind(started_at)
            .bind(now + sandbox::VALIDITY_DAYS * DAY_MS)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, created_at) \
             VALUES ($1, 'test', $2, $3, 'credit', 'sandbox starting credit', $4)",
        )
        .bind(id)
        .bind(sandbox::STARTING_CREDIT)
        .bind(sandbox::CURRENCY)
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Account {
            id,
            name: name.to_string(),
            created_at: now,
        })
    }

    async fn list_accounts(&self) -> StoreResult<Vec<Account>> {
        query("SELECT id, name, created_at FROM accounts ORDER BY id")
            .fetch_all(self.db.read())
            .await
    }

    async fn find_account(&self, name: &str) -> StoreResult<Option<Account>> {
        query("SELECT id, name, created_at FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.read())
            .await
    }

    async fn count_accounts(&self) -> StoreResult<i64> {
        query("SELECT COUNT(*) FROM accounts")
            .scalar(self.db.read())
            .await
    }
}
