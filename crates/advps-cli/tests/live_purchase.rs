//! Buying live containers: `sk_live_` keys buy machines from the operator's real inventory
//! on the local LXD (socket /var/lib/lxd/unix.socket, bridge advpsbr0 on 198.51.100.0/24,
//! images `advps-debian-12` and `advps-debian-13`).
//!
//! Every test starts its own server and sets up a shop through the operator commands: the
//! local node, the Debian images, an IP pool of its own block of addresses, an account `acme`
//! with a credited live wallet and a live key, a product sold in one RAM size, and
//! `advps-test-*` containers of that size marked as the product's inventory (deleted when the
//! test ends, pass or fail). The tests then check what a purchase really does: the exact
//! charge, provisioning that reinstalls the machine with the chosen OS, an address from the
//! pool and a root password that works in the guest, management and renewal of the bought
//! service, suspension at expiry and termination (wiped back into inventory) after the grace
//! period, the last machine bought twice at once, a failed installation refunded with its
//! machine wiped back into stock, and the separation of accounts.

mod common;
#[path = "common/live.rs"]
mod live;

use common::*;
use live::*;
use std::time::{Duration, Instant};

/// First address of this file's blocks (.160 onwards, eight per test).
const ADDRESS_OFFSET: u8 = 160;
const LIVE: &str = "live";
/// How often an order is polled, and for how long at most.
const ORDER_POLL: Duration = Duration::from_secs(1);
const ORDER_TIMEOUT: Duration = Duration::from_secs(240);
const ORDER_NOT_FOUND: &str = "Order not found or not accessible";
const OUT_OF_STOCK: &str = "Product is out of stock";
const SUSPENDED: &str = "Service has expired and is suspended; renew it to use it again";
/// The grace period after expiry in the expiry test.
const GRACE_SECS: u64 = 10;
const DAY_MS: i64 = 86_400_000;

/// A live server set up to sell one product, with its inventory containers.
struct Shop {
    setup: LiveSetup,
    product: String,
    machines: Vec<String>,
}

impl Shop {
    /// The operator setup with `machines` free 1 GiB containers of a fresh product
    /// (1 GB at 3.00 per 30 days, default OS debian-12) and 100.00 in acme's live wallet;
    /// `None` when the local LXD is missing (the test is skipped).
    fn open(machines: usize, extra_env: &[(&str, &str)]) -> Option<Shop> {
        let setup = LiveSetup::new(ADDRESS_OFFSET, extra_env)?;
        let server = &setup.server;
        let product = format!("p-{}-{}", setup.block.first, std::process::id());
        let out = server.cli_ok(&[
            "products",
            "create",
            "--id",
            &product,
            "--name",
            "Live Container 1GB",
            "--pack-name",
            "1GB Live Pack",
            "--type",
            "lxc",
            "--default-os",
            "debian-12",
        ]);
        assert!(
            out.contains(&format!("Created live product {product}")),
            "{out}"
        );
        let out = server.cli_ok(&[
            "products", "add-size", &product, "--ram", "1 GB", "--price", "3.00",
        ]);
        assert!(
            out.contains(&format!(
                "Product {product} sells 1 GB at 3.00 USD per 30 days"
            )),
            "{out}"
        );
        let out = server.cli_ok(&["accounts", "credit", "acme", "100"]);
        assert!(out.contains("balance 100.00 USD"), "{out}");
        let machines: Vec<String> = (0..machines)
            .map(|_| {
                setup
                    .lxd
                    .create_with_config(BASE_IMAGE, &json!({ "limits.memory": "1GiB" }))
            })
            .collect();
        server.cli_ok(&["nodes", "sync", "local"]);
        for machine in &machines {
            let out = server.cli_ok(&[
                "nodes",
                "set-product",
                "--node",
                "local",
                "--instance",
                machine,
                "--product",
                &product,
            ]);
            assert!(
                out.contains(&format!("counts as stock of {product}")),
                "{out}"
            );
        }
        let shop = Shop {
            setup,
            product,
            machines,
        };
        for machine in &shop.machines {
            assert_eq!(
                shop.inventory(machine),
                Inventory {
                    memory_mb: "1024".into(),
                    state: "free".into(),
                    product: shop.product.clone(),
                },
                "a fresh machine of the product"
            );
        }
        Some(shop)
    }

    fn server(&self) -> &TestServer {
        &self.setup.server
    }

    fn key(&self) -> &str {
        &self.setup.key
    }

    /// The purchase body of one 1 GB container of the product.
    fn body(&self, os: Value, validity: i64) -> Value {
        json!({ "productId": self.product, "ram": "1 GB", "osId": os, "validity": validity })
    }

    async fn buy(&self, key: &str, body: &Value) -> Resp {
        self.server()
            .post_json("/api/v1/purchase/linux", key, body)
            .await
    }

    /// Places an order with acme's live key, checks the answer; returns (orderId, serviceId).
    async fn buy_ok(&self, os: &str, os_name: &str) -> (String, String) {
        let resp = self.buy(self.key(), &self.body(json!(os), 30)).await;
        let data = assert_api_success(&resp, "Order placed successfully", LIVE);
        let order = &data["order"];
        assert_eq!(order["status"], "PENDING", "{data}");
        assert_eq!(order["productId"], self.product.as_str(), "{data}");
        assert_eq!(order["ram"], "1 GB", "{data}");
        assert_eq!(order["os"], json!({ "id": os, "name": os_name }), "{data}");
        assert_eq!(order["quantity"], 1, "{data}");
        assert_eq!(order["validity"], 30, "{data}");
        assert_eq!(order["totalAmount"], 3.0, "{data}");
        assert_eq!(order["currency"], "USD", "{data}");
        assert!(order["error"].is_null(), "{data}");
        let order_id = order["orderId"].as_str().expect("orderId").to_string();
        assert!(
            order_id.starts_with("LXC") && order_id.len() == "LXC040426-0001".len(),
            "{order_id}"
        );
        let services = data["services"].as_array().expect("services");
        assert_eq!(services.len(), 1, "{data}");
        assert!(services[0]["password"].is_null(), "no password yet: {data}");
        let service_id = services[0]["serviceId"]
            .as_str()
            .expect("serviceId")
            .to_string();
        assert!(
            service_id.len() == 6 && service_id.bytes().all(|b| b.is_ascii_uppercase()),
            "a live service id is six capitals: {service_id}"
        );
        (order_id, service_id)
    }

    async fn order(&self, key: &str, order_id: &str) -> Resp {
        self.server()
            .get(&format!("/api/v1/purchase/{order_id}"), key)
            .await
    }

    /// Polls an order every second until it leaves PENDING; returns its final `data`.
    async fn wait_order(&self, order_id: &str) -> Value {
        let deadline = Instant::now() + ORDER_TIMEOUT;
        loop {
            let resp = self.order(self.key(), order_id).await;
            let data = assert_api_success(&resp, "Order retrieved successfully", LIVE).clone();
            assert_eq!(data["order"]["orderId"], order_id, "{data}");
            if data["order"]["status"] != "PENDING" {
                return data;
            }
            for s in data["services"].as_array().expect("services") {
                assert!(
                    s["password"].is_null(),
                    "password before completion: {data}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "order {order_id} still PENDING after {ORDER_TIMEOUT:?}: {data}\nserver log:\n{}",
                self.server().stderr_log()
            );
            tokio::time::sleep(ORDER_POLL).await;
        }
    }

    /// The first line of `accounts wallet NAME` (the live wallet's balance).
    fn wallet(&self, account: &str) -> String {
        self.server()
            .cli_ok(&["accounts", "wallet", account])
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The ledger lines (after the balance and the header) of acme's live wallet.
    fn ledger(&self) -> Vec<String> {
        self.server()
            .cli_ok(&["accounts", "wallet", "acme"])
            .lines()
            .skip(2)
            .map(str::to_string)
            .collect()
    }

    /// The product's row in the live stock list and from the single-product endpoint (which
    /// must agree); returns its stock.
    async fn stock(&self, key: &str) -> i64 {
        let server = self.server();
        let one = server
            .get(&format!("/api/v1/products/stock/{}", self.product), key)
            .await;
        let row =
            assert_api_success(&one, "Product stock retrieved successfully", LIVE)["stock"].clone();
        let list = server
            .get("/api/v1/products/stock?type=linux&limit=100", key)
            .await;
        let data = assert_api_success(&list, "Product stock retrieved successfully", LIVE);
        let listed = data["stock"]
            .as_array()
            .expect("stock list")
            .iter()
            .find(|r| r["id"] == self.product.as_str())
            .unwrap_or_else(|| panic!("{} not in the live stock list: {data}", self.product))
            .clone();
        assert_eq!(listed, row, "list and single-product views differ");
        assert_eq!(row["name"], "Live Container 1GB", "{row}");
        assert_eq!(row["packName"], "1GB Live Pack", "{row}");
        assert_eq!(row["vmType"], "LXC", "{row}");
        let stock = row["stock"].as_i64().expect("stock");
        let status = match stock {
            0 => "OUT_OF_STOCK",
            1..=5 => "LOW_STOCK",
            _ => "IN_STOCK",
        };
        assert_eq!(row["stockStatus"], status, "{row}");
        stock
    }

    /// A machine's line of `nodes instances --node local`.
    fn inventory(&self, machine: &str) -> Inventory {
        let out = self
            .server()
            .cli_ok(&["nodes", "instances", "--node", "local"]);
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(machine))
            .unwrap_or_else(|| panic!("{machine} not in the inventory:\n{out}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        // NODE INSTANCE KIND STATE MEM_MB INVENTORY ["(gone)"] PRODUCT
        assert!(words.len() >= 7, "unexpected inventory line {line:?}");
        Inventory {
            memory_mb: words[4].to_string(),
            state: words[5..words.len() - 1].join(" "),
            product: words[words.len() - 1].to_string(),
        }
    }

    fn free_inventory(&self) -> Inventory {
        Inventory {
            memory_mb: "1024".into(),
            state: "free".into(),
            product: self.product.clone(),
        }
    }

    /// The one machine of the shop whose inventory state is `assigned`.
    fn assigned_machine(&self) -> String {
        let assigned: Vec<&String> = self
            .machines
            .iter()
            .filter(|m| self.inventory(m).state == "assigned")
            .collect();
        assert_eq!(assigned.len(), 1, "exactly one machine is taken");
        assigned[0].clone()
    }

    /// `data` of a successful live status call.
    async fn status(&self, service_id: &str) -> Value {
        let resp = self.server().status(self.key(), service_id).await;
        assert_api_success(&resp, "Service status retrieved successfully", LIVE).clone()
    }
}

/// A machine as the inventory lists it.
#[derive(Debug, PartialEq, Eq)]
struct Inventory {
    memory_mb: String,
    state: String,
    product: String,
}

/// Milliseconds since the epoch of an API timestamp.
fn millis(timestamp: &Value) -> i64 {
    let text = timestamp.as_str().unwrap_or_default();
    assert!(is_timestamp(text), "not a timestamp: {timestamp}");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

/// Waits until `address` is on the guest's eth0; returns the addresses last seen.
fn wait_guest_address(container: &str, address: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addresses = guest_ipv4(container);
        if addresses.iter().any(|a| a == address) || Instant::now() > deadline {
            return addresses;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn a_live_purchase_is_provisioned_managed_renewed_and_expires_back_into_stock() {
    let grace = GRACE_SECS.to_string();
    let Some(shop) = Shop::open(
        2,
        &[
            ("ADVPS_EXPIRY_CHECK_SECS", "1"),
            ("ADVPS_EXPIRY_GRACE_SECS", grace.as_str()),
        ],
    ) else {
        return;
    };
    let (server, key) = (shop.server(), shop.key());
    assert_eq!(shop.wallet("acme"), "acme live wallet: 100.00");
    assert_eq!(shop.stock(key).await, 2, "stock is the free machines");

    // The live OS list offers the mapped images.
    let os = server.get("/api/v1/os?type=lxc", key).await;
    let os = assert_api_success(&os, "OS list retrieved successfully", LIVE)["os"].clone();
    let slugs: Vec<&str> = os
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["debian-12", "debian-13"], "{os}");

    // Buying charges exactly 3.00 at once and takes a machine out of stock.
    let (order_id, service_id) = shop.buy_ok("debian-13", "Debian 13").await;
    assert_eq!(shop.wallet("acme"), "acme live wallet: 97.00");
    let ledger = shop.ledger();
    let purchase: Vec<&String> = ledger
        .iter()
        .filter(|l| l.contains(" purchase ") && l.contains(&order_id))
        .collect();
    assert_eq!(purchase.len(), 1, "{ledger:?}");
    assert!(purchase[0].contains("-3.00"), "{ledger:?}");
    assert_eq!(shop.stock(key).await, 1);

    // Provisioning completes: address from the pool, root, a password that works.
    let placed = Instant::now();
    let done = shop.wait_order(&order_id).await;
    eprintln!("order {order_id} provisioned in {:?}", placed.elapsed());
    assert_eq!(done["order"]["status"], "COMPLETED", "{done}");
    assert!(done["order"]["error"].is_null(), "{done}");
    let services = done["services"].as_array().expect("services");
    assert_eq!(services.len(), 1, "{done}");
    let bought = &services[0];
    assert_eq!(bought["serviceId"], service_id.as_str(), "{done}");
    assert_eq!(bought["serviceType"], "LINUX", "{done}");
    assert_eq!(bought["username"], "root", "{done}");
    assert_eq!(bought["os"], "Debian 13", "{done}");
    let ip = bought["ip"].as_str().expect("ip").to_string();
    assert!(
        shop.setup.block.contains(&ip),
        "{ip} is not from the pool {}",
        shop.setup.block.range()
    );
    let password = bought["password"].as_str().expect("password").to_string();
    assert!(is_strong_password(&password), "{password}");
    let expiry = millis(&bought["expiryDate"]);
    let expected = now_ms() as i64 + 30 * DAY_MS;
    assert!(
        (expected - expiry).abs() < 10 * 60_000,
        "expiry is 30 days after the purchase: {done}"
    );

    // In the guest: the machine that was taken now runs trixie with that address and password.
    let machine = shop.assigned_machine();
    assert_eq!(shop.setup.lxd.status(&machine), "Running");
    wait_for_boot(&machine);
    assert_eq!(guest_codename(&machine), "trixie");
    let addresses = wait_guest_address(&machine, &ip);
    assert!(
        addresses.contains(&ip),
        "{ip} not on eth0 of {machine}: {addresses:?}"
    );
    assert!(
        verify_root_password(&machine, &password),
        "the order's password is not root's password in {machine}"
    );
    let other = shop.machines.iter().find(|m| **m != machine).unwrap();
    assert_eq!(shop.inventory(other), shop.free_inventory());
    assert_eq!(
        guest_codename(other),
        "bookworm",
        "the other machine is untouched"
    );
    assert_eq!(shop.stock(key).await, 1);
    // The password is final.
    let again = shop.order(key, &order_id).await;
    assert_eq!(again.data()["services"][0]["password"], password.as_str());

    // Managed through the service endpoints like any live service.
    let status = shop.status(&service_id).await;
    assert_eq!(status["runningStatus"], "RUNNING", "{status}");
    assert_eq!(status["vmStatus"]["status"], "running", "{status}");
    assert_eq!(status["serviceType"], "LINUX", "{status}");
    assert_eq!(status["service"]["ip"], ip.as_str(), "{status}");
    assert_eq!(status["service"]["os"]["id"], "debian-13", "{status}");
    assert_eq!(
        status["service"]["expiryDate"], bought["expiryDate"],
        "{status}"
    );
    let stop = server.action(key, &service_id, "stop").await;
    let data = assert_api_success(&stop, "Linux service stopped successfully", LIVE);
    assert_eq!(data["status"], "STOPPED", "{data}");
    assert_eq!(data["vmid"], machine.as_str(), "{data}");
    assert_eq!(shop.setup.lxd.status(&machine), "Stopped");
    let status = shop.status(&service_id).await;
    assert_eq!(status["runningStatus"], "STOPPED", "{status}");
    let start = server.action(key, &service_id, "start").await;
    let data = assert_api_success(&start, "Linux service started successfully", LIVE);
    assert_eq!(data["status"], "STARTED", "{data}");
    assert_eq!(shop.setup.lxd.status(&machine), "Running");
    wait_for_boot(&machine);
    let status = shop.status(&service_id).await;
    assert_eq!(status["runningStatus"], "RUNNING", "{status}");

    // Renewal: refused outside the window, charged exactly inside it.
    let renew_body = json!({ "orderId": order_id, "serviceIds": [service_id] });
    let early = server
        .post_json("/api/v1/services/renew", key, &renew_body)
        .await;
    assert_eq!(early.status, 400, "{}", early.text);
    assert!(
        early.body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!(
                "Service {service_id} can be renewed from 5 days before to 1 day after its expiry ("
            )),
        "{}",
        early.text
    );
    assert_eq!(shop.wallet("acme"), "acme live wallet: 97.00");
    server.cli_ok(&[
        "services",
        "set-expiry",
        "--account",
        "acme",
        &service_id,
        "--in",
        "172800",
    ]);
    let before = millis(&shop.status(&service_id).await["service"]["expiryDate"]);
    let expected = now_ms() as i64 + 2 * DAY_MS;
    assert!((expected - before).abs() < 60_000, "set-expiry --in 172800");
    let resp = server
        .post_json("/api/v1/services/renew", key, &renew_body)
        .await;
    let renewed = assert_api_success(&resp, "Services renewed successfully", LIVE);
    assert_eq!(renewed["orderId"], order_id.as_str(), "{renewed}");
    assert_eq!(renewed["totalAmount"], 3.0, "{renewed}");
    assert_eq!(renewed["currency"], "USD", "{renewed}");
    assert_eq!(renewed["services"][0]["serviceId"], service_id.as_str());
    let after = millis(&shop.status(&service_id).await["service"]["expiryDate"]);
    assert_eq!(after - before, 30 * DAY_MS, "renewal adds 30 days");
    assert_eq!(millis(&renewed["services"][0]["expiryDate"]), after);
    assert_eq!(shop.wallet("acme"), "acme live wallet: 94.00");
    let ledger = shop.ledger();
    assert!(
        ledger
            .iter()
            .any(|l| l.contains(" renewal ") && l.contains(&order_id) && l.contains(" -3.00 ")),
        "the renewal is in the ledger: {ledger:?}"
    );

    // Expiry: stopped and suspended, mutating calls refused.
    let expired_at = Instant::now();
    server.cli_ok(&[
        "services",
        "set-expiry",
        "--account",
        "acme",
        &service_id,
        "--in",
        "-1",
    ]);
    let deadline = expired_at + Duration::from_secs(GRACE_SECS);
    let suspended = loop {
        let status = shop.status(&service_id).await;
        if status["runningStatus"] == "SUSPENDED" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not SUSPENDED within the grace period of {GRACE_SECS}s after expiry: {status}\n\
             LXD says {}",
            shop.setup.lxd.status(&machine)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(suspended["vmStatus"]["status"], "suspended", "{suspended}");
    assert_eq!(suspended["uptime"], 0, "{suspended}");
    assert_eq!(shop.setup.lxd.status(&machine), "Stopped");
    let refused = server.action(key, &service_id, "start").await;
    assert_error(&refused, 403, SUSPENDED);
    assert_eq!(shop.setup.lxd.status(&machine), "Stopped");

    // After the grace period: terminated, wiped from the default OS, back in stock.
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 180);
    loop {
        let resp = server.status(key, &service_id).await;
        if resp.status == 404 {
            assert_error(&resp, 404, SERVICE_NOT_FOUND);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not terminated {:?} after expiry: {}\nserver log:\n{}",
            expired_at.elapsed(),
            resp.text,
            server.stderr_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        expired_at.elapsed() >= Duration::from_secs(GRACE_SECS - 1),
        "terminated before the grace period was over ({:?})",
        expired_at.elapsed()
    );
    assert_eq!(shop.inventory(&machine), shop.free_inventory());
    assert_eq!(
        installed_codename(&machine),
        "bookworm",
        "wiped from the product's default OS"
    );
    assert!(
        !installed_root_password_matches(&machine, &password),
        "the old root password still works after the wipe"
    );
    let config = shop.setup.lxd.config(&machine).expect("the machine exists");
    assert_eq!(config["limits.memory"], "1GiB", "{config}");
    assert_eq!(shop.stock(key).await, 2, "the machine is back in stock");
    let gone = shop.order(key, &order_id).await;
    let gone = assert_api_success(&gone, "Order retrieved successfully", LIVE);
    assert!(
        gone["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["serviceId"] != service_id.as_str()),
        "the terminated service still shows in its order: {gone}"
    );
    assert_eq!(shop.wallet("acme"), "acme live wallet: 94.00", "no refund");
}

#[tokio::test]
async fn the_last_live_machine_bought_twice_at_once_goes_to_exactly_one_order() {
    let Some(shop) = Shop::open(1, &[]) else {
        return;
    };
    let key = shop.key();
    assert_eq!(shop.stock(key).await, 1);
    let body = shop.body(Value::Null, 30);
    let (a, b) = tokio::join!(shop.buy(key, &body), shop.buy(key, &body));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text, b.text);
    let (winner, loser) = if a.status == 200 { (&a, &b) } else { (&b, &a) };
    let loser_body = assert_error(loser, 409, OUT_OF_STOCK);
    assert_eq!(
        loser_body["errors"],
        json!({ "available": 0, "requested": 1 }),
        "{}",
        loser.text
    );
    let data = assert_api_success(winner, "Order placed successfully", LIVE);
    let order_id = data["order"]["orderId"].as_str().unwrap().to_string();
    assert_eq!(
        data["order"]["os"],
        json!({ "id": "debian-12", "name": "Debian 12" }),
        "osId null: the product's default OS"
    );
    assert_eq!(
        shop.wallet("acme"),
        "acme live wallet: 97.00",
        "charged once"
    );
    let purchases = shop
        .ledger()
        .iter()
        .filter(|l| l.contains(" purchase "))
        .count();
    assert_eq!(purchases, 1, "{:?}", shop.ledger());
    assert_eq!(shop.stock(key).await, 0);
    assert_eq!(shop.inventory(&shop.machines[0]).state, "assigned");

    // Sold out for a later buyer too; the winner's order goes through.
    let late = shop.buy(key, &body).await;
    assert_error(&late, 409, OUT_OF_STOCK);
    let done = shop.wait_order(&order_id).await;
    assert_eq!(done["order"]["status"], "COMPLETED", "{done}");
    let ip = done["services"][0]["ip"].as_str().unwrap_or_default();
    assert!(shop.setup.block.contains(ip), "{done}");
    assert_eq!(guest_codename(&shop.machines[0]), "bookworm");
    assert_eq!(shop.wallet("acme"), "acme live wallet: 97.00");
    assert_eq!(shop.stock(key).await, 0);
}

#[tokio::test]
async fn a_failed_live_installation_is_refunded_and_its_machine_wiped_back_into_stock() {
    let Some(shop) = Shop::open(1, &[]) else {
        return;
    };
    let (server, key) = (shop.server(), shop.key());
    let machine = shop.machines[0].clone();
    server.cli_ok(&[
        "os",
        "add",
        "broken",
        "--name",
        "Broken",
        "--type",
        "lxc",
        "--image",
        "no-such-image",
    ]);
    let (order_id, service_id) = shop.buy_ok("broken", "Broken").await;
    assert_eq!(shop.wallet("acme"), "acme live wallet: 97.00");
    assert_eq!(shop.stock(key).await, 0);

    let done = shop.wait_order(&order_id).await;
    assert_eq!(done["order"]["status"], "FAILED", "{done}");
    let error = done["order"]["error"].as_str().unwrap_or_default();
    // The image is checked before anything is destroyed, so the first step
    // fails and names what is missing.
    assert_eq!(
        error,
        "Provisioning failed at step 'save': the hypervisor refused: the node has no image 'no-such-image'",
        "{done}"
    );
    assert_eq!(done["services"], json!([]), "{done}");
    let gone = server.status(key, &service_id).await;
    assert_error(&gone, 404, SERVICE_NOT_FOUND);

    // Refunded exactly, and the ledger says so.
    assert_eq!(shop.wallet("acme"), "acme live wallet: 100.00");
    let ledger = shop.ledger();
    let refunds: Vec<&String> = ledger
        .iter()
        .filter(|l| l.contains(" refund ") && l.contains(&order_id))
        .collect();
    assert_eq!(refunds.len(), 1, "{ledger:?}");
    assert!(
        refunds[0].contains(" 3.00 ") && !refunds[0].contains("-3.00"),
        "{ledger:?}"
    );

    // The machine is back, free, wiped from the product's default OS, and sellable.
    let config = shop.setup.lxd.config(&machine);
    assert_eq!(
        shop.inventory(&machine),
        shop.free_inventory(),
        "the machine is back in inventory (LXD config: {config:?})\nserver log:\n{}",
        server.stderr_log()
    );
    let config = config.unwrap_or_else(|| panic!("{machine} no longer exists in LXD"));
    assert_eq!(config["limits.memory"], "1GiB", "{config}");
    assert_eq!(installed_codename(&machine), "bookworm");
    assert_eq!(shop.stock(key).await, 1, "stock restored");
    server.cli_ok(&["nodes", "sync", "local"]);
    assert_eq!(
        shop.inventory(&machine),
        shop.free_inventory(),
        "still a 1 GB machine of the product after a sync"
    );
    assert_eq!(shop.stock(key).await, 1);
}

#[tokio::test]
async fn a_live_order_is_visible_to_its_buyer_only() {
    let Some(shop) = Shop::open(1, &[]) else {
        return;
    };
    let server = shop.server();
    let (order_id, service_id) = shop.buy_ok("debian-12", "Debian 12").await;
    let done = shop.wait_order(&order_id).await;
    assert_eq!(done["order"]["status"], "COMPLETED", "{done}");

    server.create_account("globex");
    let other = server.create_key("globex", "live");
    let resp = shop.order(&other, &order_id).await;
    assert_error(&resp, 404, ORDER_NOT_FOUND);
    let resp = server.status(&other, &service_id).await;
    assert_error(&resp, 404, SERVICE_NOT_FOUND);
    let resp = server.action(&other, &service_id, "stop").await;
    assert_error(&resp, 404, SERVICE_NOT_FOUND);
    let resp = server
        .post_json(
            "/api/v1/services/renew",
            &other,
            &json!({ "orderId": order_id, "serviceIds": [service_id] }),
        )
        .await;
    assert_error(&resp, 404, ORDER_NOT_FOUND);
    // The buyer's own test key does not see the live order either.
    let test_key = server.create_key("acme", "test");
    let resp = shop.order(&test_key, &order_id).await;
    assert_error(&resp, 404, ORDER_NOT_FOUND);
    // Live stock is the operator's: the other account sees it sold out too.
    assert_eq!(shop.stock(&other).await, 0);
    assert_eq!(shop.wallet("globex"), "globex live wallet: 0.00");

    // Nothing the other account tried touched the buyer's service.
    let status = shop.status(&service_id).await;
    assert_eq!(status["runningStatus"], "RUNNING", "{status}");
    assert_eq!(shop.setup.lxd.status(&shop.machines[0]), "Running");
    assert_eq!(shop.wallet("acme"), "acme live wallet: 97.00");
}
