//! What goes wrong in a request, and what the client is told: a status and a short JSON
//! message. Internal causes are logged, never sent.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::report::Report;
use crate::{
    drive::live::ControlError,
    kernel::{KernelError, attach::AttachError},
    mitigate::MitigateError,
    source::attached::SourceError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(cause) => {
                tracing::error!(%cause, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            // Another process holds the file locked: the client may retry; nothing is broken.
            Some(C::DatabaseBusy | C::DatabaseLocked) => {
                Self::Unavailable("the database is locked by another process; try again".into())
            }
            Some(C::OperationInterrupted) => Self::Unavailable(format!(
                "the query ran past {} s; narrow it (since, until, limit)",
                crate::api::READ_LIMIT.as_secs()
            )),
            Some(C::CannotOpen | C::NotADatabase | C::DatabaseCorrupt | C::SystemIoFailure) => {
                tracing::error!(error = %Report(&e), "API cannot read the database");
                Self::Unavailable("the database cannot be read right now".into())
            }
            _ => Self::Internal(Report(&e).to_string()),
        }
    }
}

impl From<crate::sink::store::StoreError> for ApiError {
    fn from(e: crate::sink::store::StoreError) -> Self {
        match e {
            crate::sink::store::StoreError::Sqlite { source, .. } => source.into(),
            e => Self::Internal(Report(&e).to_string()),
        }
    }
}

/// Capture control failures: the same messages as on the command line, with a status that
/// says whose move it is.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let msg = Report(&e).to_string();
        match e {
            ControlError::Stopped => Self::Unavailable(msg),
            ControlError::Mitigate(m) => m.into(),
            ControlError::Source(s) => match s {
                SourceError::Attach(AttachError::NoInterface(_)) => Self::NotFound(msg),
                SourceError::Attach(AttachError::Busy(_))
                | SourceError::AlreadyWatched { .. }
                | SourceError::NotWatched(_) => Self::Conflict(msg),
                SourceError::Kernel(KernelError::Program { .. })
                | SourceError::Attach(AttachError::Kernel(KernelError::Program { .. })) => {
                    Self::Forbidden(msg)
                }
                SourceError::Attach(AttachError::Attach { .. }) | SourceError::Capture { .. } => {
                    Self::BadRequest(msg)
                }
                SourceError::Kernel(_) | SourceError::Attach(AttachError::Kernel(_)) => {
                    Self::Internal(msg)
                }
            },
        }
    }
}

impl From<MitigateError> for ApiError {
    fn from(e: MitigateError) -> Self {
        let msg = Report(&e).to_string();
        match e {
            MitigateError::BadPrefix(_) => Self::BadRequest(msg),
            MitigateError::Refused(_) => Self::Forbidden(msg),
            MitigateError::Full(_) => Self::Conflict(msg),
            MitigateError::NotFound(_) => Self::NotFound(msg),
            MitigateError::Kernel(_) => Self::Internal(msg),
        }
    }
}
