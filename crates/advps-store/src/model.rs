//! Records the store reads and writes. Fields are domain types where the
//! domain has a word for them; times are Unix milliseconds.

use advps_domain::{Mode, OsType, PowerState, ServiceType, TaskKind, TaskStatus, VmType};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account_id: i64,
    pub account_name: String,
    #[sqlx(try_from = "String")]
    pub mode: Mode,
    pub key_hash: String,
    pub last4: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A console URL's ticket, as stored: the digest of its secret and what it
/// may open, until `expires_at`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleTicket {
    pub digest: String,
    pub account_id: i64,
    #[sqlx(try_from = "String")]
    pub mode: Mode,
    pub key_id: String,
    pub service_pk: i64,
    pub service_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A new panel session, as [`crate::SessionStore::insert_panel_session`] stores it.
#[derive(Debug, Clone)]
pub struct NewPanelSession {
    /// SHA-256 of the cookie's token (the token itself is never stored).
    pub digest: String,
    pub key_id: String,
    pub account_id: i64,
    pub mode: Mode,
    pub csrf_token: String,
    pub created_at: i64,
}

/// A panel session whose key is still unrevoked, with that key's digest so
/// the caller can be made from the (cached) key record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PanelSession {
    pub digest: String,
    pub key_id: String,
    pub key_hash: String,
    pub account_id: i64,
    #[sqlx(try_from = "String")]
    pub mode: Mode,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRecord {
    pub pk: i64,
    pub account_id: i64,
    #[sqlx(try_from = "String")]
    pub mode: Mode,
    pub service_id: String,
    #[sqlx(try_from = "String")]
    pub service_type: ServiceType,
    pub vmid: String,
    #[sqlx(try_from = "String")]
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
    /// Live services: the node and inventory instance they run on.
    pub node: Option<String>,
    pub instance_id: Option<i64>,
    /// The order that bought it, and what it was bought as (renewal prices).
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub ram_mb: Option<i64>,
    pub username: Option<String>,
    pub last_mac_reset: Option<i64>,
    pub mac: Option<String>,
}

impl ServiceRecord {
    /// The login name of the service's OS: the one recorded with it, or for
    /// a row without one the default for its OS.
    pub fn login_name(&self) -> String {
        self.username.clone().unwrap_or_else(|| {
            advps_domain::os::default_username(
                self.os_slug.as_deref().unwrap_or_default(),
                self.os_name.as_deref().unwrap_or_default(),
            )
            .to_string()
        })
    }
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
    Started(Box<TaskRecord>),
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
    /// Index of the next step to run (resumable tasks).
    pub step: i64,
    /// State the task keeps between steps (JSON).
    pub scratch: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub attempts: i64,
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
    pub os: Option<InstalledOs>,
    /// The worker that holds the task's lease; `None` for simulated tasks.
    pub owner: Option<String>,
}

/// The OS a task installed: the service's slug, name and login name change
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledOs {
    pub slug: String,
    pub name: String,
    pub username: String,
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
    /// The OS installed when a purchase names none.
    pub default_os: Option<String>,
    pub now: i64,
}

/// A product with its current stock (manual, or derived from inventory).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductStock {
    pub id: String,
    pub name: String,
    pub pack_name: String,
    #[sqlx(try_from = "String")]
    pub vm_type: VmType,
    pub stock: i64,
    pub manual: bool,
    pub low_stock_threshold: Option<i64>,
    pub default_os: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub node: String,
    pub engine_id: String,
    pub product_id: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: String,
    pub driver: String,
    pub endpoint: String,
    pub credentials_enc: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRecord {
    pub id: i64,
    pub name: String,
    pub driver: String,
    pub endpoint: String,
    pub credentials_enc: Option<String>,
    pub created_at: i64,
}

/// An instance as a node reports it during sync.
#[derive(Debug, Clone)]
pub struct SyncedInstance {
    pub engine_id: String,
    pub kind: String,
    pub memory_mb: Option<i64>,
    pub engine_state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncSummary {
    pub added: u64,
    pub updated: u64,
    /// Known instances the node no longer has (marked unhealthy).
    pub missing: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstanceRecord {
    pub id: i64,
    pub node: String,
    pub engine_id: String,
    pub product_id: Option<String>,
    /// `free`, `assigned` or `out_of_service`.
    pub state: String,
    pub healthy: bool,
    pub kind: String,
    pub memory_mb: Option<i64>,
    pub engine_state: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewOsImage {
    pub slug: String,
    pub name: String,
    pub os_type: OsType,
    pub image: String,
    /// `None`: the image exists under this name on every node.
    pub node: Option<String>,
    /// The login name of services installed with it; `None`: the default
    /// for the OS (`advps_domain::os::default_username`).
    pub username: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OsImageRecord {
    pub id: i64,
    pub slug: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub os_type: OsType,
    pub image: String,
    pub node: Option<String>,
    /// `None`: the default for the OS.
    pub username: Option<String>,
}

impl OsImageRecord {
    /// The login name of services installed with this image.
    pub fn login_name(&self) -> String {
        self.username.clone().unwrap_or_else(|| {
            advps_domain::os::default_username(&self.slug, &self.name).to_string()
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewIpPool {
    pub name: String,
    pub cidr: String,
    pub prefix: u8,
    pub gateway: String,
    pub node: Option<String>,
    /// Every address the pool hands out.
    pub addresses: Vec<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpPoolRecord {
    pub id: i64,
    pub name: String,
    pub cidr: String,
    #[sqlx(try_from = "i64")]
    pub prefix: u8,
    pub gateway: String,
    pub node: Option<String>,
    pub total: i64,
    pub free: i64,
}

/// An address held by a service, with what configuring it needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AddressLease {
    pub address: String,
    #[sqlx(try_from = "i64")]
    pub prefix: u8,
    pub gateway: String,
    pub pool: String,
}

/// A live service to bind to an inventory instance.
#[derive(Debug, Clone)]
pub struct NewLiveService {
    pub account_id: i64,
    pub service_id: String,
    pub service_type: ServiceType,
    pub instance_id: i64,
    pub power_state: PowerState,
    pub expires_at: Option<i64>,
    pub now: i64,
}

/// A service with its owner's name, for operator listings.
#[derive(Debug, Clone)]
pub struct ServiceListing {
    pub service: ServiceRecord,
    pub account_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Locked,
    /// A task or another operation holds the service.
    Busy,
}

/// A RAM size of a product and its price per 30 days.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductSize {
    pub ram_mb: i64,
    pub price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// `credit`, `purchase`, `renewal` or `refund`.
    pub kind: String,
    pub reference: Option<String>,
    pub note: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderRecord {
    pub id: String,
    pub account_id: i64,
    #[sqlx(try_from = "String")]
    pub mode: Mode,
    pub product_id: String,
    pub ram_mb: i64,
    pub os_slug: String,
    pub os_name: String,
    pub quantity: i64,
    pub validity_days: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub status: String,
    pub remark: Option<String>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A purchase to place: paid, stocked and recorded in one transaction.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub scope: Scope,
    /// `VPS` or `LXC`: the order number's prefix.
    pub prefix: &'static str,
    /// `DDMMYY` of the order's day.
    pub day: String,
    pub product_id: String,
    pub service_type: ServiceType,
    pub ram_mb: i64,
    pub os_slug: String,
    pub os_name: String,
    /// The login name of the services, decided by the OS.
    pub username: String,
    pub quantity: i64,
    pub validity_days: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub remark: Option<String>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    /// JSON parameters of each service's provisioning task.
    pub task_params: String,
    /// For sandbox orders: when simulated provisioning is over.
    pub due_at: Option<i64>,
    /// Sandbox orders: the encrypted password and address each service gets
    /// (simulated provisioning has no engine to make them).
    pub sandbox_credentials: Vec<(String, String)>,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub enum PlaceOrder {
    Placed {
        order: Box<OrderRecord>,
        services: Vec<ServiceRecord>,
    },
    OutOfStock {
        available: i64,
    },
    InsufficientFunds {
        balance: i64,
    },
}

/// One service to renew, with its price.
#[derive(Debug, Clone, Copy)]
pub struct RenewItem {
    pub service_pk: i64,
    pub validity_days: i64,
    pub amount_minor: i64,
}

#[derive(Debug, Clone)]
pub enum Renewal {
    Renewed(Vec<ServiceRecord>),
    InsufficientFunds { balance: i64 },
}

/// What beginning an idempotent request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time: run the request, then record its response.
    Started,
    /// Done before with the same request: replay this response.
    Replay {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// The response of an idempotent request, kept for its replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub key_id: String,
    pub idem_key: String,
    pub status: u16,
    /// The body as stored (sealed by the server).
    pub body: String,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookEndpoint {
    pub id: String,
    pub scope: Scope,
    pub url: String,
    pub description: Option<String>,
    /// Event types; empty means all.
    pub events: Vec<String>,
    pub secret_enc: String,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub account_id: i64,
    pub mode: Mode,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_until: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub delivered: bool,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub now: i64,
    /// When to try again; `None` gives up (the delivery is `failed`).
    pub retry_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub at: i64,
    pub account_id: Option<i64>,
    pub key_id: Option<String>,
    pub mode: Option<Mode>,
    pub method: String,
    pub path: String,
    pub service_id: Option<String>,
    pub status: u16,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub task_id: Option<String>,
    pub order_id: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub account_id: Option<i64>,
    pub account_name: Option<String>,
    pub key_id: Option<String>,
    pub mode: Option<String>,
    pub method: String,
    pub path: String,
    pub service_id: Option<String>,
    pub status: i64,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub task_id: Option<String>,
    pub order_id: Option<String>,
    pub source: Option<String>,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account_id: Option<i64>,
    pub mode: Option<Mode>,
    pub service_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub offset: u64,
    pub limit: u32,
}

/// A key's rate-limit window after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHit {
    pub counted: bool,
    pub count: u32,
    pub opened_at: i64,
}

/// What asking to remove a catalogue or inventory entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing has that id or name.
    NotFound,
    /// Refused: what still uses it, in words for the operator ("2 services").
    InUse(String),
}

/// "1 service", "3 services": the count of what still uses an entry.
pub(crate) fn count_of(n: i64, one: &str, many: &str) -> Option<String> {
    match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    }
}
