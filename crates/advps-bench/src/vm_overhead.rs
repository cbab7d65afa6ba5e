//! `advps-bench libvirt`: the engine overhead of advps against libvirt
//! itself.
//!
//! In one run it makes two test VMs `advps-test-bench-<random>` with
//! `.ci/vm-new NAME` and waits until they are ready (Debian 12 on a qcow2
//! overlay of the image `.ci/vm-up` built, guest agent, NoCloud seed with
//! a static address).
//! One is driven directly with `virsh -c qemu:///system` and the guest
//! agent; the other is bound as a VPS in a fresh advps data directory (the
//! release binary's CLI: account, node `--driver libvirt --endpoint
//! qemu:///system`, sync, the image as OS `debian-12` by path, `services
//! create`, a live key) and driven through `advps serve`. Each iteration
//! times, alternating which side goes first:
//!
//! - **stop** (graceful): directly `virsh shutdown --mode acpi`, then
//!   `domstate` polled every 200 ms until `shut off`; through the API `POST
//!   stop {"mode":"graceful","timeoutSeconds":240}` to its answer.
//! - **start**: directly `virsh start` alone, because the API answers right
//!   after the same `virsh start` without waiting for the guest; through
//!   the API `POST start`.
//! - **reboot** (graceful): directly the boot id read through the agent
//!   (`guest-exec cat /proc/sys/kernel/random/boot_id`), `virsh reboot
//!   --mode acpi`, then the boot id read every 200 ms until it changed;
//!   through the API `POST reboot {"mode":"graceful","timeoutSeconds":240}`,
//!   which answers once the driver sees the new boot id.
//! - **rebuild**: directly what an operator does by hand: `virsh destroy`,
//!   a new qcow2 overlay on the image (`vol-create-as --backing-vol`), a
//!   NoCloud seed ISO (genisoimage: new instance id, host name, the VM's
//!   address on its MAC) uploaded as a volume, the definition redefined
//!   with both swapped in, the old disk and seed deleted, `virsh start`,
//!   and readiness waited for; through the API `POST rebuild {"os":
//!   "debian-12"}` and the task polled every 250 ms until `COMPLETED`.
//!
//! Ready means what the driver means by it: the agent answers and
//! `systemctl is-system-running` says running or degraded. Before every
//! timed operation both guests are ready (waited for untimed, polled every
//! 200 ms), so a stop or reboot always meets a fully booted guest. That
//! same untimed wait after start and reboot is also timed from the
//! operation's beginning, identically on both sides, and reported apart as
//! "to ready" (the time a customer waits for a usable guest).
//!
//! Both VMs are removed with `.ci/vm-down NAME` at the end, on errors and
//! on Ctrl-C too (after the server has stopped). Needs root, libvirt and
//! the image (`.ci/vm-up`), and genisoimage. Not part of `.ci/run`.
//!
//! Reproduce:
//!
//! ```text
//! cargo build --release -p advps-cli -p advps-bench
//! target/release/advps-bench libvirt --iterations 3 --json vm-figures.json
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::engine::{
    self, median, ms, random_suffix, remember, Api, Names, OperationReport, Pair, MAX_RATIO,
};
use crate::libvirt::{self as lv, TestVm, Virsh};
use crate::server::{self, Server};

/// The graceful timeout the API gets for stop and reboot: far beyond what
/// an emulated guest needs, so the API never forces (it would not be the
/// same operation as the direct one).
const POWER_TIMEOUT_SECS: u64 = 240;
/// Deadline for one direct stop or reboot.
const POWER_WAIT: Duration = Duration::from_secs(300);
/// How long a guest may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(300);
/// Deadline for one rebuild.
const REBUILD_WAIT: Duration = Duration::from_secs(600);
/// How often the direct side polls the domain state and the boot id, and
/// both sides poll readiness.
const POLL: Duration = Duration::from_millis(200);
/// How long virsh may take for a volume call.
const VOLUME_WAIT: Duration = Duration::from_secs(120);
const ACCOUNT: &str = "bench";
const NODE: &str = "kvm";
const OS: &str = "debian-12";

#[derive(Args, Debug)]
pub struct LibvirtArgs {
    /// Timed rounds of stop, start, reboot and rebuild per side
    #[arg(long, default_value_t = 3)]
    iterations: u32,
    /// Path of the advps binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when an operation misses the 1.2x target
    #[arg(long)]
    strict: bool,
}

pub fn main(args: LibvirtArgs) -> ExitCode {
    let repo = server::workspace_root();
    let result = engine::run_guarded(
        |names| run(&args, names),
        |name| {
            let repo = repo.clone();
            async move {
                match lv::vm_down(&repo, &name).await {
                    Ok(()) => println!("removed VM {name}"),
                    Err(e) => eprintln!("warning: {e:#}; remove it with `.ci/vm-down {name}`"),
                }
            }
        },
    );
    engine::exit_code(result.map(|r| r.all_pass), args.strict)
}

#[derive(Debug, Serialize)]
pub struct LibvirtReport {
    pub iterations: u32,
    pub server_binary: String,
    pub image: String,
    pub direct_vm: String,
    pub api_vm: String,
    pub service_id: String,
    pub target_ratio: f64,
    /// The timed operations, checked against the target.
    pub operations: Vec<OperationReport>,
    /// From the start of a start or reboot until the guest is ready, with
    /// the same poll on both sides; not checked, shown beside.
    pub to_ready: Vec<OperationReport>,
    /// The rebuild tasks' own durations (`finishedAt - createdAt`).
    pub api_rebuild_task_ms: Vec<f64>,
    pub api_rebuild_task_median_ms: f64,
    /// 1, 5 and 15 minute load averages when the run began and ended.
    pub load_before: String,
    pub load_after: String,
    pub note: String,
    pub all_pass: bool,
    pub server_exit: String,
}

const NOTE: &str = "start is `virsh start` on both sides (the API answers without waiting for \
     the guest); stop and reboot end when the domain is shut off or the boot id changed; the \
     API rebuild also checks the guest's address and sets a password when the service has \
     them, and its end is seen through a 250 ms task poll";

/// The directly driven VM and what its rebuild needs.
struct Direct {
    virsh: Virsh,
    vm: TestVm,
    pool: String,
    image: String,
    capacity: String,
    disk: String,
    seed: String,
    rebuilds: u64,
}

#[derive(Default)]
struct Measured {
    stop: Pair,
    start: Pair,
    reboot: Pair,
    rebuild: Pair,
    start_ready: Pair,
    reboot_ready: Pair,
    task_ms: Vec<f64>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run(args: &LibvirtArgs, names: Names) -> Result<LibvirtReport> {
    if args.iterations == 0 {
        bail!("--iterations must be >= 1");
    }
    let bin = server::locate(args.server.as_deref())?;
    println!("server binary: {}", bin.display());
    let load_before = loadavg();
    let virsh = Virsh::new(lv::URI);
    virsh
        .run(&["version"], Duration::from_secs(30))
        .await
        .context("libvirt on qemu:///system (root and .ci/vm-up needed)")?;

    let repo = server::workspace_root();
    let mut vms = Vec::new();
    for salt in [1, 2] {
        let name = lv::bench_name(&random_suffix(salt));
        // Recorded before making it: a half-made VM is removed too.
        remember(&names, &name);
        println!("making {name} with .ci/vm-new (boots under emulation: a minute or more)");
        let vm = lv::vm_new(&repo, &name).await?;
        virsh.wait_ready(&vm.name, READY_WAIT, POLL).await?;
        println!("{} ready (seeded with {})", vm.name, vm.address);
        vms.push(vm);
    }
    let api_vm = vms.pop().expect("two VMs");
    let mut direct = prepare_direct(virsh.clone(), vms.pop().expect("two VMs")).await?;
    println!("image {}", direct.image);

    let srv = Server::start_with_env(
        &bin,
        &[
            ("ADVPS_RATE_LIMIT_LIVE", server::RATE_LIMIT_FOR_RUN),
            ("ADVPS_LIVE_REBUILD_LIMIT", "100000"),
        ],
    )
    .await?;
    println!("server pid {} listening on http://{}", srv.pid(), srv.addr);
    let measured = async {
        let (service, key) =
            setup_advps(&bin, &srv.data_dir(), &direct.image, &api_vm.name).await?;
        println!("bound {} as service {service}", api_vm.name);
        let api = Api {
            addr: srv.addr,
            key,
            service,
        };
        let m = measure(&mut direct, &api, &api_vm.name, args.iterations).await?;
        Ok::<_, anyhow::Error>((api.service, m))
    }
    .await;
    let server_exit = engine::stop_server(srv, measured.is_err()).await;
    let (service, m) = measured?;

    let operations = vec![
        OperationReport::new("stop", &m.stop),
        OperationReport::new("start", &m.start),
        OperationReport::new("reboot", &m.reboot),
        OperationReport::new("rebuild", &m.rebuild),
    ];
    let to_ready = vec![
        OperationReport::new("start", &m.start_ready),
        OperationReport::new("reboot", &m.reboot_ready),
    ];
    let all_pass = operations.iter().all(|o| o.pass);
    let report = LibvirtReport {
        iterations: args.iterations,
        server_binary: bin.display().to_string(),
        image: direct.image.clone(),
        direct_vm: direct.vm.name.clone(),
        api_vm: api_vm.name,
        service_id: service,
        target_ratio: MAX_RATIO,
        operations,
        to_ready,
        api_rebuild_task_median_ms: median(&m.task_ms),
        api_rebuild_task_ms: m.task_ms,
        load_before,
        load_after: loadavg(),
        note: NOTE.to_string(),
        all_pass,
        server_exit,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        engine::write_json(&report, path)?;
    }
    Ok(report)
}

/// Reads what the by-hand rebuild needs from the VM `.ci/vm-new` made: its
/// disk and seed, their pool, the image the disk is an overlay of, and the
/// image's size (an operator has these at hand; not timed).
async fn prepare_direct(virsh: Virsh, vm: TestVm) -> Result<Direct> {
    let disks = virsh.on("domblklist", &vm.name, &["--details"]).await?;
    let disk = lv::disk_source(&disks, "vda")
        .with_context(|| format!("{} has no file disk vda: {disks}", vm.name))?;
    let seed = lv::disk_source(&disks, "vdb")
        .with_context(|| format!("{} has no seed disk vdb: {disks}", vm.name))?;
    let pool = virsh
        .run(&["vol-pool", &disk], VOLUME_WAIT)
        .await?
        .trim()
        .to_string();
    let vol = virsh.run(&["vol-dumpxml", &disk], VOLUME_WAIT).await?;
    let image = lv::backing_path(&vol).with_context(|| format!("{disk} has no backing image"))?;
    let info = virsh
        .run(&["vol-info", "--bytes", &image], VOLUME_WAIT)
        .await?;
    let capacity = lv::capacity_bytes(&info)
        .with_context(|| format!("no capacity for {image}: {info}"))?
        .to_string();
    Ok(Direct {
        virsh,
        vm,
        pool,
        image,
        capacity,
        disk,
        seed,
        rebuilds: 0,
    })
}

/// The operator setup, through the CLI; returns the service id and the key.
async fn setup_advps(
    bin: &Path,
    data_dir: &Path,
    image: &str,
    instance: &str,
) -> Result<(String, String)> {
    let steps: [&[&str]; 5] = [
        &["accounts", "create", ACCOUNT],
        &[
            "nodes",
            "add",
            NODE,
            "--driver",
            "libvirt",
            "--endpoint",
            lv::URI,
        ],
        &["nodes", "sync", NODE],
        &[
            "os",
            "add",
            OS,
            "--name",
            "Debian 12",
            "--type",
            "vps",
            "--image",
            image,
            "--node",
            NODE,
        ],
        &[
            "services",
            "create",
            "--account",
            ACCOUNT,
            "--node",
            NODE,
            "--instance",
            instance,
            "--type",
            "VPS",
            "--os",
            OS,
        ],
    ];
    engine::bind_service(bin, data_dir, &steps, ACCOUNT).await
}

impl Direct {
    fn name(&self) -> &str {
        &self.vm.name
    }

    async fn stop(&self) -> Result<Duration> {
        let t = Instant::now();
        self.virsh
            .on("shutdown", self.name(), &["--mode", "acpi"])
            .await?;
        self.virsh
            .wait_shut_off(self.name(), POWER_WAIT, POLL)
            .await?;
        Ok(t.elapsed())
    }

    async fn start(&self) -> Result<Duration> {
        let t = Instant::now();
        self.virsh.on("start", self.name(), &[]).await?;
        Ok(t.elapsed())
    }

    async fn reboot(&self) -> Result<Duration> {
        let t = Instant::now();
        let before = self
            .virsh
            .boot_id(self.name())
            .await
            .with_context(|| format!("no boot id from {}", self.name()))?;
        self.virsh
            .on("reboot", self.name(), &["--mode", "acpi"])
            .await?;
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(now) = self.virsh.boot_id(self.name()).await {
                if now != before {
                    return Ok(t.elapsed());
                }
            }
            if t.elapsed() > POWER_WAIT {
                bail!("{} kept boot {before} for {POWER_WAIT:?}", self.name());
            }
        }
    }

    /// The rebuild by hand, to a ready guest.
    async fn rebuild(&mut self) -> Result<Duration> {
        let t = Instant::now();
        self.rebuilds += 1;
        let name = self.vm.name.clone();
        let tag = format!("b{}{}", self.rebuilds, random_suffix(self.rebuilds));
        let overlay = format!("{name}-{tag}.qcow2");
        let seed = format!("{name}-seed-{tag}.iso");
        self.virsh.on("destroy", &name, &[]).await?;
        self.virsh
            .run(
                &[
                    "vol-create-as",
                    &self.pool,
                    &overlay,
                    &self.capacity,
                    "--format",
                    "qcow2",
                    "--backing-vol",
                    &self.image,
                    "--backing-vol-format",
                    "qcow2",
                ],
                VOLUME_WAIT,
            )
            .await?;
        self.upload_seed(&seed, &format!("{name}-{tag}")).await?;
        let overlay_path = self.virsh.vol_path(&self.pool, &overlay).await?;
        let seed_path = self.virsh.vol_path(&self.pool, &seed).await?;
        let xml = self.virsh.on("dumpxml", &name, &["--inactive"]).await?;
        let xml = lv::swap_sources(
            &xml,
            &[
                (self.disk.as_str(), overlay_path.as_str()),
                (self.seed.as_str(), seed_path.as_str()),
            ],
        )?;
        let file = tempfile::Builder::new()
            .prefix("advps-bench-domain-")
            .suffix(".xml")
            .tempfile()?;
        std::fs::write(file.path(), xml)?;
        let path = file.path().to_string_lossy().into_owned();
        self.virsh.run(&["define", &path], VOLUME_WAIT).await?;
        let old = [
            std::mem::replace(&mut self.disk, overlay_path),
            std::mem::replace(&mut self.seed, seed_path),
        ];
        for volume in old {
            self.virsh.vol_delete(&volume).await?;
        }
        self.virsh.on("start", &name, &[]).await?;
        self.virsh.wait_ready(&name, READY_WAIT, POLL).await?;
        Ok(t.elapsed())
    }

    /// Writes the NoCloud seed ISO (label `cidata`) and uploads it as
    /// volume `volume` of the pool.
    async fn upload_seed(&self, volume: &str, instance_id: &str) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("advps-bench-seed-")
            .tempdir()?;
        let mut paths = Vec::new();
        for (file, text) in lv::seed_files(self.name(), instance_id, &self.vm.mac, &self.vm.address)
        {
            let path = dir.path().join(file);
            std::fs::write(&path, text)?;
            paths.push(path);
        }
        let iso = dir.path().join("seed.iso");
        let out = Command::new("genisoimage")
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&iso)
            .args(&paths)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running genisoimage")?;
        if !out.status.success() {
            bail!(
                "genisoimage failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let size = std::fs::metadata(&iso)?.len().to_string();
        let iso = iso.to_string_lossy().into_owned();
        self.virsh
            .run(
                &[
                    "vol-create-as",
                    &self.pool,
                    volume,
                    &size,
                    "--format",
                    "raw",
                ],
                VOLUME_WAIT,
            )
            .await?;
        self.virsh
            .run(
                &["vol-upload", "--pool", &self.pool, volume, &iso],
                VOLUME_WAIT,
            )
            .await?;
        Ok(())
    }
}

/// The body of the API's graceful stop and reboot.
fn graceful() -> Value {
    json!({ "mode": "graceful", "timeoutSeconds": POWER_TIMEOUT_SECS })
}

/// Times one API power call; an answer that had to force is an error, as
/// its time would not be that of the same operation.
async fn api_power(api: &Api, action: &str, body: Option<&Value>) -> Result<Duration> {
    let (elapsed, data) = api.power(action, body).await?;
    let mode = data.get("powerMode").and_then(Value::as_str).unwrap_or("");
    if mode.contains("forced") {
        bail!("the API's {action} had to force ({mode}): {data}");
    }
    Ok(elapsed)
}

/// Which side a line is about.
fn side(via_api: bool) -> &'static str {
    if via_api {
        "api"
    } else {
        "direct"
    }
}

async fn measure(d: &mut Direct, api: &Api, api_vm: &str, iterations: u32) -> Result<Measured> {
    let mut m = Measured::default();
    let virsh = d.virsh.clone();
    let direct_vm = d.name().to_string();
    let vm_of = |via_api: bool| if via_api { api_vm } else { direct_vm.as_str() };
    let pick = |pair: &mut Pair, via_api: bool, t: Duration| {
        if via_api {
            pair.1.push(t)
        } else {
            pair.0.push(t)
        }
    };
    for i in 0..iterations {
        let order = engine::order(i);
        let n = i + 1;
        for via_api in order {
            virsh.wait_ready(vm_of(via_api), READY_WAIT, POLL).await?;
            let t = if via_api {
                api_power(api, "stop", Some(&graceful())).await?
            } else {
                d.stop().await?
            };
            pick(&mut m.stop, via_api, t);
            println!(
                "iteration {n} {:<6} stop    {:>7.0} ms",
                side(via_api),
                ms(t)
            );
        }
        for via_api in order {
            let began = Instant::now();
            let t = if via_api {
                api_power(api, "start", None).await?
            } else {
                d.start().await?
            };
            virsh.wait_ready(vm_of(via_api), READY_WAIT, POLL).await?;
            let ready = began.elapsed();
            pick(&mut m.start, via_api, t);
            pick(&mut m.start_ready, via_api, ready);
            println!(
                "iteration {n} {:<6} start   {:>7.0} ms (ready after {:.0} ms)",
                side(via_api),
                ms(t),
                ms(ready)
            );
        }
        for via_api in order {
            let began = Instant::now();
            let t = if via_api {
                api_power(api, "reboot", Some(&graceful())).await?
            } else {
                d.reboot().await?
            };
            virsh.wait_ready(vm_of(via_api), READY_WAIT, POLL).await?;
            let ready = began.elapsed();
            pick(&mut m.reboot, via_api, t);
            pick(&mut m.reboot_ready, via_api, ready);
            println!(
                "iteration {n} {:<6} reboot  {:>7.0} ms (ready after {:.0} ms)",
                side(via_api),
                ms(t),
                ms(ready)
            );
        }
        for via_api in order {
            if via_api {
                let (t, own) = api.rebuild(OS, REBUILD_WAIT).await?;
                virsh.wait_ready(api_vm, READY_WAIT, POLL).await?;
                pick(&mut m.rebuild, true, t);
                if let Some(own) = own {
                    m.task_ms.push(own);
                }
                println!(
                    "iteration {n} api    rebuild {:>7.0} ms (task {})",
                    ms(t),
                    own.map(|o| format!("{o:.0} ms"))
                        .unwrap_or_else(|| "n/a".into())
                );
            } else {
                let t = d.rebuild().await?;
                pick(&mut m.rebuild, false, t);
                println!("iteration {n} direct rebuild {:>7.0} ms", ms(t));
            }
        }
    }
    Ok(m)
}

fn print_report(r: &LibvirtReport) {
    println!();
    println!(
        "engine overhead on libvirt, {} iteration(s): direct {} vs API {} (service {})",
        r.iterations, r.direct_vm, r.api_vm, r.service_id
    );
    print!("{}", engine::table(&r.operations));
    println!("\nfrom the request until the guest is ready (not checked):");
    print!("{}", engine::table(&r.to_ready));
    println!(
        "API rebuild task's own duration (finishedAt - createdAt): median {:.0} ms",
        r.api_rebuild_task_median_ms
    );
    println!(
        "load average: {} before, {} after",
        r.load_before, r.load_after
    );
    println!("note: {}", r.note);
    println!("server: {}", r.server_exit);
}
