//! Service lifetimes: at its expiry a service is stopped and suspended (its
//! mutating calls answer 403 until it is renewed); once the grace period
//! after expiry has passed it is terminated: its machine is wiped and
//! returned to inventory, its address to the pool, and the service removed,
//! so stock rises again.

use std::sync::Arc;
use std::time::Duration;

use advps_domain::{time, Mode};
use advps_drivers::StopMode;
use advps_store::{ServiceRecord, Store};
use tokio::sync::watch;

use crate::drivers::DriverRegistry;
use crate::worker::wipe_machine;

pub struct Expiry {
    pub store: Arc<dyn Store>,
    pub drivers: Arc<DriverRegistry>,
    pub every: Duration,
    pub grace_ms: i64,
}

impl Expiry {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.pass(time::now_millis()).await;
        }
    }

    /// One look at every service's expiry.
    pub async fn pass(&self, now: i64) {
        match self.store.services_to_suspend(now, 100).await {
            Ok(due) => {
                for service in due {
                    self.suspend(&service).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read expired services"),
        }
        match self
            .store
            .services_to_terminate(now - self.grace_ms, 100)
            .await
        {
            Ok(due) => {
                for service in due {
                    self.terminate(&service).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read services past their grace period"),
        }
    }

    async fn suspend(&self, service: &ServiceRecord) {
        if service.mode == Mode::Live {
            if let Ok(driver) = self
                .drivers
                .for_node(service.node.as_deref().unwrap_or_default())
                .await
            {
                let stopped = driver
                    .stop(
                        &service.vmid,
                        StopMode::Graceful {
                            timeout: Duration::from_secs(30),
                        },
                    )
                    .await;
                if let Err(e) = stopped {
                    if e != advps_drivers::DriverError::NotRunning {
                        // Try again on the next pass rather than suspend a running machine.
                        tracing::warn!(service = %service.service_id, error = %e, "could not stop an expired service");
                        return;
                    }
                }
            }
        }
        match self.store.suspend_service(service.pk).await {
            Ok(true) => {
                tracing::info!(service = %service.service_id, "service expired and suspended")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(service = %service.service_id, error = %e, "could not suspend")
            }
        }
    }

    async fn terminate(&self, service: &ServiceRecord) {
        let instance_state = if service.mode == Mode::Live && service.instance_id.is_some() {
            match wipe_machine(self.store.as_ref(), &self.drivers, service).await {
                Ok(()) => "free",
                Err(e) => {
                    tracing::warn!(service = %service.service_id, error = %e, "could not wipe; taking the machine out of service");
                    "out_of_service"
                }
            }
        } else {
            "free"
        };
        match self.store.remove_service(service.pk, instance_state).await {
            Ok(true) => {
                tracing::info!(service = %service.service_id, "service terminated after its grace period");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(service = %service.service_id, error = %e, "could not terminate")
            }
        }
    }
}
