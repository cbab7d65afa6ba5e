//! Assembling and running the server: shared state, the router with its
//! middleware, and [`serve`], which runs on a listener the caller has bound
//! until the caller's shutdown signal fires.
//!
//! [`serve`] runs its own accept loop rather than `axum::serve` so that no
//! client can hold the server's resources for free: headers and bodies have
//! deadlines, idle kept-alive connections are closed, the number of
//! connections is capped, and a shutdown waits for in-flight requests only
//! so long before it closes what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;

use advps_domain::{sandbox as catalogue, time, Mode};
use advps_store::{NewProduct, Store};

use crate::auth::{self, TouchThrottle};
use crate::drivers::DriverRegistry;
use crate::envelope::{error_body, json_response, RequestContext};
use crate::ops::Operations;
use crate::rate_limit::{MemoryRateLimiter, RateLimiter};
use crate::routes::{
    audit, console, docs, health, keys, me, os, products, purchase, services, usage, wallet,
    webhooks,
};
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
    /// The consoles open in this process.
    pub consoles: Arc<crate::console::Consoles>,
    /// This process's Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
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
    let consoles = Arc::new(crate::console::Consoles::new(config.console_max_sessions));
    let config = Arc::new(config);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    Ok(AppState(Arc::new(AppStateInner {
        ops: Operations::new(
            Arc::clone(&store),
            Arc::clone(&config),
            cipher.clone(),
            Arc::clone(&drivers),
            Arc::clone(&wake),
            Arc::clone(&metrics),
        ),
        store,
        config,
        limiter,
        memory_limiter: (!shared).then_some(memory_limiter),
        touch: Arc::new(TouchThrottle::default()),
        drivers,
        cipher,
        wake,
        consoles,
        metrics,
    })))
}

/// Whether the configuration points at a database several instances share.
pub fn is_shared(config: &Config) -> bool {
    config
        .database_url
        .as_ref()
        .is_some_and(|url| advps_store::is_postgres_url(url.expose_secret()))
}

/// Opens the configured store: PostgreSQL for a `postgres://` URL, else
/// SQLite in the data directory; migrations run either way.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, advps_store::StoreError> {
    let pg = advps_store::PgPoolSettings {
        max_connections: config.db_max_connections,
        statement_timeout: Some(Duration::from_millis(config.db_statement_timeout_ms)),
        acquire_timeout: Duration::from_millis(config.db_acquire_timeout_ms),
        ..Default::default()
    };
    let url = config.database_url.as_ref().map(|url| url.expose_secret());
    advps_store::open_store_with(url, &config.data_dir, &pg).await
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

/// Who reaches a group of documented routes, and so which layer is put in
/// front of them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// `/api/v1/...` behind the key: authentication, then (for mutating
    /// calls) the audit log, then idempotent replay, in one layer (see
    /// `auth::authenticate`).
    Key,
    /// `/api/v1/me`: the key is checked without counting it.
    KeyUncounted,
    /// `/api/v1/...` that needs no key (the OpenAPI document).
    Open,
    /// Outside `/api/v1`, no key: liveness and the reference page.
    Site,
    /// The customer panel's page and session, behind the panel's headers.
    Panel,
}

/// Every documented route, by who reaches it. Each module's router declares
/// its routes once, from the handlers' `#[utoipa::path]`; the OpenAPI
/// document lists the paths in the order they come here (see
/// `openapi::document`), which is the order the published document has.
pub(crate) fn documented() -> Vec<(Access, OpenApiRouter<AppState>)> {
    use Access::*;
    vec![
        (Key, services::router()),
        (Key, usage::router()),
        (Key, console::router()),
        (Key, products::router()),
        (Key, os::router()),
        (Key, purchase::router()),
        (KeyUncounted, me::router()),
        (Key, keys::router()),
        (Key, wallet::router()),
        (Site, health::router()),
        (Open, docs::document_router()),
        (Site, docs::page_router()),
        (Key, webhooks::router()),
        (Key, audit::router()),
        (Panel, crate::panel::router()),
    ]
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    // Every route is declared with its whole path (as the OpenAPI document
    // names it) and merged rather than nested: a nested router strips its
    // prefix in a layer that is cloned for every request.
    let mut api = Router::new();
    let mut site = Router::new();
    let mut panel = Router::new();
    for (access, routes) in documented() {
        let (routes, _) = routes.split_for_parts();
        match access {
            Access::Key => {
                api = api.merge(routes.route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::authenticate,
                )))
            }
            Access::KeyUncounted => {
                api = api.merge(routes.route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::authenticate_without_quota,
                )))
            }
            Access::Open => api = api.merge(routes),
            Access::Site => site = site.merge(routes),
            Access::Panel => panel = panel.merge(routes),
        }
    }
    // The console's WebSocket, a plain route the document does not list:
    // its single-use ticket is its credential.
    let api = api.merge(console::websocket_router());
    // The customer panel reaches the same routes through its session.
    let panel = crate::panel::site(state.clone(), api.clone().with_state(state.clone()), panel);
    let max_body = state.config.max_body_bytes;
    let body_deadline = Duration::from_secs(state.config.body_read_timeout_secs);
    site.merge(api)
        .merge(panel)
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::record,
        ))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(middleware::from_fn_with_state(
            body_deadline,
            enforce_body_deadline,
        ))
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

/// Gives the client the configured time, from its headers, to send the
/// whole body: reading the body past it fails, and the request is answered
/// 408 (whatever the handler made of the failed read) and its connection
/// closed. Requests without a body pay nothing.
async fn enforce_body_deadline(
    State(deadline): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            expired: Arc::clone(&expired),
        })
    });
    let response = next.run(req).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!("request body not received in time");
    let mut response = ApiError::RequestTimeout.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // What has arrived is taken even past the deadline; only waiting
        // for more is refused.
        if let ready @ Poll::Ready(_) = Pin::new(&mut this.inner).poll_frame(cx) {
            return ready;
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(
                "request body not received in time",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The message of the answer to a connection past the cap.
pub const TOO_MANY_CONNECTIONS: &str = "Too many connections; retry later";

/// Serves the API on `listener` until `shutdown` completes, then lets
/// in-flight requests finish for at most the configured grace and closes
/// what is left. Background work (the sandbox sweeper, limiter
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
    let limits = Limits::of(&state.config);
    let app = router(state);
    let result = accept_loop(listener, app, limits, shutdown).await;
    let _ = stop_tx.send(true);
    for task in background.into_iter().chain(housekeeping) {
        let _ = task.await;
    }
    result
}

/// Most connections the metrics listener serves at once: scrapers are few,
/// and what is left of the cap belongs to the API.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Serves the Prometheus metrics router on its own listener, with the
/// API's header, idle and shutdown deadlines, so that a slow or idle client
/// holds no connection there either.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limits = Limits::of(&state.config);
    limits.max_connections = limits.max_connections.min(METRICS_MAX_CONNECTIONS);
    accept_loop(listener, crate::metrics::router(state), limits, shutdown).await
}

/// The connection limits of [`serve`], from the configuration.
#[derive(Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
}

impl Limits {
    fn of(config: &Config) -> Limits {
        Limits {
            header_read: Duration::from_secs(config.header_read_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
            max_connections: config.max_connections,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        }
    }
}

/// Accepts connections until `shutdown`, then drains them.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Refusing costs a task for a moment; past as many refusals again at
    // once, connections are closed without an answer.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // A finished connection's task keeps its memory until it is
            // joined: reap them as they end, not only on the next accept,
            // so a burst of connections is given back once it is over.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            // A connection reset before it was accepted is the client's
            // business; anything else (out of file descriptors) is the
            // server's, and retrying at once would spin.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            tracing::warn!(%remote, "connection refused: too many connections");
            continue;
        };
        let connection = serve_connection(
            stream,
            remote,
            app.clone(),
            http.clone(),
            limits.idle,
            closing_rx.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    // No new connections; idle ones close now, busy ones after their
    // current request.
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace over: closing the connections left"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection until it closes: after the idle timeout with no
/// request, or, once `closing` turns true, after its current request.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    idle: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` gave handlers.
            req.extensions_mut().insert(ConnectInfo(remote));
            let busy = activity.begin();
            let mut app = app.clone();
            let response = tower_service::Service::call(&mut app, req);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    let connection = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut winding_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended");
                }
                return;
            }
            _ = closing.wait_for(|closing| *closing), if !winding_down => {
                winding_down = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(idle), if !winding_down => {
                // Closes the connection if it is between requests; one whose
                // next request has begun arriving ends with that request (its
                // headers have their own deadline).
                winding_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether a connection has a request in flight, and since when it has had
/// none.
struct Activity(std::sync::Mutex<(usize, Instant)>);

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity(std::sync::Mutex::new((0, Instant::now())))
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        Busy(Arc::clone(self))
    }

    /// Completes once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = {
                let (in_flight, since) = *self.0.lock().unwrap_or_else(|e| e.into_inner());
                if in_flight > 0 {
                    idle
                } else {
                    match idle.checked_sub(since.elapsed()) {
                        Some(left) if !left.is_zero() => left,
                        _ => return,
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

/// Answers a connection past the cap with 503 in the error envelope and
/// closes it.
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::to_vec(&error_body(TOO_MANY_CONNECTIONS, None)).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        // Reads what the client sends until it closes: closing with unread
        // data would reset the connection, and the client could lose the
        // answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
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
        metrics: Arc::clone(&state.metrics),
    };
    let worker = tokio::spawn(worker.run(stop.clone()));
    let expiry = crate::expiry::Expiry {
        store: Arc::clone(&state.store),
        drivers: Arc::clone(&state.drivers),
        every: Duration::from_secs(state.config.expiry_check_secs),
        grace_ms: (state.config.expiry_grace_secs as i64).saturating_mul(1000),
    };
    let expiry = tokio::spawn(expiry.run(stop.clone()));
    let sampler = crate::worker::Sampler {
        ops: state.ops.clone(),
        owner: format!("{}-{}", std::process::id(), advps_domain::ids::key_id()),
        every: state.config.usage.sample_interval(),
    };
    let sampler = tokio::spawn(sampler.run(stop.clone()));
    let mut tasks = vec![sweeper, worker, expiry, sampler];
    tasks.push(tokio::spawn(crate::backup::run_schedule(
        Arc::clone(&state.store),
        Config::clone(&state.config),
        stop.clone(),
    )));
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
