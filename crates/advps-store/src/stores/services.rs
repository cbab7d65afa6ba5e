//! Services and their power: lookups, state transitions, short operation locks, binding and removal, addresses and passwords, expiry and MAC resets.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::{Mode, PowerState, ServiceType};
use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::stores::shared::{self, emit_power_changed, emit_stock_changed, unbind_service};
use crate::{SqlStore, StoreError, StoreResult};

/// Services and their power: lookups, state transitions, short operation locks, binding and removal, addresses and passwords, expiry and MAC resets.
#[async_trait]
pub trait ServiceStore: Send + Sync {
    async fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>>;

    /// Moves a service from `from` to `to` only if it is in `from` now, and
    /// sets `started_at` (the moment uptime counts from; `None` clears it).
    /// False when the service was not in `from`.
    async fn transition_power(
        &self,
        service_pk: i64,
        from: PowerState,
        to: PowerState,
        started_at: Option<i64>,
    ) -> StoreResult<bool>;

    /// Gives the service `ip` unless it already has an address, and returns
    /// the address it has afterwards. `None` when the service is busy.
    async fn assign_ip(&self, service_pk: i64, ip: &str) -> StoreResult<Option<String>>;

    /// Records the OS a service runs.
    async fn set_service_os(&self, service_pk: i64, slug: &str, name: &str) -> StoreResult<()>;

    /// Stores an (encrypted) password whatever the service's state (used
    /// while provisioning).
    async fn store_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<()>;

    /// Stores an (encrypted) password only while the service is running.
    async fn set_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<bool>;

    /// Binds a free instance to an account as a live service, atomically:
    /// an instance that is not free is [`StoreError::Conflict`].
    async fn bind_live_service(&self, service: &NewLiveService) -> StoreResult<ServiceRecord>;

    async fn list_services(&self, mode: Option<Mode>) -> StoreResult<Vec<ServiceListing>>;

    /// A page of one account's services in one mode, optionally of one type
    /// and power state, sorted by service id (bytewise), and how many match.
    async fn page_services(
        &self,
        scope: Scope,
        service_type: Option<ServiceType>,
        power: Option<PowerState>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<ServiceRecord>, u64)>;

    /// Removes a service: its addresses go back to the pool and its instance
    /// returns to inventory as `instance_state` (`free`, or `out_of_service`
    /// when it could not be wiped) in the same transaction, so a machine not
    /// fit to sell is never free for a moment. False when there is no such
    /// service.
    async fn remove_service(&self, service_pk: i64, instance_state: &str) -> StoreResult<bool>;

    /// Takes the short operation lock of a service (no task running, no other
    /// lock unexpired).
    async fn lock_service(
        &self,
        service_pk: i64,
        token: &str,
        now: i64,
        ttl_ms: i64,
    ) -> StoreResult<LockOutcome>;

    /// Releases the lock and records the power state the engine reported.
    async fn unlock_service(
        &self,
        service_pk: i64,
        token: &str,
        power: Option<(PowerState, Option<i64>)>,
    ) -> StoreResult<()>;

    /// Services whose expiry has passed and that are not yet suspended.
    async fn services_to_suspend(&self, now: i64, limit: i64) -> StoreResult<Vec<ServiceRecord>>;

    /// Suspended services whose expiry is before `cutoff`.
    async fn services_to_terminate(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<ServiceRecord>>;

    /// Moves a service to `SUSPENDED` from a resting state.
    async fn suspend_service(&self, service_pk: i64) -> StoreResult<bool>;

    /// Sets a service's expiry (operators).
    async fn set_service_expiry(&self, service_pk: i64, expires_at: i64) -> StoreResult<()>;

    /// Takes the right to reset a MAC now if the last reset is at least
    /// `interval_ms` old; otherwise returns when it may be done again.
    async fn claim_mac_reset(
        &self,
        service_pk: i64,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<Result<(), i64>>;

    async fn set_service_mac(&self, service_pk: i64, mac: &str) -> StoreResult<()>;

    /// Gives back a MAC reset that could not be carried out.
    async fn restore_mac_reset(&self, service_pk: i64, previous: Option<i64>) -> StoreResult<()>;
}

#[async_trait]
impl ServiceStore for SqlStore {
    async fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>> {
        self.cache
            .service(scope.account_id, scope.mode, service_id, || {
                query("SELECT * FROM services WHERE account_id = $1 AND mode = $2 AND service_id = $3")
                    .bind(scope.account_id)
                    .bind(scope.mode.as_str())
                    .bind(service_id)
                    .fetch_optional(self.db.read())
            })
            .await
    }

    async fn transition_power(
        &self,
        service_pk: i64,
        from: PowerState,
        to: PowerState,
        started_at: Option<i64>,
    ) -> StoreResult<bool> {
        const UPDATE: &str =
            "UPDATE services SET power_state = $1, started_at = $2 WHERE pk = $3 AND power_state = $4";
        if from == to {
            // A reboot: no state change to announce, so the conditional
            // update is all there is, one statement with no transaction
            // around it (one turn of SQLite's one writer instead of three).
            let done = query(UPDATE)
                .bind(to.as_str())
                .bind(started_at)
                .bind(service_pk)
                .bind(from.as_str())
                .execute(self.db.write())
                .await?;
            return Ok(done == 1);
        }
        let mut tx = self.db.begin().await?;
        // Conditional on the state it leaves: of concurrent callers, the
        // first to update the row wins; the others wait for its lock, see
        // the new state and match nothing.
        let done = query(UPDATE)
            .bind(to.as_str())
            .bind(started_at)
            .bind(service_pk)
            .bind(from.as_str())
            .execute(&mut tx)
            .await?;
        if done != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        emit_power_changed(
            &mut tx,
            service_pk,
            from.as_str(),
            to.as_str(),
            advps_domain::time::now_millis(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn assign_ip(&self, service_pk: i64, ip: &str) -> StoreResult<Option<String>> {
        query(
            "UPDATE services SET ip = COALESCE(ip, $1) WHERE pk = $2 \
             AND power_state IN ('RUNNING', 'STOPPED') RETURNING ip",
        )
        .bind(ip)
        .bind(service_pk)
        .scalar_opt(self.db.write())
        .await
    }

    async fn set_service_os(&self, service_pk: i64, slug: &str, name: &str) -> StoreResult<()> {
        query("UPDATE services SET os_slug = $1, os_name = $2 WHERE pk = $3")
            .bind(slug)
            .bind(name)
            .bind(service_pk)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    async fn store_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<()> {
        query("UPDATE services SET password_enc = $1 WHERE pk = $2")
            .bind(password_enc)
            .bind(service_pk)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    async fn set_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<bool> {
        let done = query(
            "UPDATE services SET password_enc = $1 WHERE pk = $2 AND power_state = 'RUNNING'",
        )
        .bind(password_enc)
        .bind(service_pk)
        .execute(self.db.write())
        .await?;
        Ok(done == 1)
    }

    async fn bind_live_service(&self, service: &NewLiveService) -> StoreResult<ServiceRecord> {
        let mut tx = self.db.begin().await?;
        if shared::service_id_used(
            &mut tx,
            Some(service.account_id),
            Mode::Live,
            &service.service_id,
        )
        .await?
        {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "service '{}' (the id was already given and is never reused)",
                service.service_id
            )));
        }
        // Conditional on the instance being free: of two binds of one
        // instance, the second waits for the first's row lock, then finds
        // it assigned.
        let Some(instance) = query(
            "UPDATE instances SET state = 'assigned', updated_at = $1 \
             WHERE id = $2 AND state = 'free' AND healthy = TRUE RETURNING node, engine_id",
        )
        .bind(service.now)
        .bind(service.instance_id)
        .row_opt(&mut tx)
        .await?
        else {
            tx.rollback().await?;
            return Err(StoreError::Conflict(
                "the instance is not free (assigned, out of service or missing)".into(),
            ));
        };
        let node: String = instance.get("node")?;
        let engine_id: String = instance.get("engine_id")?;
        let started_at = (service.power_state == PowerState::Running).then_some(service.now);
        let record: ServiceRecord = query(
            "INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state, \
             started_at, expires_at, created_at, node, instance_id) \
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
        .fetch_one(&mut tx)
        .await
        .map_err(|e| e.on_write(format!("service '{}'", service.service_id)))?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_services(&self, mode: Option<Mode>) -> StoreResult<Vec<ServiceListing>> {
        query(
            "SELECT s.*, a.name AS account_name FROM services s JOIN accounts a ON a.id = s.account_id \
             WHERE (CAST($1 AS TEXT) IS NULL OR s.mode = $1) \
             ORDER BY a.name COLLATE \"C\", s.mode COLLATE \"C\", s.service_id COLLATE \"C\"",
        )
        .bind(mode.map(Mode::as_str))
        .rows(self.db.read())
        .await?
        .iter()
        .map(|row| {
            Ok(ServiceListing {
                service: row.to::<ServiceRecord>()?,
                account_name: row.get("account_name")?,
            })
        })
        .collect()
    }

    async fn page_services(
        &self,
        scope: Scope,
        service_type: Option<ServiceType>,
        power: Option<PowerState>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<ServiceRecord>, u64)> {
        const FILTER: &str = "WHERE account_id = $1 AND mode = $2 \
             AND (CAST($3 AS TEXT) IS NULL OR service_type = $3) \
             AND (CAST($4 AS TEXT) IS NULL OR power_state = $4)";
        let type_filter = service_type.map(ServiceType::as_str);
        let power_filter = power.map(PowerState::as_str);
        let total: i64 = query(format!("SELECT COUNT(*) FROM services {FILTER}"))
            .bind(scope.account_id)
            .bind(scope.mode.as_str())
            .bind(type_filter)
            .bind(power_filter)
            .scalar(self.db.read())
            .await?;
        // Past the end needs no query, and keeps huge offsets out of OFFSET.
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let services = query(format!(
            "SELECT * FROM services {FILTER} ORDER BY service_id COLLATE \"C\" LIMIT $5 OFFSET $6"
        ))
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .bind(type_filter)
        .bind(power_filter)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(self.db.read())
        .await?;
        Ok((services, total as u64))
    }

    async fn remove_service(&self, service_pk: i64, instance_state: &str) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "SELECT instance_id, account_id, mode, product_id FROM services WHERE pk = $1{}",
            tx.dialect().lock_for_delete()
        );
        let Some(row) = query(sql).bind(service_pk).row_opt(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        let instance_id: Option<i64> = row.get("instance_id")?;
        let account_id: i64 = row.get("account_id")?;
        let mode: Mode = row.parse("mode")?;
        let product_id: Option<String> = row.get("product_id")?;
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
        let done = query(
            "UPDATE services SET op_lock = $1, op_lock_until = $2 WHERE pk = $3 \
             AND power_state NOT IN ('REBUILDING', 'PROVISIONING') \
             AND (op_lock IS NULL OR op_lock_until <= $4)",
        )
        .bind(token)
        .bind(now + ttl_ms)
        .bind(service_pk)
        .bind(now)
        .execute(self.db.write())
        .await?;
        Ok(if done == 1 {
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
        let Some((state, started_at)) = power else {
            query(
                "UPDATE services SET op_lock = NULL, op_lock_until = NULL \
                 WHERE pk = $1 AND op_lock = $2",
            )
            .bind(service_pk)
            .bind(token)
            .execute(self.db.write())
            .await?;
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "SELECT power_state FROM services WHERE pk = $1 AND op_lock = $2{}",
            tx.dialect().lock_rows()
        );
        let before: Option<String> = query(sql)
            .bind(service_pk)
            .bind(token)
            .scalar_opt(&mut tx)
            .await?;
        query(
            "UPDATE services SET op_lock = NULL, op_lock_until = NULL, power_state = $1, \
             started_at = $2 WHERE pk = $3 AND op_lock = $4",
        )
        .bind(state.as_str())
        .bind(started_at)
        .bind(service_pk)
        .bind(token)
        .execute(&mut tx)
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
        tx.commit().await?;
        Ok(())
    }

    async fn services_to_suspend(&self, now: i64, limit: i64) -> StoreResult<Vec<ServiceRecord>> {
        query(
            "SELECT * FROM services WHERE expires_at <= $1 AND power_state IN ('RUNNING', 'STOPPED') \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.db.read())
        .await
    }

    async fn services_to_terminate(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<ServiceRecord>> {
        query(
            "SELECT * FROM services WHERE expires_at <= $1 AND power_state = 'SUSPENDED' \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.db.read())
        .await
    }

    async fn suspend_service(&self, service_pk: i64) -> StoreResult<bool> {
        let now = advps_domain::time::now_millis();
        let mut tx = self.db.begin().await?;
        // The lock re-checks the condition on the row's newest version, so
        // of two suspenders (two instances' expiry sweeps) one suspends and
        // emits the event.
        let sql = format!(
            "SELECT power_state FROM services WHERE pk = $1 AND power_state IN ('RUNNING', 'STOPPED') \
             AND (op_lock IS NULL OR op_lock_until <= $2){}",
            tx.dialect().lock_rows()
        );
        let before: Option<String> = query(sql)
            .bind(service_pk)
            .bind(now)
            .scalar_opt(&mut tx)
            .await?;
        let Some(before) = before else {
            tx.rollback().await?;
            return Ok(false);
        };
        query("UPDATE services SET power_state = 'SUSPENDED', started_at = NULL WHERE pk = $1")
            .bind(service_pk)
            .execute(&mut tx)
            .await?;
        emit_power_changed(&mut tx, service_pk, &before, "SUSPENDED", now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_service_expiry(&self, service_pk: i64, expires_at: i64) -> StoreResult<()> {
        query("UPDATE services SET expires_at = $1 WHERE pk = $2")
            .bind(expires_at)
            .bind(service_pk)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    async fn claim_mac_reset(
        &self,
        service_pk: i64,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<Result<(), i64>> {
        let done = query(
            "UPDATE services SET last_mac_reset = $1 WHERE pk = $2 \
             AND (last_mac_reset IS NULL OR last_mac_reset <= $3)",
        )
        .bind(now)
        .bind(service_pk)
        .bind(now - interval_ms)
        .execute(self.db.write())
        .await?;
        if done == 1 {
            return Ok(Ok(()));
        }
        let last: Option<i64> = query("SELECT last_mac_reset FROM services WHERE pk = $1")
            .bind(service_pk)
            .scalar(self.db.read())
            .await?;
        Ok(Err(last.unwrap_or(now) + interval_ms))
    }

    async fn set_service_mac(&self, service_pk: i64, mac: &str) -> StoreResult<()> {
        query("UPDATE services SET mac = $1 WHERE pk = $2")
            .bind(mac)
            .bind(service_pk)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    async fn restore_mac_reset(&self, service_pk: i64, previous: Option<i64>) -> StoreResult<()> {
        query("UPDATE services SET last_mac_reset = $1 WHERE pk = $2")
            .bind(previous)
            .bind(service_pk)
            .execute(self.db.write())
            .await?;
        Ok(())
    }
}
