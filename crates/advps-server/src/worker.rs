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
use advps_drivers::{AddressConfig, DriverError, PowerStatus, RebuildRequest, StepOutcome};
use advps_store::{Scope, Store, TaskFinish, TaskRecord};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::drivers::DriverRegistry;
use crate::secrets::Cipher;

/// How many times a task may be claimed before it is failed.
pub const MAX_ATTEMPTS: i64 = 5;
/// Tries of one step when the engine does not answer.
const STEP_TRIES: u32 = 3;

/// Parameters stored with a live rebuild.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LiveRebuildParams {
    pub os: String,
    pub os_name: String,
    pub image: String,
}

#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub drivers: Arc<DriverRegistry>,
    pub cipher: Cipher,
    /// This worker's name in leases.
    pub owner: String,
    pub lease: Duration,
    pub wake: Arc<Notify>,
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
        let outcome = match task.kind {
            TaskKind::Rebuild => self.rebuild(&task).await,
        };
        heartbeat.abort();
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
                        os: Some((params.os.clone(), params.os_name.clone())),
                        owner: Some(self.owner.clone()),
                    };
                    if let Err(e) = self.store.finish_task(&task.id, &finish).await {
                        tracing::error!(task = %task.id, error = %e, "could not record the task's completion");
                    }
                    tracing::info!(task = %task.id, "rebuild completed");
                    return Ok(());
                }
                Err(e) => {
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

/// A driver error in words fit for a client.
pub fn describe(error: &DriverError) -> String {
    match error {
        DriverError::NotFound => "the machine was not found on its node".into(),
        DriverError::Timeout(_) => "the hypervisor did not answer in time".into(),
        DriverError::Unreachable(_) => "the hypervisor is not reachable".into(),
        other => other.to_string(),
    }
}
