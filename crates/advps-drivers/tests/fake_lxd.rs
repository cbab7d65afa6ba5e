//! The LXD driver against a small stateful stand-in for LXD's REST API,
//! served on a unix socket. It covers what the real engine on the test
//! machines cannot show: virtual machines (no KVM there), a server without
//! native rebuild next to one with it, a guest that ignores a graceful stop,
//! and the exact requests the driver sends for passwords.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use advps_drivers::lxd::client::LxdClient;
use advps_drivers::lxd::LxdDriver;
use advps_drivers::{
    AddressConfig, Driver, DriverError, InstanceKind, PowerOutcome, PowerStatus, RebuildRequest,
    StepOutcome, StopMode,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    native_rebuild: bool,
    instances: HashMap<String, Value>,
    /// Every request, as "METHOD path".
    log: Vec<String>,
    /// Commands run through exec.
    execs: Vec<Vec<String>>,
    /// Files pushed: path -> (content, mode header).
    files: HashMap<String, (String, String)>,
    /// A guest that never acts on a graceful stop.
    ignores_graceful_stop: bool,
    /// Operations that failed, by id, with their error text.
    failures: HashMap<String, String>,
    /// State reads so far: each one finds the guests' counters further on.
    state_reads: u64,
}

type Shared = Arc<Mutex<Fake>>;

fn sync(metadata: Value) -> axum::response::Response {
    Json(json!({"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}))
        .into_response()
}

fn done_op() -> axum::response::Response {
    // Operations finish at once here; the driver still waits on them.
    (
        StatusCode::ACCEPTED,
        Json(json!({"type": "async", "status_code": 100, "operation": "/1.0/operations/op1", "metadata": {"id": "op1", "status": "Running"}})),
    )
        .into_response()
}

/// An operation that will be reported failed, with `err`, by the wait endpoint.
fn failed_op(f: &mut Fake, err: &str) -> axum::response::Response {
    let id = format!("fail-{}", f.failures.len());
    f.failures.insert(id.clone(), err.to_string());
    (
        StatusCode::ACCEPTED,
        Json(json!({"type": "async", "status_code": 100, "metadata": {"id": id, "status": "Running"}})),
    )
        .into_response()
}

fn error(code: u16, message: &str) -> axum::response::Response {
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({"type": "error", "error_code": code, "error": message})),
    )
        .into_response()
}

async fn server_info(State(s): State<Shared>) -> axum::response::Response {
    let f = s.lock().unwrap();
    let mut ext = vec!["instances", "container_exec_recording"];
    if f.native_rebuild {
        ext.push("instances_rebuild");
    }
    sync(
        json!({"api_extensions": ext, "environment": {"instance_types": ["container", "virtual-machine"]}}),
    )
}

async fn get_instance(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    f.log.push(format!("GET /1.0/instances/{name}"));
    match f.instances.get(&name) {
        Some(i) => sync(i.clone()),
        None => error(404, "Instance not found"),
    }
}

async fn delete_instance(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    f.log.push(format!("DELETE /1.0/instances/{name}"));
    match f.instances.remove(&name) {
        Some(_) => done_op(),
        None => error(404, "Instance not found"),
    }
}

async fn list_instances(
    State(s): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    let recursion = query.get("recursion").cloned().unwrap_or_default();
    f.log
        .push(format!("GET /1.0/instances?recursion={recursion}"));
    let mut all: Vec<Value> = f.instances.values().cloned().collect();
    all.sort_by_key(|i| i["name"].as_str().unwrap_or("").to_string());
    if recursion == "2" {
        // As LXD does: each instance with its state.
        f.state_reads += 1;
        for i in &mut all {
            i["state"] = state_of(i, f.state_reads);
        }
    }
    sync(Value::Array(all))
}

/// An instance's state as LXD reports it, at the `reads`-th look: CPU time
/// and traffic grow with every look while it runs; a `dir` pool gives no
/// disk usage; loopback traffic is the guest's own and is not counted.
fn state_of(i: &Value, reads: u64) -> Value {
    let running = i["status"] == "Running";
    let n = if running { reads } else { 0 };
    json!({
        "status": i["status"],
        "cpu": {"usage": n * 100_000_000},
        "memory": {"usage": if running { 300u64 << 20 } else { 0 }, "usage_peak": 0, "swap_usage": 0},
        "disk": {},
        "network": if running { json!({
            "eth0": {"type": "broadcast", "addresses": [{"family": "inet", "address": "198.51.100.9", "netmask": "24", "scope": "global"}],
                     "counters": {"bytes_received": n * 1000, "bytes_sent": n * 400}},
            "lo": {"type": "loopback", "addresses": [], "counters": {"bytes_received": 77777, "bytes_sent": 77777}},
        }) } else { json!(null) },
    })
}

async fn resources(State(s): State<Shared>) -> axum::response::Response {
    s.lock().unwrap().log.push("GET /1.0/resources".into());
    sync(json!({"cpu": {"total": 8}, "memory": {"total": 16u64 << 30, "used": 1u64 << 30}}))
}

async fn create_instance(
    State(s): State<Shared>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    let name = body["name"].as_str().unwrap().to_string();
    f.log.push(format!("POST /1.0/instances {name}"));
    let instance = json!({
        "name": name,
        "type": body["type"],
        "status": "Stopped",
        "config": body["config"],
        "devices": body["devices"],
        "profiles": body["profiles"],
        "last_used_at": "1970-01-01T00:00:00Z",
        "image": body["source"]["alias"],
    });
    f.instances.insert(name, instance);
    done_op()
}

async fn get_state(State(s): State<Shared>, Path(name): Path<String>) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    f.log.push(format!("GET /1.0/instances/{name}/state"));
    f.state_reads += 1;
    let reads = f.state_reads;
    match f.instances.get(&name) {
        None => error(404, "Instance not found"),
        Some(i) => sync(state_of(i, reads)),
    }
}

async fn put_state(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    let action = body["action"].as_str().unwrap_or("").to_string();
    let force = body["force"].as_bool().unwrap_or(false);
    f.log.push(format!(
        "PUT state {name} {action}{}",
        if force { " force" } else { "" }
    ));
    let ignores = f.ignores_graceful_stop;
    let Some(running) = f.instances.get(&name).map(|i| i["status"] == "Running") else {
        return error(404, "Instance not found");
    };
    if action == "start" && running {
        return failed_op(&mut f, "The instance is already running");
    }
    if action == "stop" && !running {
        return failed_op(&mut f, "The instance is already stopped");
    }
    if (action == "stop" || action == "restart") && ignores && !force {
        return failed_op(&mut f, "Failed shutting down instance: timeout");
    }
    let instance = f.instances.get_mut(&name).unwrap();
    match action.as_str() {
        "start" | "restart" => {
            instance["status"] = json!("Running");
            instance["last_used_at"] = json!(chrono::Utc::now().to_rfc3339());
            done_op()
        }
        "stop" => {
            instance["status"] = json!("Stopped");
            done_op()
        }
        _ => error(400, "bad action"),
    }
}

async fn exec(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    let command: Vec<String> = serde_json::from_value(body["command"].clone()).unwrap();
    f.execs.push(command);
    if f.instances
        .get(&name)
        .map(|i| i["status"] != "Running")
        .unwrap_or(true)
    {
        return error(400, "Instance is not running");
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"type": "async", "status_code": 100, "metadata": {"id": "exec1", "status": "Running"}})),
    )
        .into_response()
}

async fn push_file(
    State(s): State<Shared>,
    Path(_name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    let mode = headers
        .get("x-lxd-mode")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    f.files.insert(
        q["path"].clone(),
        (String::from_utf8_lossy(&body).into_owned(), mode),
    );
    sync(json!({}))
}

async fn rebuild(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut f = s.lock().unwrap();
    f.log.push(format!("POST rebuild {name}"));
    match f.instances.get_mut(&name) {
        Some(i) => {
            i["image"] = body["source"]["alias"].clone();
            done_op()
        }
        None => error(404, "Instance not found"),
    }
}

async fn wait_op(State(s): State<Shared>, Path(id): Path<String>) -> axum::response::Response {
    if let Some(err) = s.lock().unwrap().failures.get(&id) {
        return sync(json!({"id": id, "status": "Failure", "err": err}));
    }
    match id.as_str() {
        "exec1" => sync(json!({"id": id, "status": "Success", "metadata": {"return": 0}})),
        _ => sync(json!({"id": id, "status": "Success", "metadata": {}})),
    }
}

/// Every image alias exists here except `missing-image`.
async fn image_alias(Path(alias): Path<String>) -> axum::response::Response {
    if alias == "missing-image" {
        return error(404, "not found");
    }
    sync(json!({"name": alias, "target": "0123abcd"}))
}

struct Server {
    state: Shared,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

async fn start(fake: Fake) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lxd.socket");
    let state: Shared = Arc::new(Mutex::new(fake));
    let app = Router::new()
        .route("/1.0", get(server_info))
        .route("/1.0/resources", get(resources))
        .route("/1.0/instances", get(list_instances).post(create_instance))
        .route(
            "/1.0/instances/{name}",
            get(get_instance).delete(delete_instance),
        )
        .route("/1.0/instances/{name}/state", get(get_state).put(put_state))
        .route("/1.0/instances/{name}/exec", post(exec))
        .route("/1.0/instances/{name}/files", post(push_file))
        .route("/1.0/instances/{name}/rebuild", post(rebuild))
        .route("/1.0/images/aliases/{alias}", get(image_alias))
        .route("/1.0/operations/{id}/wait", get(wait_op))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        state,
        _dir: dir,
        socket,
    }
}

fn vm(name: &str, status: &str) -> Value {
    json!({
        "name": name,
        "type": "virtual-machine",
        "status": status,
        "config": {"limits.memory": "2GiB", "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc", "image.os": "debian"},
        "expanded_config": {"limits.memory": "2GiB"},
        "devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "advpsbr0"}},
        "profiles": ["default"],
        "last_used_at": chrono::Utc::now().to_rfc3339(),
    })
}

async fn driver(server: &Server) -> LxdDriver {
    LxdDriver::connect(LxdClient::new(&server.socket))
        .await
        .unwrap()
}

#[tokio::test]
async fn virtual_machines_are_listed_powered_and_measured() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let caps = driver.capabilities().await.unwrap();
    assert!(caps.virtual_machines && caps.containers);

    let listed = driver.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, InstanceKind::VirtualMachine);
    assert_eq!(listed[0].memory_mb, Some(2048));

    let status = driver.status("vm1").await.unwrap();
    assert_eq!(status.power, PowerStatus::Running);
    assert_eq!(
        status.addresses,
        vec!["198.51.100.9".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert!(status.uptime_secs.unwrap() < 5);

    assert_eq!(driver.start("vm1").await, Err(DriverError::AlreadyRunning));
    driver.stop("vm1", StopMode::Force).await.unwrap();
    assert_eq!(driver.status("vm1").await.unwrap().uptime_secs, Some(0));
    assert_eq!(driver.reboot("vm1").await, Err(DriverError::NotRunning));
    assert_eq!(driver.status("nope").await, Err(DriverError::NotFound));
}

#[tokio::test]
async fn usage_comes_from_state_and_limits_with_one_call_per_node() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let mut ct = vm("ct1", "Stopped");
    ct["type"] = json!("container");
    ct["config"] = json!({"limits.cpu": "0-1"});
    ct["expanded_config"] = json!({"limits.cpu": "0-1"});
    ct["expanded_devices"] =
        json!({"root": {"type": "disk", "path": "/", "pool": "default", "size": "10GiB"}});
    fake.instances.insert("ct1".into(), ct);
    let server = start(fake).await;
    let driver = driver(&server).await;

    let one = driver.usage("vm1").await.unwrap();
    assert!(one.running);
    assert_eq!(one.cores, Some(8), "no limits.cpu: the host's cores");
    assert_eq!(one.memory_total, Some(2 << 30), "limits.memory");
    assert_eq!(one.memory_used, Some(300 << 20));
    assert_eq!(one.cpu_time_ns, Some(100_000_000));
    assert_eq!(one.disk_used, None, "a dir pool has no usage to give");
    assert_eq!(one.disk_total, None);
    assert_eq!(
        (one.rx_bytes, one.tx_bytes),
        (Some(1000), Some(400)),
        "loopback is left out"
    );

    let before = server.state.lock().unwrap().log.len();
    let all = driver.usage_all().await.unwrap();
    let log = server.state.lock().unwrap().log[before..].to_vec();
    assert_eq!(
        log,
        ["GET /1.0/instances?recursion=2"],
        "one engine call for the whole node"
    );
    assert_eq!(all.len(), 2);
    let (name, stopped) = &all[0];
    assert_eq!(name, "ct1");
    assert!(!stopped.running);
    assert_eq!(stopped.cores, Some(2), "limits.cpu 0-1");
    assert_eq!(
        stopped.memory_total,
        Some(16 << 30),
        "no limit: the host's memory"
    );
    assert_eq!(stopped.disk_total, Some(10 << 30));
    assert_eq!(
        (stopped.cpu_time_ns, stopped.memory_used, stopped.rx_bytes),
        (Some(0), Some(0), Some(0))
    );
    let (_, running) = &all[1];
    assert_eq!(running.cpu_time_ns, Some(200_000_000), "counters moved on");
    assert_eq!(running.rx_bytes, Some(2000));
    let resources = server
        .state
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|l| *l == "GET /1.0/resources")
        .count();
    assert_eq!(resources, 1, "the host's totals are read once");
}

#[tokio::test]
async fn a_guest_that_ignores_a_graceful_stop_is_forced_off() {
    let mut fake = Fake {
        ignores_graceful_stop: true,
        ..Fake::default()
    };
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    driver
        .stop(
            "vm1",
            StopMode::Graceful {
                timeout: std::time::Duration::from_secs(1),
            },
        )
        .await
        .unwrap();
    let log = server.state.lock().unwrap().log.clone();
    assert!(log.contains(&"PUT state vm1 stop".to_string()), "{log:?}");
    assert!(
        log.contains(&"PUT state vm1 stop force".to_string()),
        "{log:?}"
    );
    assert_eq!(
        driver.power_status_for_tests("vm1").await,
        PowerStatus::Stopped
    );
}

#[tokio::test]
async fn the_password_goes_through_a_root_only_file_never_a_command_line() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    driver
        .set_password("vm1", "root", "Secr3tPassw0rdXyZ")
        .await
        .unwrap();
    {
        let f = server.state.lock().unwrap();
        let (content, mode) = f.files.get("/run/advps-chpasswd").expect("file pushed");
        assert_eq!(content, "root:Secr3tPassw0rdXyZ\n");
        assert_eq!(mode, "0600");
        assert!(!f.execs.is_empty());
        for command in &f.execs {
            assert!(
                !command.join(" ").contains("Secr3tPassw0rdXyZ"),
                "{command:?}"
            );
        }
    }
    assert_eq!(
        driver.set_password("vm1", "root", "bad:password").await,
        Err(DriverError::Engine(
            "the password holds a character chpasswd cannot take".into()
        ))
    );
}

async fn run_rebuild(driver: &LxdDriver, request: &RebuildRequest) -> Vec<&'static str> {
    let mut scratch = json!({});
    let mut ran = Vec::new();
    for step in 0.. {
        ran.push(driver.rebuild_steps()[step]);
        if driver
            .rebuild_step(request, step, &mut scratch)
            .await
            .unwrap()
            == StepOutcome::Done
        {
            break;
        }
    }
    ran
}

#[tokio::test]
async fn a_vm_is_recreated_with_its_type_config_and_devices_without_native_rebuild() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let request = RebuildRequest {
        instance: "vm1".into(),
        image: "debian-13-vm".into(),
        address: Some(AddressConfig {
            address: "198.51.100.77".parse().unwrap(),
            prefix: 24,
            gateway: Some("198.51.100.1".parse().unwrap()),
        }),
        password: Some("Secr3tPassw0rdXyZ".into()),
        username: "root".into(),
    };
    let ran = run_rebuild(&driver, &request).await;
    assert_eq!(
        ran,
        ["save", "stop", "delete", "create", "start", "address", "password"]
    );
    let f = server.state.lock().unwrap();
    let vm1 = &f.instances["vm1"];
    assert_eq!(vm1["type"], "virtual-machine");
    assert_eq!(vm1["image"], "debian-13-vm");
    assert_eq!(vm1["status"], "Running");
    assert_eq!(
        vm1["config"],
        json!({"limits.memory": "2GiB", "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc"}),
        "the MAC is kept; other volatile and image keys are not"
    );
    assert_eq!(vm1["devices"]["eth0"]["parent"], "advpsbr0");
    // The address was applied in the guest, with the address as an argument.
    assert!(f
        .execs
        .iter()
        .any(|c| c.contains(&"198.51.100.77/24".to_string())
            && c.contains(&"198.51.100.1".to_string())));
    assert!(f.files.contains_key("/run/advps-chpasswd"));
}

#[tokio::test]
async fn a_resumed_rebuild_does_not_save_the_half_made_instance() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let request = RebuildRequest {
        instance: "vm1".into(),
        image: "debian-13-vm".into(),
        address: None,
        password: None,
        username: "root".into(),
    };
    let mut scratch = json!({});
    // save, stop, delete ... then the worker dies.
    for step in 0..3 {
        driver
            .rebuild_step(&request, step, &mut scratch)
            .await
            .unwrap();
    }
    assert!(!server.state.lock().unwrap().instances.contains_key("vm1"));
    // A new worker resumes from the saved scratch at step 2 (delete again is harmless).
    for step in 2..driver.rebuild_steps().len() {
        driver
            .rebuild_step(&request, step, &mut scratch)
            .await
            .unwrap();
    }
    let f = server.state.lock().unwrap();
    assert_eq!(f.instances["vm1"]["type"], "virtual-machine");
    assert_eq!(f.instances["vm1"]["status"], "Running");
}

#[tokio::test]
async fn native_rebuild_is_used_where_advertised() {
    let mut fake = Fake {
        native_rebuild: true,
        ..Fake::default()
    };
    fake.instances.insert("vm1".into(), vm("vm1", "Stopped"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let request = RebuildRequest {
        instance: "vm1".into(),
        image: "debian-13-vm".into(),
        address: None,
        password: None,
        username: "root".into(),
    };
    let ran = run_rebuild(&driver, &request).await;
    assert_eq!(
        ran,
        ["save", "stop", "rebuild", "start", "address", "password"]
    );
    let f = server.state.lock().unwrap();
    assert!(f.log.contains(&"POST rebuild vm1".to_string()));
    assert!(!f.log.iter().any(|l| l.starts_with("DELETE")));
    assert_eq!(f.instances["vm1"]["image"], "debian-13-vm");
}

#[tokio::test]
async fn power_outcomes_say_which_path_was_taken() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let graceful = StopMode::Graceful {
        timeout: std::time::Duration::from_secs(5),
    };
    assert_eq!(
        driver.reboot_with_mode("vm1", graceful).await,
        Ok(PowerOutcome::Graceful)
    );
    assert_eq!(
        driver.reboot_with_mode("vm1", StopMode::Force).await,
        Ok(PowerOutcome::Forced)
    );
    assert_eq!(
        driver.stop_with_outcome("vm1", graceful).await,
        Ok(PowerOutcome::Graceful)
    );
    assert_eq!(
        driver.reboot_with_mode("vm1", StopMode::Force).await,
        Err(DriverError::NotRunning)
    );
    driver.start("vm1").await.unwrap();
    assert_eq!(
        driver.stop_with_outcome("vm1", StopMode::Force).await,
        Ok(PowerOutcome::Forced)
    );
    let log = server.state.lock().unwrap().log.clone();
    assert!(
        log.contains(&"PUT state vm1 restart force".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_guest_that_ignores_a_graceful_request_is_reported_as_forced() {
    let mut fake = Fake {
        ignores_graceful_stop: true,
        ..Fake::default()
    };
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let graceful = StopMode::Graceful {
        timeout: std::time::Duration::from_secs(1),
    };
    assert_eq!(
        driver.reboot_with_mode("vm1", graceful).await,
        Ok(PowerOutcome::GracefulThenForced)
    );
    assert_eq!(
        driver.stop_with_outcome("vm1", graceful).await,
        Ok(PowerOutcome::GracefulThenForced)
    );
    assert_eq!(
        driver.power_status_for_tests("vm1").await,
        PowerStatus::Stopped
    );
}

#[tokio::test]
async fn a_rebuild_to_an_image_the_node_lacks_leaves_the_machine_alone() {
    let mut fake = Fake::default();
    fake.instances.insert("vm1".into(), vm("vm1", "Running"));
    let server = start(fake).await;
    let driver = driver(&server).await;
    let request = RebuildRequest {
        instance: "vm1".into(),
        image: "missing-image".into(),
        address: None,
        password: None,
        username: "root".into(),
    };
    let mut scratch = json!({});
    let err = driver
        .rebuild_step(&request, 0, &mut scratch)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DriverError::Engine("the node has no image 'missing-image'".into())
    );
    let f = server.state.lock().unwrap();
    assert_eq!(f.instances["vm1"]["status"], "Running", "untouched");
    assert!(
        !f.log
            .iter()
            .any(|l| l.starts_with("DELETE") || l.contains("stop")),
        "{:?}",
        f.log
    );
}
