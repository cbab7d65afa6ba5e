//! What client authors rely on beyond the reference: the OpenAPI document and the docs page
//! (served without a key), key introspection at `/api/v1/me` (free of quota), conditional
//! requests (`ETag` / `If-None-Match` → 304, free of quota; `Retry-After` while a task runs),
//! and the power modes of stop and reboot.

mod common;

use common::*;
use std::time::Duration;

const STATUS: &str = "/api/v1/services/vps_service_1/status";

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key_and_covers_the_api() {
    let server = TestServer::start();
    let resp = server.get_anon(OPENAPI_PATH).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    let doc = &resp.body;
    assert!(doc["openapi"]
        .as_str()
        .unwrap_or_default()
        .starts_with("3.1"));
    let scheme = &doc["components"]["securitySchemes"]["apiKey"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "x-api-key");
    for (method, path) in [
        ("post", "/api/v1/services/{serviceId}/start"),
        ("post", "/api/v1/services/{serviceId}/stop"),
        ("post", "/api/v1/services/{serviceId}/reboot"),
        ("post", "/api/v1/services/{serviceId}/get-ip"),
        ("get", "/api/v1/services/{serviceId}/status"),
        ("post", "/api/v1/services/{serviceId}/generate-password"),
        ("post", "/api/v1/services/{serviceId}/rebuild"),
        ("post", "/api/v1/services/{serviceId}/reset-mac"),
        ("post", "/api/v1/services/renew"),
        ("get", "/api/v1/services/task/{taskId}/status"),
        ("get", "/api/v1/products/stock"),
        ("get", "/api/v1/products/stock/{id}"),
        ("get", "/api/v1/os"),
        ("post", "/api/v1/purchase/linux"),
        ("post", "/api/v1/purchase/vps"),
        ("get", "/api/v1/purchase/{orderId}"),
        ("get", "/api/v1/me"),
        ("get", "/livez"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path}: no 200"
        );
        if path.starts_with("/api/v1/") {
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path}: no 401"
            );
            assert!(
                op["responses"]["429"].is_object(),
                "{method} {path}: no 429"
            );
            let headers = &op["responses"]["200"]["headers"];
            assert!(
                headers["RateLimit-Remaining"].is_object(),
                "{method} {path}"
            );
        }
    }
    // The reference's messages are there, with their examples.
    let start = &doc["paths"]["/api/v1/services/{serviceId}/start"]["post"]["responses"];
    assert_eq!(
        start["404"]["content"]["application/json"]["examples"]["e1"]["value"]["message"],
        SERVICE_NOT_FOUND
    );
    assert_eq!(
        start["200"]["content"]["application/json"]["example"]["message"],
        "VPS service started successfully"
    );
}

#[tokio::test]
async fn the_docs_page_is_self_contained() {
    let server = TestServer::start();
    let resp = server.get_anon("/docs").await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    let html = &resp.text;
    assert!(html.contains(OPENAPI_PATH), "the page loads the document");
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
}

#[tokio::test]
async fn me_describes_the_key_and_costs_no_quota() {
    let server = TestServer::start();
    let key = &server.test_key;
    let first = server.status(key, "vps_service_1").await;
    let (remaining, _) = assert_rate_limit_headers(&first, 1000);
    assert_eq!(remaining, 999);
    for _ in 0..3 {
        let resp = server.get("/api/v1/me", key).await;
        let data = assert_api_success(&resp, "API key retrieved successfully", "test");
        assert_eq!(assert_rate_limit_headers(&resp, 1000).0, 999);
        assert_eq!(data["account"], "demo");
        assert_eq!(data["keyPrefix"], "sk_test_");
        assert_eq!(data["keyLast4"], &key[key.len() - 4..]);
        assert!(
            data["keyId"].as_str().unwrap().starts_with("key_"),
            "{data}"
        );
        assert!(is_timestamp(data["createdAt"].as_str().unwrap()), "{data}");
        let limit = &data["rateLimit"];
        assert_eq!(limit["limit"], 1000);
        assert_eq!(limit["remaining"], 999);
        assert_eq!(limit["windowSeconds"], 900);
        assert!(limit["resetSeconds"].as_u64().unwrap() <= 900);
    }
    assert_eq!(server.get("/api/v1/me", key).await.data()["keyId"], {
        let id = server.key_id_of("demo", key);
        Value::from(id)
    });
    let next = server.status(key, "vps_service_1").await;
    assert_eq!(assert_rate_limit_headers(&next, 1000).0, 998);

    let resp = server.get_anon("/api/v1/me").await;
    assert_error(&resp, 401, UNAUTHORIZED);
}

#[tokio::test]
async fn me_answers_when_the_quota_is_used_up() {
    let server = TestServer::start_with_env(&[("ADVPS_RATE_LIMIT_TEST", "2")]);
    let key = &server.test_key;
    for _ in 0..2 {
        assert_eq!(server.status(key, "vps_service_1").await.status, 200);
    }
    let refused = server.status(key, "vps_service_1").await;
    assert_error(&refused, 429, "Too many requests: rate limit exceeded");
    let resp = server.get("/api/v1/me", key).await;
    let data = assert_api_success(&resp, "API key retrieved successfully", "test");
    assert_eq!(data["rateLimit"]["remaining"], 0);
    assert_eq!(resp.header_u64("ratelimit-remaining"), 0);
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_at_no_quota_cost() {
    let server = TestServer::start();
    let key = &server.test_key;
    let first = server.status(key, "vps_service_1").await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("status sends an ETag");
    let (before, _) = assert_rate_limit_headers(&first, 1000);

    // Uptime grows every second but is not part of the tag: the state is the same.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let resp = server
            .get_with_headers(STATUS, key, &[("if-none-match", &etag)])
            .await;
        assert_eq!(resp.status, 304, "{}", resp.text);
        assert!(resp.text.is_empty());
        assert_eq!(resp.header("etag").as_deref(), Some(etag.as_str()));
        assert_eq!(assert_rate_limit_headers(&resp, 1000).0, before);
    }
    // A tag in a list, and `*`, match too; another tag does not.
    let listed = format!("\"nope\", {etag}");
    let resp = server
        .get_with_headers(STATUS, key, &[("if-none-match", &listed)])
        .await;
    assert_eq!(resp.status, 304);
    let resp = server
        .get_with_headers(STATUS, key, &[("if-none-match", "\"nope\"")])
        .await;
    assert_success(&resp, "Service status retrieved successfully");
    assert_eq!(assert_rate_limit_headers(&resp, 1000).0, before - 1);

    // The state changes: the tag changes, and the old one gets the full answer.
    assert_eq!(
        server.action(key, "vps_service_1", "stop").await.status,
        200
    );
    let resp = server
        .get_with_headers(STATUS, key, &[("if-none-match", &etag)])
        .await;
    let data = assert_success(&resp, "Service status retrieved successfully");
    assert_eq!(data["runningStatus"], "STOPPED");
    assert_ne!(resp.header("etag").unwrap(), etag);

    // Product stock, listed and by id.
    for path in [
        "/api/v1/products/stock?type=linux&page=1&limit=10",
        "/api/v1/products/stock/prod_abc123",
    ] {
        let resp = server.get(path, key).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let tag = resp.header("etag").expect("stock sends an ETag");
        let (left, _) = assert_rate_limit_headers(&resp, 1000);
        let again = server
            .get_with_headers(path, key, &[("if-none-match", &tag)])
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(assert_rate_limit_headers(&again, 1000).0, left);
    }
    // Another page is another representation.
    let one = server
        .get("/api/v1/products/stock?page=1&limit=2", key)
        .await;
    let two = server
        .get("/api/v1/products/stock?page=2&limit=2", key)
        .await;
    assert_ne!(one.header("etag"), two.header("etag"));
}

#[tokio::test]
async fn a_running_task_sends_retry_after_and_its_etag() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "60")]);
    let key = &server.test_key;
    let task_id = server
        .start_rebuild(key, "vps_service_1", "debian-12")
        .await;
    let resp = server.task(key, &task_id).await;
    let data = assert_success(&resp, "Task status retrieved successfully");
    assert_eq!(data["status"], "PENDING", "{data}");
    let retry = resp.header_u64("retry-after");
    assert!((3..=5).contains(&retry), "Retry-After {retry}");
    let etag = resp.header("etag").expect("task status sends an ETag");
    let (left, _) = assert_rate_limit_headers(&resp, 1000);
    let path = format!("/api/v1/services/task/{task_id}/status");
    let again = server
        .get_with_headers(&path, key, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304, "{}", again.text);
    assert_eq!(assert_rate_limit_headers(&again, 1000).0, left);
    assert!(again.header("retry-after").is_some());
}

#[tokio::test]
async fn a_finished_task_has_no_retry_after_and_a_new_etag() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "1")]);
    let key = &server.test_key;
    let task_id = server
        .start_rebuild(key, "vps_service_1", "debian-12")
        .await;
    let first = server.task(key, &task_id).await;
    let etag = first.header("etag").unwrap();
    server
        .wait_task(
            key,
            &task_id,
            Duration::from_millis(300),
            Duration::from_secs(30),
        )
        .await;
    let path = format!("/api/v1/services/task/{task_id}/status");
    let done = server
        .get_with_headers(&path, key, &[("if-none-match", &etag)])
        .await;
    let data = assert_success(&done, "Task status retrieved successfully");
    assert_eq!(data["status"], "COMPLETED");
    assert!(done.header("retry-after").is_none());
    assert_ne!(done.header("etag").unwrap(), etag);
}

#[tokio::test]
async fn stop_and_reboot_take_an_optional_power_mode() {
    let server = TestServer::start();
    let key = &server.test_key;
    let path = |action: &str| format!("/api/v1/services/vps_service_1/{action}");

    // No body: graceful, as before.
    let resp = server.action(key, "vps_service_1", "stop").await;
    let data = assert_api_success(&resp, "VPS service stopped successfully", "test");
    assert_eq!(data["status"], "STOPPED");
    assert_eq!(data["powerMode"], "graceful");
    assert!(data.get("powerMode").is_some());
    let resp = server.action(key, "vps_service_1", "start").await;
    let data = assert_api_success(&resp, "VPS service started successfully", "test");
    assert!(data.get("powerMode").is_none(), "{data}");

    // Force.
    let resp = server
        .post_json(&path("stop"), key, &json!({"mode": "force"}))
        .await;
    let data = assert_api_success(&resp, "VPS service stopped successfully", "test");
    assert_eq!(data["powerMode"], "forced");
    assert_eq!(
        server.status_data(key, "vps_service_1").await["runningStatus"],
        "STOPPED"
    );
    server.action(key, "vps_service_1", "start").await;

    // Reboot, both ways; an empty JSON object and an empty body are the default.
    for (body, word) in [
        (json!({"mode": "graceful", "timeoutSeconds": 5}), "graceful"),
        (json!({"mode": "force"}), "forced"),
        (json!({}), "graceful"),
        (json!({"timeoutSeconds": 600, "extra": true}), "graceful"),
    ] {
        let resp = server.post_json(&path("reboot"), key, &body).await;
        let data = assert_api_success(&resp, "VPS service rebooted successfully", "test");
        assert_eq!(data["status"], "RUNNING");
        assert_eq!(data["powerMode"], word, "{body}");
    }
    let resp = server
        .request(
            reqwest::Method::POST,
            &path("reboot"),
            Some(key),
            Some("application/json"),
            Some(Vec::new()),
        )
        .await;
    assert_eq!(resp.data()["powerMode"], "graceful", "{}", resp.text);

    // Refused, and nothing changes.
    for (body, message) in [
        (
            json!({"mode": "hard"}),
            "Invalid mode: must be 'graceful' or 'force'",
        ),
        (
            json!({"mode": null, "timeoutSeconds": 0}),
            "Invalid timeoutSeconds: must be an integer from 1 to 600",
        ),
        (
            json!({"timeoutSeconds": 601}),
            "Invalid timeoutSeconds: must be an integer from 1 to 600",
        ),
        (
            json!({"timeoutSeconds": "10"}),
            "Invalid timeoutSeconds: must be an integer from 1 to 600",
        ),
        (json!(["force"]), "The request body must be a JSON object"),
    ] {
        for action in ["stop", "reboot"] {
            let resp = server.post_json(&path(action), key, &body).await;
            assert_error(&resp, 400, message);
        }
    }
    assert_eq!(
        server.status_data(key, "vps_service_1").await["runningStatus"],
        "RUNNING"
    );
}

/// Every `$ref` of a value, in document order.
fn collect_refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner.as_str()) {
                    ("$ref", Some(target)) => out.push(target),
                    _ => collect_refs(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_of_the_openapi_document_resolves() {
    // A dangling `$ref` makes standard validators reject the document and
    // generators drop the operations that use it (the stock and OS lists
    // did once), so every one must point at something the document defines.
    let server = TestServer::start();
    let doc = server.openapi().await;
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(refs.len() > 50, "too few references: {}", refs.len());
    for target in refs {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target}: not a local reference"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} does not resolve in the served document"
        );
    }
    for filter in ["StockFilter", "OsFilter"] {
        let schema = &doc["components"]["schemas"][filter];
        assert!(schema["enum"].is_array(), "{filter}: {schema}");
    }
    // Lists page the same way, so clients can page them all alike.
    for (method, path) in [
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/webhooks/{webhookId}/deliveries"),
    ] {
        let data = &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"];
        let name = data
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or_default()
            .replace("ApiResponse_", "");
        let pagination = &doc["components"]["schemas"][name.as_str()]["properties"]["pagination"];
        assert_eq!(
            pagination["$ref"], "#/components/schemas/PageInfo",
            "{method} {path}"
        );
    }
}
