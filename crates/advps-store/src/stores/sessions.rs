//! Sessions of the customer panel: what a browser holds instead of an API key.
//!
//! A session is kept as the digest of its cookie's token, never the token,
//! bound to the key that signed in (and its account and mode), with the page's
//! CSRF token and when it was last used. It is found only while that key is
//! unrevoked, so revoking the key ends every session made with it, on every
//! instance that shares the database; sessions idle for longer than the
//! caller's limit are not found and are dropped when the next one is made.

use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// Panel sessions: made at sign-in, found on each request, ended at sign-out.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session, dropping those last seen before `idle_before`.
    async fn insert_panel_session(
        &self,
        session: &NewPanelSession,
        idle_before: i64,
    ) -> StoreResult<()>;

    /// The session with this digest, if it was last seen at or after
    /// `idle_before` and its key is unrevoked.
    async fn find_panel_session(
        &self,
        digest: &str,
        idle_before: i64,
    ) -> StoreResult<Option<PanelSession>>;

    /// Records a use of the session at `now` (never moving it backwards).
    async fn touch_panel_session(&self, digest: &str, now: i64) -> StoreResult<()>;

    /// Ends a session; false when there was none with this digest.
    async fn delete_panel_session(&self, digest: &str) -> StoreResult<bool>;
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn insert_panel_session(
        &self,
        session: &NewPanelSession,
        idle_before: i64,
    ) -> StoreResult<()> {
        let mut tx = self.db.begin_uncached().await?;
        query("DELETE FROM panel_sessions WHERE last_seen_at < $1")
            .bind(idle_before)
            .execute(&mut tx)
            .await?;
        query(
            "INSERT INTO panel_sessions (digest, key_id, account_id, mode, csrf_token, \
             created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&session.digest)
        .bind(&session.key_id)
        .bind(session.account_id)
        .bind(session.mode.as_str())
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_panel_session(
        &self,
        digest: &str,
        idle_before: i64,
    ) -> StoreResult<Option<PanelSession>> {
        // Never cached: a key revoked a moment ago on another instance must
        // end the session on the next request here.
        query(
            "SELECT s.digest, s.key_id, k.key_hash, s.account_id, s.mode, s.csrf_token, \
             s.created_at, s.last_seen_at FROM panel_sessions s \
             JOIN api_keys k ON k.id = s.key_id \
             WHERE s.digest = $1 AND s.last_seen_at >= $2 AND k.revoked_at IS NULL",
        )
        .bind(digest)
        .bind(idle_before)
        .fetch_optional(self.db.read())
        .await
    }

    async fn touch_panel_session(&self, digest: &str, now: i64) -> StoreResult<()> {
        query(
            "UPDATE panel_sessions SET last_seen_at = $1 WHERE digest = $2 AND last_seen_at < $1",
        )
        .bind(now)
        .bind(digest)
        .execute(self.db.write_uncached())
        .await?;
        Ok(())
    }

    async fn delete_panel_session(&self, digest: &str) -> StoreResult<bool> {
        let deleted = query("DELETE FROM panel_sessions WHERE digest = $1")
            .bind(digest)
            .execute(self.db.write_uncached())
            .await?;
        Ok(deleted == 1)
    }
}
