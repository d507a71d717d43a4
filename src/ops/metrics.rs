//! Prometheus metrics (text format at /metrics). Request counters and latencies are counted as requests go
//! by; the replay figures (journal depth, lag, failures, reachability) are read from staging when the page
//! is scraped, so that they tell what staging says, whichever process made it so.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/scim/v2/Users/{id}`), never the raw path: ids would make every user a series.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub target: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub target: String,
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// What staging says of one target, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct TargetSnapshot {
    pub name: String,
    /// Journal entries after the target's position.
    pub lag_changes: i64,
    /// Age of the oldest journal entry the target has not read yet.
    pub lag_seconds: f64,
    pub retrying: i64,
    pub dead: i64,
    pub waiting: i64,
    /// None: not contacted yet.
    pub reachable: Option<bool>,
}

/// Staging's figures at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub journal_head: i64,
    pub pending_members: i64,
    pub staging_bytes: i64,
    pub targets: Vec<TargetSnapshot>,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub staged: Family<TenantLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub rate_limited: Family<TenantLabels, Counter>,
    pub connections_refused: Counter,
    pub reconcile_runs: Family<RunLabels, Counter>,
    pub reconcile_actions: Family<ActionLabels, Counter>,
    journal_head: Gauge,
    pending_members: Gauge,
    staging_bytes: Gauge,
    lag_changes: Family<TargetLabels, Gauge>,
    lag_seconds: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    retrying: Family<TargetLabels, Gauge>,
    dead: Family<TargetLabels, Gauge>,
    waiting: Family<TargetLabels, Gauge>,
    target_up: Family<TargetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("scim_bridge");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            staged: Family::default(),
            auth_failures: Family::default(),
            rate_limited: Family::default(),
            connections_refused: Counter::default(),
            reconcile_runs: Family::default(),
            reconcile_actions: Family::default(),
            journal_head: Gauge::default(),
            pending_members: Gauge::default(),
            staging_bytes: Gauge::default(),
            lag_changes: Family::default(),
            lag_seconds: Family::default(),
            retrying: Family::default(),
            dead: Family::default(),
            waiting: Family::default(),
            target_up: Family::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route, method and status", m.requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's headers to its answer, by route and method",
            m.latency.clone(),
        );
        registry.register(
            "changes_accepted",
            "Changes (POST, PUT, PATCH, DELETE) answered with success, by tenant; each was durably staged first",
            m.staged.clone(),
        );
        registry.register(
            "authentication_failures",
            "Requests refused for their bearer token (missing, invalid) or for too many failures (rate_limited)",
            m.auth_failures.clone(),
        );
        registry.register("rate_limited", "Requests answered 429 by a tenant's rate limit", m.rate_limited.clone());
        registry.register(
            "connections_refused",
            "Connections refused at server.max_connections",
            m.connections_refused.clone(),
        );
        registry.register("reconcile_runs", "Reconciliation runs, by target and result", m.reconcile_runs.clone());
        registry.register(
            "reconcile_actions",
            "Actions applied by reconciliation runs, by target and action",
            m.reconcile_actions.clone(),
        );
        registry.register("journal_head", "The newest journal sequence", m.journal_head.clone());
        registry.register(
            "pending_members",
            "Group members that are not (yet) users or groups of their tenant",
            m.pending_members.clone(),
        );
        registry.register("staging_bytes", "Size of the staging database with its WAL", m.staging_bytes.clone());
        registry.register("replay_lag_changes", "Journal entries a target has not read yet", m.lag_changes.clone());
        registry.register(
            "replay_lag_seconds",
            "Age of the oldest journal entry a target has not read yet",
            m.lag_seconds.clone(),
        );
        registry.register("replay_retrying", "Changes failing and due for another attempt", m.retrying.clone());
        registry.register("replay_dead_letters", "Changes parked as dead letters", m.dead.clone());
        registry.register(
            "replay_waiting",
            "Changes waiting behind a failed change of their resource",
            m.waiting.clone(),
        );
        registry.register(
            "target_up",
            "Whether replay last found the target reachable (1) or not (0)",
            m.target_up.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The page, with staging's figures as of now.
    pub fn render(&self, s: &Snapshot) -> String {
        self.journal_head.set(s.journal_head);
        self.pending_members.set(s.pending_members);
        self.staging_bytes.set(s.staging_bytes);
        for t in &s.targets {
            let l = TargetLabels { target: t.name.clone() };
            self.lag_changes.get_or_create(&l).set(t.lag_changes);
            self.lag_seconds.get_or_create(&l).set(t.lag_seconds);
            self.retrying.get_or_create(&l).set(t.retrying);
            self.dead.get_or_create(&l).set(t.dead);
            self.waiting.get_or_create(&l).set(t.waiting);
            if let Some(up) = t.reachable {
                self.target_up.get_or_create(&l).set(i64::from(up));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_series() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels { route: "/scim/v2/Users".into(), method: "POST".into(), status: 201 })
            .inc();
        m.latency.get_or_create(&RouteLabels { route: "/scim/v2/Users".into(), method: "POST".into() }).observe(0.003);
        let text = m.render(&Snapshot {
            journal_head: 7,
            targets: vec![TargetSnapshot {
                name: "crm".into(),
                lag_changes: 2,
                dead: 1,
                reachable: Some(false),
                ..Default::default()
            }],
            ..Default::default()
        });
        for needle in [
            "scim_bridge_http_requests_total{route=\"/scim/v2/Users\",method=\"POST\",status=\"201\"} 1",
            "scim_bridge_http_request_duration_seconds_bucket{",
            "scim_bridge_journal_head 7",
            "scim_bridge_replay_lag_changes{target=\"crm\"} 2",
            "scim_bridge_replay_dead_letters{target=\"crm\"} 1",
            "scim_bridge_target_up{target=\"crm\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
    }
}
