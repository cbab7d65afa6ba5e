//! Webhooks and the outbox: endpoints, events fanned out to deliveries, and deliveries claimed, recorded and replayed.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::{query, Row};
use crate::model::*;
use crate::{SqlStore, StoreError, StoreResult};

/// Webhooks and the outbox: endpoints, events fanned out to deliveries, and deliveries claimed, recorded and replayed.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, endpoint: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint>;

    async fn list_webhooks(&self, scope: Scope) -> StoreResult<Vec<WebhookEndpoint>>;

    /// All endpoints (operators), or an account's.
    async fn all_webhooks(&self, account_id: Option<i64>) -> StoreResult<Vec<WebhookEndpoint>>;

    async fn find_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;

    /// Replaces the secret; the previous one stays valid until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret_enc: &str,
        previous_until: i64,
    ) -> StoreResult<bool>;

    /// Turns new events into deliveries for the endpoints that want them.
    async fn fan_out_events(&self, now: i64, limit: i64) -> StoreResult<u64>;

    /// Claims due deliveries, holding each for `hold_ms` while it is sent.
    async fn claim_deliveries(
        &self,
        now: i64,
        hold_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;

    async fn record_delivery(&self, id: &str, attempt: &DeliveryAttempt) -> StoreResult<()>;

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<WebhookDelivery>, u64)>;

    /// Queues a delivery again now; false when there is no such delivery.
    async fn redeliver(&self, endpoint_id: &str, delivery_id: &str, now: i64) -> StoreResult<bool>;
}

const WEBHOOK_COLUMNS: &str = "id, account_id, mode, url, description, events, secret_enc, \
     previous_secret_enc, previous_until, created_at";

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, payload, status, attempts, \
     next_attempt_at, last_status_code, last_error, created_at, delivered_at";

/// An endpoint from its row; its event types are kept as a JSON array.
fn webhook_from(row: &Row) -> StoreResult<WebhookEndpoint> {
    let events: String = row.get("events")?;
    Ok(WebhookEndpoint {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        mode: row.parse("mode")?,
        url: row.get("url")?,
        description: row.get("description")?,
        events: serde_json::from_str(&events).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        secret_enc: row.get("secret_enc")?,
        previous_secret_enc: row.get("previous_secret_enc")?,
        previous_until: row.get("previous_until")?,
        created_at: row.get("created_at")?,
    })
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(&self, endpoint: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint> {
        let row = query(format!(
            "INSERT INTO webhook_endpoints (id, account_id, mode, url, description, events, secret_enc, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(&endpoint.id)
        .bind(endpoint.scope.account_id)
        .bind(endpoint.scope.mode.as_str())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(serde_json::to_string(&endpoint.events).unwrap_or_else(|_| "[]".into()))
        .bind(&endpoint.secret_enc)
        .bind(endpoint.now)
        .row(self.db.write_uncached())
        .await
        .map_err(|e| e.on_write(format!("webhook '{}'", endpoint.id)))?;
        webhook_from(&row)
    }

    async fn list_webhooks(&self, scope: Scope) -> StoreResult<Vec<WebhookEndpoint>> {
        query(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE account_id = $1 AND mode = $2 \
             ORDER BY created_at, id COLLATE \"C\""
        ))
        .bind(scope.account_id)
        .bind(scope.mode.as_str())
        .rows(self.db.read())
        .await?
        .iter()
        .map(webhook_from)
        .collect()
    }

    async fn all_webhooks(&self, account_id: Option<i64>) -> StoreResult<Vec<WebhookEndpoint>> {
        query(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints \
             WHERE (CAST($1 AS BIGINT) IS NULL OR account_id = $1) \
             ORDER BY created_at, id COLLATE \"C\""
        ))
        .bind(account_id)
        .rows(self.db.read())
        .await?
        .iter()
        .map(webhook_from)
        .collect()
    }

    async fn find_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        query(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .row_opt(self.db.read())
        .await?
        .as_ref()
        .map(webhook_from)
        .transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.db.begin_uncached().await?;
        query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        let done = query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret_enc: &str,
        previous_until: i64,
    ) -> StoreResult<bool> {
        let done = query(
            "UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, previous_until = $1, \
             secret_enc = $2 WHERE id = $3",
        )
        .bind(previous_until)
        .bind(secret_enc)
        .bind(id)
        .execute(self.db.write_uncached())
        .await?;
        Ok(done == 1)
    }

    async fn fan_out_events(&self, now: i64, limit: i64) -> StoreResult<u64> {
        let mut tx = self.db.begin_uncached().await?;
        // Each event is fanned out by one instance: the events are locked
        // until commit, and another instance's sweep skips them (and takes
        // later ones) instead of making a second set of deliveries.
        let events = query(format!(
            "SELECT id, account_id, mode, event_type, payload FROM events WHERE fanned_out = FALSE \
             ORDER BY created_at, id COLLATE \"C\" LIMIT $1{}",
            tx.dialect().skip_locked()
        ))
        .bind(limit)
        .rows(&mut tx)
        .await?;
        let mut made = 0;
        for event in &events {
            let id: String = event.get("id")?;
            let account_id: Option<i64> = event.get("account_id")?;
            let mode: String = event.get("mode")?;
            let event_type: String = event.get("event_type")?;
            let payload: String = event.get("payload")?;
            let endpoints = query(
                "SELECT id, events FROM webhook_endpoints WHERE mode = $1 \
                 AND (CAST($2 AS BIGINT) IS NULL OR account_id = $2)",
            )
            .bind(&mode)
            .bind(account_id)
            .rows(&mut tx)
            .await?;
            for endpoint in &endpoints {
                let wanted: String = endpoint.get("events")?;
                let wanted: Vec<String> = serde_json::from_str(&wanted).unwrap_or_default();
                if !wanted.is_empty() && !wanted.contains(&event_type) {
                    continue;
                }
                let endpoint_id: String = endpoint.get("id")?;
                query(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, status, \
                     attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
                )
                .bind(format!(
                    "msg_{}",
                    advps_domain::ids::task_id().replace('-', "")
                ))
                .bind(&endpoint_id)
                .bind(&id)
                .bind(&event_type)
                .bind(&payload)
                .bind(now)
                .execute(&mut tx)
                .await?;
                made += 1;
            }
            query("UPDATE events SET fanned_out = TRUE WHERE id = $1")
                .bind(&id)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        hold_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let mut tx = self.db.begin_uncached().await?;
        // SKIP LOCKED: a delivery another instance is claiming right now is
        // left to it; once that commits, the hold below makes it not due.
        let deliveries: Vec<WebhookDelivery> = query(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, created_at LIMIT $2{}",
            tx.dialect().skip_locked()
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut tx)
        .await?;
        if !deliveries.is_empty() {
            // Held while it is sent; if this process dies, it is due again
            // after the hold. The ids are listed as placeholders from $2 on,
            // one statement on both databases.
            let ids = (2..deliveries.len() + 2)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut hold = query(format!(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id IN ({ids})"
            ))
            .bind(now + hold_ms);
            for d in &deliveries {
                hold = hold.bind(&d.id);
            }
            hold.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deliveries)
    }

    async fn record_delivery(&self, id: &str, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let status = if attempt.delivered {
            "delivered"
        } else if attempt.retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             last_status_code = $3, last_error = $4, updated_at = $5, \
             delivered_at = CASE WHEN $6 THEN $5 ELSE delivered_at END WHERE id = $7",
        )
        .bind(status)
        .bind(attempt.retry_at.unwrap_or(attempt.now))
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(attempt.now)
        .bind(attempt.delivered)
        .bind(id)
        .execute(self.db.write_uncached())
        .await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<WebhookDelivery>, u64)> {
        let total: i64 = query("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(endpoint_id)
            .scalar(self.db.read())
            .await?;
        let total = total as u64;
        if offset >= total {
            return Ok((Vec::new(), total));
        }
        let deliveries = query(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
             ORDER BY created_at DESC, id COLLATE \"C\" LIMIT $2 OFFSET $3"
        ))
        .bind(endpoint_id)
        .bind(limit)
        .bind(offset as i64)
        .fetch_all(self.db.read())
        .await?;
        Ok((deliveries, total))
    }

    async fn redeliver(&self, endpoint_id: &str, delivery_id: &str, now: i64) -> StoreResult<bool> {
        let done = query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND endpoint_id = $3",
        )
        .bind(now)
        .bind(delivery_id)
        .bind(endpoint_id)
        .execute(self.db.write_uncached())
        .await?;
        Ok(done == 1)
    }
}
