//! What monitoring reads, outside the SCIM base path and without a SCIM token: `/healthz` (the process
//! serves), `/readyz` (staging takes a durable write and every target is reachable) and `/metrics`
//! (Prometheus text, optionally behind its own bearer token). And the layer every request passes: the
//! request timeout, and the request counters and latency histograms.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;
use super::auth::bearer;
use crate::ops::metrics::{RequestLabels, RouteLabels, Snapshot, TargetSnapshot};
use crate::scim::error::{ScimError, Status};
use crate::staging::hash_token;
use crate::staging::{Ledger, ResourceStore};

/// How long a readiness answer is reused: each check commits a write (an fsync), and `/readyz` needs no
/// token, so its cost must not be the client's to choose.
const READINESS_TTL: Duration = Duration::from_secs(1);
/// How long the staging write of a readiness check may take before staging counts as not ready.
const STAGING_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The last readiness answer, reused for `READINESS_TTL`.
#[derive(Default)]
pub(super) struct ReadyCache(Mutex<Option<(Instant, bool, Value)>>);

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let cached = state.ready.0.lock().ok().and_then(|c| c.clone()).filter(|(at, ..)| at.elapsed() < READINESS_TTL);
    let (ready, body) = match cached {
        Some((_, ready, body)) => (ready, body),
        None => {
            let (ready, body) = readiness(&state).await;
            if let Ok(mut c) = state.ready.0.lock() {
                *c = Some((Instant::now(), ready, body.clone()));
            }
            (ready, body)
        }
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Whether staging takes a write and every configured target was last found reachable; the body names
/// each check and, for a failing one, why.
async fn readiness(state: &AppState) -> (bool, Value) {
    let settings = state.settings();
    let staging = match state.staging.probe_write(STAGING_PROBE_TIMEOUT).await {
        Ok(()) => json!({"ready": true}),
        Err(e) => json!({"ready": false, "error": e}),
    };
    let mut ready = staging["ready"] == true;
    let health = match &state.replay {
        Some(store) => store.health().await.map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    };
    let mut targets = serde_json::Map::new();
    for name in &settings.targets {
        let check = match &health {
            Err(e) => json!({"ready": false, "error": format!("cannot read target health from staging: {e}")}),
            Ok(rows) => match rows.iter().find(|h| &h.target == name) {
                Some(h) if h.reachable => json!({"ready": true, "since": h.since}),
                Some(h) => json!({
                    "ready": false,
                    "since": h.since,
                    "error": h.last_error.clone().unwrap_or_else(|| "unreachable".into()),
                }),
                None => json!({"ready": false, "error": "not checked yet: replay has not reached the target"}),
            },
        };
        ready &= check["ready"] == true;
        targets.insert(name.clone(), check);
    }
    (ready, json!({"status": if ready { "ready" } else { "not ready" }, "staging": staging, "targets": targets}))
}

pub(super) async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let settings = state.settings();
    if !settings.metrics.enabled {
        return (StatusCode::NOT_FOUND, "metrics are disabled (metrics.enabled = false)\n").into_response();
    }
    if let Some(expected) = &settings.metrics.token_hash {
        let presented = bearer(&req).map(|t| hash_token(&t));
        if !presented.is_some_and(|p| bool::from(p.ct_eq(expected))) {
            let mut resp =
                (StatusCode::UNAUTHORIZED, "a valid bearer token is required for /metrics\n").into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim-bridge metrics\""));
            return resp;
        }
    }
    let snapshot = match &state.replay {
        Some(store) => snapshot(store.as_ref(), state.staging.as_ref(), &settings.targets).await,
        None => None,
    };
    let text = state.metrics.render(&snapshot.unwrap_or_default());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Journal and replay figures, read from staging at scrape time.
async fn snapshot(store: &dyn Ledger, staging: &dyn ResourceStore, targets: &[String]) -> Option<Snapshot> {
    let read = async || -> Result<Snapshot, crate::staging::StagingError> {
        let health = store.health().await?;
        let mut s = Snapshot {
            journal_head: store.head().await?.0,
            pending_members: store.pending_count().await?,
            staging_bytes: staging.disk_bytes().unwrap_or_default(),
            ..Default::default()
        };
        for name in targets {
            let stats = store.target_stats(name).await?;
            let lag_seconds = stats
                .oldest_unread
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            s.targets.push(TargetSnapshot {
                name: name.clone(),
                lag_changes: stats.lag_changes,
                lag_seconds,
                retrying: stats.retrying,
                dead: stats.dead,
                waiting: stats.waiting,
                reachable: health.iter().find(|h| &h.target == name).map(|h| h.reachable),
            });
        }
        Ok(s)
    };
    match read().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read replay state from staging; journal and replay series left out");
            None
        }
    }
}

/// The method as a label: the ones the API answers, and "other", so that a client cannot make up series.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Every request: the request timeout (503 with Retry-After, and a WARN, after it), then counted by route
/// (the route's pattern, never the raw path), method and status, and timed.
pub(super) async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = method_label(req.method());
    let timeout = state.settings().request_timeout;
    let started = Instant::now();
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(
                route,
                method,
                timeout_seconds = timeout.as_secs(),
                "request timed out (server.request_timeout_seconds); answered 503"
            );
            ScimError {
                retry_after: Some(5),
                ..ScimError::new(
                    Status::Unavailable,
                    None,
                    "the request took too long; if it was a change, it may still be stored: read it back or retry",
                )
            }
            .into_response()
        }
    };
    let m = &state.metrics;
    m.requests
        .get_or_create(&RequestLabels { route: route.clone(), method: method.into(), status: resp.status().as_u16() })
        .inc();
    m.latency.get_or_create(&RouteLabels { route, method: method.into() }).observe(started.elapsed().as_secs_f64());
    resp
}
