//! Who is calling: the account, mode and key that authentication found
//! for a request, handed to the handlers (and to the audit and idempotency
//! layers) as a request extension. Its own module so that what reads the
//! caller does not depend on how it was authenticated.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use advps_domain::Mode;
use advps_store::Scope;

use crate::ApiError;

/// Who is calling: made by [`crate::auth::authenticate`] for the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub account_id: i64,
    pub account_name: String,
    pub mode: Mode,
    /// The last four characters of the presented key.
    pub key_last4: String,
    /// When the key was created, Unix milliseconds.
    pub key_created_at: i64,
    /// When the key was last used before this request (recorded at most
    /// once a minute), Unix milliseconds.
    pub key_last_used_at: Option<i64>,
}

impl Caller {
    pub fn scope(&self) -> Scope {
        Scope {
            account_id: self.account_id,
            mode: self.mode,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}
