//! The service layer: every operation of the API as the rules say it goes,
//! shared by the HTTP handlers and the background work. Handlers only turn
//! its results into envelopes. Operations take commands whose bodies the
//! typed edge has already checked, and answer with [`OpsError`], which the
//! edge maps to the API's error in one place.
//!
//! State changes are made with the store's conditional updates, so two
//! concurrent calls on one service cannot both win: the loser re-reads the
//! service and gets the error that its new state calls for.

mod console;
mod error;
pub use error::OpsError;
pub mod events;
mod keys;
pub use keys::issue_api_key;
mod live;
pub mod selling;
pub mod usage;

use std::sync::Arc;

use tokio::sync::Notify;

use advps_domain::{
    password, sandbox as catalogue, time, Mode, PageRequest, PowerState, TaskKind, TaskStatus,
    VmType,
};
use advps_store::{
    MonthlyLimit, NewTask, ProductStock, Scope, ServiceRecord, StartTask, Store, TaskRecord,
    UsageCounters,
};

use advps_drivers::{PowerOutcome, StopMode};

use crate::drivers::DriverRegistry;
use crate::sandbox;
use crate::secrets::Cipher;
use crate::tasks::RebuildParams;
use crate::Config;

const SERVICE_NOT_FOUND: &str = "Service not found or not accessible";
const TASK_NOT_FOUND: &str = "Task not found or not accessible";
const PRODUCT_NOT_FOUND: &str = "Product not found";

/// How long a guest gets to shut down before it is forced off, when the
/// client does not say.
/// The 400 of a rebuild without a usable OS.
pub const INVALID_OS: &str = "Missing or invalid os in request body";

pub const DEFAULT_GRACEFUL_SECS: u64 = 60;
/// Stop and reboot without a body: graceful, then forced after the default timeout.
pub const DEFAULT_POWER_MODE: StopMode = StopMode::Graceful {
    timeout: std::time::Duration::from_secs(DEFAULT_GRACEFUL_SECS),
};

#[derive(Clone)]
pub struct Operations {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    cipher: Cipher,
    drivers: Arc<DriverRegistry>,
    /// Wakes the task worker when a task is queued.
    wake: Arc<Notify>,
    /// Each service's last usage counters read by status in this process
    /// (see `usage`): bounded, and forgotten when idle.
    recent_counters: moka::sync::Cache<i64, UsageCounters>,
    /// Counts failed engine calls.
    metrics: Arc<crate::metrics::Metrics>,
}

/// What the status endpoint reports, whichever side the service is on.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub service: ServiceRecord,
    /// `runningStatus`: RUNNING, STOPPED or a transitional state.
    pub running_status: String,
    /// `vmStatus.status`: the live state in lower case, never empty.
    pub vm_status: String,
    /// Seconds since the guest started; `None` when the engine cannot
    /// measure it (a VM without a guest agent), never invented.
    pub uptime: Option<i64>,
    pub ip: Option<String>,
}

/// A task as a client sees it at one moment.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub task: TaskRecord,
    pub status: TaskStatus,
    pub progress: u8,
}

/// A page of products with the threshold that classifies their stock.
pub struct StockPage {
    pub products: Vec<ProductStock>,
    pub total: u64,
}

impl Operations {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        cipher: Cipher,
        drivers: Arc<DriverRegistry>,
        wake: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Operations {
        Operations {
            store,
            config,
            cipher,
            drivers,
            wake,
            recent_counters: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build(),
            metrics,
        }
    }

    /// The status of a service and its usage: simulated for the sandbox,
    /// measured on the engine for live services. The engine is asked for
    /// both at once, so a slow part (a VM whose guest agent stopped
    /// answering) costs its own bound, not the sum of both.
    pub async fn status(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> Result<(StatusView, usage::Measured), OpsError> {
        let service = self.service(scope, service_id).await?;
        if service.mode == Mode::Live {
            let (view, resources) =
                tokio::join!(self.live_status(service.clone()), self.resources(&service));
            return Ok((view, resources?));
        }
        let resources = self.resources(&service).await?;
        Ok((Self::sandbox_status(service), resources))
    }

    fn sandbox_status(service: ServiceRecord) -> StatusView {
        let uptime = match (service.power_state, service.started_at) {
            (PowerState::Running, Some(at)) => ((time::now_millis() - at) / 1000).max(0),
            _ => 0,
        };
        StatusView {
            running_status: service.power_state.as_str().to_string(),
            vm_status: service.power_state.lower().to_string(),
            uptime: Some(uptime),
            ip: service.ip.clone(),
            service,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Finds a service of the caller, first finishing any sandbox task on it
    /// whose time is up so the state read is current.
    pub async fn service(&self, scope: Scope, service_id: &str) -> Result<ServiceRecord, OpsError> {
        let service = self
            .store
            .find_service(scope, service_id)
            .await?
            .ok_or(OpsError::NotFound(SERVICE_NOT_FOUND))?;
        if !service.power_state.is_busy() {
            return Ok(service);
        }
        let Some(task) = self.store.active_task(service.pk).await? else {
            return Ok(service);
        };
        if sandbox::settle(self.store.as_ref(), &task, time::now_millis()).await? {
            return self
                .store
                .find_service(scope, service_id)
                .await?
                .ok_or(OpsError::NotFound(SERVICE_NOT_FOUND));
        }
        Ok(service)
    }

    /// Refuses a mutating call on a service that a task holds (409) or that
    /// has expired (403).
    async fn usable(&self, service: &ServiceRecord) -> Result<(), OpsError> {
        if service.power_state.is_busy() {
            return Err(self.busy(service).await);
        }
        if service.power_state == PowerState::Suspended {
            return Err(OpsError::Forbidden(
                "Service has expired and is suspended; renew it to use it again".into(),
            ));
        }
        Ok(())
    }

    /// The error for a service that a task holds.
    async fn busy(&self, service: &ServiceRecord) -> OpsError {
        let task_id = match self.store.active_task(service.pk).await {
            Ok(task) => task.map(|t| t.id),
            Err(_) => None,
        };
        OpsError::Busy { task_id }
    }

    /// Moves a service `from` → `to`, or explains why it could not; `mode`
    /// says how a stop or reboot treats the guest, and the outcome which path
    /// was taken.
    #[allow(clippy::too_many_arguments)]
    async fn power(
        &self,
        scope: Scope,
        service_id: &str,
        from: PowerState,
        to: PowerState,
        mode: StopMode,
        action: &str,
        wrong_state: &str,
    ) -> Result<(ServiceRecord, PowerOutcome), OpsError> {
        let service = self.service(scope, service_id).await?;
        self.usable(&service).await?;
        if service.mode == Mode::Live {
            return self.live_power(service, to, from, mode, action).await;
        }
        // Simulated guests always shut down when asked; forcing is immediate.
        let outcome = match mode {
            StopMode::Graceful { .. } => PowerOutcome::Graceful,
            StopMode::Force => PowerOutcome::Forced,
        };
        let now = time::now_millis();
        let started_at = (to == PowerState::Running).then_some(now);
        if self
            .store
            .transition_power(service.pk, from, to, started_at)
            .await?
        {
            return Ok((
                ServiceRecord {
                    power_state: to,
                    started_at,
                    ..service
                },
                outcome,
            ));
        }
        let current = self.service(scope, service_id).await?;
        if current.power_state.is_busy() {
            return Err(self.busy(&current).await);
        }
        Err(OpsError::Failed(format!(
            "Failed to {action}: {wrong_state}"
        )))
    }

    pub async fn start(&self, scope: Scope, service_id: &str) -> Result<ServiceRecord, OpsError> {
        self.power(
            scope,
            service_id,
            PowerState::Stopped,
            PowerState::Running,
            DEFAULT_POWER_MODE,
            "start service",
            "service is already running",
        )
        .await
        .map(|(service, _)| service)
    }

    pub async fn stop(
        &self,
        scope: Scope,
        service_id: &str,
        mode: StopMode,
    ) -> Result<(ServiceRecord, PowerOutcome), OpsError> {
        self.power(
            scope,
            service_id,
            PowerState::Running,
            PowerState::Stopped,
            mode,
            "stop service",
            "service is already stopped",
        )
        .await
    }

    pub async fn reboot(
        &self,
        scope: Scope,
        service_id: &str,
        mode: StopMode,
    ) -> Result<(ServiceRecord, PowerOutcome), OpsError> {
        self.power(
            scope,
            service_id,
            PowerState::Running,
            PowerState::Running,
            mode,
            "reboot service",
            "service is not running",
        )
        .await
    }

    /// Configures (or returns the already configured) address of a VPS.
    pub async fn configure_ip(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> Result<(ServiceRecord, String), OpsError> {
        let service = self.service(scope, service_id).await?;
        if !service.service_type.supports_ip_configuration() {
            return Err(OpsError::invalid(
                "IP configuration not supported for this service type",
            ));
        }
        self.usable(&service).await?;
        if service.mode == Mode::Live {
            let ip = self.live_configure_ip(&service).await?;
            return Ok((service, ip));
        }
        let candidate = service
            .ip
            .clone()
            .or_else(|| service.reserved_ip.clone())
            .ok_or_else(|| {
                OpsError::Failed("Failed to configure IP: no address is available".into())
            })?;
        match self.store.assign_ip(service.pk, &candidate).await? {
            Some(ip) => Ok((service, ip)),
            None => {
                let current = self.service(scope, service_id).await?;
                Err(self.busy(&current).await)
            }
        }
    }

    pub async fn generate_password(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> Result<(ServiceRecord, String), OpsError> {
        let service = self.service(scope, service_id).await?;
        self.usable(&service).await?;
        if service.mode == Mode::Live {
            let password = self.live_generate_password(&service).await?;
            return Ok((service, password));
        }
        if service.power_state != PowerState::Running {
            return Err(OpsError::invalid(
                "Service must be running before generating a password",
            ));
        }
        let password = password::generate();
        if self
            .store
            .set_password(service.pk, &self.cipher.encrypt(&password))
            .await?
        {
            return Ok((service, password));
        }
        let current = self.service(scope, service_id).await?;
        if current.power_state.is_busy() {
            return Err(self.busy(&current).await);
        }
        Err(OpsError::invalid(
            "Service must be running before generating a password",
        ))
    }

    /// Starts a rebuild and returns its task.
    pub async fn rebuild(
        &self,
        scope: Scope,
        service_id: &str,
        os: advps_domain::OsChoice,
    ) -> Result<(ServiceRecord, TaskRecord), OpsError> {
        let service = self.service(scope, service_id).await?;
        // A slug is taken as it is (the engine checks it); an id must be
        // one the OS catalogue lists for the service's family.
        let os: String = match os {
            advps_domain::OsChoice::Slug(slug) => slug,
            id => {
                let family = advps_domain::OsType::for_service(service.service_type);
                self.resolve_os(scope.mode, family, &id)
                    .await?
                    .map(|entry| entry.slug)
                    .ok_or_else(|| OpsError::invalid(INVALID_OS))?
            }
        };
        let os = os.as_str();
        self.usable(&service).await?;
        if service.mode == Mode::Live {
            let task = self.live_rebuild(scope, &service, os).await?;
            return Ok((service, task));
        }
        let image = catalogue::os_image(os).ok_or_else(|| OpsError::invalid(INVALID_OS))?;
        if !image.available_for(service.service_type) {
            return Err(OpsError::Failed(
                "No OS templates available for the selected OS".into(),
            ));
        }
        let now = time::now_millis();
        let params = serde_json::to_string(&RebuildParams {
            os: image.slug.to_string(),
        })?;
        let task = NewTask {
            id: advps_domain::ids::task_id(),
            scope,
            service_pk: service.pk,
            kind: TaskKind::Rebuild,
            params,
            busy_state: PowerState::Rebuilding,
            now,
            due_at: Some(now + self.config.sandbox_task_millis()),
        };
        let limit = MonthlyLimit {
            max: self.config.sandbox_rebuild_limit,
            since: time::month_start_millis(now),
        };
        match self.store.start_service_task(&task, Some(limit)).await? {
            StartTask::Started(record) => Ok((service, *record)),
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

    pub async fn task(&self, scope: Scope, task_id: &str) -> Result<TaskView, OpsError> {
        let mut task = self
            .store
            .find_task(scope, task_id)
            .await?
            .ok_or(OpsError::NotFound(TASK_NOT_FOUND))?;
        let now = time::now_millis();
        if !task.status.is_terminal() && sandbox::settle(self.store.as_ref(), &task, now).await? {
            task = self
                .store
                .find_task(scope, task_id)
                .await?
                .ok_or(OpsError::NotFound(TASK_NOT_FOUND))?;
        }
        let (status, progress) = sandbox::observed(&task, now);
        Ok(TaskView {
            task,
            status,
            progress,
        })
    }

    /// Stock of the caller's mode; sandbox stock is the caller's own.
    pub async fn list_stock(
        &self,
        scope: Scope,
        vm_type: Option<VmType>,
        page: PageRequest,
    ) -> Result<StockPage, OpsError> {
        let (products, total) = self
            .store
            .list_products(
                scope.mode,
                vm_type,
                page.offset(),
                page.limit,
                Some(scope.account_id),
            )
            .await?;
        Ok(StockPage { products, total })
    }

    pub async fn stock(&self, scope: Scope, product_id: &str) -> Result<ProductStock, OpsError> {
        self.store
            .find_product(scope.mode, product_id, Some(scope.account_id))
            .await?
            .ok_or(OpsError::NotFound(PRODUCT_NOT_FOUND))
    }

    pub fn low_stock_threshold(&self, product: &ProductStock) -> i64 {
        product
            .low_stock_threshold
            .unwrap_or(self.config.low_stock_threshold)
    }
}
