//! Storage for advps: one [`Store`] trait that the HTTP layer, the task
//! runner and the command line use, and its SQLite implementation.
//!
//! The trait speaks in domain terms (accounts, keys, services, tasks,
//! products) and every state change that must not race is one method that
//! the backend makes atomic: a conditional update, or one short transaction.
//! That keeps the rules about concurrency in one place per backend and lets a
//! PostgreSQL implementation follow without touching any caller.

mod error;
mod fast_read;
mod model;
mod open;
mod postgres;
mod sqlite;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use open::{open_store, open_store_with};
pub use postgres::{is_postgres_url, PgPoolSettings, PgStore};
pub use sqlite::SqliteStore;

use advps_domain::{Mode, PowerState, VmType};

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
use async_trait::async_trait;

/// Everything advps keeps. Times are Unix milliseconds.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- accounts -------------------------------------------------------

    /// Creates an account together with its sandbox fleet and the sandbox
    /// wallet's starting credit, in one transaction.
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
    /// Records the OS a service runs.
    async fn set_service_os(&self, service_pk: i64, slug: &str, name: &str) -> StoreResult<()>;
    /// Stores an (encrypted) password whatever the service's state (used
    /// while provisioning).
    async fn store_password(&self, service_pk: i64, password_enc: &str) -> StoreResult<()>;
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
    /// Sandbox stock is per account: what the account bought is taken off
    /// the catalogue's figure, so testers do not see each other's purchases.
    async fn list_products(
        &self,
        mode: Mode,
        vm_type: Option<VmType>,
        offset: u64,
        limit: u32,
        account_id: Option<i64>,
    ) -> StoreResult<(Vec<ProductStock>, u64)>;
    async fn find_product(
        &self,
        mode: Mode,
        id: &str,
        account_id: Option<i64>,
    ) -> StoreResult<Option<ProductStock>>;
    /// Adds or replaces a RAM size of a product with its price.
    async fn set_product_size(
        &self,
        mode: Mode,
        product_id: &str,
        size: &ProductSize,
    ) -> StoreResult<()>;
    async fn product_sizes(&self, mode: Mode, product_id: &str) -> StoreResult<Vec<ProductSize>>;
    async fn set_product_default_os(
        &self,
        mode: Mode,
        product_id: &str,
        slug: Option<&str>,
    ) -> StoreResult<bool>;
    /// Sets (`Some`) or clears (`None`, stock derived from inventory) the
    /// manual stock; false when there is no such product.
    async fn set_manual_stock(&self, mode: Mode, id: &str, stock: Option<i64>)
        -> StoreResult<bool>;
    async fn add_instance(&self, instance: &NewInstance) -> StoreResult<i64>;

    // --- nodes and inventory ----------------------------------------------

    /// Registers a node; an existing name is [`StoreError::Conflict`].
    async fn create_node(&self, node: &NewNode) -> StoreResult<NodeRecord>;
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    async fn find_node(&self, name: &str) -> StoreResult<Option<NodeRecord>>;
    /// Replaces a node's sealed credentials (e.g. to give or take SSH access
    /// later); `false` when no node has that name.
    async fn set_node_credentials(
        &self,
        name: &str,
        credentials_enc: Option<&str>,
    ) -> StoreResult<bool>;
    /// Records what a node reports: new instances are added free, known
    /// ones updated, and known ones the node no longer has marked unhealthy.
    async fn sync_instances(
        &self,
        node: &str,
        seen: &[SyncedInstance],
        now: i64,
    ) -> StoreResult<SyncSummary>;
    async fn list_instances(&self, node: Option<&str>) -> StoreResult<Vec<InstanceRecord>>;
    async fn find_instance(
        &self,
        node: &str,
        engine_id: &str,
    ) -> StoreResult<Option<InstanceRecord>>;
    /// Assigns an instance to a product (stock is counted per product).
    async fn set_instance_product(
        &self,
        instance_id: i64,
        product_id: Option<&str>,
    ) -> StoreResult<bool>;

    // --- OS images ----------------------------------------------------------

    async fn add_os_image(&self, image: &NewOsImage) -> StoreResult<()>;
    async fn list_os_images(&self) -> StoreResult<Vec<OsImageRecord>>;
    async fn os_images_by_slug(&self, slug: &str) -> StoreResult<Vec<OsImageRecord>>;

    // --- IP pools -----------------------------------------------------------

    /// Creates a pool with all its addresses; a name or address that exists
    /// is [`StoreError::Conflict`].
    async fn create_ip_pool(&self, pool: &NewIpPool) -> StoreResult<IpPoolRecord>;
    async fn list_ip_pools(&self) -> StoreResult<Vec<IpPoolRecord>>;
    /// The service's address, taking a free one atomically (from the node's
    /// pools first, then pools for every node) if it has none. `None` when
    /// every pool is exhausted.
    async fn allocate_address(
        &self,
        service_pk: i64,
        node: &str,
        now: i64,
    ) -> StoreResult<Option<AddressLease>>;
    async fn service_address(&self, service_pk: i64) -> StoreResult<Option<AddressLease>>;
    /// Gives the service's addresses back to their pools.
    async fn release_addresses(&self, service_pk: i64) -> StoreResult<u64>;

    // --- live services --------------------------------------------------------

    /// Binds a free instance to an account as a live service, atomically:
    /// an instance that is not free is [`StoreError::Conflict`].
    async fn bind_live_service(&self, service: &NewLiveService) -> StoreResult<ServiceRecord>;
    async fn list_services(&self, mode: Option<Mode>) -> StoreResult<Vec<ServiceListing>>;
    /// Removes a service: its addresses go back to the pool and its instance
    /// returns to inventory as `instance_state` (`free`, or `out_of_service`
    /// when it could not be wiped) in the same transaction, so a machine not
    /// fit to sell is never free for a moment. False when there is no such
    /// service.
    async fn remove_service(&self, service_pk: i64, instance_state: &str) -> StoreResult<bool>;
    /// Takes the short operation lock of a service (no task running, no other
    /// lock unexpired).
    async fn lock_service(
        &self,
        service_pk: i64,
        token: &str,
        now: i64,
        ttl_ms: i64,
    ) -> StoreResult<LockOutcome>;
    /// Releases the lock and records the power state the engine reported.
    async fn unlock_service(
        &self,
        service_pk: i64,
        token: &str,
        power: Option<(PowerState, Option<i64>)>,
    ) -> StoreResult<()>;

    // --- wallet, orders, renewal, expiry -----------------------------------

    /// Adds a ledger entry of kind `credit`; returns the new balance.
    async fn credit_wallet(
        &self,
        account_id: i64,
        mode: Mode,
        amount_minor: i64,
        currency: &str,
        note: &str,
        now: i64,
    ) -> StoreResult<i64>;
    async fn wallet_balance(&self, account_id: i64, mode: Mode) -> StoreResult<i64>;
    async fn ledger(&self, account_id: i64, mode: Mode) -> StoreResult<Vec<LedgerEntry>>;
    /// Places an order atomically: checks the balance, takes the machines
    /// (free instances of the product and size live; the account's sandbox
    /// stock in test mode), charges the wallet, records the order, its
    /// services (`PROVISIONING`) and one provisioning task each. Nothing is
    /// charged or taken unless all of it succeeds.
    async fn place_order(&self, order: &NewOrder) -> StoreResult<PlaceOrder>;
    async fn find_order(&self, scope: Scope, order_id: &str) -> StoreResult<Option<OrderRecord>>;
    async fn order_services(&self, order_id: &str) -> StoreResult<Vec<ServiceRecord>>;
    /// Marks a `PENDING` order `COMPLETED` once none of its services is still
    /// provisioning; true when it did.
    async fn settle_order(&self, order_id: &str, now: i64) -> StoreResult<bool>;
    /// Fails a `PENDING` order once: refunds it, fails its unfinished tasks,
    /// removes its services, and puts each instance back in inventory as
    /// given (`free`, or `out_of_service` when it could not be wiped).
    async fn fail_order(
        &self,
        order_id: &str,
        error: &str,
        instance_states: &[(i64, &str)],
        now: i64,
    ) -> StoreResult<bool>;
    /// Renews services atomically: pays from the wallet, moves each expiry
    /// by its validity and lifts a suspension.
    async fn renew_services(
        &self,
        scope: Scope,
        items: &[RenewItem],
        currency: &str,
        reference: &str,
        now: i64,
    ) -> StoreResult<Renewal>;
    /// Services whose expiry has passed and that are not yet suspended.
    async fn services_to_suspend(&self, now: i64, limit: i64) -> StoreResult<Vec<ServiceRecord>>;
    /// Suspended services whose expiry is before `cutoff`.
    async fn services_to_terminate(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<ServiceRecord>>;
    /// Moves a service to `SUSPENDED` from a resting state.
    async fn suspend_service(&self, service_pk: i64) -> StoreResult<bool>;
    /// Sets a service's expiry (operators).
    async fn set_service_expiry(&self, service_pk: i64, expires_at: i64) -> StoreResult<()>;
    /// Takes the right to reset a MAC now if the last reset is at least
    /// `interval_ms` old; otherwise returns when it may be done again.
    async fn claim_mac_reset(
        &self,
        service_pk: i64,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<Result<(), i64>>;
    async fn set_service_mac(&self, service_pk: i64, mac: &str) -> StoreResult<()>;
    /// Gives back a MAC reset that could not be carried out.
    async fn restore_mac_reset(&self, service_pk: i64, previous: Option<i64>) -> StoreResult<()>;
    /// Puts an instance back in inventory (`free`) or out of it.
    async fn set_instance_state(&self, instance_id: i64, state: &str) -> StoreResult<()>;

    // --- idempotency, events and webhooks, audit ------------------------------

    /// Starts an idempotent request, or tells how a repeat is to be answered.
    /// Records expire after `ttl_ms`; one left in flight longer than
    /// `stale_ms` (its server died) is taken over.
    async fn begin_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        fingerprint: &str,
        now: i64,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> StoreResult<IdempotencyBegin>;
    async fn finish_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        status: u16,
        body: &str,
        content_type: Option<&str>,
    ) -> StoreResult<()>;
    /// Forgets an in-flight record (the request failed in a way worth retrying).
    async fn abandon_idempotent(&self, key_id: &str, idem_key: &str) -> StoreResult<()>;

    async fn create_webhook(&self, endpoint: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint>;
    async fn list_webhooks(&self, scope: Scope) -> StoreResult<Vec<WebhookEndpoint>>;
    /// All endpoints (operators), or an account's.
    async fn all_webhooks(&self, account_id: Option<i64>) -> StoreResult<Vec<WebhookEndpoint>>;
    async fn find_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;
    /// Replaces the secret; the previous one stays valid until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret_enc: &str,
        previous_until: i64,
    ) -> StoreResult<bool>;
    /// Turns new events into deliveries for the endpoints that want them.
    async fn fan_out_events(&self, now: i64, limit: i64) -> StoreResult<u64>;
    /// Claims due deliveries, holding each for `hold_ms` while it is sent.
    async fn claim_deliveries(
        &self,
        now: i64,
        hold_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    async fn record_delivery(&self, id: &str, attempt: &DeliveryAttempt) -> StoreResult<()>;
    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<WebhookDelivery>, u64)>;
    /// Queues a delivery again now; false when there is no such delivery.
    async fn redeliver(&self, endpoint_id: &str, delivery_id: &str, now: i64) -> StoreResult<bool>;

    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(Vec<AuditEntry>, u64)>;

    /// Unfinished tasks: (pending, in progress).
    async fn task_queue_depth(&self) -> StoreResult<(i64, i64)>;

    // --- shared rate limits ---------------------------------------------------

    /// Counts one request of `key_id` in its fixed window (opened by the
    /// first request, `window_ms` long) unless `limit` is reached, in one
    /// atomic statement. Returns whether it was counted, the count after it
    /// and when the window opened.
    async fn rate_hit(
        &self,
        key_id: &str,
        limit: u32,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<RateHit>;
    /// Takes back one counted request (an answer that costs no quota).
    async fn rate_release(&self, key_id: &str, now: i64, window_ms: i64) -> StoreResult<()>;
    /// The current window of a key, without counting.
    async fn rate_peek(
        &self,
        key_id: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<Option<RateHit>>;

    // --- the task worker ------------------------------------------------------

    /// Claims the oldest live task that is unclaimed or whose lease lapsed.
    async fn claim_task(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<TaskRecord>>;
    /// Extends a lease; false when the task is no longer this worker's.
    async fn renew_lease(&self, task_id: &str, owner: &str, until: i64) -> StoreResult<bool>;
    /// Records a finished step; false when the task is no longer this worker's.
    async fn record_step(
        &self,
        task_id: &str,
        owner: &str,
        step: i64,
        scratch: &str,
        progress: i64,
        now: i64,
    ) -> StoreResult<bool>;
}
