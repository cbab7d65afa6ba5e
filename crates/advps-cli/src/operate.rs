//! Commands for running a deployment rather than selling from it: backups
//! and restores, the migration plan, and the checks of `advps doctor`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

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
    let plan = advps_store::migration_plan(config.database_url.as_deref(), &config.data_dir)
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
