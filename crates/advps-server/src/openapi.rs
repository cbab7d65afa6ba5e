//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! `#[utoipa::path]` annotations and the typed `data` structs they send.
//! The paths are not listed here: they come from the routers the server
//! serves (`server::documented`), so a route and its documentation are
//! declared once, by the handler's annotation.
//!
//! What every authenticated operation shares is added here once, by
//! [`Common`], instead of on each handler: the `x-api-key` scheme, the
//! `RateLimit-*` and `X-Request-Id` headers, the 401/429/500 answers any of
//! them can give, the 400/413/415 answers of a JSON body, and an example
//! error envelope for each message an error response's description lists
//! (one message per line).

use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::envelope::{ApiMode, ErrorEnvelope, ErrorWord, SuccessWord};
use crate::routes::{self, os, products};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

const OVERVIEW: &str = "Programmatically manage virtual private servers and Linux containers — \
start/stop, configure IPs, rebuild, generate passwords, read product stock, buy and renew.

**Authentication.** Every `/api/v1` request carries its API key in the `x-api-key` header: \
`sk_test_` + 32 characters for the sandbox (simulated services, safe to experiment with), \
`sk_live_` + 32 characters for real machines. A missing, malformed, unknown or revoked key \
gets 401 `Missing or invalid API key`.

**Envelope.** Success: `{status: \"success\", message, data, timestamp}` with HTTP 200; \
`data` carries `mode` and `requestId` (also sent as `X-Request-Id`). Error: \
`{status: \"error\", message, errors, timestamp}`, never with a 2xx status.

**Rate limits.** Per key, a 15-minute window opened by the key's first request: 1000 \
requests for test keys, 100 for live keys. Every authenticated answer carries \
`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and the IETF draft pair \
`RateLimit-Policy` / `RateLimit`; over the limit, 429 with `Retry-After`. \
`GET /api/v1/me` and `304 Not Modified` answers cost no quota.

**Conditional requests.** Task status, service status and product stock send an `ETag`; \
send it back in `If-None-Match` and an unchanged resource answers `304 Not Modified`. \
Task status also sends `Retry-After` while the task runs.

**Usage.** Service status carries `data.resources`, measured on the engine (simulated in the \
sandbox); `GET /api/v1/services/{serviceId}/metrics` returns its history (24 hours as sampled, \
7 days of 5-minute averages, 30 days hourly); `GET /api/v1/services` lists the caller's services.

**Consoles.** `POST /api/v1/services/{serviceId}/console` returns a single-use WebSocket URL \
(`ws://HOST/api/v1/console/TICKET`, valid 60 s, opened without a key). On the WebSocket, \
binary frames carry the console's bytes both ways; the client sends terminal sizes as text \
frames `{\"type\":\"resize\",\"cols\":N,\"rows\":M}`. The server closes it with 4000 \
(service stopped), 4001 (rebuild begun), 4003 (key revoked), 4004 (service removed), 1000 \
(console ended) or 1011 (engine console failed).

**Customer panel.** `/panel` is a page for customers, served by this binary: it signs in \
with an API key at `POST /panel/session` (an HttpOnly session cookie; the key is not kept) \
and calls every operation below at `/panel/api/v1/...` with that cookie and the session's \
`X-CSRF-Token`, with the same answers, quota, audit and idempotency as `/api/v1/...`.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ADVPS API",
        version = "1.0",
        description = OVERVIEW,
    ),
    // Types only parameters name (the `type` filters) are not reached from a
    // body, so utoipa does not collect them: listed here, or their `$ref`s dangle.
    components(schemas(
        ErrorEnvelope,
        ErrorWord,
        SuccessWord,
        ApiMode,
        routes::ServiceTypeWord,
        products::StockFilter,
        os::OsFilter,
        routes::usage::ServiceTypeFilter,
        routes::usage::RunningStatusFilter,
    )),
    security(("apiKey" = [])),
    tags(
        (name = "Services", description = "Control and monitor your VPS and Linux container services."),
        (name = "Products", description = "Query real-time product stock levels."),
        (name = "Catalogue", description = "The operating systems services can run."),
        (name = "Purchase", description = "Buy services and follow their orders."),
        (name = "Account", description = "The calling key and its quota, the account's API keys and its wallet."),
        (name = "Webhooks", description = "Signed event notifications and their delivery log."),
        (name = "Audit", description = "Every mutating call of the account."),
        (name = "Operations", description = "Liveness and this documentation; no key needed."),
        (name = "Panel", description = "The customer panel at /panel and its session; the page calls /panel/api/v1/... with the session cookie."),
    )
)]
pub struct ApiDoc;

/// The document as served, built once: [`ApiDoc`] with the paths of the
/// very routers the server serves (`server::documented`, in its order),
/// then what all operations share ([`Common`]).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for (_, routes) in crate::server::documented() {
            doc.merge(routes.into_openapi());
        }
        Common.modify(&mut doc);
        doc.to_json().unwrap_or_else(|_| "{}".into())
    })
}

/// Adds what all operations share; see the module documentation.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "sk_test_ (sandbox) or sk_live_ (real machines) followed by 32 characters.",
            ))),
        );
        components.add_security_scheme(
            "panelSession",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::panel::session::COOKIE,
                "The customer panel's session, set by Panel: Sign In.",
            ))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let authenticated = path.starts_with("/api/v1/") && path != OPENAPI_PATH;
            let operations = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (false, item.put.as_mut()),
                (false, item.patch.as_mut()),
                (false, item.delete.as_mut()),
            ];
            for (post, op) in operations {
                if let Some(op) = op {
                    complete(op, authenticated, post);
                }
            }
        }
    }
}

fn complete(op: &mut Operation, authenticated: bool, post: bool) {
    let responses = &mut op.responses.responses;
    if authenticated {
        add_error(
            responses,
            401,
            "Missing or invalid API key",
            "The key is missing, malformed, unknown or revoked.",
        );
        add_error(
            responses,
            400,
            crate::auth::MULTIPLE_KEYS,
            "`x-api-key` was sent more than once.",
        );
        add_error(
            responses,
            429,
            "Too many requests: rate limit exceeded",
            "Over the key's quota: wait `Retry-After` seconds.",
        );
        add_error(
            responses,
            500,
            "Internal server error",
            "Something unexpected failed (the detail is logged only).",
        );
        add_error(
            responses,
            503,
            crate::error::STORAGE_UNAVAILABLE,
            "The storage cannot take the change now (a full disk, a database server restarting): \
             retry after `Retry-After` seconds. Reads keep working.",
        );
    }
    if authenticated && post {
        // The idempotency layer answers these on any POST that sends an
        // `Idempotency-Key`.
        add_error(
            responses,
            400,
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            "",
        );
        add_error(
            responses,
            409,
            "A request with this Idempotency-Key is still being processed",
            "",
        );
        add_error(
            responses,
            422,
            "Idempotency-Key was already used with a different request",
            "",
        );
    }
    if op.request_body.is_some() {
        add_error(responses, 400, "Malformed JSON body", "");
        add_error(
            responses,
            413,
            "Request body too large",
            "The body is over the configured limit (64 KiB by default).",
        );
        add_error(
            responses,
            415,
            "Content-Type must be application/json",
            "A non-empty body must be sent as application/json.",
        );
    }
    let conditional = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name.eq_ignore_ascii_case("If-None-Match"));
    let polled_task = op.operation_id.as_deref() == Some("getTaskStatus");
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        add_header(
            response,
            "X-Request-Id",
            Type::String,
            "The request's id, `req_<epoch ms>_<9 chars>` (also `data.requestId`).",
        );
        // A request refused at authentication has no quota to report.
        if authenticated && status != "401" {
            add_rate_limit_headers(response);
        }
        if status == "429" || status == "503" {
            add_header(
                response,
                "Retry-After",
                Type::Integer,
                "Seconds until a new request can succeed.",
            );
        }
        if conditional && (status == "200" || status == "304") {
            add_header(
                response,
                "ETag",
                Type::String,
                "A weak tag of `data` without `requestId`; send it back in `If-None-Match`.",
            );
            if polled_task {
                add_header(
                    response,
                    "Retry-After",
                    Type::Integer,
                    "While the task is PENDING or IN_PROGRESS: seconds (3 to 5) before polling again.",
                );
            }
        }
        if status.starts_with('4') || status.starts_with('5') {
            add_error_examples(response);
        }
    }
}

/// Declares an error status that the operation does not declare itself, or
/// adds the generic message to the one it declares.
fn add_error(
    responses: &mut std::collections::BTreeMap<String, RefOr<Response>>,
    status: u16,
    message: &str,
    note: &str,
) {
    let key = status.to_string();
    match responses.get_mut(&key) {
        Some(RefOr::T(existing)) => {
            if !existing.description.lines().any(|l| l == message) {
                existing.description = format!("{}\n{message}", existing.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut description = message.to_string();
            if !note.is_empty() {
                // Notes are not messages: keep them out of the message lines.
                description = format!("{message}\n\n{note}");
            }
            responses.insert(
                key,
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
    }
}

fn add_header(response: &mut Response, name: &str, ty: Type, description: &str) {
    response.headers.entry(name.to_string()).or_insert_with(|| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(ty))
            .description(Some(description))
            .build()
    });
}

fn add_rate_limit_headers(response: &mut Response) {
    add_header(
        response,
        "RateLimit-Limit",
        Type::Integer,
        "Requests allowed per window (1000 for test keys, 100 for live keys by default).",
    );
    add_header(
        response,
        "RateLimit-Remaining",
        Type::Integer,
        "Requests left in the current window.",
    );
    add_header(
        response,
        "RateLimit-Reset",
        Type::Integer,
        "Seconds until the window closes.",
    );
    add_header(
        response,
        "RateLimit-Policy",
        Type::String,
        "IETF draft form of the policy, e.g. `\"default\";q=1000;w=900`.",
    );
    add_header(
        response,
        "RateLimit",
        Type::String,
        "IETF draft form of the state, e.g. `\"default\";r=999;t=900`.",
    );
}

/// One example error envelope per message line of the description (the
/// lines before a blank line; what follows is a note).
fn add_error_examples(response: &mut Response) {
    let messages: Vec<String> = response
        .description
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let Some(content) = response.content.get_mut("application/json") else {
        return;
    };
    if content.example.is_some() || !content.examples.is_empty() {
        return;
    }
    for (i, message) in messages.iter().enumerate() {
        let example = ExampleBuilder::new()
            .summary(message.clone())
            .value(Some(error_example(message)))
            .build();
        content
            .examples
            .insert(format!("e{}", i + 1), RefOr::T(example));
    }
}

fn error_example(message: &str) -> Value {
    json!({
        "status": "error",
        "message": message,
        "errors": null,
        "timestamp": "2024-01-30T12:00:00.000Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_key_scheme() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"]["apiKey"]["name"],
            "x-api-key"
        );
        let status = &doc["paths"]["/api/v1/services/{serviceId}/status"]["get"];
        assert!(status["responses"]["304"].is_object());
        assert!(status["responses"]["401"].is_object());
        assert!(status["responses"]["200"]["headers"]["ETag"].is_object());
        assert!(status["responses"]["200"]["headers"]["RateLimit-Remaining"].is_object());
        let livez = &doc["paths"]["/livez"]["get"];
        assert!(livez["responses"]["401"].is_null());
    }

    /// The paths come from the routers, in the order they are registered:
    /// the document must stay the one the SDKs were generated from
    /// (`sdk/openapi.json`, written by `sdk/generate`), order included.
    #[test]
    fn the_document_is_the_one_the_sdks_were_generated_from() {
        let published =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/openapi.json");
        let published: Value =
            serde_json::from_str(&std::fs::read_to_string(published).unwrap()).unwrap();
        let served: Value = serde_json::from_str(document()).unwrap();
        let paths = |doc: &Value| -> Vec<String> {
            let paths = doc["paths"].as_object().unwrap();
            paths.keys().cloned().collect()
        };
        assert_eq!(paths(&served), paths(&published));
        // Maps compare without regard to order: compare the text.
        let (served, published) = (served.to_string(), published.to_string());
        assert!(
            served == published,
            "the served document differs from sdk/openapi.json: run sdk/generate --check"
        );
    }
}
