//! Tasks on services: starting one atomically, finishing it once, and the durable worker's claims, leases and steps.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::{PowerState, TaskStatus};
use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::stores::shared::{
    emit, emit_power_changed, task_by_id, task_from, ACTIVE_STATUSES, TASK_COLUMNS,
};
use crate::{SqlStore, StoreResult};

/// Tasks on services: starting one atomically, finishing it once, and the durable worker's claims, leases and steps.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Starts a task on a service atomically: refuses when another task holds
    /// the service or when the monthly limit for this kind is used up, else
    /// moves the service to `busy_state` and records the task.
    async fn start_service_task(
        &self,
        task: &NewTask,
        limit: Option<MonthlyLimit>,
    ) -> StoreResult<StartTask>;

    async fn find_task(&self, scope: Scope, task_id: &str) -> StoreResult<Option<TaskRecord>>;

    /// The unfinished task that holds a service, if any.
    async fn active_task(&self, service_pk: i64) -> StoreResult<Option<TaskRecord>>;

    /// Unfinished sandbox tasks whose simulated work is over by `now`.
    async fn due_sandbox_tasks(&self, now: i64, limit: i64) -> StoreResult<Vec<TaskRecord>>;

    /// Finishes a task and applies its outcome to the service, once: false
    /// when the task had already finished.
    async fn finish_task(&self, task_id: &str, finish: &TaskFinish) -> StoreResult<bool>;

    /// Unfinished tasks: (pending, in progress).
    async fn task_queue_depth(&self) -> StoreResult<(i64, i64)>;

    /// Claims the oldest live task that is unclaimed or whose lease lapsed.
    async fn claim_task(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<TaskRecord>>;

    /// Extends a lease; false when the task is no longer this worker's.
    async fn renew_lease(&self, task_id: &str, owner: &str, until: i64) -> StoreResult<bool>;

    /// Records a finished step; false when the task is no longer this worker's.
    async fn record_step(
        &self,
        task_id: &str,
        owner: &str,
        step: i64,
        scratch: &str,
        progress: i64,
        now: i64,
    ) -> StoreResult<bool>;
}

#[async_trait]
impl TaskStore for SqlStore {
    async fn start_service_task(
        &self,
        task: &NewTask,
        limit: Option<MonthlyLimit>,
    ) -> StoreResult<StartTask> {
        let mut tx = self.db.begin().await?;
        // The service's row lock makes the checks below and the start one
        // step: a concurrent start waits here, then sees the busy state.
        let sql = format!(
            "SELECT power_state, op_lock, op_lock_until FROM services WHERE pk = $1{}",
            tx.dialect().lock_rows()
        );
        let Some(row) = query(sql).bind(task.service_pk).row_opt(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(StartTask::NotFound);
        };
        let state: PowerState = row.parse("power_state")?;
        let lock: Option<String> = row.get("op_lock")?;
        let lock_until: Option<i64> = row.get("op_lock_until")?;
        if lock.is_some() && lock_until.unwrap_or(0) > task.now {
            tx.rollback().await?;
            return Ok(StartTask::Busy(None));
        }
        if state.is_busy() {
            let holder: Option<String> = query(format!(
                "SELECT id FROM tasks WHERE service_pk = $1 AND status IN {ACTIVE_STATUSES} \
                 ORDER BY created_at DESC LIMIT 1"
            ))
            .bind(task.service_pk)
            .scalar_opt(&mut tx)
            .await?;
            tx.rollback().await?;
            return Ok(StartTask::Busy(holder));
        }
        if !matches!(state, PowerState::Running | PowerState::Stopped) {
            tx.rollback().await?;
            return Ok(StartTask::NotReady(state));
        }
        if let Some(limit) = limit {
            let used: i64 = query(
                "SELECT COUNT(*) FROM tasks WHERE service_pk = $1 AND kind = $2 \
                 AND created_at >= $3 AND status <> 'FAILED'",
            )
            .bind(task.service_pk)
            .bind(task.kind.as_str())
            .bind(limit.since)
            .scalar(&mut tx)
            .await?;
            if used >= i64::from(limit.max) {
                tx.rollback().await?;
                return Ok(StartTask::LimitReached);
            }
        }
        query("UPDATE services SET power_state = $1 WHERE pk = $2")
            .bind(task.busy_state.as_str())
            .bind(task.service_pk)
            .execute(&mut tx)
            .await?;
        query(
            "INSERT INTO tasks (id, account_id, mode, service_pk, kind, status, progress, params, \
             prev_state, created_at, updated_at, due_at) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', 0, $6, $7, $8, $8, $9)",
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
        .execute(&mut tx)
        .await?;
        let record = task_by_id(&mut tx, &task.id).await?;
        tx.commit().await?;
        Ok(StartTask::Started(Box::new(record)))
    }

    async fn find_task(&self, scope: Scope, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        query(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.id = $1 AND t.account_id = $2 AND t.mode = $3"
        ))
        .bind(task_id)
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .row_opt(self.db.read())
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn active_task(&self, service_pk: i64) -> StoreResult<Option<TaskRecord>> {
        query(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.service_pk = $1 AND t.status IN {ACTIVE_STATUSES} \
             ORDER BY t.created_at DESC LIMIT 1"
        ))
        .bind(service_pk)
        .row_opt(self.db.read())
        .await?
        .as_ref()
        .map(task_from)
        .transpose()
    }

    async fn due_sandbox_tasks(&self, now: i64, limit: i64) -> StoreResult<Vec<TaskRecord>> {
        query(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN services s ON s.pk = t.service_pk \
             WHERE t.status IN {ACTIVE_STATUSES} AND t.mode = 'test' AND t.due_at <= $1 \
             ORDER BY t.due_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .rows(self.db.read())
        .await?
        .iter()
        .map(task_from)
        .collect()
    }

    async fn finish_task(&self, task_id: &str, finish: &TaskFinish) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        // Service first, then task: the order every transaction here locks
        // them in (removing a service locks it, then deletes its tasks).
        let Some(service_pk) = query("SELECT service_pk FROM tasks WHERE id = $1")
            .bind(task_id)
            .scalar_opt::<i64>(&mut tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        let sql = format!(
            "SELECT power_state FROM services WHERE pk = $1{}",
            tx.dialect().lock_rows()
        );
        let Some(before) = query(sql)
            .bind(service_pk)
            .scalar_opt::<String>(&mut tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        // Finishes once: a second finisher waits for the first's row lock,
        // then finds the task no longer active. A worker finishes only a
        // task it still holds the lease of.
        let finished = query(format!(
            "UPDATE tasks SET status = $1, progress = CASE WHEN $2 THEN 100 ELSE progress END, \
             error = $3, updated_at = $4, finished_at = $4, lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND status IN {ACTIVE_STATUSES} \
             AND (CAST($6 AS TEXT) IS NULL OR lease_owner = $6)"
        ))
        .bind(finish.status.as_str())
        .bind(finish.status == TaskStatus::Completed)
        .bind(&finish.error)
        .bind(finish.now)
        .bind(task_id)
        .bind(&finish.owner)
        .execute(&mut tx)
        .await?;
        if finished != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let os = finish.os.as_ref();
        query(
            "UPDATE services SET power_state = $1, started_at = $2, \
             os_slug = COALESCE($3, os_slug), os_name = COALESCE($4, os_name), \
             username = COALESCE($5, username) WHERE pk = $6",
        )
        .bind(finish.power_state.as_str())
        .bind(finish.started_at)
        .bind(os.map(|o| o.slug.as_str()))
        .bind(os.map(|o| o.name.as_str()))
        .bind(os.map(|o| o.username.as_str()))
        .bind(service_pk)
        .execute(&mut tx)
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

    async fn task_queue_depth(&self) -> StoreResult<(i64, i64)> {
        // COUNT is BIGINT on PostgreSQL, where SUM of it would be NUMERIC.
        let row = query(format!(
            "SELECT COUNT(CASE WHEN status = 'PENDING' THEN 1 END) AS pending, \
             COUNT(CASE WHEN status = 'IN_PROGRESS' THEN 1 END) AS running \
             FROM tasks WHERE status IN {ACTIVE_STATUSES}"
        ))
        .row(self.db.read())
        .await?;
        Ok((row.get("pending")?, row.get("running")?))
    }

    async fn claim_task(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<TaskRecord>> {
        // Only the tasks table changes, and no cached row comes from it:
        // workers polling for work leave the cache of keys and services be.
        let mut tx = self.db.begin_uncached().await?;
        // The oldest claimable task that no other worker is claiming at this
        // moment. SKIP LOCKED lets several workers claim side by side, each
        // getting a different task, instead of all queueing on the oldest;
        // and a row this statement does lock is re-checked on its newest
        // version, so a lease another worker just took is not taken again.
        // A lapsed lease (its worker died) makes the task claimable again.
        let sql = format!(
            "SELECT id FROM tasks WHERE mode = 'live' AND status IN {ACTIVE_STATUSES} \
             AND (lease_until IS NULL OR lease_until <= $1) ORDER BY created_at LIMIT 1{}",
            tx.dialect().skip_locked()
        );
        let Some(id) = query(sql).bind(now).scalar_opt::<String>(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        query(
            "UPDATE tasks SET status = 'IN_PROGRESS', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 WHERE id = $4",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(&id)
        .execute(&mut tx)
        .await?;
        let task = task_by_id(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(task))
    }

    async fn renew_lease(&self, task_id: &str, owner: &str, until: i64) -> StoreResult<bool> {
        // Conditional on the lease: a worker whose lease lapsed and was
        // taken over changes nothing. Tasks are never cached.
        let done = query(format!(
            "UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 \
             AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(until)
        .bind(task_id)
        .bind(owner)
        .execute(self.db.write_uncached())
        .await?;
        Ok(done == 1)
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
        let done = query(format!(
            "UPDATE tasks SET step = $1, scratch = $2, progress = $3, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6 AND status IN {ACTIVE_STATUSES}"
        ))
        .bind(step)
        .bind(scratch)
        .bind(progress)
        .bind(now)
        .bind(task_id)
        .bind(owner)
        .execute(self.db.write_uncached())
        .await?;
        Ok(done == 1)
    }
}
