//! The SQLite implementation of [`Store`]: the embedded default.
//!
//! The database runs in WAL mode so readers never wait for the writer. Writes
//! go through a pool of one connection, which serialises this process's
//! writers without busy retries; transactions begin `IMMEDIATE` so that a
//! second process (the command line, say) waits on the busy timeout instead
//! of failing halfway through a transaction.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use advps_domain::{sandbox, Mode, OsType, PowerState, TaskKind, TaskStatus, VmType};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::model::*;
use crate::{Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "advps.db";

#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    fast: std::sync::Arc<crate::fast_read::FastReader>,
}

impl SqliteStore {
    /// Opens (creating if needed) `advps.db` in `data_dir` and runs the
    /// migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Open(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::open_file(&data_dir.join(DATABASE_FILE)).await
    }

    pub async fn open_file(path: &Path) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            reader,
            writer,
            fast: std::sync::Arc::new(crate::fast_read::FastReader::new(path)),
        })
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

fn parse<T: FromStr<Err = String>>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let raw: String = row.try_get(column)?;
    raw.parse::<T>().map_err(StoreError::Corrupt)
}

fn parse_opt<T: FromStr<Err = String>>(row: &SqliteRow, column: &str) -> StoreResult<Option<T>> {
    let raw: Option<String> = row.try_get(column)?;
    raw.map(|v| v.parse::<T>().map_err(StoreError::Corrupt))
        .transpose()
}

fn account_from(row: &SqliteRow) -> StoreResult<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

const KEY_COLUMNS: &str =
    "k.id, k.account_id, a.name AS account_name, k.mode, k.key_hash, k.last4, \
     k.created_at, k.last_used_at, k.revoked_at";

fn key_from(row: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        account_name: row.try_get("account_name")?,
        mode: parse(row, "mode")?,
        key_hash: row.try_get("key_hash")?,
        last4: row.try_get("last4")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn service_from(row: &SqliteRow) -> StoreResult<ServiceRecord> {
    Ok(ServiceRecord {
        pk: row.try_get("pk")?,
        account_id: row.try_get("account_id")?,
        mode: parse(row, "mode")?,
        service_id: row.try_get("service_id")?,
        service_type: parse(row, "service_type")?,
        vmid: row.try_get("vmid")?,
        power_state: parse(row, "power_state")?,
        ip: row.try_get("ip")?,
        reserved_ip: row.try_get("reserved_ip")?,
        os_slug: row.try_get("os_slug")?,
        os_name: row.try_get("os_name")?,
        started_at: row.try_get("started_at")?,
        password_enc: row.try_get("password_enc")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        node: row.try_get("node")?,
        instance_id: row.try_get("instance_id")?,
        order_id: row.try_get("order_id")?,
        product_id: row.try_get("product_id")?,
        ram_mb: row.try_get("ram_mb")?,
        username: row.try_get("username")?,
        last_mac_reset: row.try_get("last_mac_reset")?,
        mac: row.try_get("mac")?,
    })
}

const TASK_COLUMNS: &str = "t.id, t.account_id, t.mode, t.service_pk, s.service_id, t.kind, t.status, \
     t.progress, t.params, t.prev_state, t.error, t.created_at, t.updated_at, t.due_at, t.finished_at, \
     t.step, t.scratch, t.lease_owner, t.lease_until, t.attempts";

fn task_from(row: &SqliteRow) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        mode: parse(row, "mode")?,
        service_pk: row.try_get("service_pk")?,
        service_id: row.try_get("service_id")?,
        kind: parse::<TaskKind>(row, "kind")?,
        status: parse::<TaskStatus>(row, "status")?,
        progress: row.try_get("progress")?,
        params: row.try_get("params")?,
        prev_state: parse_opt::<PowerState>(row, "prev_state")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        due_at: row.try_get("due_at")?,
        finished_at: row.try_get("finished_at")?,
        step: row.try_get("step")?,
        scratch: row.try_get("scratch")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        attempts: row.try_get("attempts")?,
    })
}

// Stock is computed in SQL so that sorting and paging happen on it. The one
// parameter is the account whose sandbox purchases come off sandbox stock.
const PRODUCT_SELECT: &str =
    "SELECT p.id, p.name, p.pack_name, p.vm_type, p.low_stock_threshold, p.default_os, \
     p.manual_stock IS NOT NULL AS manual, \
     CASE WHEN p.mode = 'test' THEN COALESCE(p.manual_stock, 0) - (SELECT COUNT(*) FROM services s \
        WHERE s.account_id = ?1 AND s.mode = 'test' AND s.product_id = p.id) \
     ELSE COALESCE(p.manual_stock, (SELECT COUNT(*) FROM instances i \
        WHERE i.product_id = p.id AND i.state = 'free' AND i.healthy = 1)) END AS stock \
     FROM products p";

fn product_from(row: &SqliteRow) -> StoreResult<ProductStock> {
    Ok(ProductStock {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        pack_name: row.try_get("pack_name")?,
        vm_type: parse::<VmType>(row, "vm_type")?,
        stock: row.try_get("stock")?,
        manual: row.try_get("manual")?,
        low_stock_threshold: row.try_get("low_stock_threshold")?,
        default_os: row.try_get("default_os")?,
    })
}

const ACTIVE_STATUSES: &str = "('PENDING', 'IN_PROGRESS')";

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, name: &str, now: i64) -> StoreResult<Account> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 =
            sqlx::query("INSERT INTO accounts (name, created_at) VALUES (?, ?) RETURNING id")
                .bind(name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_write(e, format!("account '{name}'")))?
                .try_get("id")?;
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
            sqlx::query(
                "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, \
                 ip, reserved_ip, os_slug, os_name, started_at, expires_at, created_at) \
                 VALUES (?, 'test', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .bind(now + sandbox::VALIDITY_DAYS * 86_400_000)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, created_at) \
             VALUES (?, 'test', ?, ?, 'credit', 'sandbox starting credit', ?)",
        )
        .bind(id)
        .bind(sandbox::STARTING_CREDIT)
        .bind(sandbox::CURRENCY)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Account {
            id,
            name: name.to_string(),
            created_at: now,
        })
    }

    async fn list_accounts(&self) -> StoreResult<Vec<Account>> {
        sqlx::query("SELECT id, name, created_at FROM accounts ORDER BY id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn find_account(&self, name: &str) -> StoreResult<Option<Account>> {
        sqlx::query("SELECT id, name, created_at FROM accounts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(account_from)
            .transpose()
    }

    async fn count_accounts(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(&self.reader)
            .await?
            .try_get("n")?)
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, mode, key_hash, last4, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(key.account_id)
        .bind(key.mode.as_str())
        .bind(&key.key_hash)
        .bind(&key.last4)
        .bind(key.created_at)
        .execute(&self.writer)
        .await
        .map_err(|e| StoreError::from_write(e, format!("key '{}'", key.id)))?;
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.fast.find_api_key(key_hash)
    }

    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.account_id = ? ORDER BY k.created_at, k.id"
        ))
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(key_from)
        .collect()
    }

    async fn revoke_api_key(&self, key_id: &str, now: i64) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(key_id)
                .execute(&self.writer)
                .await?;
        // Every process's remembered keys lapse with this commit.
        Ok(done.rows_affected() == 1)
    }

    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(key_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>> {
        self.fast.find_service(scope, service_id)
    }

    async fn transition_power(
        &self,
        service_pk: i64,
        from: PowerState,
        to: PowerState,
        started_at: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE services SET power_state = ?, started_at = ? WHERE pk = ? AND power_state = ?",
        )
        .bind(to.as_str())
        .bind(started_at)
        .bind(service_pk)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        let moved = done.rows_affected() == 1;
        if moved {
            emit_power_changed(
                &mut tx,
                service_pk,
                from.as_str(),
                to.as_str(),
                advps_domain::time::now_millis(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn assign_ip(&self, service_pk: i64, ip: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "UPDATE services SET ip = COALESCE(ip, ?) WHERE pk = ? AND power_state IN ('RUNNING', 'STOPPED') \
             RETURNING ip",
        )
        .bind(ip)
        .bind(service_pk)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(|r| r.try_get("ip")).transpose()?)
    }

    async fn set_service_os(&self, service_pk: i64, slug: &str, name: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET os_slug = ?, os_name = ? WHERE pk = ?")
            .bind(slug)
            .bind(name)
            .bind(service_pk)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn store_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET password_enc = ? WHERE pk = ?")
            .bind(password_enc)
            .bind(service_pk)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE services SET password_enc = ? WHERE pk = ? AND power_state = 'RUNNING'",
        )
        .bind(password_enc)
        .bind(service_pk)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn start_service_task(
        &self,
        task: &NewTask,
        limit: Option<MonthlyLimit>,
    ) -> StoreResult<StartTask> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) =
            sqlx::query("SELECT power_state, op_lock, op_lock_until FROM services WHERE pk = ?")
                .bind(task.service_pk)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(StartTask::NotFound);
        };
        let state: PowerState = parse(&row, "power_state")?;
        let lock: Option<String> = row.try_get("op_lock")?;
        let lock_until: Option<i64> = row.try_get("op_lock_until")?;
        if lock.is_some() && lock_until.unwrap_or(0) > task.now {
            return Ok(StartTask::Busy(None));
        }
        if state.is_busy() {
            let holder: Option<String> = sqlx::query(&format!(
                "SELECT id FROM tasks WHERE service_pk = ? AND status IN {ACTIVE_STATUSES} \
                 ORDER BY created_at DESC LIMIT 1"
            ))
            .bind(task.service_pk)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?;
            return Ok(StartTask::Busy(holder));
        }
        if !matches!(state, PowerState::Running | PowerState::Stopped) {
            return Ok(StartTask::NotReady(state));
        }
        if let Some(limit) = limit {
            let used: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM tasks WHERE service_pk = ? AND kind = ? AND created_at >= ? \
                 AND status <> 'FAILED'",
            )
            .bind(task.service_pk)
            .bind(task.kind.as_str())
            .bind(limit.since)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if used >= i64::from(limit.max) {
                return Ok(StartTask::LimitReached);
            }
        }
        sqlx::query("UPDATE services SET power_state = ? WHERE pk = ?")
            .bind(task.busy_state.as_str())
            .bind(task.service_pk)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, params, prev_state, \
             created_at, updated_at, due_at) VALUES (?, ?, ?, ?, ?, 'PENDING', 0, ?, ?, ?, ?, ?)",
        )
        .bind(&task.id)
        .bind(task.scope.account_id)
        .bind(task.scope.mode.as_str())
        .bind(task.service_pk)
        .bind(task.kind.as_str())
        .bind(&task.params)
        .bind(state.as_str())
        .bind(task.now)
        .bind(task.now)
        .bind(task.due_at)
        .execute(&mut *tx)
        .await?;
        let record = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk WHERE t.id = ?"
        ))
        .bind(&task.id)
        .fetch_one(&mut *tx)
        .await?;
        let record = task_from(&record)?;
        tx.commit().await?;
        Ok(StartTask::Started(Box::new(record)))
    }

    async fn find_task(&self, scope: Scope, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.id = ? AND t.account_id = ? AND t.mode = ?"
        ))
        .bind(task_id)
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn active_task(&self, service_pk: i64) -> StoreResult<Option<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.service_pk = ? AND t.status IN {ACTIVE_STATUSES} ORDER BY t.created_at DESC LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn due_sandbox_tasks(&self, now: i64, limit: i64) -> StoreResult<Vec<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.status IN {ACTIVE_STATUSES} AND t.mode = 'test' AND t.due_at <= ? \
             ORDER BY t.due_at LIMIT ?"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(task_from)
        .collect()
    }

    async fn finish_task(&self, task_id: &str, finish: &TaskFinish) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(&format!(
            "UPDATE tasks SET status = ?, progress = CASE WHEN ? THEN 100 ELSE progress END, error = ?, \
             updated_at = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL \
             WHERE id = ? AND status IN {ACTIVE_STATUSES} AND (? IS NULL OR lease_owner = ?) RETURNING service_pk"
        ))
        .bind(finish.status.as_str())
        .bind(finish.status == TaskStatus::Completed)
        .bind(&finish.error)
        .bind(finish.now)
        .bind(finish.now)
        .bind(task_id)
        .bind(&finish.owner)
        .bind(&finish.owner)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let service_pk: i64 = row.try_get("service_pk")?;
        let before: String = sqlx::query("SELECT power_state FROM services WHERE pk = ?")
            .bind(service_pk)
            .fetch_one(&mut *tx)
            .await?
            .try_get("power_state")?;
        let (os_slug, os_name) = match &finish.os {
            Some((slug, name)) => (Some(slug.as_str()), Some(name.as_str())),
            None => (None, None),
        };
        sqlx::query(
            "UPDATE services SET power_state = ?, started_at = ?, \
             os_slug = COALESCE(?, os_slug), os_name = COALESCE(?, os_name) WHERE pk = ?",
        )
        .bind(finish.power_state.as_str())
        .bind(finish.started_at)
        .bind(os_slug)
        .bind(os_name)
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        let task = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk WHERE t.id = ?"
        ))
        .bind(task_id)
        .fetch_one(&mut *tx)
        .await?;
        let task = task_from(&task)?;
        let event_type = if finish.status == TaskStatus::Completed {
            "task.completed"
        } else {
            "task.failed"
        };
        let data = serde_json::json!({
            "taskId": task.id,
            "serviceId": task.service_id,
            "type": task.kind.as_str(),
            "status": finish.status.as_str(),
            "error": finish.error,
        });
        emit(
            &mut tx,
            Some(task.account_id),
            task.mode,
            event_type,
            data,
            finish.now,
        )
        .await?;
        emit_power_changed(
            &mut tx,
            service_pk,
            &before,
            finish.power_state.as_str(),
            finish.now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn ensure_products(&self, products: &[NewProduct]) -> StoreResult<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for p in products {
            insert_product(p, true).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_product(&self, product: &NewProduct) -> StoreResult<()> {
        insert_product(product, false)
            .execute(&self.writer)
            .await
            .map_err(|e| StoreError::from_write(e, format!("product '{}'", product.id)))?;
        Ok(())
    }

    async fn list_products(
        &self,
        mode: Mode,
        vm_type: Option<VmType>,
        offset: u64,
        limit: u32,
        account_id: Option<i64>,
    ) -> StoreResult<(Vec<ProductStock>, u64)> {
        let type_filter = vm_type.map(VmType::as_str);
        let total: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM products WHERE mode = ? AND visible = 1 AND (? IS NULL OR vm_type = ?)",
        )
        .bind(mode.as_str())
        .bind(type_filter)
        .bind(type_filter)
        .fetch_one(&self.reader)
        .await?
        .try_get("n")?;
        // An offset past the end needs no query; it also keeps huge offsets
        // out of SQLite's signed 64-bit arithmetic.
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(&format!(
            "{PRODUCT_SELECT} WHERE p.mode = ?2 AND p.visible = 1 AND (?3 IS NULL OR p.vm_type = ?3) \
             ORDER BY stock DESC, p.id ASC LIMIT ?4 OFFSET ?5"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(type_filter)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(&self.reader)
        .await?;
        let products = rows
            .iter()
            .map(product_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((products, total as u64))
    }

    async fn find_product(
        &self,
        mode: Mode,
        id: &str,
        account_id: Option<i64>,
    ) -> StoreResult<Option<ProductStock>> {
        sqlx::query(&format!(
            "{PRODUCT_SELECT} WHERE p.mode = ?2 AND p.id = ?3 AND p.visible = 1"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(product_from)
        .transpose()
    }

    async fn set_manual_stock(
        &self,
        mode: Mode,
        id: &str,
        stock: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("UPDATE products SET manual_stock = ? WHERE mode = ? AND id = ?")
            .bind(stock)
            .bind(mode.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let changed = done.rows_affected() == 1;
        if changed && mode == Mode::Live {
            emit_stock_changed(&mut tx, 0, mode, id, advps_domain::time::now_millis()).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn add_instance(&self, instance: &NewInstance) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO instances (node, engine_id, product_id, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(&instance.node)
        .bind(&instance.engine_id)
        .bind(&instance.product_id)
        .bind(instance.now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| StoreError::from_write(e, format!("instance '{}'", instance.engine_id)))?;
        Ok(row.try_get("id")?)
    }
    async fn create_node(&self, node: &NewNode) -> StoreResult<NodeRecord> {
        let row = sqlx::query(
            "INSERT INTO nodes (name, driver, endpoint, credentials_enc, created_at) VALUES (?, ?, ?, ?, ?) \
             RETURNING *",
        )
        .bind(&node.name)
        .bind(&node.driver)
        .bind(&node.endpoint)
        .bind(&node.credentials_enc)
        .bind(node.now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| StoreError::from_write(e, format!("node '{}'", node.name)))?;
        node_from(&row)
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes ORDER BY name")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(node_from)
            .collect()
    }

    async fn find_node(&self, name: &str) -> StoreResult<Option<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(node_from)
            .transpose()
    }

    async fn set_node_credentials(
        &self,
        name: &str,
        credentials_enc: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE nodes SET credentials_enc = ? WHERE name = ?")
            .bind(credentials_enc)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn sync_instances(
        &self,
        node: &str,
        seen: &[SyncedInstance],
        now: i64,
    ) -> StoreResult<SyncSummary> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut summary = SyncSummary::default();
        for instance in seen {
            let updated = sqlx::query(
                "UPDATE instances SET kind = ?, memory_mb = ?, engine_state = ?, healthy = 1, updated_at = ? \
                 WHERE node = ? AND engine_id = ?",
            )
            .bind(&instance.kind)
            .bind(instance.memory_mb)
            .bind(&instance.engine_state)
            .bind(now)
            .bind(node)
            .bind(&instance.engine_id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                summary.updated += 1;
                continue;
            }
            sqlx::query(
                "INSERT INTO instances (node, engine_id, kind, memory_mb, engine_state, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(node)
            .bind(&instance.engine_id)
            .bind(&instance.kind)
            .bind(instance.memory_mb)
            .bind(&instance.engine_state)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            summary.added += 1;
        }
        // Whatever the node did not report is gone from it: not healthy, not in stock.
        let known: Vec<(i64, String)> =
            sqlx::query("SELECT id, engine_id FROM instances WHERE node = ? AND healthy = 1")
                .bind(node)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("engine_id")?)))
                .collect::<StoreResult<_>>()?;
        for (id, engine_id) in known {
            if !seen.iter().any(|s| s.engine_id == engine_id) {
                sqlx::query("UPDATE instances SET healthy = 0, engine_state = 'missing', updated_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                summary.missing += 1;
            }
        }
        tx.commit().await?;
        Ok(summary)
    }

    async fn list_instances(&self, node: Option<&str>) -> StoreResult<Vec<InstanceRecord>> {
        sqlx::query(
            "SELECT * FROM instances WHERE (? IS NULL OR node = ?) ORDER BY node, engine_id",
        )
        .bind(node)
        .bind(node)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(instance_from)
        .collect()
    }

    async fn find_instance(
        &self,
        node: &str,
        engine_id: &str,
    ) -> StoreResult<Option<InstanceRecord>> {
        sqlx::query("SELECT * FROM instances WHERE node = ? AND engine_id = ?")
            .bind(node)
            .bind(engine_id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(instance_from)
            .transpose()
    }

    async fn set_instance_product(
        &self,
        instance_id: i64,
        product_id: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE instances SET product_id = ? WHERE id = ?")
            .bind(product_id)
            .bind(instance_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_os_image(&self, image: &NewOsImage) -> StoreResult<()> {
        sqlx::query("INSERT INTO os_images (slug, name, os_type, image, node, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&image.slug)
            .bind(&image.name)
            .bind(image.os_type.as_str())
            .bind(&image.image)
            .bind(image.node.as_deref().unwrap_or(""))
            .bind(image.now)
            .execute(&self.writer)
            .await
            .map_err(|e| StoreError::from_write(e, format!("OS image '{}' ({})", image.slug, image.os_type)))?;
        Ok(())
    }

    async fn list_os_images(&self) -> StoreResult<Vec<OsImageRecord>> {
        sqlx::query("SELECT * FROM os_images ORDER BY slug, os_type, node")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(os_image_from)
            .collect()
    }

    async fn os_images_by_slug(&self, slug: &str) -> StoreResult<Vec<OsImageRecord>> {
        sqlx::query("SELECT * FROM os_images WHERE slug = ? ORDER BY os_type, node")
            .bind(slug)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(os_image_from)
            .collect()
    }

    async fn create_ip_pool(&self, pool: &NewIpPool) -> StoreResult<IpPoolRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 = sqlx::query(
            "INSERT INTO ip_pools (name, cidr, prefix, gateway, node, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&pool.name)
        .bind(&pool.cidr)
        .bind(i64::from(pool.prefix))
        .bind(&pool.gateway)
        .bind(pool.node.as_deref().unwrap_or(""))
        .bind(pool.now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, format!("IP pool '{}'", pool.name)))?
        .try_get("id")?;
        for address in &pool.addresses {
            sqlx::query("INSERT INTO ip_addresses (pool_id, address) VALUES (?, ?)")
                .bind(id)
                .bind(address)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    StoreError::from_write(
                        e,
                        format!("address {address} (already in another pool)"),
                    )
                })?;
        }
        tx.commit().await?;
        Ok(IpPoolRecord {
            id,
            name: pool.name.clone(),
            cidr: pool.cidr.clone(),
            prefix: pool.prefix,
            gateway: pool.gateway.clone(),
            node: pool.node.clone(),
            total: pool.addresses.len() as i64,
            free: pool.addresses.len() as i64,
        })
    }

    async fn list_ip_pools(&self) -> StoreResult<Vec<IpPoolRecord>> {
        sqlx::query(
            "SELECT p.*, (SELECT COUNT(*) FROM ip_addresses a WHERE a.pool_id = p.id) AS total, \
             (SELECT COUNT(*) FROM ip_addresses a WHERE a.pool_id = p.id AND a.service_pk IS NULL) AS free \
             FROM ip_pools p ORDER BY p.name",
        )
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|row| {
            let node: String = row.try_get("node")?;
            let prefix: i64 = row.try_get("prefix")?;
            Ok(IpPoolRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                cidr: row.try_get("cidr")?,
                prefix: prefix as u8,
                gateway: row.try_get("gateway")?,
                node: (!node.is_empty()).then_some(node),
                total: row.try_get("total")?,
                free: row.try_get("free")?,
            })
        })
        .collect()
    }

    async fn allocate_address(
        &self,
        service_pk: i64,
        node: &str,
        now: i64,
    ) -> StoreResult<Option<AddressLease>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(row) = sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk = ? ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Ok(Some(lease_from(&row)?));
        }
        // The node's own pools first, then pools for every node; lowest address first.
        let Some(row) = sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk IS NULL AND (p.node = ? OR p.node = '') \
             ORDER BY CASE WHEN p.node = '' THEN 1 ELSE 0 END, a.id LIMIT 1"
        ))
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let lease = lease_from(&row)?;
        let id: i64 = row.try_get("address_id")?;
        sqlx::query("UPDATE ip_addresses SET service_pk = ?, assigned_at = ? WHERE id = ? AND service_pk IS NULL")
            .bind(service_pk)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE services SET ip = ? WHERE pk = ?")
            .bind(&lease.address)
            .bind(service_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    async fn service_address(&self, service_pk: i64) -> StoreResult<Option<AddressLease>> {
        sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk = ? ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(lease_from)
        .transpose()
    }

    async fn release_addresses(&self, service_pk: i64) -> StoreResult<u64> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = ?",
        )
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE services SET ip = NULL WHERE pk = ?")
            .bind(service_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn bind_live_service(&self, service: &NewLiveService) -> StoreResult<ServiceRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(instance) = sqlx::query(
            "UPDATE instances SET state = 'assigned', updated_at = ? WHERE id = ? AND state = 'free' AND healthy = 1 \
             RETURNING node, engine_id",
        )
        .bind(service.now)
        .bind(service.instance_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StoreError::Conflict("the instance is not free (assigned, out of service or missing)".into()));
        };
        let node: String = instance.try_get("node")?;
        let engine_id: String = instance.try_get("engine_id")?;
        let started_at = (service.power_state == PowerState::Running).then_some(service.now);
        let row = sqlx::query(
            "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, started_at, \
             expires_at, created_at, node, instance_id) VALUES (?, 'live', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(service.account_id)
        .bind(&service.service_id)
        .bind(service.service_type.as_str())
        .bind(&engine_id)
        .bind(service.power_state.as_str())
        .bind(started_at)
        .bind(service.expires_at)
        .bind(service.now)
        .bind(&node)
        .bind(service.instance_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, format!("service '{}'", service.service_id)))?;
        let record = service_from(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_services(&self, mode: Option<Mode>) -> StoreResult<Vec<ServiceListing>> {
        let mode = mode.map(Mode::as_str);
        sqlx::query(
            "SELECT s.*, a.name AS account_name FROM services s JOIN accounts a ON a.id = s.account_id \
             WHERE (? IS NULL OR s.mode = ?) ORDER BY a.name, s.mode, s.service_id",
        )
        .bind(mode)
        .bind(mode)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|row| {
            Ok(ServiceListing {
                service: service_from(row)?,
                account_name: row.try_get("account_name")?,
            })
        })
        .collect()
    }

    async fn remove_service(&self, service_pk: i64, instance_state: &str) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(
            "SELECT instance_id, account_id, mode, product_id FROM services WHERE pk = ?",
        )
        .bind(service_pk)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let instance_id: Option<i64> = row.try_get("instance_id")?;
        let account_id: i64 = row.try_get("account_id")?;
        let mode: Mode = parse(&row, "mode")?;
        let product_id: Option<String> = row.try_get("product_id")?;
        let now = advps_domain::time::now_millis();
        unbind_service(
            &mut tx,
            service_pk,
            instance_id.map(|id| (id, instance_state)),
            now,
        )
        .await?;
        if let Some(product_id) = product_id {
            emit_stock_changed(&mut tx, account_id, mode, &product_id, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn lock_service(
        &self,
        service_pk: i64,
        token: &str,
        now: i64,
        ttl_ms: i64,
    ) -> StoreResult<LockOutcome> {
        let done = sqlx::query(
            "UPDATE services SET op_lock = ?, op_lock_until = ? WHERE pk = ? \
             AND power_state NOT IN ('REBUILDING', 'PROVISIONING') AND (op_lock IS NULL OR op_lock_until <= ?)",
        )
        .bind(token)
        .bind(now + ttl_ms)
        .bind(service_pk)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(if done.rows_affected() == 1 {
            LockOutcome::Locked
        } else {
            LockOutcome::Busy
        })
    }

    async fn unlock_service(
        &self,
        service_pk: i64,
        token: &str,
        power: Option<(PowerState, Option<i64>)>,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        match power {
            Some((state, started_at)) => {
                let before: Option<String> =
                    sqlx::query("SELECT power_state FROM services WHERE pk = ? AND op_lock = ?")
                        .bind(service_pk)
                        .bind(token)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| r.try_get("power_state"))
                        .transpose()?;
                sqlx::query(
                    "UPDATE services SET op_lock = NULL, op_lock_until = NULL, power_state = ?, started_at = ? \
                     WHERE pk = ? AND op_lock = ?",
                )
                .bind(state.as_str())
                .bind(started_at)
                .bind(service_pk)
                .bind(token)
                .execute(&mut *tx)
                .await?;
                if let Some(before) = before {
                    emit_power_changed(
                        &mut tx,
                        service_pk,
                        &before,
                        state.as_str(),
                        advps_domain::time::now_millis(),
                    )
                    .await?;
                }
            }
            None => {
                sqlx::query("UPDATE services SET op_lock = NULL, op_lock_until = NULL WHERE pk = ? AND op_lock = ?")
                    .bind(service_pk)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_task(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<TaskRecord>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT id FROM tasks WHERE mode = 'live' AND status IN {ACTIVE_STATUSES} \
             AND (lease_until IS NULL OR lease_until <= ?) ORDER BY created_at LIMIT 1"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        sqlx::query(
            "UPDATE tasks SET status = 'IN_PROGRESS', lease_owner = ?, lease_until = ?, attempts = attempts + 1, \
             updated_at = ? WHERE id = ?",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let task = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk WHERE t.id = ?"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let task = task_from(&task)?;
        tx.commit().await?;
        Ok(Some(task))
    }

    async fn renew_lease(&self, task_id: &str, owner: &str, until: i64) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE tasks SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(until)
        .bind(task_id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_step(
        &self,
        task_id: &str,
        owner: &str,
        step: i64,
        scratch: &str,
        progress: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE tasks SET step = ?, scratch = ?, progress = ?, updated_at = ? \
             WHERE id = ? AND lease_owner = ? AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(step)
        .bind(scratch)
        .bind(progress)
        .bind(now)
        .bind(task_id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }
    async fn set_product_size(
        &self,
        mode: Mode,
        product_id: &str,
        size: &ProductSize,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO product_sizes (mode, product_id, ram_mb, price_minor, currency) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (mode, product_id, ram_mb) DO UPDATE SET price_minor = excluded.price_minor, \
             currency = excluded.currency",
        )
        .bind(mode.as_str())
        .bind(product_id)
        .bind(size.ram_mb)
        .bind(size.price_minor)
        .bind(&size.currency)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn product_sizes(&self, mode: Mode, product_id: &str) -> StoreResult<Vec<ProductSize>> {
        sqlx::query("SELECT ram_mb, price_minor, currency FROM product_sizes WHERE mode = ? AND product_id = ? ORDER BY ram_mb")
            .bind(mode.as_str())
            .bind(product_id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| {
                Ok(ProductSize {
                    ram_mb: r.try_get("ram_mb")?,
                    price_minor: r.try_get("price_minor")?,
                    currency: r.try_get("currency")?,
                })
            })
            .collect()
    }

    async fn set_product_default_os(
        &self,
        mode: Mode,
        product_id: &str,
        slug: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE products SET default_os = ? WHERE mode = ? AND id = ?")
            .bind(slug)
            .bind(mode.as_str())
            .bind(product_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn credit_wallet(
        &self,
        account_id: i64,
        mode: Mode,
        amount_minor: i64,
        currency: &str,
        note: &str,
        now: i64,
    ) -> StoreResult<i64> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, created_at) \
             VALUES (?, ?, ?, ?, 'credit', ?, ?)",
        )
        .bind(account_id)
        .bind(mode.as_str())
        .bind(amount_minor)
        .bind(currency)
        .bind(note)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let balance = balance_in(&mut tx, account_id, mode).await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn wallet_balance(&self, account_id: i64, mode: Mode) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COALESCE(SUM(amount_minor), 0) AS b FROM ledger_entries WHERE account_id = ? AND mode = ?")
            .bind(account_id)
            .bind(mode.as_str())
            .fetch_one(&self.reader)
            .await?
            .try_get("b")?)
    }

    async fn ledger(&self, account_id: i64, mode: Mode) -> StoreResult<Vec<LedgerEntry>> {
        sqlx::query("SELECT * FROM ledger_entries WHERE account_id = ? AND mode = ? ORDER BY id")
            .bind(account_id)
            .bind(mode.as_str())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| {
                Ok(LedgerEntry {
                    id: r.try_get("id")?,
                    amount_minor: r.try_get("amount_minor")?,
                    currency: r.try_get("currency")?,
                    kind: r.try_get("kind")?,
                    reference: r.try_get("reference")?,
                    note: r.try_get("note")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn place_order(&self, order: &NewOrder) -> StoreResult<PlaceOrder> {
        let scope = order.scope;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let balance = balance_in(&mut tx, scope.account_id, scope.mode).await?;
        if balance < order.amount_minor {
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
                let rows = sqlx::query(
                    "SELECT id, node, engine_id FROM instances WHERE product_id = ? AND memory_mb = ? AND kind = ? \
                     AND state = 'free' AND healthy = 1 ORDER BY id LIMIT ?",
                )
                .bind(&order.product_id)
                .bind(order.ram_mb)
                .bind(kind)
                .bind(order.quantity)
                .fetch_all(&mut *tx)
                .await?;
                let found = rows
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get("id")?,
                            r.try_get("node")?,
                            r.try_get("engine_id")?,
                        ))
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                if (found.len() as i64) < order.quantity {
                    return Ok(PlaceOrder::OutOfStock {
                        available: found.len() as i64,
                    });
                }
                found
            }
            Mode::Test => {
                let available: i64 = sqlx::query(&format!(
                    "{PRODUCT_SELECT} WHERE p.mode = 'test' AND p.id = ?2"
                ))
                .bind(scope.account_id)
                .bind(&order.product_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("stock"))
                .transpose()?
                .unwrap_or(0);
                if available < order.quantity {
                    return Ok(PlaceOrder::OutOfStock {
                        available: available.max(0),
                    });
                }
                Vec::new()
            }
        };
        let counter: i64 = sqlx::query(
            "INSERT INTO order_counters (day_key, last) VALUES (?, 1) \
             ON CONFLICT (day_key) DO UPDATE SET last = last + 1 RETURNING last",
        )
        .bind(format!("{}{}", order.prefix, order.day))
        .fetch_one(&mut *tx)
        .await?
        .try_get("last")?;
        let order_id = format!("{}{}-{:04}", order.prefix, order.day, counter);
        sqlx::query(
            "INSERT INTO orders (id, account_id, mode, product_id, ram_mb, os_slug, os_name, quantity, validity_days, \
             amount_minor, currency, status, remark, customer_name, customer_email, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?)",
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
        .bind(order.now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, created_at) \
             VALUES (?, ?, ?, ?, 'purchase', ?, ?, ?)",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(-order.amount_minor)
        .bind(&order.currency)
        .bind(&order_id)
        .bind(format!("{} x {}", order.quantity, order.product_id))
        .bind(order.now)
        .execute(&mut *tx)
        .await?;
        let expires_at = order.now + order.validity_days * crate::DAY_MS;
        let mut services = Vec::new();
        for unit in 0..order.quantity as usize {
            let (instance_id, node, vmid, service_id) = match scope.mode {
                Mode::Live => {
                    let Some((id, node, engine_id)) = instances.get(unit).cloned() else {
                        return Ok(PlaceOrder::OutOfStock {
                            available: instances.len() as i64,
                        });
                    };
                    sqlx::query("UPDATE instances SET state = 'assigned', updated_at = ? WHERE id = ? AND state = 'free'")
                        .bind(order.now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    (
                        Some(id),
                        Some(node),
                        engine_id,
                        unique_live_id(&mut tx, scope).await?,
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
            let row = sqlx::query(
                "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, ip, reserved_ip, \
                 os_slug, os_name, password_enc, expires_at, created_at, node, instance_id, order_id, product_id, ram_mb, \
                 username) VALUES (?, ?, ?, ?, ?, 'PROVISIONING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'root') RETURNING *",
            )
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(&service_id)
            .bind(order.service_type.as_str())
            .bind(&vmid)
            .bind(ip)
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
            .fetch_one(&mut *tx)
            .await?;
            let service = service_from(&row)?;
            sqlx::query(
                "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, params, prev_state, \
                 created_at, updated_at, due_at) VALUES (?, ?, ?, ?, 'PROVISION', 'PENDING', 0, ?, 'STOPPED', ?, ?, ?)",
            )
            .bind(new_task_id())
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(service.pk)
            .bind(&order.task_params)
            .bind(order.now)
            .bind(order.now)
            .bind(order.due_at)
            .execute(&mut *tx)
            .await?;
            services.push(service);
        }
        let record = sqlx::query("SELECT * FROM orders WHERE id = ?")
            .bind(&order_id)
            .fetch_one(&mut *tx)
            .await?;
        let record = order_from(&record)?;
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
        sqlx::query("SELECT * FROM orders WHERE id = ? AND account_id = ? AND mode = ?")
            .bind(order_id)
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(order_from)
            .transpose()
    }

    async fn order_services(&self, order_id: &str) -> StoreResult<Vec<ServiceRecord>> {
        sqlx::query("SELECT * FROM services WHERE order_id = ? ORDER BY pk")
            .bind(order_id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(service_from)
            .collect()
    }

    async fn settle_order(&self, order_id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "UPDATE orders SET status = 'COMPLETED', updated_at = ? WHERE id = ? AND status = 'PENDING' \
             AND NOT EXISTS (SELECT 1 FROM services s WHERE s.order_id = orders.id AND s.power_state = 'PROVISIONING') \
             RETURNING account_id, mode",
        )
        .bind(now)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let settled = row.is_some();
        if let Some(row) = row {
            let account_id: i64 = row.try_get("account_id")?;
            let mode: Mode = parse(&row, "mode")?;
            let services: Vec<String> =
                sqlx::query("SELECT service_id FROM services WHERE order_id = ? ORDER BY pk")
                    .bind(order_id)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get("service_id"))
                    .collect::<Result<_, _>>()?;
            let data = serde_json::json!({ "orderId": order_id, "status": "COMPLETED", "serviceIds": services });
            emit(
                &mut tx,
                Some(account_id),
                mode,
                "order.completed",
                data,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn fail_order(
        &self,
        order_id: &str,
        error: &str,
        instance_states: &[(i64, &str)],
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(order) = sqlx::query(
            "UPDATE orders SET status = 'FAILED', error = ?, updated_at = ? WHERE id = ? AND status = 'PENDING' RETURNING *",
        )
        .bind(error)
        .bind(now)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let order = order_from(&order)?;
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, created_at) \
             VALUES (?, ?, ?, ?, 'refund', ?, 'provisioning failed', ?)",
        )
        .bind(order.account_id)
        .bind(order.mode.as_str())
        .bind(order.amount_minor)
        .bind(&order.currency)
        .bind(order_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let pks: Vec<(i64, Option<i64>)> =
            sqlx::query("SELECT pk, instance_id FROM services WHERE order_id = ?")
                .bind(order_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("pk")?, r.try_get("instance_id")?)))
                .collect::<StoreResult<_>>()?;
        for (pk, instance_id) in pks {
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let total: i64 = items.iter().map(|i| i.amount_minor).sum();
        let balance = balance_in(&mut tx, scope.account_id, scope.mode).await?;
        if balance < total {
            return Ok(Renewal::InsufficientFunds { balance });
        }
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, created_at) \
             VALUES (?, ?, ?, ?, 'renewal', ?, ?, ?)",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(-total)
        .bind(currency)
        .bind(reference)
        .bind(format!("{} service(s)", items.len()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut renewed = Vec::new();
        for item in items {
            let row = sqlx::query(
                "UPDATE services SET expires_at = COALESCE(expires_at, ?) + ?, \
                 power_state = CASE WHEN power_state = 'SUSPENDED' THEN 'STOPPED' ELSE power_state END \
                 WHERE pk = ? AND account_id = ? AND mode = ? RETURNING *",
            )
            .bind(now)
            .bind(item.validity_days * crate::DAY_MS)
            .bind(item.service_pk)
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_one(&mut *tx)
            .await?;
            renewed.push(service_from(&row)?);
        }
        tx.commit().await?;
        Ok(Renewal::Renewed(renewed))
    }

    async fn services_to_suspend(&self, now: i64, limit: i64) -> StoreResult<Vec<ServiceRecord>> {
        sqlx::query(
            "SELECT * FROM services WHERE expires_at <= ? AND power_state IN ('RUNNING', 'STOPPED') \
             ORDER BY expires_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(service_from)
        .collect()
    }

    async fn services_to_terminate(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<ServiceRecord>> {
        sqlx::query("SELECT * FROM services WHERE expires_at <= ? AND power_state = 'SUSPENDED' ORDER BY expires_at LIMIT ?")
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(service_from)
            .collect()
    }

    async fn suspend_service(&self, service_pk: i64) -> StoreResult<bool> {
        let now = advps_domain::time::now_millis();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let before: Option<String> = sqlx::query(
            "SELECT power_state FROM services WHERE pk = ? AND power_state IN ('RUNNING', 'STOPPED') \
             AND (op_lock IS NULL OR op_lock_until <= ?)",
        )
        .bind(service_pk)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("power_state"))
        .transpose()?;
        let Some(before) = before else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE services SET power_state = 'SUSPENDED', started_at = NULL WHERE pk = ?",
        )
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        emit_power_changed(&mut tx, service_pk, &before, "SUSPENDED", now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_service_expiry(&self, service_pk: i64, expires_at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE services SET expires_at = ? WHERE pk = ?")
            .bind(expires_at)
            .bind(service_pk)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn claim_mac_reset(
        &self,
        service_pk: i64,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<Result<(), i64>> {
        let done = sqlx::query(
            "UPDATE services SET last_mac_reset = ? WHERE pk = ? AND (last_mac_reset IS NULL OR last_mac_reset <= ?)",
        )
        .bind(now)
        .bind(service_pk)
        .bind(now - interval_ms)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let last: Option<i64> = sqlx::query("SELECT last_mac_reset FROM services WHERE pk = ?")
            .bind(service_pk)
            .fetch_one(&self.writer)
            .await?
            .try_get("last_mac_reset")?;
        Ok(Err(last.unwrap_or(now) + interval_ms))
    }

    async fn set_service_mac(&self, service_pk: i64, mac: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET mac = ? WHERE pk = ?")
            .bind(mac)
            .bind(service_pk)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn restore_mac_reset(&self, service_pk: i64, previous: Option<i64>) -> StoreResult<()> {
        sqlx::query("UPDATE services SET last_mac_reset = ? WHERE pk = ?")
            .bind(previous)
            .bind(service_pk)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_instance_state(&self, instance_id: i64, state: &str) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET state = ? WHERE id = ?")
            .bind(state)
            .bind(instance_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
    async fn begin_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        fingerprint: &str,
        now: i64,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> StoreResult<IdempotencyBegin> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "DELETE FROM idempotency_records WHERE key_id = ? AND idem_key = ? AND expires_at <= ?",
        )
        .bind(key_id)
        .bind(idem_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let existing =
            sqlx::query("SELECT * FROM idempotency_records WHERE key_id = ? AND idem_key = ?")
                .bind(key_id)
                .bind(idem_key)
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO idempotency_records (key_id, idem_key, fingerprint, state, created_at, expires_at) \
                     VALUES (?, ?, ?, 'in_flight', ?, ?)",
                )
                .bind(key_id)
                .bind(idem_key)
                .bind(fingerprint)
                .bind(now)
                .bind(now + ttl_ms)
                .execute(&mut *tx)
                .await?;
                IdempotencyBegin::Started
            }
            Some(row) => {
                let stored: String = row.try_get("fingerprint")?;
                let state: String = row.try_get("state")?;
                let created: i64 = row.try_get("created_at")?;
                if stored != fingerprint {
                    IdempotencyBegin::Mismatch
                } else if state == "done" {
                    let status: i64 = row.try_get("status")?;
                    IdempotencyBegin::Replay {
                        status: status as u16,
                        body: row
                            .try_get::<Option<String>, _>("body")?
                            .unwrap_or_default(),
                        content_type: row.try_get("content_type")?,
                    }
                } else if created + stale_ms <= now {
                    // Its server died mid-request: this one runs it.
                    sqlx::query("UPDATE idempotency_records SET created_at = ? WHERE key_id = ? AND idem_key = ?")
                        .bind(now)
                        .bind(key_id)
                        .bind(idem_key)
                        .execute(&mut *tx)
                        .await?;
                    IdempotencyBegin::Started
                } else {
                    IdempotencyBegin::InFlight
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn finish_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        status: u16,
        body: &str,
        content_type: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_records SET state = 'done', status = ?, body = ?, content_type = ? \
             WHERE key_id = ? AND idem_key = ?",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(content_type)
        .bind(key_id)
        .bind(idem_key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn abandon_idempotent(&self, key_id: &str, idem_key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_records WHERE key_id = ? AND idem_key = ? AND state = 'in_flight'")
            .bind(key_id)
            .bind(idem_key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn create_webhook(&self, endpoint: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint> {
        let row = sqlx::query(
            "INSERT INTO webhook_endpoints (id, account_id, mode, url, description, events, secret_enc, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&endpoint.id)
        .bind(endpoint.scope.account_id)
        .bind(endpoint.scope.mode.as_str())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(serde_json::to_string(&endpoint.events).unwrap_or_else(|_| "[]".into()))
        .bind(&endpoint.secret_enc)
        .bind(endpoint.now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| StoreError::from_write(e, format!("webhook '{}'", endpoint.id)))?;
        webhook_from(&row)
    }

    async fn list_webhooks(&self, scope: Scope) -> StoreResult<Vec<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE account_id = ? AND mode = ? ORDER BY created_at, id")
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(webhook_from)
            .collect()
    }

    async fn all_webhooks(&self, account_id: Option<i64>) -> StoreResult<Vec<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE (? IS NULL OR account_id = ?) ORDER BY created_at, id")
            .bind(account_id)
            .bind(account_id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(webhook_from)
            .collect()
    }

    async fn find_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(webhook_from)
            .transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret_enc: &str,
        previous_until: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, previous_until = ?, secret_enc = ? WHERE id = ?",
        )
        .bind(previous_until)
        .bind(secret_enc)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fan_out_events(&self, now: i64, limit: i64) -> StoreResult<u64> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let events = sqlx::query(
            "SELECT * FROM events WHERE fanned_out = 0 ORDER BY created_at, id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut made = 0;
        for event in &events {
            let id: String = event.try_get("id")?;
            let account_id: Option<i64> = event.try_get("account_id")?;
            let mode: String = event.try_get("mode")?;
            let event_type: String = event.try_get("event_type")?;
            let payload: String = event.try_get("payload")?;
            let endpoints = sqlx::query(
                "SELECT id, events FROM webhook_endpoints WHERE mode = ? AND (? IS NULL OR account_id = ?)",
            )
            .bind(&mode)
            .bind(account_id)
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
            for endpoint in &endpoints {
                let wanted: String = endpoint.try_get("events")?;
                let wanted: Vec<String> = serde_json::from_str(&wanted).unwrap_or_default();
                if !wanted.is_empty() && !wanted.contains(&event_type) {
                    continue;
                }
                let endpoint_id: String = endpoint.try_get("id")?;
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, status, attempts, \
                     next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                )
                .bind(format!("msg_{}", advps_domain::ids::task_id().replace('-', "")))
                .bind(&endpoint_id)
                .bind(&id)
                .bind(&event_type)
                .bind(&payload)
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                made += 1;
            }
            sqlx::query("UPDATE events SET fanned_out = 1 WHERE id = ?")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        hold_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, created_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let deliveries = rows
            .iter()
            .map(delivery_from)
            .collect::<StoreResult<Vec<_>>>()?;
        for d in &deliveries {
            // Held while it is sent; if this process dies, it is due again after the hold.
            sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?")
                .bind(now + hold_ms)
                .bind(&d.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deliveries)
    }

    async fn record_delivery(&self, id: &str, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let status = if attempt.delivered {
            "delivered"
        } else if attempt.retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
             last_status_code = ?, last_error = ?, updated_at = ?, delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END \
             WHERE id = ?",
        )
        .bind(status)
        .bind(attempt.retry_at.unwrap_or(attempt.now))
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(attempt.now)
        .bind(attempt.delivered)
        .bind(attempt.now)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<WebhookDelivery>, u64)> {
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = ?")
                .bind(endpoint_id)
                .fetch_one(&self.reader)
                .await?
                .try_get("n")?;
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = ? ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
        )
        .bind(endpoint_id)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok((
            rows.iter().map(delivery_from).collect::<StoreResult<_>>()?,
            total as u64,
        ))
    }

    async fn redeliver(&self, endpoint_id: &str, delivery_id: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ? \
             WHERE id = ? AND endpoint_id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(delivery_id)
        .bind(endpoint_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_entries (at, account_id, key_id, mode, method, path, service_id, status, request_id, \
             idempotency_key, task_id, order_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(e.account_id)
        .bind(&e.key_id)
        .bind(e.mode.map(Mode::as_str))
        .bind(&e.method)
        .bind(&e.path)
        .bind(&e.service_id)
        .bind(i64::from(e.status))
        .bind(&e.request_id)
        .bind(&e.idempotency_key)
        .bind(&e.task_id)
        .bind(&e.order_id)
        .bind(&e.source)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> StoreResult<(Vec<AuditEntry>, u64)> {
        const WHERE: &str = "WHERE (?1 IS NULL OR e.account_id = ?1) AND (?2 IS NULL OR e.mode = ?2) \
             AND (?3 IS NULL OR e.service_id = ?3) AND (?4 IS NULL OR e.at >= ?4) AND (?5 IS NULL OR e.at <= ?5)";
        let mode = f.mode.map(Mode::as_str);
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM audit_entries e {WHERE}"
        ))
        .bind(f.account_id)
        .bind(mode)
        .bind(&f.service_id)
        .bind(f.from)
        .bind(f.to)
        .fetch_one(&self.reader)
        .await?
        .try_get("n")?;
        if f.offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(&format!(
            "SELECT e.*, a.name AS account_name FROM audit_entries e LEFT JOIN accounts a ON a.id = e.account_id \
             {WHERE} ORDER BY e.at DESC, e.id DESC LIMIT ?6 OFFSET ?7"
        ))
        .bind(f.account_id)
        .bind(mode)
        .bind(&f.service_id)
        .bind(f.from)
        .bind(f.to)
        .bind(i64::from(f.limit))
        .bind(f.offset as i64)
        .fetch_all(&self.reader)
        .await?;
        let entries = rows
            .iter()
            .map(|r| {
                let status: i64 = r.try_get("status")?;
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    account_id: r.try_get("account_id")?,
                    account_name: r.try_get("account_name")?,
                    key_id: r.try_get("key_id")?,
                    mode: r.try_get("mode")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    service_id: r.try_get("service_id")?,
                    status,
                    request_id: r.try_get("request_id")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    task_id: r.try_get("task_id")?,
                    order_id: r.try_get("order_id")?,
                    source: r.try_get("source")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((entries, total as u64))
    }
    async fn task_queue_depth(&self) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END), 0) AS pending, \
             COALESCE(SUM(CASE WHEN status = 'IN_PROGRESS' THEN 1 ELSE 0 END), 0) AS running \
             FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok((row.try_get("pending")?, row.try_get("running")?))
    }

    async fn rate_hit(
        &self,
        key_id: &str,
        limit: u32,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<RateHit> {
        // One statement: a closed window starts over at 1, an open one
        // counts on (past the limit too, which is how a refusal is told).
        let row = sqlx::query(
            "INSERT INTO rate_windows (key_id, opened_at, count) VALUES (?1, ?2, 1) \
             ON CONFLICT (key_id) DO UPDATE SET \
               count = CASE WHEN rate_windows.opened_at + ?3 <= ?2 THEN 1 ELSE rate_windows.count + 1 END, \
               opened_at = CASE WHEN rate_windows.opened_at + ?3 <= ?2 THEN ?2 ELSE rate_windows.opened_at END \
             RETURNING count, opened_at",
        )
        .bind(key_id)
        .bind(now)
        .bind(window_ms)
        .fetch_one(&self.writer)
        .await?;
        let count: i64 = row.try_get("count")?;
        Ok(RateHit {
            counted: count <= i64::from(limit),
            count: count.clamp(0, i64::from(u32::MAX)) as u32,
            opened_at: row.try_get("opened_at")?,
        })
    }

    async fn rate_release(&self, key_id: &str, now: i64, window_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE rate_windows SET count = count - 1 WHERE key_id = ? AND count > 0 AND opened_at + ? > ?")
            .bind(key_id)
            .bind(window_ms)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn rate_peek(
        &self,
        key_id: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<Option<RateHit>> {
        let row = sqlx::query(
            "SELECT count, opened_at FROM rate_windows WHERE key_id = ? AND opened_at + ? > ?",
        )
        .bind(key_id)
        .bind(window_ms)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        Ok(match row {
            Some(r) => {
                let count: i64 = r.try_get("count")?;
                Some(RateHit {
                    counted: false,
                    count: count as u32,
                    opened_at: r.try_get("opened_at")?,
                })
            }
            None => None,
        })
    }
}

fn insert_product(
    p: &NewProduct,
    if_absent: bool,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let sql = if if_absent {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, default_os, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mode, id) DO NOTHING"
    } else {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, default_os, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
    sqlx::query(sql)
        .bind(p.mode.as_str())
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.pack_name)
        .bind(p.vm_type.as_str())
        .bind(p.manual_stock)
        .bind(p.low_stock_threshold)
        .bind(&p.default_os)
        .bind(p.now)
}

fn node_from(row: &SqliteRow) -> StoreResult<NodeRecord> {
    Ok(NodeRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        driver: row.try_get("driver")?,
        endpoint: row.try_get("endpoint")?,
        credentials_enc: row.try_get("credentials_enc")?,
        created_at: row.try_get("created_at")?,
    })
}

fn instance_from(row: &SqliteRow) -> StoreResult<InstanceRecord> {
    Ok(InstanceRecord {
        id: row.try_get("id")?,
        node: row.try_get("node")?,
        engine_id: row.try_get("engine_id")?,
        product_id: row.try_get("product_id")?,
        state: row.try_get("state")?,
        healthy: row.try_get("healthy")?,
        kind: row.try_get("kind")?,
        memory_mb: row.try_get("memory_mb")?,
        engine_state: row.try_get("engine_state")?,
    })
}

fn os_image_from(row: &SqliteRow) -> StoreResult<OsImageRecord> {
    let node: String = row.try_get("node")?;
    Ok(OsImageRecord {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        os_type: parse::<OsType>(row, "os_type")?,
        image: row.try_get("image")?,
        node: (!node.is_empty()).then_some(node),
    })
}

const LEASE_SELECT: &str =
    "SELECT a.id AS address_id, a.address, p.prefix, p.gateway, p.name AS pool \
     FROM ip_addresses a JOIN ip_pools p ON p.id = a.pool_id";

fn lease_from(row: &SqliteRow) -> StoreResult<AddressLease> {
    let prefix: i64 = row.try_get("prefix")?;
    Ok(AddressLease {
        address: row.try_get("address")?,
        prefix: prefix as u8,
        gateway: row.try_get("gateway")?,
        pool: row.try_get("pool")?,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

async fn balance_in(tx: &mut Tx<'_>, account_id: i64, mode: Mode) -> StoreResult<i64> {
    Ok(sqlx::query("SELECT COALESCE(SUM(amount_minor), 0) AS b FROM ledger_entries WHERE account_id = ? AND mode = ?")
        .bind(account_id)
        .bind(mode.as_str())
        .fetch_one(&mut **tx)
        .await?
        .try_get("b")?)
}

/// A live service id no service of the account has.
async fn unique_live_id(tx: &mut Tx<'_>, scope: Scope) -> StoreResult<String> {
    loop {
        let candidate = advps_domain::ids::live_service_id();
        let taken = sqlx::query("SELECT 1 FROM services WHERE service_id = ?")
            .bind(&candidate)
            .fetch_optional(&mut **tx)
            .await?;
        if taken.is_none() {
            let _ = scope;
            return Ok(candidate);
        }
    }
}

/// The next sandbox service id of a type (`lxc_service_2`, `vps_service_3`)
/// and a simulated vmid for it.
async fn next_sandbox_id(
    tx: &mut Tx<'_>,
    scope: Scope,
    service_type: advps_domain::ServiceType,
) -> StoreResult<(String, String)> {
    let (prefix, vm_prefix, base) = match service_type {
        advps_domain::ServiceType::Linux => ("lxc", "ct", 2000),
        advps_domain::ServiceType::Vps => ("vps", "vm", 1000),
        advps_domain::ServiceType::ProvisionalVps => ("pvps", "vm", 3000),
    };
    let mut n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM services WHERE account_id = ? AND mode = 'test' AND service_id LIKE ?")
        .bind(scope.account_id)
        .bind(format!("{prefix}_service_%"))
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    loop {
        n += 1;
        let id = format!("{prefix}_service_{n}");
        let taken = sqlx::query(
            "SELECT 1 FROM services WHERE account_id = ? AND mode = 'test' AND service_id = ?",
        )
        .bind(scope.account_id)
        .bind(&id)
        .fetch_optional(&mut **tx)
        .await?;
        if taken.is_none() {
            return Ok((id, format!("{vm_prefix}{}", base + n - 1)));
        }
    }
}

fn new_task_id() -> String {
    advps_domain::ids::task_id()
}

fn order_from(row: &SqliteRow) -> StoreResult<OrderRecord> {
    Ok(OrderRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        mode: parse(row, "mode")?,
        product_id: row.try_get("product_id")?,
        ram_mb: row.try_get("ram_mb")?,
        os_slug: row.try_get("os_slug")?,
        os_name: row.try_get("os_name")?,
        quantity: row.try_get("quantity")?,
        validity_days: row.try_get("validity_days")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        remark: row.try_get("remark")?,
        customer_name: row.try_get("customer_name")?,
        customer_email: row.try_get("customer_email")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn webhook_from(row: &SqliteRow) -> StoreResult<WebhookEndpoint> {
    let events: String = row.try_get("events")?;
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        mode: parse(row, "mode")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: serde_json::from_str(&events).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        secret_enc: row.try_get("secret_enc")?,
        previous_secret_enc: row.try_get("previous_secret_enc")?,
        previous_until: row.try_get("previous_until")?,
        created_at: row.try_get("created_at")?,
    })
}

fn delivery_from(row: &SqliteRow) -> StoreResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

/// Writes an event to the outbox, in the caller's transaction, so it exists
/// exactly when the change it describes does. `account_id` `None` addresses
/// every account of the mode.
async fn emit(
    tx: &mut Tx<'_>,
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
    sqlx::query("INSERT INTO events (id, account_id, mode, event_type, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&id)
        .bind(account_id)
        .bind(mode.as_str())
        .bind(event_type)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Emits `product.stock_changed` with the product's stock as its audience
/// sees it: the account's own for sandbox products, everyone's for live ones.
async fn emit_stock_changed(
    tx: &mut Tx<'_>,
    account_id: i64,
    mode: Mode,
    product_id: &str,
    now: i64,
) -> StoreResult<()> {
    let stock: Option<i64> =
        sqlx::query(&format!("{PRODUCT_SELECT} WHERE p.mode = ?2 AND p.id = ?3"))
            .bind(account_id)
            .bind(mode.as_str())
            .bind(product_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("stock"))
            .transpose()?;
    let audience = match mode {
        Mode::Test => Some(account_id),
        Mode::Live => None,
    };
    let data = serde_json::json!({ "productId": product_id, "stock": stock.unwrap_or(0).max(0) });
    emit(tx, audience, mode, "product.stock_changed", data, now).await
}

/// Emits `service.power_state_changed` for a service whose state moved.
async fn emit_power_changed(
    tx: &mut Tx<'_>,
    service_pk: i64,
    from: &str,
    to: &str,
    now: i64,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    let row =
        sqlx::query("SELECT account_id, mode, service_id, service_type FROM services WHERE pk = ?")
            .bind(service_pk)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let mode: Mode = parse(&row, "mode")?;
    let account_id: i64 = row.try_get("account_id")?;
    let service_id: String = row.try_get("service_id")?;
    let service_type: String = row.try_get("service_type")?;
    let data = serde_json::json!({
        "serviceId": service_id,
        "serviceType": service_type,
        "previousStatus": from,
        "status": to,
    });
    emit(
        tx,
        Some(account_id),
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
async fn unbind_service(
    tx: &mut Tx<'_>,
    service_pk: i64,
    instance: Option<(i64, &str)>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = ?",
    )
    .bind(service_pk)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM tasks WHERE service_pk = ?")
        .bind(service_pk)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM services WHERE pk = ?")
        .bind(service_pk)
        .execute(&mut **tx)
        .await?;
    if let Some((id, state)) = instance {
        sqlx::query("UPDATE instances SET state = ?, updated_at = ? WHERE id = ?")
            .bind(state)
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
