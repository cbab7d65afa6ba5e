//! Prometheus metrics, served on their own listen address so they need not
//! be exposed with the API: requests by route and status with latency
//! histograms, rate-limit rejections, the task queue's depth, task
//! durations by kind and outcome, and driver call errors by driver.
//!
//! Counters live in process memory (each instance reports its own, as
//! Prometheus expects); the queue depth is read from the shared database
//! at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

const HTTP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const TASK_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], value: f64) {
        if self.counts.len() != buckets.len() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, le) in buckets.iter().enumerate() {
            if value <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in buckets.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    rate_limited: AtomicU64,
    tasks: Mutex<BTreeMap<(String, String), Histogram>>,
    driver_errors: Mutex<BTreeMap<String, u64>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_default()
            .observe(&HTTP_BUCKETS, elapsed.as_secs_f64());
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn task_finished(&self, kind: &str, outcome: &str, elapsed: Duration) {
        lock(&self.tasks)
            .entry((kind.to_string(), outcome.to_string()))
            .or_default()
            .observe(&TASK_BUCKETS, elapsed.as_secs_f64());
    }

    pub fn driver_error(&self, driver: &str) {
        *lock(&self.driver_errors)
            .entry(driver.to_string())
            .or_default() += 1;
    }

    /// The text exposition format.
    pub fn render(&self, queue: Option<(i64, i64)>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP advps_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE advps_http_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "advps_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP advps_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE advps_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "advps_http_request_duration_seconds",
                &format!("route=\"{route}\""),
                &HTTP_BUCKETS,
            );
        }
        out.push_str("# HELP advps_rate_limit_rejections_total Requests refused with 429 by the per-key quota.\n");
        out.push_str("# TYPE advps_rate_limit_rejections_total counter\n");
        let _ = writeln!(
            out,
            "advps_rate_limit_rejections_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        if let Some((pending, running)) = queue {
            out.push_str("# HELP advps_task_queue_depth Unfinished tasks in the shared database, by status.\n");
            out.push_str("# TYPE advps_task_queue_depth gauge\n");
            let _ = writeln!(
                out,
                "advps_task_queue_depth{{status=\"PENDING\"}} {pending}"
            );
            let _ = writeln!(
                out,
                "advps_task_queue_depth{{status=\"IN_PROGRESS\"}} {running}"
            );
        }
        out.push_str(
            "# HELP advps_task_duration_seconds Task run time by kind and outcome (this worker).\n",
        );
        out.push_str("# TYPE advps_task_duration_seconds histogram\n");
        for ((kind, outcome), h) in lock(&self.tasks).iter() {
            h.render(
                &mut out,
                "advps_task_duration_seconds",
                &format!("kind=\"{kind}\",outcome=\"{outcome}\""),
                &TASK_BUCKETS,
            );
        }
        out.push_str("# HELP advps_driver_errors_total Failed hypervisor calls by driver.\n");
        out.push_str("# TYPE advps_driver_errors_total counter\n");
        for (driver, n) in lock(&self.driver_errors).iter() {
            let _ = writeln!(out, "advps_driver_errors_total{{driver=\"{driver}\"}} {n}");
        }
        out
    }
}

/// Route layer: counts each routed request under its route template.
pub async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    global().request(
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
            "text/plain; version=0.0.4",
        )],
        global().render(queue),
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

    #[test]
    fn exposition_has_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request(
            "/api/v1/services/{service_id}/status",
            "GET",
            200,
            Duration::from_millis(2),
        );
        m.request(
            "/api/v1/services/{service_id}/status",
            "GET",
            200,
            Duration::from_millis(20),
        );
        m.rate_limited();
        m.task_finished("REBUILD", "completed", Duration::from_secs(7));
        m.driver_error("lxd");
        let text = m.render(Some((2, 1)));
        assert!(text.contains("advps_http_requests_total{route=\"/api/v1/services/{service_id}/status\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"0.005\"} 1"));
        assert!(text.contains("advps_http_request_duration_seconds_bucket{route=\"/api/v1/services/{service_id}/status\",le=\"+Inf\"} 2"));
        assert!(text.contains("advps_rate_limit_rejections_total 1"));
        assert!(text.contains("advps_task_queue_depth{status=\"PENDING\"} 2"));
        assert!(text.contains(
            "advps_task_duration_seconds_count{kind=\"REBUILD\",outcome=\"completed\"} 1"
        ));
        assert!(text.contains("advps_driver_errors_total{driver=\"lxd\"} 1"));
    }
}
