//! The HTTP layer (axum): the router, bearer-token authentication, the SCIM resource endpoints and the
//! discovery endpoints, rendering of staged resources, and RFC 7644 error responses. Top of the SCIM
//! pipeline: it talks to staging only, never to a target.

mod auth;
mod discovery;
mod error;
mod render;
mod resources;

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
use crate::scim::SCIM_CONTENT_TYPE;
use crate::scim::error::{ScimError, Status};
use crate::scim::schema::Kind;
use crate::staging::{Staging, Tenant};

pub use self::render::{etag, render};

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

impl From<&ServerConfig> for ScimSettings {
    fn from(s: &ServerConfig) -> Self {
        ScimSettings {
            base_path: s.base_path.clone(),
            max_body_bytes: s.max_body_bytes,
            strict: s.strict,
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

pub fn router(staging: Staging, settings: ScimSettings) -> Router {
    let base = settings.base_path.trim_end_matches('/').to_owned();
    let state = AppState { staging, settings: Arc::new(settings) };
    let scim = Router::new()
        .route("/Users", resources::collection(Kind::User))
        .route("/Users/{id}", resources::item(Kind::User))
        .route("/Groups", resources::collection(Kind::Group))
        .route("/Groups/{id}", resources::item(Kind::Group))
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
    let app = router(staging.clone(), settings).into_make_service_with_connect_info::<std::net::SocketAddr>();
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
