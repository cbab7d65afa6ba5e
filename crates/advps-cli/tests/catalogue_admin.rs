//! Catalogue housekeeping from the command line: `products hide`/`show` take a product out of
//! the API's lists and purchases and put it back, `products remove` is refused while the
//! inventory (or a service) uses it, `os remove` while a product installs it by default or a
//! service runs it, and `ippools remove` while one of its addresses is assigned. The node is a
//! fake LXD on a unix socket, so the suite needs no hypervisor.

mod common;
#[path = "common/live.rs"]
mod live;

use common::*;
use live::*;
use std::process::Output;

const OK: &str = "Product stock retrieved successfully";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `advps ARGS` and asserts it fails with `needle` on stderr.
fn refused(server: &TestServer, args: &[&str], needle: &str) {
    let out = server.cli(args);
    assert!(
        !out.status.success(),
        "advps {args:?} should be refused; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains(needle),
        "advps {args:?}: stderr does not say {needle:?}: {}",
        stderr(&out)
    );
}

/// A server with a live key for `acme` and the fake node `fake` synced.
fn server_with_fake_node(fake: &FakeLxd) -> (TestServer, String) {
    let server = TestServer::start_with_env(&live_env(&[]));
    server.create_account("acme");
    let key = server.create_key("acme", "live");
    server.cli_ok(&[
        "nodes",
        "add",
        "fake",
        "--driver",
        "lxd",
        "--endpoint",
        &fake.endpoint(),
    ]);
    server.cli_ok(&["nodes", "sync", "fake"]);
    (server, key)
}

async fn live_product_ids(server: &TestServer, key: &str) -> Vec<String> {
    let resp = server.get("/api/v1/products/stock?limit=100", key).await;
    let data = assert_api_success(&resp, OK, "live");
    data["stock"]
        .as_array()
        .expect("stock is an array")
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_string())
        .collect()
}

fn add_debian(server: &TestServer) {
    server.cli_ok(&[
        "os",
        "add",
        "debian-12",
        "--name",
        "Debian 12",
        "--type",
        "lxc",
        "--image",
        "advps-debian-12",
    ]);
}

#[tokio::test]
async fn hidden_products_leave_the_catalogue_and_come_back() {
    let server = TestServer::start();
    server.create_account("acme");
    let key = server.create_key("acme", "live");
    for id in ["prod_keep", "prod_gone"] {
        server.cli_ok(&[
            "products",
            "create",
            "--id",
            id,
            "--name",
            id,
            "--pack-name",
            "Pack",
            "--type",
            "lxc",
            "--stock",
            "3",
        ]);
    }
    assert_eq!(
        live_product_ids(&server, &key).await,
        ["prod_gone", "prod_keep"]
    );

    let out = server.cli_ok(&["products", "hide", "prod_gone"]);
    assert!(out.contains("Product prod_gone is hidden"), "{out}");
    assert_eq!(live_product_ids(&server, &key).await, ["prod_keep"]);
    let resp = server.get("/api/v1/products/stock/prod_gone", &key).await;
    assert_error(&resp, 404, "Product not found");
    let list = server.cli_ok(&["products", "list"]);
    assert!(
        list.contains("Hidden (not listed or sold): prod_gone"),
        "products list does not name the hidden product: {list}"
    );

    let out = server.cli_ok(&["products", "show", "prod_gone"]);
    assert!(out.contains("listed and sold again"), "{out}");
    assert_eq!(
        live_product_ids(&server, &key).await,
        ["prod_gone", "prod_keep"]
    );
    refused(
        &server,
        &["products", "hide", "prod_nope"],
        "no live product",
    );
    refused(
        &server,
        &["products", "show", "prod_nope"],
        "no live product",
    );
}

#[tokio::test]
async fn products_remove_is_refused_while_the_inventory_uses_it() {
    let fake = FakeLxd::start();
    let (server, key) = server_with_fake_node(&fake);
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_box",
        "--name",
        "Box",
        "--pack-name",
        "Pack",
        "--type",
        "lxc",
    ]);
    server.cli_ok(&[
        "products", "add-size", "prod_box", "--ram", "1 GB", "--price", "5",
    ]);
    server.cli_ok(&[
        "nodes",
        "set-product",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
        "--product",
        "prod_box",
    ]);
    refused(
        &server,
        &["products", "remove", "prod_box"],
        "still used by 1 instance of the inventory",
    );
    assert_eq!(live_product_ids(&server, &key).await, ["prod_box"]);

    // Bound as a service, the instance still names the product.
    server.cli_ok(&[
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
        "--type",
        "LINUX",
    ]);
    refused(
        &server,
        &["products", "remove", "prod_box"],
        "still used by",
    );

    let services = server.cli_ok(&["services", "list"]);
    let service_id = services
        .lines()
        .find(|l| l.contains(FAKE_INSTANCE))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no service in {services}"))
        .to_string();
    server.cli_ok(&["services", "remove", "--account", "acme", &service_id]);
    server.cli_ok(&[
        "nodes",
        "set-product",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
    ]);
    let out = server.cli_ok(&["products", "remove", "prod_box"]);
    assert!(out.contains("Removed product prod_box"), "{out}");
    assert!(live_product_ids(&server, &key).await.is_empty());
    refused(
        &server,
        &["products", "remove", "prod_box"],
        "no live product",
    );
    // The id is free again, without the old sizes.
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_box",
        "--name",
        "Box",
        "--pack-name",
        "Pack",
        "--type",
        "lxc",
    ]);
    let resp = server.get("/api/v1/products/stock/prod_box", &key).await;
    assert_api_success(&resp, OK, "live");
}

#[tokio::test]
async fn os_remove_is_refused_while_a_product_or_a_service_uses_it() {
    let fake = FakeLxd::start();
    let (server, _key) = server_with_fake_node(&fake);
    add_debian(&server);
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_os",
        "--name",
        "Os",
        "--pack-name",
        "Pack",
        "--type",
        "lxc",
        "--default-os",
        "debian-12",
    ]);
    refused(
        &server,
        &["os", "remove", "debian-12"],
        "still used by 1 product's default",
    );
    server.cli_ok(&["products", "remove", "prod_os"]);

    server.cli_ok(&[
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
        "--type",
        "LINUX",
        "--os",
        "debian-12",
    ]);
    refused(
        &server,
        &["os", "remove", "debian-12"],
        "still used by 1 service",
    );
    let services = server.cli_ok(&["services", "list"]);
    let service_id = services
        .lines()
        .find(|l| l.contains(FAKE_INSTANCE))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    server.cli_ok(&["services", "remove", "--account", "acme", &service_id]);

    let out = server.cli_ok(&["os", "remove", "debian-12"]);
    assert!(out.contains("Removed OS debian-12"), "{out}");
    let list = server.cli_ok(&["os", "list"]);
    assert!(!list.contains("debian-12"), "{list}");
    refused(&server, &["os", "remove", "debian-12"], "no OS 'debian-12'");
}

#[tokio::test]
async fn ippools_remove_is_refused_while_an_address_is_assigned() {
    let fake = FakeLxd::start();
    let (server, _key) = server_with_fake_node(&fake);
    for (name, range) in [
        ("p-free", "198.51.100.240-198.51.100.241"),
        ("p-used", "198.51.100.242-198.51.100.243"),
    ] {
        server.cli_ok(&[
            "ippools",
            "add",
            name,
            "--cidr",
            "198.51.100.0/24",
            "--gateway",
            "198.51.100.1",
            "--range",
            range,
            "--node",
            "fake",
        ]);
    }
    let out = server.cli_ok(&["ippools", "remove", "p-free"]);
    assert!(out.contains("Removed IP pool p-free"), "{out}");

    // Binding takes an address from the node's pool; configuring it on the
    // fake engine times out, and the address stays assigned to the service.
    let config = server
        .data_dir()
        .parent()
        .unwrap()
        .join("short-timeout.toml");
    std::fs::write(&config, "engine_timeout_secs = 2\n").unwrap();
    let out = server.cli(&[
        "--config",
        config.to_str().unwrap(),
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
        "--type",
        "LINUX",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let service_id = text
        .lines()
        .find_map(|l| l.strip_prefix("Bound ").and_then(|r| r.rsplit(' ').next()))
        .unwrap_or_else(|| panic!("no service bound: {text}\n{}", stderr(&out)))
        .to_string();
    let pools = server.cli_ok(&["ippools", "list"]);
    assert!(
        pools
            .lines()
            .any(|l| l.starts_with("p-used") && l.split_whitespace().nth(4) == Some("1")),
        "one address of p-used should be taken: {pools}"
    );
    refused(
        &server,
        &["ippools", "remove", "p-used"],
        "still has 1 assigned address",
    );

    server.cli_ok(&["services", "remove", "--account", "acme", &service_id]);
    let out = server.cli_ok(&["ippools", "remove", "p-used"]);
    assert!(out.contains("Removed IP pool p-used"), "{out}");
    let pools = server.cli_ok(&["ippools", "list"]);
    assert!(!pools.contains("p-used"), "{pools}");
    refused(
        &server,
        &["ippools", "remove", "p-used"],
        "no IP pool named",
    );
    // Its addresses can be pooled again.
    server.cli_ok(&[
        "ippools",
        "add",
        "p-again",
        "--cidr",
        "198.51.100.0/24",
        "--gateway",
        "198.51.100.1",
        "--range",
        "198.51.100.242-198.51.100.243",
    ]);
}
