//! Lists: `GET /Users`, `GET /Groups` with query parameters, and `POST …/.search` with a SearchRequest body
//! (RFC 7644 §3.4.2, §3.4.3), which answer alike. A search at the root covers users, then groups.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::error::internal;
use super::render::render_text;
use super::resources::{QueryParams, quote, read_json};
use super::{AppState, Ctx, base_url, param, scim_text};
use crate::scim::check_filter;
use crate::scim::error::{ScimError, Status};
use crate::scim::filter::{self, Filter};
use crate::scim::projection::Projection;
use crate::scim::schema::Kind;
use crate::staging::ListQuery;
use crate::staging::query::Sort;

pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// The parameters of a list, from a query string or a SearchRequest body.
#[derive(Debug, Default)]
pub(super) struct ListRequest {
    filter: Option<String>,
    attributes: Option<String>,
    excluded: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    start: Option<i64>,
    count: Option<i64>,
}

fn integer(name: &str, v: &str) -> Result<i64, ScimError> {
    v.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("{name} must be an integer, got {v:?}")))
}

impl ListRequest {
    fn from_query(q: &[(String, String)]) -> Result<ListRequest, ScimError> {
        let text = |name: &str| param(q, name).map(str::to_owned);
        Ok(ListRequest {
            filter: text("filter"),
            attributes: text("attributes"),
            excluded: text("excludedAttributes"),
            sort_by: text("sortBy"),
            sort_order: text("sortOrder"),
            start: param(q, "startIndex").map(|v| integer("startIndex", v)).transpose()?,
            count: param(q, "count").map(|v| integer("count", v)).transpose()?,
        })
    }

    /// A SearchRequest body. Names are matched case-insensitively, as everywhere in SCIM; a field this
    /// service does not know is refused, so that a misspelled `filter` never returns everything.
    fn from_body(body: &Value) -> Result<ListRequest, ScimError> {
        let Value::Object(obj) = body else {
            return Err(ScimError::invalid_syntax("a SearchRequest body must be a JSON object"));
        };
        let mut r = ListRequest::default();
        for (k, v) in obj {
            let list = |v: &Value| -> Result<String, ScimError> {
                match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.join(","))
                        .ok_or_else(|| ScimError::invalid_value(format!("{k} must be a list of attribute names"))),
                    _ => Err(ScimError::invalid_value(format!("{k} must be a list of attribute names"))),
                }
            };
            let text = |v: &Value| -> Result<String, ScimError> {
                v.as_str().map(str::to_owned).ok_or_else(|| ScimError::invalid_value(format!("{k} must be a string")))
            };
            let number = |v: &Value| -> Result<i64, ScimError> {
                match v {
                    Value::Number(n) => {
                        n.as_i64().ok_or_else(|| ScimError::invalid_value(format!("{k} must be an integer")))
                    }
                    Value::String(s) => integer(k, s),
                    _ => Err(ScimError::invalid_value(format!("{k} must be an integer"))),
                }
            };
            match k.to_ascii_lowercase().as_str() {
                "schemas" => {
                    let ok = v.as_array().is_some_and(|s| {
                        s.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(SEARCH_REQUEST)))
                    });
                    if !ok {
                        return Err(ScimError::invalid_syntax(format!(
                            "a search body must list the schema {SEARCH_REQUEST}"
                        )));
                    }
                }
                "filter" => r.filter = Some(text(v)?),
                "attributes" => r.attributes = Some(list(v)?),
                "excludedattributes" => r.excluded = Some(list(v)?),
                "sortby" => r.sort_by = Some(text(v)?),
                "sortorder" => r.sort_order = Some(text(v)?),
                "startindex" => r.start = Some(number(v)?),
                "count" => r.count = Some(number(v)?),
                _ => return Err(ScimError::invalid_syntax(format!("unknown field {k:?} in the SearchRequest"))),
            }
        }
        Ok(r)
    }

    fn filter(&self) -> Result<Option<Filter>, ScimError> {
        match self.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            None => Ok(None),
            Some(text) => filter::parse_filter(text)
                .map(Some)
                .map_err(|e| ScimError::invalid_filter(format!("invalid filter {}: {e}", quote(text)))),
        }
    }

    fn descending(&self) -> Result<bool, ScimError> {
        match self.sort_order.as_deref().map(str::trim) {
            None | Some("") => Ok(false),
            Some(o) if o.eq_ignore_ascii_case("ascending") => Ok(false),
            Some(o) if o.eq_ignore_ascii_case("descending") => Ok(true),
            Some(o) => {
                Err(ScimError::invalid_value(format!("sortOrder must be \"ascending\" or \"descending\", got {o:?}")))
            }
        }
    }

    fn sort(&self, kind: Kind) -> Result<Sort, ScimError> {
        let descending = self.descending()?;
        let Some(by) = self.sort_by.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Sort { descending, ..Sort::DEFAULT });
        };
        let (schema, name, sub) = crate::scim::schema::split_key(by);
        crate::scim::schema::resolve(kind, schema, name, sub)
            .map_err(|e| ScimError::invalid_value(format!("sortBy: {e}")))?;
        Sort::by(kind, by, descending).ok_or_else(|| {
            ScimError::new(
                Status::NotImplemented,
                None,
                format!(
                    "sorting by {by:?} is not supported; sort by userName, displayName, externalId, meta.created or meta.lastModified"
                ),
            )
        })
    }

    /// The page window: RFC 7644 §3.4.2.4 reads startIndex below 1 as 1 and a negative count as 0.
    fn window(&self, state: &AppState) -> (usize, usize) {
        let s = &state.settings();
        let start = self.start.unwrap_or(1).max(1) as usize;
        let count = self.count.map(|c| c.max(0) as usize).unwrap_or(s.default_page_size).min(s.max_page_size);
        (start, count)
    }
}

/// One resource type's part of a list: its query and projection.
struct Part {
    kind: Kind,
    query: ListQuery,
    projection: Projection,
}

fn part(kind: Kind, r: &ListRequest, filter: Option<Filter>, start: usize, count: usize) -> Result<Part, ScimError> {
    if let Some(f) = &filter {
        check_filter(kind, f)?;
    }
    let projection = Projection::parse(kind, r.attributes.as_deref(), r.excluded.as_deref())?;
    let with_members = kind == Kind::Group && projection.wants("members");
    // Without a projection the bodies are sent as stored, spliced rather than parsed and written again.
    let raw = projection.is_empty();
    Ok(Part { kind, query: ListQuery { filter, sort: r.sort(kind)?, start, count, with_members, raw }, projection })
}

/// The ListResponse, its resources already written as JSON.
fn list_response(total: usize, start: usize, resources: Vec<String>) -> Response {
    let mut body = format!(
        "{{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse\"],\"totalResults\":{total},\"startIndex\":{start},\"itemsPerPage\":{},\"Resources\":[",
        resources.len()
    );
    body.push_str(&resources.join(","));
    body.push_str("]}");
    scim_text(StatusCode::OK, body)
}

/// Runs a list over one resource type, or over several (a search at the root: each type in turn, users
/// first, paged as one list).
async fn run(
    state: &AppState,
    ctx: &Ctx,
    kinds: &[Kind],
    r: ListRequest,
    headers: &HeaderMap,
) -> Result<Response, ScimError> {
    let filter = r.filter()?;
    let (start, count) = r.window(state);
    if kinds.len() > 1 && r.sort_by.is_some() {
        return Err(ScimError::new(
            Status::NotImplemented,
            None,
            "sorting a search across resource types is not supported; search /Users/.search or /Groups/.search",
        ));
    }
    // At the root a filter naming an attribute of one type only applies to that type.
    let mut parts = Vec::new();
    let mut first_error = None;
    for &kind in kinds {
        match part(kind, &r, filter.clone(), start, count) {
            Ok(p) => parts.push(p),
            Err(e) if kinds.len() > 1 && e.status == Status::BadRequest => first_error = first_error.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    if parts.is_empty() {
        return Err(first_error.unwrap_or_else(ScimError::internal));
    }
    let base = base_url(&state.settings(), headers);
    let _turn = state.lists.acquire().await.map_err(|_| ScimError::internal())?;
    let mut total = 0usize;
    let mut resources: Vec<String> = Vec::new();
    // Position in the combined list where this type's rows begin.
    let mut offset = 0usize;
    for mut p in parts {
        // Rows before `start` are skipped in the first type that has them; a later type continues from its
        // first row.
        p.query.start = (start - 1).saturating_sub(offset) + 1;
        p.query.count = count - resources.len();
        let page =
            state.staging.list(ctx.tenant.id, p.kind, p.query).await.map_err(|e| internal(&ctx.request_id, e))?;
        total += page.total;
        offset += page.total;
        resources.extend(page.resources.iter().map(|s| {
            if p.projection.is_empty() {
                render_text(s, &base)
            } else {
                Value::Object(p.projection.apply(super::render::render(s, &base))).to_string()
            }
        }));
    }
    Ok(list_response(total, start, resources))
}

pub(super) async fn list(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
    kind: Kind,
) -> Result<Response, ScimError> {
    run(&state, &ctx, &[kind], ListRequest::from_query(&q)?, &headers).await
}

/// `POST /Users/.search`, `/Groups/.search`, and `/.search` (both types).
pub(super) async fn search(
    state: AppState,
    ctx: Ctx,
    headers: HeaderMap,
    body: axum::body::Body,
    kinds: &[Kind],
) -> Result<Response, ScimError> {
    let body = read_json(&headers, body, &state.settings(), &state).await?;
    run(&state, &ctx, kinds, ListRequest::from_body(&body)?, &headers).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn search_bodies() {
        let r = ListRequest::from_body(&json!({
            "schemas": [SEARCH_REQUEST],
            "filter": "userName sw \"a\"", "attributes": ["userName", "emails"], "startIndex": 3, "count": "5",
            "sortBy": "userName", "sortOrder": "descending",
        }))
        .unwrap();
        assert_eq!(r.attributes.as_deref(), Some("userName,emails"));
        assert_eq!((r.start, r.count), (Some(3), Some(5)));
        assert!(r.descending().unwrap());
        let e = ListRequest::from_body(&json!({"filtr": "x"})).unwrap_err();
        assert!(e.detail.contains("filtr"), "{e}");
        let e = ListRequest::from_body(&json!({"schemas": ["urn:x"]})).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidSyntax));
    }

    #[test]
    fn sort_parameters() {
        let r = |by: &str, order: Option<&str>| ListRequest {
            sort_by: Some(by.into()),
            sort_order: order.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            r("userName", None).sort(Kind::User).unwrap(),
            Sort { key: crate::staging::query::SortKey::Name, descending: false }
        );
        assert!(r("meta.lastModified", Some("Descending")).sort(Kind::Group).unwrap().descending);
        assert_eq!(r("title", None).sort(Kind::User).unwrap_err().status, Status::NotImplemented);
        assert_eq!(r("shoeSize", None).sort(Kind::User).unwrap_err().status, Status::BadRequest);
        assert_eq!(r("userName", Some("upwards")).sort(Kind::User).unwrap_err().status, Status::BadRequest);
    }
}
