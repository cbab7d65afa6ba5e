//! Product stock endpoints with a test key: the built-in sandbox catalogue, its ordering
//! (stock descending, then id), pagination (defaults, pages, clamping, past the end), the type
//! filter, parameter validation, the stockStatus rule and the single-product lookup.

mod common;

use common::*;

/// The sandbox catalogue in the expected order: (id, name, vmType, packName, stock, stockStatus).
const CATALOGUE: [(&str, &str, &str, &str, u64, &str); 12] = [
    (
        "prod_stu901",
        "VPS 1GB",
        "VPS",
        "1GB VPS Pack",
        40,
        "IN_STOCK",
    ),
    (
        "prod_abc123",
        "Linux VPS 4GB",
        "LXC",
        "4GB Linux Pack",
        25,
        "IN_STOCK",
    ),
    (
        "prod_vwx234",
        "VPS 2GB",
        "VPS",
        "2GB VPS Pack",
        18,
        "IN_STOCK",
    ),
    (
        "prod_jkl012",
        "Linux VPS 8GB",
        "LXC",
        "8GB Linux Pack",
        12,
        "IN_STOCK",
    ),
    (
        "prod_hij456",
        "Windows VPS 8GB",
        "VPS",
        "8GB Windows Pack",
        9,
        "IN_STOCK",
    ),
    (
        "prod_yza567",
        "VPS 4GB",
        "VPS",
        "4GB VPS Pack",
        6,
        "IN_STOCK",
    ),
    (
        "prod_mno345",
        "Linux VPS 16GB",
        "LXC",
        "16GB Linux Pack",
        5,
        "LOW_STOCK",
    ),
    (
        "prod_def456",
        "Linux VPS 2GB",
        "LXC",
        "2GB Linux Pack",
        4,
        "LOW_STOCK",
    ),
    (
        "prod_bcd890",
        "VPS 8GB",
        "VPS",
        "8GB VPS Pack",
        3,
        "LOW_STOCK",
    ),
    (
        "prod_pqr678",
        "Linux VPS 32GB",
        "LXC",
        "32GB Linux Pack",
        1,
        "LOW_STOCK",
    ),
    (
        "prod_efg123",
        "VPS 16GB",
        "VPS",
        "16GB VPS Pack",
        0,
        "OUT_OF_STOCK",
    ),
    (
        "prod_ghi789",
        "Linux VPS 1GB",
        "LXC",
        "1GB Linux Pack",
        0,
        "OUT_OF_STOCK",
    ),
];

const OK: &str = "Product stock retrieved successfully";

fn ids(data: &Value) -> Vec<String> {
    data["stock"]
        .as_array()
        .expect("stock is an array")
        .iter()
        .map(|row| row["id"].as_str().expect("row id").to_string())
        .collect()
}

fn expected_ids(filter: Option<&str>) -> Vec<String> {
    CATALOGUE
        .iter()
        .filter(|p| match filter {
            Some(t) => p.2 == t,
            None => true,
        })
        .map(|p| p.0.to_string())
        .collect()
}

fn check_pagination(data: &Value, page: u64, limit: u64, total: u64, total_pages: u64) {
    let p = &data["pagination"];
    assert_eq!(p["page"], page, "{p}");
    assert_eq!(p["limit"], limit, "{p}");
    assert_eq!(p["total"], total, "{p}");
    assert_eq!(p["totalPages"], total_pages, "{p}");
    assert_eq!(p["hasNext"], page < total_pages, "{p}");
    assert_eq!(p["hasPrev"], page > 1, "{p}");
}

fn check_status_rule(row: &Value, threshold: u64) {
    let stock = row["stock"].as_u64().expect("stock integer");
    let expected = match stock {
        0 => "OUT_OF_STOCK",
        s if s <= threshold => "LOW_STOCK",
        _ => "IN_STOCK",
    };
    assert_eq!(row["stockStatus"], expected, "{row}");
}

#[tokio::test]
async fn full_list_matches_the_sandbox_catalogue_in_order() {
    let server = TestServer::start();
    let resp = server
        .get("/api/v1/products/stock?limit=100", &server.test_key)
        .await;
    let data = assert_api_success(&resp, OK, "test");
    check_pagination(data, 1, 100, 12, 1);
    let rows = data["stock"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for (row, (id, name, vm_type, pack, stock, status)) in rows.iter().zip(CATALOGUE) {
        assert_eq!(row["id"], id, "{row}");
        assert_eq!(row["name"], name, "{row}");
        assert_eq!(row["vmType"], vm_type, "{row}");
        assert_eq!(row["packName"], pack, "{row}");
        assert_eq!(row["stock"], stock, "{row}");
        assert_eq!(row["stockStatus"], status, "{row}");
        check_status_rule(row, 5);
    }
}

#[tokio::test]
async fn default_page_is_first_ten() {
    let server = TestServer::start();
    let resp = server.get("/api/v1/products/stock", &server.test_key).await;
    let data = assert_api_success(&resp, OK, "test");
    check_pagination(data, 1, 10, 12, 2);
    assert_eq!(ids(data), expected_ids(None)[..10].to_vec());
}

#[tokio::test]
async fn pages_do_not_overlap_and_past_the_end_is_empty() {
    let server = TestServer::start();
    let key = &server.test_key;
    let one = server
        .get("/api/v1/products/stock?page=1&limit=10", key)
        .await;
    let one = assert_api_success(&one, OK, "test").clone();
    check_pagination(&one, 1, 10, 12, 2);
    let two = server
        .get("/api/v1/products/stock?page=2&limit=10", key)
        .await;
    let two = assert_api_success(&two, OK, "test").clone();
    check_pagination(&two, 2, 10, 12, 2);
    assert_eq!(ids(&two), vec!["prod_efg123", "prod_ghi789"]);
    let mut all = ids(&one);
    all.extend(ids(&two));
    assert_eq!(all, expected_ids(None), "pages overlap or miss rows");

    let three = server
        .get("/api/v1/products/stock?page=3&limit=10", key)
        .await;
    let three = assert_api_success(&three, OK, "test");
    assert_eq!(three["stock"], json!([]));
    assert_eq!(three["pagination"]["page"], 3);
    assert_eq!(three["pagination"]["total"], 12);
    assert_eq!(three["pagination"]["hasNext"], false);

    // Small pages walk the whole list in order.
    let mut walked = Vec::new();
    for page in 1..=4 {
        let resp = server
            .get(&format!("/api/v1/products/stock?page={page}&limit=3"), key)
            .await;
        let data = assert_api_success(&resp, OK, "test");
        check_pagination(data, page, 3, 12, 4);
        walked.extend(ids(data));
    }
    assert_eq!(walked, expected_ids(None));
}

#[tokio::test]
async fn limit_above_100_is_clamped() {
    let server = TestServer::start();
    let resp = server
        .get("/api/v1/products/stock?limit=1000", &server.test_key)
        .await;
    let data = assert_api_success(&resp, OK, "test");
    check_pagination(data, 1, 100, 12, 1);
    assert_eq!(ids(data).len(), 12);
}

#[tokio::test]
async fn type_filter_selects_lxc_or_vps() {
    let server = TestServer::start();
    let key = &server.test_key;
    for (param, vm_type) in [("linux", "LXC"), ("lxc", "LXC"), ("vps", "VPS")] {
        let resp = server
            .get(&format!("/api/v1/products/stock?type={param}"), key)
            .await;
        let data = assert_api_success(&resp, OK, "test");
        check_pagination(data, 1, 10, 6, 1);
        for row in data["stock"].as_array().unwrap() {
            assert_eq!(row["vmType"], vm_type, "type={param}: {row}");
        }
        assert_eq!(ids(data), expected_ids(Some(vm_type)), "type={param}");
    }
    let resp = server
        .get("/api/v1/products/stock?type=linux&page=2&limit=4", key)
        .await;
    let data = assert_api_success(&resp, OK, "test");
    check_pagination(data, 2, 4, 6, 2);
    assert_eq!(ids(data), vec!["prod_pqr678", "prod_ghi789"]);
}

#[tokio::test]
async fn invalid_query_parameters_are_400() {
    let server = TestServer::start();
    let key = &server.test_key;
    for query in ["type=windows", "type=", "type=VPSX"] {
        let resp = server
            .get(&format!("/api/v1/products/stock?{query}"), key)
            .await;
        assert_error(&resp, 400, "Invalid type value — must be 'linux' or 'vps'");
    }
    for query in ["page=0", "page=-1", "page=abc", "page=1.5"] {
        let resp = server
            .get(&format!("/api/v1/products/stock?{query}"), key)
            .await;
        assert_error(
            &resp,
            400,
            "Invalid page value — must be a positive integer",
        );
    }
    for query in ["limit=0", "limit=-5", "limit=ten", "limit=2.5"] {
        let resp = server
            .get(&format!("/api/v1/products/stock?{query}"), key)
            .await;
        assert_error(
            &resp,
            400,
            "Invalid limit value — must be a positive integer",
        );
    }
}

#[tokio::test]
async fn single_product_and_unknown_product() {
    let server = TestServer::start();
    let key = &server.test_key;
    for (id, name, vm_type, pack, stock, status) in CATALOGUE {
        let resp = server
            .get(&format!("/api/v1/products/stock/{id}"), key)
            .await;
        let data = assert_api_success(&resp, OK, "test");
        let row = &data["stock"];
        assert_eq!(row["id"], id);
        assert_eq!(row["name"], name);
        assert_eq!(row["vmType"], vm_type);
        assert_eq!(row["packName"], pack);
        assert_eq!(row["stock"], stock);
        assert_eq!(row["stockStatus"], status);
    }
    let resp = server.get("/api/v1/products/stock/prod_nope", key).await;
    assert_error(&resp, 404, "Product not found");
}

#[tokio::test]
async fn low_stock_threshold_is_configurable() {
    let server = TestServer::start_with_env(&[("ADVPS_LOW_STOCK_THRESHOLD", "10")]);
    let resp = server
        .get("/api/v1/products/stock?limit=100", &server.test_key)
        .await;
    let data = assert_api_success(&resp, OK, "test");
    for row in data["stock"].as_array().unwrap() {
        check_status_rule(row, 10);
    }
    let resp = server
        .get("/api/v1/products/stock/prod_hij456", &server.test_key)
        .await;
    assert_eq!(
        assert_success(&resp, OK)["stock"]["stockStatus"],
        "LOW_STOCK"
    );
    let resp = server
        .get("/api/v1/products/stock/prod_jkl012", &server.test_key)
        .await;
    assert_eq!(
        assert_success(&resp, OK)["stock"]["stockStatus"],
        "IN_STOCK"
    );
}
