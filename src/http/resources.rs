//! The `Users` and `Groups` endpoints: parse and validate, hand changes to staging, and answer only once
//! staging has committed them (contract point 1).

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Map, Value};

use super::error::internal;
use super::render::render;
use super::{AppState, Ctx, ScimSettings, base_url, param, scim_response, with_etag};
use crate::scim::error::{ScimError, Status};
use crate::scim::filter;
use crate::scim::projection::Projection;
use crate::scim::schema::{self, Kind};
use crate::scim::{SCIM_CONTENT_TYPE, patch, validate};
use crate::staging::{Change, Committed, Stored};

pub(super) fn collection(kind: Kind) -> MethodRouter<AppState> {
    get(move |s: State<AppState>, c: axum::Extension<Ctx>, q: QueryParams, h: HeaderMap| {
        super::search::list(s, c, q, h, kind)
    })
    .post(move |s: State<AppState>, c: axum::Extension<Ctx>, q: QueryParams, h: HeaderMap, b: Body| {
        create(s, c, q, h, b, kind)
    })
    .fallback(|| async { ScimError::method_not_allowed("use GET or POST on a resource collection") })
}

pub(super) fn item(kind: Kind) -> MethodRouter<AppState> {
    get(move |s: State<AppState>, c: axum::Extension<Ctx>, p: Path<String>, q: QueryParams, h: HeaderMap| {
        get_one(s, c, p, q, h, kind)
    })
    .put(move |s: State<AppState>, c: axum::Extension<Ctx>, p: Path<String>, q: QueryParams, h: HeaderMap, b: Body| {
        replace(s, c, p, q, h, b, kind)
    })
    .patch(
        move |s: State<AppState>, c: axum::Extension<Ctx>, p: Path<String>, q: QueryParams, h: HeaderMap, b: Body| {
            patch_one(s, c, p, q, h, b, kind)
        },
    )
    .delete(move |s: State<AppState>, c: axum::Extension<Ctx>, p: Path<String>, h: HeaderMap| delete(s, c, p, h, kind))
    .fallback(|| async { ScimError::method_not_allowed("use GET, PUT, PATCH or DELETE on a resource") })
}

/// The query string's parameters, percent-decoded strictly: a value that is not UTF-8 once decoded is a
/// 400 naming the parameter (`invalidFilter` for a filter), never a silently mangled search.
pub(super) struct QueryParams(pub(super) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ScimError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(QueryParams)
    }
}

fn decode(s: &str) -> Result<String, std::str::Utf8Error> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8().map(|c| c.into_owned())
}

fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ScimError> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k).map_err(|_| ScimError::invalid_value("a query parameter name is not valid UTF-8"))?;
        let value = decode(v).map_err(|_| {
            let detail = format!("the {name} parameter is not valid UTF-8 after percent-decoding");
            if name.eq_ignore_ascii_case("filter") {
                ScimError::invalid_filter(detail)
            } else {
                ScimError::invalid_value(detail)
            }
        })?;
        out.push((name, value));
    }
    Ok(out)
}

/// A client's text quoted in an error, cut to a readable length: the client sent it and has it whole.
pub(super) fn quote(text: &str) -> String {
    const MOST: usize = 200;
    match text.char_indices().nth(MOST) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters)", &text[..cut], text.chars().count()),
    }
}

/// Reads a JSON body within the size limit. `application/scim+json` and `application/json` are accepted
/// (Okta sends the latter); a missing content type is tolerated.
pub(super) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    settings: &ScimSettings,
    state: &AppState,
) -> Result<Value, ScimError> {
    let limit = settings.max_body_bytes;
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime != SCIM_CONTENT_TYPE && mime != "application/json" {
            return Err(ScimError::new(
                Status::UnsupportedMediaType,
                None,
                format!("content type {mime:?} is not supported; send application/scim+json"),
            ));
        }
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ScimError::payload_too_large(limit));
    }
    // Large bodies are read a few at a time: a burst of near-limit bodies at high concurrency would
    // otherwise hold (and leave the allocator holding) concurrency x max_body_bytes. The wait counts
    // against the body timeout.
    let large = declared.is_none_or(|n| n > LARGE_BODY);
    let read_body = async {
        let _permit = if large { state.large_bodies.acquire().await.ok() } else { None };
        let bytes = axum::body::to_bytes(body, limit).await;
        bytes.map(|b| serde_json::from_slice::<Value>(&b))
    };
    // A body still arriving when shutdown begins is cut short: a slow upload must not hold the shutdown
    // for the whole grace period, and nothing of it has been stored.
    let mut stopping = state.stopping.subscribe();
    let read = tokio::select! {
        read = tokio::time::timeout(settings.body_timeout, read_body) => read.map_err(|_| {
            ScimError::new(
                Status::RequestTimeout,
                None,
                format!("the request body did not arrive within {} s", settings.body_timeout.as_secs()),
            )
        })?,
        _ = stopping.wait_for(|s| *s) => {
            return Err(ScimError::unavailable("the service is shutting down; the change was not stored, retry later"));
        }
    };
    let parsed = read.map_err(|e| {
        let inner = e.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ScimError::payload_too_large(limit);
            }
            source = s.source();
        }
        ScimError::invalid_syntax(format!("the request body could not be read: {inner}"))
    })?;
    parsed.map_err(|e| ScimError::invalid_syntax(format!("malformed JSON: {e}")))
}

/// Bodies above this size are read a few at a time (`AppState::large_bodies`).
const LARGE_BODY: usize = 64 * 1024;

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn projection(kind: Kind, q: &[(String, String)]) -> Result<Projection, ScimError> {
    Projection::parse(kind, param(q, "attributes"), param(q, "excludedAttributes"))
}

fn respond(
    status: StatusCode,
    stored: &Stored,
    projection: &Projection,
    headers: &HeaderMap,
    settings: &ScimSettings,
) -> Result<Response, ScimError> {
    let base = base_url(settings, headers);
    let body = projection.apply(render(stored, &base));
    let location = format!("{base}/{}/{}", stored.kind.endpoint(), stored.id);
    let mut resp = with_etag(scim_response(status, Some(Value::Object(body))), stored.version);
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Stages a change, answering only once it is committed, and logs it: one INFO line per staged change.
async fn stage(state: &AppState, ctx: &Ctx, change: Change) -> Result<Committed, ScimError> {
    let (kind, op) = (change.kind(), change.op());
    let named = match &change {
        Change::Replace { id, .. } | Change::Patch { id, .. } | Change::Delete { id, .. } => Some(id.clone()),
        Change::Create { .. } => None,
    };
    let committed = state
        .staging
        .write(ctx.tenant.id, &ctx.request_id, ctx.rules, change)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    let id = committed.resource.as_ref().map(|r| r.id.clone()).or(named).unwrap_or_default();
    match committed.seq {
        Some(seq) => tracing::info!(
            tenant = %ctx.tenant.name,
            request_id = %ctx.request_id,
            resource = kind.as_str(),
            resource_id = %id,
            change_seq = seq.0,
            op = op.as_str(),
            "change staged"
        ),
        None => tracing::info!(
            tenant = %ctx.tenant.name,
            request_id = %ctx.request_id,
            resource = kind.as_str(),
            resource_id = %id,
            op = op.as_str(),
            "request changed nothing; nothing staged"
        ),
    }
    Ok(committed)
}

fn normalized(kind: Kind, body: &Value, rules: crate::scim::Rules) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(doc) = schema::normalize_resource(kind, body, rules.strict)? else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    validate(kind, &doc, rules)?;
    Ok(doc)
}

pub(super) async fn create(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings();
    // Everything that can refuse the request is checked before the change is committed.
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings, &state).await?;
    let doc = normalized(kind, &body, ctx.rules)?;
    let stored = stage(&state, &ctx, Change::Create { kind, doc }).await?.resource.ok_or_else(ScimError::internal)?;
    respond(StatusCode::CREATED, &stored, &projection, &headers, settings)
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
    kind: Kind,
) -> Result<Response, ScimError> {
    let projection = projection(kind, &q)?;
    let with_members = kind == Kind::Group && projection.wants("members");
    let stored = state
        .staging
        .get(ctx.tenant.id, kind, id.clone(), with_members)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?
        .ok_or_else(|| ScimError::not_found(kind.as_str(), &id))?;
    respond(StatusCode::OK, &stored, &projection, &headers, &state.settings())
}

pub(super) async fn replace(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings();
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings, &state).await?;
    if let Some(body_id) = filter::get_ci(&body, "id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ScimError::mutability(format!("the body's id {body_id:?} differs from the URL's {id:?}")));
    }
    let doc = normalized(kind, &body, ctx.rules)?;
    let change = Change::Replace { kind, id, doc, if_match: if_match(&headers) };
    let stored = stage(&state, &ctx, change).await?.resource.ok_or_else(ScimError::internal)?;
    respond(StatusCode::OK, &stored, &projection, &headers, settings)
}

pub(super) async fn patch_one(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings();
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings, &state).await?;
    let ops = patch::parse_request(&body)?;
    let change = Change::Patch { kind, id, ops, if_match: if_match(&headers) };
    let stored = stage(&state, &ctx, change).await?.resource.ok_or_else(ScimError::internal)?;
    match kind {
        // RFC 7644 §3.5.2 allows 204; a group's full member list can be large, and neither Entra nor Okta
        // reads it back from a PATCH answer.
        Kind::Group => Ok(with_etag(scim_response(StatusCode::NO_CONTENT, None), stored.version)),
        Kind::User => respond(StatusCode::OK, &stored, &projection, &headers, settings),
    }
}

pub(super) async fn delete(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    kind: Kind,
) -> Result<Response, ScimError> {
    stage(&state, &ctx, Change::Delete { kind, id, if_match: if_match(&headers) }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_strictly() {
        assert_eq!(
            parse_query("filter=userName+eq+%22a%40x.com%22&count=2").unwrap(),
            [("filter".to_owned(), "userName eq \"a@x.com\"".to_owned()), ("count".to_owned(), "2".to_owned())]
        );
        let e = parse_query("filter=userName%20eq%20%22%FF%FE%22").unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidFilter), "{e}");
        let e = parse_query("attributes=%C3").unwrap_err();
        assert!(e.detail.contains("attributes"), "{e}");
    }

    #[test]
    fn long_quotes_are_cut() {
        assert_eq!(quote("ab"), "\"ab\"");
        let long = "é".repeat(30_000);
        let q = quote(&long);
        assert!(q.len() < 600 && q.ends_with("(30000 characters)"), "{q}");
    }
}
