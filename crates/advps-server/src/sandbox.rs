//! The sandbox's simulated work: a rebuild "runs" for the configured time
//! and then finishes, as a real one would, without touching any machine.
//!
//! A simulated task is a row with a due time. Whoever looks at it after that
//! time (a poll, a status read, or the background sweeper) finishes it; the
//! store lets only the first of them apply the outcome, so a restart or two
//! concurrent polls never finish a task twice.

use std::sync::Arc;
use std::time::Duration;

use advps_domain::{sandbox, task, time, PowerState, TaskKind, TaskStatus};
use advps_store::{InstalledOs, Scope, Store, StoreResult, TaskFinish, TaskRecord};

use crate::ops::selling::ProvisionParams;

/// Parameters stored with a sandbox rebuild.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RebuildParams {
    pub os: String,
}

/// What a simulated task looks like at `now`: stored state when finished,
/// otherwise status and progress from the elapsed time.
pub fn observed(task: &TaskRecord, now: i64) -> (TaskStatus, u8) {
    if task.status.is_terminal() {
        return (task.status, task.progress.clamp(0, 100) as u8);
    }
    match task.due_at {
        Some(due) => task::simulated_progress(now - task.created_at, due - task.created_at),
        None => (task.status, task.progress.clamp(0, 100) as u8),
    }
}

/// The outcome of a simulated rebuild whose time is up.
pub fn outcome(task: &TaskRecord, now: i64) -> TaskFinish {
    let finished_at = task.due_at.unwrap_or(now).min(now);
    let os = serde_json::from_str::<RebuildParams>(&task.params)
        .map(|p| p.os)
        .unwrap_or_default();
    let previous = task.prev_state.unwrap_or(PowerState::Running);
    if os == sandbox::FAILING_OS {
        // The machine comes back as it was; a running one has just rebooted.
        let started_at = (previous == PowerState::Running).then_some(finished_at);
        return TaskFinish {
            status: TaskStatus::Failed,
            error: Some(format!(
                "Rebuild failed: the sandbox OS \"{}\" simulates a failed installation; the service was left as it was",
                sandbox::FAILING_OS
            )),
            now,
            power_state: previous,
            started_at,
            os: None,
            owner: None,
        };
    }
    let name = sandbox::os_image(&os)
        .map(|o| o.name.to_string())
        .unwrap_or_else(|| os.clone());
    let username = advps_domain::os::default_username(&os, &name).to_string();
    TaskFinish {
        status: TaskStatus::Completed,
        error: None,
        now,
        power_state: PowerState::Running,
        started_at: Some(finished_at),
        os: Some(InstalledOs {
            slug: os,
            name,
            username,
        }),
        owner: None,
    }
}

/// Finishes `task` if it is a sandbox task whose time is up. True when this
/// call (or an earlier one) finished it.
pub async fn settle(store: &dyn Store, task: &TaskRecord, now: i64) -> StoreResult<bool> {
    if task.status.is_terminal() {
        return Ok(true);
    }
    match task.due_at {
        Some(due) if due <= now && task.mode == advps_domain::Mode::Test => {
            match task.kind {
                TaskKind::Rebuild => {
                    store.finish_task(&task.id, &outcome(task, now)).await?;
                }
                TaskKind::Provision => settle_provision(store, task, due.min(now), now).await?,
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Ends simulated provisioning: the service comes up, and the order is
/// completed when it was the last one; or, for the failure simulation, the
/// whole order fails and is refunded.
async fn settle_provision(
    store: &dyn Store,
    task: &TaskRecord,
    finished_at: i64,
    now: i64,
) -> StoreResult<()> {
    let scope = Scope {
        account_id: task.account_id,
        mode: task.mode,
    };
    let Some(order_id) = store
        .find_service(scope, &task.service_id)
        .await?
        .and_then(|s| s.order_id)
    else {
        return Ok(());
    };
    let failing = serde_json::from_str::<ProvisionParams>(&task.params)
        .map(|p| p.os == sandbox::FAILING_OS)
        .unwrap_or(false);
    if failing {
        let message = format!(
            "Provisioning failed: the sandbox remark \"{}\" simulates a failed installation; the order was refunded",
            sandbox::FAILING_OS
        );
        store.fail_order(&order_id, &message, &[], now).await?;
        return Ok(());
    }
    let finish = TaskFinish {
        status: TaskStatus::Completed,
        error: None,
        now,
        power_state: PowerState::Running,
        started_at: Some(finished_at),
        os: None,
        owner: None,
    };
    if store.finish_task(&task.id, &finish).await? {
        store.settle_order(&order_id, now).await?;
    }
    Ok(())
}

/// Finishes due sandbox tasks in the background, so that a service whose
/// owner stopped polling still comes back from its rebuild on time.
pub async fn sweep(
    store: Arc<dyn Store>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = time::now_millis();
        match store.due_sandbox_tasks(now, 200).await {
            Ok(tasks) => {
                for task in tasks {
                    if let Err(e) = settle(store.as_ref(), &task, now).await {
                        tracing::warn!(task = %task.id, error = %e, "could not finish sandbox task");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read due sandbox tasks"),
        }
    }
}
