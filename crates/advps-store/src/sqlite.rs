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

use advps_domain::{sandbox, Mode, PowerState, TaskKind, TaskStatus, VmType};
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
        Ok(SqliteStore { reader, writer })
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
    })
}

const TASK_COLUMNS: &str = "t.id, t.account_id, t.mode, t.service_pk, s.service_id, t.kind, t.status, \
     t.progress, t.params, t.prev_state, t.error, t.created_at, t.updated_at, t.due_at, t.finished_at";

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
    })
}

// Stock is computed in SQL so that sorting and paging happen on it.
const PRODUCT_SELECT: &str = "SELECT p.id, p.name, p.pack_name, p.vm_type, p.low_stock_threshold, \
     p.manual_stock IS NOT NULL AS manual, \
     COALESCE(p.manual_stock, (SELECT COUNT(*) FROM instances i \
        WHERE i.product_id = p.id AND i.state = 'free' AND i.healthy = 1)) AS stock \
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
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?"
        ))
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
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
        sqlx::query("SELECT * FROM services WHERE account_id = ? AND mode = ? AND service_id = ?")
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(service_id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(service_from)
            .transpose()
    }

    async fn transition_power(
        &self,
        service_pk: i64,
        from: PowerState,
        to: PowerState,
        started_at: Option<i64>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE services SET power_state = ?, started_at = ? WHERE pk = ? AND power_state = ?",
        )
        .bind(to.as_str())
        .bind(started_at)
        .bind(service_pk)
        .bind(from.as_str())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
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
        let Some(row) = sqlx::query("SELECT power_state FROM services WHERE pk = ?")
            .bind(task.service_pk)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(StartTask::NotFound);
        };
        let state: PowerState = parse(&row, "power_state")?;
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
        Ok(StartTask::Started(record))
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
            "UPDATE tasks SET status = ?, progress = ?, error = ?, updated_at = ?, finished_at = ? \
             WHERE id = ? AND status IN {ACTIVE_STATUSES} RETURNING service_pk"
        ))
        .bind(finish.status.as_str())
        .bind(if finish.status == TaskStatus::Completed {
            100
        } else {
            0
        })
        .bind(&finish.error)
        .bind(finish.now)
        .bind(finish.now)
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let service_pk: i64 = row.try_get("service_pk")?;
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
            "{PRODUCT_SELECT} WHERE p.mode = ? AND p.visible = 1 AND (? IS NULL OR p.vm_type = ?) \
             ORDER BY stock DESC, p.id ASC LIMIT ? OFFSET ?"
        ))
        .bind(mode.as_str())
        .bind(type_filter)
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

    async fn find_product(&self, mode: Mode, id: &str) -> StoreResult<Option<ProductStock>> {
        sqlx::query(&format!(
            "{PRODUCT_SELECT} WHERE p.mode = ? AND p.id = ? AND p.visible = 1"
        ))
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
        let done = sqlx::query("UPDATE products SET manual_stock = ? WHERE mode = ? AND id = ?")
            .bind(stock)
            .bind(mode.as_str())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
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
}

fn insert_product(
    p: &NewProduct,
    if_absent: bool,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let sql = if if_absent {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mode, id) DO NOTHING"
    } else {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    };
    sqlx::query(sql)
        .bind(p.mode.as_str())
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.pack_name)
        .bind(p.vm_type.as_str())
        .bind(p.manual_stock)
        .bind(p.low_stock_threshold)
        .bind(p.now)
}
