//! Console tickets: the single-use secrets behind console URLs.
//!
//! A ticket is kept as the digest of its secret, never the secret, with the
//! account, mode and key that asked for it, the service it opens and when it
//! expires. Taking one deletes it in the same statement, so of two clients
//! racing with one URL only the first gets a console, on every instance
//! that shares the database.

use async_trait::async_trait;

use crate::db::query;
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// Console tickets: issued, then taken once.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Stores a ticket, dropping the ones that expired before `ticket.created_at`.
    async fn insert_console_ticket(&self, ticket: &ConsoleTicket) -> StoreResult<()>;

    /// Takes (deletes) the ticket with this digest and returns it if it had
    /// not expired at `now`; an expired ticket is deleted all the same.
    async fn take_console_ticket(
        &self,
        digest: &str,
        now: i64,
    ) -> StoreResult<Option<ConsoleTicket>>;
}

#[async_trait]
impl ConsoleStore for SqlStore {
    async fn insert_console_ticket(&self, ticket: &ConsoleTicket) -> StoreResult<()> {
        let mut tx = self.db.begin_uncached().await?;
        query("DELETE FROM console_tickets WHERE expires_at <= $1")
            .bind(ticket.created_at)
            .execute(&mut tx)
            .await?;
        query(
            "INSERT INTO console_tickets (digest, account_id, mode, key_id, service_pk, service_id, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ticket.digest)
        .bind(ticket.account_id)
        .bind(ticket.mode.as_str())
        .bind(&ticket.key_id)
        .bind(ticket.service_pk)
        .bind(&ticket.service_id)
        .bind(ticket.created_at)
        .bind(ticket.expires_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_console_ticket(
        &self,
        digest: &str,
        now: i64,
    ) -> StoreResult<Option<ConsoleTicket>> {
        let taken: Option<ConsoleTicket> = query(
            "DELETE FROM console_tickets WHERE digest = $1 RETURNING digest, account_id, mode, \
             key_id, service_pk, service_id, created_at, expires_at",
        )
        .bind(digest)
        .fetch_optional(self.db.write_uncached())
        .await?;
        Ok(taken.filter(|t| t.expires_at > now))
    }
}
