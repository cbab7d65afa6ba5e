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
//! The rows those lookups return are remembered against the state of the
//! whole database: SQLite keeps, in the `-shm` file beside a WAL database, a
//! header that every committed transaction of every process rewrites (see
//! [`WalIndex`]). A remembered row is served only while that header is
//! exactly what it was when the row was read, so the answer is the one a
//! fresh query would give (a key revoked by another process fails on the
//! very next request) — and when nothing was committed in between, it costs
//! one `pread` instead of a read transaction, whose locks on the `-shm` file
//! made concurrent requests queue behind one another.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use advps_domain::Mode;

use crate::model::{ApiKeyRecord, Scope, ServiceRecord};
use crate::{StoreError, StoreResult};

/// Connections kept for reuse; more may be opened under a burst.
const POOL_SIZE: usize = 8;
/// Keys remembered at most; beyond, the memory starts over.
const KEY_CAPACITY: usize = 10_000;
/// Services remembered at most; beyond, the memory starts over. A row is
/// about a kilobyte: this keeps the memory under about ten megabytes.
const SERVICE_CAPACITY: usize = 10_000;

/// A service as read under one state of the database.
type ServiceKey = (i64, Mode, String);

/// Rows read under a known committed state of the database.
struct Remembered<K, V> {
    capacity: usize,
    rows: Mutex<HashMap<K, (WalState, Arc<V>)>>,
}

impl<K: Hash + Eq, V: Clone> Remembered<K, V> {
    fn new(capacity: usize) -> Self {
        Remembered {
            capacity,
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// The row for `key` if it was read under `state`.
    fn get(&self, key: &K, state: WalState) -> Option<V> {
        let row = {
            let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            rows.get(key)
                .filter(|(at, _)| *at == state)
                .map(|(_, row)| Arc::clone(row))
        };
        row.map(|row| V::clone(&row))
    }

    fn insert(&self, key: K, state: WalState, row: &V) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if rows.len() >= self.capacity {
            rows.clear();
        }
        rows.insert(key, (state, Arc::new(row.clone())));
    }
}

pub struct FastReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Opened after the first read, when SQLite has made the `-shm` file.
    wal_index: OnceLock<Option<WalIndex>>,
    keys: Remembered<String, ApiKeyRecord>,
    services: Remembered<ServiceKey, ServiceRecord>,
}

/// One committed state of a WAL database: the wal-index header.
type WalState = [u8; WAL_HEADER_LEN];

/// The wal-index header (`WalIndexHdr` in SQLite's documentation of the
/// WAL-index format): version, change counter, page size, last valid
/// frame, page count, checksums and salts. SQLite writes it twice in a row
/// at the start of the `-shm` file, the second copy first, and rewrites it
/// on every commit and every WAL reset; readers that see two different
/// copies are looking at a write in progress.
const WAL_HEADER_LEN: usize = 48;
/// `iVersion` of the header (`WALINDEX_MAX_VERSION`).
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// Read access to a database's wal-index header.
///
/// The file is opened once per `-shm` file and process and never closed
/// (a database reopened after its last connection closed has a new one):
/// closing any descriptor of a file drops every POSIX lock the
/// process holds on it, and SQLite's connections in this process hold such
/// locks on the `-shm` file. The header is read with `pread`, never mapped,
/// so a file that shrinks under us gives a short read, not a fault.
#[derive(Clone)]
pub struct WalIndex {
    file: Arc<File>,
}

impl WalIndex {
    /// The shared handle on `<db>-shm`, if SQLite has made it.
    pub fn for_database(db: &Path) -> Option<WalIndex> {
        use std::os::unix::fs::MetadataExt;
        /// Every `-shm` file opened, by path. When the last connection to
        /// a database closes, SQLite deletes its `-shm` file and the next
        /// one makes a new file: a handle on the old one is kept (never
        /// closed) but no longer handed out.
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Vec<Arc<File>>>>> = OnceLock::new();
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let shm = PathBuf::from(shm);
        let current = std::fs::metadata(&shm).ok()?;
        let same_file = |file: &File| {
            file.metadata()
                .is_ok_and(|m| m.dev() == current.dev() && m.ino() == current.ino())
        };
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let handles = open.entry(shm.clone()).or_default();
        if let Some(file) = handles.last().filter(|f| same_file(f)) {
            return Some(WalIndex {
                file: Arc::clone(file),
            });
        }
        let file = File::open(&shm).ok()?;
        if !same_file(&file) {
            // Replaced between the two looks: try again on the next read.
            return None;
        }
        let file = Arc::new(file);
        handles.push(Arc::clone(&file));
        Some(WalIndex { file })
    }

    /// The current committed state, or `None` when it cannot be told (no
    /// header yet, or a writer in the middle of rewriting it).
    pub fn state(&self) -> Option<WalState> {
        let mut both = [0u8; 2 * WAL_HEADER_LEN];
        self.file.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(WAL_HEADER_LEN);
        let version = u32::from_ne_bytes([first[0], first[1], first[2], first[3]]);
        let initialised = first[12] == 1;
        if first != second || !initialised || version != WAL_INDEX_VERSION {
            return None;
        }
        first.try_into().ok()
    }
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
            idle: Mutex::new(Vec::new()),
            wal_index: OnceLock::new(),
            keys: Remembered::new(KEY_CAPACITY),
            services: Remembered::new(SERVICE_CAPACITY),
        }
    }

    /// The database's committed state, once SQLite has made its `-shm`
    /// file (the first read does).
    fn wal_state(&self) -> Option<WalState> {
        match self.wal_index.get() {
            Some(index) => index.as_ref()?.state(),
            None => None,
        }
    }

    /// The row for `key`: remembered if nothing was committed since it was
    /// read, else read by `read` and remembered if nothing was committed
    /// while it was read (the header did not change, so the row is the
    /// state it names).
    fn remembered<K: Hash + Eq, V: Clone>(
        &self,
        memory: &Remembered<K, V>,
        key: K,
        read: impl FnOnce() -> StoreResult<Option<V>>,
    ) -> StoreResult<Option<V>> {
        let before = self.wal_state();
        if let Some(row) = before.and_then(|state| memory.get(&key, state)) {
            return Ok(Some(row));
        }
        let found = read()?;
        if self.wal_index.get().is_none() {
            // The read made sure the `-shm` file exists.
            let _ = self.wal_index.set(WalIndex::for_database(&self.path));
        }
        if let (Some(state), Some(row)) = (before, &found) {
            if self.wal_state() == Some(state) {
                memory.insert(key, state, row);
            }
        }
        Ok(found)
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
        self.remembered(&self.keys, key_hash.to_string(), || {
            self.read_api_key(key_hash)
        })
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
        let key = (scope.account_id, scope.mode, service_id.to_string());
        self.remembered(&self.services, key, || self.read_service(scope, service_id))
    }

    fn read_service(&self, scope: Scope, service_id: &str) -> StoreResult<Option<ServiceRecord>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_header_changes_with_every_commit_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER);")
            .unwrap();
        let index = WalIndex::for_database(&db).expect("the -shm file exists in WAL mode");
        let first = index.state().expect("a header");
        // Reads commit nothing.
        let reader = Connection::open(&db).unwrap();
        for _ in 0..3 {
            let _: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(index.state(), Some(first));
        }
        let mut seen = vec![first];
        for v in 0..5 {
            writer.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
            let now = index.state().expect("a header");
            assert!(!seen.contains(&now), "commit {v} left the header as it was");
            seen.push(now);
        }
        // A checkpoint that resets the WAL, then a commit: still a new state.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        writer.execute("INSERT INTO t VALUES (9)", []).unwrap();
        let now = index.state().expect("a header");
        assert!(
            !seen.contains(&now),
            "the commit after a WAL reset went unseen"
        );
        // The same handle is shared by every reader of this database.
        assert_eq!(WalIndex::for_database(&db).unwrap().state(), Some(now));
    }

    #[test]
    fn a_database_reopened_after_its_last_connection_gets_the_new_header() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let first = Connection::open(&db).unwrap();
        first
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER);")
            .unwrap();
        let old = WalIndex::for_database(&db).unwrap();
        drop(first);
        assert!(
            !Path::new(&shm).exists(),
            "SQLite removes the -shm file with the last connection"
        );
        let second = Connection::open(&db).unwrap();
        second.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let index = WalIndex::for_database(&db).expect("the new -shm file");
        let before = index.state().expect("a header");
        second.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_ne!(index.state(), Some(before), "the new file follows commits");
        // The handle on the removed file is not the one handed out.
        assert_ne!(old.state(), index.state());
    }

    #[test]
    fn no_shm_file_no_index() {
        let dir = tempfile::tempdir().unwrap();
        assert!(WalIndex::for_database(&dir.path().join("missing.db")).is_none());
    }
}
