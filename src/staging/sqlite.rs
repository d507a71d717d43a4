//! The embedded backend: the traits of [`super::store`] implemented by the SQLite types. The resource side
//! is [`SqliteStaging`] (one writer thread with group commit, pooled readers); everything else is
//! [`SqliteLedger`], whose synchronous queries run here on the blocking pool.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::journal::{ChangeSeq, Entry, Links, ResourceRef, TenantId};
use super::ledger::{
    AuditRow, Candidate, Desired, Failure, Health, LeaseHeld, PendingMember, Record, Run, RunStatus, SqliteLedger,
    Story, TargetLink, TargetStats,
};
use super::store::{AuditLog, OperatorLog, ReplayLog, ResourceStore, RunLog};
use super::{Change, Committed, ListQuery, Page, SqliteStaging, StagingError, Stored, Tenant, TenantInfo, tenants};
use crate::scim::Rules;
use crate::scim::schema::Kind;

#[async_trait]
impl ResourceStore for SqliteStaging {
    async fn write(
        &self,
        tenant: TenantId,
        request_id: &str,
        rules: Rules,
        change: Change,
    ) -> Result<Committed, StagingError> {
        SqliteStaging::write(self, tenant, request_id, rules, change).await
    }
    async fn get(
        &self,
        tenant: TenantId,
        kind: Kind,
        id: String,
        with_members: bool,
    ) -> Result<Option<Stored>, StagingError> {
        SqliteStaging::get(self, tenant, kind, id, with_members).await
    }
    async fn list(&self, tenant: TenantId, kind: Kind, q: ListQuery) -> Result<Page, StagingError> {
        SqliteStaging::list(self, tenant, kind, q).await
    }
    async fn authenticate(&self, token: &str) -> Result<Option<Tenant>, StagingError> {
        SqliteStaging::authenticate(self, token).await
    }
    async fn tenants(&self) -> Result<Vec<Tenant>, StagingError> {
        SqliteStaging::tenants(self).await
    }
    async fn probe_write(&self, timeout: Duration) -> Result<(), String> {
        SqliteStaging::probe_write(self, timeout).await
    }
    async fn writer_answers(&self, timeout: Duration) -> bool {
        SqliteStaging::writer_answers(self, timeout).await
    }
    fn commits(&self) -> watch::Receiver<u64> {
        SqliteStaging::commits(self)
    }
    fn disk_bytes(&self) -> Option<i64> {
        Some(self.file_bytes())
    }
    async fn close(&self) {
        SqliteStaging::close(self).await;
    }
}

#[async_trait]
impl ReplayLog for SqliteLedger {
    async fn cursor(&self, target: &str) -> Result<ChangeSeq, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.cursor(&target)).await
    }
    async fn head(&self) -> Result<ChangeSeq, StagingError> {
        self.run(move |s| s.head()).await
    }
    async fn fetch(
        &self,
        tenants: &[String],
        after: ChangeSeq,
        limit: usize,
    ) -> Result<(Vec<Entry>, ChangeSeq), StagingError> {
        let tenants = tenants.to_vec();
        self.run(move |s| s.fetch(&tenants, after, limit)).await
    }
    async fn entry(&self, seq: ChangeSeq) -> Result<Option<Entry>, StagingError> {
        self.run(move |s| s.entry(seq)).await
    }
    async fn links(&self, target: &str, resources: &HashSet<ResourceRef>) -> Result<Links, StagingError> {
        let (target, resources) = (target.to_owned(), resources.clone());
        self.run(move |s| s.links(&target, &resources)).await
    }
    async fn link_owner(&self, target: &str, kind: Kind, key: &str) -> Result<Option<ResourceRef>, StagingError> {
        // A single indexed read on a connection of its own, short enough to run inline while a target
        // applies a change (the blocking pool would add a thread hop per lookup).
        self.owner(target, kind, key)
    }
    async fn blocked(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.blocked(&target)).await
    }
    async fn due(&self, target: &str, now_ms: i64) -> Result<Vec<Failure>, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.due(&target, now_ms)).await
    }
    async fn next_due(&self, target: &str) -> Result<Option<i64>, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.next_due(&target)).await
    }
    async fn waiting(&self, target: &str, resource: &ResourceRef) -> Result<Vec<Failure>, StagingError> {
        let (target, resource) = (target.to_owned(), resource.clone());
        self.run(move |s| s.waiting(&target, &resource)).await
    }
    async fn record(&self, step: Record) -> Result<(), StagingError> {
        self.run(move |s| s.record(&step)).await
    }
    async fn record_health(
        &self,
        target: &str,
        reachable: bool,
        error: Option<&str>,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StagingError> {
        let (target, error) = (target.to_owned(), error.map(str::to_owned));
        self.run(move |s| s.record_health(&target, reachable, error.as_deref(), next_attempt_ms)).await
    }
    async fn replay_paused(&self, target: &str, now_ms: i64) -> Result<bool, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.replay_paused(&target, now_ms)).await
    }
}

#[async_trait]
impl RunLog for SqliteLedger {
    async fn tenant_ids(&self) -> Result<Vec<(TenantId, String)>, StagingError> {
        self.run(move |s| s.tenant_ids()).await
    }
    async fn resource_count(&self, tenants: &[TenantId]) -> Result<i64, StagingError> {
        let tenants = tenants.to_vec();
        self.run(move |s| s.resource_count(&tenants)).await
    }
    async fn desired_page(
        &self,
        tenants: &[TenantId],
        kind: Kind,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Desired>, StagingError> {
        let tenants = tenants.to_vec();
        self.run(move |s| s.desired_page(&tenants, kind, after, limit)).await
    }
    async fn target_links(&self, target: &str) -> Result<Vec<TargetLink>, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.target_links(&target)).await
    }
    async fn unreplayed(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.unreplayed(&target)).await
    }
    async fn last_entry(&self, resource: &ResourceRef) -> Result<Option<Entry>, StagingError> {
        let resource = resource.clone();
        self.run(move |s| s.last_entry(&resource)).await
    }
    async fn start_run(
        &self,
        target: &str,
        trigger: &str,
        dry_run: bool,
        holder: &str,
        now_ms: i64,
    ) -> Result<Result<i64, LeaseHeld>, StagingError> {
        let (target, trigger, holder) = (target.to_owned(), trigger.to_owned(), holder.to_owned());
        self.run(move |s| s.start_run(&target, &trigger, dry_run, &holder, now_ms)).await
    }
    async fn renew_lease(
        &self,
        target: &str,
        run_id: i64,
        pause_replay: bool,
        now_ms: i64,
    ) -> Result<(), StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.renew_lease(&target, run_id, pause_replay, now_ms)).await
    }
    async fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        counts: &BTreeMap<String, i64>,
        detail: Option<&str>,
    ) -> Result<(), StagingError> {
        let (counts, detail) = (counts.clone(), detail.map(str::to_owned));
        self.run(move |s| s.finish_run(run_id, status, &counts, detail.as_deref())).await
    }
    async fn runs(&self, target: Option<&str>, limit: usize) -> Result<Vec<Run>, StagingError> {
        let target = target.map(str::to_owned);
        self.run(move |s| s.runs(target.as_deref(), limit)).await
    }
}

#[async_trait]
impl AuditLog for SqliteLedger {
    async fn history(
        &self,
        target: Option<&str>,
        since: Option<&str>,
        outcome: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StagingError> {
        let (target, since, outcome) =
            (target.map(str::to_owned), since.map(str::to_owned), outcome.map(str::to_owned));
        self.run(move |s| s.history(target.as_deref(), since.as_deref(), outcome.as_deref(), limit)).await
    }
    async fn find_resources(&self, query: &str) -> Result<Vec<Candidate>, StagingError> {
        let query = query.to_owned();
        self.run(move |s| s.find_resources(&query)).await
    }
    async fn resource_name(&self, tenant: TenantId, id: &str) -> Result<Option<String>, StagingError> {
        let id = id.to_owned();
        self.run(move |s| s.resource_name(tenant, &id)).await
    }
    async fn story(&self, resource: &Candidate) -> Result<Story, StagingError> {
        let resource = resource.clone();
        self.run(move |s| s.story(&resource)).await
    }
    async fn prune(&self, targets: &[String], cutoff: &str) -> Result<(u64, u64), StagingError> {
        let (targets, cutoff) = (targets.to_vec(), cutoff.to_owned());
        self.run(move |s| s.prune(&targets, &cutoff)).await
    }
}

#[async_trait]
impl OperatorLog for SqliteLedger {
    async fn list_failures(&self, target: Option<&str>) -> Result<Vec<Failure>, StagingError> {
        let target = target.map(str::to_owned);
        self.run(move |s| s.list_failures(target.as_deref())).await
    }
    async fn retry(
        &self,
        target: Option<&str>,
        seq: Option<ChangeSeq>,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError> {
        let target = target.map(str::to_owned);
        self.run(move |s| s.retry(target.as_deref(), seq, now_ms)).await
    }
    async fn discard(
        &self,
        target: Option<&str>,
        seq: ChangeSeq,
        operator: &str,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError> {
        let (target, operator) = (target.map(str::to_owned), operator.to_owned());
        self.run(move |s| s.discard(target.as_deref(), seq, &operator, now_ms)).await
    }
    async fn has_entry(&self, seq: ChangeSeq) -> Result<bool, StagingError> {
        self.run(move |s| s.has_entry(seq)).await
    }
    async fn tenant_counts(&self) -> Result<Vec<(String, i64, i64)>, StagingError> {
        self.run(move |s| s.tenant_counts()).await
    }
    async fn health(&self) -> Result<Vec<Health>, StagingError> {
        self.run(move |s| s.health()).await
    }
    async fn changes_per_tenant(&self) -> Result<Vec<(String, i64)>, StagingError> {
        self.run(move |s| s.changes_per_tenant()).await
    }
    async fn target_stats(&self, target: &str) -> Result<TargetStats, StagingError> {
        let target = target.to_owned();
        self.run(move |s| s.target_stats(&target)).await
    }
    async fn pending_count(&self) -> Result<i64, StagingError> {
        self.run(move |s| s.pending_count()).await
    }
    async fn pending_members(&self) -> Result<Vec<PendingMember>, StagingError> {
        self.run(move |s| s.pending_members()).await
    }
    async fn tenant_infos(&self) -> Result<Vec<TenantInfo>, StagingError> {
        self.run(move |s| tenants::tenant_infos(s.path())).await
    }
    async fn rotate_token(&self, name: &str) -> Result<(Tenant, String), StagingError> {
        let name = name.to_owned();
        self.run(move |s| tenants::rotate_token(s.path(), &name)).await
    }
    async fn revoke_token(&self, name: &str) -> Result<bool, StagingError> {
        let name = name.to_owned();
        self.run(move |s| tenants::revoke_token(s.path(), &name)).await
    }
    async fn tenant_names(&self) -> Result<Vec<String>, StagingError> {
        self.run(move |s| tenants::tenant_names(s.path())).await
    }
}
