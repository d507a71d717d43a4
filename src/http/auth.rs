//! Bearer-token authentication: every SCIM request names its tenant by its token (contract point 7).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::internal;
use super::{AppState, Ctx};
use crate::scim::error::ScimError;

/// The client's address, when the server was started with connection info (always, outside router tests).
pub(super) fn client(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "-".into())
}

pub(super) async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut resp = check(state, req, next, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn check(state: AppState, mut req: Request, next: Next, request_id: &str) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token else {
        tracing::warn!(client = %client(&req), request_id, path = %req.uri().path(), "request refused: no bearer token");
        return ScimError::unauthorized("a bearer token is required (Authorization: Bearer <token>)").into_response();
    };
    let tenant = match state.staging.authenticate(&token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            // Never log the presented token: it may be a real token of another system.
            tracing::warn!(client = %client(&req), request_id, path = %req.uri().path(), "request refused: unknown bearer token");
            return ScimError::unauthorized("the bearer token is not valid").into_response();
        }
        Err(e) => return internal(request_id, e).into_response(),
    };
    tracing::debug!(tenant = %tenant.name, request_id, method = %req.method(), path = %req.uri().path(), "request");
    let rules = state.settings.rules.of(&tenant.name);
    req.extensions_mut().insert(Ctx { tenant, request_id: request_id.to_owned(), rules });
    next.run(req).await
}
