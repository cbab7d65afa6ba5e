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

use crate::tasks::{ProvisionParams, RebuildParams};

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

/// The simulated usage of a sandbox service at `now`, derived from what is
/// stored (its id, size and when it last started), so it is the same after a
/// restart and on every instance. Each service has its own level; CPU load
/// and traffic move in waves, and counters are the exact integrals of those
/// waves since the start, so they only grow while it runs and reset at the
/// next start, as engines' counters do. A stopped service uses nothing but
/// its disk.
pub fn usage(service: &advps_store::ServiceRecord, now: i64) -> advps_drivers::UsageReading {
    use std::f64::consts::TAU;
    // A fixed mix of the service's key: per-service figures that never change.
    let mut seed = (service.pk as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    seed = (seed ^ (seed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    seed = (seed ^ (seed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    seed ^= seed >> 31;
    let unit = |k: u32| ((seed >> (k * 8)) & 0xff) as f64 / 255.0;
    let container = service.service_type.is_container();
    let cores: u32 = if container { 1 } else { 2 };
    let ram_mb = service
        .ram_mb
        .filter(|mb| *mb > 0)
        .unwrap_or(if container { 2048 } else { 4096 }) as u64;
    let memory_total = ram_mb * 1024 * 1024;
    let disk_total: u64 = if container { 20 << 30 } else { 40 << 30 };
    let disk_used = (disk_total as f64 * (0.12 + 0.2 * unit(0))) as u64;
    let running = service.power_state == PowerState::Running;
    if !running {
        return advps_drivers::UsageReading {
            running,
            cores: Some(cores),
            cpu_time_ns: Some(0),
            cpu_fraction: None,
            memory_used: Some(0),
            memory_total: Some(memory_total),
            disk_used: Some(disk_used),
            disk_total: Some(disk_total),
            rx_bytes: Some(0),
            tx_bytes: Some(0),
        };
    }
    let up = ((now - service.started_at.unwrap_or(now)).max(0)) as f64 / 1000.0;
    // ∫₀ᵘ (base + a·sin(ωt + φ)) dt
    let wave_integral = |base: f64, a: f64, period: f64, phase: f64| {
        let w = TAU / period;
        base * up + a / w * (phase.cos() - (w * up + phase).cos())
    };
    let phase = |k: u32| unit(k) * TAU;
    let busy_seconds = wave_integral(0.10 + 0.25 * unit(1), 0.06, 600.0, phase(2))
        + wave_integral(0.0, 0.03, 47.0, phase(3));
    let memory_share = 0.25 + 0.2 * unit(4) + 0.05 * (TAU / 900.0 * up + phase(5)).sin();
    let rx_rate = 20_000.0 + 200_000.0 * unit(6);
    let rx = wave_integral(rx_rate, rx_rate * 0.5, 300.0, phase(7));
    let tx = wave_integral(rx_rate / 3.0, rx_rate / 6.0, 420.0, phase(2) + 1.0);
    advps_drivers::UsageReading {
        running,
        cores: Some(cores),
        cpu_time_ns: Some((busy_seconds.max(0.0) * f64::from(cores) * 1e9) as u64),
        cpu_fraction: None,
        memory_used: Some((memory_total as f64 * memory_share) as u64),
        memory_total: Some(memory_total),
        disk_used: Some(disk_used),
        disk_total: Some(disk_total),
        rx_bytes: Some(rx.max(0.0) as u64),
        tx_bytes: Some(tx.max(0.0) as u64),
    }
}
