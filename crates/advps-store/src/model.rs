//! Records the store reads and writes. Fields are domain types where the
//! domain has a word for them; times are Unix milliseconds.

use advps_domain::{Mode, PowerState, ServiceType, TaskKind, TaskStatus, VmType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// The side of one account a request works on; every lookup of services
/// and tasks is bounded by it, so nothing crosses accounts or modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub account_id: i64,
    pub mode: Mode,
}

pub struct NewApiKey {
    pub id: String,
    pub account_id: i64,
    pub mode: Mode,
    pub key_hash: String,
    pub last4: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account_id: i64,
    pub account_name: String,
    pub mode: Mode,
    pub key_hash: String,
    pub last4: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ServiceRecord {
    pub pk: i64,
    pub account_id: i64,
    pub mode: Mode,
    pub service_id: String,
    pub service_type: ServiceType,
    pub vmid: String,
    pub power_state: PowerState,
    pub ip: Option<String>,
    /// The address get-ip gives when the service has none (sandbox).
    pub reserved_ip: Option<String>,
    pub os_slug: Option<String>,
    pub os_name: Option<String>,
    pub started_at: Option<i64>,
    pub password_enc: Option<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub scope: Scope,
    pub service_pk: i64,
    pub kind: TaskKind,
    /// JSON parameters of the task (e.g. the OS to install).
    pub params: String,
    /// The state the service holds while the task runs.
    pub busy_state: PowerState,
    pub now: i64,
    /// For simulated tasks: when the work is over.
    pub due_at: Option<i64>,
}

/// A cap on how many tasks of a kind a service may start per month.
#[derive(Debug, Clone, Copy)]
pub struct MonthlyLimit {
    pub max: u32,
    /// Start of the current month; tasks since then count, failed ones not.
    pub since: i64,
}

#[derive(Debug, Clone)]
pub enum StartTask {
    Started(TaskRecord),
    /// Another task holds the service (its id, when one is recorded).
    Busy(Option<String>),
    LimitReached,
    /// The service is in a state from which the task cannot start.
    NotReady(PowerState),
    NotFound,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub account_id: i64,
    pub mode: Mode,
    pub service_pk: i64,
    pub service_id: String,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub progress: i64,
    pub params: String,
    /// The service's state before the task took it.
    pub prev_state: Option<PowerState>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub due_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// How a task ended and what it leaves the service as.
#[derive(Debug, Clone)]
pub struct TaskFinish {
    pub status: TaskStatus,
    pub error: Option<String>,
    pub now: i64,
    pub power_state: PowerState,
    pub started_at: Option<i64>,
    /// A new OS, when the task installed one.
    pub os: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub mode: Mode,
    pub id: String,
    pub name: String,
    pub pack_name: String,
    pub vm_type: VmType,
    pub manual_stock: Option<i64>,
    pub low_stock_threshold: Option<i64>,
    pub now: i64,
}

/// A product with its current stock (manual, or derived from inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductStock {
    pub id: String,
    pub name: String,
    pub pack_name: String,
    pub vm_type: VmType,
    pub stock: i64,
    pub manual: bool,
    pub low_stock_threshold: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub node: String,
    pub engine_id: String,
    pub product_id: Option<String>,
    pub now: i64,
}
