//! Isolation between accounts and between test and live mode: each account has its own sandbox
//! fleet and tasks; a live key sees only live data (no sandbox services, only CLI-made
//! products), and a test key never sees live products.

mod common;

use common::*;
use std::time::Duration;

const STOCK_OK: &str = "Product stock retrieved successfully";

#[tokio::test]
async fn each_account_has_its_own_sandbox_fleet() {
    let server = TestServer::start();
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    let demo = &server.test_key;

    let resp = server.action(demo, "vps_service_1", "stop").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let demo_status = server.status_data(demo, "vps_service_1").await;
    assert_eq!(demo_status["runningStatus"], "STOPPED");

    let acme_status = server.status_data(&acme, "vps_service_1").await;
    assert_eq!(acme_status["runningStatus"], "RUNNING", "{acme_status}");
    assert_eq!(acme_status["ip"], "192.168.1.100");

    // acme's own actions work on its own copy.
    let resp = server.action(&acme, "vps_service_2", "start").await;
    assert_api_success(&resp, "VPS service started successfully", "test");
    let demo_two = server.status_data(demo, "vps_service_2").await;
    assert_eq!(demo_two["runningStatus"], "STOPPED", "{demo_two}");
}

#[tokio::test]
async fn another_accounts_task_is_404() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "1")]);
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    let task_id = server
        .start_rebuild(&server.test_key, "vps_service_1", "debian-12")
        .await;
    let resp = server.task(&acme, &task_id).await;
    assert_error(&resp, 404, TASK_NOT_FOUND);
    let resp = server.task(&server.test_key, &task_id).await;
    assert_success(&resp, "Task status retrieved successfully");
    // acme's vps_service_1 is not rebuilding.
    let acme_status = server.status_data(&acme, "vps_service_1").await;
    assert_eq!(acme_status["runningStatus"], "RUNNING");
    let history = server
        .wait_task(
            &server.test_key,
            &task_id,
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(history.last().unwrap()["status"], "COMPLETED");
    let resp = server.task(&acme, &task_id).await;
    assert_error(&resp, 404, TASK_NOT_FOUND);
}

#[tokio::test]
async fn live_key_does_not_see_the_sandbox() {
    let server = TestServer::start();
    let live = server.create_key("demo", "live");
    for id in ["vps_service_1", "lxc_service_1", "pvps_service_1"] {
        let resp = server.status(&live, id).await;
        assert_error(&resp, 404, SERVICE_NOT_FOUND);
        let resp = server.action(&live, id, "stop").await;
        assert_error(&resp, 404, SERVICE_NOT_FOUND);
    }
    let resp = server.get("/api/v1/products/stock", &live).await;
    let data = assert_api_success(&resp, STOCK_OK, "live");
    assert_eq!(data["stock"], json!([]));
    assert_eq!(data["pagination"]["total"], 0);
    assert_eq!(data["pagination"]["hasNext"], false);
    assert_eq!(data["pagination"]["hasPrev"], false);
    let resp = server
        .get("/api/v1/products/stock/prod_abc123", &live)
        .await;
    assert_error(&resp, 404, "Product not found");
    // The sandbox services of demo are untouched by the live key's attempts.
    let status = server.status_data(&server.test_key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING");
}

#[tokio::test]
async fn live_products_appear_only_for_live_keys() {
    let server = TestServer::start();
    let live = server.create_key("demo", "live");
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_live_vps",
        "--name",
        "Live VPS 4GB",
        "--pack-name",
        "4GB Live Pack",
        "--type",
        "vps",
    ]);
    // Without --stock the stock is derived from an empty inventory.
    let resp = server
        .get("/api/v1/products/stock/prod_live_vps", &live)
        .await;
    let data = assert_api_success(&resp, STOCK_OK, "live");
    assert_eq!(data["stock"]["stock"], 0);
    assert_eq!(data["stock"]["stockStatus"], "OUT_OF_STOCK");

    server.cli_ok(&["products", "set-stock", "prod_live_vps", "8"]);
    let resp = server.get("/api/v1/products/stock", &live).await;
    let data = assert_api_success(&resp, STOCK_OK, "live");
    assert_eq!(data["pagination"]["total"], 1, "{data}");
    let row = &data["stock"][0];
    assert_eq!(row["id"], "prod_live_vps");
    assert_eq!(row["name"], "Live VPS 4GB");
    assert_eq!(row["packName"], "4GB Live Pack");
    assert_eq!(row["vmType"], "VPS");
    assert_eq!(row["stock"], 8);
    assert_eq!(row["stockStatus"], "IN_STOCK");

    let resp = server.get("/api/v1/products/stock?type=linux", &live).await;
    assert_eq!(assert_success(&resp, STOCK_OK)["stock"], json!([]));

    // The test key never sees it.
    let key = &server.test_key;
    let resp = server.get("/api/v1/products/stock?limit=100", key).await;
    let data = assert_api_success(&resp, STOCK_OK, "test");
    assert_eq!(data["pagination"]["total"], 12);
    assert!(data["stock"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["id"] != "prod_live_vps"));
    let resp = server
        .get("/api/v1/products/stock/prod_live_vps", key)
        .await;
    assert_error(&resp, 404, "Product not found");

    // Back to derived stock.
    server.cli_ok(&["products", "set-stock", "prod_live_vps", "--auto"]);
    let resp = server
        .get("/api/v1/products/stock/prod_live_vps", &live)
        .await;
    assert_eq!(assert_success(&resp, STOCK_OK)["stock"]["stock"], 0);
}

#[tokio::test]
async fn live_products_sort_and_use_their_threshold() {
    let server = TestServer::start();
    let live = server.create_key("demo", "live");
    for (id, ty, stock, threshold) in [
        ("prod_l_b", "lxc", "8", Some("10")),
        ("prod_l_a", "lxc", "8", None),
        ("prod_v_c", "vps", "2", None),
    ] {
        let name = format!("Name {id}");
        let pack = format!("Pack {id}");
        let mut args = vec![
            "products",
            "create",
            "--id",
            id,
            "--name",
            &name,
            "--pack-name",
            &pack,
            "--type",
            ty,
            "--stock",
            stock,
        ];
        if let Some(t) = threshold {
            args.extend(["--low-stock-threshold", t]);
        }
        server.cli_ok(&args);
    }
    let resp = server.get("/api/v1/products/stock", &live).await;
    let data = assert_api_success(&resp, STOCK_OK, "live");
    let rows = data["stock"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["prod_l_a", "prod_l_b", "prod_v_c"]);
    assert_eq!(rows[0]["stockStatus"], "IN_STOCK");
    assert_eq!(rows[1]["stockStatus"], "LOW_STOCK", "own threshold 10");
    assert_eq!(rows[2]["stockStatus"], "LOW_STOCK");
    assert_eq!(rows[0]["vmType"], "LXC");
    assert_eq!(rows[2]["vmType"], "VPS");
}
