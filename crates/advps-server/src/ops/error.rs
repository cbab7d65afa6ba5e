//! The service layer's own error: what an operation refused or could not
//! do, in the rules' terms (not found, refused, busy, out of stock, not
//! paid for, failed on the engine), with the storage's or the engine's error
//! kept as its source rather than flattened into a string. The HTTP edge
//! turns it into the API's error in exactly one place,
//! `impl From<OpsError> for ApiError`, which decides status and wording.

use advps_drivers::DriverError;
use advps_store::StoreError;
use serde_json::Value;

use crate::drivers::describe;
use crate::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request cannot be carried out as sent (400), with details for
    /// the client in `errors`.
    #[error("{message}")]
    Validation {
        message: String,
        errors: Option<Value>,
    },
    /// No such resource for this caller (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// Not allowed in the resource's state (403): suspended, over a limit.
    #[error("{0}")]
    Forbidden(String),
    /// A task holds the service (409), and which one when known.
    #[error("Service is busy: a task is in progress")]
    Busy { task_id: Option<String> },
    /// Another conflict with the current state (409): out of stock, too
    /// many of something, the last of something.
    #[error("{message}")]
    Conflict {
        message: String,
        errors: Option<Value>,
    },
    /// The wallet cannot pay (402).
    #[error("{message}")]
    Unpaid {
        message: String,
        errors: Option<Value>,
    },
    /// Allowed only so often, and not yet again (429).
    #[error("{message}")]
    TooSoon {
        message: String,
        retry_after_secs: u64,
    },
    /// The operation did not happen, for a reason the client is told (500),
    /// e.g. "Failed to start service: service is already running".
    #[error("{0}")]
    Failed(String),
    /// An engine call failed (500 "Failed to {action}: ..."), the engine's
    /// error kept as the source.
    #[error("Failed to {action}: {}", describe(.source))]
    Driver {
        action: String,
        #[source]
        source: DriverError,
    },
    /// The storage failed: 503 when it cannot take writes now, 500 otherwise.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// A value could not be encoded for storage (500; a bug).
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl OpsError {
    /// A 400 without details.
    pub fn invalid(message: impl Into<String>) -> OpsError {
        OpsError::Validation {
            message: message.into(),
            errors: None,
        }
    }

    /// An engine call for `action` that failed.
    pub fn driver(action: impl Into<String>, source: DriverError) -> OpsError {
        OpsError::Driver {
            action: action.into(),
            source,
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(err: OpsError) -> ApiError {
        match err {
            OpsError::Validation { message, errors } => ApiError::BadRequest { message, errors },
            OpsError::NotFound(message) => ApiError::NotFound(message),
            OpsError::Forbidden(message) => ApiError::Forbidden(message),
            OpsError::Busy { task_id } => ApiError::Busy { task_id },
            OpsError::Conflict { message, errors } => ApiError::Conflict { message, errors },
            OpsError::Unpaid { message, errors } => ApiError::PaymentRequired { message, errors },
            OpsError::TooSoon {
                message,
                retry_after_secs,
            } => ApiError::TooManyRequests {
                message,
                retry_after_secs,
            },
            OpsError::Failed(message) => ApiError::OperationFailed(message),
            driver @ OpsError::Driver { .. } => ApiError::OperationFailed(driver.to_string()),
            OpsError::Storage(source) => ApiError::from(source),
            OpsError::Encoding(source) => ApiError::internal(source.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn engine_and_storage_errors_keep_their_cause() {
        let err = OpsError::driver("start service", DriverError::Timeout("30 s".into()));
        assert!(err.source().is_some_and(|s| s.is::<DriverError>()));
        let api = ApiError::from(err);
        assert_eq!(api.status(), 500);
        assert_eq!(
            api.to_string(),
            "Failed to start service: the hypervisor did not answer in time"
        );

        let err = OpsError::from(StoreError::Corrupt("power_state 'x'".into()));
        assert!(err.source().is_some_and(|s| s.is::<StoreError>()));
        let api = ApiError::from(err);
        assert_eq!(api.status(), 500);
        assert_eq!(api.to_string(), "Internal server error");
    }

    #[test]
    fn each_refusal_keeps_its_status_and_words() {
        let cases = [
            (OpsError::invalid("orderId is required"), 400),
            (OpsError::NotFound("Order not found or not accessible"), 404),
            (
                OpsError::Forbidden("Monthly rebuild limit reached".into()),
                403,
            ),
            (OpsError::Busy { task_id: None }, 409),
            (
                OpsError::Unpaid {
                    message: "Insufficient wallet balance".into(),
                    errors: None,
                },
                402,
            ),
            (
                OpsError::TooSoon {
                    message: "The MAC address can be reset once every 24 hours".into(),
                    retry_after_secs: 5,
                },
                429,
            ),
            (
                OpsError::Failed("Failed to rebuild service: service is provisioning".into()),
                500,
            ),
        ];
        for (err, status) in cases {
            let words = err.to_string();
            let api = ApiError::from(err);
            assert_eq!((api.status().as_u16(), api.to_string()), (status, words));
        }
    }
}
