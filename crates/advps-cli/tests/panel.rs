//! The customer panel from outside: signing in with an API key gives an
//! HttpOnly, SameSite=Strict cookie (Secure behind TLS) and never with a bad
//! key; the API through the session needs the CSRF token for every change,
//! so a form posted from another page is refused; every panel answer carries
//! the Content-Security-Policy; a session ends when its key is revoked, when
//! it sits idle past the configured time, and at sign-out.

mod common;

use common::*;
use reqwest::Method;

/// A panel answer: status, headers, JSON body (null when not JSON).
struct PanelResp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl PanelResp {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

async fn panel(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, String)>,
) -> PanelResp {
    let client = reqwest::Client::new();
    let mut req = client.request(method, server.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some((content_type, body)) = body {
        req = req.header("content-type", content_type).body(body);
    }
    let resp = req.send().await.expect("panel request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    PanelResp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// A signed-in session: its `Cookie` header value and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(server: &TestServer, key: &str) -> (PanelResp, Option<Session>) {
    let resp = panel(
        server,
        Method::POST,
        "/panel/session",
        &[],
        Some(("application/json", json!({ "apiKey": key }).to_string())),
    )
    .await;
    let session = (resp.status == 200).then(|| Session {
        cookie: resp
            .header("set-cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string(),
        csrf: resp.body["data"]["csrfToken"].as_str().unwrap().to_string(),
    });
    (resp, session)
}

async fn api(
    server: &TestServer,
    s: &Session,
    method: Method,
    path: &str,
    csrf: bool,
) -> PanelResp {
    let mut headers = vec![("cookie", s.cookie.as_str())];
    if csrf {
        headers.push(("x-csrf-token", s.csrf.as_str()));
    }
    panel(
        server,
        method,
        &format!("/panel/api/v1{path}"),
        &headers,
        None,
    )
    .await
}

async fn state_of(server: &TestServer, key: &str) -> String {
    server.status_data(key, "vps_service_1").await["runningStatus"]
        .as_str()
        .unwrap()
        .to_string()
}

const CSP_PARTS: [&str; 6] = [
    "script-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "connect-src 'self'",
    "default-src 'none'",
];

fn assert_csp(resp: &PanelResp, what: &str) {
    let csp = resp.header("content-security-policy");
    for part in CSP_PARTS {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(
        !csp.contains("script-src 'self' 'unsafe-inline'"),
        "{what}: {csp}"
    );
}

#[tokio::test]
async fn sign_in_gives_a_strict_cookie_for_a_good_key_only() {
    let server = TestServer::start();
    for bad in ["sk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonsense", ""] {
        let (resp, session) = sign_in(&server, bad).await;
        assert!(session.is_none());
        assert!(matches!(resp.status, 400 | 401), "{bad}: {}", resp.status);
        assert_eq!(resp.body["status"], "error");
        assert!(resp.header("set-cookie").is_empty());
        assert_csp(&resp, "refused sign-in");
    }
    // A body without a usable key, whatever its shape, is the same 400.
    for body in [
        json!({}),
        json!({ "apiKey": null }),
        json!({ "apiKey": 42 }),
        json!({ "apiKey": "   " }),
        json!([server.test_key]),
        json!(server.test_key),
    ] {
        let resp = panel(
            &server,
            Method::POST,
            "/panel/session",
            &[],
            Some(("application/json", body.to_string())),
        )
        .await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
        assert_eq!(resp.body["message"], "apiKey is required", "{body}");
    }
    let (resp, session) = sign_in(&server, &server.test_key).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let cookie = resp.header("set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let token = cookie.split(';').next().unwrap();
    assert_eq!(token.strip_prefix("advps_session=").unwrap().len(), 43);
    assert!(!cookie.contains(&server.test_key));
    assert_eq!(resp.body["data"]["account"], "demo");
    assert_eq!(resp.body["data"]["mode"], "test");
    assert_csp(&resp, "sign-in");
    // Behind a proxy that terminated TLS the cookie is Secure.
    let tls = panel(
        &server,
        Method::POST,
        "/panel/session",
        &[("x-forwarded-proto", "https")],
        Some((
            "application/json",
            json!({ "apiKey": server.test_key }).to_string(),
        )),
    )
    .await;
    assert!(tls.header("set-cookie").contains("; Secure"));
    // The session reads the API; a reload finds the session again.
    let session = session.unwrap();
    let list = api(&server, &session, Method::GET, "/services", false).await;
    assert_eq!(list.status, 200);
    assert!(list.body["data"]["services"].as_array().unwrap().len() >= 3);
    assert_csp(&list, "API through the session");
    let again = panel(
        &server,
        Method::GET,
        "/panel/session",
        &[("cookie", &session.cookie)],
        None,
    )
    .await;
    assert_eq!(again.body["data"]["csrfToken"], session.csrf.as_str());
    // Without the cookie there is no session.
    let none = panel(&server, Method::GET, "/panel/api/v1/services", &[], None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["status"], "error");
}

#[tokio::test]
async fn the_page_and_its_assets_come_with_their_types_and_the_policy() {
    let server = TestServer::start();
    for (path, kind) in [
        ("/panel", "text/html"),
        ("/panel/assets/app.js", "text/javascript"),
        ("/panel/assets/panel.css", "text/css"),
        ("/panel/assets/vendor/xterm/xterm.mjs", "text/javascript"),
        ("/panel/assets/vendor/uplot/uPlot.esm.js", "text/javascript"),
    ] {
        let resp = panel(&server, Method::GET, path, &[], None).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp.header("content-type").starts_with(kind), "{path}");
        assert_eq!(resp.header("x-content-type-options"), "nosniff");
        assert_csp(&resp, path);
    }
    let missing = panel(&server, Method::GET, "/panel/assets/nope.js", &[], None).await;
    assert_eq!(missing.status, 404);
    assert_csp(&missing, "404");
}

#[tokio::test]
async fn changes_need_the_csrf_token_and_forms_are_refused() {
    let server = TestServer::start();
    let key = server.test_key.clone();
    let (_, session) = sign_in(&server, &key).await;
    let s = session.unwrap();
    assert_eq!(state_of(&server, &key).await, "RUNNING");
    // No header: refused in the envelope, nothing done.
    let bare = api(
        &server,
        &s,
        Method::POST,
        "/services/vps_service_1/stop",
        false,
    )
    .await;
    assert_eq!(bare.status, 403);
    assert_eq!(bare.body["message"], "Missing or invalid CSRF token");
    // A cross-site form post: the cookie, a form body, no header.
    let form = panel(
        &server,
        Method::POST,
        "/panel/api/v1/services/vps_service_1/stop",
        &[("cookie", &s.cookie), ("origin", "http://evil.example")],
        Some(("application/x-www-form-urlencoded", "mode=force".into())),
    )
    .await;
    assert_eq!(form.status, 403);
    // A wrong token.
    let wrong = panel(
        &server,
        Method::POST,
        "/panel/api/v1/services/vps_service_1/stop",
        &[
            ("cookie", &s.cookie),
            ("x-csrf-token", "x".repeat(43).as_str()),
        ],
        None,
    )
    .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(state_of(&server, &key).await, "RUNNING");
    // With the token: the API's own handler, quota and audit.
    let stop = api(
        &server,
        &s,
        Method::POST,
        "/services/vps_service_1/stop",
        true,
    )
    .await;
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert_eq!(stop.body["message"], "VPS service stopped successfully");
    assert!(!stop.header("ratelimit-remaining").is_empty());
    assert_eq!(state_of(&server, &key).await, "STOPPED");
    let audit = server.get("/api/v1/audit", &key).await;
    let entries = audit.data()["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["path"] == "/api/v1/services/vps_service_1/stop" && e["status"] == 200));
    // Signing out needs the token too, and ends the session.
    let out = panel(
        &server,
        Method::DELETE,
        "/panel/session",
        &[("cookie", &s.cookie)],
        None,
    )
    .await;
    assert_eq!(out.status, 403);
    let out = panel(
        &server,
        Method::DELETE,
        "/panel/session",
        &[("cookie", &s.cookie), ("x-csrf-token", &s.csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let gone = api(&server, &s, Method::GET, "/services", false).await;
    assert_eq!(gone.status, 401);
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions() {
    let server = TestServer::start();
    let first = server.test_key.clone();
    let second = server.create_key("demo", "test");
    let (_, session) = sign_in(&server, &first).await;
    let s = session.unwrap();
    assert_eq!(
        api(&server, &s, Method::GET, "/me", false).await.status,
        200
    );
    let id = server.key_id_of("demo", &first);
    let revoked = server
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(&second),
            None,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let after = api(&server, &s, Method::GET, "/services", false).await;
    assert_eq!(after.status, 401);
    let current = panel(
        &server,
        Method::GET,
        "/panel/session",
        &[("cookie", &s.cookie)],
        None,
    )
    .await;
    assert_eq!(current.status, 401);
}

#[tokio::test]
async fn an_idle_session_ends_after_the_configured_time() {
    let server = TestServer::start_with_env(&[("ADVPS_PANEL_SESSION_IDLE_SECS", "2")]);
    let (resp, session) = sign_in(&server, &server.test_key).await;
    assert_eq!(resp.body["data"]["idleSeconds"], 2);
    let s = session.unwrap();
    // Used within the idle time, it lives on past it.
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
        assert_eq!(
            api(&server, &s, Method::GET, "/me", false).await.status,
            200
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    assert_eq!(
        api(&server, &s, Method::GET, "/me", false).await.status,
        401
    );
}
