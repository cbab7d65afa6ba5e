//! The hot read path of the SQLite store: the two lookups nearly every
//! request makes (its API key, and the service it names) run in place on a
//! small pool of read-only connections instead of being handed to a driver
//! thread and back.
//!
//! Such a read is a few microseconds of work on pages SQLite has cached;
//! the hand-off around it cost several times that in thread switches, and
//! under load it dominated the authenticated endpoints. Reading in place
//! keeps every answer current.
//!
//! API keys are also remembered for a short while, since every request
//! presents one. A revoked key must fail on the very next request, from any
//! process on the same data directory, so revoking a key bumps a marker file
//! beside the database (see [`bump_key_generation`]); a change of that file
//! empties the memory at once, for the price of one `stat` per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use advps_domain::Mode;

use crate::model::{ApiKeyRecord, Scope, ServiceRecord};
use crate::{StoreError, StoreResult};

/// Connections kept for reuse; more may be opened under a burst.
const POOL_SIZE: usize = 8;
/// How long a remembered key is trusted even without a marker change (a
/// safety net should a revocation's marker write ever fail).
const KEY_TTL: Duration = Duration::from_secs(30);
/// Keys remembered at most; beyond, the memory starts over.
const KEY_CAPACITY: usize = 10_000;

/// What identifies one state of the marker file. File times are coarse (a
/// few milliseconds), so the inode, new with every bump, tells bumps apart.
type Generation = Option<(u64, SystemTime)>;

struct KeyMemory {
    /// The marker file as it was when the memory was filled.
    generation: Generation,
    keys: HashMap<String, (ApiKeyRecord, Instant)>,
}

pub struct FastReader {
    path: PathBuf,
    marker: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keys: Mutex<KeyMemory>,
}

/// The marker file of a database: revocations change it.
pub fn key_marker(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// Tells every process reading this database that keys changed: the
/// marker is replaced (a new file, so a new inode), never rewritten.
pub fn bump_key_generation(db: &Path) -> std::io::Result<()> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let marker = key_marker(db);
    let mut temp = marker.clone().into_os_string();
    temp.push(format!(".{}", std::process::id()));
    std::fs::write(&temp, stamp.to_string())?;
    std::fs::rename(&temp, &marker)
}

fn generation_of(path: &Path) -> Generation {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.modified().ok()?))
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Open(format!("read failed: {e}"))
}

fn parsed_at<T: std::str::FromStr<Err = String>>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let raw: String = row.get(index)?;
    raw.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into())
    })
}

fn parsed<T: std::str::FromStr<Err = String>>(row: &Row<'_>, column: &str) -> rusqlite::Result<T> {
    let raw: String = row.get(column)?;
    raw.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

impl FastReader {
    pub fn new(path: &Path) -> FastReader {
        FastReader {
            path: path.to_path_buf(),
            marker: key_marker(path),
            idle: Mutex::new(Vec::new()),
            keys: Mutex::new(KeyMemory {
                generation: None,
                keys: HashMap::new(),
            }),
        }
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let result = f(&conn).map_err(err);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
        result
    }

    pub fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let generation = generation_of(&self.marker);
        {
            let mut memory = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if memory.generation != generation {
                memory.keys.clear();
                memory.generation = generation;
            }
            if let Some((record, at)) = memory.keys.get(key_hash) {
                if at.elapsed() < KEY_TTL {
                    return Ok(Some(record.clone()));
                }
            }
        }
        let found = self.read_api_key(key_hash)?;
        if let Some(record) = &found {
            let mut memory = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            // Only remember what was read under the generation still current.
            if memory.generation == generation {
                if memory.keys.len() >= KEY_CAPACITY {
                    memory.keys.clear();
                }
                memory
                    .keys
                    .insert(key_hash.to_string(), (record.clone(), Instant::now()));
            }
        }
        Ok(found)
    }

    fn read_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT k.id, k.account_id, a.name AS account_name, k.mode, k.key_hash, k.last4, \
                 k.created_at, k.last_used_at, k.revoked_at \
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?1",
            )?
            .query_row([key_hash], |row| {
                Ok(ApiKeyRecord {
                    id: row.get("id")?,
                    account_id: row.get("account_id")?,
                    account_name: row.get("account_name")?,
                    mode: parsed::<Mode>(row, "mode")?,
                    key_hash: row.get("key_hash")?,
                    last4: row.get("last4")?,
                    created_at: row.get("created_at")?,
                    last_used_at: row.get("last_used_at")?,
                    revoked_at: row.get("revoked_at")?,
                })
            })
            .optional()
        })
    }

    pub fn find_service(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> StoreResult<Option<ServiceRecord>> {
        // Columns by position: looking each up by name costs more than the query.
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT pk, account_id, mode, service_id, service_type, vmid, power_state, ip, reserved_ip, os_slug, os_name, started_at, password_enc, expires_at, created_at, node, instance_id, order_id, product_id, ram_mb, username, last_mac_reset, mac \
                 FROM services WHERE account_id = ?1 AND mode = ?2 AND service_id = ?3",
            )?
            .query_row(
                rusqlite::params![scope.account_id, scope.mode.as_str(), service_id],
                |row| {
                    Ok(ServiceRecord {
                        pk: row.get(0)?,
                        account_id: row.get(1)?,
                        mode: parsed_at(row, 2)?,
                        service_id: row.get(3)?,
                        service_type: parsed_at(row, 4)?,
                        vmid: row.get(5)?,
                        power_state: parsed_at(row, 6)?,
                        ip: row.get(7)?,
                        reserved_ip: row.get(8)?,
                        os_slug: row.get(9)?,
                        os_name: row.get(10)?,
                        started_at: row.get(11)?,
                        password_enc: row.get(12)?,
                        expires_at: row.get(13)?,
                        created_at: row.get(14)?,
                        node: row.get(15)?,
                        instance_id: row.get(16)?,
                        order_id: row.get(17)?,
                        product_id: row.get(18)?,
                        ram_mb: row.get(19)?,
                        username: row.get(20)?,
                        last_mac_reset: row.get(21)?,
                        mac: row.get(22)?,
                    })
                },
            )
            .optional()
        })
    }
}
