//! The PostgreSQL implementation of [`Store`], for several advps instances
//! sharing one database.
//!
//! It keeps the SQLite store's semantics (the contract suite in
//! `tests/contract.rs` runs on both) but cannot lean on SQLite's single
//! writer: here many processes write at once, each through its own pool.
//! So every state change that must not race is made atomic in the database
//! itself, in one of four ways:
//!
//! - a conditional `UPDATE ... WHERE <state it moves from>` whose row count
//!   says who won (power transitions, locks, leases, finishing a task);
//! - `INSERT ... ON CONFLICT` for counters and upserts (order numbers,
//!   product sizes, idempotency records);
//! - a row lock taken first (`SELECT ... FOR NO KEY UPDATE`) on the row that
//!   owns the decision: the account for wallet checks, the service for task
//!   starts and address allocation, so that two transactions deciding on
//!   the same thing run one after the other;
//! - `FOR UPDATE SKIP LOCKED` to hand out one of many interchangeable rows
//!   (tasks, webhook deliveries, outbox events, free instances, free
//!   addresses): a competitor skips the row another holds and takes the
//!   next, instead of queueing behind it and then finding it gone.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED: each
//! statement sees what was committed before it began, and a statement that
//! waited for a row lock re-checks its condition on the row's newest
//! version. Locks are taken in one order, service before task, so that two
//! transactions never wait on each other.

use std::str::FromStr;
use std::time::Duration;

use advps_domain::{sandbox, Mode, OsType, PowerState, TaskKind, TaskStatus, VmType};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use crate::model::*;
use crate::{Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How the connection pool to PostgreSQL behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPoolSettings {
    /// Connections this process opens at most. Every instance has its own
    /// pool, so the server's `max_connections` must cover them all.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// PostgreSQL's `statement_timeout` on every connection: a statement
    /// (including its waits for row locks) running longer is cancelled, so
    /// a stuck query cannot hold a connection, or a lock, for ever.
    pub statement_timeout: Option<Duration>,
}

impl Default for PgPoolSettings {
    fn default() -> Self {
        PgPoolSettings {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            statement_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:pass@host/db`)
    /// and brings its schema up to date.
    pub async fn connect(url: &str, settings: &PgPoolSettings) -> StoreResult<PgStore> {
        // The URL holds a password: the error names the problem, not the URL.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options, settings).await
    }

    /// Connects with explicit options and brings the schema up to date.
    pub async fn connect_with(
        options: PgConnectOptions,
        settings: &PgPoolSettings,
    ) -> StoreResult<PgStore> {
        let mut options = options.application_name("advps");
        if let Some(timeout) = settings.statement_timeout {
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .connect_with(options)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not applied yet. Safe to run from several
    /// instances at once: the migrator holds an advisory lock while it works,
    /// and each migration commits as one transaction.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// One round trip to the database (health checks).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The connection pool, for what lives beside the store on the same
    /// database (a shared rate limiter, say).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse<T: FromStr<Err = String>>(row: &PgRow, column: &str) -> StoreResult<T> {
    let raw: String = row.try_get(column)?;
    raw.parse::<T>().map_err(StoreError::Corrupt)
}

fn parse_opt<T: FromStr<Err = String>>(row: &PgRow, column: &str) -> StoreResult<Option<T>> {
    let raw: Option<String> = row.try_get(column)?;
    raw.map(|v| v.parse::<T>().map_err(StoreError::Corrupt))
        .transpose()
}

fn account_from(row: &PgRow) -> StoreResult<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

const KEY_COLUMNS: &str =
    "k.id, k.account_id, a.name AS account_name, k.mode, k.key_hash, k.last4, \
     k.created_at, k.last_used_at, k.revoked_at";

fn key_from(row: &PgRow) -> StoreResult<ApiKeyRecord> {
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

fn service_from(row: &PgRow) -> StoreResult<ServiceRecord> {
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

fn task_from(row: &PgRow) -> StoreResult<TaskRecord> {
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

// Stock is computed in SQL so that sorting and paging happen on it. $1 is
// the account whose sandbox purchases come off sandbox stock.
const PRODUCT_SELECT: &str =
    "SELECT p.id, p.name, p.pack_name, p.vm_type, p.low_stock_threshold, p.default_os, \
     p.manual_stock IS NOT NULL AS manual, \
     CASE WHEN p.mode = 'test' THEN COALESCE(p.manual_stock, 0) - (SELECT COUNT(*) FROM services s \
        WHERE s.account_id = $1 AND s.mode = 'test' AND s.product_id = p.id) \
     ELSE COALESCE(p.manual_stock, (SELECT COUNT(*) FROM instances i \
        WHERE i.product_id = p.id AND i.state = 'free' AND i.healthy)) END AS stock \
     FROM products p";

fn product_from(row: &PgRow) -> StoreResult<ProductStock> {
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

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// Locks an account's row for the rest of the transaction. Every debit of a
/// wallet takes this lock before it reads the balance, so two purchases by
/// one account run one after the other and the second sees the first's
/// charge: the balance can never be spent twice. `NO KEY UPDATE` (not
/// `UPDATE`) leaves rows that merely reference the account (new keys, audit
/// entries) free to be written meanwhile.
async fn lock_account(tx: &mut Tx<'_>, account_id: i64) -> StoreResult<()> {
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(())
}

async fn balance_in(tx: &mut Tx<'_>, account_id: i64, mode: Mode) -> StoreResult<i64> {
    // SUM of BIGINT is NUMERIC in PostgreSQL; the ledger's sums fit in BIGINT.
    Ok(sqlx::query(
        "SELECT COALESCE(SUM(amount_minor), 0)::BIGINT AS b FROM ledger_entries \
         WHERE account_id = $1 AND mode = $2",
    )
    .bind(account_id)
    .bind(mode.as_str())
    .fetch_one(&mut **tx)
    .await?
    .try_get("b")?)
}

async fn task_by_id(tx: &mut Tx<'_>, id: &str) -> StoreResult<TaskRecord> {
    let row = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    task_from(&row)
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(&self, name: &str, now: i64) -> StoreResult<Account> {
        let mut tx = self.pool.begin().await?;
        let id: i64 =
            sqlx::query("INSERT INTO accounts (name, created_at) VALUES ($1, $2) RETURNING id")
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
            .bind(now + sandbox::VALIDITY_DAYS * crate::DAY_MS)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, created_at) \
             VALUES ($1, 'test', $2, $3, 'credit', 'sandbox starting credit', $4)",
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
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn find_account(&self, name: &str) -> StoreResult<Option<Account>> {
        sqlx::query("SELECT id, name, created_at FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(account_from)
            .transpose()
    }

    async fn count_accounts(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, mode, key_hash, last4, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(key.account_id)
        .bind(key.mode.as_str())
        .bind(&key.key_hash)
        .bind(&key.last4)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, format!("key '{}'", key.id)))?;
        Ok(())
    }

    // Read on every request, from the database each time: a key revoked
    // through any instance fails on the next request through every other.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
    }

    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.account_id = $1 ORDER BY k.created_at, k.id COLLATE \"C\""
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from)
        .collect()
    }

    async fn revoke_api_key(&self, key_id: &str, now: i64) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(key_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>> {
        sqlx::query(
            "SELECT * FROM services WHERE account_id = $1 AND mode = $2 AND service_id = $3",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(service_id)
        .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Conditional on the state it leaves: of concurrent callers, the
        // first to update the row wins; the others wait for its lock, see
        // the new state and match nothing.
        let done = sqlx::query(
            "UPDATE services SET power_state = $1, started_at = $2 WHERE pk = $3 AND power_state = $4",
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
            "UPDATE services SET ip = COALESCE(ip, $1) WHERE pk = $2 \
             AND power_state IN ('RUNNING', 'STOPPED') RETURNING ip",
        )
        .bind(ip)
        .bind(service_pk)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("ip")).transpose()?)
    }

    async fn set_service_os(&self, service_pk: i64, slug: &str, name: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET os_slug = $1, os_name = $2 WHERE pk = $3")
            .bind(slug)
            .bind(name)
            .bind(service_pk)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn store_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET password_enc = $1 WHERE pk = $2")
            .bind(password_enc)
            .bind(service_pk)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE services SET password_enc = $1 WHERE pk = $2 AND power_state = 'RUNNING'",
        )
        .bind(password_enc)
        .bind(service_pk)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn start_service_task(
        &self,
        task: &NewTask,
        limit: Option<MonthlyLimit>,
    ) -> StoreResult<StartTask> {
        let mut tx = self.pool.begin().await?;
        // The service's row lock makes the checks below and the start one
        // step: a concurrent start waits here, then sees the busy state.
        let Some(row) = sqlx::query(
            "SELECT power_state, op_lock, op_lock_until FROM services WHERE pk = $1 FOR NO KEY UPDATE",
        )
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
                "SELECT id FROM tasks WHERE service_pk = $1 AND status IN {ACTIVE_STATUSES} \
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
                "SELECT COUNT(*) AS n FROM tasks WHERE service_pk = $1 AND kind = $2 AND created_at >= $3 \
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
        sqlx::query("UPDATE services SET power_state = $1 WHERE pk = $2")
            .bind(task.busy_state.as_str())
            .bind(task.service_pk)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, params, prev_state, \
             created_at, updated_at, due_at) VALUES ($1, $2, $3, $4, $5, 'PENDING', 0, $6, $7, $8, $8, $9)",
        )
        .bind(&task.id)
        .bind(task.scope.account_id)
        .bind(task.scope.mode.as_str())
        .bind(task.service_pk)
        .bind(task.kind.as_str())
        .bind(&task.params)
        .bind(state.as_str())
        .bind(task.now)
        .bind(task.due_at)
        .execute(&mut *tx)
        .await?;
        let record = task_by_id(&mut tx, &task.id).await?;
        tx.commit().await?;
        Ok(StartTask::Started(Box::new(record)))
    }

    async fn find_task(&self, scope: Scope, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.id = $1 AND t.account_id = $2 AND t.mode = $3"
        ))
        .bind(task_id)
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn active_task(&self, service_pk: i64) -> StoreResult<Option<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.service_pk = $1 AND t.status IN {ACTIVE_STATUSES} ORDER BY t.created_at DESC LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn due_sandbox_tasks(&self, now: i64, limit: i64) -> StoreResult<Vec<TaskRecord>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.status IN {ACTIVE_STATUSES} AND t.mode = 'test' AND t.due_at <= $1 \
             ORDER BY t.due_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(task_from)
        .collect()
    }

    async fn finish_task(&self, task_id: &str, finish: &TaskFinish) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Service first, then task: the order every transaction here locks
        // them in (removing a service locks it, then deletes its tasks).
        let Some(service_pk) = sqlx::query("SELECT service_pk FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>("service_pk"))
            .transpose()?
        else {
            return Ok(false);
        };
        let Some(before) =
            sqlx::query("SELECT power_state FROM services WHERE pk = $1 FOR NO KEY UPDATE")
                .bind(service_pk)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<String, _>("power_state"))
                .transpose()?
        else {
            return Ok(false);
        };
        // Finishes once: a second finisher waits for the first's row lock,
        // then finds the task no longer active.
        let finished = sqlx::query(&format!(
            "UPDATE tasks SET status = $1, progress = CASE WHEN $2 THEN 100 ELSE progress END, error = $3, \
             updated_at = $4, finished_at = $4, lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND status IN {ACTIVE_STATUSES} AND ($6::TEXT IS NULL OR lease_owner = $6)"
        ))
        .bind(finish.status.as_str())
        .bind(finish.status == TaskStatus::Completed)
        .bind(&finish.error)
        .bind(finish.now)
        .bind(task_id)
        .bind(&finish.owner)
        .execute(&mut *tx)
        .await?;
        if finished.rows_affected() != 1 {
            return Ok(false);
        }
        let (os_slug, os_name) = match &finish.os {
            Some((slug, name)) => (Some(slug.as_str()), Some(name.as_str())),
            None => (None, None),
        };
        sqlx::query(
            "UPDATE services SET power_state = $1, started_at = $2, \
             os_slug = COALESCE($3, os_slug), os_name = COALESCE($4, os_name) WHERE pk = $5",
        )
        .bind(finish.power_state.as_str())
        .bind(finish.started_at)
        .bind(os_slug)
        .bind(os_name)
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        let task = task_by_id(&mut tx, task_id).await?;
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
        let mut tx = self.pool.begin().await?;
        for p in products {
            insert_product(p, true).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_product(&self, product: &NewProduct) -> StoreResult<()> {
        insert_product(product, false)
            .execute(&self.pool)
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
            "SELECT COUNT(*) AS n FROM products WHERE mode = $1 AND visible \
             AND ($2::TEXT IS NULL OR vm_type = $2)",
        )
        .bind(mode.as_str())
        .bind(type_filter)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        // An offset past the end needs no query (and would not fit OFFSET's BIGINT).
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(&format!(
            "{PRODUCT_SELECT} WHERE p.mode = $2 AND p.visible AND ($3::TEXT IS NULL OR p.vm_type = $3) \
             ORDER BY stock DESC, p.id COLLATE \"C\" ASC LIMIT $4 OFFSET $5"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(type_filter)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(&self.pool)
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
            "{PRODUCT_SELECT} WHERE p.mode = $2 AND p.id = $3 AND p.visible"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(product_from)
        .transpose()
    }

    async fn set_product_size(
        &self,
        mode: Mode,
        product_id: &str,
        size: &ProductSize,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO product_sizes (mode, product_id, ram_mb, price_minor, currency) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (mode, product_id, ram_mb) DO UPDATE SET price_minor = excluded.price_minor, \
             currency = excluded.currency",
        )
        .bind(mode.as_str())
        .bind(product_id)
        .bind(size.ram_mb)
        .bind(size.price_minor)
        .bind(&size.currency)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn product_sizes(&self, mode: Mode, product_id: &str) -> StoreResult<Vec<ProductSize>> {
        sqlx::query(
            "SELECT ram_mb, price_minor, currency FROM product_sizes \
             WHERE mode = $1 AND product_id = $2 ORDER BY ram_mb",
        )
        .bind(mode.as_str())
        .bind(product_id)
        .fetch_all(&self.pool)
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
        let done = sqlx::query("UPDATE products SET default_os = $1 WHERE mode = $2 AND id = $3")
            .bind(slug)
            .bind(mode.as_str())
            .bind(product_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_manual_stock(
        &self,
        mode: Mode,
        id: &str,
        stock: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE products SET manual_stock = $1 WHERE mode = $2 AND id = $3")
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
            "INSERT INTO instances (node, engine_id, product_id, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(&instance.node)
        .bind(&instance.engine_id)
        .bind(&instance.product_id)
        .bind(instance.now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, format!("instance '{}'", instance.engine_id)))?;
        Ok(row.try_get("id")?)
    }

    async fn create_node(&self, node: &NewNode) -> StoreResult<NodeRecord> {
        let row = sqlx::query(
            "INSERT INTO nodes (name, driver, endpoint, credentials_enc, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(&node.name)
        .bind(&node.driver)
        .bind(&node.endpoint)
        .bind(&node.credentials_enc)
        .bind(node.now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, format!("node '{}'", node.name)))?;
        node_from(&row)
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes ORDER BY name COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from)
            .collect()
    }

    async fn find_node(&self, name: &str) -> StoreResult<Option<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
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
        let done = sqlx::query("UPDATE nodes SET credentials_enc = $1 WHERE name = $2")
            .bind(credentials_enc)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn sync_instances(
        &self,
        node: &str,
        seen: &[SyncedInstance],
        now: i64,
    ) -> StoreResult<SyncSummary> {
        let mut tx = self.pool.begin().await?;
        let mut summary = SyncSummary::default();
        for instance in seen {
            if update_synced(&mut tx, node, instance, now).await? {
                summary.updated += 1;
                continue;
            }
            // Another instance of advps may be syncing the same node: if it
            // inserted the row first, this becomes an update of that row.
            let inserted = sqlx::query(
                "INSERT INTO instances (node, engine_id, kind, memory_mb, engine_state, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (node, engine_id) DO NOTHING",
            )
            .bind(node)
            .bind(&instance.engine_id)
            .bind(&instance.kind)
            .bind(instance.memory_mb)
            .bind(&instance.engine_state)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                summary.added += 1;
            } else {
                update_synced(&mut tx, node, instance, now).await?;
                summary.updated += 1;
            }
        }
        // Whatever the node did not report is gone from it: not healthy, not in stock.
        let reported: Vec<&str> = seen.iter().map(|s| s.engine_id.as_str()).collect();
        let missing = sqlx::query(
            "UPDATE instances SET healthy = FALSE, engine_state = 'missing', updated_at = $1 \
             WHERE node = $2 AND healthy AND NOT (engine_id = ANY($3))",
        )
        .bind(now)
        .bind(node)
        .bind(&reported)
        .execute(&mut *tx)
        .await?;
        summary.missing = missing.rows_affected();
        tx.commit().await?;
        Ok(summary)
    }

    async fn list_instances(&self, node: Option<&str>) -> StoreResult<Vec<InstanceRecord>> {
        sqlx::query(
            "SELECT * FROM instances WHERE ($1::TEXT IS NULL OR node = $1) \
             ORDER BY node COLLATE \"C\", engine_id COLLATE \"C\"",
        )
        .bind(node)
        .fetch_all(&self.pool)
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
        sqlx::query("SELECT * FROM instances WHERE node = $1 AND engine_id = $2")
            .bind(node)
            .bind(engine_id)
            .fetch_optional(&self.pool)
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
        let done = sqlx::query("UPDATE instances SET product_id = $1 WHERE id = $2")
            .bind(product_id)
            .bind(instance_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_os_image(&self, image: &NewOsImage) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO os_images (slug, name, os_type, image, node, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&image.slug)
        .bind(&image.name)
        .bind(image.os_type.as_str())
        .bind(&image.image)
        .bind(image.node.as_deref().unwrap_or(""))
        .bind(image.now)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::from_write(e, format!("OS image '{}' ({})", image.slug, image.os_type))
        })?;
        Ok(())
    }

    async fn list_os_images(&self) -> StoreResult<Vec<OsImageRecord>> {
        sqlx::query(
            "SELECT * FROM os_images \
             ORDER BY slug COLLATE \"C\", os_type COLLATE \"C\", node COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(os_image_from)
        .collect()
    }

    async fn os_images_by_slug(&self, slug: &str) -> StoreResult<Vec<OsImageRecord>> {
        sqlx::query(
            "SELECT * FROM os_images WHERE slug = $1 \
             ORDER BY os_type COLLATE \"C\", node COLLATE \"C\"",
        )
        .bind(slug)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(os_image_from)
        .collect()
    }

    async fn create_ip_pool(&self, pool: &NewIpPool) -> StoreResult<IpPoolRecord> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO ip_pools (name, cidr, prefix, gateway, node, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
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
            sqlx::query("INSERT INTO ip_addresses (pool_id, address) VALUES ($1, $2)")
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
             FROM ip_pools p ORDER BY p.name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // One allocation per service at a time: a concurrent call for the
        // same service waits here, then finds the address this one took.
        sqlx::query("SELECT pk FROM services WHERE pk = $1 FOR NO KEY UPDATE")
            .bind(service_pk)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk = $1 ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Ok(Some(lease_from(&row)?));
        }
        // The node's own pools first, then pools for every node; lowest
        // address first. SKIP LOCKED: an address another allocation holds is
        // passed over for the next free one rather than waited for (and then
        // found taken), so concurrent allocations get distinct addresses.
        let Some(row) = sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk IS NULL AND (p.node = $1 OR p.node = '') \
             ORDER BY CASE WHEN p.node = '' THEN 1 ELSE 0 END, a.id LIMIT 1 \
             FOR UPDATE OF a SKIP LOCKED"
        ))
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let lease = lease_from(&row)?;
        let id: i64 = row.try_get("address_id")?;
        sqlx::query(
            "UPDATE ip_addresses SET service_pk = $1, assigned_at = $2 WHERE id = $3 AND service_pk IS NULL",
        )
        .bind(service_pk)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE services SET ip = $1 WHERE pk = $2")
            .bind(&lease.address)
            .bind(service_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    async fn service_address(&self, service_pk: i64) -> StoreResult<Option<AddressLease>> {
        sqlx::query(&format!(
            "{LEASE_SELECT} WHERE a.service_pk = $1 ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(lease_from)
        .transpose()
    }

    async fn release_addresses(&self, service_pk: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pk FROM services WHERE pk = $1 FOR NO KEY UPDATE")
            .bind(service_pk)
            .fetch_optional(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = $1",
        )
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE services SET ip = NULL WHERE pk = $1")
            .bind(service_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn bind_live_service(&self, service: &NewLiveService) -> StoreResult<ServiceRecord> {
        let mut tx = self.pool.begin().await?;
        // Conditional on the instance being free: of two binds of one
        // instance, the second waits for the first's row lock, then finds
        // it assigned.
        let Some(instance) = sqlx::query(
            "UPDATE instances SET state = 'assigned', updated_at = $1 \
             WHERE id = $2 AND state = 'free' AND healthy RETURNING node, engine_id",
        )
        .bind(service.now)
        .bind(service.instance_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StoreError::Conflict(
                "the instance is not free (assigned, out of service or missing)".into(),
            ));
        };
        let node: String = instance.try_get("node")?;
        let engine_id: String = instance.try_get("engine_id")?;
        let started_at = (service.power_state == PowerState::Running).then_some(service.now);
        let row = sqlx::query(
            "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, started_at, \
             expires_at, created_at, node, instance_id) \
             VALUES ($1, 'live', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
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
             WHERE ($1::TEXT IS NULL OR s.mode = $1) \
             ORDER BY a.name COLLATE \"C\", s.mode COLLATE \"C\", s.service_id COLLATE \"C\"",
        )
        .bind(mode)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT instance_id, account_id, mode, product_id FROM services WHERE pk = $1 FOR UPDATE",
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
        delete_service_rows(&mut tx, service_pk).await?;
        if let Some(id) = instance_id {
            sqlx::query("UPDATE instances SET state = $2 WHERE id = $1")
                .bind(id)
                .bind(instance_state)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(product_id) = product_id {
            emit_stock_changed(
                &mut tx,
                account_id,
                mode,
                &product_id,
                advps_domain::time::now_millis(),
            )
            .await?;
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
            "UPDATE services SET op_lock = $1, op_lock_until = $2 WHERE pk = $3 \
             AND power_state NOT IN ('REBUILDING', 'PROVISIONING') \
             AND (op_lock IS NULL OR op_lock_until <= $4)",
        )
        .bind(token)
        .bind(now + ttl_ms)
        .bind(service_pk)
        .bind(now)
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        match power {
            Some((state, started_at)) => {
                let before: Option<String> = sqlx::query(
                    "SELECT power_state FROM services WHERE pk = $1 AND op_lock = $2 FOR NO KEY UPDATE",
                )
                .bind(service_pk)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("power_state"))
                .transpose()?;
                sqlx::query(
                    "UPDATE services SET op_lock = NULL, op_lock_until = NULL, power_state = $1, \
                     started_at = $2 WHERE pk = $3 AND op_lock = $4",
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
                sqlx::query(
                    "UPDATE services SET op_lock = NULL, op_lock_until = NULL \
                     WHERE pk = $1 AND op_lock = $2",
                )
                .bind(service_pk)
                .bind(token)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
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
        let mut tx = self.pool.begin().await?;
        // Serialised with debits, so the balance returned is the one right
        // after this credit.
        lock_account(&mut tx, account_id).await?;
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, note, created_at) \
             VALUES ($1, $2, $3, $4, 'credit', $5, $6)",
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
        Ok(sqlx::query(
            "SELECT COALESCE(SUM(amount_minor), 0)::BIGINT AS b FROM ledger_entries \
             WHERE account_id = $1 AND mode = $2",
        )
        .bind(account_id)
        .bind(mode.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get("b")?)
    }

    async fn ledger(&self, account_id: i64, mode: Mode) -> StoreResult<Vec<LedgerEntry>> {
        sqlx::query("SELECT * FROM ledger_entries WHERE account_id = $1 AND mode = $2 ORDER BY id")
            .bind(account_id)
            .bind(mode.as_str())
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // The account's lock covers the balance check and, in the sandbox,
        // the account's share of stock (both are per account).
        lock_account(&mut tx, scope.account_id).await?;
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
                // Live stock is shared by every account. The rows are locked
                // until commit; SKIP LOCKED passes over instances another
                // order is taking right now, so two orders never get the
                // same machine, and one that finds too few is out of stock
                // instead of waiting on the other.
                let rows = sqlx::query(
                    "SELECT id, node, engine_id FROM instances WHERE product_id = $1 AND memory_mb = $2 \
                     AND kind = $3 AND state = 'free' AND healthy ORDER BY id LIMIT $4 \
                     FOR UPDATE SKIP LOCKED",
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
                    "{PRODUCT_SELECT} WHERE p.mode = 'test' AND p.id = $2"
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
        // Order numbers: the counter row is created or bumped in one
        // statement; a concurrent order of the same day waits for this row
        // until commit, so numbers are never handed out twice.
        let counter: i64 = sqlx::query(
            "INSERT INTO order_counters (day_key, last) VALUES ($1, 1) \
             ON CONFLICT (day_key) DO UPDATE SET last = order_counters.last + 1 RETURNING last",
        )
        .bind(format!("{}{}", order.prefix, order.day))
        .fetch_one(&mut *tx)
        .await?
        .try_get("last")?;
        let order_id = format!("{}{}-{:04}", order.prefix, order.day, counter);
        sqlx::query(
            "INSERT INTO orders (id, account_id, mode, product_id, ram_mb, os_slug, os_name, quantity, \
             validity_days, amount_minor, currency, status, remark, customer_name, customer_email, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'PENDING', $12, $13, $14, $15, $15)",
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
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, \
             created_at) VALUES ($1, $2, $3, $4, 'purchase', $5, $6, $7)",
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
                    sqlx::query(
                        "UPDATE instances SET state = 'assigned', updated_at = $1 WHERE id = $2 AND state = 'free'",
                    )
                    .bind(order.now)
                    .bind(id)
                    .execute(&mut *tx)
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
            let row = sqlx::query(
                "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, ip, \
                 reserved_ip, os_slug, os_name, password_enc, expires_at, created_at, node, instance_id, \
                 order_id, product_id, ram_mb, username) \
                 VALUES ($1, $2, $3, $4, $5, 'PROVISIONING', $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 $15, $16, 'root') RETURNING *",
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
            .fetch_one(&mut *tx)
            .await?;
            let service = service_from(&row)?;
            sqlx::query(
                "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, params, \
                 prev_state, created_at, updated_at, due_at) \
                 VALUES ($1, $2, $3, $4, 'PROVISION', 'PENDING', 0, $5, 'STOPPED', $6, $6, $7)",
            )
            .bind(advps_domain::ids::task_id())
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(service.pk)
            .bind(&order.task_params)
            .bind(order.now)
            .bind(order.due_at)
            .execute(&mut *tx)
            .await?;
            services.push(service);
        }
        let record = sqlx::query("SELECT * FROM orders WHERE id = $1")
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
        sqlx::query("SELECT * FROM orders WHERE id = $1 AND account_id = $2 AND mode = $3")
            .bind(order_id)
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(order_from)
            .transpose()
    }

    async fn order_services(&self, order_id: &str) -> StoreResult<Vec<ServiceRecord>> {
        sqlx::query("SELECT * FROM services WHERE order_id = $1 ORDER BY pk")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(service_from)
            .collect()
    }

    async fn settle_order(&self, order_id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE orders SET status = 'COMPLETED', updated_at = $1 WHERE id = $2 AND status = 'PENDING' \
             AND NOT EXISTS (SELECT 1 FROM services s WHERE s.order_id = orders.id \
             AND s.power_state = 'PROVISIONING') RETURNING account_id, mode",
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
                sqlx::query("SELECT service_id FROM services WHERE order_id = $1 ORDER BY pk")
                    .bind(order_id)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get("service_id"))
                    .collect::<Result<_, _>>()?;
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
        let mut tx = self.pool.begin().await?;
        // Fails once: a concurrent call waits for the order's row lock,
        // then finds it no longer pending (and refunds nothing).
        let Some(order) = sqlx::query(
            "UPDATE orders SET status = 'FAILED', error = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'PENDING' RETURNING *",
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
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, \
             created_at) VALUES ($1, $2, $3, $4, 'refund', $5, 'provisioning failed', $6)",
        )
        .bind(order.account_id)
        .bind(order.mode.as_str())
        .bind(order.amount_minor)
        .bind(&order.currency)
        .bind(order_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let pks: Vec<(i64, Option<i64>)> = sqlx::query(
            "SELECT pk, instance_id FROM services WHERE order_id = $1 ORDER BY pk FOR UPDATE",
        )
        .bind(order_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("pk")?, r.try_get("instance_id")?)))
        .collect::<StoreResult<_>>()?;
        for (pk, instance_id) in pks {
            delete_service_rows(&mut tx, pk).await?;
            if let Some(id) = instance_id {
                let state = instance_states
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, s)| *s)
                    .unwrap_or("free");
                sqlx::query("UPDATE instances SET state = $1, updated_at = $2 WHERE id = $3")
                    .bind(state)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
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
        let mut tx = self.pool.begin().await?;
        lock_account(&mut tx, scope.account_id).await?;
        let total: i64 = items.iter().map(|i| i.amount_minor).sum();
        let balance = balance_in(&mut tx, scope.account_id, scope.mode).await?;
        if balance < total {
            return Ok(Renewal::InsufficientFunds { balance });
        }
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, mode, amount_minor, currency, kind, reference, note, \
             created_at) VALUES ($1, $2, $3, $4, 'renewal', $5, $6, $7)",
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
                "UPDATE services SET expires_at = COALESCE(expires_at, $1) + $2, \
                 power_state = CASE WHEN power_state = 'SUSPENDED' THEN 'STOPPED' ELSE power_state END \
                 WHERE pk = $3 AND account_id = $4 AND mode = $5 RETURNING *",
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
            "SELECT * FROM services WHERE expires_at <= $1 AND power_state IN ('RUNNING', 'STOPPED') \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
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
        sqlx::query(
            "SELECT * FROM services WHERE expires_at <= $1 AND power_state = 'SUSPENDED' \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(service_from)
        .collect()
    }

    async fn suspend_service(&self, service_pk: i64) -> StoreResult<bool> {
        let now = advps_domain::time::now_millis();
        let mut tx = self.pool.begin().await?;
        // The lock re-checks the condition on the row's newest version, so
        // of two suspenders (two instances' expiry sweeps) one suspends and
        // emits the event.
        let before: Option<String> = sqlx::query(
            "SELECT power_state FROM services WHERE pk = $1 AND power_state IN ('RUNNING', 'STOPPED') \
             AND (op_lock IS NULL OR op_lock_until <= $2) FOR NO KEY UPDATE",
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
            "UPDATE services SET power_state = 'SUSPENDED', started_at = NULL WHERE pk = $1",
        )
        .bind(service_pk)
        .execute(&mut *tx)
        .await?;
        emit_power_changed(&mut tx, service_pk, &before, "SUSPENDED", now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_service_expiry(&self, service_pk: i64, expires_at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE services SET expires_at = $1 WHERE pk = $2")
            .bind(expires_at)
            .bind(service_pk)
            .execute(&self.pool)
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
            "UPDATE services SET last_mac_reset = $1 WHERE pk = $2 \
             AND (last_mac_reset IS NULL OR last_mac_reset <= $3)",
        )
        .bind(now)
        .bind(service_pk)
        .bind(now - interval_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let last: Option<i64> = sqlx::query("SELECT last_mac_reset FROM services WHERE pk = $1")
            .bind(service_pk)
            .fetch_one(&self.pool)
            .await?
            .try_get("last_mac_reset")?;
        Ok(Err(last.unwrap_or(now) + interval_ms))
    }

    async fn set_service_mac(&self, service_pk: i64, mac: &str) -> StoreResult<()> {
        sqlx::query("UPDATE services SET mac = $1 WHERE pk = $2")
            .bind(mac)
            .bind(service_pk)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn restore_mac_reset(&self, service_pk: i64, previous: Option<i64>) -> StoreResult<()> {
        sqlx::query("UPDATE services SET last_mac_reset = $1 WHERE pk = $2")
            .bind(previous)
            .bind(service_pk)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_instance_state(&self, instance_id: i64, state: &str) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET state = $1 WHERE id = $2")
            .bind(state)
            .bind(instance_id)
            .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM idempotency_records WHERE key_id = $1 AND idem_key = $2 AND expires_at <= $3",
        )
        .bind(key_id)
        .bind(idem_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Of concurrent first requests with one key, one inserts; the others
        // wait on its uncommitted row, then insert nothing and read it.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_records (key_id, idem_key, fingerprint, state, created_at, expires_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (key_id, idem_key) DO NOTHING",
        )
        .bind(key_id)
        .bind(idem_key)
        .bind(fingerprint)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Started);
        }
        // Locked, so that of two requests taking over a stale record only
        // the first does; the second sees the renewed start and waits.
        let existing = sqlx::query(
            "SELECT * FROM idempotency_records WHERE key_id = $1 AND idem_key = $2 FOR UPDATE",
        )
        .bind(key_id)
        .bind(idem_key)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match existing {
            // Abandoned between the insert and this read: the key is free
            // again, and this request is its first.
            None => {
                let again = sqlx::query(
                    "INSERT INTO idempotency_records (key_id, idem_key, fingerprint, state, created_at, \
                     expires_at) VALUES ($1, $2, $3, 'in_flight', $4, $5) \
                     ON CONFLICT (key_id, idem_key) DO NOTHING",
                )
                .bind(key_id)
                .bind(idem_key)
                .bind(fingerprint)
                .bind(now)
                .bind(now + ttl_ms)
                .execute(&mut *tx)
                .await?;
                // Lost the key once more to a third request: it runs.
                if again.rows_affected() == 1 {
                    IdempotencyBegin::Started
                } else {
                    IdempotencyBegin::InFlight
                }
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
                    // Its server died mid-request: this one runs it. The
                    // update is conditional too, so the takeover stays single
                    // even should the row lock above ever be dropped.
                    let taken = sqlx::query(
                        "UPDATE idempotency_records SET created_at = $1 WHERE key_id = $2 AND idem_key = $3 \
                         AND state = 'in_flight' AND created_at = $4",
                    )
                    .bind(now)
                    .bind(key_id)
                    .bind(idem_key)
                    .bind(created)
                    .execute(&mut *tx)
                    .await?;
                    if taken.rows_affected() == 1 {
                        IdempotencyBegin::Started
                    } else {
                        IdempotencyBegin::InFlight
                    }
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
            "UPDATE idempotency_records SET state = 'done', status = $1, body = $2, content_type = $3 \
             WHERE key_id = $4 AND idem_key = $5",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(content_type)
        .bind(key_id)
        .bind(idem_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn abandon_idempotent(&self, key_id: &str, idem_key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_records WHERE key_id = $1 AND idem_key = $2 AND state = 'in_flight'",
        )
        .bind(key_id)
        .bind(idem_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_webhook(&self, endpoint: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint> {
        let row = sqlx::query(
            "INSERT INTO webhook_endpoints (id, account_id, mode, url, description, events, secret_enc, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(&endpoint.id)
        .bind(endpoint.scope.account_id)
        .bind(endpoint.scope.mode.as_str())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(serde_json::to_string(&endpoint.events).unwrap_or_else(|_| "[]".into()))
        .bind(&endpoint.secret_enc)
        .bind(endpoint.now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, format!("webhook '{}'", endpoint.id)))?;
        webhook_from(&row)
    }

    async fn list_webhooks(&self, scope: Scope) -> StoreResult<Vec<WebhookEndpoint>> {
        sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE account_id = $1 AND mode = $2 \
             ORDER BY created_at, id COLLATE \"C\"",
        )
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(webhook_from)
        .collect()
    }

    async fn all_webhooks(&self, account_id: Option<i64>) -> StoreResult<Vec<WebhookEndpoint>> {
        sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE ($1::BIGINT IS NULL OR account_id = $1) \
             ORDER BY created_at, id COLLATE \"C\"",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(webhook_from)
        .collect()
    }

    async fn find_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from)
            .transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
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
            "UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, previous_until = $1, \
             secret_enc = $2 WHERE id = $3",
        )
        .bind(previous_until)
        .bind(secret_enc)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fan_out_events(&self, now: i64, limit: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        // Each event is fanned out by one instance: the events are locked
        // until commit, and another instance's sweep skips them (and takes
        // later ones) instead of making a second set of deliveries.
        let events = sqlx::query(
            "SELECT * FROM events WHERE NOT fanned_out ORDER BY created_at, id COLLATE \"C\" LIMIT $1 \
             FOR UPDATE SKIP LOCKED",
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
                "SELECT id, events FROM webhook_endpoints WHERE mode = $1 \
                 AND ($2::BIGINT IS NULL OR account_id = $2)",
            )
            .bind(&mode)
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
                    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, status, \
                     attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
                )
                .bind(format!(
                    "msg_{}",
                    advps_domain::ids::task_id().replace('-', "")
                ))
                .bind(&endpoint_id)
                .bind(&id)
                .bind(&event_type)
                .bind(&payload)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                made += 1;
            }
            sqlx::query("UPDATE events SET fanned_out = TRUE WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: a delivery another instance is claiming right now is
        // left to it; once that commits, the hold below makes it not due.
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let deliveries = rows
            .iter()
            .map(delivery_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        if !ids.is_empty() {
            // Held while it is sent; if this process dies, it is due again after the hold.
            sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = ANY($2)")
                .bind(now + hold_ms)
                .bind(&ids)
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
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             last_status_code = $3, last_error = $4, updated_at = $5, \
             delivered_at = CASE WHEN $6 THEN $5 ELSE delivered_at END WHERE id = $7",
        )
        .bind(status)
        .bind(attempt.retry_at.unwrap_or(attempt.now))
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(attempt.now)
        .bind(attempt.delivered)
        .bind(id)
        .execute(&self.pool)
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
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1")
                .bind(endpoint_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 \
             ORDER BY created_at DESC, id COLLATE \"C\" LIMIT $2 OFFSET $3",
        )
        .bind(endpoint_id)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok((
            rows.iter().map(delivery_from).collect::<StoreResult<_>>()?,
            total as u64,
        ))
    }

    async fn redeliver(&self, endpoint_id: &str, delivery_id: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND endpoint_id = $3",
        )
        .bind(now)
        .bind(delivery_id)
        .bind(endpoint_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_entries (at, account_id, key_id, mode, method, path, service_id, status, \
             request_id, idempotency_key, task_id, order_id, source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> StoreResult<(Vec<AuditEntry>, u64)> {
        const WHERE: &str = "WHERE ($1::BIGINT IS NULL OR e.account_id = $1) \
             AND ($2::TEXT IS NULL OR e.mode = $2) AND ($3::TEXT IS NULL OR e.service_id = $3) \
             AND ($4::BIGINT IS NULL OR e.at >= $4) AND ($5::BIGINT IS NULL OR e.at <= $5)";
        let mode = f.mode.map(Mode::as_str);
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM audit_entries e {WHERE}"
        ))
        .bind(f.account_id)
        .bind(mode)
        .bind(&f.service_id)
        .bind(f.from)
        .bind(f.to)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        if f.offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let rows = sqlx::query(&format!(
            "SELECT e.*, a.name AS account_name FROM audit_entries e \
             LEFT JOIN accounts a ON a.id = e.account_id \
             {WHERE} ORDER BY e.at DESC, e.id DESC LIMIT $6 OFFSET $7"
        ))
        .bind(f.account_id)
        .bind(mode)
        .bind(&f.service_id)
        .bind(f.from)
        .bind(f.to)
        .bind(i64::from(f.limit))
        .bind(f.offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|r| {
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
                    status: r.try_get("status")?,
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
            "SELECT COUNT(*) FILTER (WHERE status = 'PENDING') AS pending, \
             COUNT(*) FILTER (WHERE status = 'IN_PROGRESS') AS running \
             FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS')",
        )
        .fetch_one(&self.pool)
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
        // The upsert holds the key's row lock while it computes, so hits
        // from every instance are counted exactly, none lost.
        let row = sqlx::query(
            "INSERT INTO rate_windows (key_id, opened_at, count) VALUES ($1, $2, 1) \
             ON CONFLICT (key_id) DO UPDATE SET \
               count = CASE WHEN rate_windows.opened_at + $3 <= $2 THEN 1 ELSE rate_windows.count + 1 END, \
               opened_at = CASE WHEN rate_windows.opened_at + $3 <= $2 THEN $2 ELSE rate_windows.opened_at END \
             RETURNING count, opened_at",
        )
        .bind(key_id)
        .bind(now)
        .bind(window_ms)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get("count")?;
        Ok(RateHit {
            counted: count <= i64::from(limit),
            count: count.clamp(0, i64::from(u32::MAX)) as u32,
            opened_at: row.try_get("opened_at")?,
        })
    }

    async fn rate_release(&self, key_id: &str, now: i64, window_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE rate_windows SET count = count - 1 WHERE key_id = $1 AND count > 0 \
             AND opened_at + $2 > $3",
        )
        .bind(key_id)
        .bind(window_ms)
        .bind(now)
        .execute(&self.pool)
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
            "SELECT count, opened_at FROM rate_windows WHERE key_id = $1 AND opened_at + $2 > $3",
        )
        .bind(key_id)
        .bind(window_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let count: i64 = r.try_get("count")?;
            Ok(RateHit {
                counted: false,
                count: count.clamp(0, i64::from(u32::MAX)) as u32,
                opened_at: r.try_get("opened_at")?,
            })
        })
        .transpose()
    }

    async fn claim_task(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<TaskRecord>> {
        let mut tx = self.pool.begin().await?;
        // The oldest claimable task that no other worker is claiming at this
        // moment. SKIP LOCKED lets several workers claim side by side, each
        // getting a different task, instead of all queueing on the oldest;
        // and a row this statement does lock is re-checked on its newest
        // version, so a lease another worker just took is not taken again.
        // A lapsed lease (its worker died) makes the task claimable again.
        let Some(row) = sqlx::query(&format!(
            "SELECT id FROM tasks WHERE mode = 'live' AND status IN {ACTIVE_STATUSES} \
             AND (lease_until IS NULL OR lease_until <= $1) ORDER BY created_at LIMIT 1 \
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        sqlx::query(
            "UPDATE tasks SET status = 'IN_PROGRESS', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 WHERE id = $4",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let task = task_by_id(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(task))
    }

    async fn renew_lease(&self, task_id: &str, owner: &str, until: i64) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 \
             AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(until)
        .bind(task_id)
        .bind(owner)
        .execute(&self.pool)
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
            "UPDATE tasks SET step = $1, scratch = $2, progress = $3, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6 AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(step)
        .bind(scratch)
        .bind(progress)
        .bind(now)
        .bind(task_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Brings a known instance up to date with what its node reports; false
/// when the node's instance is not known yet.
async fn update_synced(
    tx: &mut Tx<'_>,
    node: &str,
    instance: &SyncedInstance,
    now: i64,
) -> StoreResult<bool> {
    let updated = sqlx::query(
        "UPDATE instances SET kind = $1, memory_mb = $2, engine_state = $3, healthy = TRUE, updated_at = $4 \
         WHERE node = $5 AND engine_id = $6",
    )
    .bind(&instance.kind)
    .bind(instance.memory_mb)
    .bind(&instance.engine_state)
    .bind(now)
    .bind(node)
    .bind(&instance.engine_id)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes a service with what hangs off it: its addresses go back to
/// their pools and its tasks go. The caller holds the service's row lock.
async fn delete_service_rows(tx: &mut Tx<'_>, service_pk: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = $1",
    )
    .bind(service_pk)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM tasks WHERE service_pk = $1")
        .bind(service_pk)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM services WHERE pk = $1")
        .bind(service_pk)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn insert_product(
    p: &NewProduct,
    if_absent: bool,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let sql = if if_absent {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, \
         default_os, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (mode, id) DO NOTHING"
    } else {
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, low_stock_threshold, \
         default_os, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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

fn node_from(row: &PgRow) -> StoreResult<NodeRecord> {
    Ok(NodeRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        driver: row.try_get("driver")?,
        endpoint: row.try_get("endpoint")?,
        credentials_enc: row.try_get("credentials_enc")?,
        created_at: row.try_get("created_at")?,
    })
}

fn instance_from(row: &PgRow) -> StoreResult<InstanceRecord> {
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

fn os_image_from(row: &PgRow) -> StoreResult<OsImageRecord> {
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

fn lease_from(row: &PgRow) -> StoreResult<AddressLease> {
    let prefix: i64 = row.try_get("prefix")?;
    Ok(AddressLease {
        address: row.try_get("address")?,
        prefix: prefix as u8,
        gateway: row.try_get("gateway")?,
        pool: row.try_get("pool")?,
    })
}

/// A live service id no service has yet.
async fn unique_live_id(tx: &mut Tx<'_>) -> StoreResult<String> {
    loop {
        let candidate = advps_domain::ids::live_service_id();
        let taken = sqlx::query("SELECT 1 FROM services WHERE service_id = $1")
            .bind(&candidate)
            .fetch_optional(&mut **tx)
            .await?;
        if taken.is_none() {
            return Ok(candidate);
        }
    }
}

/// The next sandbox service id of a type (`lxc_service_2`, `vps_service_3`)
/// and a simulated vmid for it. Runs under the account's lock, so two
/// orders of one account never pick the same id.
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
    let mut n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM services WHERE account_id = $1 AND mode = 'test' AND service_id LIKE $2",
    )
    .bind(scope.account_id)
    .bind(format!("{prefix}_service_%"))
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    loop {
        n += 1;
        let id = format!("{prefix}_service_{n}");
        let taken = sqlx::query(
            "SELECT 1 FROM services WHERE account_id = $1 AND mode = 'test' AND service_id = $2",
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

fn order_from(row: &PgRow) -> StoreResult<OrderRecord> {
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

fn webhook_from(row: &PgRow) -> StoreResult<WebhookEndpoint> {
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

fn delivery_from(row: &PgRow) -> StoreResult<WebhookDelivery> {
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
    sqlx::query(
        "INSERT INTO events (id, account_id, mode, event_type, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
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
        sqlx::query(&format!("{PRODUCT_SELECT} WHERE p.mode = $2 AND p.id = $3"))
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
    let row = sqlx::query(
        "SELECT account_id, mode, service_id, service_type FROM services WHERE pk = $1",
    )
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
