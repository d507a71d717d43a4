//! The HTTP layer (axum): the router, bearer-token authentication, the SCIM resource endpoints and the
//! discovery endpoints, rendering of staged resources, and RFC 7644 error responses. Top of the SCIM
//! pipeline: it talks to staging only, never to a target.

mod auth;
mod discovery;
mod error;
mod monitor;
mod render;
mod resources;
mod search;
mod server;
mod settings;
mod status;

use std::future::Future;
use std::net::IpAddr;
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

use crate::ops::Shared;
use crate::ops::metrics::Metrics;
use crate::ops::rate::{Buckets, LogThrottle};
use crate::scim::error::{ScimError, Status};
use crate::scim::schema::Kind;
use crate::scim::{Rules, SCIM_CONTENT_TYPE};
use crate::staging::{Ledger, ResourceStore, Tenant};

pub use self::render::{etag, render};
pub use self::server::{ConnectionLimits, Listener, Rewrite};
pub use self::settings::{MetricsAccess, ScimSettings, TenantRules};

/// What the HTTP layer serves from: staging, the settings in force (swapped on reload), the metrics
/// registry, and replay's state in staging for readiness and metrics.
#[derive(Clone)]
pub struct Service {
    pub staging: Arc<dyn ResourceStore>,
    pub settings: Arc<Shared<ScimSettings>>,
    pub metrics: Arc<Metrics>,
    /// Replay's state, read by `/readyz`, `/metrics` and `/status`; without it they report staging only.
    pub replay: Option<Arc<dyn Ledger>>,
}

impl Service {
    /// A service on `staging` alone (no replay state), as tests and benchmarks start it.
    pub fn new(staging: Arc<dyn ResourceStore>, settings: ScimSettings) -> Service {
        Service { staging, settings: Arc::new(Shared::new(settings)), metrics: Arc::new(Metrics::new()), replay: None }
    }
}

#[derive(Clone)]
struct AppState {
    staging: Arc<dyn ResourceStore>,
    shared: Arc<Shared<ScimSettings>>,
    metrics: Arc<Metrics>,
    replay: Option<Arc<dyn Ledger>>,
    /// Lists being read and rendered at once. Each holds up to a page of resources (max_page_size) and
    /// its JSON; many large pages at once would only grow memory, not go faster, on a few cores.
    lists: Arc<tokio::sync::Semaphore>,
    /// Request bodies above 64 KiB being read and parsed at once (see `resources::read_json`).
    large_bodies: Arc<tokio::sync::Semaphore>,
    tenant_rates: Arc<Buckets<String>>,
    auth_failures: Arc<Buckets<IpAddr>>,
    log_throttle: Arc<LogThrottle<String>>,
    ready: Arc<monitor::ReadyCache>,
    /// Becomes true when shutdown begins.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// When the server started (the status page's uptime).
    started: std::time::Instant,
}

impl AppState {
    /// The settings in force now.
    fn settings(&self) -> Arc<ScimSettings> {
        self.shared.get()
    }
}

/// See `AppState::lists`.
const CONCURRENT_LISTS: usize = 4;
/// See `AppState::large_bodies`.
const CONCURRENT_LARGE_BODIES: usize = 4;

/// Per-request context set by the authentication layer.
#[derive(Clone)]
struct Ctx {
    tenant: Tenant,
    request_id: String,
    /// The tenant's rules.
    rules: Rules,
}

/// The application: the SCIM endpoints below the base path, and `/healthz`, `/readyz`, `/metrics` beside it.
/// The base path is fixed for the life of the router (a change needs a restart).
pub fn router(service: Service) -> Router {
    router_stopping(service, Arc::new(tokio::sync::watch::Sender::new(false)))
}

fn router_stopping(service: Service, stopping: Arc<tokio::sync::watch::Sender<bool>>) -> Router {
    let base = service.settings.get().base_path.trim_end_matches('/').to_owned();
    let state = AppState {
        staging: service.staging,
        shared: service.settings,
        metrics: service.metrics,
        replay: service.replay,
        lists: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LISTS)),
        large_bodies: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LARGE_BODIES)),
        tenant_rates: Arc::new(Buckets::new()),
        auth_failures: Arc::new(Buckets::new()),
        log_throttle: Arc::new(LogThrottle::new(Duration::from_secs(60))),
        ready: Arc::new(monitor::ReadyCache::default()),
        stopping,
        started: std::time::Instant::now(),
    };
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
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(monitor::readyz))
        .route("/metrics", get(monitor::metrics))
        .route("/status", get(status::status))
        .route("/status/explain", get(status::explain));
    let app = if base.is_empty() { app.merge(scim) } else { app.nest(&base, scim) };
    // The body limit is enforced while reading, so that the 413 carries a SCIM error body.
    app.layer(middleware::from_fn_with_state(state.clone(), monitor::observe))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
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
    match body {
        Some(b) => scim_text(status, b.to_string()),
        None => {
            let mut resp = status.into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
            resp
        }
    }
}

/// A response whose JSON body is already written.
fn scim_text(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    resp
}

fn with_etag(mut resp: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Serves SCIM on `listener` with the default connection limits until `shutdown` resolves, then lets
/// in-flight requests finish (at most `grace`), then stops the staging writer once everything
/// acknowledged is committed. For tests and benchmarks; the daemon uses [`serve_with`].
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    staging: Arc<dyn ResourceStore>,
    settings: ScimSettings,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener =
        Listener { listener, tls: None, limits: Arc::new(Shared::new(ConnectionLimits::default())), refused: None };
    serve_with(listener, Service::new(staging, settings), grace, shutdown).await
}

/// Serves `service` on `listener` (TLS and limits as it says) until `shutdown` resolves, then lets
/// in-flight requests finish (at most `grace`), then stops the staging writer once everything
/// acknowledged is committed.
///
/// # Errors
/// The listener fails.
pub async fn serve_with(
    listener: Listener,
    service: Service,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let staging = service.staging.clone();
    let base = service.settings.get().base_path.trim_end_matches('/').to_owned();
    // Paths are rewritten before routing: a router layer would run after the route was chosen.
    let rewrite: Rewrite = Arc::new(move |req| rewrite_path(&base, req));
    let stopping = Arc::new(tokio::sync::watch::Sender::new(false));
    let app = router_stopping(service, stopping.clone());
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    let result = server::run(listener, app, rewrite, grace, shutdown).await;
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
