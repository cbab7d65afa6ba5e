//! Idempotency records for safe retries.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::{query, Query, Tx};
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// Idempotency records for safe retries.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Starts an idempotent request, or tells how a repeat is to be answered.
    /// Records expire after `ttl_ms`; one left in flight longer than
    /// `stale_ms` (its server died) is taken over.
    async fn begin_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        fingerprint: &str,
        now: i64,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> StoreResult<IdempotencyBegin>;

    /// Records the response of a started request, for its replays.
    async fn finish_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        status: u16,
        body: &str,
        content_type: Option<&str>,
    ) -> StoreResult<()>;

    /// Forgets an in-flight record (the request failed in a way worth retrying).
    async fn abandon_idempotent(&self, key_id: &str, idem_key: &str) -> StoreResult<()>;
}

/// Inserts a new in-flight record unless the key has one; true if it did.
async fn insert_in_flight(
    tx: &mut Tx,
    key_id: &str,
    idem_key: &str,
    fingerprint: &str,
    now: i64,
    ttl_ms: i64,
) -> StoreResult<bool> {
    let inserted = query(
        "INSERT INTO idempotency_records (key_id, idem_key, fingerprint, state, created_at, expires_at) \
         VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (key_id, idem_key) DO NOTHING",
    )
    .bind(key_id)
    .bind(idem_key)
    .bind(fingerprint)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(&mut *tx)
    .await?;
    Ok(inserted == 1)
}

/// The statement that records a started request's response; the audit log
/// runs it in one commit with the request's audit entry.
pub(crate) fn finish(response: &IdempotentResponse) -> Query<'static> {
    query(
        "UPDATE idempotency_records SET state = 'done', status = $1, body = $2, content_type = $3 \
         WHERE key_id = $4 AND idem_key = $5",
    )
    .bind(response.status)
    .bind(&response.body)
    .bind(&response.content_type)
    .bind(&response.key_id)
    .bind(&response.idem_key)
}

#[async_trait]
impl IdempotencyStore for SqlStore {
    async fn begin_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        fingerprint: &str,
        now: i64,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> StoreResult<IdempotencyBegin> {
        // The common case, a key never seen (or seen so long ago that its
        // record expired), takes the key in one statement outside a
        // transaction: one turn of SQLite's one writer instead of four
        // statements. The conflict clause takes over only an expired record;
        // of concurrent first requests one inserts and the others, waiting on
        // its row, find it unexpired and change nothing.
        let taken = query(
            "INSERT INTO idempotency_records (key_id, idem_key, fingerprint, state, created_at, expires_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (key_id, idem_key) DO UPDATE \
             SET fingerprint = excluded.fingerprint, state = excluded.state, status = NULL, \
             body = NULL, content_type = NULL, created_at = excluded.created_at, \
             expires_at = excluded.expires_at WHERE idempotency_records.expires_at <= $4",
        )
        .bind(key_id)
        .bind(idem_key)
        .bind(fingerprint)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(self.db.write_uncached())
        .await?;
        if taken == 1 {
            return Ok(IdempotencyBegin::Started);
        }
        // A repeat: whether it is replayed, refused, or takes over a request
        // whose server died is decided under the row's lock.
        let mut tx = self.db.begin_uncached().await?;
        query(
            "DELETE FROM idempotency_records WHERE key_id = $1 AND idem_key = $2 AND expires_at <= $3",
        )
        .bind(key_id)
        .bind(idem_key)
        .bind(now)
        .execute(&mut tx)
        .await?;
        // Of concurrent first requests with one key, one inserts; the others
        // wait on its uncommitted row, then insert nothing and read it.
        if insert_in_flight(&mut tx, key_id, idem_key, fingerprint, now, ttl_ms).await? {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Started);
        }
        // Locked, so that of two requests taking over a stale record only
        // the first does; the second sees the renewed start and waits. (The
        // dialect's lock conflicts with itself, which is all this needs.)
        let existing = query(format!(
            "SELECT fingerprint, state, status, body, content_type, created_at \
             FROM idempotency_records WHERE key_id = $1 AND idem_key = $2{}",
            tx.dialect().lock_rows()
        ))
        .bind(key_id)
        .bind(idem_key)
        .row_opt(&mut tx)
        .await?;
        let outcome = match existing {
            // Abandoned between the insert and this read: the key is free
            // again, and this request is its first.
            None => {
                // Lost the key once more to a third request: it runs.
                if insert_in_flight(&mut tx, key_id, idem_key, fingerprint, now, ttl_ms).await? {
                    IdempotencyBegin::Started
                } else {
                    IdempotencyBegin::InFlight
                }
            }
            Some(row) => {
                let stored: String = row.get("fingerprint")?;
                let state: String = row.get("state")?;
                let created: i64 = row.get("created_at")?;
                if stored != fingerprint {
                    IdempotencyBegin::Mismatch
                } else if state == "done" {
                    let status: i64 = row.get("status")?;
                    IdempotencyBegin::Replay {
                        status: status as u16,
                        body: row.get::<Option<String>>("body")?.unwrap_or_default(),
                        content_type: row.get("content_type")?,
                    }
                } else if created + stale_ms <= now {
                    // Its server died mid-request: this one runs it. The
                    // update is conditional too, so the takeover stays single
                    // even should the row lock above ever be dropped.
                    let taken = query(
                        "UPDATE idempotency_records SET created_at = $1 WHERE key_id = $2 \
                         AND idem_key = $3 AND state = 'in_flight' AND created_at = $4",
                    )
                    .bind(now)
                    .bind(key_id)
                    .bind(idem_key)
                    .bind(created)
                    .execute(&mut tx)
                    .await?;
                    if taken == 1 {
                        IdempotencyBegin::Started
                    } else {
                        IdempotencyBegin::InFlight
                    }
                } else {
                    IdempotencyBegin::InFlight
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn finish_idempotent(
        &self,
        key_id: &str,
        idem_key: &str,
        status: u16,
        body: &str,
        content_type: Option<&str>,
    ) -> StoreResult<()> {
        let response = IdempotentResponse {
            key_id: key_id.to_string(),
            idem_key: idem_key.to_string(),
            status,
            body: body.to_string(),
            content_type: content_type.map(str::to_string),
        };
        finish(&response).execute(self.db.write_uncached()).await?;
        Ok(())
    }

    async fn abandon_idempotent(&self, key_id: &str, idem_key: &str) -> StoreResult<()> {
        query(
            "DELETE FROM idempotency_records WHERE key_id = $1 AND idem_key = $2 \
             AND state = 'in_flight'",
        )
        .bind(key_id)
        .bind(idem_key)
        .execute(self.db.write_uncached())
        .await?;
        Ok(())
    }
}
