//! Resource usage on the sandbox: `data.resources` of status (its shape,
//! null rates for the first reading after a start, measured rates across
//! two readings, a stopped service, figures that survive a restart), the
//! metrics history (the background sampler at a test interval, the rollup
//! tiers and their pruning run on a schedule of seconds, the server's step,
//! bad parameters) and the list of the caller's services (pagination,
//! filters, tags), with tenancy: another account's service is 404 and never
//! in the list.

mod common;

use common::*;
use std::time::Duration;

/// A sampler every 200 ms; raw samples for 3 s, 2-second averages for
/// 6 s, 4-second averages for 10 s: a month's schedule in seconds.
const FAST_USAGE: [(&str, &str); 4] = [
    ("ADVPS_USAGE_SAMPLE_SECONDS", "0.2"),
    ("ADVPS_USAGE_RAW_KEEP_SECONDS", "3"),
    ("ADVPS_USAGE_ROLLUP_SECONDS", "2,4"),
    ("ADVPS_USAGE_ROLLUP_KEEP_SECONDS", "6,10"),
];

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn resources(status: &Value) -> &Value {
    let r = &status["resources"];
    assert!(r.is_object(), "no data.resources: {status}");
    r
}

#[tokio::test]
async fn status_keeps_its_fields_and_adds_measured_resources() {
    let server = TestServer::start();
    let key = &server.test_key;
    // A fresh boot: the counters start over, so the first reading has
    // nothing to measure a rate against.
    server.action(key, "vps_service_1", "stop").await;
    server.action(key, "vps_service_1", "start").await;
    let first = server.status_data(key, "vps_service_1").await;
    for field in [
        "serviceId",
        "serviceType",
        "runningStatus",
        "ip",
        "uptime",
        "service",
        "vmStatus",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    let r = resources(&first);
    assert_eq!(r["cpu"]["cores"], 2, "{r}");
    assert!(r["cpu"]["usagePercent"].is_null(), "first reading: {r}");
    assert!(r["network"]["rxBytesPerSecond"].is_null(), "{r}");
    assert!(r["network"]["txBytesPerSecond"].is_null(), "{r}");
    assert!(is_timestamp(r["sampledAt"].as_str().unwrap()), "{r}");
    let used = r["memory"]["usedBytes"].as_u64().unwrap();
    let total = r["memory"]["totalBytes"].as_u64().unwrap();
    assert!(used > 0 && used < total, "{r}");
    let disk_used = r["disk"]["usedBytes"].as_u64().unwrap();
    assert!(disk_used > 0 && disk_used < r["disk"]["totalBytes"].as_u64().unwrap());
    let rx1 = r["network"]["rxBytes"].as_u64().unwrap();

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = server.status_data(key, "vps_service_1").await;
    let r = resources(&second);
    let cpu = r["cpu"]["usagePercent"].as_f64().expect("measured now");
    assert!(cpu > 0.0 && cpu <= 100.0, "{r}");
    let rx_rate = r["network"]["rxBytesPerSecond"].as_f64().unwrap();
    assert!(rx_rate > 0.0, "{r}");
    assert!(r["network"]["txBytesPerSecond"].as_f64().unwrap() > 0.0);
    let rx2 = r["network"]["rxBytes"].as_u64().unwrap();
    assert!(rx2 > rx1, "counters grow while it runs");
    // The rate is the counters' change over the time between the readings.
    let seconds = 1.2;
    let implied = (rx2 - rx1) as f64 / seconds;
    assert!(
        rx_rate > implied * 0.5 && rx_rate < implied * 1.5,
        "{rx_rate} vs {implied}"
    );

    // Another service has its own figures.
    let lxc = server.status_data(key, "lxc_service_1").await;
    assert_eq!(resources(&lxc)["cpu"]["cores"], 1);
    assert_ne!(resources(&lxc)["disk"], r["disk"]);
}

#[tokio::test]
async fn a_stopped_service_uses_nothing_but_keeps_its_totals() {
    let server = TestServer::start();
    let key = &server.test_key;
    for _ in 0..2 {
        let status = server.status_data(key, "vps_service_2").await;
        assert_eq!(status["runningStatus"], "STOPPED");
        let r = resources(&status);
        assert_eq!(r["cpu"]["usagePercent"], 0.0, "{r}");
        assert_eq!(r["memory"]["usedBytes"], 0, "{r}");
        assert!(r["memory"]["totalBytes"].as_u64().unwrap() > 0);
        assert!(
            r["disk"]["usedBytes"].as_u64().unwrap() > 0,
            "a disk keeps its data"
        );
        assert!(r["disk"]["totalBytes"].as_u64().unwrap() > 0);
        assert_eq!(r["network"]["rxBytes"], 0);
        assert_eq!(r["network"]["rxBytesPerSecond"], 0.0);
        assert_eq!(r["network"]["txBytesPerSecond"], 0.0);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
}

#[tokio::test]
async fn simulated_usage_is_derived_so_it_survives_a_restart() {
    let mut server = TestServer::start();
    let key = server.test_key.clone();
    let before = server.status_data(&key, "vps_service_1").await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = server.status_data(&key, "vps_service_1").await;
    let (b, a) = (resources(&before), resources(&after));
    assert_eq!(a["memory"]["totalBytes"], b["memory"]["totalBytes"]);
    assert_eq!(a["disk"], b["disk"]);
    assert!(a["network"]["rxBytes"].as_u64() > b["network"]["rxBytes"].as_u64());
    // The reading before the restart was kept: this one has rates.
    assert!(a["cpu"]["usagePercent"].is_number(), "{a}");
}

#[tokio::test]
async fn the_sampler_fills_a_history_that_rolls_up_and_is_pruned() {
    let server = TestServer::start_with_env(&FAST_USAGE);
    let key = &server.test_key;
    // Long enough that, without pruning, the coarsest tier would reach
    // back further than it keeps.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let now = now_ms();
    let metrics = |from_ms: u64, step: u32| {
        format!(
            "/api/v1/services/vps_service_1/metrics?start={}&end={}&step={step}",
            iso(now - from_ms),
            iso(now)
        )
    };
    let data_of = |resp: &Resp| {
        assert_api_success(resp, "Service metrics retrieved successfully", "test").clone()
    };
    let stamps = |data: &Value, series: &str| -> Vec<i64> {
        data["timeSeries"][series]
            .as_array()
            .unwrap_or_else(|| panic!("no {series}: {data}"))
            .iter()
            .map(|p| p[0].as_i64().unwrap())
            .collect()
    };

    // The last 2.5 seconds: raw samples, averaged per second (a loaded
    // machine may delay a round or two).
    let recent = data_of(&server.get(&metrics(2_500, 1), key).await);
    assert_eq!(recent["serviceId"], "vps_service_1");
    assert_eq!(recent["step"], 1);
    for series in [
        "cpu",
        "memory.used",
        "disk.used",
        "network.in",
        "network.out",
    ] {
        let points = recent["timeSeries"][series].as_array().unwrap();
        assert!(!points.is_empty(), "{series}: {recent}");
        for p in points {
            assert!(p[1].as_f64().unwrap() >= 0.0, "{series}: {p}");
        }
    }
    let cpu = recent["timeSeries"]["cpu"][0][1].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu <= 100.0, "{recent}");

    // Five seconds back: past the raw samples, the 2-second rollup.
    let mid = data_of(&server.get(&metrics(5_000, 1), key).await);
    let ts = stamps(&mid, "cpu");
    assert!(!ts.is_empty(), "{mid}");
    assert!(ts.iter().all(|t| t % 2 == 0), "2-second buckets: {ts:?}");

    // Nine seconds back: the 4-second rollup only.
    let old = data_of(&server.get(&metrics(9_000, 1), key).await);
    let ts = stamps(&old, "memory.used");
    assert!(ts.len() >= 2, "{old}");
    assert!(ts.iter().all(|t| t % 4 == 0), "4-second buckets: {ts:?}");

    // A minute back: the oldest tier was pruned at 10 seconds, so nothing
    // of the first seconds is left.
    let all = data_of(&server.get(&metrics(60_000, 1), key).await);
    let ts = stamps(&all, "cpu");
    let earliest = *ts.first().expect("some history");
    let now_s = (now / 1000) as i64;
    // Kept: buckets that start at most 10 s back (and a moment for the
    // round that prunes); unpruned, they would reach back 15 s and more.
    assert!(earliest >= now_s - 11, "{ts:?} at {now_s}");

    // A stopped service's history is still.
    let stopped = data_of(
        &server
            .get(
                &format!(
                    "/api/v1/services/vps_service_2/metrics?type=cpu,network&start={}&end={}&step=1",
                    iso(now - 2_500),
                    iso(now)
                ),
                key,
            )
            .await,
    );
    assert!(
        stopped["timeSeries"].get("memory.used").is_none(),
        "only what was asked"
    );
    for series in ["cpu", "network.in", "network.out"] {
        let points = stopped["timeSeries"][series].as_array().unwrap();
        assert!(!points.is_empty());
        assert!(
            points.iter().all(|p| p[1].as_f64() == Some(0.0)),
            "{series}: {stopped}"
        );
    }

    // Thirty days without a step: the server picks one within 500 points.
    let month = data_of(
        &server
            .get(
                &format!(
                    "/api/v1/services/vps_service_1/metrics?type=cpu&start={}",
                    iso(now - 30 * 86_400_000)
                ),
                key,
            )
            .await,
    );
    let step = month["step"].as_i64().unwrap();
    assert!(30 * 86_400 / step <= 500, "{step}");
    assert!(month["timeSeries"]["cpu"].as_array().unwrap().len() <= 500);
}

#[tokio::test]
async fn metrics_refuse_bad_parameters_and_other_accounts_services() {
    let server = TestServer::start();
    let key = &server.test_key;
    let now = now_ms();
    let base = "/api/v1/services/vps_service_1/metrics";
    let type_error =
        "Invalid type value — must be a comma-separated list of cpu, memory, disk, network";
    let time_error = "Invalid start or end — must be ISO-8601 times with start before end";
    let step_error = "Invalid step value — must be a positive number of seconds giving at most 500 points per series";
    for (query, message) in [
        ("type=cpu,gpu".to_string(), type_error),
        ("type=".to_string(), type_error),
        ("start=yesterday".to_string(), time_error),
        (
            format!("start={}&end={}", iso(now), iso(now - 1_000)),
            time_error,
        ),
        ("step=0".to_string(), step_error),
        ("step=-5".to_string(), step_error),
        ("step=fast".to_string(), step_error),
        // A day at one second is 86,400 points.
        ("step=1".to_string(), step_error),
    ] {
        let resp = server.get(&format!("{base}?{query}"), key).await;
        assert_error(&resp, 400, message);
    }
    let resp = server.get("/api/v1/services/no_such/metrics", key).await;
    assert_error(&resp, 404, SERVICE_NOT_FOUND);

    // A service only demo has (bought): 404 for another account, and not
    // in its list; nor on the live side of demo's own account.
    let bought = server
        .post_json(
            "/api/v1/purchase/linux",
            key,
            &json!({"productId": "prod_abc123", "ram": "4GB", "osId": null, "quantity": 1, "validity": 30}),
        )
        .await;
    let bought = assert_api_success(&bought, "Order placed successfully", "test");
    let id = bought["services"][0]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    for path in [
        format!("/api/v1/services/{id}/metrics"),
        format!("/api/v1/services/{id}/status"),
    ] {
        assert_eq!(server.get(&path, key).await.status, 200, "{path}");
        assert_error(&server.get(&path, &acme).await, 404, SERVICE_NOT_FOUND);
    }
    let mine = server.get("/api/v1/services?type=LINUX", key).await;
    let mine = assert_api_success(&mine, "Services retrieved successfully", "test");
    let row = mine["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["serviceId"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {mine}"))
        .clone();
    assert_eq!(row["productId"], "prod_abc123");
    assert!(is_timestamp(row["expiryDate"].as_str().unwrap()), "{row}");
    let theirs = server.get("/api/v1/services?limit=100", &acme).await;
    let theirs = assert_api_success(&theirs, "Services retrieved successfully", "test");
    assert_eq!(theirs["pagination"]["total"], 4, "only acme's own fleet");
    assert!(!theirs.to_string().contains(&id));
    let live = server.create_key("demo", "live");
    for path in [
        "/api/v1/services/vps_service_1/metrics",
        "/api/v1/services/vps_service_1/status",
    ] {
        assert_error(&server.get(path, &live).await, 404, SERVICE_NOT_FOUND);
    }
    let listed = server.get("/api/v1/services", &live).await;
    let data = assert_api_success(&listed, "Services retrieved successfully", "live");
    assert_eq!(data["services"], json!([]));
    assert_eq!(data["pagination"]["total"], 0);

    // One request of quota; a matching tag is free.
    let remaining = || async {
        let me = server.get("/api/v1/me", key).await;
        me.body["data"]["rateLimit"]["remaining"].as_u64().unwrap()
    };
    let path = format!(
        "{base}?start={}&end={}",
        iso(now - 3_600_000),
        iso(now - 1_800_000)
    );
    let before = remaining().await;
    let first = server.get(&path, key).await;
    assert_eq!(first.status, 200);
    assert_eq!(remaining().await, before - 1);
    let tag = first.header("etag").expect("an ETag");
    let again = server
        .get_with_headers(&path, key, &[("If-None-Match", &tag)])
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(remaining().await, before - 1);
}

#[tokio::test]
async fn the_list_is_the_callers_own_paged_filtered_and_tagged() {
    let server = TestServer::start();
    let key = &server.test_key;
    let ids = |data: &Value| -> Vec<String> {
        data["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["serviceId"].as_str().unwrap().to_string())
            .collect()
    };
    let resp = server.get("/api/v1/services", key).await;
    let data = assert_api_success(&resp, "Services retrieved successfully", "test").clone();
    assert_eq!(
        ids(&data),
        [
            "lxc_service_1",
            "pvps_service_1",
            "vps_service_1",
            "vps_service_2"
        ]
    );
    assert_eq!(
        data["pagination"],
        json!({"page": 1, "limit": 10, "total": 4, "totalPages": 1, "hasNext": false, "hasPrev": false})
    );
    let vps = &data["services"][2];
    assert_eq!(vps["serviceType"], "VPS");
    assert_eq!(vps["runningStatus"], "RUNNING");
    assert_eq!(vps["ip"], "192.168.1.100");
    for field in ["os", "productId", "expiryDate"] {
        assert!(vps.get(field).is_some(), "{field}: {vps}");
    }
    assert!(
        data["services"][1]["ip"].is_null(),
        "no address before get-ip"
    );

    let page = server.get("/api/v1/services?page=2&limit=3", key).await;
    let page = assert_api_success(&page, "Services retrieved successfully", "test");
    assert_eq!(ids(page), ["vps_service_2"]);
    assert_eq!(page["pagination"]["totalPages"], 2);
    assert_eq!(page["pagination"]["hasPrev"], true);
    let past = server.get("/api/v1/services?page=9", key).await;
    assert_eq!(
        ids(assert_api_success(
            &past,
            "Services retrieved successfully",
            "test"
        ))
        .len(),
        0
    );

    for (query, expected) in [
        ("type=VPS", vec!["vps_service_1", "vps_service_2"]),
        ("type=linux", vec!["lxc_service_1"]),
        ("type=PROVISIONAL_VPS", vec!["pvps_service_1"]),
        ("status=STOPPED", vec!["vps_service_2"]),
        ("type=VPS&status=RUNNING", vec!["vps_service_1"]),
        ("status=REBUILDING", vec![]),
    ] {
        let resp = server.get(&format!("/api/v1/services?{query}"), key).await;
        let data = assert_api_success(&resp, "Services retrieved successfully", "test");
        assert_eq!(ids(data), expected, "{query}");
        assert_eq!(data["pagination"]["total"], expected.len(), "{query}");
    }
    for (query, message) in [
        ("type=vm", "Invalid type value — must be 'VPS', 'LINUX' or 'PROVISIONAL_VPS'"),
        ("status=ON", "Invalid status value — must be 'RUNNING', 'STOPPED', 'REBUILDING', 'PROVISIONING' or 'SUSPENDED'"),
        ("page=0", "Invalid page value — must be a positive integer"),
        ("limit=x", "Invalid limit value — must be a positive integer"),
    ] {
        let resp = server.get(&format!("/api/v1/services?{query}"), key).await;
        assert_error(&resp, 400, message);
    }

    // A tag that holds until the list changes.
    let tag = resp.header("etag").expect("an ETag");
    let same = server
        .get_with_headers("/api/v1/services", key, &[("If-None-Match", &tag)])
        .await;
    assert_eq!(same.status, 304);

    // Another account: its own fleet, untouched by this one's changes.
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    server.action(key, "vps_service_1", "stop").await;
    let changed = server
        .get_with_headers("/api/v1/services", key, &[("If-None-Match", &tag)])
        .await;
    assert_eq!(changed.status, 200, "the stop changed the list");
    let theirs = server
        .get("/api/v1/services?type=VPS&status=STOPPED", &acme)
        .await;
    let theirs = assert_api_success(&theirs, "Services retrieved successfully", "test");
    assert_eq!(
        ids(theirs),
        ["vps_service_2"],
        "acme's own vps_service_1 still runs"
    );
}
