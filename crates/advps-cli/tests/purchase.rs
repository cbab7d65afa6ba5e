//! Buying in the sandbox: the OS catalogue, purchase validation, orders and
//! their polling, the wallet's exact arithmetic, stock per account, the last
//! unit bought twice at once, insufficient funds, the failure simulation
//! with its refund, renewal, expiry (suspension, then termination back into
//! stock) and MAC resets.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAST: &[(&str, &str)] = &[
    ("ADVPS_SANDBOX_PROVISION_SECONDS", "1"),
    ("ADVPS_EXPIRY_CHECK_SECS", "1"),
];

async fn buy_linux(server: &TestServer, key: &str, body: serde_json::Value) -> Resp {
    server.post_json("/api/v1/purchase/linux", key, &body).await
}

/// Polls an order until it leaves PENDING.
async fn wait_order(server: &TestServer, key: &str, order_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = server
            .get(&format!("/api/v1/purchase/{order_id}"), key)
            .await;
        let data = assert_api_success(&resp, "Order retrieved successfully", "test").clone();
        if data["order"]["status"] != "PENDING" {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "order {order_id} still pending: {data}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wallet(server: &TestServer, account: &str) -> String {
    let out = server.cli_ok(&["accounts", "wallet", account, "--mode", "test"]);
    out.lines().next().unwrap_or_default().to_string()
}

async fn stock_of(server: &TestServer, key: &str, product: &str) -> i64 {
    let resp = server
        .get(&format!("/api/v1/products/stock/{product}"), key)
        .await;
    resp.data()["stock"]["stock"].as_i64().expect("stock")
}

#[tokio::test]
async fn os_catalogue_lists_families_and_filters() {
    let server = TestServer::start();
    let key = &server.test_key;
    let all = server.get("/api/v1/os", key).await;
    let data = assert_api_success(&all, "OS list retrieved successfully", "test");
    let os = data["os"].as_array().unwrap();
    assert!(os.iter().any(|o| o["slug"] == "windows-2022"
        && o["type"] == "vps"
        && o["name"] == "Windows Server 2022"));
    assert!(os
        .iter()
        .all(|o| o["id"].is_i64() && o["slug"] != "sandbox-fail"));
    let lxc = server.get("/api/v1/os?type=lxc", key).await;
    let lxc = lxc.data()["os"].as_array().unwrap().clone();
    assert!(!lxc.is_empty());
    assert!(lxc.iter().all(|o| o["type"] == "lxc"));
    assert!(!lxc.iter().any(|o| o["slug"] == "windows-2022"));
    let linux = server.get("/api/v1/os?type=linux", key).await;
    assert_eq!(linux.data()["os"].as_array().unwrap(), &lxc);
    let bad = server.get("/api/v1/os?type=bsd", key).await;
    assert_error(
        &bad,
        400,
        "Invalid type value — must be 'vps', 'lxc' or 'linux'",
    );

    // A rebuild accepts the catalogue's id as well as the slug.
    let debian = lxc.iter().find(|o| o["slug"] == "debian-11").unwrap();
    let resp = server
        .post_json(
            "/api/v1/services/lxc_service_1/rebuild",
            key,
            &json!({ "os": debian["id"] }),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn a_linux_purchase_is_charged_provisioned_and_manageable() {
    let server = TestServer::start_with_env(FAST);
    let key = &server.test_key;
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 1000.00");
    let before = stock_of(&server, key, "prod_abc123").await;

    // 4 GB container at 6.00 per 30 days, two of them for 45 days: 6.00 * 2 * 45 / 30 = 18.00.
    let resp = buy_linux(
        &server,
        key,
        json!({"productId": "prod_abc123", "ram": "4GB", "osId": null, "quantity": 2, "validity": 45, "remark": "web", "extra": true}),
    )
    .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test");
    let order = &data["order"];
    let order_id = order["orderId"].as_str().unwrap().to_string();
    assert!(
        order_id.starts_with("LXC") && order_id.len() == "LXC040426-0001".len(),
        "{order_id}"
    );
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["totalAmount"], 18.0);
    assert_eq!(order["currency"], "USD");
    assert_eq!(
        order["os"]["id"], "ubuntu-22.04",
        "the product's default OS"
    );
    assert_eq!(data["services"].as_array().unwrap().len(), 2);
    assert!(
        data["services"][0]["password"].is_null(),
        "no password before completion"
    );
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 982.00");

    let done = wait_order(&server, key, &order_id).await;
    assert_eq!(done["order"]["status"], "COMPLETED", "{done}");
    let services = done["services"].as_array().unwrap();
    let mut passwords = Vec::new();
    for s in services {
        assert!(
            s["ip"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("203.0.113.")),
            "{s}"
        );
        assert_eq!(s["username"], "root");
        let password = s["password"].as_str().unwrap();
        assert!(is_strong_password(password), "{password}");
        passwords.push(password.to_string());
        assert!(is_timestamp(s["expiryDate"].as_str().unwrap()));
    }
    // The password is final: the next poll shows the same.
    let again = server
        .get(&format!("/api/v1/purchase/{order_id}"), key)
        .await;
    let again_pw: Vec<_> = again.data()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["password"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(again_pw, passwords);

    // The bought services are managed like any other.
    let id = services[0]["serviceId"].as_str().unwrap();
    assert!(id.starts_with("lxc_service_"), "{id}");
    let status = server.status_data(key, id).await;
    assert_eq!(status["runningStatus"], "RUNNING");
    assert_eq!(status["service"]["expiryDate"], services[0]["expiryDate"]);
    assert_eq!(status["service"]["os"]["id"], "ubuntu-22.04");
    let stop = server.action(key, id, "stop").await;
    assert_api_success(&stop, "Linux service stopped successfully", "test");

    // Stock is the account's own: it went down by two here, not for another account.
    assert_eq!(stock_of(&server, key, "prod_abc123").await, before - 2);
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    assert_eq!(stock_of(&server, &acme, "prod_abc123").await, before);
    // And the order is the buyer's only.
    let other = server
        .get(&format!("/api/v1/purchase/{order_id}"), &acme)
        .await;
    assert_error(&other, 404, "Order not found or not accessible");
    let live = server.create_key("demo", "live");
    let live_view = server
        .get(&format!("/api/v1/purchase/{order_id}"), &live)
        .await;
    assert_error(&live_view, 404, "Order not found or not accessible");
}

#[tokio::test]
async fn purchases_are_validated_before_anything_is_charged() {
    let server = TestServer::start();
    let key = &server.test_key;
    let cases = [
        (json!({"ram": "4 GB"}), 400, "productId is required"),
        (
            json!({"productId": "prod_abc123"}),
            400,
            "ram is required, e.g. \"4 GB\"",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "lots"}),
            400,
            "Invalid ram value 'lots': write it like \"4 GB\"",
        ),
        (
            json!({"productId": "prod_nope", "ram": "4 GB"}),
            404,
            "Product not found",
        ),
        (
            json!({"productId": "prod_stu901", "ram": "1 GB"}),
            400,
            "Product prod_stu901 is not a Linux product",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "8 GB"}),
            400,
            "RAM size 8 GB is not available for this product",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "osId": 99999}),
            400,
            "Unknown osId for this product type",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "osId": "windows-2022"}),
            400,
            "Unknown osId for this product type",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "quantity": 0}),
            400,
            "quantity must be a whole number from 1 to 10",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "quantity": 11}),
            400,
            "quantity must be a whole number from 1 to 10",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "validity": 0}),
            400,
            "validity must be a whole number of days from 1 to 365",
        ),
        (
            json!({"productId": "prod_abc123", "ram": "4 GB", "validity": "30"}),
            400,
            "validity must be a whole number of days from 1 to 365",
        ),
    ];
    for (body, status, message) in cases {
        let resp = buy_linux(&server, key, body.clone()).await;
        assert_error(&resp, status, message);
    }
    let size = buy_linux(
        &server,
        key,
        json!({"productId": "prod_abc123", "ram": "8 GB"}),
    )
    .await;
    assert_eq!(size.body["errors"]["available"], json!(["4 GB"]));
    // A VPS needs the customer's name and email.
    let vps = server
        .post_json(
            "/api/v1/purchase/vps",
            key,
            &json!({"productId": "prod_stu901", "ram": "1 GB"}),
        )
        .await;
    assert_error(&vps, 400, "name is required");
    let vps = server
        .post_json(
            "/api/v1/purchase/vps",
            key,
            &json!({"productId": "prod_stu901", "ram": "1 GB", "name": "Ops", "email": "nope"}),
        )
        .await;
    assert_error(&vps, 400, "email is required and must be an email address");
    // Out of stock from the start.
    let empty = buy_linux(
        &server,
        key,
        json!({"productId": "prod_ghi789", "ram": "1 GB"}),
    )
    .await;
    assert_error(&empty, 409, "Product is out of stock");
    assert_eq!(
        wallet(&server, "demo"),
        "demo test wallet: 1000.00",
        "nothing was charged"
    );
}

/// `base` with the keys of `extra` added or replaced.
fn merged(mut base: Value, extra: Value) -> Option<Value> {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    Some(base)
}

/// A POST with its raw body: `None` sends none at all.
async fn post_body(server: &TestServer, key: &str, path: &str, body: Option<&Value>) -> Resp {
    match body {
        Some(body) => server.post_json(path, key, body).await,
        None => server.post(path, key).await,
    }
}

#[tokio::test]
async fn purchase_and_renew_bodies_of_the_wrong_shape_get_their_field_message() {
    let server = TestServer::start();
    let key = &server.test_key;
    const LINUX: &str = "/api/v1/purchase/linux";
    const VPS: &str = "/api/v1/purchase/vps";
    const RENEW: &str = "/api/v1/services/renew";
    const NOT_AN_OBJECT: &str = "The request body must be a JSON object";
    const QUANTITY: &str = "quantity must be a whole number from 1 to 10";
    const VALIDITY: &str = "validity must be a whole number of days from 1 to 365";
    const EMAIL: &str = "email is required and must be an email address";
    const SERVICE_IDS: &str = "serviceIds must be a non-empty list of service ids";
    const DAYS: &str = "serviceValidities[].validity must be 1 to 365 days";
    const ENTRY_ID: &str = "serviceValidities[].serviceId is required";
    let linux = |extra: Value| merged(json!({"productId": "prod_abc123", "ram": "4 GB"}), extra);
    let vps = |extra: Value| {
        merged(
            json!({"productId": "prod_stu901", "ram": "1 GB", "name": "Ops", "email": "ops@example.com"}),
            extra,
        )
    };
    // Renewals of an order that does not exist: every body check comes first.
    let renew = |extra: Value| {
        merged(
            json!({"orderId": "LXC010101-9999", "serviceIds": ["KYOFMI"]}),
            extra,
        )
    };
    let fifty_one: Vec<String> = (0..51).map(|i| format!("S{i}")).collect();
    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        // Not an object at all.
        (LINUX, None, 400, NOT_AN_OBJECT),
        (LINUX, Some(json!([])), 400, NOT_AN_OBJECT),
        (
            LINUX,
            Some(json!(["prod_abc123", "4 GB"])),
            400,
            NOT_AN_OBJECT,
        ),
        (LINUX, Some(json!("prod_abc123")), 400, NOT_AN_OBJECT),
        (VPS, None, 400, NOT_AN_OBJECT),
        (VPS, Some(json!([])), 400, NOT_AN_OBJECT),
        (VPS, Some(json!(42)), 400, NOT_AN_OBJECT),
        // Wrong types, blank text, fractions, values out of bounds.
        (
            LINUX,
            linux(json!({"productId": 5})),
            400,
            "productId is required",
        ),
        (
            LINUX,
            linux(json!({"productId": "   "})),
            400,
            "productId is required",
        ),
        (
            LINUX,
            linux(json!({"productId": null})),
            400,
            "productId is required",
        ),
        (
            LINUX,
            linux(json!({"ram": 4})),
            400,
            "ram is required, e.g. \"4 GB\"",
        ),
        (LINUX, linux(json!({"quantity": 1.5})), 400, QUANTITY),
        (LINUX, linux(json!({"quantity": "2"})), 400, QUANTITY),
        (LINUX, linux(json!({"quantity": -1})), 400, QUANTITY),
        (LINUX, linux(json!({"quantity": 10.5})), 400, QUANTITY),
        (LINUX, linux(json!({"validity": 29.5})), 400, VALIDITY),
        (LINUX, linux(json!({"validity": 366.0})), 400, VALIDITY),
        (LINUX, linux(json!({"validity": [30]})), 400, VALIDITY),
        (
            LINUX,
            linux(json!({"remark": 7})),
            400,
            "remark must be a string",
        ),
        (
            LINUX,
            linux(json!({"remark": "x".repeat(501)})),
            400,
            "remark must be at most 500 characters",
        ),
        (
            LINUX,
            linux(json!({"osId": true})),
            400,
            "Unknown osId for this product type",
        ),
        (
            LINUX,
            linux(json!({"osId": [1]})),
            400,
            "Unknown osId for this product type",
        ),
        (
            LINUX,
            linux(json!({"osId": 1.5})),
            400,
            "Unknown osId for this product type",
        ),
        // The OS is checked after the product, as before.
        (
            LINUX,
            linux(json!({"productId": "prod_nope", "osId": true})),
            404,
            "Product not found",
        ),
        (VPS, vps(json!({"name": 5})), 400, "name is required"),
        (VPS, vps(json!({"name": "  "})), 400, "name is required"),
        (VPS, vps(json!({"email": ["ops@example.com"]})), 400, EMAIL),
        (VPS, vps(json!({"email": "  "})), 400, EMAIL),
        (VPS, vps(json!({"quantity": 0.5})), 400, QUANTITY),
        // Renewal: not an object, wrong types, a repeated id, too many ids.
        (RENEW, None, 400, "orderId is required"),
        (RENEW, Some(json!([])), 400, "orderId is required"),
        (
            RENEW,
            Some(json!("LXC010101-9999")),
            400,
            "orderId is required",
        ),
        (
            RENEW,
            renew(json!({"orderId": 5})),
            400,
            "orderId is required",
        ),
        (
            RENEW,
            renew(json!({"orderId": " "})),
            400,
            "orderId is required",
        ),
        (
            RENEW,
            renew(json!({"serviceIds": "KYOFMI"})),
            400,
            SERVICE_IDS,
        ),
        (RENEW, renew(json!({"serviceIds": []})), 400, SERVICE_IDS),
        (
            RENEW,
            renew(json!({"serviceIds": ["KYOFMI", 5]})),
            400,
            SERVICE_IDS,
        ),
        (
            RENEW,
            renew(json!({"serviceIds": [null]})),
            400,
            SERVICE_IDS,
        ),
        (
            RENEW,
            renew(json!({"serviceIds": fifty_one})),
            400,
            "At most 50 services can be renewed at once",
        ),
        (
            RENEW,
            renew(json!({"serviceIds": ["A", "B", "A"]})),
            400,
            "serviceIds must not name a service more than once",
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": {"KYOFMI": 30}})),
            400,
            "serviceValidities must be a list",
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [5]})),
            400,
            ENTRY_ID,
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [["KYOFMI", 30]]})),
            400,
            ENTRY_ID,
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [{"serviceId": 5, "validity": 30}]})),
            400,
            ENTRY_ID,
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [{"serviceId": "KYOFMI", "validity": 1.5}]})),
            400,
            DAYS,
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [{"serviceId": "KYOFMI", "validity": 366}]})),
            400,
            DAYS,
        ),
        (
            RENEW,
            renew(json!({"serviceValidities": [{"serviceId": "KYOFMI"}]})),
            400,
            DAYS,
        ),
        // 30.0 is the whole number 30: the body passes, the order is unknown.
        (
            RENEW,
            renew(json!({"serviceValidities": [{"serviceId": "KYOFMI", "validity": 30.0}]})),
            404,
            "Order not found or not accessible",
        ),
    ];
    for (path, body, status, message) in &cases {
        let resp = post_body(&server, key, path, body.as_ref()).await;
        assert_eq!(
            (resp.status, resp.body["message"].as_str()),
            (*status, Some(*message)),
            "POST {path} {body:?}: {}",
            resp.text
        );
    }
    let twice = post_body(
        &server,
        key,
        RENEW,
        renew(json!({"serviceIds": ["A", "B", "A", "B", "A"]})).as_ref(),
    )
    .await;
    assert_eq!(
        twice.body["errors"]["duplicateServiceIds"],
        json!(["A", "B"])
    );
    assert_eq!(
        wallet(&server, "demo"),
        "demo test wallet: 1000.00",
        "nothing was charged"
    );
    // Whole numbers written with a fraction of zero are whole numbers.
    let resp = buy_linux(
        &server,
        key,
        linux(json!({"quantity": 2.0, "validity": 30.0})).unwrap(),
    )
    .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test");
    assert_eq!(
        (&data["order"]["quantity"], &data["order"]["validity"]),
        (&json!(2), &json!(30))
    );
}

#[tokio::test]
async fn the_last_unit_bought_twice_at_once_goes_to_exactly_one_order() {
    let server = TestServer::start();
    let key = server.test_key.clone();
    // prod_pqr678 (32 GB container, 48.00 per 30 days) has exactly one unit.
    let body = json!({"productId": "prod_pqr678", "ram": "32 GB", "quantity": 1, "validity": 30});
    let (a, b) = tokio::join!(
        buy_linux(&server, &key, body.clone()),
        buy_linux(&server, &key, body.clone())
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text, b.text);
    let loser = if a.status == 409 { &a } else { &b };
    assert_error(loser, 409, "Product is out of stock");
    assert_eq!(
        wallet(&server, "demo"),
        "demo test wallet: 952.00",
        "charged once"
    );
    assert_eq!(stock_of(&server, &key, "prod_pqr678").await, 0);
}

#[tokio::test]
async fn not_enough_balance_is_402_and_nothing_is_taken() {
    let server = TestServer::start();
    let key = &server.test_key;
    // 9 Windows VPS of 8 GB (20.00 per 30 days) for a year: 2190.00 > 1000.00.
    let resp = server
        .post_json(
            "/api/v1/purchase/vps",
            key,
            &json!({"productId": "prod_hij456", "ram": "8 GB", "quantity": 9, "validity": 365, "name": "Ops", "email": "ops@example.com"}),
        )
        .await;
    assert_error(&resp, 402, "Insufficient wallet balance");
    assert_eq!(resp.body["errors"]["required"], 2190.0);
    assert_eq!(resp.body["errors"]["balance"], 1000.0);
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 1000.00");
    assert_eq!(stock_of(&server, key, "prod_hij456").await, 9);
    // Credit arrives; the same purchase goes through.
    server.cli_ok(&["accounts", "credit", "demo", "1190", "--mode", "test"]);
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 2190.00");
    let resp = server
        .post_json(
            "/api/v1/purchase/vps",
            key,
            &json!({"productId": "prod_hij456", "ram": "8 GB", "quantity": 9, "validity": 365, "name": "Ops", "email": "ops@example.com"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 0.00");
}

#[tokio::test]
async fn a_failed_provisioning_refunds_and_returns_the_stock() {
    let server = TestServer::start_with_env(FAST);
    let key = &server.test_key;
    let resp = buy_linux(
        &server,
        key,
        json!({"productId": "prod_jkl012", "ram": "8 GB", "quantity": 2, "remark": "sandbox-fail"}),
    )
    .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test");
    let order_id = data["order"]["orderId"].as_str().unwrap().to_string();
    let service_id = data["services"][0]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 976.00");
    let done = wait_order(&server, key, &order_id).await;
    assert_eq!(done["order"]["status"], "FAILED", "{done}");
    assert!(
        done["order"]["error"]
            .as_str()
            .unwrap()
            .contains("refunded"),
        "{done}"
    );
    assert_eq!(done["services"], json!([]));
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 1000.00");
    assert_eq!(stock_of(&server, key, "prod_jkl012").await, 12);
    let gone = server.status(key, &service_id).await;
    assert_error(&gone, 404, "Service not found or not accessible");
    let ledger = server.cli_ok(&["accounts", "wallet", "demo", "--mode", "test"]);
    assert!(
        ledger.contains("refund") && ledger.contains(&order_id),
        "{ledger}"
    );
}

#[tokio::test]
async fn renewal_window_price_and_validity() {
    let server = TestServer::start_with_env(FAST);
    let key = &server.test_key;
    let resp = buy_linux(
        &server,
        key,
        json!({"productId": "prod_def456", "ram": "2 GB", "quantity": 2, "validity": 30}),
    )
    .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test").clone();
    let order_id = data["order"]["orderId"].as_str().unwrap().to_string();
    let ids: Vec<String> = data["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serviceId"].as_str().unwrap().to_string())
        .collect();
    wait_order(&server, key, &order_id).await;
    // 2 GB container: 3.00 per 30 days; two for 30 days = 6.00.
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 994.00");

    let early = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": order_id, "serviceIds": [ids[0]]}),
        )
        .await;
    assert_eq!(early.status, 400, "{}", early.text);
    assert!(early.body["message"]
        .as_str()
        .unwrap()
        .contains("can be renewed from 5 days before to 1 day after its expiry"));

    // Two days before expiry: inside the window.
    for id in &ids {
        server.cli_ok(&[
            "services",
            "set-expiry",
            "--account",
            "demo",
            "--mode",
            "test",
            id,
            "--in",
            "172800",
        ]);
    }
    let before = server.status_data(key, &ids[0]).await["service"]["expiryDate"]
        .as_str()
        .unwrap()
        .to_string();
    // A service named twice is refused before anything is charged.
    let twice = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": order_id, "serviceIds": [ids[0], ids[1], ids[0]]}),
        )
        .await;
    let body = assert_error(
        &twice,
        400,
        "serviceIds must not name a service more than once",
    );
    assert_eq!(
        body["errors"]["duplicateServiceIds"],
        json!([ids[0]]),
        "{}",
        twice.text
    );
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 994.00");
    let unchanged = server.status_data(key, &ids[0]).await["service"]["expiryDate"].clone();
    assert_eq!(unchanged.as_str(), Some(before.as_str()));
    let resp = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": order_id, "serviceIds": ids, "serviceValidities": [{"serviceId": ids[1], "validity": 15}]}),
        )
        .await;
    let renewed = assert_api_success(&resp, "Services renewed successfully", "test");
    // 3.00 for 30 days + 1.50 for 15 days.
    assert_eq!(renewed["totalAmount"], 4.5);
    assert_eq!(wallet(&server, "demo"), "demo test wallet: 989.50");
    let after = server.status_data(key, &ids[0]).await["service"]["expiryDate"]
        .as_str()
        .unwrap()
        .to_string();
    let ms = |t: &str| chrono_ms(t);
    assert_eq!(
        ms(&after) - ms(&before),
        30 * 86_400_000,
        "{before} -> {after}"
    );

    let stranger = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": order_id, "serviceIds": ["vps_service_1"]}),
        )
        .await;
    assert_error(
        &stranger,
        400,
        &format!("Service vps_service_1 does not belong to order {order_id}"),
    );
    let unknown = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": "LXC010101-9999", "serviceIds": [ids[0]]}),
        )
        .await;
    assert_error(&unknown, 404, "Order not found or not accessible");
    let missing = server
        .post_json("/api/v1/services/renew", key, &json!({"orderId": order_id}))
        .await;
    assert_error(
        &missing,
        400,
        "serviceIds must be a non-empty list of service ids",
    );
}

/// Milliseconds of an RFC 3339 UTC timestamp with milliseconds.
fn chrono_ms(t: &str) -> i64 {
    // YYYY-MM-DDTHH:MM:SS.mmmZ, computed without a date library.
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, millis) = time.split_once('.').unwrap();
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + millis.parse::<i64>().unwrap()
}

#[tokio::test]
async fn expiry_suspends_renewal_revives_and_grace_terminates_into_stock() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_SANDBOX_PROVISION_SECONDS", "0.5"),
        ("ADVPS_EXPIRY_CHECK_SECS", "1"),
        ("ADVPS_EXPIRY_GRACE_SECS", "4"),
    ]);
    let key = &server.test_key;
    let resp = buy_linux(
        &server,
        key,
        json!({"productId": "prod_mno345", "ram": "16 GB", "quantity": 2}),
    )
    .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test").clone();
    let order_id = data["order"]["orderId"].as_str().unwrap().to_string();
    let a = data["services"][0]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let b = data["services"][1]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_order(&server, key, &order_id).await;
    assert_eq!(stock_of(&server, key, "prod_mno345").await, 3);

    for id in [&a, &b] {
        server.cli_ok(&[
            "services",
            "set-expiry",
            "--account",
            "demo",
            "--mode",
            "test",
            id,
            "--in",
            "-1",
        ]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.status_data(key, &a).await["runningStatus"] != "SUSPENDED" {
        assert!(Instant::now() < deadline, "not suspended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = server.status_data(key, &a).await;
    assert_eq!(status["vmStatus"]["status"], "suspended");
    assert_eq!(status["uptime"], 0);
    let refused = server.action(key, &a, "start").await;
    assert_error(
        &refused,
        403,
        "Service has expired and is suspended; renew it to use it again",
    );

    // Renewing one brings it back; the other is terminated after the grace period.
    let renewed = server
        .post_json(
            "/api/v1/services/renew",
            key,
            &json!({"orderId": order_id, "serviceIds": [a]}),
        )
        .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(
        server.status_data(key, &a).await["runningStatus"],
        "RUNNING"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = server.status(key, &b).await;
        if resp.status == 404 {
            assert_error(&resp, 404, "Service not found or not accessible");
            break;
        }
        assert!(Instant::now() < deadline, "not terminated: {}", resp.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        stock_of(&server, key, "prod_mno345").await,
        4,
        "the terminated one is back in stock"
    );
    assert_eq!(
        server.status_data(key, &a).await["runningStatus"],
        "RUNNING"
    );

    // The terminated service's id is never given again: a client that kept
    // it must not act on a new machine.
    let again = buy_linux(
        &server,
        key,
        json!({"productId": "prod_mno345", "ram": "16 GB", "quantity": 2}),
    )
    .await;
    let data = assert_api_success(&again, "Order placed successfully", "test").clone();
    let new_ids: Vec<&str> = data["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serviceId"].as_str().unwrap())
        .collect();
    assert!(
        !new_ids.contains(&b.as_str()) && !new_ids.contains(&a.as_str()),
        "{b} was terminated, {a} is alive; new ids: {new_ids:?}"
    );
    let resp = server.status(key, &b).await;
    assert_error(&resp, 404, "Service not found or not accessible");
}

#[tokio::test]
async fn mac_reset_is_for_vps_once_a_day() {
    let server = TestServer::start();
    let key = &server.test_key;
    let first = server.action(key, "vps_service_1", "reset-mac").await;
    let data = assert_api_success(&first, "MAC address reset successfully", "test");
    let mac = data["mac"].as_str().unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let second = server.action(key, "vps_service_1", "reset-mac").await;
    assert_error(
        &second,
        429,
        "The MAC address can be reset once every 24 hours",
    );
    let retry = second.header_u64("retry-after");
    assert!((86_390..=86_400).contains(&retry), "{retry}");
    // Another VPS has its own allowance.
    assert_eq!(
        server
            .action(key, "vps_service_2", "reset-mac")
            .await
            .status,
        200
    );
    for other in ["lxc_service_1", "pvps_service_1", "no_such_service"] {
        let resp = server.action(key, other, "reset-mac").await;
        assert_error(&resp, 404, "Service not found or not accessible");
    }
}

#[tokio::test]
async fn the_wallet_and_the_orders_list_show_every_movement_newest_first() {
    let server = TestServer::start_with_env(FAST);
    let key = &server.test_key;
    let wallet_of = |key: String, query: &'static str| {
        let server = &server;
        async move {
            let resp = server.get(&format!("/api/v1/wallet{query}"), &key).await;
            assert_api_success(&resp, "Wallet retrieved successfully", "test").clone()
        }
    };
    let start = wallet_of(key.clone(), "").await;
    assert_eq!(start["balance"], 1000.0, "{start}");
    assert_eq!(start["currency"], "USD");
    assert_eq!(start["entries"].as_array().unwrap().len(), 1);
    assert_eq!(start["entries"][0]["kind"], "credit");
    assert_eq!(start["pagination"]["total"], 1);

    // One order that completes, one that fails and is refunded.
    let ok = buy_linux(
        &server,
        key,
        json!({"productId": "prod_abc123", "ram": "4GB", "quantity": 2, "validity": 45}),
    )
    .await;
    let ok_id = ok.data()["order"]["orderId"].as_str().unwrap().to_string();
    let failed = buy_linux(
        &server,
        key,
        json!({"productId": "prod_jkl012", "ram": "8 GB", "quantity": 2, "remark": "sandbox-fail"}),
    )
    .await;
    let failed_id = failed.data()["order"]["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_order(&server, key, &failed_id).await["order"]["status"],
        "FAILED"
    );

    // The list settles a sandbox order whose time is up without a poll of its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let orders = loop {
        let resp = server.get("/api/v1/orders", key).await;
        let data = assert_api_success(&resp, "Orders retrieved successfully", "test").clone();
        if data["orders"][1]["status"] != "PENDING" || Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed: Vec<&str> = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [failed_id.as_str(), ok_id.as_str()], "{orders}");
    assert_eq!(orders["orders"][0]["status"], "FAILED");
    assert_eq!(orders["orders"][1]["status"], "COMPLETED", "{orders}");
    assert_eq!(orders["orders"][1]["totalAmount"], 18.0);
    assert_eq!(orders["pagination"]["total"], 2);
    let second = server.get("/api/v1/orders?page=2&limit=1", key).await;
    let second = assert_api_success(&second, "Orders retrieved successfully", "test");
    assert_eq!(second["orders"][0]["orderId"], ok_id.as_str());
    assert_eq!(second["pagination"]["hasPrev"], true);
    assert_eq!(second["pagination"]["hasNext"], false);

    // credit, purchase 18.00, purchase 24.00, refund 24.00: newest first.
    let wallet = wallet_of(key.clone(), "").await;
    assert_eq!(wallet["balance"], 982.0, "{wallet}");
    let kinds: Vec<&str> = wallet["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["refund", "purchase", "purchase", "credit"],
        "{wallet}"
    );
    assert_eq!(wallet["entries"][0]["amount"], 24.0);
    assert_eq!(wallet["entries"][0]["reference"], failed_id.as_str());
    assert_eq!(wallet["entries"][2]["amount"], -18.0);
    assert_eq!(wallet["entries"][2]["reference"], ok_id.as_str());
    let sum: f64 = wallet["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_f64().unwrap())
        .sum();
    assert!((sum - 982.0).abs() < 1e-9, "{sum}");
    let page = wallet_of(key.clone(), "?page=2&limit=3").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["kind"], "credit");
    assert_eq!(page["pagination"]["totalPages"], 2);

    // Bad paging is the reference's 400; another account, and the live
    // wallet of the same account, see none of it.
    let bad = server.get("/api/v1/wallet?page=0", key).await;
    assert_error(&bad, 400, "Invalid page value — must be a positive integer");
    let bad = server.get("/api/v1/orders?limit=x", key).await;
    assert_error(
        &bad,
        400,
        "Invalid limit value — must be a positive integer",
    );
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    let theirs = server.get("/api/v1/orders", &acme).await;
    let theirs = assert_api_success(&theirs, "Orders retrieved successfully", "test");
    assert_eq!(theirs["orders"], json!([]));
    let live = server.create_key("demo", "live");
    let resp = server.get("/api/v1/wallet", &live).await;
    let live_wallet = assert_api_success(&resp, "Wallet retrieved successfully", "live");
    assert_eq!(live_wallet["balance"], 0.0);
    assert_eq!(live_wallet["entries"], json!([]));
}
