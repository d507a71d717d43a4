//! The status page at /status: read-only HTML for administrators, behind the admin token of `[status]`
//! (as a bearer token, or as the password of HTTP basic authentication so that a browser can ask for it;
//! never a tenant token). Per tenant the staged counts and bound targets; per target reachability,
//! replay position and lag, failed and dead changes with their errors and a link to the user's story;
//! the last provisioning actions; reconciliation runs; the daemon's version and uptime. Rendered on the
//! server (maud escapes every value: a userName like `<script>` shows as text), readable on a phone,
//! refreshed every 10 s.

use std::fmt::Write as _;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::ops::story;
use crate::staging::Ledger;
use crate::staging::hash_token;
use crate::staging::ledger::FailureState;

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:.5rem 1rem;color:#222}\
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
.bad{color:#a00;font-weight:600}.ok{color:#070}.muted{color:#666}code,pre{font-size:.85rem;white-space:pre-wrap;overflow-wrap:anywhere}td{overflow-wrap:anywhere}";

/// The admin token from the request: a bearer token, or the password of basic authentication.
fn presented(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_owned());
    }
    None
}

/// None when the request may see the page; the refusal otherwise.
fn refused(state: &AppState, req: &Request) -> Option<Response> {
    let Some(expected) = state.settings().status_token else {
        return Some(
            (StatusCode::NOT_FOUND, "the status page is off: give it an admin token in [status] token_file\n")
                .into_response(),
        );
    };
    let ok = presented(req).is_some_and(|t| bool::from(hash_token(&t).ct_eq(&expected)));
    if ok {
        return None;
    }
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        "the status page needs the admin token of [status] (any user name, the token as password)\n",
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"scim-bridge status\", charset=\"UTF-8\""),
    );
    Some(resp)
}

fn page(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="10";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    };
    let mut resp = markup.into_string().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing but this page's own inline style: values from the IdP can never run as script.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    resp
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d} d ");
    }
    let _ = write!(out, "{h} h {m} min");
    out
}

/// Everything the page shows, read from staging in one go.
struct Overview {
    tenants: Vec<(String, i64, i64)>,
    targets: Vec<TargetRow>,
    actions: Vec<crate::staging::ledger::AuditRow>,
    runs: Vec<crate::staging::ledger::Run>,
}

struct TargetRow {
    name: String,
    reachable: Option<(bool, String, Option<String>)>,
    stats: crate::staging::ledger::TargetStats,
    /// Failed changes, with the name of their resource.
    failures: Vec<(crate::staging::ledger::Failure, Option<String>)>,
    tenants: Vec<String>,
}

async fn overview(
    store: &dyn Ledger,
    targets: &[(String, Vec<String>)],
) -> Result<Overview, crate::staging::StagingError> {
    let health = store.health().await?;
    let failures = store.list_failures(None).await?;
    let mut rows = Vec::new();
    for (name, tenants) in targets {
        let mut named = Vec::new();
        for f in failures.iter().filter(|f| &f.target == name) {
            named.push((f.clone(), store.resource_name(f.tenant, f.resource_id.as_str()).await?));
        }
        rows.push(TargetRow {
            name: name.clone(),
            reachable: health
                .iter()
                .find(|h| &h.target == name)
                .map(|h| (h.reachable, h.since.clone(), h.last_error.clone())),
            stats: store.target_stats(name).await?,
            failures: named,
            tenants: tenants.clone(),
        });
    }
    Ok(Overview {
        tenants: store.tenant_counts().await?,
        targets: rows,
        actions: store.history(None, None, None, 20).await?,
        runs: store.runs(None, 10).await?,
    })
}

pub(super) async fn status(State(state): State<AppState>, req: Request) -> Response {
    if let Some(r) = refused(&state, &req) {
        return r;
    }
    let Some(store) = state.replay.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "replay state is not available in this process\n").into_response();
    };
    let targets = state.settings().bindings.clone();
    let data = match overview(store.as_ref(), &targets).await {
        Ok(d) => d,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read staging: {e}\n")).into_response();
        }
    };
    let tenant_targets = |t: &str| -> Vec<String> {
        data.targets.iter().filter(|r| r.tenants.iter().any(|n| n == t)).map(|r| r.name.clone()).collect()
    };
    let body = html! {
        h1 { "scim-bridge status" }
        p.muted { "version " (env!("CARGO_PKG_VERSION")) " · up " (uptime(state.started.elapsed().as_secs())) " · refreshed every 10 s" }
        h2 { "Tenants" }
        div.scroll { table {
            tr { th { "tenant" } th { "users" } th { "groups" } th { "replayed into" } }
            @for (t, users, groups) in &data.tenants {
                @let bound = tenant_targets(t);
                tr { td { (t) } td { (users) } td { (groups) }
                     td { @if bound.is_empty() { span.bad { "no target (staged only)" } } @else { (bound.join(", ")) } } }
            }
        } }
        h2 { "Targets" }
        div.scroll { table {
            tr { th { "target" } th { "reachable" } th { "position" } th { "lag" } th { "retrying" } th { "dead" } th { "waiting" } }
            @for r in &data.targets {
                tr {
                    td { (r.name) }
                    td { @match &r.reachable {
                        Some((true, since, _)) => span.ok { "yes since " (when(since)) },
                        Some((false, since, err)) => span.bad { "NO since " (when(since)) ": " (err.clone().unwrap_or_default()) },
                        None => span.muted { "not contacted yet" },
                    } }
                    td { (r.stats.cursor) }
                    td { (r.stats.lag_changes) @if let Some(o) = &r.stats.oldest_unread { span.muted { " (oldest " (when(o)) ")" } } }
                    td { (r.stats.retrying) }
                    td { @if r.stats.dead > 0 { span.bad { (r.stats.dead) } } @else { "0" } }
                    td { (r.stats.waiting) }
                }
            }
        } }
        h2 { "Failed changes" }
        @let failed: Vec<_> = data.targets.iter().flat_map(|r| r.failures.iter()).collect();
        @if failed.is_empty() { p.ok { "none" } } @else {
            div.scroll { table {
                tr { th { "target" } th { "entry" } th { "state" } th { "resource" } th { "error" } }
                @for (f, name) in &failed {
                    tr {
                        td { (f.target) } td { (f.seq) }
                        td { @if f.state == FailureState::Dead { span.bad { "dead" } } @else { (f.state.as_str()) } }
                        td { a href={ "/status/explain?id=" (urlencode(f.resource_id.as_str())) } { (name.as_deref().unwrap_or(f.resource_id.as_str())) } }
                        td { code { (f.last_error) } }
                    }
                }
            } }
        }
        h2 { "Last provisioning actions" }
        div.scroll { table {
            tr { th { "time" } th { "target" } th { "tenant" } th { "outcome" } th { "resource" } th { "detail" } }
            @for a in &data.actions {
                tr {
                    td { (when(&a.at)) } td { (a.target) } td { (a.tenant) }
                    td { @if a.outcome == "error" || a.outcome == "dead" { span.bad { (a.outcome) } } @else { (a.outcome) } }
                    td { a href={ "/status/explain?id=" (urlencode(&a.resource_id)) } { (a.kind) " " (a.name.as_deref().unwrap_or(&a.resource_id)) } }
                    td { (a.detail) }
                }
            }
        } }
        h2 { "Reconciliation runs" }
        @if data.runs.is_empty() { p.muted { "none yet" } } @else {
            div.scroll { table {
                tr { th { "run" } th { "target" } th { "trigger" } th { "started" } th { "status" } th { "counts" } }
                @for r in &data.runs {
                    tr {
                        td { (r.id) } td { (r.target) } td { (r.trigger) @if r.dry_run { " (dry run)" } } td { (when(&r.started)) }
                        td { @if r.status.as_str() == "done" || r.status.as_str() == "running" { (r.status.as_str()) } @else { span.bad { (r.status.as_str()) } }
                             @if let Some(d) = &r.detail { br; span.muted { (d) } } }
                        td { (r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")) }
                    }
                }
            } }
        }
    };
    page("scim-bridge status", body)
}

/// A time as a table shows it: "2026-12-01 08:14:02" (UTC).
fn when(at: &str) -> String {
    at.get(..19).map(|t| t.replacen('T', " ", 1)).unwrap_or_else(|| at.to_owned())
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(serde::Deserialize)]
pub(super) struct ExplainQuery {
    id: String,
}

/// The story of one resource, as `scim-bridge explain` tells it.
pub(super) async fn explain(State(state): State<AppState>, Query(q): Query<ExplainQuery>, req: Request) -> Response {
    if let Some(r) = refused(&state, &req) {
        return r;
    }
    let Some(store) = state.replay.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "replay state is not available in this process\n").into_response();
    };
    let stories = async {
        let mut stories = Vec::new();
        for c in store.find_resources(&q.id).await? {
            stories.push(store.story(&c).await?);
        }
        Ok::<_, crate::staging::StagingError>(stories)
    };
    let stories = match stories.await {
        Ok(s) => s,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read staging: {e}\n")).into_response();
        }
    };
    let body = html! {
        p { a href="/status" { "← status" } }
        @if stories.is_empty() { p.bad { "nothing matches " (q.id) } }
        @for s in &stories {
            @let n = story::narrate(s);
            h1 { (n.kind) " " (n.name) }
            p.muted { (n.id) " · tenant " (n.tenant) @if n.gone { " · deleted in SCIM" } }
            div.scroll { table {
                tr { th { "time" } th { "who" } th { "what" } }
                @for step in &n.steps {
                    tr { td { (when(&step.at)) } td { (step.who) }
                         td { (step.summary) @if !step.details.is_empty() { pre { (step.details.join("\n")) } } } }
                }
            } }
            h2 { "Links" } ul { @for l in &n.links { li { (l) } } @if n.links.is_empty() { li.muted { "none" } } }
            h2 { "Failed changes" } ul { @for f in &n.failures { li.bad { (f) } } @if n.failures.is_empty() { li.ok { "none" } } }
            h2 { "Blocked downstream" } ul { @for b in &n.blocked { li { (b) } } }
        }
    };
    page("scim-bridge: explain", body)
}
