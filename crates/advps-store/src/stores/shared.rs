//! Statements and row shapes that several aggregates use inside their own
//! transactions: the outbox's events (written in the transaction of the
//! change they describe), the columns of a task, the product stock query,
//! a wallet's balance, taking a service apart, and whether a public id was
//! ever given.

use advps_domain::Mode;

use crate::db::{query, Row, Tx};
use crate::model::TaskRecord;
use crate::StoreResult;

/// Task statuses that hold their service.
pub(crate) const ACTIVE_STATUSES: &str = "('PENDING', 'IN_PROGRESS')";

/// The columns [`task_from`] reads; `t` is `tasks`, `s` its service.
pub(crate) const TASK_COLUMNS: &str =
    "t.id, t.account_id, t.mode, t.service_pk, s.service_id, t.kind, t.status, \
     t.progress, t.params, t.prev_state, t.error, t.created_at, t.updated_at, t.due_at, \
     t.finished_at, t.step, t.scratch, t.lease_owner, t.lease_until, t.attempts";

pub(crate) fn task_from(row: &Row) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        mode: row.parse("mode")?,
        service_pk: row.get("service_pk")?,
        service_id: row.get("service_id")?,
        kind: row.parse("kind")?,
        status: row.parse("status")?,
        progress: row.get("progress")?,
        params: row.get("params")?,
        prev_state: row.parse_opt("prev_state")?,
        error: row.get("error")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        due_at: row.get("due_at")?,
        finished_at: row.get("finished_at")?,
        step: row.get("step")?,
        scratch: row.get("scratch")?,
        lease_owner: row.get("lease_owner")?,
        lease_until: row.get("lease_until")?,
        attempts: row.get("attempts")?,
    })
}

/// A task by id, inside a transaction.
pub(crate) async fn task_by_id(tx: &mut Tx, id: &str) -> StoreResult<TaskRecord> {
    let row = query(format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk WHERE t.id = $1"
    ))
    .bind(id)
    .row(&mut *tx)
    .await?;
    task_from(&row)
}

/// Products with their stock, computed in SQL so that sorting and paging
/// happen on it. `$1` is the account whose sandbox purchases come off
/// sandbox stock; the caller adds `WHERE` clauses from `$2` on.
pub(crate) const PRODUCT_SELECT: &str =
    "SELECT p.id, p.name, p.pack_name, p.vm_type, p.low_stock_threshold, p.default_os, \
     p.manual_stock IS NOT NULL AS manual, \
     CASE WHEN p.mode = 'test' THEN COALESCE(p.manual_stock, 0) - (SELECT COUNT(*) FROM services s \
        WHERE s.account_id = $1 AND s.mode = 'test' AND s.product_id = p.id) \
     ELSE COALESCE(p.manual_stock, (SELECT COUNT(*) FROM instances i \
        WHERE i.product_id = p.id AND i.state = 'free' AND i.healthy = TRUE)) END AS stock \
     FROM products p";

/// Locks an account's row for the rest of the transaction. Every debit of
/// a wallet takes this lock before it reads the balance, so two purchases by
/// one account run one after the other and the second sees the first's
/// charge: the balance can never be spent twice.
pub(crate) async fn lock_account(tx: &mut Tx, account_id: i64) -> StoreResult<()> {
    let sql = format!(
        "SELECT id FROM accounts WHERE id = $1{}",
        tx.dialect().lock_rows()
    );
    query(sql).bind(account_id).rows(&mut *tx).await?;
    Ok(())
}

/// A wallet's balance, inside a transaction.
pub(crate) async fn balance_in(tx: &mut Tx, account_id: i64, mode: Mode) -> StoreResult<i64> {
    // PostgreSQL's SUM of BIGINT is NUMERIC; the ledger's sums fit in BIGINT.
    query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS b FROM ledger_entries \
         WHERE account_id = $1 AND mode = $2",
    )
    .bind(account_id)
    .bind(mode.as_str())
    .scalar(&mut *tx)
    .await
}

/// Writes an event to the outbox, in the caller's transaction, so it exists
/// exactly when the change it describes does. `account_id` `None` addresses
/// every account of the mode.
pub(crate) async fn emit(
    tx: &mut Tx,
    account_id: Option<i64>,
    mode: Mode,
    event_type: &str,
    data: serde_json::Value,
    now: i64,
) -> StoreResult<()> {
    let id = format!("evt_{}", advps_domain::ids::task_id().replace('-', ""));
    let payload = serde_json::json!({
        "type": event_type,
        "timestamp": advps_domain::time::format_millis(now),
        "data": data,
    });
    query(
        "INSERT INTO events (id, account_id, mode, event_type, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(mode.as_str())
    .bind(event_type)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Emits `product.stock_changed` with the product's stock as its audience
/// sees it: the account's own for sandbox products, everyone's for live ones.
pub(crate) async fn emit_stock_changed(
    tx: &mut Tx,
    account_id: i64,
    mode: Mode,
    product_id: &str,
    now: i64,
) -> StoreResult<()> {
    let stock: Option<i64> = query(format!("{PRODUCT_SELECT} WHERE p.mode = $2 AND p.id = $3"))
        .bind(account_id)
        .bind(mode.as_str())
        .bind(product_id)
        .row_opt(&mut *tx)
        .await?
        .map(|r| r.get("stock"))
        .transpose()?;
    let audience = match mode {
        Mode::Test => Some(account_id),
        Mode::Live => None,
    };
    let data = serde_json::json!({ "productId": product_id, "stock": stock.unwrap_or(0).max(0) });
    emit(tx, audience, mode, "product.stock_changed", data, now).await
}

/// Emits `service.power_state_changed` for a service whose state moved.
pub(crate) async fn emit_power_changed(
    tx: &mut Tx,
    service_pk: i64,
    from: &str,
    to: &str,
    now: i64,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    let Some(row) =
        query("SELECT account_id, mode, service_id, service_type FROM services WHERE pk = $1")
            .bind(service_pk)
            .row_opt(&mut *tx)
            .await?
    else {
        return Ok(());
    };
    let mode: Mode = row.parse("mode")?;
    let data = serde_json::json!({
        "serviceId": row.get::<String>("service_id")?,
        "serviceType": row.get::<String>("service_type")?,
        "previousStatus": from,
        "status": to,
    });
    emit(
        tx,
        Some(row.get("account_id")?),
        mode,
        "service.power_state_changed",
        data,
        now,
    )
    .await
}

/// Takes a service apart inside the caller's transaction: its addresses go
/// back to their pools, its tasks and the service row go, and its machine
/// (if it had one) returns to inventory in the given state.
pub(crate) async fn unbind_service(
    tx: &mut Tx,
    service_pk: i64,
    instance: Option<(i64, &str)>,
    now: i64,
) -> StoreResult<()> {
    query("UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = $1")
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
    // Its public id is retired with it, never to be given again.
    query(
        "INSERT INTO retired_service_ids (account_id, mode, service_id, retired_at) \
         SELECT account_id, mode, service_id, $2 FROM services WHERE pk = $1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(service_pk)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    query("DELETE FROM tasks WHERE service_pk = $1")
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
    for table in ["usage_samples", "usage_counters"] {
        query(format!("DELETE FROM {table} WHERE service_pk = $1"))
            .bind(service_pk)
            .execute(&mut *tx)
            .await?;
    }
    query("DELETE FROM services WHERE pk = $1")
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
    if let Some((id, state)) = instance {
        query("UPDATE instances SET state = $1, updated_at = $2 WHERE id = $3")
            .bind(state)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Whether `service_id` was ever given to a service of this account and
/// mode (live ids: of any account), whether that service still exists or
/// was taken apart.
pub(crate) async fn service_id_used(
    tx: &mut Tx,
    account_id: Option<i64>,
    mode: Mode,
    service_id: &str,
) -> StoreResult<bool> {
    let used: Option<i64> = query(
        "SELECT 1 FROM services WHERE service_id = $1 AND mode = $2 \
           AND (CAST($3 AS BIGINT) IS NULL OR account_id = $3) \
         UNION ALL SELECT 1 FROM retired_service_ids WHERE service_id = $1 AND mode = $2 \
           AND (CAST($3 AS BIGINT) IS NULL OR account_id = $3) LIMIT 1",
    )
    .bind(service_id)
    .bind(mode.as_str())
    .bind(account_id)
    .scalar_opt(&mut *tx)
    .await?;
    Ok(used.is_some())
}
