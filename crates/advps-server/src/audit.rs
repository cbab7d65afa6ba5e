//! The audit log: every mutating call on the API is recorded — when, which
//! account and key, the mode, method and path, the service it names, the
//! outcome, the request id, the idempotency key, and the task or order it
//! started — with the caller's address. Bodies are never recorded, so no
//! password or secret can reach the log.
//!
//! The response of an idempotent request is stored here too, in the same
//! commit as its audit entry: one turn of SQLite's one writer per request
//! rather than two.

use std::future::Future;
use std::net::SocketAddr;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

use advps_domain::time;
use advps_store::{IdempotentResponse, NewAuditEntry};

use crate::caller::Caller;
use crate::envelope::RequestContext;
use crate::AppState;

/// Responses larger than this are not read for task and order ids.
const MAX_INSPECTED_BODY: usize = 256 * 1024;

/// The service a path names: `/api/v1/services/{id}/...`.
pub fn service_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/services/")?;
    let (id, tail) = rest.split_once('/')?;
    (!tail.is_empty() && id != "task" && !id.is_empty()).then(|| id.to_string())
}

/// Runs `inner` on `req` and, for a mutating call, records it with its
/// outcome (and the task or order its answer names).
pub async fn record<F, Fut>(state: &AppState, mut req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return inner(req).await;
    }
    let method = req.method().to_string();
    // Inside a nested router the URI is relative; the original one is whole.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let request_id = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(255).collect::<String>());
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // This layer runs inside authentication: the caller is known.
    let caller = req.extensions().get::<Caller>().cloned();
    req.extensions_mut()
        .insert(crate::idempotency::AuditFinishes);
    let response = inner(req).await;
    let (mut parts, body) = response.into_parts();
    let stored = parts.extensions.remove::<IdempotentResponse>();
    let (bytes, ids) = match to_bytes(body, MAX_INSPECTED_BODY).await {
        Ok(bytes) => {
            let ids = serde_json::from_slice::<Value>(&bytes)
                .map(|v| {
                    let data = &v["data"];
                    (
                        data["taskId"].as_str().map(str::to_string),
                        data["order"]["orderId"]
                            .as_str()
                            .or_else(|| data["orderId"].as_str())
                            .map(str::to_string),
                    )
                })
                .unwrap_or((None, None));
            (bytes, ids)
        }
        Err(_) => (Default::default(), (None, None)),
    };
    let entry = NewAuditEntry {
        at: time::now_millis(),
        account_id: caller.as_ref().map(|c| c.account_id),
        key_id: caller.as_ref().map(|c| c.key_id.clone()),
        mode: caller.as_ref().map(|c| c.mode),
        method,
        service_id: service_of(&path),
        path,
        status: parts.status.as_u16(),
        request_id,
        idempotency_key,
        task_id: ids.0,
        order_id: ids.1,
        source,
    };
    match stored {
        None => {
            if let Err(e) = state.store.record_audit(&entry).await {
                tracing::error!(error = %e, "could not write the audit log");
            }
        }
        Some(stored) => {
            if let Err(e) = state.store.record_audit_finishing(&entry, &stored).await {
                // Each on its own, in case only the one commit failed.
                tracing::warn!(error = %e, "could not write an audit entry with its stored response");
                crate::idempotency::finish(state, &stored).await;
                if let Err(e) = state.store.record_audit(&entry).await {
                    tracing::error!(error = %e, "could not write the audit log");
                }
            }
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn services_named_by_paths() {
        assert_eq!(
            service_of("/api/v1/services/vps_service_1/start").as_deref(),
            Some("vps_service_1")
        );
        assert_eq!(service_of("/api/v1/services/task/abc/status"), None);
        assert_eq!(service_of("/api/v1/services/renew"), None);
        assert_eq!(service_of("/api/v1/purchase/linux"), None);
    }
}
