//! The durable task worker: runs live tasks (rebuilds) step by step.
//!
//! A task is claimed with a lease that the worker renews while it works.
//! After each step the step index and the driver's scratch state are saved,
//! so a worker that dies (or a server killed mid-task) leaves a task that
//! any worker claims again once the lease lapses, resuming at the step
//! after the last one saved. A task that keeps failing to finish is failed
//! after a few attempts; nothing stays `IN_PROGRESS` forever.

use std::sync::Arc;
use std::time::Duration;

use advps_domain::{time, PowerState, TaskKind, TaskStatus};
use advps_drivers::{
    AddressConfig, DriverError, PowerStatus, RebuildRequest, StepOutcome, StopMode,
};
use advps_store::{Scope, ServiceRecord, Store, TaskFinish, TaskRecord};

use crate::tasks::{LiveRebuildParams, ProvisionParams};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::drivers::{describe, DriverRegistry};
use crate::secrets::Cipher;

/// How many times a task may be claimed before it is failed.
pub const MAX_ATTEMPTS: i64 = 5;
/// Tries of one step when the engine does not answer.
const STEP_TRIES: u32 = 3;

#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub drivers: Arc<DriverRegistry>,
    pub cipher: Cipher,
    /// This worker's name in leases.
    pub owner: String,
    pub lease: Duration,
    pub wake: Arc<Notify>,
    /// Where task durations and failed engine calls are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Worker {
    /// Claims and runs tasks until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let now = time::now_millis();
                match self
                    .store
                    .claim_task(&self.owner, now, self.lease.as_millis() as i64)
                    .await
                {
                    Ok(Some(task)) => {
                        tokio::select! {
                            _ = self.run_task(task.clone()) => {}
                            _ = shutdown.changed() => {
                                // Hand the task back at once: the next start resumes it.
                                let _ = self.store.renew_lease(&task.id, &self.owner, time::now_millis()).await;
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim a task");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn run_task(&self, task: TaskRecord) {
        let task_id = task.id.clone();
        tracing::info!(task = %task_id, service = %task.service_id, attempt = task.attempts, "task claimed");
        let heartbeat = {
            let store = Arc::clone(&self.store);
            let owner = self.owner.clone();
            let lease = self.lease;
            let id = task_id.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let until = time::now_millis() + lease.as_millis() as i64;
                    match store.renew_lease(&id, &owner, until).await {
                        Ok(true) => {}
                        _ => return,
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        let outcome = match task.kind {
            TaskKind::Rebuild => self.rebuild(&task).await,
            TaskKind::Provision => {
                self.provision(&task).await;
                Ok(())
            }
        };
        heartbeat.abort();
        let result = match (
            &outcome,
            self.store
                .find_task(
                    Scope {
                        account_id: task.account_id,
                        mode: task.mode,
                    },
                    &task_id,
                )
                .await,
        ) {
            (Err(_), _) => "failed",
            (Ok(()), Ok(Some(t))) if t.status == TaskStatus::Failed => "failed",
            (Ok(()), Ok(Some(t))) if t.status == TaskStatus::Completed => "completed",
            _ => "interrupted",
        };
        self.metrics
            .task_finished(task.kind.as_str(), result, started.elapsed());
        if let Err(finish) = outcome {
            tracing::warn!(task = %task_id, error = ?finish.error, "task failed");
            if let Err(e) = self.store.finish_task(&task_id, &finish).await {
                tracing::error!(task = %task_id, error = %e, "could not record the task's failure");
            }
        }
    }

    fn failure(&self, message: String, power: PowerState) -> TaskFinish {
        TaskFinish {
            status: TaskStatus::Failed,
            error: Some(message),
            now: time::now_millis(),
            power_state: power,
            started_at: None,
            os: None,
            owner: Some(self.owner.clone()),
        }
    }

    /// Runs a rebuild from its saved step. `Err` carries the failure to record.
    async fn rebuild(&self, task: &TaskRecord) -> Result<(), TaskFinish> {
        let scope = Scope {
            account_id: task.account_id,
            mode: task.mode,
        };
        let service = match self.store.find_service(scope, &task.service_id).await {
            Ok(Some(service)) => service,
            Ok(None) => {
                return Err(self.failure(
                    "Rebuild failed: the service no longer exists".into(),
                    PowerState::Stopped,
                ))
            }
            Err(e) => {
                return Err(self.failure(
                    format!("Rebuild failed: storage error: {e}"),
                    PowerState::Stopped,
                ))
            }
        };
        if task.attempts > MAX_ATTEMPTS {
            return Err(self.failure(
                format!(
                    "Rebuild failed: gave up after {} interrupted attempts",
                    task.attempts - 1
                ),
                PowerState::Stopped,
            ));
        }
        let params: LiveRebuildParams = serde_json::from_str(&task.params).map_err(|e| {
            self.failure(
                format!("Rebuild failed: bad task parameters: {e}"),
                PowerState::Stopped,
            )
        })?;
        let node = service.node.clone().unwrap_or_default();
        let driver = self
            .drivers
            .for_node(&node)
            .await
            .map_err(|e| self.failure(format!("Rebuild failed: {e}"), PowerState::Stopped))?;
        let address = match self.store.service_address(service.pk).await {
            Ok(lease) => lease.and_then(|l| {
                Some(AddressConfig {
                    address: l.address.parse().ok()?,
                    prefix: l.prefix,
                    gateway: l.gateway.parse().ok(),
                })
            }),
            Err(e) => {
                return Err(self.failure(
                    format!("Rebuild failed: storage error: {e}"),
                    PowerState::Stopped,
                ))
            }
        };
        let password = service
            .password_enc
            .as_deref()
            .and_then(|enc| self.cipher.decrypt(enc).ok());
        let request = RebuildRequest {
            instance: service.vmid.clone(),
            image: params.image.clone(),
            address,
            password,
            // The new OS's login, which a rebuild to or from Windows changes.
            username: params.installed().username,
        };
        let steps = driver.rebuild_steps();
        let mut scratch: Value = serde_json::from_str(&task.scratch)
            .unwrap_or_else(|_| Value::Object(Default::default()));
        let mut step = task.step.max(0) as usize;
        loop {
            let name = steps.get(step).copied().unwrap_or("done");
            let mut tries = 0;
            let result = loop {
                tries += 1;
                match driver.rebuild_step(&request, step, &mut scratch).await {
                    Err(e) if e.is_transient() && tries < STEP_TRIES => {
                        tracing::warn!(task = %task.id, step = name, error = %e, "step failed, retrying");
                        tokio::time::sleep(Duration::from_secs(1 << tries)).await;
                    }
                    other => break other,
                }
            };
            match result {
                Ok(StepOutcome::Next) => {
                    step += 1;
                    let progress = ((step * 100) / steps.len().max(1)).clamp(1, 99) as i64;
                    let saved = self
                        .store
                        .record_step(
                            &task.id,
                            &self.owner,
                            step as i64,
                            &scratch.to_string(),
                            progress,
                            time::now_millis(),
                        )
                        .await;
                    if !matches!(saved, Ok(true)) {
                        tracing::warn!(task = %task.id, "lease lost; another worker takes the task over");
                        return Ok(());
                    }
                }
                Ok(StepOutcome::Done) => {
                    let now = time::now_millis();
                    let finish = TaskFinish {
                        status: TaskStatus::Completed,
                        error: None,
                        now,
                        power_state: PowerState::Running,
                        started_at: Some(now),
                        os: Some(params.installed()),
                        owner: Some(self.owner.clone()),
                    };
                    if let Err(e) = self.store.finish_task(&task.id, &finish).await {
                        tracing::error!(task = %task.id, error = %e, "could not record the task's completion");
                    }
                    tracing::info!(task = %task.id, "rebuild completed");
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.driver_error(driver.name());
                    let power = match driver.status(&request.instance).await {
                        Ok(status) if status.power == PowerStatus::Running => PowerState::Running,
                        _ => PowerState::Stopped,
                    };
                    return Err(self.failure(
                        format!("Rebuild failed at step '{name}': {}", describe(&e)),
                        power,
                    ));
                }
            }
        }
    }
}

impl Worker {
    /// Provisions one purchased service: installs the OS on its machine,
    /// gives it an address from the pool and a fresh root password, starts
    /// it, and completes the order when it was the last one. On failure the
    /// whole order fails: its machines are wiped back into inventory and the
    /// wallet is refunded.
    async fn provision(&self, task: &TaskRecord) {
        let scope = Scope {
            account_id: task.account_id,
            mode: task.mode,
        };
        let service = match self.store.find_service(scope, &task.service_id).await {
            Ok(Some(service)) => service,
            // The order failed meanwhile and took its services with it.
            _ => return,
        };
        let Some(order_id) = service.order_id.clone() else {
            return;
        };
        if let Err(message) = self.provision_steps(task, &service).await {
            tracing::warn!(task = %task.id, order = %order_id, %message, "provisioning failed");
            let states = self.wipe_order(&order_id).await;
            let borrowed: Vec<(i64, &str)> = states.iter().map(|(id, s)| (*id, *s)).collect();
            if let Err(e) = self
                .store
                .fail_order(&order_id, &message, &borrowed, time::now_millis())
                .await
            {
                tracing::error!(order = %order_id, error = %e, "could not record the order's failure");
            }
        }
    }

    async fn provision_steps(
        &self,
        task: &TaskRecord,
        service: &ServiceRecord,
    ) -> Result<(), String> {
        if task.attempts > MAX_ATTEMPTS {
            return Err(format!(
                "Provisioning failed: gave up after {} interrupted attempts",
                task.attempts - 1
            ));
        }
        let params: ProvisionParams = serde_json::from_str(&task.params)
            .map_err(|e| format!("Provisioning failed: bad task parameters: {e}"))?;
        let image = params
            .image
            .clone()
            .ok_or("Provisioning failed: no OS image is mapped for the selected OS")?;
        let node = service.node.clone().unwrap_or_default();
        let driver = self
            .drivers
            .for_node(&node)
            .await
            .map_err(|e| format!("Provisioning failed: {}", describe(&e)))?;
        let request = RebuildRequest {
            instance: service.vmid.clone(),
            image,
            address: None,
            password: None,
            username: service.login_name(),
        };
        let install = driver.rebuild_steps().len();
        // After the install: address, password, start.
        let total = install + 3;
        let mut scratch: Value = serde_json::from_str(&task.scratch)
            .unwrap_or_else(|_| Value::Object(Default::default()));
        let mut step = task.step.max(0) as usize;
        while step < total {
            let name = if step < install {
                driver.rebuild_steps()[step]
            } else {
                ["address", "password", "start"][step - install]
            };
            let mut tries = 0;
            let result: Result<(), DriverError> = loop {
                tries += 1;
                let attempt = if step < install {
                    driver
                        .rebuild_step(&request, step, &mut scratch)
                        .await
                        .map(|_| ())
                } else {
                    match name {
                        "address" => self.provision_address(service, driver.as_ref()).await,
                        "password" => {
                            let password = advps_domain::password::generate();
                            match driver
                                .set_password(&service.vmid, &service.login_name(), &password)
                                .await
                            {
                                Ok(()) => self
                                    .store
                                    .store_password(service.pk, &self.cipher.encrypt(&password))
                                    .await
                                    .map_err(|e| DriverError::Engine(e.to_string())),
                                Err(e) => Err(e),
                            }
                        }
                        _ => match driver.start(&service.vmid).await {
                            Ok(()) | Err(DriverError::AlreadyRunning) => Ok(()),
                            Err(e) => Err(e),
                        },
                    }
                };
                match attempt {
                    // A guest that has just started may not take commands yet.
                    Err(e) if (e.is_transient() || step >= install) && tries < STEP_TRIES + 5 => {
                        tracing::debug!(task = %task.id, step = name, error = %e, "step failed, retrying");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                    }
                    other => break other,
                }
            };
            result
                .map_err(|e| format!("Provisioning failed at step '{name}': {}", describe(&e)))?;
            step += 1;
            let progress = ((step * 100) / total).clamp(1, 99) as i64;
            let saved = self
                .store
                .record_step(
                    &task.id,
                    &self.owner,
                    step as i64,
                    &scratch.to_string(),
                    progress,
                    time::now_millis(),
                )
                .await;
            if !matches!(saved, Ok(true)) {
                // The lease went to another worker, or the order failed meanwhile.
                return Ok(());
            }
        }
        let now = time::now_millis();
        let finish = TaskFinish {
            status: TaskStatus::Completed,
            error: None,
            now,
            power_state: PowerState::Running,
            started_at: Some(now),
            os: None,
            owner: Some(self.owner.clone()),
        };
        if self
            .store
            .finish_task(&task.id, &finish)
            .await
            .unwrap_or(false)
        {
            if let Some(order_id) = &service.order_id {
                let _ = self.store.settle_order(order_id, now).await;
            }
            tracing::info!(task = %task.id, service = %service.service_id, "service provisioned");
        }
        Ok(())
    }

    async fn provision_address(
        &self,
        service: &ServiceRecord,
        driver: &dyn advps_drivers::Driver,
    ) -> Result<(), DriverError> {
        let node = service.node.clone().unwrap_or_default();
        let lease = self
            .store
            .allocate_address(service.pk, &node, time::now_millis())
            .await
            .map_err(|e| DriverError::Engine(e.to_string()))?
            .ok_or_else(|| {
                DriverError::Unsupported("no free address in the node's IP pools".into())
            })?;
        let config = AddressConfig {
            address: lease.address.parse().map_err(|_| {
                DriverError::Engine(format!("stored address '{}' is not IPv4", lease.address))
            })?,
            prefix: lease.prefix,
            gateway: lease.gateway.parse().ok(),
        };
        driver.configure_address(&service.vmid, &config).await
    }

    /// Reinstalls the machines of a failed order from their product's
    /// default OS so no customer data stays behind. Returns the inventory
    /// state each one goes back to: `free` when wiped, else `out_of_service`.
    async fn wipe_order(&self, order_id: &str) -> Vec<(i64, &'static str)> {
        let mut states = Vec::new();
        let Ok(services) = self.store.order_services(order_id).await else {
            return states;
        };
        for service in services {
            let Some(instance_id) = service.instance_id else {
                continue;
            };
            let wiped = wipe_machine(self.store.as_ref(), &self.drivers, &service).await;
            if let Err(e) = &wiped {
                tracing::warn!(instance = %service.vmid, error = %e, "could not wipe; taking it out of service");
            }
            states.push((
                instance_id,
                if wiped.is_ok() {
                    "free"
                } else {
                    "out_of_service"
                },
            ));
        }
        states
    }
}

/// Reinstalls a machine from its product's default OS so that nothing of
/// its last customer stays, and leaves it stopped.
pub async fn wipe_machine(
    store: &dyn Store,
    drivers: &DriverRegistry,
    service: &ServiceRecord,
) -> Result<(), String> {
    let product = service.product_id.clone().ok_or("no product")?;
    let product = store
        .find_product(service.mode, &product, None)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("unknown product")?;
    let slug = product.default_os.ok_or("the product has no default OS")?;
    let family = advps_domain::OsType::for_service(service.service_type);
    let image = store
        .os_images_by_slug(&slug)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|i| i.os_type == family && (i.node.is_none() || i.node == service.node))
        .ok_or("no image for the default OS")?;
    let driver = drivers
        .for_node(service.node.as_deref().unwrap_or_default())
        .await
        .map_err(|e| e.to_string())?;
    let request = RebuildRequest {
        instance: service.vmid.clone(),
        image: image.image.clone(),
        address: None,
        password: None,
        username: image.login_name(),
    };
    let mut scratch = Value::Object(Default::default());
    for step in 0..driver.rebuild_steps().len() {
        driver
            .rebuild_step(&request, step, &mut scratch)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = driver.stop(&service.vmid, StopMode::Force).await;
    Ok(())
}

/// The usage sampler: every interval, one round of
/// [`crate::ops::Operations::sample_round`] — each node's usage in one
/// engine call, the sandbox's from its simulation, then the history's
/// pruning. With several instances each node is sampled once per interval:
/// its round is taken in the store, and the others skip it.
pub struct Sampler {
    pub ops: crate::ops::Operations,
    /// This instance's name in the rounds it takes.
    pub owner: String,
    pub every: Duration,
}

impl Sampler {
    /// Longest a round may take before it is given up (its engine calls
    /// have their own deadlines; this bounds the whole).
    const ROUND_DEADLINE: Duration = Duration::from_secs(300);

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let round =
                tokio::time::timeout(Self::ROUND_DEADLINE, self.ops.sample_round(&self.owner));
            tokio::select! {
                result = round => match result {
                    Ok(Ok(report)) => tracing::debug!(
                        rounds = report.rounds,
                        engine_calls = report.engine_calls,
                        samples = report.samples,
                        "usage sampled"
                    ),
                    Ok(Err(e)) => tracing::warn!(error = %e, "usage round failed"),
                    Err(_) => tracing::warn!("usage round gave up after its deadline"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
