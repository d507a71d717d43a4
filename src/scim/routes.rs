//! The HTTP surface: `Users`, `Groups`, and the read-only discovery endpoints under the base path, behind
//! bearer-token authentication. Handlers parse and validate, hand changes to staging and answer only once
//! staging has committed them.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::filter::{self, Filter};
use super::render::{Projection, etag, render};
use super::schema::{self, Kind};
use super::{SCIM_CONTENT_TYPE, patch, validate};
use crate::staging::{Change, Staging, StagingError, Stored, Tenant};

/// Settings of the SCIM endpoint.
#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Path prefix of every SCIM endpoint, e.g. `/scim/v2`.
    pub base_path: String,
    /// Requests with larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Refuse unknown attributes instead of ignoring them.
    pub strict: bool,
    /// Page size when a list request gives no `count`.
    pub default_page_size: usize,
    /// Largest page served (`ServiceProviderConfig.filter.maxResults`).
    pub max_page_size: usize,
    /// Absolute base URL for `meta.location` and `Location`; derived from the Host header when unset.
    pub public_url: Option<String>,
}

impl Default for ScimSettings {
    fn default() -> Self {
        ScimSettings {
            base_path: "/scim/v2".into(),
            max_body_bytes: 1024 * 1024,
            strict: false,
            default_page_size: 100,
            max_page_size: 1000,
            public_url: None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    staging: Staging,
    settings: Arc<ScimSettings>,
}

/// Per-request context set by the authentication layer.
#[derive(Clone)]
struct Ctx {
    tenant: Tenant,
    request_id: String,
}

/// The router: `/healthz` (no authentication) and the SCIM endpoints under the base path.
pub fn router(staging: Staging, settings: ScimSettings) -> Router {
    let base = settings.base_path.trim_end_matches('/').to_owned();
    let state = AppState { staging, settings: Arc::new(settings) };
    let scim = Router::new()
        .route("/Users", collection(Kind::User))
        .route("/Users/{id}", item(Kind::User))
        .route("/Groups", collection(Kind::Group))
        .route("/Groups/{id}", item(Kind::Group))
        .route("/ServiceProviderConfig", read_only(get(service_provider_config)))
        .route("/ResourceTypes", read_only(get(resource_types)))
        .route("/ResourceTypes/{name}", read_only(get(resource_type)))
        .route("/Schemas", read_only(get(schemas)))
        .route("/Schemas/{id}", read_only(get(schema_by_id)))
        .fallback(|| async { ScimError::new(StatusCode::NOT_FOUND, None, "no such SCIM endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state);
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let app = if base.is_empty() { app.merge(scim) } else { app.nest(&base, scim) };
    // The body limit is enforced while reading, so that the 413 carries a SCIM error body.
    app.layer(DefaultBodyLimit::disable())
}

fn collection(kind: Kind) -> MethodRouter<AppState> {
    get(move |s: State<AppState>, c: axum::Extension<Ctx>, q: Query<Vec<(String, String)>>, h: HeaderMap| {
        list(s, c, q, h, kind)
    })
    .post(move |s: State<AppState>, c: axum::Extension<Ctx>, q: Query<Vec<(String, String)>>, h: HeaderMap, b: Body| {
        create(s, c, q, h, b, kind)
    })
    .fallback(|| async { ScimError::method_not_allowed("use GET or POST on a resource collection") })
}

fn item(kind: Kind) -> MethodRouter<AppState> {
    get(
        move |s: State<AppState>,
              c: axum::Extension<Ctx>,
              p: Path<String>,
              q: Query<Vec<(String, String)>>,
              h: HeaderMap| { get_one(s, c, p, q, h, kind) },
    )
    .put(
        move |s: State<AppState>,
              c: axum::Extension<Ctx>,
              p: Path<String>,
              q: Query<Vec<(String, String)>>,
              h: HeaderMap,
              b: Body| { replace(s, c, p, q, h, b, kind) },
    )
    .patch(
        move |s: State<AppState>,
              c: axum::Extension<Ctx>,
              p: Path<String>,
              q: Query<Vec<(String, String)>>,
              h: HeaderMap,
              b: Body| { patch_one(s, c, p, q, h, b, kind) },
    )
    .delete(move |s: State<AppState>, c: axum::Extension<Ctx>, p: Path<String>, h: HeaderMap| delete(s, c, p, h, kind))
    .fallback(|| async { ScimError::method_not_allowed("use GET, PUT, PATCH or DELETE on a resource") })
}

fn read_only(r: MethodRouter<AppState>) -> MethodRouter<AppState> {
    r.fallback(|| async { ScimError::method_not_allowed("this endpoint is read-only") })
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token else {
        return ScimError::unauthorized("a bearer token is required (Authorization: Bearer <token>)").into_response();
    };
    let tenant = match state.staging.authenticate(&token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            // Never log the presented token: it may be a real token of another system.
            tracing::warn!(path = %req.uri().path(), "request refused: unknown bearer token");
            return ScimError::unauthorized("the bearer token is not valid").into_response();
        }
        Err(e) => return internal(&request_id, e).into_response(),
    };
    tracing::debug!(tenant = %tenant.name, request_id, method = %req.method(), path = %req.uri().path(), "request");
    req.extensions_mut().insert(Ctx { tenant, request_id: request_id.clone() });
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn internal(request_id: &str, e: StagingError) -> ScimError {
    match e {
        StagingError::Rejected(e) => e,
        StagingError::Closed => ScimError::unavailable(),
        other => {
            tracing::error!(request_id, error = %other, "staging failed");
            ScimError::internal()
        }
    }
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn base_url(settings: &ScimSettings, headers: &HeaderMap) -> String {
    if let Some(u) = &settings.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}{}", settings.base_path.trim_end_matches('/'))
}

fn scim_response(status: StatusCode, body: Option<Value>) -> Response {
    let mut resp = match body {
        Some(b) => (status, b.to_string()).into_response(),
        None => status.into_response(),
    };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    resp
}

fn with_etag(mut resp: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Reads a JSON body within the size limit. `application/scim+json` and `application/json` are accepted
/// (Okta sends the latter); a missing content type is tolerated.
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime != SCIM_CONTENT_TYPE && mime != "application/json" {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
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
    serde_json::from_slice(&bytes).map_err(|e| ScimError::invalid_syntax(format!("malformed JSON: {e}")))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Every attribute a filter names must exist, so that a typo is a clear 400 rather than an empty result.
fn check_filter(kind: Kind, f: &Filter) -> Result<(), ScimError> {
    let check = |p: &filter::AttrPath, sub: Option<&str>| {
        schema::resolve(kind, p.schema.as_deref(), &p.attr, sub.or(p.sub.as_deref()))
            .map(|_| ())
            .map_err(|e| ScimError::invalid_filter(e.detail))
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
                .map_err(|e| ScimError::invalid_filter(e.detail))
        }
        Filter::ValuePath { .. } => Err(ScimError::invalid_filter("value filters cannot be nested")),
    }
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings;
    let filter = match param(&q, "filter").map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(text) => {
            let f = filter::parse_filter(text)
                .map_err(|e| ScimError::invalid_filter(format!("invalid filter {text:?}: {e}")))?;
            check_filter(kind, &f)?;
            Some(f)
        }
    };
    let number = |name: &str| -> Result<Option<i64>, ScimError> {
        param(&q, name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer, got {v:?}")))
            })
            .transpose()
    };
    // RFC 7644 §3.4.2.4: startIndex below 1 is read as 1, a negative count as 0.
    let start = number("startIndex")?.unwrap_or(1).max(1) as usize;
    let count =
        number("count")?.map(|c| c.max(0) as usize).unwrap_or(settings.default_page_size).min(settings.max_page_size);
    let projection = projection(kind, &q)?;
    let with_members = kind == Kind::Group && projection.wants("members");
    let page = state
        .staging
        .list(ctx.tenant.id, kind, filter, start, count, with_members)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    let base = base_url(settings, &headers);
    let resources: Vec<Value> =
        page.resources.iter().map(|s| Value::Object(projection.apply(render(s, &base)))).collect();
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": page.total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    Ok(scim_response(StatusCode::OK, Some(body)))
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

fn log_staged(ctx: &Ctx, kind: Kind, op: &str, id: &str, seq: i64) {
    tracing::info!(
        tenant = %ctx.tenant.name,
        request_id = %ctx.request_id,
        resource = kind.as_str(),
        resource_id = %id,
        change_seq = seq,
        op,
        "change staged"
    );
}

fn normalized(kind: Kind, body: &Value, strict: bool) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(doc) = schema::normalize_resource(kind, body, strict)? else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    validate(kind, &doc)?;
    Ok(doc)
}

async fn create(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings;
    // Everything that can refuse the request is checked before the change is committed.
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings.max_body_bytes).await?;
    let doc = normalized(kind, &body, settings.strict)?;
    let committed = state
        .staging
        .write(ctx.tenant.id, &ctx.request_id, settings.strict, Change::Create { kind, doc })
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    let Some(stored) = committed.resource else { return Err(ScimError::internal()) };
    log_staged(&ctx, kind, "create", &stored.id, committed.seq.0);
    respond(StatusCode::CREATED, &stored, &projection, &headers, settings)
}

async fn get_one(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
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
    respond(StatusCode::OK, &stored, &projection, &headers, &state.settings)
}

async fn replace(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings;
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings.max_body_bytes).await?;
    if let Some(body_id) = filter::get_ci(&body, "id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ScimError::mutability(format!("the body's id {body_id:?} differs from the URL's {id:?}")));
    }
    let doc = normalized(kind, &body, settings.strict)?;
    let change = Change::Replace { kind, id, doc, if_match: if_match(&headers) };
    let committed = state
        .staging
        .write(ctx.tenant.id, &ctx.request_id, settings.strict, change)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    let Some(stored) = committed.resource else { return Err(ScimError::internal()) };
    log_staged(&ctx, kind, "replace", &stored.id, committed.seq.0);
    respond(StatusCode::OK, &stored, &projection, &headers, settings)
}

async fn patch_one(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ScimError> {
    let settings = &state.settings;
    let projection = projection(kind, &q)?;
    let body = read_json(&headers, body, settings.max_body_bytes).await?;
    let ops = patch::parse_request(&body)?;
    let change = Change::Patch { kind, id, ops, if_match: if_match(&headers) };
    let committed = state
        .staging
        .write(ctx.tenant.id, &ctx.request_id, settings.strict, change)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    let Some(stored) = committed.resource else { return Err(ScimError::internal()) };
    log_staged(&ctx, kind, "patch", &stored.id, committed.seq.0);
    match kind {
        // RFC 7644 §3.5.2 allows 204; a group's full member list can be large, and neither Entra nor Okta
        // reads it back from a PATCH answer.
        Kind::Group => Ok(with_etag(scim_response(StatusCode::NO_CONTENT, None), stored.version)),
        Kind::User => respond(StatusCode::OK, &stored, &projection, &headers, settings),
    }
}

async fn delete(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    kind: Kind,
) -> Result<Response, ScimError> {
    let change = Change::Delete { kind, id: id.clone(), if_match: if_match(&headers) };
    let committed = state
        .staging
        .write(ctx.tenant.id, &ctx.request_id, state.settings.strict, change)
        .await
        .map_err(|e| internal(&ctx.request_id, e))?;
    log_staged(&ctx, kind, "delete", &id, committed.seq.0);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn service_provider_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state.settings, &headers);
    scim_response(
        StatusCode::OK,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": state.settings.max_page_size},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
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

async fn resource_types(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state.settings, &headers);
    list_of([Kind::User, Kind::Group].iter().map(|k| resource_type_json(*k, &base)).collect())
}

async fn resource_type(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let base = base_url(&state.settings, &headers);
    match [Kind::User, Kind::Group].into_iter().find(|k| k.as_str().eq_ignore_ascii_case(&name)) {
        Some(k) => scim_response(StatusCode::OK, Some(resource_type_json(k, &base))),
        None => ScimError::not_found("ResourceType", &name).into_response(),
    }
}

fn all_schemas(base: &str) -> Vec<Value> {
    let loc = |id: &str| format!("{base}/Schemas/{id}");
    vec![
        schema::schema_json(schema::USER_SCHEMA, "User", "User Account", schema::USER_ATTRS, &loc(schema::USER_SCHEMA)),
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

async fn schemas(State(state): State<AppState>, headers: HeaderMap) -> Response {
    list_of(all_schemas(&base_url(&state.settings, &headers)))
}

async fn schema_by_id(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let all = all_schemas(&base_url(&state.settings, &headers));
    match all.into_iter().find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id))) {
        Some(s) => scim_response(StatusCode::OK, Some(s)),
        None => ScimError::not_found("Schema", &id).into_response(),
    }
}
