//! An account's own API keys, as the service layer offers them: a caller
//! sees and changes only the keys of its account in its mode, can create
//! one (shown once) and revoke one, but never the last, so that nobody
//! locks an account out of the API by accident.

use advps_domain::{api_key, ids, time, Mode};
use advps_store::{ApiKeyRecord, KeyRevocation, NewApiKey, Scope, Store, StoreResult};

use super::{Operations, OpsError};

const KEY_NOT_FOUND: &str = "API key not found";
/// Unrevoked keys one account may hold per mode.
pub const MAX_KEYS: usize = 20;

/// Makes a key for an account and mode and stores its digest: the one way
/// keys come into being, for the API and the operators' commands alike.
/// Returns what was stored and the plaintext, which is never stored.
pub async fn issue_api_key(
    store: &dyn Store,
    account_id: i64,
    mode: Mode,
) -> StoreResult<(NewApiKey, api_key::GeneratedKey)> {
    let key = api_key::generate(mode);
    let new = NewApiKey {
        id: ids::key_id(),
        account_id,
        mode,
        key_hash: key.hash.clone(),
        last4: key.last4.clone(),
        created_at: time::now_millis(),
    };
    store.insert_api_key(&new).await?;
    Ok((new, key))
}

impl Operations {
    /// The unrevoked keys of the caller's account and mode, oldest first.
    pub async fn keys(&self, scope: Scope) -> Result<Vec<ApiKeyRecord>, OpsError> {
        Ok(self
            .store
            .list_api_keys(scope.account_id)
            .await?
            .into_iter()
            .filter(|k| k.mode == scope.mode && k.revoked_at.is_none())
            .collect())
    }

    /// Creates a key in the caller's account and mode; returns its record
    /// and its plaintext, which is never stored and never shown again.
    pub async fn create_key(&self, scope: Scope) -> Result<(ApiKeyRecord, String), OpsError> {
        let held = self.keys(scope).await?;
        if held.len() >= MAX_KEYS {
            return Err(OpsError::Conflict {
                message: format!("At most {MAX_KEYS} API keys per account and mode"),
                errors: None,
            });
        }
        let (new, key) = issue_api_key(self.store.as_ref(), scope.account_id, scope.mode).await?;
        let account_name = held
            .first()
            .map(|k| k.account_name.clone())
            .unwrap_or_default();
        let record = ApiKeyRecord {
            id: new.id,
            account_id: new.account_id,
            account_name,
            mode: new.mode,
            key_hash: new.key_hash,
            last4: new.last4,
            created_at: new.created_at,
            last_used_at: None,
            revoked_at: None,
        };
        Ok((record, key.plaintext))
    }

    /// Revokes one of the caller's keys (the calling key too, if another
    /// is left): it is refused from the next request on.
    pub async fn revoke_key(&self, scope: Scope, key_id: &str) -> Result<(), OpsError> {
        match self
            .store
            .revoke_own_api_key(scope.account_id, scope.mode, key_id, time::now_millis())
            .await?
        {
            KeyRevocation::Revoked => Ok(()),
            KeyRevocation::NotFound => Err(OpsError::NotFound(KEY_NOT_FOUND)),
            KeyRevocation::LastKey => Err(OpsError::Conflict {
                message: "Cannot revoke the last API key of this account and mode".into(),
                errors: None,
            }),
        }
    }
}
