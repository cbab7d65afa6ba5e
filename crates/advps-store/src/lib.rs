//! Storage for advps: the store's traits, one per aggregate, and their one
//! implementation, [`SqlStore`], on SQLite (the embedded default) or
//! PostgreSQL (several instances sharing one database).
//!
//! The traits speak in domain terms (accounts, keys, services, tasks,
//! products, orders) and every state change that must not race is one
//! method that the store makes atomic: a conditional update, or one short
//! transaction. Each aggregate is one module of [`stores`]: its trait and
//! its SQL side by side, written once for both databases through the query
//! layer in `db.rs`, which also holds the few places where the dialects
//! differ. [`Store`] is the sum of the traits, what the HTTP layer, the task
//! runner and the command line hold.
//!
//! How to add a store method: declare it on its aggregate's trait in
//! `stores/<aggregate>.rs` and implement it right below, once. How to add a
//! column: a migration in each of `migrations/sqlite` and
//! `migrations/postgres` (the schemas are the two dialects' spellings of one
//! design), the field on the model struct in `model.rs` (its row mapping is
//! derived), and the statements that write it. The storage contract suite
//! (`tests/contract.rs`) runs every check on both databases.

mod cache;
pub mod coalesce;
mod db;
mod error;
mod model;
mod open;
mod sql_store;
pub mod stores;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use open::{open_store, open_store_with};
pub use sql_store::{
    is_postgres_url, migration_plan, MigrationPlan, MigrationStep, PgPoolSettings, SqlStore,
    DATABASE_FILE,
};
pub use stores::accounts::AccountStore;
pub use stores::audit::AuditStore;
pub use stores::catalogue::CatalogueStore;
pub use stores::consoles::ConsoleStore;
pub use stores::health::HealthStore;
pub use stores::idempotency::IdempotencyStore;
pub use stores::inventory::InventoryStore;
pub use stores::keys::{KeyRevocation, KeyStore};
pub use stores::maintenance::{Backlog, MaintenanceStore};
pub use stores::metrics::{MetricsStore, UsageCounters, UsagePoint, UsageSchedule, UsageTier};
pub use stores::outbox::WebhookStore;
pub use stores::rate::RateStore;
pub use stores::selling::SellingStore;
pub use stores::services::ServiceStore;
pub use stores::sessions::SessionStore;
pub use stores::tasks::TaskStore;

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Everything advps keeps: the sum of the aggregates' stores. Times are Unix
/// milliseconds.
pub trait Store:
    AccountStore
    + KeyStore
    + ServiceStore
    + TaskStore
    + CatalogueStore
    + InventoryStore
    + SellingStore
    + WebhookStore
    + AuditStore
    + RateStore
    + IdempotencyStore
    + HealthStore
    + MetricsStore
    + MaintenanceStore
    + ConsoleStore
    + SessionStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: AccountStore
        + KeyStore
        + ServiceStore
        + TaskStore
        + CatalogueStore
        + InventoryStore
        + SellingStore
        + WebhookStore
        + AuditStore
        + RateStore
        + IdempotencyStore
        + HealthStore
        + MetricsStore
        + MaintenanceStore
        + ConsoleStore
        + SessionStore
        + Send
        + Sync
        + 'static
{
}
