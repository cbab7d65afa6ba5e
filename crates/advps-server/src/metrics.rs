//! Prometheus metrics, served on their own listen address so they need not
//! be exposed with the API: requests by route and status with latency
//! histograms, rate-limit rejections, the task queue's depth, task
//! durations by kind and outcome, and driver call errors by driver.
//!
//! Counters live in process memory (each instance reports its own, as
//! Prometheus expects); the queue depth is read from the shared database
//! at scrape time.
//!
//! The families are `prometheus-client`'s (the Prometheus project's own Rust
//! client), held in a [`Metrics`] that the application state owns, so there
//! is no process-wide registry: a test or a second server in one process
//! counts on its own. Each label set has its own atomic counter or its own
//! histogram, so recording a request contends only with requests on the
//! same route, never with every request and never with a scrape's
//! rendering. The exposition is the 0.0.4 text format, whose `# HELP` and
//! `# TYPE` lines name counters with their `_total` suffix and whose bucket
//! bounds are written as Prometheus's own clients write them (`le="1"`,
//! `le="0.0005"`), so series and dashboards keep their names.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

const HTTP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const TASK_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    status: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn task_histogram() -> Histogram {
    Histogram::new(TASK_BUCKETS)
}

/// This process's metric families and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    rate_limited: Counter,
    tasks: HistogramFamily<TaskLabels>,
    driver_errors: Family<DriverLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty families, registered under the names the README documents.
    /// Counters are registered without `_total`: the encoder adds it.
    pub fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RouteLabels> = Family::new_with_constructor(http_histogram);
        let rate_limited = Counter::default();
        let tasks: HistogramFamily<TaskLabels> = Family::new_with_constructor(task_histogram);
        let driver_errors = Family::<DriverLabels, Counter>::default();
        let mut registry = Registry::default();
        // The registry adds the closing full stop to each help text.
        registry.register(
            "advps_http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "advps_http_request_duration_seconds",
            "Time to answer, by route",
            latency.clone(),
        );
        registry.register(
            "advps_rate_limit_rejections",
            "Requests refused with 429 by the per-key quota",
            rate_limited.clone(),
        );
        registry.register(
            "advps_task_duration_seconds",
            "Task run time by kind and outcome (this worker)",
            tasks.clone(),
        );
        registry.register(
            "advps_driver_errors",
            "Failed hypervisor calls by driver",
            driver_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            rate_limited,
            tasks,
            driver_errors,
        }
    }

    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn task_finished(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.tasks
            .get_or_create(&TaskLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn driver_error(&self, driver: &str) {
        self.driver_errors
            .get_or_create(&DriverLabels {
                driver: driver.to_string(),
            })
            .inc();
    }

    /// The text exposition format, with the queue depth (pending, running)
    /// when the database answered.
    pub fn render(&self, queue: Option<(i64, i64)>) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        if let Some((pending, running)) = queue {
            // Read at scrape time, so it lives in a registry of its own for
            // this scrape: concurrent scrapes never see each other's reading.
            let depth = Family::<QueueLabels, Gauge>::default();
            depth
                .get_or_create(&QueueLabels { status: "PENDING" })
                .set(pending);
            depth
                .get_or_create(&QueueLabels {
                    status: "IN_PROGRESS",
                })
                .set(running);
            let mut scrape = Registry::default();
            scrape.register(
                "advps_task_queue_depth",
                "Unfinished tasks in the shared database, by status",
                depth,
            );
            let _ = prometheus_text::encode(&mut out, &scrape);
        }
        out
    }
}

/// Route layer: counts each routed request under its route template.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics.request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics` on the metrics address.
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let queue = state.store.task_queue_depth().await.ok();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            prometheus_text::CONTENT_TYPE,
        )],
        state.metrics.render(queue),
    )
        .into_response()
}

/// The metrics server's router.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(get_metrics))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the README and the dashboards rely on, written exactly.
    #[test]
    fn exposition_keeps_the_documented_names_and_cumulative_buckets() {
        let m = Metrics::new();
        let route = "/api/v1/services/{service_id}/status";
        m.request(route, "GET", 200, Duration::from_millis(2));
        m.request(route, "GET", 200, Duration::from_millis(20));
        m.rate_limited();
        m.task_finished("REBUILD", "completed", Duration::from_secs(7));
        m.driver_error("lxd");
        let text = m.render(Some((2, 1)));
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "# HELP advps_http_requests_total HTTP requests by route, method and status.",
            "# TYPE advps_http_requests_total counter",
            "advps_http_requests_total{route=\"/api/v1/services/{service_id}/status\",method=\"GET\",status=\"200\"} 2",
            "# HELP advps_http_request_duration_seconds Time to answer, by route.",
            "# TYPE advps_http_request_duration_seconds histogram",
            "advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"0.0005\"} 0",
            "advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"0.005\"} 1",
            "advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"0.025\"} 2",
            "advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"5\"} 2",
            "advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"+Inf\"} 2",
            "advps_http_request_duration_seconds_sum{route=\"/api/v1/services/{service_id}/status\"} 0.022",
            "advps_http_request_duration_seconds_count{route=\"/api/v1/services/{service_id}/status\"} 2",
            "# HELP advps_rate_limit_rejections_total Requests refused with 429 by the per-key quota.",
            "# TYPE advps_rate_limit_rejections_total counter",
            "advps_rate_limit_rejections_total 1",
            "# HELP advps_task_queue_depth Unfinished tasks in the shared database, by status.",
            "# TYPE advps_task_queue_depth gauge",
            "advps_task_queue_depth{status=\"PENDING\"} 2",
            "advps_task_queue_depth{status=\"IN_PROGRESS\"} 1",
            "# HELP advps_task_duration_seconds Task run time by kind and outcome (this worker).",
            "# TYPE advps_task_duration_seconds histogram",
            "advps_task_duration_seconds_bucket{kind=\"REBUILD\",outcome=\"completed\",le=\"5\"} 0",
            "advps_task_duration_seconds_bucket{kind=\"REBUILD\",outcome=\"completed\",le=\"10\"} 1",
            "advps_task_duration_seconds_bucket{kind=\"REBUILD\",outcome=\"completed\",le=\"1800\"} 1",
            "advps_task_duration_seconds_count{kind=\"REBUILD\",outcome=\"completed\"} 1",
            "# HELP advps_driver_errors_total Failed hypervisor calls by driver.",
            "# TYPE advps_driver_errors_total counter",
            "advps_driver_errors_total{driver=\"lxd\"} 1",
        ] {
            assert!(lines.contains(&line), "missing {line:?} in:\n{text}");
        }
        // Twelve bounds and +Inf per route, nine and +Inf per task label set.
        let buckets = |name: &str| lines.iter().filter(|l| l.starts_with(name)).count();
        assert_eq!(buckets("advps_http_request_duration_seconds_bucket{"), 13);
        assert_eq!(buckets("advps_task_duration_seconds_bucket{"), 10);
        // Without a database reading there is no queue depth at all.
        assert!(!m.render(None).contains("advps_task_queue_depth"));
    }

    /// Two states count apart: nothing is shared through the process.
    #[test]
    fn each_metrics_counts_on_its_own() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.rate_limited();
        assert!(a
            .render(None)
            .contains("advps_rate_limit_rejections_total 1\n"));
        assert!(b
            .render(None)
            .contains("advps_rate_limit_rejections_total 0\n"));
    }
}
