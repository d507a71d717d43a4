//! SCIM protocol errors (RFC 7644 §3.12): every failure a client can cause is described in this shape, so
//! that it shows in the IdP's provisioning log with a status and a `scimType` the IdP understands. This is
//! the protocol model only; `crate::http` turns it into a response.

use serde_json::json;

/// The `scimType` values of RFC 7644 §3.12 table 9 that this service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
        }
    }
}

/// The HTTP statuses RFC 7644 §3.12 assigns to SCIM errors, those this service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Internal,
    NotImplemented,
    Unavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::Conflict => 409,
            Status::PreconditionFailed => 412,
            Status::PayloadTooLarge => 413,
            Status::UnsupportedMediaType => 415,
            Status::TooManyRequests => 429,
            Status::Internal => 500,
            Status::NotImplemented => 501,
            Status::Unavailable => 503,
        }
    }
}

/// An error answered to a SCIM client. `detail` is sent to the client, so it must never carry internal
/// state (file paths, SQL, secrets): internal failures are logged and answered with a generic 500.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {}: {detail}", status.code(), scim_type.map(ScimType::as_str).unwrap_or("-"))]
pub struct ScimError {
    pub status: Status,
    pub scim_type: Option<ScimType>,
    pub detail: String,
    /// Seconds after which the client may retry (429 and 503 answers carry a `Retry-After` header).
    pub retry_after: Option<u64>,
}

impl ScimError {
    pub fn new(status: Status, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type, detail: detail.into(), retry_after: None }
    }
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, Some(scim_type), detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidFilter, detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidSyntax, detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidPath, detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::NoTarget, detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::Mutability, detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(Status::Conflict, Some(ScimType::Uniqueness), detail)
    }
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(Status::NotFound, None, format!("{kind} {id:?} not found"))
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, None, detail)
    }
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(Status::PreconditionFailed, None, detail)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(Status::PayloadTooLarge, None, format!("request body exceeds the limit of {limit} bytes"))
    }
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(Status::MethodNotAllowed, None, detail)
    }
    /// Internal failures: the cause is logged by the caller; the client learns only that it may retry.
    pub fn internal() -> Self {
        Self::new(Status::Internal, None, "internal error; the change was not stored, retry later")
    }
    /// The change cannot be stored right now (shutting down, disk full, read-only file system): 503 with
    /// `Retry-After`, so that Entra ID and Okta retry instead of recording a failure.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ScimError { retry_after: Some(30), ..Self::new(Status::Unavailable, None, detail) }
    }

    /// The RFC 7644 §3.12 error document.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            // RFC 7644 §3.12: status is a string.
            "status": self.status.code().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t.as_str());
        }
        body
    }
}
