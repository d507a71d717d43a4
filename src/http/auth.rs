//! Bearer-token authentication: every SCIM request names its tenant by its token (contract point 7).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::internal;
use super::{AppState, Ctx};
use crate::scim::error::ScimError;

pub(super) async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
