//! Opening the store a deployment is configured for: PostgreSQL when a
//! `postgres://` (or `postgresql://`) URL is given, the embedded SQLite
//! database in the data directory otherwise.

use std::path::Path;
use std::sync::Arc;

use crate::sql_store::{is_postgres_url, PgPoolSettings, SqlStore};
use crate::{Store, StoreError, StoreResult};

/// Opens the store with PostgreSQL's default pool settings; see
/// [`open_store_with`].
pub async fn open_store(
    database_url: Option<&str>,
    data_dir: &Path,
) -> StoreResult<Arc<dyn Store>> {
    open_store_with(database_url, data_dir, &PgPoolSettings::default()).await
}

/// Opens the store and brings its schema up to date.
///
/// - `postgres://...` or `postgresql://...`: PostgreSQL, with `pg` as its
///   pool settings; several instances may share the database.
/// - `sqlite://<path>` or `sqlite:<path>`: that SQLite file.
/// - none: `advps.db` in `data_dir`.
///
/// Any other URL is refused rather than silently replaced by SQLite: a
/// mistyped URL must not leave an instance writing to its own private
/// database beside the shared one.
pub async fn open_store_with(
    database_url: Option<&str>,
    data_dir: &Path,
    pg: &PgPoolSettings,
) -> StoreResult<Arc<dyn Store>> {
    let url = database_url.map(str::trim).filter(|u| !u.is_empty());
    match url {
        None => Ok(Arc::new(SqlStore::open_sqlite(data_dir).await?)),
        Some(url) if is_postgres_url(url) => {
            Ok(Arc::new(SqlStore::connect_postgres(url, pg).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Open(
                    "a sqlite: database URL needs a file path".into(),
                ));
            }
            let path = Path::new(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Open(format!("cannot create directory {}: {e}", parent.display()))
                })?;
            }
            Ok(Arc::new(SqlStore::open_sqlite_file(path).await?))
        }
        Some(url) => {
            let scheme = url.split(':').next().unwrap_or(url);
            Err(StoreError::Open(format!(
                "unsupported database URL scheme '{scheme}': use postgres://, postgresql:// \
                 or sqlite:, or no URL for the data directory's SQLite database"
            )))
        }
    }
}
