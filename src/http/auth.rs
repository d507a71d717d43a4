//! Bearer-token authentication: every SCIM request names its tenant by its token (contract point 7). Then
//! the tenant's rate limit. Failed authentications are limited per client address, so that guessing
//! tokens costs a prober its address's access rather than our CPU and log.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::internal;
use super::{AppState, Ctx};
use crate::ops::metrics::{ReasonLabels, TenantLabels};
use crate::ops::rate::retry_after_secs;
use crate::scim::error::{ScimError, Status};

/// The client's address, when the server was started with connection info (always, outside router tests).
fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

pub(super) fn client(req: &Request) -> String {
    peer(req).map_or_else(|| "-".into(), |ip| ip.to_string())
}

/// The bearer token of a request, if it has one.
pub(super) fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
}

pub(super) async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut resp = check(state, req, next, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn too_many(wait: std::time::Duration, detail: &str) -> Response {
    ScimError { retry_after: Some(retry_after_secs(wait)), ..ScimError::new(Status::TooManyRequests, None, detail) }
        .into_response()
}

async fn check(state: AppState, mut req: Request, next: Next, request_id: &str) -> Response {
    let settings = state.settings();
    let address = peer(&req);
    let failure_limit = settings.auth_failure_limit();
    // An address that failed too often is refused before its token is even looked at.
    if let Some(ip) = address
        && let Err(wait) = state.auth_failures.peek(&ip, failure_limit)
    {
        state.metrics.auth_failures.get_or_create(&ReasonLabels { reason: "rate_limited".into() }).inc();
        if state.log_throttle.allow(&format!("auth {ip}")) {
            tracing::warn!(client = %ip, limit_per_minute = settings.auth_failures_per_minute, "client address refused for a while: too many failed authentications (server.auth_failures_per_minute; logged once a minute)");
        }
        return too_many(wait, "too many failed authentications from this address; retry later");
    }
    let refuse = |reason: &'static str, detail: &'static str| {
        state.metrics.auth_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        if let Some(ip) = address {
            let _ = state.auth_failures.take(&ip, failure_limit);
        }
        ScimError::unauthorized(detail).into_response()
    };
    let Some(token) = bearer(&req) else {
        tracing::warn!(client = %client(&req), request_id, path = %req.uri().path(), "request refused: no bearer token");
        return refuse("missing", "a bearer token is required (Authorization: Bearer <token>)");
    };
    let tenant = match state.staging.authenticate(&token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            // Never log the presented token: it may be a real token of another system.
            tracing::warn!(client = %client(&req), request_id, path = %req.uri().path(), "request refused: unknown bearer token");
            return refuse("invalid", "the bearer token is not valid");
        }
        Err(e) => return internal(request_id, e).into_response(),
    };
    if let Some(limit) = settings.rate_limit_of(&tenant.name)
        && let Err(wait) = state.tenant_rates.take(&tenant.name, limit)
    {
        state.metrics.rate_limited.get_or_create(&TenantLabels { tenant: tenant.name.clone() }).inc();
        if state.log_throttle.allow(&format!("rate {}", tenant.name)) {
            tracing::warn!(tenant = %tenant.name, requests_per_second = limit.requests_per_second, burst = limit.burst, "tenant over its rate limit; answering 429 (logged once a minute)");
        }
        return too_many(wait, "too many requests for this tenant; retry after the time in Retry-After");
    }
    tracing::debug!(tenant = %tenant.name, request_id, method = %req.method(), path = %req.uri().path(), "request");
    let rules = settings.rules.of(&tenant.name);
    let write = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
        && !req.uri().path().ends_with("/.search");
    let labels = TenantLabels { tenant: tenant.name.clone() };
    req.extensions_mut().insert(Ctx { tenant, request_id: request_id.to_owned(), rules });
    let resp = next.run(req).await;
    if write && resp.status().is_success() {
        state.metrics.staged.get_or_create(&labels).inc();
    }
    resp
}
