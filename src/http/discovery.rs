//! The read-only discovery endpoints (RFC 7644 §4): ServiceProviderConfig, ResourceTypes, Schemas.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, Ctx, base_url, scim_response};
use crate::scim::Rules;
use crate::scim::error::ScimError;
use crate::scim::schema::{self, Kind};

pub(super) async fn service_provider_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state.settings(), &headers);
    scim_response(
        StatusCode::OK,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": state.settings().max_page_size},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A per-tenant bearer token issued with `scim-bridge token <tenant>`.",
                "primary": true,
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
        })),
    )
}

fn resource_type_json(kind: Kind, base: &str) -> Value {
    let extensions: Vec<Value> =
        kind.extensions().iter().map(|(urn, _)| json!({"schema": urn, "required": false})).collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": kind.as_str(),
        "name": kind.as_str(),
        "endpoint": format!("/{}", kind.endpoint()),
        "schema": kind.core_schema(),
        "schemaExtensions": extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", kind.as_str())},
    })
}

fn list_of(items: Vec<Value>) -> Response {
    scim_response(
        StatusCode::OK,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": items.len(),
            "startIndex": 1,
            "itemsPerPage": items.len(),
            "Resources": items,
        })),
    )
}

pub(super) async fn resource_types(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state.settings(), &headers);
    list_of([Kind::User, Kind::Group].iter().map(|k| resource_type_json(*k, &base)).collect())
}

pub(super) async fn resource_type(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let base = base_url(&state.settings(), &headers);
    match [Kind::User, Kind::Group].into_iter().find(|k| k.as_str().eq_ignore_ascii_case(&name)) {
        Some(k) => scim_response(StatusCode::OK, Some(resource_type_json(k, &base))),
        None => ScimError::not_found("ResourceType", &name).into_response(),
    }
}

/// What a user needs when the tenant's target links accounts by email, said where a client looks.
const MATCH_EMAIL_RULE: &str = "This tenant's target links existing accounts by email: a user needs a userName that is an \
email address, or at least one email address (the primary, else the work one, else the first is used).";

fn all_schemas(base: &str, rules: Rules) -> Vec<Value> {
    let loc = |id: &str| format!("{base}/Schemas/{id}");
    let mut user =
        schema::schema_json(schema::USER_SCHEMA, "User", "User Account", schema::USER_ATTRS, &loc(schema::USER_SCHEMA));
    if rules.require_match_email {
        // The rule is "one of two", which `required` cannot say: both attributes describe it.
        if let Some(attrs) = user["attributes"].as_array_mut() {
            for a in attrs.iter_mut().filter(|a| a["name"] == "userName" || a["name"] == "emails") {
                let d = a["description"].as_str().unwrap_or_default().to_owned();
                a["description"] = Value::String(format!("{d} {MATCH_EMAIL_RULE}"));
            }
        }
        user["description"] = Value::String(format!("User Account. {MATCH_EMAIL_RULE}"));
    }
    vec![
        user,
        schema::schema_json(
            schema::ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            schema::ENTERPRISE_ATTRS,
            &loc(schema::ENTERPRISE_SCHEMA),
        ),
        schema::schema_json(schema::GROUP_SCHEMA, "Group", "Group", schema::GROUP_ATTRS, &loc(schema::GROUP_SCHEMA)),
    ]
}

pub(super) async fn schemas(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    headers: HeaderMap,
) -> Response {
    list_of(all_schemas(&base_url(&state.settings(), &headers), ctx.rules))
}

pub(super) async fn schema_by_id(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let all = all_schemas(&base_url(&state.settings(), &headers), ctx.rules);
    match all.into_iter().find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id))) {
        Some(s) => scim_response(StatusCode::OK, Some(s)),
        None => ScimError::not_found("Schema", &id).into_response(),
    }
}
