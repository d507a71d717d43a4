//! RFC 7644 §3.12 error responses, and what staging failures mean to a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::scim::SCIM_CONTENT_TYPE;
use crate::scim::error::ScimError;
use crate::staging::StagingError;

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim-bridge\""));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(super) fn internal(request_id: &str, e: StagingError) -> ScimError {
    match e {
        StagingError::Rejected(e) => e,
        StagingError::Closed => {
            ScimError::unavailable("the service is shutting down; the change was not stored, retry later")
        }
        StagingError::Unavailable(cause) => {
            tracing::error!(request_id, error = %cause, "the change cannot be stored: the staging database refuses writes (disk full or read-only?); answering 503");
            ScimError::unavailable("the service cannot store changes right now; the change was not stored, retry later")
        }
        other => {
            tracing::error!(request_id, error = %other, "staging failed");
            ScimError::internal()
        }
    }
}
