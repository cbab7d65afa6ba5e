//! The audit log.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::Mode;
use async_trait::async_trait;

use crate::db::{query, Query};
use crate::model::*;
use crate::stores::idempotency;
use crate::{SqlStore, StoreResult};

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;

    /// Records `entry` and the response of the idempotent request it
    /// answered in one commit: both are kept, or neither.
    async fn record_audit_finishing(
        &self,
        entry: &NewAuditEntry,
        response: &IdempotentResponse,
    ) -> StoreResult<()>;

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(Vec<AuditEntry>, u64)>;
}

/// The filter of [`AuditStore::list_audit`], `$1` to `$5`. Each is cast so
/// that an absent (NULL) filter still has a type on PostgreSQL.
const AUDIT_WHERE: &str = "WHERE (CAST($1 AS BIGINT) IS NULL OR e.account_id = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR e.mode = $2) AND (CAST($3 AS TEXT) IS NULL OR e.service_id = $3) \
     AND (CAST($4 AS BIGINT) IS NULL OR e.at >= $4) AND (CAST($5 AS BIGINT) IS NULL OR e.at <= $5)";

fn insert(entry: &NewAuditEntry) -> Query<'static> {
    query(
        "INSERT INTO audit_entries (at, account_id, key_id, mode, method, path, service_id, status, \
         request_id, idempotency_key, task_id, order_id, source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(entry.at)
    .bind(entry.account_id)
    .bind(&entry.key_id)
    .bind(entry.mode.map(Mode::as_str))
    .bind(&entry.method)
    .bind(&entry.path)
    .bind(&entry.service_id)
    .bind(entry.status)
    .bind(&entry.request_id)
    .bind(&entry.idempotency_key)
    .bind(&entry.task_id)
    .bind(&entry.order_id)
    .bind(&entry.source)
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
        // Committed with other requests' entries when the writer is busy.
        self.db.write_together(vec![insert(entry)]).await
    }

    async fn record_audit_finishing(
        &self,
        entry: &NewAuditEntry,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        self.db
            .write_together(vec![idempotency::finish(response), insert(entry)])
            .await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(Vec<AuditEntry>, u64)> {
        let mode = filter.mode.map(Mode::as_str);
        let total: i64 = query(format!(
            "SELECT COUNT(*) FROM audit_entries e {AUDIT_WHERE}"
        ))
        .bind(filter.account_id)
        .bind(mode)
        .bind(&filter.service_id)
        .bind(filter.from)
        .bind(filter.to)
        .scalar(self.db.read())
        .await?;
        let total = total as u64;
        if filter.offset >= total {
            return Ok((Vec::new(), total));
        }
        let entries = query(format!(
            "SELECT e.*, a.name AS account_name FROM audit_entries e \
             LEFT JOIN accounts a ON a.id = e.account_id \
             {AUDIT_WHERE} ORDER BY e.at DESC, e.id DESC LIMIT $6 OFFSET $7"
        ))
        .bind(filter.account_id)
        .bind(mode)
        .bind(&filter.service_id)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.limit)
        .bind(filter.offset as i64)
        .fetch_all(self.db.read())
        .await?;
        Ok((entries, total))
    }
}
