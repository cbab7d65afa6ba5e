//! The API's one error type. Each variant knows its HTTP status and its
//! message, and renders as the reference's error envelope; internal details
//! go to the log, never to the client.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::envelope::{error_body, json_response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a message meant for the client.
    #[error("{message}")]
    BadRequest {
        message: String,
        errors: Option<Value>,
    },
    /// 401: missing, malformed, unknown or revoked key (deliberately one message).
    #[error("Missing or invalid API key")]
    Unauthorized,
    /// 403 with a message.
    #[error("{0}")]
    Forbidden(String),
    /// 404 with the resource's message.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 for a known path with another method.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 402: the wallet cannot pay.
    #[error("{message}")]
    PaymentRequired {
        message: String,
        errors: Option<Value>,
    },
    /// 409: a task holds the service.
    #[error("Service is busy: a task is in progress")]
    Busy { task_id: Option<String> },
    /// 409 for another conflict (out of stock, ...).
    #[error("{message}")]
    Conflict {
        message: String,
        errors: Option<Value>,
    },
    /// 422: a request that cannot be processed as sent.
    #[error("{0}")]
    Unprocessable(String),
    /// 413.
    #[error("Request body too large")]
    PayloadTooLarge,
    /// 408: the body did not arrive within the body read deadline.
    #[error("Request body not received in time")]
    RequestTimeout,
    /// 415.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429 with the seconds until the window resets.
    #[error("Too many requests: rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// 429 for an action allowed only so often (MAC reset).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// 500 that the reference documents for a failed operation, e.g.
    /// "Failed to start service: service is already running".
    #[error("{0}")]
    OperationFailed(String),
    /// 500 for anything unexpected; the detail is logged only.
    #[error("Internal server error")]
    Internal(String),
    /// 503: the server is at a capacity limit of its own (consoles open in
    /// the process); the same request may succeed later.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// 503: the storage cannot take writes now (a full disk, a database
    /// server restarting); the same request may succeed later.
    #[error("{STORAGE_UNAVAILABLE}")]
    StorageUnavailable(String),
}

/// The message of [`ApiError::StorageUnavailable`].
pub const STORAGE_UNAVAILABLE: &str = "Storage is full or unavailable; retry later";

/// The `Retry-After` of [`ApiError::StorageUnavailable`], in seconds.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            errors: None,
        }
    }

    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::Internal(detail.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Busy { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } | ApiError::TooManyRequests { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::OperationFailed(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::StorageUnavailable(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn errors(&self) -> Option<Value> {
        match self {
            ApiError::BadRequest { errors, .. }
            | ApiError::PaymentRequired { errors, .. }
            | ApiError::Conflict { errors, .. } => errors.clone(),
            ApiError::Busy {
                task_id: Some(task_id),
            } => Some(serde_json::json!({ "taskId": task_id })),
            _ => None,
        }
    }
}

impl From<advps_store::StoreError> for ApiError {
    fn from(err: advps_store::StoreError) -> Self {
        if err.is_unavailable() {
            ApiError::StorageUnavailable(err.to_string())
        } else {
            ApiError::Internal(err.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            ApiError::StorageUnavailable(detail) => {
                tracing::warn!(error = %detail, "storage unavailable")
            }
            _ => {}
        }
        let mut response =
            json_response(self.status(), &error_body(&self.to_string(), self.errors()));
        if let ApiError::RateLimited { retry_after_secs }
        | ApiError::TooManyRequests {
            retry_after_secs, ..
        }
        | ApiError::Overloaded {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after_secs));
        }
        if let ApiError::StorageUnavailable(_) = self {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(STORAGE_RETRY_AFTER_SECS));
        }
        response
    }
}
