//! Applying a plan: each resource the plan touches is written with its current staged state, as a journal
//! entry would be, through the target's own `apply_batch` (one way to write a row), users before groups
//! so that new members exist when their groups are written. Every applied action lands in the audit trail
//! with the run's id as its request id. Resources replay still owes the target are checked again here,
//! with replay paused, and left out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::plan::{Action, OrphanPolicyName, Plan};
use super::progress::Progress;
use super::{PAGE, Request};
use crate::scim::schema::Kind;
use crate::staging::Ledger;
use crate::staging::StagingError;
use crate::staging::journal::{ChangeSeq, Entry, Op, ResourceId, ResourceRef};
use crate::staging::ledger::{Desired, Record};
use crate::targets::TargetError;
use crate::targets::link::StagedClaims;

pub(super) enum ApplyError {
    Staging(StagingError),
    /// The target failed after `applied` actions.
    Target {
        applied: usize,
        error: TargetError,
    },
}

impl From<StagingError> for ApplyError {
    fn from(e: StagingError) -> Self {
        ApplyError::Staging(e)
    }
}

/// Entries written per target transaction.
const BATCH: usize = 100;

fn entry(d: &Desired, run_id: i64, op: Op) -> Entry {
    Entry {
        seq: ChangeSeq(d.last_seq),
        tenant: d.tenant,
        tenant_name: d.tenant_name.clone(),
        kind: d.kind,
        resource_id: d.id.clone(),
        op,
        request_id: format!("reconcile-{run_id}"),
        at: d.at.clone(),
        state: d.state.clone(),
        members_added: Vec::new(),
        members_removed: Vec::new(),
    }
}

/// Applies `plan`; returns how many resources were written.
pub(super) async fn apply(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    plan: &Plan,
    run_id: i64,
    progress: &dyn Progress,
) -> Result<usize, ApplyError> {
    let name = req.target.name().to_owned();
    // Replay is paused now: what it still owes the target is final for this run.
    let left = store.unreplayed(&name).await?;
    let mut users: HashSet<String> = HashSet::new();
    let mut groups: HashMap<String, (Vec<ResourceId>, Vec<ResourceId>)> = HashMap::new();
    let mut orphans: Vec<(String, String)> = Vec::new();
    for a in &plan.actions {
        match a {
            Action::Create { kind: "Group", id, .. } | Action::Update { kind: "Group", id, .. } => {
                groups.entry(id.clone()).or_default();
            }
            Action::AddMember { group_id, member_id, .. } => {
                groups.entry(group_id.clone()).or_default().0.push(ResourceId(member_id.clone()));
            }
            Action::RemoveMember { group_id, member_id, .. } => {
                groups.entry(group_id.clone()).or_default().1.push(ResourceId(member_id.clone()));
            }
            Action::Orphan { kind: "User", policy: OrphanPolicyName::Block, key, id, .. } => {
                orphans.push((key.clone(), id.clone()));
            }
            a => {
                if let Some(id) = a.resource_id() {
                    users.insert(id.to_owned());
                }
            }
        }
    }
    progress.phase(&format!("applying to {name}"), Some((users.len() + groups.len() + orphans.len()) as u64));
    let bound: Vec<_> =
        store.tenant_ids().await?.into_iter().filter(|(_, n)| req.tenants.contains(n)).map(|(id, _)| id).collect();
    let claims = StagedClaims::new(store.clone(), &name);
    let mut applied = 0;
    // Users, then groups: staged pages again (the current state), filtered to what the plan touches.
    for kind in [Kind::User, Kind::Group] {
        let mut after = 0;
        loop {
            let page = store.desired_page(&bound, kind, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let mut entries = Vec::new();
            for d in &page {
                if left.contains(&d.resource()) {
                    continue;
                }
                match kind {
                    Kind::User if users.contains(d.id.as_str()) => entries.push(entry(d, run_id, Op::Replace)),
                    Kind::Group => {
                        if let Some((added, removed)) = groups.get(d.id.as_str()) {
                            let mut e = entry(d, run_id, Op::Replace);
                            e.members_added = added.clone();
                            e.members_removed = removed.clone();
                            entries.push(e);
                        }
                    }
                    _ => {}
                }
            }
            for chunk in entries.chunks(BATCH) {
                applied += write(req, store, &claims, chunk).await.map_err(|e| match e {
                    ApplyError::Target { applied: n, error } => ApplyError::Target { applied: applied + n, error },
                    other => other,
                })?;
                progress.advance(chunk.len() as u64);
            }
        }
    }
    // Linked orphans to block: their last known state, inactive.
    for (key, id) in orphans {
        let link = store.target_links(&name).await?.into_iter().find(|l| l.key == key && l.kind == Kind::User);
        let Some(link) = link else { continue };
        let Some(mut e) = store.last_entry(&link.resource).await? else {
            tracing::warn!(target = %name, key = %key, id = %id, "an orphan has no journal entry to block it with; left as it is");
            continue;
        };
        e.op = Op::Replace;
        e.request_id = format!("reconcile-{run_id}");
        e.state.insert("active".into(), Value::Bool(false));
        applied += write(req, store, &claims, std::slice::from_ref(&e)).await.map_err(|err| match err {
            ApplyError::Target { error, .. } => ApplyError::Target { applied, error },
            other => other,
        })?;
        progress.advance(1);
    }
    Ok(applied)
}

/// Writes entries through the target and records links and audit rows; returns how many were applied.
/// A batch refused for one entry's sake (a constraint, an ambiguous match) is written again entry by
/// entry, so that one bad row costs only itself; each refusal is in the audit trail. A target that cannot
/// be reached ends the run.
async fn write(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    claims: &StagedClaims,
    entries: &[Entry],
) -> Result<usize, ApplyError> {
    match write_batch(req, store, claims, entries).await? {
        Ok(n) => Ok(n),
        Err(error) if error.is_transient() || entries.len() == 1 => {
            record_errors(req, store, entries, &error).await?;
            if error.is_transient() {
                return Err(ApplyError::Target { applied: 0, error });
            }
            Ok(0)
        }
        Err(_) => {
            let mut applied = 0;
            for e in entries {
                match write_batch(req, store, claims, std::slice::from_ref(e)).await? {
                    Ok(n) => applied += n,
                    Err(error) => {
                        record_errors(req, store, std::slice::from_ref(e), &error).await?;
                        if error.is_transient() {
                            return Err(ApplyError::Target { applied, error });
                        }
                        tracing::warn!(target = %req.target.name(), tenant = %e.tenant_name, id = %e.resource_id, error = %error.report(), "reconciliation could not write this resource");
                    }
                }
            }
            Ok(applied)
        }
    }
}

async fn write_batch(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    claims: &StagedClaims,
    entries: &[Entry],
) -> Result<Result<usize, TargetError>, StagingError> {
    let name = req.target.name().to_owned();
    let mut resources: HashSet<ResourceRef> = entries.iter().map(Entry::resource).collect();
    for e in entries {
        resources.extend(e.referenced());
    }
    let mut links = store.links(&name, &resources).await?;
    let applied = match req.target.apply_batch(entries, &mut links, claims).await {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let mut record = Record::new(&name);
    for (e, a) in entries.iter().zip(applied) {
        tracing::info!(target = %name, tenant = %e.tenant_name, request_id = %e.request_id, kind = e.kind.as_str(), id = %e.resource_id, outcome = a.outcome.as_str(), key = a.key.as_deref().unwrap_or("-"), detail = %a.detail, "reconciled");
        record.applied.push((e.clone(), a));
    }
    let n = record.applied.len();
    store.record(record).await?;
    Ok(Ok(n))
}

async fn record_errors(
    req: &Request<'_>,
    store: &Arc<dyn Ledger>,
    entries: &[Entry],
    error: &TargetError,
) -> Result<(), StagingError> {
    let mut record = Record::new(req.target.name());
    for e in entries {
        record.errors.push((e.clone(), error.report()));
    }
    store.record(record).await
}
