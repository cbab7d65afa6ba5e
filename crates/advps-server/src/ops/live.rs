//! The live side of the service layer: operations carried out on the
//! service's node through its driver.
//!
//! A synchronous engine call (start, stop, reboot, address, password) runs
//! under the service's short operation lock, so it cannot overlap a rebuild
//! or another call on the same service, even from another process; a
//! rebuild becomes a task for the worker.

use std::sync::Arc;
use std::time::Duration;

use advps_domain::{ids, time, Mode, OsType, PowerState, TaskKind};
use advps_drivers::{AddressConfig, Driver, DriverError, PowerOutcome, PowerStatus, StopMode};
use advps_store::{
    LockOutcome, MonthlyLimit, NewTask, Scope, ServiceRecord, StartTask, TaskRecord,
};

use super::{Operations, OpsError, StatusView, SERVICE_NOT_FOUND};
use crate::tasks::LiveRebuildParams;

/// How long a synchronous engine call may hold a service.
const LOCK_TTL_MS: i64 = 180_000;

impl Operations {
    pub(super) async fn driver_for(
        &self,
        service: &ServiceRecord,
        action: &str,
    ) -> Result<Arc<dyn Driver>, OpsError> {
        let node = service.node.as_deref().unwrap_or_default();
        self.drivers.for_node(node).await.map_err(|e| {
            tracing::warn!(node, error = %e, "node unavailable");
            OpsError::driver(action, e)
        })
    }

    async fn lock(&self, service: &ServiceRecord) -> Result<String, OpsError> {
        self.lock_for(service, LOCK_TTL_MS).await
    }

    async fn lock_for(&self, service: &ServiceRecord, ttl_ms: i64) -> Result<String, OpsError> {
        let token = ids::task_id();
        match self
            .store
            .lock_service(service.pk, &token, time::now_millis(), ttl_ms)
            .await?
        {
            LockOutcome::Locked => Ok(token),
            LockOutcome::Busy => Err(self.busy(service).await),
        }
    }

    /// Start, stop or reboot on the engine; `to` is the state it leads to,
    /// `mode` how a stop or reboot treats the guest.
    pub(super) async fn live_power(
        &self,
        service: ServiceRecord,
        to: PowerState,
        from: PowerState,
        mode: StopMode,
        action: &str,
    ) -> Result<(ServiceRecord, PowerOutcome), OpsError> {
        let driver = self.driver_for(&service, action).await?;
        // A long graceful timeout must not outlive the lock that keeps other
        // calls off the service meanwhile.
        let ttl_ms = match mode {
            StopMode::Graceful { timeout } => {
                LOCK_TTL_MS.max((timeout.as_secs() as i64 + 120).saturating_mul(1000))
            }
            StopMode::Force => LOCK_TTL_MS,
        };
        let token = self.lock_for(&service, ttl_ms).await?;
        let instance = service.vmid.as_str();
        let result = match (from, to) {
            (PowerState::Stopped, PowerState::Running) => driver
                .start(instance)
                .await
                .map(|()| PowerOutcome::Graceful),
            (PowerState::Running, PowerState::Stopped) => {
                driver.stop_with_outcome(instance, mode).await
            }
            _ => driver.reboot_with_mode(instance, mode).await,
        };
        let now = time::now_millis();
        let recorded = match &result {
            Ok(_) => Some((to, (to == PowerState::Running).then_some(now))),
            Err(DriverError::AlreadyRunning) => Some((PowerState::Running, service.started_at)),
            Err(DriverError::NotRunning) => Some((PowerState::Stopped, None)),
            Err(_) => None,
        };
        self.store
            .unlock_service(service.pk, &token, recorded)
            .await?;
        match result {
            Ok(outcome) => {
                if to == PowerState::Running && from == PowerState::Stopped {
                    // Off the answer's path: the guest normally brings its
                    // address up by itself while it boots.
                    let (ops, service, driver) =
                        (self.clone(), service.clone(), Arc::clone(&driver));
                    tokio::spawn(
                        async move { ops.ensure_address(&service, driver.as_ref()).await },
                    );
                }
                Ok((
                    ServiceRecord {
                        power_state: to,
                        started_at: recorded.and_then(|r| r.1),
                        ..service
                    },
                    outcome,
                ))
            }
            Err(DriverError::AlreadyRunning) => Err(OpsError::Failed(format!(
                "Failed to {action}: service is already running"
            ))),
            Err(DriverError::NotRunning) => Err(OpsError::Failed(format!(
                "Failed to {action}: {}",
                if to == PowerState::Stopped {
                    "service is already stopped"
                } else {
                    "service is not running"
                }
            ))),
            Err(e) => {
                self.metrics.driver_error(driver.name());
                tracing::warn!(service = %service.service_id, error = %e, "engine call failed");
                Err(OpsError::driver(action, e))
            }
        }
    }

    /// After a start, puts the service's address back on the guest if the
    /// guest came up without it (an address allocated while it was stopped).
    async fn ensure_address(&self, service: &ServiceRecord, driver: &dyn Driver) {
        let Ok(Some(lease)) = self.store.service_address(service.pk).await else {
            return;
        };
        let Some(config) = address_config(&lease) else {
            return;
        };
        // Give the guest's own network configuration time to apply it
        // while it boots; configure it only if it does not. A VM whose
        // agent does not answer yet (no measurable uptime) is still booting:
        // it gets up to two minutes before it counts as booted.
        let booting_until = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut looks = 0;
        while looks < 10 {
            match driver.status(&service.vmid).await {
                Ok(status) if status.addresses.contains(&config.address) => return,
                Ok(status) if status.power != advps_drivers::PowerStatus::Running => return,
                Ok(status)
                    if status.uptime_secs.is_none()
                        && tokio::time::Instant::now() < booting_until => {}
                Ok(_) => looks += 1,
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for _ in 0..5 {
            if driver
                .configure_address(&service.vmid, &config)
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::warn!(service = %service.service_id, "the guest did not take its address after a start");
    }

    pub(super) async fn live_status(&self, service: ServiceRecord) -> StatusView {
        let fallback_ip = service.ip.clone();
        // A task's state, or a suspension, is advps's to report, not the engine's.
        let busy = service.power_state.is_busy() || service.power_state == PowerState::Suspended;
        let live = match self.driver_for(&service, "read status").await {
            Ok(driver) => driver
                .status(&service.vmid)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match live {
            Ok(status) => {
                let running_status = if busy {
                    service.power_state.as_str().to_string()
                } else {
                    match &status.power {
                        PowerStatus::Running => "RUNNING".to_string(),
                        PowerStatus::Stopped => "STOPPED".to_string(),
                        PowerStatus::Other(s) => s.to_ascii_uppercase(),
                    }
                };
                let vm_status = if busy {
                    service.power_state.lower().to_string()
                } else {
                    status.power.lower().to_string()
                };
                StatusView {
                    running_status,
                    vm_status,
                    uptime: status.uptime_secs.map(|u| u as i64),
                    ip: fallback_ip.or_else(|| status.addresses.first().map(|a| a.to_string())),
                    service,
                }
            }
            Err(error) => {
                // The engine did not answer: report what is known, and say so.
                tracing::warn!(service = %service.service_id, %error, "live status unavailable");
                StatusView {
                    running_status: service.power_state.as_str().to_string(),
                    vm_status: "unknown".to_string(),
                    uptime: Some(0),
                    ip: fallback_ip,
                    service,
                }
            }
        }
    }

    pub(super) async fn live_configure_ip(
        &self,
        service: &ServiceRecord,
    ) -> Result<String, OpsError> {
        let action = "configure IP";
        let driver = self.driver_for(service, action).await?;
        let token = self.lock(service).await?;
        let node = service.node.as_deref().unwrap_or_default();
        let had = self.store.service_address(service.pk).await?;
        let lease = match had.clone() {
            Some(lease) => lease,
            None => match self
                .store
                .allocate_address(service.pk, node, time::now_millis())
                .await?
            {
                Some(lease) => lease,
                None => {
                    self.store.unlock_service(service.pk, &token, None).await?;
                    return Err(OpsError::Failed(
                        "Failed to configure IP: no free address in the node's IP pools".into(),
                    ));
                }
            },
        };
        let result = match address_config(&lease) {
            Some(config) => driver.configure_address(&service.vmid, &config).await,
            None => Err(DriverError::Engine(format!(
                "stored address '{}' is not IPv4",
                lease.address
            ))),
        };
        if result.is_err() && had.is_none() {
            // Not configured: the address goes back to the pool.
            self.store.release_addresses(service.pk).await?;
        }
        self.store.unlock_service(service.pk, &token, None).await?;
        match result {
            Ok(()) => Ok(lease.address),
            Err(DriverError::NotRunning) => Err(OpsError::Failed(
                "Failed to configure IP: service is not running".into(),
            )),
            Err(e) => {
                self.metrics.driver_error(driver.name());
                tracing::warn!(service = %service.service_id, error = %e, "address configuration failed");
                Err(OpsError::driver("configure IP", e))
            }
        }
    }

    pub(super) async fn live_generate_password(
        &self,
        service: &ServiceRecord,
    ) -> Result<String, OpsError> {
        let action = "generate password";
        let driver = self.driver_for(service, action).await?;
        let token = self.lock(service).await?;
        let password = advps_domain::password::generate();
        let result = driver
            .set_password(&service.vmid, &service.login_name(), &password)
            .await;
        let stored = match &result {
            Ok(()) => self
                .store
                .set_password(service.pk, &self.cipher.encrypt(&password))
                .await
                .map(|_| ()),
            Err(_) => Ok(()),
        };
        let recorded = match &result {
            Err(DriverError::NotRunning) => Some((PowerState::Stopped, None)),
            _ => None,
        };
        self.store
            .unlock_service(service.pk, &token, recorded)
            .await?;
        stored?;
        match result {
            Ok(()) => Ok(password),
            Err(DriverError::NotRunning) => Err(OpsError::invalid(
                "Service must be running before generating a password",
            )),
            Err(e) => {
                self.metrics.driver_error(driver.name());
                tracing::warn!(service = %service.service_id, error = %e, "password change failed");
                Err(OpsError::driver("generate password", e))
            }
        }
    }

    pub(super) async fn live_rebuild(
        &self,
        scope: Scope,
        service: &ServiceRecord,
        os: &str,
    ) -> Result<TaskRecord, OpsError> {
        let images = self.store.os_images_by_slug(os).await?;
        if images.is_empty() {
            return Err(OpsError::invalid(super::INVALID_OS));
        }
        let family = OsType::for_service(service.service_type);
        let node = service.node.as_deref().unwrap_or_default();
        // A node's own mapping wins over the one for every node.
        let image = images
            .iter()
            .filter(|i| i.os_type == family)
            .find(|i| i.node.as_deref() == Some(node))
            .or_else(|| {
                images
                    .iter()
                    .find(|i| i.os_type == family && i.node.is_none())
            })
            .ok_or_else(|| {
                OpsError::Failed("No OS templates available for the selected OS".into())
            })?;
        let now = time::now_millis();
        let params = serde_json::to_string(&LiveRebuildParams {
            os: image.slug.clone(),
            os_name: image.name.clone(),
            image: image.image.clone(),
            username: Some(image.login_name()),
        })?;
        let task = NewTask {
            id: ids::task_id(),
            scope,
            service_pk: service.pk,
            kind: TaskKind::Rebuild,
            params,
            busy_state: PowerState::Rebuilding,
            now,
            due_at: None,
        };
        let limit = MonthlyLimit {
            max: self.config.live_rebuild_limit,
            since: time::month_start_millis(now),
        };
        debug_assert_eq!(scope.mode, Mode::Live);
        let started = self.store.start_service_task(&task, Some(limit)).await?;
        match started {
            StartTask::Started(record) => {
                self.wake.notify_one();
                Ok(*record)
            }
            StartTask::Busy(task_id) => Err(OpsError::Busy { task_id }),
            StartTask::LimitReached => {
                Err(OpsError::Forbidden("Monthly rebuild limit reached".into()))
            }
            StartTask::NotReady(state) => Err(OpsError::Failed(format!(
                "Failed to rebuild service: service is {}",
                state.lower()
            ))),
            StartTask::NotFound => Err(OpsError::NotFound(SERVICE_NOT_FOUND)),
        }
    }
}

impl Operations {
    pub(super) async fn live_reset_mac(&self, service: &ServiceRecord) -> Result<String, OpsError> {
        let action = "reset MAC address";
        let driver = self.driver_for(service, action).await?;
        let token = self.lock(service).await?;
        let mac = super::selling::random_mac();
        let result = driver.set_mac(&service.vmid, &mac).await;
        self.store.unlock_service(service.pk, &token, None).await?;
        result.map(|()| mac).map_err(|e| {
            self.metrics.driver_error(driver.name());
            tracing::warn!(service = %service.service_id, error = %e, "MAC reset failed");
            OpsError::driver(action, e)
        })
    }
}

pub fn address_config(lease: &advps_store::AddressLease) -> Option<AddressConfig> {
    Some(AddressConfig {
        address: lease.address.parse().ok()?,
        prefix: lease.prefix,
        gateway: lease.gateway.parse().ok(),
    })
}
