//! The store by aggregate: each module holds one aggregate's trait and its
//! implementation on [`crate::SqlStore`], written once for both databases.
//! Statements shared by several aggregates (the outbox's events, the columns
//! of a service or a task) live in [`shared`].

pub mod accounts;
pub mod audit;
pub mod catalogue;
pub mod consoles;
pub mod health;
pub mod idempotency;
pub mod inventory;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod outbox;
pub mod rate;
pub mod selling;
pub mod services;
pub mod sessions;
pub(crate) mod shared;
pub mod tasks;
