//! Backups and restores of a deployment: the database and the secret key
//! that seals its passwords and node credentials, in one file, because
//! either alone is of no use.
//!
//! A backup is a tar archive of `manifest.json` (what wrote it, when, the
//! schema version, each file's size and SHA-256), `advps.db` (a consistent
//! SQLite snapshot made by `VACUUM INTO` while the server goes on serving)
//! and `secret.key`. With a passphrase the whole archive is sealed with
//! XChaCha20-Poly1305 under a key derived from the passphrase by Argon2id;
//! the file then starts with [`ENCRYPTED_MAGIC`]. On PostgreSQL the database
//! is backed up with `pg_dump` and the archive holds the secret key only.
//!
//! The scheduled backups of the worker ([`run_schedule`]) write the same
//! files into `backup_dir` and keep the newest `backup_keep`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use advps_store::{Store, StoreError, DATABASE_FILE};

use crate::secrets::Cipher;
use crate::Config;

/// The first bytes of a passphrase-encrypted backup.
pub const ENCRYPTED_MAGIC: &[u8] = b"ADVPS-BACKUP-SEALED-1\n";
/// The archive's description of itself.
const MANIFEST: &str = "manifest.json";
/// The secret key's name inside the archive (and in a restored data directory).
const KEY_FILE: &str = "secret.key";
/// The version of this layout.
const FORMAT: u32 = 1;
/// Argon2id's salt and XChaCha20's nonce, in bytes.
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
/// The file name extension of scheduled backups.
const SCHEDULED_SUFFIX: &str = ".advps-backup";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// What a backup holds, as recorded in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub advps_version: String,
    pub created_at: String,
    /// `sqlite` or `postgres` (then no database file is inside).
    pub backend: String,
    pub schema_version: i64,
    /// Each file's size and SHA-256 (hex).
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// What [`write_backup`] wrote.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub encrypted: bool,
    /// Size of the backup file.
    pub bytes: u64,
}

/// What [`restore_backup`] put in place and checked.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    /// What `PRAGMA integrity_check` said (`ok`); none for PostgreSQL.
    pub integrity: Option<String>,
    /// The schema version after migrating the restored database.
    pub schema_version: Option<i64>,
    /// How many sealed values (passwords, node credentials) were opened
    /// with the restored key, out of how many were tried.
    pub sealed_checked: usize,
}

/// The bytes of the deployment's secret key, as its file holds them.
fn secret_key_text(config: &Config) -> Result<String, BackupError> {
    if let Some(inline) = &config.secret_key {
        return Ok(format!("{}\n", inline.expose_secret().trim()));
    }
    // Made on first use like the server would, so a backup of a fresh
    // directory still restores into one that opens.
    Cipher::for_config(config).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let path = config.secret_key_path();
    std::fs::read_to_string(&path).map_err(io(format!("cannot read {}", path.display())))
}

fn entry(bytes: &[u8]) -> FileEntry {
    FileEntry {
        bytes: bytes.len() as u64,
        sha256: format!("{:x}", Sha256::digest(bytes)),
    }
}

/// Writes a backup of the deployment to `to` (replaced atomically; the file
/// is 0600, since it holds the secret key), sealed with `passphrase` if
/// given.
pub async fn write_backup(
    store: &dyn Store,
    config: &Config,
    to: &Path,
    passphrase: Option<&str>,
) -> Result<BackupSummary, BackupError> {
    let key = secret_key_text(config)?;
    let schema_version = store.schema_version().await?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".advps-backup-")
        .tempdir_in(parent)
        .map_err(io(format!("cannot write in {}", parent.display())))?;
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let snapshot = scratch.path().join(DATABASE_FILE);
    if store.snapshot_into(&snapshot).await? {
        let bytes = std::fs::read(&snapshot).map_err(io("cannot read the snapshot"))?;
        files.push((DATABASE_FILE, bytes));
    }
    files.push((KEY_FILE, key.into_bytes()));
    let manifest = Manifest {
        format: FORMAT,
        advps_version: crate::VERSION.to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        backend: store.backend().to_string(),
        schema_version,
        files: files
            .iter()
            .map(|(name, bytes)| (name.to_string(), entry(bytes)))
            .collect(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Invalid(format!("cannot encode the manifest: {e}")))?;
    let mut archive = tar::Builder::new(Vec::new());
    for (name, bytes) in
        std::iter::once((MANIFEST, &manifest_json)).chain(files.iter().map(|(n, b)| (*n, b)))
    {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(io("cannot build the archive"))?;
    }
    let mut data = archive
        .into_inner()
        .map_err(io("cannot build the archive"))?;
    if let Some(passphrase) = passphrase {
        data = seal(&data, passphrase)?;
    }
    let staged = scratch.path().join("backup");
    write_private(&staged, &data)?;
    std::fs::rename(&staged, to).map_err(io(format!("cannot write {}", to.display())))?;
    Ok(BackupSummary {
        path: to.to_path_buf(),
        manifest,
        encrypted: passphrase.is_some(),
        bytes: data.len() as u64,
    })
}

/// Writes a new 0600 file and flushes it to the disk.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("cannot write {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(what.clone()))?;
    file.write_all(bytes).map_err(io(what.clone()))?;
    file.sync_all().map_err(io(what))
}

fn derive_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], BackupError> {
    if passphrase.is_empty() {
        return Err(BackupError::Invalid("the passphrase is empty".into()));
    }
    let mut key = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| BackupError::Invalid(format!("cannot derive a key: {e}")))?;
    Ok(key)
}

fn seal(plain: &[u8], passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let key = derive_key(passphrase, &salt)?;
    let aead = XChaCha20Poly1305::new((&key).into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = aead
        .encrypt(&nonce, plain)
        .map_err(|_| BackupError::Invalid("cannot encrypt the backup".into()))?;
    let mut out = Vec::with_capacity(ENCRYPTED_MAGIC.len() + SALT_LEN + NONCE_LEN + sealed.len());
    out.extend_from_slice(ENCRYPTED_MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open_sealed(data: &[u8], passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let rest = &data[ENCRYPTED_MAGIC.len()..];
    if rest.len() < SALT_LEN + NONCE_LEN {
        return Err(BackupError::Invalid(
            "the encrypted backup is truncated".into(),
        ));
    }
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let key = derive_key(passphrase, salt)?;
    XChaCha20Poly1305::new((&key).into())
        .decrypt(XNonce::from_slice(nonce), sealed)
        .map_err(|_| {
            BackupError::Invalid(
                "cannot decrypt the backup: wrong passphrase, or the file is damaged".into(),
            )
        })
}

/// Reads a backup file: its manifest and files, each checked against the
/// manifest's size and SHA-256.
pub fn read_backup(
    from: &Path,
    passphrase: Option<&str>,
) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), BackupError> {
    let mut data = Vec::new();
    std::fs::File::open(from)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(format!("cannot read {}", from.display())))?;
    if data.starts_with(ENCRYPTED_MAGIC) {
        let Some(passphrase) = passphrase else {
            return Err(BackupError::Invalid(format!(
                "{} is encrypted: give its passphrase (--passphrase-env VAR or --passphrase-file FILE)",
                from.display()
            )));
        };
        data = open_sealed(&data, passphrase)?;
    }
    let damaged = |why: String| {
        BackupError::Invalid(format!(
            "{} is not a usable advps backup: {why}",
            from.display()
        ))
    };
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(data.as_slice());
    for item in archive.entries().map_err(|e| damaged(e.to_string()))? {
        let mut item = item.map_err(|e| damaged(e.to_string()))?;
        let name = item
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if ![MANIFEST, DATABASE_FILE, KEY_FILE].contains(&name.as_str()) {
            return Err(damaged(format!("unexpected entry {name:?}")));
        }
        let mut bytes = Vec::new();
        item.read_to_end(&mut bytes)
            .map_err(|e| damaged(e.to_string()))?;
        files.insert(name, bytes);
    }
    let manifest: Manifest = serde_json::from_slice(
        &files
            .remove(MANIFEST)
            .ok_or_else(|| damaged("no manifest".into()))?,
    )
    .map_err(|e| damaged(format!("unreadable manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(damaged(format!(
            "format {} (this advps reads format {FORMAT})",
            manifest.format
        )));
    }
    for (name, expected) in &manifest.files {
        let bytes = files
            .get(name)
            .ok_or_else(|| damaged(format!("{name} is missing")))?;
        let found = entry(bytes);
        if found.bytes != expected.bytes || found.sha256 != expected.sha256 {
            return Err(damaged(format!("{name} does not match its checksum")));
        }
    }
    if !files.contains_key(KEY_FILE) {
        return Err(damaged("no secret key".into()));
    }
    Ok((manifest, files))
}

/// Restores a backup into `data_dir`: refused when the directory holds
/// anything unless `force` (then its database and key are replaced, and
/// nothing else is touched). The restored database is migrated to this
/// version's schema, must pass `PRAGMA integrity_check`, and the restored
/// key must open the sealed values stored in it.
pub async fn restore_backup(
    from: &Path,
    data_dir: &Path,
    force: bool,
    passphrase: Option<&str>,
) -> Result<RestoreSummary, BackupError> {
    let (manifest, files) = read_backup(from, passphrase)?;
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(format!("cannot read {}", data_dir.display()))(e)),
    };
    if occupied && !force {
        return Err(BackupError::Invalid(format!(
            "{} is not empty: restore into a new directory, or give --force to replace its \
             database and secret key",
            data_dir.display()
        )));
    }
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io(format!("cannot create {}", data_dir.display())))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("cannot make {} private", data_dir.display())))?;
    }
    let mut replaced = vec![KEY_FILE.to_string()];
    if files.contains_key(DATABASE_FILE) {
        for suffix in ["", "-wal", "-shm"] {
            replaced.push(format!("{DATABASE_FILE}{suffix}"));
        }
    }
    for name in &replaced {
        match std::fs::remove_file(data_dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot replace {name}"))(e)),
        }
    }
    for (name, bytes) in &files {
        let staged = data_dir.join(format!(".{name}.restoring"));
        let _ = std::fs::remove_file(&staged);
        write_private(&staged, bytes)?;
        std::fs::rename(&staged, data_dir.join(name))
            .map_err(io(format!("cannot put {name} in place")))?;
    }
    let cipher = Cipher::load_or_create(&data_dir.join(KEY_FILE))
        .map_err(|e| BackupError::Invalid(format!("the restored secret key is unusable: {e}")))?;
    if !files.contains_key(DATABASE_FILE) {
        return Ok(RestoreSummary {
            manifest,
            integrity: None,
            schema_version: None,
            sealed_checked: 0,
        });
    }
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(advps_store::SqlStore::open_sqlite(data_dir).await?);
    let result = check_restored(store.as_ref(), &cipher).await;
    result.map(
        |(integrity, schema_version, sealed_checked)| RestoreSummary {
            manifest,
            integrity: Some(integrity),
            schema_version: Some(schema_version),
            sealed_checked,
        },
    )
}

/// The integrity check, the schema version, and how many sealed values the
/// key opened (every one it was shown must open).
async fn check_restored(
    store: &dyn Store,
    cipher: &Cipher,
) -> Result<(String, i64, usize), BackupError> {
    let integrity = store.integrity_check().await?.join("; ");
    if integrity != "ok" {
        return Err(BackupError::Invalid(format!(
            "the restored database fails its integrity check: {integrity}"
        )));
    }
    let schema_version = store.schema_version().await?;
    let mut sealed: Vec<String> = store
        .list_services(None)
        .await?
        .into_iter()
        .filter_map(|s| s.service.password_enc)
        .take(20)
        .collect();
    sealed.extend(
        store
            .list_nodes()
            .await?
            .into_iter()
            .filter_map(|n| n.credentials_enc),
    );
    for value in &sealed {
        cipher.decrypt(value).map_err(|_| {
            BackupError::Invalid(
                "the restored secret key does not open the passwords stored in the restored \
                 database"
                    .into(),
            )
        })?;
    }
    Ok((integrity, schema_version, sealed.len()))
}

/// When and where the worker writes backups on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    /// Where scheduled backups go; none: no scheduled backups.
    pub dir: Option<PathBuf>,
    /// How often.
    pub every: Duration,
    /// How many of the newest are kept; older ones are deleted.
    pub keep: u32,
    /// A file holding the passphrase that seals them, if any.
    pub passphrase_file: Option<PathBuf>,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        BackupSchedule {
            dir: None,
            every: Duration::from_secs(86_400),
            keep: 7,
            passphrase_file: None,
        }
    }
}

/// Reads a passphrase from a file (its first line).
pub fn passphrase_from_file(path: &Path) -> Result<String, BackupError> {
    let text = std::fs::read_to_string(path).map_err(io(format!(
        "cannot read the passphrase file {}",
        path.display()
    )))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(BackupError::Invalid(format!(
            "the passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(line)
}

/// One scheduled backup: a new file named by the time, then the oldest
/// beyond `keep` deleted. Returns the new file.
pub async fn scheduled_backup(
    store: &dyn Store,
    config: &Config,
    schedule: &BackupSchedule,
) -> Result<PathBuf, BackupError> {
    let Some(dir) = &schedule.dir else {
        return Err(BackupError::Invalid("no backup_dir is configured".into()));
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let passphrase = match &schedule.passphrase_file {
        Some(path) => Some(passphrase_from_file(path)?),
        None => None,
    };
    let name = format!(
        "advps-{}{SCHEDULED_SUFFIX}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = dir.join(name);
    write_backup(store, config, &path, passphrase.as_deref()).await?;
    prune(dir, schedule.keep.max(1) as usize)?;
    Ok(path)
}

/// Deletes the oldest scheduled backups in `dir` beyond the newest `keep`
/// (the names sort by time).
fn prune(dir: &Path, keep: usize) -> Result<(), BackupError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(format!("cannot read {}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("advps-") && n.ends_with(SCHEDULED_SUFFIX))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        std::fs::remove_file(dir.join(name))
            .map_err(io(format!("cannot delete the old backup {name}")))?;
    }
    Ok(())
}

/// The worker's loop of scheduled backups, until `stop` changes. On
/// PostgreSQL it does nothing: `pg_dump` backs up a shared database, once,
/// not every instance.
pub async fn run_schedule(
    store: std::sync::Arc<dyn Store>,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let schedule = config.backup();
    if schedule.dir.is_none() {
        return;
    }
    if store.backend() != "sqlite" {
        tracing::warn!("backup_dir is set but the database is PostgreSQL: back it up with pg_dump");
        return;
    }
    // The first one after a full period: a restart is not a reason for one.
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        match scheduled_backup(store.as_ref(), &config, &schedule).await {
            Ok(path) => tracing::info!(path = %path.display(), "scheduled backup written"),
            Err(e) => tracing::error!(error = %e, "scheduled backup failed"),
        }
    }
}
