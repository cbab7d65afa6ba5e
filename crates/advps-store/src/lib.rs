//! Storage for advps: one [`Store`] trait that the HTTP layer, the task
//! runner and the command line use, and its SQLite implementation.
//!
//! The trait speaks in domain terms (accounts, keys, services, tasks,
//! products) and every state change that must not race is one method that
//! the backend makes atomic: a conditional update, or one short transaction.
//! That keeps the rules about concurrency in one place per backend and lets a
//! PostgreSQL implementation follow without touching any caller.

mod error;
mod model;
mod sqlite;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use sqlite::SqliteStore;

use advps_domain::{Mode, PowerState, VmType};
use async_trait::async_trait;

/// Everything advps keeps. Times are Unix milliseconds.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- accounts -------------------------------------------------------

    /// Creates an account together with its sandbox fleet, in one transaction.
    /// A name that exists is [`StoreError::Conflict`].
    async fn create_account(&self, name: &str, now: i64) -> StoreResult<Account>;
    async fn list_accounts(&self) -> StoreResult<Vec<Account>>;
    async fn find_account(&self, name: &str) -> StoreResult<Option<Account>>;
    async fn count_accounts(&self) -> StoreResult<i64>;

    // --- API keys ---------------------------------------------------------

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<()>;
    /// Finds a key by its digest, revoked or not (the caller decides).
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key; false when no unrevoked key has that id.
    async fn revoke_api_key(&self, key_id: &str, now: i64) -> StoreResult<bool>;
    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()>;

    // --- services ---------------------------------------------------------

    async fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>>;
    /// Moves a service from `from` to `to` only if it is in `from` now, and
    /// sets `started_at` (the moment uptime counts from; `None` clears it).
    /// False when the service was not in `from`.
    async fn transition_power(
        &self,
        service_pk: i64,
        from: PowerState,
        to: PowerState,
        started_at: Option<i64>,
    ) -> StoreResult<bool>;
    /// Gives the service `ip` unless it already has an address, and returns
    /// the address it has afterwards. `None` when the service is busy.
    async fn assign_ip(&self, service_pk: i64, ip: &str) -> StoreResult<Option<String>>;
    /// Stores an (encrypted) password only while the service is running.
    async fn set_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<bool>;

    // --- tasks ------------------------------------------------------------

    /// Starts a task on a service atomically: refuses when another task holds
    /// the service or when the monthly limit for this kind is used up, else
    /// moves the service to `busy_state` and records the task.
    async fn start_service_task(
        &self,
        task: &NewTask,
        limit: Option<MonthlyLimit>,
    ) -> StoreResult<StartTask>;
    async fn find_task(&self, scope: Scope, task_id: &str) -> StoreResult<Option<TaskRecord>>;
    /// The unfinished task that holds a service, if any.
    async fn active_task(&self, service_pk: i64) -> StoreResult<Option<TaskRecord>>;
    /// Unfinished sandbox tasks whose simulated work is over by `now`.
    async fn due_sandbox_tasks(&self, now: i64, limit: i64) -> StoreResult<Vec<TaskRecord>>;
    /// Finishes a task and applies its outcome to the service, once: false
    /// when the task had already finished.
    async fn finish_task(&self, task_id: &str, finish: &TaskFinish) -> StoreResult<bool>;

    // --- products and inventory -------------------------------------------

    /// Inserts products that do not exist yet; existing ones are left as they are.
    async fn ensure_products(&self, products: &[NewProduct]) -> StoreResult<()>;
    /// Creates a product; an existing id in that mode is [`StoreError::Conflict`].
    async fn create_product(&self, product: &NewProduct) -> StoreResult<()>;
    /// Visible products of a mode with their stock, sorted by stock
    /// descending then id, and the total count.
    async fn list_products(
        &self,
        mode: Mode,
        vm_type: Option<VmType>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<ProductStock>, u64)>;
    async fn find_product(&self, mode: Mode, id: &str) -> StoreResult<Option<ProductStock>>;
    /// Sets (`Some`) or clears (`None`, stock derived from inventory) the
    /// manual stock; false when there is no such product.
    async fn set_manual_stock(&self, mode: Mode, id: &str, stock: Option<i64>)
        -> StoreResult<bool>;
    async fn add_instance(&self, instance: &NewInstance) -> StoreResult<i64>;
}
