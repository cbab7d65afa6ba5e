//! The storage layer's error type.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (an existing name or id).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A stored value could not be read back as a domain value.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the database: {0}")]
    Open(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// SQLite's primary result codes that mean "the storage cannot take this
/// now" rather than "this request is wrong": busy or locked past the busy
/// timeout, an I/O error, a full disk, a file that cannot be opened, a
/// read-only database.
const SQLITE_UNAVAILABLE: [i64; 6] = [5, 6, 8, 10, 13, 14];

/// PostgreSQL's SQLSTATE classes of the same kind: connection exceptions
/// (08), insufficient resources such as a full disk (53), operator
/// intervention such as a shutdown or restart (57), system errors (58).
const PG_UNAVAILABLE_CLASSES: [&str; 4] = ["08", "53", "57", "58"];

impl StoreError {
    /// Whether the failure is the storage's, not the request's: a full disk,
    /// an I/O error, a database server that is down or restarting, a pool
    /// with no connection to give. Such a request may succeed when retried
    /// later, unchanged.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db) => {
                let Some(code) = db.code() else {
                    return false;
                };
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // Extended codes carry the primary code in the low byte.
                    code.parse::<i64>()
                        .is_ok_and(|c| SQLITE_UNAVAILABLE.contains(&(c & 0xff)))
                } else {
                    PG_UNAVAILABLE_CLASSES
                        .iter()
                        .any(|class| code.starts_with(class))
                }
            }
            _ => false,
        }
    }

    /// Maps a unique-constraint violation to [`StoreError::Conflict`] naming
    /// `what`; other errors are left as they are.
    pub(crate) fn on_write(self, what: impl Into<String>) -> StoreError {
        if let StoreError::Database(sqlx::Error::Database(db)) = &self {
            if db.is_unique_violation() {
                return StoreError::Conflict(what.into());
            }
        }
        self
    }
}
