//! Generic HTTP errors, all in the JSON error envelope: unknown route (404), wrong method (405),
//! malformed JSON (400), non-JSON content type on rebuild (415) and oversized bodies (413).

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn unknown_route_is_404() {
    let server = TestServer::start();
    let key = &server.test_key;
    for path in [
        "/api/v1/nope",
        "/api/v2/services/vps_service_1/status",
        "/api/v1/services/vps_service_1/explode",
        "/",
    ] {
        let resp = server.get(path, key).await;
        assert_error(&resp, 404, "Route not found");
    }
    let resp = server
        .post("/api/v1/services/vps_service_1/explode", key)
        .await;
    assert_error(&resp, 404, "Route not found");
}

#[tokio::test]
async fn wrong_method_is_405() {
    let server = TestServer::start();
    let key = Some(server.test_key.as_str());
    let cases = [
        (Method::GET, "/api/v1/services/vps_service_1/start"),
        (Method::GET, "/api/v1/services/vps_service_1/rebuild"),
        (Method::POST, "/api/v1/services/vps_service_1/status"),
        (Method::DELETE, "/api/v1/products/stock"),
        (Method::PUT, "/api/v1/products/stock/prod_abc123"),
        (Method::POST, "/api/v1/services/task/abc/status"),
    ];
    for (method, path) in cases {
        let resp = server.request(method.clone(), path, key, None, None).await;
        assert_error(&resp, 405, "Method not allowed");
    }
    // Nothing was started by the refused request.
    let status = server.status_data(&server.test_key, "vps_service_2").await;
    assert_eq!(status["runningStatus"], "STOPPED");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let server = TestServer::start();
    let key = Some(server.test_key.as_str());
    for body in [&b"{\"os\":"[..], b"not json", b"{\"os\": \"debian-12\",}"] {
        let resp = server
            .request(
                Method::POST,
                "/api/v1/services/vps_service_1/rebuild",
                key,
                Some("application/json"),
                Some(body.to_vec()),
            )
            .await;
        assert_error(&resp, 400, "Malformed JSON body");
    }
    let status = server.status_data(&server.test_key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING");
}

#[tokio::test]
async fn non_json_content_type_on_rebuild_is_415() {
    let server = TestServer::start();
    let key = Some(server.test_key.as_str());
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = server
            .request(
                Method::POST,
                "/api/v1/services/vps_service_1/rebuild",
                key,
                Some(ct),
                Some(br#"{"os":"debian-12"}"#.to_vec()),
            )
            .await;
        assert_error(&resp, 415, "Content-Type must be application/json");
    }
    // A JSON content type with a charset parameter is fine.
    let resp = server
        .request(
            Method::POST,
            "/api/v1/services/vps_service_1/rebuild",
            key,
            Some("application/json; charset=utf-8"),
            Some(br#"{"os":"debian-12"}"#.to_vec()),
        )
        .await;
    assert_success(&resp, "VPS rebuild initiated successfully");
}

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let server = TestServer::start();
    let key = Some(server.test_key.as_str());
    let big =
        serde_json::to_vec(&json!({ "os": "debian-12", "pad": "x".repeat(70 * 1024) })).unwrap();
    let resp = server
        .request(
            Method::POST,
            "/api/v1/services/vps_service_1/rebuild",
            key,
            Some("application/json"),
            Some(big),
        )
        .await;
    assert_error(&resp, 413, "Request body too large");
    let status = server.status_data(&server.test_key, "vps_service_1").await;
    assert_eq!(
        status["runningStatus"], "RUNNING",
        "oversized rebuild must not start"
    );

    // Just under the limit is accepted (unknown keys are ignored).
    let fits =
        serde_json::to_vec(&json!({ "os": "debian-12", "pad": "x".repeat(60 * 1024) })).unwrap();
    let resp = server
        .request(
            Method::POST,
            "/api/v1/services/vps_service_1/rebuild",
            key,
            Some("application/json"),
            Some(fits),
        )
        .await;
    assert_success(&resp, "VPS rebuild initiated successfully");
}

#[tokio::test]
async fn errors_before_auth_still_carry_a_request_id() {
    let server = TestServer::start();
    let resp = server.get_anon("/api/v1/products/stock").await;
    assert_error(&resp, 401, UNAUTHORIZED);
    let resp = server.get("/api/v1/nope", &server.test_key).await;
    let rid = resp.header("x-request-id").expect("X-Request-Id");
    assert!(is_request_id(&rid), "{rid}");
}
