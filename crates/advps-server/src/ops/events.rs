//! Webhook endpoints and the audit log, as the service layer offers them:
//! every endpoint and entry is bounded by the caller's account and mode.

use advps_domain::{ids, time, PageRequest};
use advps_store::{
    AuditEntry, AuditFilter, NewWebhookEndpoint, Scope, WebhookDelivery, WebhookEndpoint,
};

use super::Operations;
use super::OpsError;
use crate::webhooks::{self, ROTATION_OVERLAP_MS};

const WEBHOOK_NOT_FOUND: &str = "Webhook endpoint not found";
/// Endpoints one account may register per mode.
pub const MAX_ENDPOINTS: usize = 20;

/// An endpoint to register, its body checked: the URL (trimmed, not yet
/// resolved), the event types it wants (empty: all), its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
}

impl Operations {
    async fn own_webhook(&self, scope: Scope, id: &str) -> Result<WebhookEndpoint, OpsError> {
        match self.store.find_webhook(id).await? {
            Some(e) if e.account_id == scope.account_id && e.mode == scope.mode => Ok(e),
            _ => Err(OpsError::NotFound(WEBHOOK_NOT_FOUND)),
        }
    }

    /// Registers an endpoint; returns it with its secret (shown once).
    pub async fn create_webhook(
        &self,
        scope: Scope,
        webhook: NewWebhook,
    ) -> Result<(WebhookEndpoint, String), OpsError> {
        let NewWebhook {
            url,
            events,
            description,
        } = webhook;
        let url = url.as_str();
        webhooks::check_url(url, self.config.webhook_allow_private)
            .await
            .map_err(OpsError::invalid)?;
        if self.store.list_webhooks(scope).await?.len() >= MAX_ENDPOINTS {
            return Err(OpsError::Conflict {
                message: format!("At most {MAX_ENDPOINTS} webhook endpoints per account and mode"),
                errors: None,
            });
        }
        let secret = webhooks::new_secret();
        let endpoint = self
            .store
            .create_webhook(&NewWebhookEndpoint {
                id: format!("we_{}", &ids::key_id()[4..]),
                scope,
                url: url.to_string(),
                description,
                events,
                secret_enc: self.cipher.encrypt(&secret),
                now: time::now_millis(),
            })
            .await?;
        Ok((endpoint, secret))
    }

    pub async fn webhooks(&self, scope: Scope) -> Result<Vec<WebhookEndpoint>, OpsError> {
        Ok(self.store.list_webhooks(scope).await?)
    }

    pub async fn webhook(&self, scope: Scope, id: &str) -> Result<WebhookEndpoint, OpsError> {
        self.own_webhook(scope, id).await
    }

    pub async fn delete_webhook(&self, scope: Scope, id: &str) -> Result<(), OpsError> {
        let endpoint = self.own_webhook(scope, id).await?;
        self.store.delete_webhook(&endpoint.id).await?;
        Ok(())
    }

    /// A new secret; the old one keeps signing for a day so receivers can switch.
    pub async fn rotate_webhook_secret(
        &self,
        scope: Scope,
        id: &str,
    ) -> Result<(WebhookEndpoint, String, i64), OpsError> {
        let endpoint = self.own_webhook(scope, id).await?;
        let secret = webhooks::new_secret();
        let until = time::now_millis() + ROTATION_OVERLAP_MS;
        self.store
            .rotate_webhook_secret(&endpoint.id, &self.cipher.encrypt(&secret), until)
            .await?;
        Ok((endpoint, secret, until))
    }

    pub async fn webhook_deliveries(
        &self,
        scope: Scope,
        id: &str,
        page: PageRequest,
    ) -> Result<(Vec<WebhookDelivery>, u64), OpsError> {
        let endpoint = self.own_webhook(scope, id).await?;
        Ok(self
            .store
            .list_deliveries(&endpoint.id, page.offset(), page.limit)
            .await?)
    }

    pub async fn redeliver(
        &self,
        scope: Scope,
        id: &str,
        delivery_id: &str,
    ) -> Result<(), OpsError> {
        let endpoint = self.own_webhook(scope, id).await?;
        if !self
            .store
            .redeliver(&endpoint.id, delivery_id, time::now_millis())
            .await?
        {
            return Err(OpsError::NotFound("Delivery not found"));
        }
        Ok(())
    }

    /// The caller's own audit entries, newest first.
    pub async fn audit(
        &self,
        scope: Scope,
        service_id: Option<String>,
        from: Option<i64>,
        to: Option<i64>,
        page: PageRequest,
    ) -> Result<(Vec<AuditEntry>, u64), OpsError> {
        Ok(self
            .store
            .list_audit(&AuditFilter {
                account_id: Some(scope.account_id),
                mode: Some(scope.mode),
                service_id,
                from,
                to,
                offset: page.offset(),
                limit: page.limit,
            })
            .await?)
    }
}
