//! Which services may have a console opened on them, and opening one: a
//! simulated shell for the sandbox, the engine's console for live services.

use advps_domain::{Mode, PowerState};
use advps_drivers::{ConsoleStream, DriverError, PowerStatus, TerminalSize};
use advps_store::{Scope, ServiceRecord};

use super::{Operations, OpsError};
use crate::console::{self, SimulatedMachine};

/// The 400 for a console on a service that is not running.
pub const CONSOLE_NOT_RUNNING: &str = "Service must be running to open a console";

impl Operations {
    /// The caller's service, if a console may be opened on it now: 404 for
    /// none, 409 while a task holds it, 403 when suspended, 400 when it is
    /// not running.
    pub async fn console_target(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> Result<ServiceRecord, OpsError> {
        let service = self.service(scope, service_id).await?;
        self.usable(&service).await?;
        if service.power_state != PowerState::Running {
            return Err(OpsError::invalid(CONSOLE_NOT_RUNNING));
        }
        if service.mode == Mode::Live && self.stopped_on_engine(&service).await {
            return Err(OpsError::invalid(CONSOLE_NOT_RUNNING));
        }
        Ok(service)
    }

    /// Whether the engine says the machine is stopped: the stored state lags
    /// a guest shut down from inside or behind advps's back, and a URL handed
    /// out for it would only give a WebSocket that fails. An engine that does
    /// not answer is not taken for a stopped machine.
    async fn stopped_on_engine(&self, service: &ServiceRecord) -> bool {
        let Some(node) = service.node.as_deref() else {
            return false;
        };
        let Ok(driver) = self.drivers.for_node(node).await else {
            return false;
        };
        matches!(
            driver.status(&service.vmid).await,
            Ok(status) if status.power == PowerStatus::Stopped
        )
    }

    /// Opens the service's text console at `size`.
    pub async fn open_console(
        &self,
        service: &ServiceRecord,
        size: TerminalSize,
    ) -> Result<ConsoleStream, OpsError> {
        if service.mode == Mode::Test {
            return Ok(console::simulated(
                SimulatedMachine {
                    service_id: service.service_id.clone(),
                    os_name: service.os_name.clone(),
                    started_at: service.started_at,
                },
                size,
            ));
        }
        let failed = |e: DriverError| match e {
            DriverError::NotRunning => OpsError::invalid(CONSOLE_NOT_RUNNING),
            e => {
                tracing::warn!(service = %service.service_id, error = %e, "console not opened");
                OpsError::driver("open console", e)
            }
        };
        let node = service.node.as_deref().unwrap_or_default();
        let driver = self.drivers.for_node(node).await.map_err(failed)?;
        driver.console(&service.vmid, size).await.map_err(failed)
    }
}
