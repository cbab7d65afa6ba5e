//! The cache of the two rows nearly every request reads: its API key and
//! the service it names.
//!
//! Rows are kept in process memory (bounded, least recently used out
//! first) together with the *generation* under which they were read. A
//! write moves the generation on, and a row is served only while the
//! generation is the one it was read under, so one counter drops the whole
//! cache at once. The generation is taken before the query that fills an
//! entry: a write that commits while the query runs leaves the entry stale
//! at once, never served.
//!
//! What moves the generation on:
//! - this process's own writes, synchronously, when they commit
//!   ([`crate::db::Db::write`], [`crate::db::Db::begin`]);
//! - other processes' commits: on SQLite a watcher polls `PRAGMA
//!   data_version` (which changes when another connection committed); on
//!   PostgreSQL a listener receives the `NOTIFY` that triggers on the key
//!   and service tables send, and drops the cache whenever it reconnects.
//!   While the watcher cannot vouch for the cache (not started yet, or its
//!   connection lost), the cache is bypassed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use advps_domain::Mode;
use moka::sync::Cache as Lru;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, SqlitePool};

use crate::model::{ApiKeyRecord, ServiceRecord};

/// Keys kept at most.
const KEY_CAPACITY: u64 = 10_000;
/// Services kept at most. A row is about a kilobyte: about ten megabytes.
const SERVICE_CAPACITY: u64 = 10_000;
/// How often the SQLite watcher looks for other processes' commits: the
/// longest a change made elsewhere can go unseen.
pub(crate) const SQLITE_POLL: Duration = Duration::from_millis(100);
/// The PostgreSQL channel the triggers of migration 0006 notify.
pub(crate) const PG_CHANNEL: &str = "advps_cache";

/// The counter every cached row is checked against.
#[derive(Debug, Default)]
pub(crate) struct Generation {
    value: AtomicU64,
    /// Whether other processes' changes are being watched.
    watched: AtomicBool,
}

impl Generation {
    pub(crate) fn bump(&self) {
        self.value.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation to read under, or `None` while the cache is off.
    fn current(&self) -> Option<u64> {
        self.watched
            .load(Ordering::Acquire)
            .then(|| self.value.load(Ordering::Acquire))
    }

    fn set_watched(&self, on: bool) {
        // Drop what was cached before the watcher's view changed.
        self.bump();
        self.watched.store(on, Ordering::Release);
        self.bump();
    }
}

/// A service as looked up: account, mode and public id.
type ServiceKey = (i64, Mode, String);

pub(crate) struct Cache {
    generation: Arc<Generation>,
    keys: Lru<String, (u64, Arc<ApiKeyRecord>)>,
    services: Lru<ServiceKey, (u64, Arc<ServiceRecord>)>,
}

impl Cache {
    pub(crate) fn new() -> Cache {
        Cache {
            generation: Arc::new(Generation::default()),
            keys: Lru::new(KEY_CAPACITY),
            services: Lru::new(SERVICE_CAPACITY),
        }
    }

    pub(crate) fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }

    /// A key by digest, read with `load` unless a current copy is kept.
    pub(crate) async fn key<F, Fut, E>(
        &self,
        digest: &str,
        load: F,
    ) -> Result<Option<ApiKeyRecord>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<ApiKeyRecord>, E>>,
    {
        lookup(&self.generation, &self.keys, digest, load).await
    }

    /// A service, read with `load` unless a current copy is kept.
    pub(crate) async fn service<F, Fut, E>(
        &self,
        account_id: i64,
        mode: Mode,
        service_id: &str,
        load: F,
    ) -> Result<Option<ServiceRecord>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<ServiceRecord>, E>>,
    {
        let key = (account_id, mode, service_id.to_string());
        lookup(&self.generation, &self.services, &key, load).await
    }
}

/// The row under `key` if it was read under the current generation, else
/// what `load` reads, kept under the generation taken before the read (a
/// commit during the read leaves it stale at once). While the cache is off,
/// `load` alone.
async fn lookup<K, Q, V, F, Fut, E>(
    generation: &Generation,
    rows: &Lru<K, (u64, Arc<V>)>,
    key: &Q,
    load: F,
) -> Result<Option<V>, E>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq + Send + Sync + 'static,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<V>, E>>,
{
    let Some(current) = generation.current() else {
        return load().await;
    };
    if let Some((at, row)) = rows.get(key) {
        if at == current {
            return Ok(Some(V::clone(&row)));
        }
    }
    let row = load().await?;
    if let Some(row) = &row {
        rows.insert(key.to_owned(), (current, Arc::new(row.clone())));
    }
    Ok(row)
}

/// Watches an SQLite database for commits by other connections until the
/// generation is dropped with its store.
pub(crate) fn watch_sqlite(pool: SqlitePool, generation: &Arc<Generation>) {
    let weak = Arc::downgrade(generation);
    tokio::spawn(async move {
        let mut last: Option<i64> = None;
        // One connection for the whole watch: data_version is per connection.
        let mut conn = None;
        loop {
            let Some(generation) = Weak::upgrade(&weak) else {
                return;
            };
            if conn.is_none() {
                conn = pool.acquire().await.ok();
            }
            let version = match conn.as_mut() {
                Some(c) => sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(&mut **c)
                    .await
                    .ok(),
                None => None,
            };
            match version {
                Some(v) => {
                    if last != Some(v) {
                        generation.bump();
                        last = Some(v);
                    }
                    if !generation.watched.load(Ordering::Acquire) {
                        generation.set_watched(true);
                    }
                }
                None => {
                    // Cannot tell what changed: serve nothing from memory.
                    conn = None;
                    last = None;
                    if generation.watched.load(Ordering::Acquire) {
                        generation.set_watched(false);
                    }
                }
            }
            drop(generation);
            tokio::time::sleep(SQLITE_POLL).await;
        }
    });
}

/// Listens for the notifications of changed keys and services on
/// PostgreSQL until the generation is dropped with its store.
pub(crate) fn watch_postgres(pool: PgPool, generation: &Arc<Generation>) {
    let weak = Arc::downgrade(generation);
    tokio::spawn(async move {
        loop {
            if weak.strong_count() == 0 {
                return;
            }
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(PG_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "cache listener cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match Weak::upgrade(&weak) {
                Some(g) => g.set_watched(true),
                None => return,
            }
            loop {
                // Wake now and then to notice that the store is gone.
                let next = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
                let Some(generation) = Weak::upgrade(&weak) else {
                    return;
                };
                match next {
                    Err(_elapsed) => continue,
                    Ok(Ok(Some(_))) => generation.bump(),
                    // The connection was lost: notifications may have been
                    // missed. Off until a new listener is in place.
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        generation.set_watched(false);
                        break;
                    }
                }
            }
        }
    });
}
