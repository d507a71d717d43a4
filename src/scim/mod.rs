//! The SCIM 2.0 protocol model (RFC 7643/7644), without HTTP: resource schemas, filters, PATCH, projection,
//! validation and error kinds. The bottom of the pipeline: staging and the HTTP layer build on it.

pub mod error;
pub mod filter;
pub mod patch;
pub mod projection;
pub mod schema;

use serde_json::{Map, Value};

use error::ScimError;
use filter::Filter;
use schema::Kind;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// What a tenant's requests are held to, beyond RFC 7643's minimum. It depends on the targets the tenant
/// is bound to (contract point 2: a target's own needs count only for the tenants bound to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Refuse unknown attributes, and references (group members, manager) to ids that are not resources
    /// of the tenant, instead of ignoring or keeping them aside.
    pub strict: bool,
    /// A user needs a match email (a userName that is an address, or an email): a target bound to the tenant
    /// links existing accounts by email (Tribe CRM's rule).
    pub require_match_email: bool,
}

/// The longest userName, displayName, externalId or email address accepted (Entra ID and Active
/// Directory stop at a few hundred characters).
pub const MAX_IDENTIFIER_CHARS: usize = 2048;

/// Checks what can be known about a resource at request time (contract point 2), so that a bad request is
/// answered with a 400 the IdP shows in its provisioning log instead of failing later downstream.
///
/// # Errors
/// `invalidValue` naming the missing or unusable attribute.
pub fn validate(kind: Kind, doc: &Map<String, Value>, rules: Rules) -> Result<(), ScimError> {
    // The identifying attributes are indexed in staging (and usually downstream): a value far beyond any
    // directory's limit is refused rather than stored as a megabyte index key.
    for attr in ["userName", "displayName", "externalId"] {
        if let Some(v) = doc.get(attr).and_then(Value::as_str)
            && v.chars().count() > MAX_IDENTIFIER_CHARS
        {
            return Err(ScimError::invalid_value(format!(
                "{attr} is {} characters long; at most {MAX_IDENTIFIER_CHARS} are accepted",
                v.chars().count()
            )));
        }
    }
    if let Some(emails) = doc.get("emails").and_then(Value::as_array)
        && emails
            .iter()
            .filter_map(|e| e.get("value").and_then(Value::as_str))
            .any(|v| v.chars().count() > MAX_IDENTIFIER_CHARS)
    {
        return Err(ScimError::invalid_value(format!(
            "an emails value is longer than {MAX_IDENTIFIER_CHARS} characters"
        )));
    }
    match kind {
        Kind::User => {
            let user_name = doc.get("userName").and_then(Value::as_str).unwrap_or_default();
            if user_name.trim().is_empty() {
                return Err(ScimError::invalid_value("userName is required"));
            }
            if rules.require_match_email && crate::matching::match_email(doc).is_none() {
                return Err(ScimError::invalid_value(format!(
                    "userName {user_name:?} is not an email address and the user has no email address: \
                     this tenant's target links accounts by email, so one of them is needed"
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

/// Every attribute a filter names must exist, so that a typo is a clear 400 rather than an empty result.
///
/// # Errors
/// `invalidFilter` naming the unknown attribute.
pub fn check_filter(kind: Kind, f: &Filter) -> Result<(), ScimError> {
    let check = |p: &filter::AttrPath, sub: Option<&str>| {
        schema::resolve(kind, p.schema.as_deref(), &p.attr, sub.or(p.sub.as_deref()))
            .map(|_| ())
            .map_err(|e| ScimError::invalid_filter(e.to_string()))
    };
    match f {
        Filter::And(l, r) | Filter::Or(l, r) => {
            check_filter(kind, l)?;
            check_filter(kind, r)
        }
        Filter::Not(x) => check_filter(kind, x),
        Filter::Present(p) | Filter::Compare(p, _, _) => check(p, None),
        Filter::ValuePath { path, filter: inner, then } => {
            check(path, None)?;
            for part in [Some(inner.as_ref()), then.as_deref()].into_iter().flatten() {
                check_sub(kind, path, part)?;
            }
            Ok(())
        }
    }
}

fn check_sub(kind: Kind, parent: &filter::AttrPath, f: &Filter) -> Result<(), ScimError> {
    match f {
        Filter::And(l, r) | Filter::Or(l, r) => {
            check_sub(kind, parent, l)?;
            check_sub(kind, parent, r)
        }
        Filter::Not(x) => check_sub(kind, parent, x),
        Filter::Present(p) | Filter::Compare(p, _, _) => {
            schema::resolve(kind, parent.schema.as_deref(), &parent.attr, Some(&p.attr))
                .map(|_| ())
                .map_err(|e| ScimError::invalid_filter(e.to_string()))
        }
        Filter::ValuePath { .. } => Err(ScimError::invalid_filter("value filters cannot be nested")),
    }
}
