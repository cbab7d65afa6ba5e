//! The advps HTTP server: the ADVPS API v1.0 over axum.
//!
//! A request goes request id → authentication → rate limit → handler →
//! service layer ([`ops`]) → store, and comes back in the envelope of the
//! reference. [`serve`] takes a bound listener and a shutdown signal, so the
//! command line, the tests and the benchmark all run the same server.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod caller;
pub mod config;
pub mod console;
pub mod drivers;
pub mod envelope;
pub mod error;
pub mod expiry;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod panel;
pub mod rate_limit;
pub mod rate_limit_shared;
pub mod routes;
pub mod sandbox;
pub mod secrets;
mod server;
pub mod tasks;
pub mod worker;

pub use config::Config;
pub use error::ApiError;
pub use server::{
    build_state, is_shared, open_store, router, run_background,
    seed_sandbox_catalogue as server_seed, serve, serve_metrics, AppState, AppStateInner,
};
pub mod webhooks;

/// This build's version, as released.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
