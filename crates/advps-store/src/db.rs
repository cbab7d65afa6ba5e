//! One query layer over both databases, so that every statement of the
//! store is written once.
//!
//! The two backends agree on almost all of the SQL the store needs: both
//! take `$N` placeholders, `RETURNING`, `ON CONFLICT`, and the same types
//! (every column is an integer, text or boolean). What truly differs is
//! small and named in [`Dialect`]: how a write transaction begins, and the
//! row-lock clauses PostgreSQL needs because many processes write at once
//! while SQLite has one writer at a time.
//!
//! A [`Query`] carries its SQL and its arguments as plain values and binds
//! them to whichever backend it runs on; rows come back as a model struct
//! (`FromRow`, derived once for both) or as a [`Row`] read by column name.
//!
//! Transactions go through [`Tx`], the one place that begins, commits and
//! rolls back. A connection never goes back to the pool in the middle of a
//! transaction: a `Tx` dropped without commit (an early return, a cancelled
//! request) is rolled back before its connection is reused, and a
//! connection whose commit or rollback failed (a full disk, a server that
//! went away) is closed instead of being reused, so the pool opens a fresh
//! one and the next write starts clean.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow};
use sqlx::{Decode, FromRow, PgPool, Row as _, SqlitePool, Type};

use crate::cache::Generation;
use crate::coalesce::Coalescer;
use crate::{StoreError, StoreResult};

/// What differs between the two SQL dialects the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Locks the rows a `SELECT` reads until the transaction ends, for a
    /// decision taken on them (a balance, a service's state). SQLite needs
    /// none: its write transactions begin `IMMEDIATE` and so run one at a
    /// time. `NO KEY UPDATE` lets rows that only reference the locked one
    /// be inserted meanwhile.
    pub(crate) fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE",
        }
    }

    /// Takes one of many interchangeable rows (a task, a delivery, a free
    /// machine): on PostgreSQL a competitor skips the rows another
    /// transaction holds instead of queueing behind them. SQLite has one
    /// writer, so there is nobody to skip.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Locks a row the transaction is about to delete. On PostgreSQL this is
    /// the `UPDATE` lock the `DELETE` itself takes, taken up front: it also
    /// keeps out the key-share locks of rows that would reference it (a new
    /// task or address), which `NO KEY UPDATE` lets in, so the delete never
    /// waits on them halfway nor fails on a reference added meanwhile.
    /// SQLite needs none, as for [`Dialect::lock_rows`].
    pub(crate) fn lock_for_delete(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// How a write transaction begins. On SQLite `IMMEDIATE` takes the write
    /// lock at once, so a second process (the command line) waits on the
    /// busy timeout instead of failing halfway through a transaction.
    fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }
}

/// The connection pools of one store.
#[derive(Clone)]
pub(crate) enum Pools {
    /// WAL mode: many read-only connections, one writer.
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    Postgres {
        pool: PgPool,
        /// Connections with `synchronous_commit = off`, for writes that may be
        /// lost in a crash of the database server (see [`Db::write_relaxed`]).
        relaxed: PgPool,
    },
}

/// The database of one store: its pools and the generation of its cache,
/// which every write made through it moves on.
#[derive(Clone)]
pub(crate) struct Db {
    pools: Pools,
    generation: Arc<Generation>,
    /// SQLite's transactions of [`Db::write_together`], committed in groups.
    together: Coalescer<(), Vec<Query<'static>>, StoreResult<()>>,
}

/// At most this many callers' transactions share one SQLite commit.
const MAX_GROUP: usize = 64;

impl Db {
    pub(crate) fn new(pools: Pools, generation: Arc<Generation>) -> Db {
        Db {
            pools,
            generation,
            together: Coalescer::new(MAX_GROUP),
        }
    }

    pub(crate) fn pools(&self) -> &Pools {
        &self.pools
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Where reads outside a transaction run.
    pub(crate) fn read(&self) -> Target<'_> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => Target::SqlitePool(reader, None),
            Pools::Postgres { pool, .. } => Target::PgPool(pool, None),
        }
    }

    /// Where one-statement writes run. Each one invalidates the cache of
    /// keys and services once it is committed.
    pub(crate) fn write(&self) -> Target<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Target::SqlitePool(writer, Some(&self.generation)),
            Pools::Postgres { pool, .. } => Target::PgPool(pool, Some(&self.generation)),
        }
    }

    /// Where one-statement writes run that never touch a cached row (rate
    /// windows, idempotency records, the audit log, deliveries), so that they
    /// leave the cache as it is.
    pub(crate) fn write_uncached(&self) -> Target<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Target::SqlitePool(writer, None),
            Pools::Postgres { pool, .. } => Target::PgPool(pool, None),
        }
    }

    /// Where one-statement writes run whose last instants may be lost if
    /// the database server crashes, and which must not wait for the disk on
    /// every request: the shared rate windows. On PostgreSQL their commit
    /// returns before the WAL is flushed (`synchronous_commit = off`; a crash
    /// can forget at most the last few hundred milliseconds of counts, while
    /// the count of every committed hit stays exact across instances). SQLite
    /// writes them like any other write.
    pub(crate) fn write_relaxed(&self) -> Target<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Target::SqlitePool(writer, None),
            Pools::Postgres { relaxed, .. } => Target::PgPool(relaxed, None),
        }
    }

    /// Runs `statements` in one write transaction that touches no cached
    /// row: all of them are committed, or none.
    ///
    /// On SQLite the whole transaction is one batch, `BEGIN IMMEDIATE; ...;
    /// COMMIT`, handed to the writer connection at once: one turn of the
    /// one writer, where a [`Tx`] would take a turn per statement. And the
    /// transactions that callers hand in while the writer is busy with one
    /// are committed together in the next batch (group commit): under load,
    /// the audit entries and idempotency records of many requests take one
    /// turn instead of one each. If a group fails, each of its transactions
    /// is tried again on its own, so one caller's failure is never
    /// another's. The batch runs in a task of its own, so a cancelled caller
    /// cannot stop it between its `BEGIN` and its `COMMIT`; should it fail
    /// halfway, its connection is closed rather than pooled with the
    /// transaction open. PostgreSQL, where writers do not queue on one
    /// connection, runs the statements in a [`Tx`].
    pub(crate) async fn write_together(&self, statements: Vec<Query<'static>>) -> StoreResult<()> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                let writer = writer.clone();
                self.together
                    .submit((), statements, move |(), group| {
                        sqlite_group(writer.clone(), group)
                    })
                    .await
                    .unwrap_or_else(|| Err(sqlx::Error::WorkerCrashed.into()))
            }
            Pools::Postgres { .. } => {
                let mut tx = self.begin_uncached().await?;
                for statement in statements {
                    statement.execute(&mut tx).await?;
                }
                tx.commit().await
            }
        }
    }

    /// Begins a write transaction; its commit invalidates the cache.
    pub(crate) async fn begin(&self) -> StoreResult<Tx> {
        self.begin_with(Some(Arc::clone(&self.generation))).await
    }

    /// Begins a write transaction that touches no cached row.
    pub(crate) async fn begin_uncached(&self) -> StoreResult<Tx> {
        self.begin_with(None).await
    }

    async fn begin_with(&self, generation: Option<Arc<Generation>>) -> StoreResult<Tx> {
        let dialect = self.dialect();
        let mut conn = match &self.pools {
            Pools::Sqlite { writer, .. } => TxConn::Sqlite(writer.acquire().await?),
            Pools::Postgres { pool, .. } => TxConn::Postgres(pool.acquire().await?),
        };
        if let Err(e) = conn.run(dialect.begin()).await {
            conn.discard();
            return Err(e.into());
        }
        Ok(Tx {
            conn: Some(conn),
            dialect,
            generation,
        })
    }
}

/// A pooled connection holding a transaction.
enum TxConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl TxConn {
    // Boxed as `Send` here, where the connection's lifetime is concrete:
    // left to inference, the executor's lifetime would have to be proven
    // for every lifetime where the future is spawned.
    fn run<'a>(
        &'a mut self,
        sql: &'static str,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>> {
        match self {
            TxConn::Sqlite(c) => {
                let c: &'a mut SqliteConnection = c;
                Box::pin(async move { sqlx::Executor::execute(c, sql).await.map(drop) })
            }
            TxConn::Postgres(c) => {
                let c: &'a mut PgConnection = c;
                Box::pin(async move { sqlx::Executor::execute(c, sql).await.map(drop) })
            }
        }
    }

    /// Closes the connection instead of returning it to the pool: its
    /// transaction state is unknown. Closing rolls back whatever is open,
    /// and the pool opens a fresh connection in its place.
    fn discard(self) {
        match self {
            TxConn::Sqlite(c) => drop(c.detach()),
            TxConn::Postgres(c) => drop(c.detach()),
        }
    }

    /// Rolls back; a connection that cannot is discarded.
    async fn roll_back(mut self) {
        if self.run("ROLLBACK").await.is_err() {
            self.discard();
        }
    }
}

/// A write transaction. Commit it with [`Tx::commit`]; dropped without
/// commit, it is rolled back before its connection serves anyone else.
pub(crate) struct Tx {
    conn: Option<TxConn>,
    dialect: Dialect,
    generation: Option<Arc<Generation>>,
}

impl Tx {
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Statements of this transaction run here.
    pub(crate) fn target(&mut self) -> Target<'_> {
        match self.conn.as_mut().expect("transaction in use") {
            TxConn::Sqlite(c) => Target::Sqlite(c),
            TxConn::Postgres(c) => Target::Postgres(c),
        }
    }

    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let mut conn = self.conn.take().expect("transaction in use");
        match conn.run("COMMIT").await {
            Ok(()) => {
                if let Some(generation) = &self.generation {
                    generation.bump();
                }
                Ok(())
            }
            Err(e) => {
                // Whether the transaction is still open after a failed
                // commit depends on the error (SQLite rolls back by itself on
                // a full disk, PostgreSQL keeps it until told): the
                // connection is not trusted again.
                conn.discard();
                Err(e.into())
            }
        }
    }

    /// Rolls back now (a refusal decided inside the transaction).
    pub(crate) async fn rollback(mut self) -> StoreResult<()> {
        if let Some(conn) = self.conn.take() {
            conn.roll_back().await;
        }
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Dropped mid-transaction: roll back off the caller's path, and only
        // then let the connection go back to the pool.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(conn.roll_back());
            }
            Err(_) => conn.discard(),
        }
    }
}

/// Where a statement runs: a pool (one statement, committed on its own) or
/// the connection of a transaction. A pool target may carry the cache
/// generation to move on once the statement is done.
pub(crate) enum Target<'c> {
    SqlitePool(&'c SqlitePool, Option<&'c Arc<Generation>>),
    PgPool(&'c PgPool, Option<&'c Arc<Generation>>),
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c mut Tx> for Target<'c> {
    fn from(tx: &'c mut Tx) -> Target<'c> {
        tx.target()
    }
}

impl Target<'_> {
    fn generation(&self) -> Option<&Arc<Generation>> {
        match self {
            Target::SqlitePool(_, g) | Target::PgPool(_, g) => *g,
            _ => None,
        }
    }
}

/// `sql` with each placeholder `$N` moved on to `$(N + by)`, so that it can
/// follow statements that already use `$1` to `$by` in one batch. The
/// store's statements hold no `$` other than placeholders.
fn renumber_placeholders(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// An argument of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

/// A value that can be bound to a placeholder.
pub(crate) trait IntoArg {
    fn into_arg(self) -> Arg;
}

macro_rules! into_arg {
    ($variant:ident: $($ty:ty => $conv:expr),* $(,)?) => {
        $(impl IntoArg for $ty {
            fn into_arg(self) -> Arg {
                #[allow(clippy::redundant_closure_call)]
                Arg::$variant(($conv)(self))
            }
        })*
    };
}

into_arg!(Int:
    i64 => Some,
    i32 => |v: i32| Some(i64::from(v)),
    u32 => |v: u32| Some(i64::from(v)),
    u16 => |v: u16| Some(i64::from(v)),
    Option<i64> => |v| v,
    Option<u32> => |v: Option<u32>| v.map(i64::from),
    &i64 => |v: &i64| Some(*v),
    &Option<i64> => |v: &Option<i64>| *v,
);
into_arg!(Text:
    &str => |v: &str| Some(v.to_string()),
    String => Some,
    &String => |v: &String| Some(v.clone()),
    Option<&str> => |v: Option<&str>| v.map(str::to_string),
    Option<String> => |v| v,
    Option<&String> => |v: Option<&String>| v.cloned(),
    &Option<String> => |v: &Option<String>| v.clone(),
);
into_arg!(Bool:
    bool => Some,
    Option<bool> => |v| v,
);

/// A model read from a row of either backend (`#[derive(sqlx::FromRow)]`
/// gives both).
pub(crate) trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A column value either backend can decode.
pub(crate) trait Value:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Value for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row of either backend, read by column name.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    pub(crate) fn get<T: Value>(&self, column: &str) -> StoreResult<T> {
        Ok(match self {
            Row::Sqlite(r) => r.try_get(column)?,
            Row::Postgres(r) => r.try_get(column)?,
        })
    }

    /// A text column read as a domain value.
    pub(crate) fn parse<T: std::str::FromStr<Err = String>>(&self, column: &str) -> StoreResult<T> {
        self.get::<String>(column)?
            .parse()
            .map_err(StoreError::Corrupt)
    }

    pub(crate) fn parse_opt<T: std::str::FromStr<Err = String>>(
        &self,
        column: &str,
    ) -> StoreResult<Option<T>> {
        self.get::<Option<String>>(column)?
            .map(|v| v.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    /// The row as a model.
    pub(crate) fn to<T: Record>(&self) -> StoreResult<T> {
        Ok(match self {
            Row::Sqlite(r) => T::from_row(r)?,
            Row::Postgres(r) => T::from_row(r)?,
        })
    }
}

/// A statement with its arguments.
pub(crate) struct Query<'s> {
    sql: Cow<'s, str>,
    args: Vec<Arg>,
}

/// A statement; bind its `$1`, `$2`, ... in order with [`Query::bind`].
pub(crate) fn query<'s>(sql: impl Into<Cow<'s, str>>) -> Query<'s> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

macro_rules! bound {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

/// Runs a query built by `$make` (a path to `sqlx::query`, `query_as`, ...)
/// on whichever target it is given, with `$run` (`execute`, `fetch_all`,
/// ...), and maps the two backends' outputs with `$sqlite` and `$pg`.
macro_rules! on_target {
    ($self:ident, $target:ident, $make:ident $(::<$t:ty>)?, $run:ident,
     $sqlite:expr, $pg:expr) => {{
        let Query { sql, args } = $self;
        let generation = $target.generation().cloned();
        let out = match $target {
            Target::SqlitePool(pool, _) => {
                ($sqlite)(bound!(sqlx::$make::<Sqlite $(, $t)?>(&sql), args).$run(pool).await?)
            }
            Target::Sqlite(conn) => {
                ($sqlite)(bound!(sqlx::$make::<Sqlite $(, $t)?>(&sql), args).$run(&mut *conn).await?)
            }
            Target::PgPool(pool, _) => {
                ($pg)(bound!(sqlx::$make::<Postgres $(, $t)?>(&sql), args).$run(pool).await?)
            }
            Target::Postgres(conn) => {
                ($pg)(bound!(sqlx::$make::<Postgres $(, $t)?>(&sql), args).$run(&mut *conn).await?)
            }
        };
        if let Some(generation) = generation {
            generation.bump();
        }
        out
    }};
}

/// Runs a batch of statements on the SQLite writer; a connection whose
/// batch failed is closed, since it may have stopped inside its transaction.
/// Commits the transactions of `group` in one SQLite batch; if that fails
/// and there were several, each on its own. One outcome per transaction.
async fn sqlite_group(writer: SqlitePool, group: Vec<Vec<Query<'static>>>) -> Vec<StoreResult<()>> {
    let one_batch = |transactions: &[&[Query<'static>]]| {
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        let mut args = Vec::new();
        for statement in transactions.iter().flat_map(|t| t.iter()) {
            sql.push_str(&renumber_placeholders(&statement.sql, args.len()));
            sql.push_str(";\n");
            args.extend(statement.args.iter().cloned());
        }
        sql.push_str("COMMIT");
        // A group's text changes with its members: prepared once and not
        // kept in the connection's statement cache, which it would only
        // fill. One transaction alone has a fixed text, worth keeping.
        sqlite_batch(writer.clone(), sql, args, transactions.len() == 1)
    };
    let all: Vec<&[Query<'static>]> = group.iter().map(Vec::as_slice).collect();
    match one_batch(&all).await {
        Ok(()) => group.iter().map(|_| Ok(())).collect(),
        Err(e) if group.len() == 1 => vec![Err(e.into())],
        Err(_) => {
            let mut outcomes = Vec::with_capacity(group.len());
            for transaction in &all {
                outcomes.push(one_batch(&[transaction]).await.map_err(Into::into));
            }
            outcomes
        }
    }
}

async fn sqlite_batch(
    writer: SqlitePool,
    sql: String,
    args: Vec<Arg>,
    keep_prepared: bool,
) -> Result<(), sqlx::Error> {
    let mut conn = writer.acquire().await?;
    let done = bound!(sqlx::query::<Sqlite>(&sql), args)
        .persistent(keep_prepared)
        .execute(&mut *conn)
        .await;
    if done.is_err() {
        drop(conn.detach());
    }
    done.map(drop)
}

impl<'s> Query<'s> {
    pub(crate) fn bind(mut self, value: impl IntoArg) -> Self {
        self.args.push(value.into_arg());
        self
    }

    /// Runs the statement; returns the number of rows it changed.
    pub(crate) async fn execute<'c>(self, target: impl Into<Target<'c>>) -> StoreResult<u64> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query,
            execute,
            |r: sqlx::sqlite::SqliteQueryResult| r.rows_affected(),
            |r: sqlx::postgres::PgQueryResult| r.rows_affected()
        ))
    }

    pub(crate) async fn fetch_all<'c, T: Record>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<Vec<T>> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query_as::<T>,
            fetch_all,
            |r| r,
            |r| r
        ))
    }

    pub(crate) async fn fetch_optional<'c, T: Record>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<Option<T>> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query_as::<T>,
            fetch_optional,
            |r| r,
            |r| r
        ))
    }

    pub(crate) async fn fetch_one<'c, T: Record>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<T> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query_as::<T>,
            fetch_one,
            |r| r,
            |r| r
        ))
    }

    /// The rows, to be read by column name.
    pub(crate) async fn rows<'c>(self, target: impl Into<Target<'c>>) -> StoreResult<Vec<Row>> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query,
            fetch_all,
            |r: Vec<SqliteRow>| r.into_iter().map(Row::Sqlite).collect(),
            |r: Vec<PgRow>| r.into_iter().map(Row::Postgres).collect()
        ))
    }

    pub(crate) async fn row<'c>(self, target: impl Into<Target<'c>>) -> StoreResult<Row> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query,
            fetch_one,
            Row::Sqlite,
            Row::Postgres
        ))
    }

    pub(crate) async fn row_opt<'c>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<Option<Row>> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query,
            fetch_optional,
            |r: Option<SqliteRow>| r.map(Row::Sqlite),
            |r: Option<PgRow>| r.map(Row::Postgres)
        ))
    }

    /// The first column of the one row.
    pub(crate) async fn scalar<'c, T: Value + Send + Unpin>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<T> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query_scalar::<T>,
            fetch_one,
            |r| r,
            |r| r
        ))
    }

    /// The first column of the first row, if there is one.
    pub(crate) async fn scalar_opt<'c, T: Value + Send + Unpin>(
        self,
        target: impl Into<Target<'c>>,
    ) -> StoreResult<Option<T>> {
        let target = target.into();
        Ok(on_target!(
            self,
            target,
            query_scalar::<T>,
            fetch_optional,
            |r| r,
            |r| r
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::renumber_placeholders;

    #[test]
    fn placeholders_move_on() {
        assert_eq!(
            renumber_placeholders("UPDATE t SET a = $1 WHERE b = $2 AND c = $10", 3),
            "UPDATE t SET a = $4 WHERE b = $5 AND c = $13"
        );
        assert_eq!(renumber_placeholders("SELECT 1", 5), "SELECT 1");
        assert_eq!(renumber_placeholders("a $ b $2", 1), "a $ b $3");
    }
}
