//! Authentication and rate limiting: every way of not presenting a usable API key gets the
//! same 401 (without RateLimit headers), and authenticated responses carry the RateLimit
//! headers of a per-key fixed window, where exactly `limit` requests pass (also under
//! concurrency) and the next one is 429 with Retry-After.

mod common;

use common::*;

const TOO_MANY: &str = "Too many requests: rate limit exceeded";

fn assert_unauthorized(resp: &Resp) {
    assert_error(resp, 401, UNAUTHORIZED);
    assert_no_rate_limit_headers(resp);
}

#[tokio::test]
async fn missing_key_is_401_without_rate_limit_headers() {
    let server = TestServer::start();
    for path in [
        "/api/v1/services/vps_service_1/status",
        "/api/v1/products/stock",
        "/api/v1/products/stock/prod_abc123",
        "/api/v1/services/task/whatever/status",
    ] {
        let resp = server.get_anon(path).await;
        assert_unauthorized(&resp);
    }
    let resp = server
        .request(
            reqwest::Method::POST,
            "/api/v1/services/vps_service_1/stop",
            None,
            None,
            None,
        )
        .await;
    assert_unauthorized(&resp);
    // The refused stop changed nothing.
    let status = server.status_data(&server.test_key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING");
}

#[tokio::test]
async fn malformed_keys_are_401() {
    let server = TestServer::start();
    let valid_tail = &server.test_key["sk_test_".len()..];
    let malformed = [
        String::new(),
        "abc".to_string(),
        "sk_test_".to_string(),
        "sk_test_short".to_string(),
        format!("sk_test_{}", &valid_tail[..31]),
        format!("{}X", server.test_key),
        format!("sk_prod_{valid_tail}"),
        format!("SK_TEST_{valid_tail}"),
        format!("sk_test_{}-", &valid_tail[..31]),
        format!("Bearer {}", server.test_key),
    ];
    for key in &malformed {
        let resp = server.status(key, "vps_service_1").await;
        assert_eq!(resp.status, 401, "key {key:?} was accepted: {}", resp.text);
        assert_unauthorized(&resp);
    }
}

#[tokio::test]
async fn well_formed_unknown_keys_are_401() {
    let server = TestServer::start();
    let unknown_test = format!("sk_test_{}", "A".repeat(32));
    let unknown_live = format!("sk_live_{}", "b7".repeat(16));
    // Same shape as the real key with one character changed.
    let mut altered = server.test_key.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    for key in [unknown_test, unknown_live, altered] {
        let resp = server.status(&key, "vps_service_1").await;
        assert_unauthorized(&resp);
    }
}

#[tokio::test]
async fn a_key_revoked_from_the_command_line_is_refused_within_a_second() {
    let server = TestServer::start();
    let key = server.create_key("demo", "test");
    for _ in 0..3 {
        // Read more than once, so the server remembers the key.
        let ok = server.status(&key, "vps_service_1").await;
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    let id = server.key_id_of("demo", &key);
    server.cli_ok(&["keys", "revoke", &id]);
    // The command line is another process: the server learns of its
    // commit within a second, and from then on refuses the key.
    let revoked = std::time::Instant::now();
    let resp = loop {
        let resp = server.status(&key, "vps_service_1").await;
        if resp.status != 200 || revoked.elapsed() > std::time::Duration::from_secs(1) {
            break resp;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_unauthorized(&resp);
    for _ in 0..3 {
        assert_unauthorized(&server.status(&key, "vps_service_1").await);
    }
    // The other key of the account is unaffected.
    let other = server.status(&server.test_key, "vps_service_1").await;
    assert_eq!(other.status, 200, "{}", other.text);
}

#[tokio::test]
async fn two_api_keys_in_one_request_are_400_before_any_lookup() {
    let server = TestServer::start();
    let other = server.create_key("demo", "test");
    let unknown = format!("sk_test_{}", "A".repeat(32));
    for second in [server.test_key.as_str(), other.as_str(), unknown.as_str()] {
        for path in ["/api/v1/services/vps_service_1/status", "/api/v1/me"] {
            let resp = server
                .get_with_headers(path, &server.test_key, &[("x-api-key", second)])
                .await;
            assert_error(&resp, 400, "Multiple API keys in one request");
        }
    }
    // A mutating call refused that way changes nothing.
    let resp = server
        .request_with_headers(
            reqwest::Method::POST,
            "/api/v1/services/vps_service_1/stop",
            Some(&server.test_key),
            None,
            None,
            &[("x-api-key", other.as_str())],
        )
        .await;
    assert_error(&resp, 400, "Multiple API keys in one request");
    let status = server.status_data(&server.test_key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING");
}

#[tokio::test]
async fn exactly_limit_requests_pass_then_429() {
    let server = TestServer::start_with_env(&[("ADVPS_RATE_LIMIT_TEST", "5")]);
    let key = &server.test_key;
    let mut first_reset = None;
    for i in 0..5u64 {
        // Mix successes and errors after auth: both count and both carry the headers.
        let resp = if i % 2 == 0 {
            server.get("/api/v1/products/stock", key).await
        } else {
            server.status(key, "no_such_service").await
        };
        assert!(
            resp.status == 200 || resp.status == 404,
            "request {i}: {}",
            resp.text
        );
        let (remaining, reset) = assert_rate_limit_headers(&resp, 5);
        assert_eq!(remaining, 4 - i, "remaining after request {}", i + 1);
        if let Some(first) = first_reset {
            assert!(reset <= first, "reset must not grow within a window");
        } else {
            assert!(reset > 0, "reset of a fresh window");
            first_reset = Some(reset);
        }
    }
    let resp = server.get("/api/v1/products/stock", key).await;
    assert_error(&resp, 429, TOO_MANY);
    let retry = resp.header_u64("retry-after");
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    // Still refused afterwards: the window has not moved.
    let again = server.status(key, "vps_service_1").await;
    assert_error(&again, 429, TOO_MANY);
}

#[tokio::test]
async fn limit_is_per_key() {
    let server = TestServer::start_with_env(&[("ADVPS_RATE_LIMIT_TEST", "3")]);
    let second = server.create_key("demo", "test");
    for _ in 0..3 {
        let resp = server.get("/api/v1/products/stock", &server.test_key).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    let resp = server.get("/api/v1/products/stock", &server.test_key).await;
    assert_error(&resp, 429, TOO_MANY);
    let resp = server.get("/api/v1/products/stock", &second).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (remaining, _) = assert_rate_limit_headers(&resp, 3);
    assert_eq!(remaining, 2);
}

#[tokio::test]
async fn live_keys_use_the_live_limit() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_RATE_LIMIT_LIVE", "2"),
        ("ADVPS_RATE_LIMIT_TEST", "50"),
    ]);
    let live = server.create_key("demo", "live");
    for expected in [1u64, 0] {
        let resp = server.get("/api/v1/products/stock", &live).await;
        assert_api_success(&resp, "Product stock retrieved successfully", "live");
        let (remaining, _) = assert_rate_limit_headers(&resp, 2);
        assert_eq!(remaining, expected);
    }
    let resp = server.get("/api/v1/products/stock", &live).await;
    assert_error(&resp, 429, TOO_MANY);
    let test = server.get("/api/v1/products/stock", &server.test_key).await;
    let (remaining, _) = assert_rate_limit_headers(&test, 50);
    assert_eq!(remaining, 49);
}

/// Fires `n` concurrent stock requests with each of `keys`; returns all responses.
async fn fire_concurrently(
    server: &std::sync::Arc<TestServer>,
    keys: &[String],
    n: usize,
) -> Vec<Resp> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        for key in keys {
            let server = server.clone();
            let key = key.clone();
            set.spawn(async move { server.get("/api/v1/products/stock", &key).await });
        }
    }
    let mut out = Vec::new();
    while let Some(resp) = set.join_next().await {
        out.push(resp.expect("request task panicked"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_exceed_the_limit() {
    let server = std::sync::Arc::new(TestServer::start_with_env(&[(
        "ADVPS_RATE_LIMIT_TEST",
        "10",
    )]));
    let keys = [server.test_key.clone()];
    let responses = fire_concurrently(&server, &keys, 20).await;
    let ok: Vec<&Resp> = responses.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<&Resp> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (ok.len(), limited.len()),
        (10, 10),
        "statuses: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for resp in &limited {
        assert_error(resp, 429, TOO_MANY);
    }
    let mut remainders: Vec<u64> = ok
        .iter()
        .map(|r| r.header_u64("ratelimit-remaining"))
        .collect();
    remainders.sort_unstable();
    assert_eq!(
        remainders,
        (0..10).collect::<Vec<u64>>(),
        "each pass has its own remaining count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_headers_stay_consistent_under_concurrency() {
    let server = std::sync::Arc::new(TestServer::start_with_env(&[(
        "ADVPS_RATE_LIMIT_TEST",
        "10",
    )]));
    let mut keys = vec![server.test_key.clone()];
    for _ in 0..3 {
        keys.push(server.create_key("demo", "test"));
    }
    let responses = fire_concurrently(&server, &keys, 12).await;
    assert_eq!(responses.iter().filter(|r| r.status == 200).count(), 40);
    for resp in responses.iter().filter(|r| r.status == 200) {
        // Limit, Policy, RateLimit and a reset within the 900-second window.
        assert_rate_limit_headers(resp, 10);
    }
}
