//! What reconciliation reads and writes in staging: the desired state (the current resources of the
//! tenants bound to a target, in pages), a target's links, the resources replay still owes the target,
//! the runs and their lease.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{OptionalExtension, params, params_from_iter};
use serde_json::{Map, Value};

use super::{ENTRY_COLUMNS, SqliteLedger, entry_from_row, now, to_entry};
use crate::scim::schema::Kind;
use crate::staging::StagingError;
use crate::staging::journal::{Entry, ResourceId, ResourceRef, TenantId};
use crate::staging::read::{parse_body, parse_kind};

/// A resource as staging has it now: what the target should hold.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Creation order, the position for the next page.
    pub seq: i64,
    pub tenant: TenantId,
    pub tenant_name: String,
    pub kind: Kind,
    pub id: ResourceId,
    pub state: Map<String, Value>,
    /// When it last changed (RFC 3339).
    pub at: String,
    /// A group's members.
    pub members: Vec<ResourceId>,
    /// Its newest journal entry.
    pub last_seq: i64,
}

impl Desired {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef { tenant: self.tenant, id: self.id.clone() }
    }
}

/// A resource's link to a row or entry of the target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetLink {
    pub resource: ResourceRef,
    pub kind: Kind,
    pub key: String,
    /// Made by creating the row (rather than finding it by email).
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    /// Finished (applied, or planned for a dry run).
    Done,
    /// Stopped before changing anything (the safety limit).
    Stopped,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> RunStatus {
        match s {
            "done" => RunStatus::Done,
            "stopped" => RunStatus::Stopped,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Running,
        }
    }
}

/// A reconciliation run as recorded.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub target: String,
    /// "schedule" or "manual".
    pub trigger: String,
    pub dry_run: bool,
    pub started: String,
    pub ended: Option<String>,
    pub status: RunStatus,
    pub counts: BTreeMap<String, i64>,
    pub detail: Option<String>,
}

/// Another run holds the target's lease.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "a reconciliation run of target {target:?} is in progress (run {run_id}, {holder}); try again when it has finished"
)]
pub struct LeaseHeld {
    pub target: String,
    pub run_id: i64,
    pub holder: String,
}

/// How long a lease lasts without renewal: a run that died frees its target after this.
pub const LEASE_MS: i64 = 60_000;

impl SqliteLedger {
    /// Up to `limit` current resources of `kind` of the given tenants after position `after`, in creation
    /// order, with each group's members.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn desired_page(
        &self,
        tenants: &[TenantId],
        kind: Kind,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Desired>, StagingError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let marks = vec!["?"; tenants.len()].join(", ");
            let sql = format!(
                "SELECT r.seq, r.tenant_id, t.name, r.id, r.body, r.last_modified,
                   (SELECT MAX(j.seq) FROM journal j WHERE j.tenant_id = r.tenant_id AND j.resource_id = r.id)
                 FROM resources r JOIN tenants t ON t.id = r.tenant_id
                 WHERE r.seq > ? AND r.kind = ? AND r.tenant_id IN ({marks}) ORDER BY r.seq LIMIT ?"
            );
            let mut values: Vec<rusqlite::types::Value> = vec![after.into(), kind.as_str().to_owned().into()];
            values.extend(tenants.iter().map(|t| rusqlite::types::Value::from(t.0)));
            values.push((limit as i64).into());
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                Ok((
                    (r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                    (r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, Option<i64>>(6)?),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let ((seq, tenant, tenant_name, id), (body, at, last_seq)) = row?;
                out.push(Desired {
                    seq,
                    tenant: TenantId(tenant),
                    tenant_name,
                    kind,
                    id: ResourceId(id),
                    state: parse_body(&body)?,
                    at,
                    members: Vec::new(),
                    last_seq: last_seq.unwrap_or_default(),
                });
            }
            if kind == Kind::Group {
                let mut members = c.prepare_cached(
                    "SELECT m.id FROM group_members g JOIN resources m ON m.seq = g.member_seq WHERE g.group_seq = ?1 ORDER BY m.seq",
                )?;
                for d in &mut out {
                    d.members = members.query_map([d.seq], |r| r.get::<_, String>(0))?.map(|r| r.map(ResourceId)).collect::<Result<_, _>>()?;
                }
            }
            Ok(out)
        })
    }

    /// Every tenant: id and name.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn tenant_ids(&self) -> Result<Vec<(TenantId, String)>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT id, name FROM tenants ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((TenantId(r.get(0)?), r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// How many resources these tenants have (kept by triggers; no scan).
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn resource_count(&self, tenants: &[TenantId]) -> Result<i64, StagingError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT COALESCE(SUM(count), 0) FROM resource_counts WHERE tenant_id = ?1")?;
            let mut total = 0;
            for t in tenants {
                total += stmt.query_row([t.0], |r| r.get::<_, i64>(0))?;
            }
            Ok(total)
        })
    }

    /// Every link of a target.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn target_links(&self, target: &str) -> Result<Vec<TargetLink>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT tenant_id, resource_id, kind, downstream_key, origin FROM links WHERE target = ?1",
            )?;
            let rows = stmt.query_map([target], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, id, kind, key, origin) = row?;
                out.push(TargetLink {
                    resource: ResourceRef { tenant: TenantId(tenant), id: ResourceId(id) },
                    kind: parse_kind(&kind)?,
                    key,
                    created: origin == "created",
                });
            }
            Ok(out)
        })
    }

    /// The resources replay still owes a target: with journal entries after its position, or with failed
    /// entries (retrying, dead, waiting). A reconciliation run leaves them to replay.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn unreplayed(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError> {
        let cursor = self.cursor(target)?;
        self.with(|c| {
            let mut out = HashSet::new();
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT tenant_id, resource_id FROM journal WHERE seq > ?1
                 UNION SELECT tenant_id, resource_id FROM replay_failures WHERE target = ?2",
            )?;
            for row in
                stmt.query_map(params![cursor.0, target], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            {
                let (tenant, id) = row?;
                out.insert(ResourceRef { tenant: TenantId(tenant), id: ResourceId(id) });
            }
            Ok(out)
        })
    }

    /// The newest journal entry of a resource (for one that is gone: its state before the delete).
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn last_entry(&self, resource: &ResourceRef) -> Result<Option<Entry>, StagingError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM journal j JOIN tenants t ON t.id = j.tenant_id
                 WHERE j.tenant_id = ?1 AND j.resource_id = ?2 ORDER BY j.seq DESC LIMIT 1"
            );
            let raw = c
                .prepare_cached(&sql)?
                .query_row(params![resource.tenant.0, resource.id.as_str()], entry_from_row)
                .optional()?;
            raw.map(to_entry).transpose()
        })
    }

    /// Starts a run: takes the target's lease (refused while another live run holds it) and records the
    /// run, in one transaction.
    ///
    /// # Errors
    /// `Ok(Err(LeaseHeld))` when another run holds the target; `Err` when staging cannot be written.
    pub(in crate::staging) fn start_run(
        &self,
        target: &str,
        trigger: &str,
        dry_run: bool,
        holder: &str,
        now_ms: i64,
    ) -> Result<Result<i64, LeaseHeld>, StagingError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held: Option<(i64, String)> = tx
                .query_row(
                    "SELECT run_id, holder FROM reconcile_leases WHERE target = ?1 AND expires > ?2",
                    params![target, now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((run_id, holder)) = held {
                return Ok(Err(LeaseHeld { target: target.to_owned(), run_id, holder }));
            }
            tx.execute(
                "INSERT INTO reconcile_runs (target, trigger, dry_run, started, status) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![target, trigger, dry_run, now()],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT OR REPLACE INTO reconcile_leases (target, run_id, holder, pauses_replay, expires) VALUES (?1, ?2, ?3, 0, ?4)",
                params![target, id, holder, now_ms + LEASE_MS],
            )?;
            tx.commit()?;
            Ok(Ok(id))
        })
    }

    /// Keeps a run's lease alive; `pause_replay` holds the target's replay while the run applies its plan.
    ///
    /// # Errors
    /// The staging database cannot be written.
    pub(in crate::staging) fn renew_lease(
        &self,
        target: &str,
        run_id: i64,
        pause_replay: bool,
        now_ms: i64,
    ) -> Result<(), StagingError> {
        self.with(|c| {
            c.execute(
                "UPDATE reconcile_leases SET expires = ?3, pauses_replay = ?4 WHERE target = ?1 AND run_id = ?2",
                params![target, run_id, now_ms + LEASE_MS, pause_replay],
            )?;
            Ok(())
        })
    }

    /// Whether a live run holds this target's replay while it applies its plan.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn replay_paused(&self, target: &str, now_ms: i64) -> Result<bool, StagingError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT 1 FROM reconcile_leases WHERE target = ?1 AND pauses_replay = 1 AND expires > ?2",
            )?
            .query_row(params![target, now_ms], |_| Ok(()))
            .optional()?
            .is_some())
        })
    }

    /// Records how a run ended and frees its target.
    ///
    /// # Errors
    /// The staging database cannot be written.
    pub(in crate::staging) fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        counts: &BTreeMap<String, i64>,
        detail: Option<&str>,
    ) -> Result<(), StagingError> {
        let counts = serde_json::to_string(counts).unwrap_or_default();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE reconcile_runs SET ended = ?2, status = ?3, counts = ?4, detail = ?5 WHERE id = ?1",
                params![run_id, now(), status.as_str(), counts, detail],
            )?;
            tx.execute("DELETE FROM reconcile_leases WHERE run_id = ?1", [run_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Runs, newest first: of one target or all, at most `limit`.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn runs(&self, target: Option<&str>, limit: usize) -> Result<Vec<Run>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, target, trigger, dry_run, started, ended, status, counts, detail FROM reconcile_runs
                 WHERE ?1 IS NULL OR target = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![target, limit as i64], |r| {
                let counts: Option<String> = r.get(7)?;
                Ok(Run {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    trigger: r.get(2)?,
                    dry_run: r.get(3)?,
                    started: r.get(4)?,
                    ended: r.get(5)?,
                    status: RunStatus::parse(&r.get::<_, String>(6)?),
                    counts: counts.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default(),
                    detail: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_per_target_and_a_dead_run_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLedger::open(&dir.path().join("s.db")).unwrap();
        let first = store.start_run("crm", "schedule", false, "pid 1", 1_000).unwrap().unwrap();
        let held = store.start_run("crm", "manual", true, "pid 2", 2_000).unwrap().unwrap_err();
        assert_eq!((held.run_id, held.holder.as_str()), (first, "pid 1"));
        assert!(held.to_string().contains("in progress"), "{held}");
        assert!(store.start_run("ldap", "manual", true, "pid 2", 2_000).unwrap().is_ok(), "other targets are free");
        // Paused only while the run says so, and only while its lease lives.
        assert!(!store.replay_paused("crm", 2_000).unwrap());
        store.renew_lease("crm", first, true, 2_000).unwrap();
        assert!(store.replay_paused("crm", 3_000).unwrap());
        assert!(!store.replay_paused("crm", 2_000 + LEASE_MS).unwrap(), "an expired lease pauses nothing");
        // A run that died (no renewal) frees the target once its lease expires.
        let next = store.start_run("crm", "manual", false, "pid 3", 2_000 + LEASE_MS).unwrap().unwrap();
        store.finish_run(next, RunStatus::Done, &[("create".to_owned(), 2)].into_iter().collect(), None).unwrap();
        assert!(
            store.start_run("crm", "manual", false, "pid 4", 2_000 + LEASE_MS).unwrap().is_ok(),
            "finished frees it"
        );
        let runs = store.runs(Some("crm"), 10).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.status).collect::<Vec<_>>(),
            [RunStatus::Running, RunStatus::Done, RunStatus::Running]
        );
        assert_eq!(runs[1].counts["create"], 2);
    }
}
