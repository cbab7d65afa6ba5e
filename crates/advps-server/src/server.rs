//! Assembling and running the server: shared state, the router with its
//! middleware, and [`serve`], which runs on a listener the caller has bound
//! until the caller's shutdown signal fires.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use advps_domain::{sandbox as catalogue, time, Mode};
use advps_store::{NewProduct, Store};

use crate::auth::{self, TouchThrottle};
use crate::drivers::DriverRegistry;
use crate::envelope::{error_body, json_response, RequestContext};
use crate::ops::Operations;
use crate::rate_limit::{MemoryRateLimiter, RateLimiter};
use crate::routes::{audit, docs, health, me, os, products, purchase, services, tasks, webhooks};
use crate::secrets::Cipher;
use crate::worker::Worker;
use crate::{ApiError, Config};

/// What every handler can reach. One allocation behind an `Arc`: every
/// middleware layer and handler takes its own handle to the state for each
/// request, and a handle should cost one atomic increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub ops: Operations,
    pub limiter: Arc<dyn RateLimiter>,
    pub memory_limiter: Option<Arc<MemoryRateLimiter>>,
    pub touch: Arc<TouchThrottle>,
    pub drivers: Arc<DriverRegistry>,
    pub cipher: Cipher,
    /// Wakes the task worker when a task is queued.
    pub wake: Arc<Notify>,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// Opens the storage in the configured data directory (creating and
/// migrating it), loads the password key, and seeds the sandbox catalogue.
pub async fn build_state(config: Config) -> anyhow_like::Result<AppState> {
    let store = open_store(&config).await?;
    seed_sandbox_catalogue(store.as_ref()).await?;
    let cipher = Cipher::for_config(&config)?;
    // Instances sharing PostgreSQL share one quota per key; a single
    // instance counts in memory, which costs nothing per request.
    let shared = is_shared(&config);
    let memory_limiter = Arc::new(MemoryRateLimiter::new(config.rate_limit_window_secs));
    let limiter: Arc<dyn RateLimiter> = if shared {
        Arc::new(crate::rate_limit_shared::StoreRateLimiter::new(
            Arc::clone(&store),
            config.rate_limit_window_secs,
        ))
    } else {
        memory_limiter.clone()
    };
    let drivers = Arc::new(DriverRegistry::new(
        Arc::clone(&store),
        Duration::from_secs(config.engine_timeout_secs),
        cipher.clone(),
    ));
    let wake = Arc::new(Notify::new());
    let config = Arc::new(config);
    Ok(AppState(Arc::new(AppStateInner {
        ops: Operations::new(
            Arc::clone(&store),
            Arc::clone(&config),
            cipher.clone(),
            Arc::clone(&drivers),
            Arc::clone(&wake),
        ),
        store,
        config,
        limiter,
        memory_limiter: (!shared).then_some(memory_limiter),
        touch: Arc::new(TouchThrottle::default()),
        drivers,
        cipher,
        wake,
    })))
}

/// Whether the configuration points at a database several instances share.
pub fn is_shared(config: &Config) -> bool {
    config
        .database_url
        .as_deref()
        .is_some_and(advps_store::is_postgres_url)
}

/// Opens the configured store: PostgreSQL for a `postgres://` URL, else
/// SQLite in the data directory; migrations run either way.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, advps_store::StoreError> {
    let pg = advps_store::PgPoolSettings {
        max_connections: config.db_max_connections,
        statement_timeout: Some(Duration::from_millis(config.db_statement_timeout_ms)),
        ..Default::default()
    };
    advps_store::open_store_with(config.database_url.as_deref(), &config.data_dir, &pg).await
}

/// A small boxed-error result so that start-up failures of any layer can be
/// reported with their own message.
pub mod anyhow_like {
    pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
    pub type Result<T> = std::result::Result<T, Error>;
}

/// Inserts the sandbox products (idempotent).
pub async fn seed_sandbox_catalogue(store: &dyn Store) -> Result<(), advps_store::StoreError> {
    let now = time::now_millis();
    let products: Vec<NewProduct> = catalogue::CATALOGUE
        .iter()
        .map(|p| NewProduct {
            mode: Mode::Test,
            id: p.id.to_string(),
            name: p.name.to_string(),
            pack_name: p.pack_name.to_string(),
            vm_type: p.vm_type,
            manual_stock: Some(p.stock),
            low_stock_threshold: None,
            default_os: Some(catalogue::DEFAULT_OS.to_string()),
            now,
        })
        .collect();
    store.ensure_products(&products).await?;
    for p in catalogue::CATALOGUE.iter() {
        let size = advps_store::ProductSize {
            ram_mb: p.ram_mb,
            price_minor: p.price_minor,
            currency: catalogue::CURRENCY.to_string(),
        };
        store.set_product_size(Mode::Test, p.id, &size).await?;
    }
    Ok(())
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    // Every route is declared with its whole path (as the OpenAPI document
    // names it) and merged rather than nested: a nested router strips its
    // prefix in a layer that is cloned for every request.
    let api = Router::new()
        .merge(services::router())
        .route(
            "/api/v1/services/task/{task_id}/status",
            get(tasks::get_task_status),
        )
        .merge(products::router())
        .merge(purchase::router())
        .route("/api/v1/os", get(os::list_os))
        .merge(webhooks::router())
        .route("/api/v1/audit", get(audit::list_audit))
        // Authentication, then (for mutating calls) the audit log, then
        // idempotent replay: one layer, see `auth::authenticate`.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Added after the layers above so they do not apply: `/me` checks
        // the key without counting it, the OpenAPI document needs no key.
        .route(
            "/api/v1/me",
            get(me::get_me).route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::authenticate_without_quota,
            )),
        )
        .route("/api/v1/openapi.json", get(docs::get_openapi));
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/livez", get(health::get_livez))
        .route("/health", get(health::get_health))
        .route("/docs", get(docs::get_docs))
        .merge(api)
        .route_layer(middleware::from_fn(crate::metrics::record))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

async fn route_not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &error_body("Route not found", None))
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Gives every request its id, sends it back as `X-Request-Id`, and makes
/// sure no error leaves without the JSON envelope (responses made by lower
/// layers, such as the body limit, come as plain text).
async fn request_context(mut req: Request, next: Next) -> Response {
    let ctx = RequestContext::new();
    let request_id = ctx.request_id.clone();
    req.extensions_mut().insert(ctx);
    // Every line logged while serving the request carries its id.
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let status = response.status();
    if !is_json && (status.is_client_error() || status.is_server_error()) {
        let message = match status {
            StatusCode::NOT_FOUND => "Route not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Content-Type must be application/json",
            s if s.is_server_error() => "Internal server error",
            _ => "Bad request",
        };
        let headers = response.headers().clone();
        response = json_response(status, &error_body(message, None));
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Serves the API on `listener` until `shutdown` completes, then lets
/// in-flight requests finish. Background work (the sandbox sweeper, limiter
/// housekeeping) runs alongside and stops with it.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = if state.config.run_worker {
        spawn_background(&state, &stop_rx)
    } else {
        Vec::new()
    };
    let housekeeping = state.memory_limiter.clone().map(|limiter| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => limiter.prune(time::now_millis()),
                    _ = stop.changed() => return,
                }
            }
        })
    });
    let app = router(state);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    let _ = stop_tx.send(true);
    for task in background.into_iter().chain(housekeeping) {
        let _ = task.await;
    }
    result
}

/// Runs only the background work (tasks, sandbox timers, expiry, webhook
/// deliveries) until `shutdown`: `advps worker`, for operators who keep API
/// and worker processes apart.
pub async fn run_background(state: AppState, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn_background(&state, &stop_rx);
    shutdown.await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
}

/// The background loops, each stopping when `stop` changes. Every one is
/// safe to run in several processes at once: tasks and deliveries are
/// claimed, and state changes are conditional.
fn spawn_background(
    state: &AppState,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sweeper = tokio::spawn(crate::sandbox::sweep(
        Arc::clone(&state.store),
        Duration::from_millis(500),
        stop.clone(),
    ));
    let worker = Worker {
        store: Arc::clone(&state.store),
        drivers: Arc::clone(&state.drivers),
        cipher: state.cipher.clone(),
        owner: format!("{}-{}", std::process::id(), advps_domain::ids::key_id()),
        lease: Duration::from_secs(state.config.task_lease_secs),
        wake: Arc::clone(&state.wake),
    };
    let worker = tokio::spawn(worker.run(stop.clone()));
    let expiry = crate::expiry::Expiry {
        store: Arc::clone(&state.store),
        drivers: Arc::clone(&state.drivers),
        every: Duration::from_secs(state.config.expiry_check_secs),
        grace_ms: (state.config.expiry_grace_secs as i64).saturating_mul(1000),
    };
    let expiry = tokio::spawn(expiry.run(stop.clone()));
    let mut tasks = vec![sweeper, worker, expiry];
    // Without its checked client there is no safe way to deliver: the
    // deliveries wait in their table for a process that has one.
    match crate::webhooks::Dispatcher::client(
        Duration::from_secs(state.config.webhook_timeout_secs),
        state.config.webhook_allow_private,
    ) {
        Ok(client) => {
            let dispatcher = Arc::new(crate::webhooks::Dispatcher {
                store: Arc::clone(&state.store),
                cipher: state.cipher.clone(),
                client,
                allow_private: state.config.webhook_allow_private,
                retry_base_ms: state.config.webhook_retry_base_ms as i64,
                max_attempts: i64::from(state.config.webhook_max_attempts),
                every: Duration::from_millis(500),
            });
            tasks.push(tokio::spawn(dispatcher.run(stop.clone())));
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries are off: the HTTP client could not be built")
        }
    }
    tasks
}
