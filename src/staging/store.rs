//! What the pipeline needs of staging, as traits: the rest of the crate reaches staging only through these,
//! so that a second backend (PostgreSQL, for two nodes on one database) can be added beside the embedded
//! SQLite one without touching `http`, `replay` or `reconcile`.
//!
//! - [`ResourceStore`]: stage a change durably, read resources and lists, authenticate tenants (the SCIM
//!   endpoint's side);
//! - [`ReplayLog`]: the journal as replay reads it, link lookups, and the record of each replay step;
//! - [`RunLog`]: what reconciliation reads (desired state, links) and its runs with their lease;
//! - [`AuditLog`]: the audit trail, one resource's story, retention;
//! - [`OperatorLog`]: what operators and monitoring read and do (failures, retry, discard, health, counts,
//!   tokens);
//! - [`Ledger`]: all of the last four, for the parts that use several.
//!
//! Every method is async: a networked backend waits on its server, and the embedded one runs its SQLite
//! work on the blocking pool. The traits are object-safe (`Arc<dyn Ledger>`), because which backend runs
//! is chosen in the configuration, at run time.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::journal::{ChangeSeq, Entry, Links, ResourceRef, TenantId};
use super::ledger::{
    AuditRow, Candidate, Desired, Failure, Health, LeaseHeld, PendingMember, Record, Run, RunStatus, Story, TargetLink,
    TargetStats,
};
use super::{Change, Committed, ListQuery, Page, StagingError, Stored, Tenant, TenantInfo};
use crate::scim::Rules;
use crate::scim::schema::Kind;

/// Stage changes and read what is staged: everything the SCIM endpoint does with staging.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Stages a change. Returns only after the change and its journal entry are durable: a 2xx may be
    /// answered on `Ok`.
    ///
    /// # Errors
    /// `Rejected` for a request that cannot apply (answered to the client as is); any other error means
    /// nothing of the change was stored.
    async fn write(
        &self,
        tenant: TenantId,
        request_id: &str,
        rules: Rules,
        change: Change,
    ) -> Result<Committed, StagingError>;

    /// One resource by id, with its members when `with_members` (groups).
    async fn get(
        &self,
        tenant: TenantId,
        kind: Kind,
        id: String,
        with_members: bool,
    ) -> Result<Option<Stored>, StagingError>;

    /// A page of the resources matching the query's filter, in its order.
    async fn list(&self, tenant: TenantId, kind: Kind, q: ListQuery) -> Result<Page, StagingError>;

    /// The tenant a bearer token belongs to, if any; looked up on every request, so that a rotation takes
    /// effect at once.
    async fn authenticate(&self, token: &str) -> Result<Option<Tenant>, StagingError>;

    /// All tenants.
    async fn tenants(&self) -> Result<Vec<Tenant>, StagingError>;

    /// Whether staging takes a durable write now, within `timeout` (readiness).
    ///
    /// # Errors
    /// Why it does not, for the operator.
    async fn probe_write(&self, timeout: Duration) -> Result<(), String>;

    /// Whether staging's writing side answers at all within `timeout`, whatever the outcome of the write:
    /// the service manager's watchdog restarts a stuck writer, not a full disk.
    async fn writer_answers(&self, timeout: Duration) -> bool;

    /// Changes whenever new journal entries may have been committed: replay waits on it instead of polling.
    fn commits(&self) -> watch::Receiver<u64>;

    /// Bytes staging occupies on this machine's disk, where that is known (the embedded database's files).
    fn disk_bytes(&self) -> Option<i64>;

    /// Stops taking writes after everything queued before this call is committed.
    async fn close(&self);
}

/// The journal as replay reads it, the links replay keeps, and the record of each replay step.
#[async_trait]
pub trait ReplayLog: Send + Sync {
    /// How far a target has read the journal.
    async fn cursor(&self, target: &str) -> Result<ChangeSeq, StagingError>;

    /// The newest journal sequence.
    async fn head(&self) -> Result<ChangeSeq, StagingError>;

    /// Journal entries after `after` of the named tenants, oldest first, and the journal position this read
    /// covers (entries of other tenants up to it need nothing from this target).
    async fn fetch(
        &self,
        tenants: &[String],
        after: ChangeSeq,
        limit: usize,
    ) -> Result<(Vec<Entry>, ChangeSeq), StagingError>;

    /// One journal entry.
    async fn entry(&self, seq: ChangeSeq) -> Result<Option<Entry>, StagingError>;

    /// Known links of a target for these resources.
    async fn links(&self, target: &str, resources: &HashSet<ResourceRef>) -> Result<Links, StagingError>;

    /// The resource linked to downstream `key` of this kind in this target, if any, across every tenant.
    async fn link_owner(&self, target: &str, kind: Kind, key: &str) -> Result<Option<ResourceRef>, StagingError>;

    /// Resources of a target that have a failed entry (their later entries must wait).
    async fn blocked(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError>;

    /// The earliest failed entry of each blocked resource, when it is due for another attempt.
    async fn due(&self, target: &str, now_ms: i64) -> Result<Vec<Failure>, StagingError>;

    /// When the next retry of a target is due, if any (unix milliseconds).
    async fn next_due(&self, target: &str) -> Result<Option<i64>, StagingError>;

    /// The entries waiting behind a resource's failure, in order.
    async fn waiting(&self, target: &str, resource: &ResourceRef) -> Result<Vec<Failure>, StagingError>;

    /// Commits one replay step (links, audit, failures, cursor) as one transaction.
    async fn record(&self, step: Record) -> Result<(), StagingError>;

    /// Records that a target is reachable, or that an attempt to reach it failed.
    async fn record_health(
        &self,
        target: &str,
        reachable: bool,
        error: Option<&str>,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StagingError>;

    /// Whether a reconciliation run holds the target's replay while it applies its plan.
    async fn replay_paused(&self, target: &str, now_ms: i64) -> Result<bool, StagingError>;
}

/// What reconciliation reads of staging, and its runs with the lease that keeps two from overlapping.
#[async_trait]
pub trait RunLog: Send + Sync {
    /// All tenants by id.
    async fn tenant_ids(&self) -> Result<Vec<(TenantId, String)>, StagingError>;

    /// How many resources these tenants hold.
    async fn resource_count(&self, tenants: &[TenantId]) -> Result<i64, StagingError>;

    /// Up to `limit` current resources of `kind` of these tenants after position `after`, in creation order.
    async fn desired_page(
        &self,
        tenants: &[TenantId],
        kind: Kind,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Desired>, StagingError>;

    /// Every link of a target.
    async fn target_links(&self, target: &str) -> Result<Vec<TargetLink>, StagingError>;

    /// Resources with changes the target has not replayed yet (reconciliation leaves them to replay).
    async fn unreplayed(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError>;

    /// A resource's newest journal entry.
    async fn last_entry(&self, resource: &ResourceRef) -> Result<Option<Entry>, StagingError>;

    /// Starts a run: takes the target's lease and records the run together.
    ///
    /// # Errors
    /// `Ok(Err(LeaseHeld))` when another run holds the target.
    async fn start_run(
        &self,
        target: &str,
        trigger: &str,
        dry_run: bool,
        holder: &str,
        now_ms: i64,
    ) -> Result<Result<i64, LeaseHeld>, StagingError>;

    /// Keeps a run's lease alive; `pause_replay` holds the target's replay while the run applies.
    async fn renew_lease(&self, target: &str, run_id: i64, pause_replay: bool, now_ms: i64)
    -> Result<(), StagingError>;

    /// Ends a run with its status and counts, and frees the lease.
    async fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        counts: &BTreeMap<String, i64>,
        detail: Option<&str>,
    ) -> Result<(), StagingError>;

    /// Runs, newest first: of one target or all, at most `limit`.
    async fn runs(&self, target: Option<&str>, limit: usize) -> Result<Vec<Run>, StagingError>;
}

/// The audit trail and what it tells of one resource; retention.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Audit rows newest first: of one target or all, since a time (RFC 3339), with one outcome.
    async fn history(
        &self,
        target: Option<&str>,
        since: Option<&str>,
        outcome: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StagingError>;

    /// The resources a query names (id, userName, group name, email, downstream key).
    async fn find_resources(&self, query: &str) -> Result<Vec<Candidate>, StagingError>;

    /// A resource's userName or group name, while it exists.
    async fn resource_name(&self, tenant: TenantId, id: &str) -> Result<Option<String>, StagingError>;

    /// Everything staging knows of one resource.
    async fn story(&self, resource: &Candidate) -> Result<Story, StagingError>;

    /// Removes journal entries and audit rows older than `cutoff` (RFC 3339): of the journal only entries
    /// every target in `targets` has replayed, that no failure refers to, and that are not their resource's
    /// newest. Returns (journal entries, audit rows) removed.
    async fn prune(&self, targets: &[String], cutoff: &str) -> Result<(u64, u64), StagingError>;
}

/// What operators and monitoring read and do: failures, retry and discard, reachability, counts, tokens.
#[async_trait]
pub trait OperatorLog: Send + Sync {
    /// All failure rows (of one target, or all).
    async fn list_failures(&self, target: Option<&str>) -> Result<Vec<Failure>, StagingError>;

    /// Makes dead letters (all of a target's, or one) due again. Returns those queued.
    async fn retry(
        &self,
        target: Option<&str>,
        seq: Option<ChangeSeq>,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError>;

    /// Drops the dead letters with this sequence number (of one target, or of every target that has one),
    /// each recorded in the audit trail with `operator`; the next change of the resource waiting behind it
    /// becomes due. Returns the dead letters dropped.
    async fn discard(
        &self,
        target: Option<&str>,
        seq: ChangeSeq,
        operator: &str,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError>;

    /// Whether the journal has an entry with this sequence number.
    async fn has_entry(&self, seq: ChangeSeq) -> Result<bool, StagingError>;

    /// Per tenant: its name, users and groups.
    async fn tenant_counts(&self) -> Result<Vec<(String, i64, i64)>, StagingError>;

    /// Every target's reachability as replay last found it.
    async fn health(&self) -> Result<Vec<Health>, StagingError>;

    /// Journal entries per tenant.
    async fn changes_per_tenant(&self) -> Result<Vec<(String, i64)>, StagingError>;

    /// A target's position and failures.
    async fn target_stats(&self, target: &str) -> Result<TargetStats, StagingError>;

    /// How many memberships name a member that does not exist yet.
    async fn pending_count(&self) -> Result<i64, StagingError>;

    /// The memberships that name a member that does not exist yet.
    async fn pending_members(&self) -> Result<Vec<PendingMember>, StagingError>;

    /// Tenants with their token's age.
    async fn tenant_infos(&self) -> Result<Vec<TenantInfo>, StagingError>;

    /// Creates the tenant if needed and gives it a new token (the old one stops working); returns the token.
    async fn rotate_token(&self, name: &str) -> Result<(Tenant, String), StagingError>;

    /// Revokes a tenant's token; false when there is no such tenant.
    async fn revoke_token(&self, name: &str) -> Result<bool, StagingError>;

    /// The names of the tenants.
    async fn tenant_names(&self) -> Result<Vec<String>, StagingError>;
}

/// Everything staging keeps beside the resources, for the parts that use several of its traits.
pub trait Ledger: ReplayLog + RunLog + AuditLog + OperatorLog {}

impl<T: ReplayLog + RunLog + AuditLog + OperatorLog> Ledger for T {}

/// Both sides of one staging database.
#[derive(Clone)]
pub struct Stores {
    pub resources: Arc<dyn ResourceStore>,
    pub ledger: Arc<dyn Ledger>,
}

/// Opens the ledger of the staging database at `path` (the embedded SQLite store), for the commands that
/// read or repair replay's state without serving.
///
/// # Errors
/// The database cannot be opened or migrated.
pub fn open_ledger(path: &Path) -> Result<Arc<dyn Ledger>, StagingError> {
    Ok(Arc::new(super::ledger::SqliteLedger::open(path)?))
}
