//! Shared rate-limit windows, exact across instances.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::{query, Row};
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// Shared rate-limit windows, exact across instances.
#[async_trait]
pub trait RateStore: Send + Sync {
    /// Counts one request of `key_id` in its fixed window (opened by the
    /// first request, `window_ms` long) unless `limit` is reached, in one
    /// atomic statement. Returns whether it was counted, the count after it
    /// and when the window opened.
    async fn rate_hit(
        &self,
        key_id: &str,
        limit: u32,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<RateHit> {
        let window = self.rate_count(key_id, 1, now, window_ms).await?;
        Ok(RateHit {
            counted: window.count <= limit,
            ..window
        })
    }

    /// Counts `n` requests of `key_id` at once, in one atomic statement,
    /// as if they had come one after another: a closed window starts over
    /// at `n`, an open one counts on. Returns the window after them (the
    /// last of the `n` has number `count`, the first `count - n + 1`);
    /// `counted` is left to the caller, which knows each request's limit.
    /// What lets one instance count a burst of one key's requests in one
    /// round trip instead of queueing them on the key's row.
    async fn rate_count(
        &self,
        key_id: &str,
        n: u32,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<RateHit>;

    /// Takes back one counted request (an answer that costs no quota).
    async fn rate_release(&self, key_id: &str, now: i64, window_ms: i64) -> StoreResult<()>;

    /// The current window of a key, without counting.
    async fn rate_peek(
        &self,
        key_id: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<Option<RateHit>>;
}

/// A window's count and opening, read from a row; `counted` is the caller's.
fn window_from(row: &Row, counted: impl FnOnce(i64) -> bool) -> StoreResult<RateHit> {
    let count: i64 = row.get("count")?;
    Ok(RateHit {
        counted: counted(count),
        count: count.clamp(0, i64::from(u32::MAX)) as u32,
        opened_at: row.get("opened_at")?,
    })
}

#[async_trait]
impl RateStore for SqlStore {
    async fn rate_count(
        &self,
        key_id: &str,
        n: u32,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<RateHit> {
        // One statement: a closed window starts over at n, an open one
        // counts on (past the limit too, which is how a refusal is told).
        // On PostgreSQL the upsert holds the key's row lock while it
        // computes, so hits from every instance are counted exactly, none
        // lost; on SQLite the one writer does the same.
        let row = query(
            "INSERT INTO rate_windows (key_id, opened_at, count) VALUES ($1, $2, $4) \
             ON CONFLICT (key_id) DO UPDATE SET \
               count = CASE WHEN rate_windows.opened_at + $3 <= $2 THEN $4 ELSE rate_windows.count + $4 END, \
               opened_at = CASE WHEN rate_windows.opened_at + $3 <= $2 THEN $2 ELSE rate_windows.opened_at END \
             RETURNING count, opened_at",
        )
        .bind(key_id)
        .bind(now)
        .bind(window_ms)
        .bind(i64::from(n))
        .row(self.db.write_relaxed())
        .await?;
        window_from(&row, |_| false)
    }

    async fn rate_release(&self, key_id: &str, now: i64, window_ms: i64) -> StoreResult<()> {
        query(
            "UPDATE rate_windows SET count = count - 1 WHERE key_id = $1 AND count > 0 \
             AND opened_at + $2 > $3",
        )
        .bind(key_id)
        .bind(window_ms)
        .bind(now)
        .execute(self.db.write_relaxed())
        .await?;
        Ok(())
    }

    async fn rate_peek(
        &self,
        key_id: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<Option<RateHit>> {
        query("SELECT count, opened_at FROM rate_windows WHERE key_id = $1 AND opened_at + $2 > $3")
            .bind(key_id)
            .bind(window_ms)
            .bind(now)
            .row_opt(self.db.read())
            .await?
            .map(|row| window_from(&row, |_| false))
            .transpose()
    }
}
