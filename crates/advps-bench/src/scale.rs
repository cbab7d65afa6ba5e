//! Scale-out figures: requests per second of the authenticated status
//! endpoint on one instance with SQLite, one with PostgreSQL and two
//! instances on one PostgreSQL database, measured in one run; then the
//! shared limiter's accuracy under load (requests admitted against the
//! quota, with the load spread over both instances).
//!
//! Reproduce (as root, with PostgreSQL up, e.g. through `.ci/pg-up`):
//! `cargo build --release -p advps-cli -p advps-bench &&
//!  target/release/advps-bench scale --database-url postgres://postgres:advps@127.0.0.1:5432/postgres`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::load::{run_phase, PhaseConfig, PhaseResult, Target};
use crate::server::{self, Server};
use crate::stats;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Administrator URL of the PostgreSQL server; the benchmark makes and
    /// drops its own databases there
    #[arg(long)]
    database_url: String,
    /// Path of the advps server binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Concurrent keep-alive connections in all
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per configuration
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Quota of the limiter accuracy phase
    #[arg(long, default_value_t = 5000)]
    quota: u32,
}

/// The base64 key every instance of one database shares.
const SHARED_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn psql(admin: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .args([admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A fresh database on the server, dropped with the value.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin: &str, tag: &str) -> Result<Database> {
        let name = format!("advps_bench_{tag}_{}", std::process::id());
        psql(
            admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin, &format!("CREATE DATABASE {name}"))?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
        Ok(Database {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Loads the status endpoint over one or two servers, the connections
/// split evenly and the loads overlapping.
async fn load(
    servers: &[&Server],
    key: &str,
    connections: usize,
    warmup: f64,
    seconds: f64,
) -> Result<PhaseResult> {
    let target = Target {
        name: "status",
        path: "/api/v1/services/vps_service_1/status",
        api_key: Some(key.to_string()),
    };
    let cfg = PhaseConfig {
        connections: (connections / servers.len()).max(1),
        warmup: Duration::from_secs_f64(warmup),
        measure: Duration::from_secs_f64(seconds),
    };
    let mut total = match servers {
        [one] => run_phase(one.addr, &target, cfg, one.pid()).await?,
        [a, b] => {
            let (ra, rb) = tokio::join!(
                run_phase(a.addr, &target, cfg, a.pid()),
                run_phase(b.addr, &target, cfg, b.pid())
            );
            let mut total = ra?;
            total.merge(rb?);
            total
        }
        _ => bail!("one or two servers"),
    };
    total.seconds = seconds;
    Ok(total)
}

fn row(label: &str, result: &PhaseResult) -> (f64, f64) {
    let mut lat = result.latencies_us.clone();
    let s = stats::summarize(&mut lat, result.error_count(), result.seconds);
    println!(
        "{label:<34} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
        s.rps, s.p50_ms, s.p99_ms, s.errors
    );
    (s.rps, s.p99_ms)
}

async fn run(args: &ScaleArgs) -> Result<()> {
    let bin = server::locate(args.server.as_deref())?;
    let unlimited = [("ADVPS_RATE_LIMIT_TEST", "1000000000")];
    println!(
        "status endpoint, {} connections, {} s each",
        args.connections, args.seconds
    );

    let sqlite = Server::start_with_env(&bin, &unlimited).await?;
    let r = load(&[&sqlite], &sqlite.key, args.connections, 2.0, args.seconds).await?;
    let (sqlite_rps, _) = row("one instance, SQLite", &r);
    sqlite.stop().await?;

    let db = Database::create(&args.database_url, "scale")?;
    let env = [
        ("ADVPS_RATE_LIMIT_TEST", "1000000000"),
        ("ADVPS_DATABASE_URL", db.url.as_str()),
        ("ADVPS_SECRET_KEY", SHARED_KEY),
    ];
    // The second instance prints no key (the account exists); the key the
    // harness then makes through the command line must reach the same database.
    std::env::set_var("ADVPS_DATABASE_URL", &db.url);
    std::env::set_var("ADVPS_SECRET_KEY", SHARED_KEY);
    let first = Server::start_with_env(&bin, &env).await?;
    let key = first.key.clone();
    let r = load(&[&first], &key, args.connections, 2.0, args.seconds).await?;
    let (pg1, _) = row("one instance, PostgreSQL", &r);
    let second = Server::start_with_env(&bin, &env).await?;
    let r = load(
        &[&first, &second],
        &key,
        args.connections,
        2.0,
        args.seconds,
    )
    .await?;
    let (pg2, _) = row("two instances, one PostgreSQL", &r);
    first.stop().await?;
    second.stop().await?;
    drop(db);
    println!(
        "PostgreSQL one instance / SQLite: {:.2}; two instances / one: {:.2}",
        pg1 / sqlite_rps,
        pg2 / pg1
    );

    // Accuracy: a finite quota, the load spread over two instances well past it.
    let db = Database::create(&args.database_url, "quota")?;
    let quota = args.quota.to_string();
    let env = [
        ("ADVPS_RATE_LIMIT_TEST", quota.as_str()),
        ("ADVPS_DATABASE_URL", db.url.as_str()),
        ("ADVPS_SECRET_KEY", SHARED_KEY),
    ];
    std::env::set_var("ADVPS_DATABASE_URL", &db.url);
    let first = Server::start_with_env(&bin, &env).await?;
    let second = Server::start_with_env(&bin, &env).await?;
    let key = first.key.clone();
    let r = load(&[&first, &second], &key, args.connections, 0.0, 4.0).await?;
    let admitted = r.latencies_us.len() as u64;
    println!(
        "limiter: quota {} per 15 min, {} requests offered over two instances, {} admitted ({})",
        args.quota,
        admitted + r.error_count(),
        admitted,
        if admitted == u64::from(args.quota) {
            "exact"
        } else {
            "NOT exact"
        }
    );
    first.stop().await?;
    second.stop().await?;
    Ok(())
}

pub fn main(args: ScaleArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
