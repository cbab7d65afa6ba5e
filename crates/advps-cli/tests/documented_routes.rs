//! Every operation of the served OpenAPI document is routed, and behind the
//! layer its security says: an operation that needs the key refuses a
//! request without one (401) and answers one with it through the key's
//! quota (the `RateLimit-*` headers, which only the authentication layer
//! sends); an operation the document opens to all (`security: [{}]`) is
//! reached without a key. The routes and the document come from the same
//! declarations, so this walks the document rather than a list of its own.

mod common;

use common::*;
use reqwest::Method;

/// The document's path with each `{parameter}` filled with a value no
/// resource has, so that a handler reached answers its own 404 or 400.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "unknown_1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn routed(resp: &Resp, what: &str) {
    assert!(
        resp.status != 405 && resp.body["message"] != "Route not found",
        "{what} is documented but not routed: {} {}",
        resp.status,
        resp.text
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_behind_its_layer() {
    let server = TestServer::start();
    let doc = server.openapi().await.clone();
    let mut keyed = 0;
    let mut open = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let path = concrete(template);
            let what = format!("{method} {template}");
            let needs_key = op
                .get("security")
                .and_then(|s| s.as_array())
                .is_none_or(|s| s.iter().any(|r| r.get("apiKey").is_some()));
            if needs_key {
                keyed += 1;
                let anonymous = server
                    .request(method.clone(), &path, None, None, None)
                    .await;
                assert_eq!(
                    anonymous.status, 401,
                    "{what} without a key: {}",
                    anonymous.text
                );
                let resp = server
                    .request(method, &path, Some(&server.test_key), None, None)
                    .await;
                routed(&resp, &what);
                assert!(
                    resp.header("ratelimit-remaining").is_some(),
                    "{what} is not behind the key's layer: {} {}",
                    resp.status,
                    resp.text
                );
            } else {
                open += 1;
                let resp = server.request(method, &path, None, None, None).await;
                routed(&resp, &what);
                assert_no_rate_limit_headers(&resp);
            }
        }
    }
    // The walk saw the document, not an empty one.
    assert!(keyed > 30 && open >= 6, "{keyed} keyed, {open} open");
}
