//! Resource usage of live services on real LXD containers, checked against the engine and the
//! guest: memory used as the API reports it is within 10% of what LXD's own API reports for
//! the container at the same moment (and the total is its `limits.memory`), the network
//! counters grow after the guest pings the bridge's gateway, CPU percent rises while the
//! guest runs a busy loop and falls after it, and the background sampler fills the service's
//! history. Containers are bound as in `live_lxd.rs` and deleted when each test ends.

mod common;
#[path = "common/live.rs"]
mod live;

use common::*;
use live::*;
use std::time::Duration;

/// First address of this file's blocks (.216 onwards, eight per test).
const ADDRESS_OFFSET: u8 = 216;
const LIVE: &str = "live";
/// Enough time between two readings for a rate to mean something.
const WINDOW: Duration = Duration::from_millis(2_000);

async fn resources(setup: &LiveSetup, bound: &Bound) -> Value {
    let resp = setup.server.status(&setup.key, &bound.service_id).await;
    let data = assert_api_success(&resp, "Service status retrieved successfully", LIVE);
    assert_eq!(data["runningStatus"], "RUNNING", "{data}");
    data["resources"].clone()
}

/// LXD's own memory figure for the container now.
fn lxd_memory(setup: &LiveSetup, container: &str) -> u64 {
    let (code, state) = setup
        .lxd
        .call("GET", &format!("/1.0/instances/{container}/state"), None);
    assert_eq!(code, 200, "{state}");
    state["metadata"]["memory"]["usage"]
        .as_u64()
        .unwrap_or_else(|| panic!("no memory usage in {state}"))
}

fn limited(setup: &LiveSetup) -> Bound {
    let container = setup.lxd.create_with_config(
        BASE_IMAGE,
        &json!({"limits.memory": "256MiB", "limits.cpu": "1"}),
    );
    setup.bind_container(container)
}

#[tokio::test]
async fn memory_matches_the_engine_and_the_sampler_keeps_a_history() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[("ADVPS_USAGE_SAMPLE_SECONDS", "1")]) else {
        return;
    };
    let bound = limited(&setup);
    for _ in 0..3 {
        let before = lxd_memory(&setup, &bound.container);
        let r = resources(&setup, &bound).await;
        let after = lxd_memory(&setup, &bound.container);
        let used = r["memory"]["usedBytes"].as_u64().expect("memory used") as f64;
        let (low, high) = (before.min(after) as f64, before.max(after) as f64);
        assert!(
            used >= low * 0.9 && used <= high * 1.1,
            "API {used} vs LXD {before}..{after}"
        );
        assert_eq!(
            r["memory"]["totalBytes"],
            256u64 << 20,
            "limits.memory: {r}"
        );
        assert_eq!(r["cpu"]["cores"], 1, "limits.cpu: {r}");
        // The test pool is a `dir` pool: no quota, so no disk usage to report.
        assert!(r["disk"]["usedBytes"].is_null(), "{r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The sampler's history: a few seconds of samples of this container.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = now_ms();
    let path = format!(
        "/api/v1/services/{}/metrics?type=memory,cpu&start={}&step=1",
        bound.service_id,
        // `Z`, not `+00:00`: a `+` in a query string reads as a space.
        chrono::DateTime::from_timestamp_millis(now as i64 - 60_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let resp = setup.server.get(&path, &setup.key).await;
    let data = assert_api_success(&resp, "Service metrics retrieved successfully", LIVE);
    let memory = data["timeSeries"]["memory.used"].as_array().unwrap();
    assert!(memory.len() >= 2, "{data}");
    let engine = lxd_memory(&setup, &bound.container) as f64;
    let last = memory.last().unwrap()[1].as_f64().unwrap();
    assert!(
        (last - engine).abs() <= engine * 0.5,
        "sampled {last} vs LXD {engine}"
    );
    assert!(
        !data["timeSeries"]["cpu"].as_array().unwrap().is_empty(),
        "{data}"
    );
}

#[tokio::test]
async fn network_counters_grow_with_traffic_from_the_guest() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let before = resources(&setup, &bound).await;
    let (rx0, tx0) = (
        before["network"]["rxBytes"].as_u64().expect("rx counter"),
        before["network"]["txBytes"].as_u64().expect("tx counter"),
    );
    // 20 echo requests of 1000 bytes each way.
    exec_ok(
        &bound.container,
        &format!("ping -c 20 -i 0.05 -s 1000 -W 2 {GATEWAY} >/dev/null"),
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = resources(&setup, &bound).await;
    let (rx1, tx1) = (
        after["network"]["rxBytes"].as_u64().unwrap(),
        after["network"]["txBytes"].as_u64().unwrap(),
    );
    assert!(tx1 >= tx0 + 20_000, "sent {tx0} -> {tx1}");
    assert!(rx1 >= rx0 + 20_000, "received {rx0} -> {rx1}");
    let rate = after["network"]["txBytesPerSecond"]
        .as_f64()
        .expect("a rate");
    assert!(rate > 0.0, "{after}");
}

#[tokio::test]
async fn cpu_percent_rises_with_a_busy_loop_and_falls_after_it() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = limited(&setup);
    let cpu = |r: &Value| r["cpu"]["usagePercent"].as_f64();
    // A reading to measure against, then the idle level.
    resources(&setup, &bound).await;
    tokio::time::sleep(WINDOW).await;
    let idle = cpu(&resources(&setup, &bound).await).expect("idle cpu");

    let pid = exec_ok(
        &bound.container,
        "sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!",
    );
    let pid = pid.trim().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    resources(&setup, &bound).await;
    tokio::time::sleep(WINDOW).await;
    let busy = cpu(&resources(&setup, &bound).await).expect("busy cpu");

    exec_ok(&bound.container, &format!("kill {pid}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    resources(&setup, &bound).await;
    tokio::time::sleep(WINDOW).await;
    let after = cpu(&resources(&setup, &bound).await).expect("cpu after");

    // One core of one, on a host that other work shares: the loop gets what the host
    // leaves it, so the checks are relative.
    assert!(busy > idle + 15.0, "idle {idle}, busy {busy}");
    assert!(after < busy / 2.0, "busy {busy}, after {after}");
}
