//! Reconciliation: bring a target back to what the IdP said, or show first what that takes. A run reads
//! the target's actual state once, streams the desired state from staging page by page, and plans
//! (`plan`): create, link, update, block, unblock, add and remove members, orphans. A dry run stops there.
//! Otherwise the run checks the safety limit, holds the target's replay, and applies the plan through the
//! same target code replay uses (`apply`), recording every action in the audit trail under the run's id.
//!
//! No race with replay: a resource with changes the target has not had yet (or with failed ones) is left to
//! replay, and while a run applies its plan the target's replay pauses (the run's lease in staging says
//! so), so that nothing replay writes is undone. One run per target at a time, whichever process starts it.

mod apply;
pub mod plan;
pub mod progress;
pub mod report;
pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self::plan::{Compare, Plan, Planner};
use self::progress::Progress;
use crate::ops::alerts::{Alerts, Event};
use crate::scim::schema::Kind;
use crate::staging::Ledger;
use crate::staging::StagingError;
use crate::staging::journal::TenantId;
use crate::staging::ledger::{Desired, LeaseHeld, RunStatus};
use crate::targets::reconcile::{ActualUser, Drift, ReconcileConfig};
use crate::targets::{Target, TargetError};

/// Staged resources read per page.
const PAGE: usize = 1000;
/// How often a running run renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// One run of one target.
pub struct Request<'a> {
    pub target: &'a Target,
    pub config: &'a ReconcileConfig,
    /// The tenants bound to the target, by name.
    pub tenants: Vec<String>,
    /// Limit the run to this tenant.
    pub tenant: Option<String>,
    pub dry_run: bool,
    /// Pass the safety limit this once.
    pub force: bool,
    pub trigger: Trigger,
    /// Who runs it ("pid 4711 on host"), for a run that finds the target busy.
    pub holder: String,
    /// Told when the run stops at its safety limit or fails.
    pub alerts: Alerts,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    pub run_id: i64,
    pub plan: Plan,
    pub status: RunStatus,
    /// Why it stopped or failed.
    pub detail: Option<String>,
    /// Actions applied (none for a dry run).
    pub applied: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Busy(#[from] LeaseHeld),
    #[error("no tenant is named {0:?} among the tenants bound to this target")]
    UnknownTenant(String),
    #[error("staging: {0}")]
    Staging(#[from] StagingError),
}

impl Compare for Target {
    fn user_drift(&self, d: &Desired, actual: &ActualUser) -> (Vec<Drift>, bool) {
        Target::user_drift(self, &d.state, d.id.as_str(), actual)
    }
    fn match_email(&self, d: &Desired) -> Option<String> {
        Target::user_match(self, &d.state)
    }
    fn replays_groups(&self) -> bool {
        Target::replays_groups(self)
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The bound tenants that exist in staging, by id; with `only`, just that one.
async fn tenant_ids(
    store: &Arc<dyn Ledger>,
    names: &[String],
    only: Option<&str>,
) -> Result<HashMap<TenantId, String>, ReconcileError> {
    let all = store.tenant_ids().await?;
    if let Some(t) = only
        && !names.iter().any(|n| n == t)
    {
        return Err(ReconcileError::UnknownTenant(t.to_owned()));
    }
    Ok(all.into_iter().filter(|(_, n)| names.contains(n) && only.is_none_or(|o| o == n)).collect())
}

/// Reads both sides and plans. `progress` hears the phases.
async fn plan(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    progress: &dyn Progress,
) -> Result<Result<Plan, TargetError>, ReconcileError> {
    let name = req.target.name().to_owned();
    let bound = tenant_ids(store, &req.tenants, None).await?;
    let run_tenants = tenant_ids(store, &req.tenants, req.tenant.as_deref()).await?;
    let filter = req.tenant.as_ref().and_then(|t| run_tenants.iter().find(|(_, n)| *n == t).map(|(id, _)| *id));
    progress.phase(&format!("reading {name}"), None);
    let users = match req.target.snapshot_users().await {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    let groups = match req.target.snapshot_groups().await {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    progress.note(&format!("{name} holds {} account(s) and {} group(s)", users.len(), groups.len()));
    let (links, left) = (store.target_links(&name).await?, store.unreplayed(&name).await?);
    let mut planner = Planner::new(&name, req.target, users, groups, links, left, bound, filter, req.config.orphans);
    let ids: Vec<TenantId> = run_tenants.keys().copied().collect();
    let total = store.resource_count(&ids).await?;
    progress.phase("comparing with staging", Some(total as u64));
    for kind in [Kind::User, Kind::Group] {
        let mut after = 0;
        loop {
            let page = store.desired_page(&ids, kind, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            match kind {
                Kind::User => planner.add_users(&page),
                Kind::Group => planner.add_groups(&page),
            }
            progress.advance(page.len() as u64);
        }
    }
    Ok(Ok(planner.finish()))
}

/// Runs reconciliation for one target: takes the lease, plans, and (unless a dry run, or stopped by the
/// safety limit) applies. Every run is recorded, whatever its end.
///
/// # Errors
/// Another run holds the target, the tenant is unknown, or staging fails. A target that cannot be read or
/// written ends the run as failed (recorded), not as an error.
pub async fn run(
    req: Request<'_>,
    store: &Arc<dyn Ledger>,
    progress: &dyn Progress,
) -> Result<Finished, ReconcileError> {
    let name = req.target.name().to_owned();
    let run_id = store.start_run(&name, req.trigger.as_str(), req.dry_run, &req.holder, now_ms()).await??;
    tracing::info!(target = %name, run = run_id, trigger = req.trigger.as_str(), dry_run = req.dry_run, "reconciliation started");
    let renewing = lease_keeper(store.clone(), name.clone(), run_id);
    let outcome = run_locked(&req, store, progress, run_id, &renewing).await;
    renewing.stop();
    let finished = match outcome {
        Ok(f) => f,
        Err(e) => {
            let why = e.to_string();
            let _ = store.finish_run(run_id, RunStatus::Failed, &Default::default(), Some(&why)).await;
            return Err(e);
        }
    };
    let counts = finished.plan.counts();
    store.finish_run(run_id, finished.status, &counts, finished.detail.as_deref()).await?;
    let detail = finished.detail.clone().unwrap_or_default();
    match finished.status {
        RunStatus::Stopped => req.alerts.send(Event::ReconcileStopped { target: name.clone(), run: run_id, detail }),
        RunStatus::Failed => req.alerts.send(Event::ReconcileFailed { target: name.clone(), run: run_id, detail }),
        _ => {}
    }
    match finished.status {
        RunStatus::Stopped | RunStatus::Failed => tracing::error!(
            target = %name, run = run_id, counts = ?counts, "reconciliation {}: {}", finished.status.as_str(), finished.detail.as_deref().unwrap_or_default()
        ),
        _ => {
            tracing::info!(target = %name, run = run_id, applied = finished.applied, counts = ?counts, dry_run = req.dry_run, "reconciliation finished")
        }
    }
    Ok(finished)
}

async fn run_locked(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    progress: &dyn Progress,
    run_id: i64,
    lease: &LeaseKeeper,
) -> Result<Finished, ReconcileError> {
    let failed = |plan: Plan, e: TargetError| Finished {
        run_id,
        plan,
        status: RunStatus::Failed,
        detail: Some(format!("target {}: {}", req.target.name(), e.report())),
        applied: 0,
    };
    let plan = match plan(req, store, progress).await? {
        Ok(p) => p,
        Err(e) => return Ok(failed(Plan::default(), e)),
    };
    if req.dry_run {
        progress.finish();
        return Ok(Finished { run_id, plan, status: RunStatus::Done, detail: None, applied: 0 });
    }
    let allowed = req.config.max_blocks.allowed(plan.linked);
    let blocks = plan.blocks() as u64;
    if blocks > allowed && !req.force {
        progress.finish();
        let detail = format!(
            "the plan would block {blocks} account(s), more than max_blocks = {} allows ({allowed} of {} linked); nothing was changed. \
             Check the plan with --dry-run; if it is right, run once with --force",
            req.config.max_blocks, plan.linked
        );
        return Ok(Finished { run_id, plan, status: RunStatus::Stopped, detail: Some(detail), applied: 0 });
    }
    if !plan.changes_anything() {
        progress.finish();
        return Ok(Finished { run_id, plan, status: RunStatus::Done, detail: None, applied: 0 });
    }
    lease.pause_replay(true).await?;
    let applied = apply::apply(req, store, &plan, run_id, progress).await;
    lease.pause_replay(false).await?;
    progress.finish();
    match applied {
        Ok(n) => Ok(Finished { run_id, plan, status: RunStatus::Done, detail: None, applied: n }),
        Err(apply::ApplyError::Staging(e)) => Err(e.into()),
        Err(apply::ApplyError::Target { applied, error }) => {
            let mut f = failed(plan, error);
            f.applied = applied;
            Ok(f)
        }
    }
}

/// Keeps a run's lease alive in the background, and tells replay to pause while the run applies.
struct LeaseKeeper {
    pause: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Ledger>,
    target: String,
    run_id: i64,
}

fn lease_keeper(store: Arc<dyn Ledger>, target: String, run_id: i64) -> LeaseKeeper {
    let (store_for_keeper, target_for_keeper) = (store.clone(), target.clone());
    let (pause, mut paused) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let p = *paused.borrow_and_update();
            if let Err(e) = store.renew_lease(&target, run_id, p, now_ms()).await {
                tracing::warn!(target = %target, run = run_id, error = %e, "cannot renew the reconciliation lease");
            }
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                changed = paused.changed() => if changed.is_err() { return },
            }
        }
    });
    LeaseKeeper { pause, task, store: store_for_keeper, target: target_for_keeper, run_id }
}

impl LeaseKeeper {
    /// Pauses (or resumes) the target's replay, in staging before this returns.
    async fn pause_replay(&self, on: bool) -> Result<(), StagingError> {
        self.store.renew_lease(&self.target, self.run_id, on, now_ms()).await?;
        let _ = self.pause.send(on);
        Ok(())
    }
    fn stop(&self) {
        self.task.abort();
    }
}

/// For every staged user of the target's tenants (or one tenant): already linked, or how many accounts the
/// target holds with its match email — exactly one (which), several (which), or none. For cleaning
/// duplicate emails downstream before a first run.
///
/// # Errors
/// The tenant is unknown, or staging fails; a target that cannot be read is the inner error.
pub async fn link_report(
    target: &Target,
    tenants: &[String],
    tenant: Option<&str>,
    store: &Arc<dyn Ledger>,
) -> Result<Result<Vec<report::LinkRow>, TargetError>, ReconcileError> {
    let run_tenants = tenant_ids(store, tenants, tenant).await?;
    let users = match target.snapshot_users().await {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    let mut by_email: HashMap<&str, Vec<&str>> = HashMap::new();
    for u in &users {
        for e in &u.emails {
            by_email.entry(e.as_str()).or_default().push(u.key.as_str());
        }
    }
    let links: HashMap<_, _> =
        store.target_links(target.name()).await?.into_iter().map(|l| (l.resource.clone(), l.key)).collect();
    let ids: Vec<TenantId> = run_tenants.keys().copied().collect();
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = store.desired_page(&ids, Kind::User, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for d in &page {
            let email = target.user_match(&d.state);
            let (result, keys) = match (links.get(&d.resource()), &email) {
                (Some(k), _) => ("linked", vec![k.clone()]),
                (None, None) => ("no email", Vec::new()),
                (None, Some(e)) => {
                    let found: Vec<String> = by_email
                        .get(e.as_str())
                        .map(|v| v.iter().map(|k| (*k).to_owned()).collect())
                        .unwrap_or_default();
                    (
                        match found.len() {
                            0 => "none",
                            1 => "one",
                            _ => "several",
                        },
                        found,
                    )
                }
            };
            rows.push(report::LinkRow {
                tenant: d.tenant_name.clone(),
                id: d.id.to_string(),
                user_name: d.state.get("userName").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
                email,
                result,
                keys,
            });
        }
    }
    Ok(Ok(rows))
}
