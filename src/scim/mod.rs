//! The SCIM 2.0 protocol (RFC 7643/7644): resource schemas, filters, PATCH, rendering and the HTTP routes
//! that Entra ID and Okta call. First stage of the pipeline: it validates, then hands changes to staging.

pub mod error;
pub mod filter;
pub mod patch;
mod render;
mod routes;
pub mod schema;

use serde_json::{Map, Value};

pub use routes::{ScimSettings, router};

use error::ScimError;
use schema::Kind;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Checks what can be known about a resource at request time (contract point 2), so that a bad request is
/// answered with a 400 the IdP shows in its provisioning log instead of failing later downstream.
///
/// # Errors
/// `invalidValue` naming the missing or unusable attribute.
pub fn validate(kind: Kind, doc: &Map<String, Value>) -> Result<(), ScimError> {
    match kind {
        Kind::User => {
            let user_name = doc.get("userName").and_then(Value::as_str).unwrap_or_default();
            if user_name.trim().is_empty() {
                return Err(ScimError::invalid_value("userName is required"));
            }
            if crate::matching::match_email(doc).is_none() {
                return Err(ScimError::invalid_value(format!(
                    "userName {user_name:?} is not an email address and the user has no email address: \
                     one of them is needed to match the user to an account downstream"
                )));
            }
        }
        Kind::Group => {
            let name = doc.get("displayName").and_then(Value::as_str).unwrap_or_default();
            if name.trim().is_empty() {
                return Err(ScimError::invalid_value("displayName is required for a group"));
            }
        }
    }
    Ok(())
}
