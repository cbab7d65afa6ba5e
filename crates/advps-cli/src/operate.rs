//! Commands for running a deployment rather than selling from it: backups
//! and restores, the migration plan, and the checks of `advps doctor`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use secrecy::ExposeSecret;

use advps_server::backup;
use advps_server::Config;
use advps_store::Store;

use crate::cli::PassphraseArgs;

/// The passphrase the arguments name, if any.
fn passphrase(args: &PassphraseArgs) -> Result<Option<String>> {
    if let Some(var) = &args.passphrase_env {
        let value = std::env::var(var)
            .with_context(|| format!("the environment variable {var} is not set"))?;
        if value.is_empty() {
            bail!("the environment variable {var} is empty");
        }
        return Ok(Some(value));
    }
    if let Some(path) = &args.passphrase_file {
        return Ok(Some(backup::passphrase_from_file(path)?));
    }
    Ok(None)
}

pub async fn backup(
    store: &Arc<dyn Store>,
    config: &Config,
    to: &Path,
    args: &PassphraseArgs,
) -> Result<()> {
    let passphrase = passphrase(args)?;
    let summary = backup::write_backup(store.as_ref(), config, to, passphrase.as_deref()).await?;
    let m = &summary.manifest;
    println!(
        "Wrote {} ({} bytes{}): schema version {}, made by advps {} at {}",
        summary.path.display(),
        summary.bytes,
        if summary.encrypted { ", encrypted" } else { "" },
        m.schema_version,
        m.advps_version,
        m.created_at
    );
    for (name, file) in &m.files {
        println!("  {name}: {} bytes, sha256 {}", file.bytes, file.sha256);
    }
    if m.backend == "postgres" {
        println!(
            "The database is PostgreSQL: this file holds the secret key only. Back the data up \
             with pg_dump (e.g. `pg_dump --format=custom --file advps.pgdump DATABASE_URL`) and \
             keep both together."
        );
    }
    Ok(())
}

pub async fn restore(
    config: &Config,
    from: &Path,
    force: bool,
    args: &PassphraseArgs,
) -> Result<()> {
    let passphrase = passphrase(args)?;
    let dir = &config.data_dir;
    let summary = backup::restore_backup(from, dir, force, passphrase.as_deref()).await?;
    let m = &summary.manifest;
    println!(
        "Restored the backup of {} (advps {}, schema version {}) into {}",
        m.created_at,
        m.advps_version,
        m.schema_version,
        dir.display()
    );
    match (&summary.integrity, summary.schema_version) {
        (Some(integrity), Some(version)) => {
            println!("Integrity check: {integrity}; schema version now {version}");
            println!(
                "Secret key: opens the {} sealed values checked",
                summary.sealed_checked
            );
        }
        _ => println!(
            "Secret key restored to {}; the data is in PostgreSQL: restore it with pg_restore",
            dir.join("secret.key").display()
        ),
    }
    if config.secret_key_file.is_some() || config.secret_key.is_some() {
        println!(
            "note: this deployment is configured with secret_key or secret_key_file; the \
             restored key is {}",
            dir.join("secret.key").display()
        );
    }
    Ok(())
}

pub async fn migrate_dry_run(config: &Config) -> Result<()> {
    let url = config.database_url.as_ref().map(|url| url.expose_secret());
    let plan = advps_store::migration_plan(url, &config.data_dir)
        .await
        .context("cannot read the database's migrations")?;
    let pending: Vec<_> = plan.steps.iter().filter(|s| !s.applied).collect();
    println!(
        "{} database: {} of {} migrations applied",
        plan.backend,
        plan.steps.len() - pending.len(),
        plan.steps.len()
    );
    if !plan.unknown.is_empty() {
        bail!(
            "the database has migrations this advps {} does not know ({}): it was upgraded by \
             a newer advps; install that version",
            advps_server::VERSION,
            plan.unknown
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if pending.is_empty() {
        println!("Nothing to run: the database is up to date");
    } else {
        println!("Would run:");
        for step in pending {
            println!("  {:04} {}", step.version, step.description);
        }
    }
    Ok(())
}

/// One line of the doctor's report.
struct Report {
    failed: usize,
    warned: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.warned += 1;
        println!("warn  {what}: {detail} -> {fix}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.failed += 1;
        println!("FAIL  {what}: {detail} -> {fix}");
    }
}

/// Free space below either bound is a failure: 5% of the file system, or
/// this many bytes.
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Work older than this with nobody taking it means no worker runs.
const STALE_MS: i64 = 10 * 60 * 1000;

/// Checks everything a deployment needs and prints one line per check;
/// fails when any check did.
pub async fn doctor(config: &Config, config_file: Option<&Path>) -> Result<()> {
    let mut r = Report {
        failed: 0,
        warned: 0,
    };
    println!("advps {}", crate::cli::LONG_VERSION);
    let source = config_file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults and ADVPS_* variables".into());
    match config.listen_addr() {
        Ok(addr) => r.ok("configuration", format!("{source}; listens on {addr}")),
        Err(e) => r.fail(
            "configuration",
            e,
            "set `listen` to an address like 127.0.0.1:8080",
        ),
    }
    disk(&mut r, &config.data_dir);
    let cipher = match advps_server::secrets::Cipher::for_config(config) {
        Ok(c) => Some(c),
        Err(e) => {
            r.fail(
                "secret key",
                e,
                "restore the key file from the backup taken with this database",
            );
            None
        }
    };
    let store = match advps_server::open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            r.fail(
                "database",
                e,
                "check database_url / the data directory's owner and free space",
            );
            return finish(&r);
        }
    };
    let now = advps_domain::time::now_millis();
    match store.check_writes(now).await {
        Ok(()) => r.ok(
            "database",
            format!(
                "{} at schema version {}, commits",
                store.backend(),
                store.schema_version().await.unwrap_or(0)
            ),
        ),
        Err(e) => r.fail(
            "database",
            e,
            "the database cannot commit: free disk space or fix its permissions",
        ),
    }
    if let Some(cipher) = &cipher {
        secret_key(&mut r, store.as_ref(), cipher).await;
        nodes(&mut r, store.as_ref(), config, cipher).await;
    }
    catalogue(&mut r, store.as_ref(), config).await;
    match store.backlog(now - STALE_MS).await {
        Ok(b) => {
            if b.tasks_stale > 0 {
                r.fail(
                    "task backlog",
                    format!(
                        "{} open, {} waiting over 10 minutes",
                        b.tasks_open, b.tasks_stale
                    ),
                    "start a worker (`advps serve` without --no-worker, or `advps worker`)",
                );
            } else {
                r.ok("task backlog", format!("{} open", b.tasks_open));
            }
            if b.deliveries_stale > 0 {
                r.warn(
                    "webhook backlog",
                    format!(
                        "{} pending, {} overdue by over 10 minutes",
                        b.deliveries_pending, b.deliveries_stale
                    ),
                    "check that a worker runs and the endpoints answer (`advps webhooks deliveries ID`)",
                );
            } else {
                r.ok(
                    "webhook backlog",
                    format!("{} pending", b.deliveries_pending),
                );
            }
        }
        Err(e) => r.fail("backlog", e, "the database cannot be read"),
    }
    finish(&r)
}

fn finish(r: &Report) -> Result<()> {
    if r.failed > 0 {
        bail!("{} checks failed, {} warnings", r.failed, r.warned);
    }
    println!("All checks passed ({} warnings)", r.warned);
    Ok(())
}

fn disk(r: &mut Report, dir: &Path) {
    // The directory may not exist yet on a first run: its parent holds it then.
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(probe) {
        Ok(st) => {
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!(
                "{} MiB free of {} MiB at {}",
                free / (1024 * 1024),
                total / (1024 * 1024),
                probe.display()
            );
            if free < MIN_FREE_BYTES || free.saturating_mul(20) < total {
                r.fail(
                    "disk space",
                    format!("{detail}: nearly full"),
                    "free space or grow the file system before the database cannot commit",
                );
            } else {
                r.ok("disk space", detail);
            }
        }
        Err(e) => r.fail("disk space", e, "check the data directory"),
    }
}

async fn secret_key(r: &mut Report, store: &dyn Store, cipher: &advps_server::secrets::Cipher) {
    let mut sealed: Vec<String> = match store.list_services(None).await {
        Ok(s) => s
            .into_iter()
            .filter_map(|s| s.service.password_enc)
            .take(20)
            .collect(),
        Err(e) => return r.fail("secret key", e, "the database cannot be read"),
    };
    if let Ok(nodes) = store.list_nodes().await {
        sealed.extend(nodes.into_iter().filter_map(|n| n.credentials_enc));
    }
    let bad = sealed.iter().filter(|v| cipher.decrypt(v).is_err()).count();
    if bad > 0 {
        r.fail(
            "secret key",
            format!(
                "opens {} of {} stored secrets",
                sealed.len() - bad,
                sealed.len()
            ),
            "this is not the key these passwords were sealed with: restore the key backed up \
             with this database",
        );
    } else {
        r.ok(
            "secret key",
            format!("opens the {} stored secrets checked", sealed.len()),
        );
    }
}

async fn nodes(
    r: &mut Report,
    store: &dyn Store,
    config: &Config,
    cipher: &advps_server::secrets::Cipher,
) {
    let nodes = match store.list_nodes().await {
        Ok(n) => n,
        Err(e) => return r.fail("nodes", e, "the database cannot be read"),
    };
    let images = store.list_os_images().await.unwrap_or_default();
    let pools = store.list_ip_pools().await.unwrap_or_default();
    if nodes.is_empty() {
        r.ok("nodes", "none registered (sandbox only)");
    }
    let timeout = std::time::Duration::from_secs(config.engine_timeout_secs.min(10));
    for node in &nodes {
        let what = format!("node {}", node.name);
        let probe = async {
            let driver = advps_server::drivers::connect(node, timeout, cipher).await?;
            let caps = driver.capabilities().await?;
            let version = driver.engine_version().await?;
            let found = driver.list_images().await?;
            Ok::<_, advps_drivers::DriverError>((caps, version, found))
        };
        let (caps, version, found) = match tokio::time::timeout(timeout * 3, probe).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                r.fail(
                    &what,
                    format!("{} at {}: {e}", node.driver, node.endpoint),
                    "check that the engine runs and its credentials (`advps nodes add` again)",
                );
                continue;
            }
            Err(_) => {
                r.fail(
                    &what,
                    format!(
                        "{} at {} did not answer in time",
                        node.driver, node.endpoint
                    ),
                    "check that the engine runs and answers on that endpoint",
                );
                continue;
            }
        };
        r.ok(
            &what,
            format!(
                "{} at {} answers, {} (containers: {}, virtual machines: {})",
                node.driver,
                node.endpoint,
                version.as_deref().unwrap_or("version not reported"),
                if caps.containers { "yes" } else { "no" },
                if caps.virtual_machines { "yes" } else { "no" }
            ),
        );
        for image in images
            .iter()
            .filter(|i| i.node.as_deref().is_none_or(|n| n == node.name))
        {
            if found.iter().any(|f| f.alias == image.image) {
                r.ok(
                    &format!("{what} image {}", image.slug),
                    format!("{} is there", image.image),
                );
            } else {
                r.fail(
                    &format!("{what} image {}", image.slug),
                    format!("{} is missing on the node", image.image),
                    "import the image on the node, or map the slug to one it has (`advps os add`)",
                );
            }
        }
        for pool in pools
            .iter()
            .filter(|p| p.node.as_deref().is_none_or(|n| n == node.name))
        {
            let detail = format!("{} of {} addresses free", pool.free, pool.total);
            if pool.free == 0 {
                r.fail(
                    &format!("{what} pool {}", pool.name),
                    format!("{detail}: full"),
                    "add addresses (`advps ippools add`) or remove unused services",
                );
            } else {
                r.ok(&format!("{what} pool {}", pool.name), detail);
            }
        }
    }
}

async fn catalogue(r: &mut Report, store: &dyn Store, config: &Config) {
    let products = match store
        .list_products(advps_domain::Mode::Live, None, 0, u32::MAX, None)
        .await
    {
        Ok((p, _)) => p,
        Err(e) => return r.fail("products", e, "the database cannot be read"),
    };
    for p in products {
        let what = format!("product {}", p.id);
        if p.stock <= 0 {
            r.warn(
                &what,
                format!(
                    "no stock ({})",
                    if p.manual { "manual" } else { "free inventory" }
                ),
                "add instances (`advps nodes set-product`) or set a stock",
            );
        } else {
            let threshold = p.low_stock_threshold.unwrap_or(config.low_stock_threshold);
            r.ok(
                &what,
                format!("{} in stock (low below {threshold})", p.stock),
            );
        }
    }
}
