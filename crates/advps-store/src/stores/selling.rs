//! Selling: the wallet and its ledger, orders, renewal.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::{Mode, ServiceType};
use async_trait::async_trait;

use crate::db::{query, Tx};
use crate::model::*;
use crate::stores::shared::{
    self, balance_in, emit, emit_stock_changed, lock_account, unbind_service, PRODUCT_SELECT,
};
use crate::{SqlStore, StoreResult};

/// Selling: the wallet and its ledger, orders, renewal.
#[async_trait]
pub trait SellingStore: Send + Sync {
    /// Adds a ledger entry of kind `credit`; returns the new balance.
    async fn credit_wallet(
        &self,
        account_id: i64,
        mode: Mode,
        amount_minor: i64,
        currency: &str,
        note: &str,
        now: i64,
    ) -> StoreResult<i64>;

    async fn wallet_balance(&self, account_id: i64, mode: Mode) -> StoreResult<i64>;

    async fn ledger(&self, account_id: i64, mode: Mode) -> StoreResult<Vec<LedgerEntry>>;

    /// A page of the wallet's ledger, newest first, and how many entries
    /// the account has in that mode.
    async fn page_ledger(
        &self,
        scope: Scope,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<LedgerEntry>, u64)>;

    /// A page of the account's orders in its mode, newest first, and how
    /// many there are.
    async fn page_orders(
        &self,
        scope: Scope,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<OrderRecord>, u64)>;

    /// Places an order atomically: checks the balance, takes the machines
    /// (free instances of the product and size live; the account's sandbox
    /// stock in test mode), charges the wallet, records the order, its
    /// services (`PROVISIONING`) and one provisioning task each. Nothing is
    /// charged or taken unless all of it succeeds.
    async fn place_order(&self, order: &NewOrder) -> StoreResult<PlaceOrder>;

    async fn find_order(&self, scope: Scope, order_id: &str) -> StoreResult<Option<OrderRecord>>;

    async fn order_services(&self, order_id: &str) -> StoreResult<Vec<ServiceRecord>>;

    /// Marks a `PENDING` order `COMPLETED` once none of its services is still
    /// provisioning; true when it did.
    async fn settle_order(&self, order_id: &str, now: i64) -> StoreResult<bool>;

    /// Fails a `PENDING` order once: refunds it, fails its unfinished tasks,
    /// removes its services, and puts each instance back in inventory as
    /// given (`free`, or `out_of_service` when it could not be wiped).
    async fn fail_order(
        &self,
        order_id: &str,
        error: &str,
        instance_states: &[(i64, &str)],
        now: i64,
    ) -> StoreResult<bool>;

    /// Renews services atomically: pays from the wallet, moves each expiry
    /// by its validity and lifts a suspension.
    async fn renew_services(
        &self,
        scope: Scope,
        items: &[RenewItem],
        currency: &str,
        reference: &str,
        now: i64,
    ) -> StoreResult<Renewal>;
}

/// A live service id no service has yet, in any account. The database
/// keeps service ids unique per account only, so the check is made here;
/// two orders of one account run under its lock and so never pick the
/// same id.
async fn unique_live_id(tx: &mut Tx) -> StoreResult<String> {
    loop {
        let candidate = advps_domain::ids::live_service_id();
        if !shared::service_id_used(&mut *tx, None, Mode::Live, &candidate).await? {
            return Ok(candidate);
        }
    }
}

/// The next sandbox service id of a type (`lxc_service_2`, `vps_service_3`)
/// and a simulated vmid for it. Runs under the account's lock, so two
/// orders of one account never pick the same id.
async fn next_sandbox_id(
    tx: &mut Tx,
    scope: Scope,
    service_type: ServiceType,
) -> StoreResult<(String, String)> {
    let (prefix, vm_prefix, base) = match service_type {
        ServiceType::Linux => ("lxc", "ct", 2000),
        ServiceType::Vps => ("vps", "vm", 1000),
        ServiceType::ProvisionalVps => ("pvps", "vm", 3000),
    };
    // Ids of services taken apart count too: they are never given again.
    let mut n: i64 = query(
        "SELECT (SELECT COUNT(*) FROM services WHERE account_id = $1 AND mode = 'test' \
           AND service_id LIKE $2) \
         + (SELECT COUNT(*) FROM retired_service_ids WHERE account_id = $1 AND mode = 'test' \
           AND service_id LIKE $2)",
    )
    .bind(scope.account_id)
    .bind(format!("{prefix}_service_%"))
    .scalar(&mut *tx)
    .await?;
    loop {
        n += 1;
        let id = format!("{prefix}_service_{n}");
        if !shared::service_id_used(&mut *tx, Some(scope.account_id), Mode::Test, &id).await? {
            return Ok((id, format!("{vm_prefix}{}", base + n - 1)));
        }
    }
}

/// A page of the rows of `table` that belong to one account and mode,
/// newest first (by `created_at`, then by `order_key`, so entries of the
/// same millisecond keep one order across pages), and how many there are.
async fn scoped_page<T: crate::db::Record>(
    store: &SqlStore,
    columns: &str,
    table: &str,
    order_key: &str,
    scope: Scope,
    offset: u64,
    limit: u32,
) -> StoreResult<(Vec<T>, u64)> {
    let total: i64 = query(format!(
        "SELECT COUNT(*) FROM {table} WHERE account_id = $1 AND mode = $2"
    ))
    .bind(scope.account_id)
    .bind(scope.mode.as_str())
    .scalar(store.db.read())
    .await?;
    let total = total as u64;
    // Past the end needs no query, and keeps huge offsets out of OFFSET.
    if offset >= total {
        return Ok((Vec::new(), total));
    }
    let rows = query(format!(
        "SELECT {columns} FROM {table} WHERE account_id = $1 AND mode = $2 \
         ORDER BY created_at DESC, {order_key} DESC LIMIT $3 OFFSET $4"
    ))
    .bind(scope.account_id)
    .bind(scope.mode.as_str())
    .bind(i64::from(limit))
    .bind(offset as i64)
    .fetch_all(store.db.read())
    .await?;
    Ok((rows, total))
}

/// The columns of a [`LedgerEntry`].
const LEDGER_COLUMNS: &str = "id, amount_minor, currency, kind, reference, note, created_at";

#[async_trait]
impl SellingStore for SqlStore {
    async fn credit_wallet(
        &self,
        account_id: i64,
        mode: Mode,
        amount_minor: i64,
        currency: &str,
        note: &str,
        now: i64,
    ) -> StoreResult<i64> {
        let mut tx = self.db.begin().await?;
        // Serialised with debits, so the balance returned is the one right
        // after this credit.
        lock_account(&mut tx, account_id).await?;
        query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, \
             created_at) VALUES ($1, $2, $3, $4, 'credit', $5, $6)",
        )
        .bind(account_id)
        .bind(mode.as_str())
        .bind(amount_minor)
        .bind(currency)
        .bind(note)
        .bind(now)
        .execute(&mut tx)
        .await?;
        let balance = balance_in(&mut tx, account_id, mode).await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn wallet_balance(&self, account_id: i64, mode: Mode) -> StoreResult<i64> {
        // PostgreSQL's SUM of BIGINT is NUMERIC; the ledger's sums fit in BIGINT.
        query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS b FROM ledger_entries \
             WHERE account_id = $1 AND mode = $2",
        )
        .bind(account_id)
        .bind(mode.as_str())
        .scalar(self.db.read())
        .await
    }

    async fn ledger(&self, account_id: i64, mode: Mode) -> StoreResult<Vec<LedgerEntry>> {
        query(format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE account_id = $1 AND mode = $2 \
             ORDER BY id"
        ))
        .bind(account_id)
        .bind(mode.as_str())
        .fetch_all(self.db.read())
        .await
    }

    async fn page_ledger(
        &self,
        scope: Scope,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<LedgerEntry>, u64)> {
        scoped_page(
            self,
            LEDGER_COLUMNS,
            "ledger_entries",
            "id",
            scope,
            offset,
            limit,
        )
        .await
    }

    async fn page_orders(
        &self,
        scope: Scope,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<OrderRecord>, u64)> {
        // Order ids sort by day then number only within one prefix, so ties
        // of the same millisecond are broken by the id as text, bytewise.
        scoped_page(
            self,
            "*",
            "orders",
            "id COLLATE \"C\"",
            scope,
            offset,
            limit,
        )
        .await
    }

    async fn place_order(&self, order: &NewOrder) -> StoreResult<PlaceOrder> {
        let scope = order.scope;
        let mut tx = self.db.begin().await?;
        // The account's lock covers the balance check and, in the sandbox,
        // the account's share of stock (both are per account).
        lock_account(&mut tx, scope.account_id).await?;
        let balance = balance_in(&mut tx, scope.account_id, scope.mode).await?;
        if balance < order.amount_minor {
            tx.rollback().await?;
            return Ok(PlaceOrder::InsufficientFunds { balance });
        }
        // The machines: free instances of the product and size (live), or
        // the account's share of the sandbox catalogue's stock.
        let instances: Vec<(i64, String, String)> = match scope.mode {
            Mode::Live => {
                let kind = if order.service_type.is_container() {
                    "container"
                } else {
                    "vm"
                };
                // Live stock is shared by every account. The rows are locked
                // until commit; SKIP LOCKED passes over instances another
                // order is taking right now, so two orders never get the
                // same machine, and one that finds too few is out of stock
                // instead of waiting on the other.
                let sql = format!(
                    "SELECT id, node, engine_id FROM instances WHERE product_id = $1 \
                     AND memory_mb = $2 AND kind = $3 AND state = 'free' AND healthy = TRUE \
                     ORDER BY id LIMIT $4{}",
                    tx.dialect().skip_locked()
                );
                let found = query(sql)
                    .bind(&order.product_id)
                    .bind(order.ram_mb)
                    .bind(kind)
                    .bind(order.quantity)
                    .rows(&mut tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.get("id")?, r.get("node")?, r.get("engine_id")?)))
                    .collect::<StoreResult<Vec<_>>>()?;
                if (found.len() as i64) < order.quantity {
                    tx.rollback().await?;
                    return Ok(PlaceOrder::OutOfStock {
                        available: found.len() as i64,
                    });
                }
                found
            }
            Mode::Test => {
                let available: i64 = query(format!(
                    "{PRODUCT_SELECT} WHERE p.mode = 'test' AND p.id = $2"
                ))
                .bind(scope.account_id)
                .bind(&order.product_id)
                .row_opt(&mut tx)
                .await?
                .map(|r| r.get("stock"))
                .transpose()?
                .unwrap_or(0);
                if available < order.quantity {
                    tx.rollback().await?;
                    return Ok(PlaceOrder::OutOfStock {
                        available: available.max(0),
                    });
                }
                Vec::new()
            }
        };
        // Order numbers: the counter row is created or bumped in one
        // statement; a concurrent order of the same day waits for this row
        // until commit, so numbers are never handed out twice.
        let counter: i64 = query(
            "INSERT INTO order_counters (day_key, last) VALUES ($1, 1) \
             ON CONFLICT (day_key) DO UPDATE SET last = order_counters.last + 1 RETURNING last",
        )
        .bind(format!("{}{}", order.prefix, order.day))
        .scalar(&mut tx)
        .await?;
        let order_id = format!("{}{}-{:04}", order.prefix, order.day, counter);
        query(
            "INSERT INTO orders (id, account_id, mode, product_id, ram_mb, os_slug, os_name, \
             quantity, validity_days, amount_minor, currency, status, remark, customer_name, \
             customer_email, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'PENDING', $12, $13, $14, \
             $15, $15)",
        )
        .bind(&order_id)
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(&order.product_id)
        .bind(order.ram_mb)
        .bind(&order.os_slug)
        .bind(&order.os_name)
        .bind(order.quantity)
        .bind(order.validity_days)
        .bind(order.amount_minor)
        .bind(&order.currency)
        .bind(&order.remark)
        .bind(&order.customer_name)
        .bind(&order.customer_email)
        .bind(order.now)
        .execute(&mut tx)
        .await?;
        query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, \
             reference, note, created_at) VALUES ($1, $2, $3, $4, 'purchase', $5, $6, $7)",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(-order.amount_minor)
        .bind(&order.currency)
        .bind(&order_id)
        .bind(format!("{} x {}", order.quantity, order.product_id))
        .bind(order.now)
        .execute(&mut tx)
        .await?;
        let expires_at = order.now + order.validity_days * crate::DAY_MS;
        let mut services = Vec::new();
        for unit in 0..order.quantity as usize {
            let (instance_id, node, vmid, service_id) = match scope.mode {
                Mode::Live => {
                    let Some((id, node, engine_id)) = instances.get(unit).cloned() else {
                        tx.rollback().await?;
                        return Ok(PlaceOrder::OutOfStock {
                            available: instances.len() as i64,
                        });
                    };
                    query(
                        "UPDATE instances SET state = 'assigned', updated_at = $1 \
                         WHERE id = $2 AND state = 'free'",
                    )
                    .bind(order.now)
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                    (
                        Some(id),
                        Some(node),
                        engine_id,
                        unique_live_id(&mut tx).await?,
                    )
                }
                Mode::Test => {
                    let (service_id, vmid) =
                        next_sandbox_id(&mut tx, scope, order.service_type).await?;
                    (None, None, vmid, service_id)
                }
            };
            let (password_enc, ip) = match order.sandbox_credentials.get(unit) {
                Some((p, ip)) => (Some(p.as_str()), Some(ip.as_str())),
                None => (None, None),
            };
            let service: ServiceRecord = query(
                "INSERT INTO services (account_id, mode, service_id, service_type, vmid, \
                 power_state, ip, reserved_ip, os_slug, os_name, password_enc, expires_at, \
                 created_at, node, instance_id, order_id, product_id, ram_mb, username) \
                 VALUES ($1, $2, $3, $4, $5, 'PROVISIONING', $6, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17) RETURNING *",
            )
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(&service_id)
            .bind(order.service_type.as_str())
            .bind(&vmid)
            .bind(ip)
            .bind(&order.os_slug)
            .bind(&order.os_name)
            .bind(password_enc)
            .bind(expires_at)
            .bind(order.now)
            .bind(&node)
            .bind(instance_id)
            .bind(&order_id)
            .bind(&order.product_id)
            .bind(order.ram_mb)
            .bind(&order.username)
            .fetch_one(&mut tx)
            .await?;
            query(
                "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, \
                 params, prev_state, created_at, updated_at, due_at) \
                 VALUES ($1, $2, $3, $4, 'PROVISION', 'PENDING', 0, $5, 'STOPPED', $6, $6, $7)",
            )
            .bind(advps_domain::ids::task_id())
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(service.pk)
            .bind(&order.task_params)
            .bind(order.now)
            .bind(order.due_at)
            .execute(&mut tx)
            .await?;
            services.push(service);
        }
        let record: OrderRecord = query("SELECT * FROM orders WHERE id = $1")
            .bind(&order_id)
            .fetch_one(&mut tx)
            .await?;
        emit_stock_changed(
            &mut tx,
            scope.account_id,
            scope.mode,
            &order.product_id,
            order.now,
        )
        .await?;
        tx.commit().await?;
        Ok(PlaceOrder::Placed {
            order: Box::new(record),
            services,
        })
    }

    async fn find_order(&self, scope: Scope, order_id: &str) -> StoreResult<Option<OrderRecord>> {
        query("SELECT * FROM orders WHERE id = $1 AND account_id = $2 AND mode = $3")
            .bind(order_id)
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_optional(self.db.read())
            .await
    }

    async fn order_services(&self, order_id: &str) -> StoreResult<Vec<ServiceRecord>> {
        query("SELECT * FROM services WHERE order_id = $1 ORDER BY pk")
            .bind(order_id)
            .fetch_all(self.db.read())
            .await
    }

    async fn settle_order(&self, order_id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        let row = query(
            "UPDATE orders SET status = 'COMPLETED', updated_at = $1 \
             WHERE id = $2 AND status = 'PENDING' \
             AND NOT EXISTS (SELECT 1 FROM services s WHERE s.order_id = orders.id \
             AND s.power_state = 'PROVISIONING') RETURNING account_id, mode",
        )
        .bind(now)
        .bind(order_id)
        .row_opt(&mut tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let account_id: i64 = row.get("account_id")?;
        let mode: Mode = row.parse("mode")?;
        let services = query("SELECT service_id FROM services WHERE order_id = $1 ORDER BY pk")
            .bind(order_id)
            .rows(&mut tx)
            .await?
            .iter()
            .map(|r| r.get::<String>("service_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let data = serde_json::json!({
            "orderId": order_id,
            "status": "COMPLETED",
            "serviceIds": services,
        });
        emit(
            &mut tx,
            Some(account_id),
            mode,
            "order.completed",
            data,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_order(
        &self,
        order_id: &str,
        error: &str,
        instance_states: &[(i64, &str)],
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        // Fails once: a concurrent call waits for the order's row lock,
        // then finds it no longer pending (and refunds nothing).
        let Some(order) = query(
            "UPDATE orders SET status = 'FAILED', error = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'PENDING' RETURNING *",
        )
        .bind(error)
        .bind(now)
        .bind(order_id)
        .fetch_optional::<OrderRecord>(&mut tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, \
             reference, note, created_at) \
             VALUES ($1, $2, $3, $4, 'refund', $5, 'provisioning failed', $6)",
        )
        .bind(order.account_id)
        .bind(order.mode.as_str())
        .bind(order.amount_minor)
        .bind(&order.currency)
        .bind(order_id)
        .bind(now)
        .execute(&mut tx)
        .await?;
        // Every change of a service locks its row first; holding the locks
        // of the order's services keeps those changes out until the
        // services are gone. In pk order, so lockers never wait in a cycle.
        let sql = format!(
            "SELECT pk, instance_id FROM services WHERE order_id = $1 ORDER BY pk{}",
            tx.dialect().lock_rows()
        );
        let services = query(sql)
            .bind(order_id)
            .rows(&mut tx)
            .await?
            .iter()
            .map(|r| Ok((r.get::<i64>("pk")?, r.get::<Option<i64>>("instance_id")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        for (pk, instance_id) in services {
            let instance = instance_id.map(|id| {
                let state = instance_states
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, s)| *s)
                    .unwrap_or("free");
                (id, state)
            });
            unbind_service(&mut tx, pk, instance, now).await?;
        }
        let data = serde_json::json!({ "orderId": order_id, "status": "FAILED", "error": error });
        emit(
            &mut tx,
            Some(order.account_id),
            order.mode,
            "order.failed",
            data,
            now,
        )
        .await?;
        emit_stock_changed(
            &mut tx,
            order.account_id,
            order.mode,
            &order.product_id,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn renew_services(
        &self,
        scope: Scope,
        items: &[RenewItem],
        currency: &str,
        reference: &str,
        now: i64,
    ) -> StoreResult<Renewal> {
        let mut tx = self.db.begin().await?;
        lock_account(&mut tx, scope.account_id).await?;
        let total: i64 = items.iter().map(|i| i.amount_minor).sum();
        let balance = balance_in(&mut tx, scope.account_id, scope.mode).await?;
        if balance < total {
            tx.rollback().await?;
            return Ok(Renewal::InsufficientFunds { balance });
        }
        query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, \
             reference, note, created_at) VALUES ($1, $2, $3, $4, 'renewal', $5, $6, $7)",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(-total)
        .bind(currency)
        .bind(reference)
        .bind(format!("{} service(s)", items.len()))
        .bind(now)
        .execute(&mut tx)
        .await?;
        let mut renewed = Vec::new();
        for item in items {
            let service: ServiceRecord = query(
                "UPDATE services SET expires_at = COALESCE(expires_at, $1) + $2, \
                 power_state = CASE WHEN power_state = 'SUSPENDED' THEN 'STOPPED' \
                 ELSE power_state END \
                 WHERE pk = $3 AND account_id = $4 AND mode = $5 RETURNING *",
            )
            .bind(now)
            .bind(item.validity_days * crate::DAY_MS)
            .bind(item.service_pk)
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_one(&mut tx)
            .await?;
            renewed.push(service);
        }
        tx.commit().await?;
        Ok(Renewal::Renewed(renewed))
    }
}
