//! The HTTP layer (axum): the router, bearer-token authentication, the SCIM resource endpoints and the
//! discovery endpoints, rendering of staged resources, and RFC 7644 error responses. Top of the SCIM
//! pipeline: it talks to staging only, never to a target.

mod auth;
mod discovery;
mod error;
mod render;
mod resources;
mod search;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::scim::error::{ScimError, Status};
use crate::scim::schema::Kind;
use crate::scim::{Rules, SCIM_CONTENT_TYPE};
use crate::staging::{Staging, Tenant};

pub use self::render::{etag, render};

#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Path prefix of every SCIM endpoint, e.g. `/scim/v2`.
    pub base_path: String,
    /// Requests with larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// What each tenant's requests are held to (strictness, the match-email rule of its targets).
    pub rules: TenantRules,
    /// Page size when a list request gives no `count`.
    pub default_page_size: usize,
    /// Largest page served (`ServiceProviderConfig.filter.maxResults`).
    pub max_page_size: usize,
    /// Absolute base URL for `meta.location` and `Location`; derived from the Host header when unset.
    pub public_url: Option<String>,
}

impl From<&ServerConfig> for ScimSettings {
    fn from(s: &ServerConfig) -> Self {
        ScimSettings {
            base_path: s.base_path.clone(),
            max_body_bytes: s.max_body_bytes,
            rules: TenantRules {
                default: Rules { strict: s.strict, require_match_email: false },
                ..Default::default()
            },
            default_page_size: s.default_page_size,
            max_page_size: s.max_page_size,
            public_url: s.public_url.clone(),
        }
    }
}

impl Default for ScimSettings {
    fn default() -> Self {
        (&ServerConfig::default()).into()
    }
}

/// The rules of each tenant; a tenant not listed (no `[[tenant]]` block) gets the default.
#[derive(Debug, Clone, Default)]
pub struct TenantRules {
    pub default: Rules,
    pub tenants: std::collections::HashMap<String, Rules>,
}

impl TenantRules {
    pub fn of(&self, tenant: &str) -> Rules {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
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
    /// The tenant's rules.
    rules: Rules,
}

pub fn router(staging: Staging, settings: ScimSettings) -> Router {
    let base = settings.base_path.trim_end_matches('/').to_owned();
    let state = AppState { staging, settings: Arc::new(settings) };
    let scim = Router::new()
        .route("/Users", resources::collection(Kind::User))
        .route("/Users/.search", search_route(&[Kind::User]))
        .route("/Users/{id}", resources::item(Kind::User))
        .route("/Groups", resources::collection(Kind::Group))
        .route("/Groups/.search", search_route(&[Kind::Group]))
        .route("/Groups/{id}", resources::item(Kind::Group))
        .route("/.search", search_route(&[Kind::User, Kind::Group]))
        // Defined by RFC 7644 and not offered (ServiceProviderConfig says so): 501, never 404.
        .route("/Bulk", axum::routing::any(|| async { not_implemented("bulk operations are not supported") }))
        .route(
            "/Me",
            axum::routing::any(|| async {
                not_implemented("/Me is not supported: tokens belong to tenants, not users")
            }),
        )
        .route(
            "/Me/{*rest}",
            axum::routing::any(|| async {
                not_implemented("/Me is not supported: tokens belong to tenants, not users")
            }),
        )
        .route("/ServiceProviderConfig", read_only(get(discovery::service_provider_config)))
        .route("/ResourceTypes", read_only(get(discovery::resource_types)))
        .route("/ResourceTypes/{name}", read_only(get(discovery::resource_type)))
        .route("/Schemas", read_only(get(discovery::schemas)))
        .route("/Schemas/{id}", read_only(get(discovery::schema_by_id)))
        .fallback(|| async { ScimError::new(Status::NotFound, None, "no such SCIM endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state);
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let app = if base.is_empty() { app.merge(scim) } else { app.nest(&base, scim) };
    // The body limit is enforced while reading, so that the 413 carries a SCIM error body.
    app.layer(DefaultBodyLimit::disable())
}

/// The resource endpoints' names as RFC 7644 writes them. Clients send them in other cases (`/users`, as
/// Microsoft's own reference collection does) and with a trailing slash; both are accepted.
const ENDPOINTS: [&str; 6] = ["Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", ".search"];

/// The path as the router knows it: the endpoint name below the base path in its canonical case, and no
/// trailing slash. None when nothing needs changing.
fn canonical_path(base: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    let mut segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    let mut changed = segments.len() != rest.split('/').count();
    if let Some(first) = segments.first_mut()
        && let Some(name) = ENDPOINTS.iter().find(|e| e.eq_ignore_ascii_case(first))
        && *first != *name
    {
        *first = name;
        changed = true;
    }
    if let Some(second) = segments.get_mut(1)
        && second.eq_ignore_ascii_case(".search")
        && *second != ".search"
    {
        *second = ".search";
        changed = true;
    }
    changed.then(|| format!("{base}/{}", segments.join("/")))
}

fn rewrite_path(base: &str, mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(path) = canonical_path(base, req.uri().path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

fn not_implemented(detail: &'static str) -> ScimError {
    ScimError::new(Status::NotImplemented, None, detail)
}

/// `POST …/.search` (RFC 7644 §3.4.3), answered like a GET of the list.
fn search_route(kinds: &'static [Kind]) -> MethodRouter<AppState> {
    axum::routing::post(
        move |s: axum::extract::State<AppState>, c: axum::Extension<Ctx>, h: HeaderMap, b: axum::body::Body| async move {
            search::search(s.0, c.0, h, b, kinds).await
        },
    )
    .fallback(|| async { ScimError::method_not_allowed("use POST to search") })
}

fn read_only(r: MethodRouter<AppState>) -> MethodRouter<AppState> {
    r.fallback(|| async { ScimError::method_not_allowed("this endpoint is read-only") })
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

/// Serves SCIM on `listener` until `shutdown` resolves, then lets in-flight requests finish (at most
/// `grace`), then stops the staging writer once everything acknowledged is committed.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    staging: Staging,
    settings: ScimSettings,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let base = settings.base_path.trim_end_matches('/').to_owned();
    // Paths are rewritten before routing: a router layer would run after the route was chosen.
    let rewrite = tower::util::MapRequestLayer::new(move |req| rewrite_path(&base, req));
    let app = tower::Layer::layer(&rewrite, router(staging.clone(), settings));
    let app =
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time; closing them");
            Ok(())
        }
    };
    drop(stop_rx);
    staging.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_in_any_case_and_trailing_slashes() {
        let c = |p: &str| canonical_path("/scim/v2", p);
        assert_eq!(c("/scim/v2/users").as_deref(), Some("/scim/v2/Users"));
        assert_eq!(c("/scim/v2/Users/").as_deref(), Some("/scim/v2/Users"));
        assert_eq!(c("/scim/v2/GROUPS/abc/").as_deref(), Some("/scim/v2/Groups/abc"));
        assert_eq!(c("/scim/v2/users/.SEARCH").as_deref(), Some("/scim/v2/Users/.search"));
        assert_eq!(c("/scim/v2/serviceproviderconfig").as_deref(), Some("/scim/v2/ServiceProviderConfig"));
        assert_eq!(c("/scim/v2/Users"), None);
        assert_eq!(c("/scim/v2/Users/AbC"), None, "ids keep their case");
        assert_eq!(c("/healthz"), None);
        assert_eq!(canonical_path("", "/users/").as_deref(), Some("/Users"));
    }
}
