//! Replay: workers that read the journal and apply it to each target bound to the entry's tenant. Changes to
//! one resource apply strictly in order; different resources apply in parallel, batched into shared
//! downstream transactions. A target that is down is retried with exponential backoff and jitter, without
//! limit and without losing its place; an entry that fails permanently is retried a few times and then
//! parked as a dead letter, while later entries of that resource wait behind it and others go on.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::ReplayConfig;
use crate::ops::alerts::{Alerts, Event};
use crate::scim::schema::Kind;
use crate::staging::journal::{Applied, ChangeSeq, Entry, Links, ResourceRef};
use crate::staging::ledger::{Failure, FailureState, Record};
use crate::staging::{ReplayLog, StagingError};
use crate::targets::link::StagedClaims;
use crate::targets::{Claims, Target, TargetError};

/// Replay settings (the `[replay]` section).
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// Journal entries read per step.
    pub batch_size: usize,
    /// Attempts of an entry that fails permanently before it becomes a dead letter.
    pub max_attempts: i64,
    /// First backoff, doubled per failure up to `backoff_max`, with ±25 % jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often an idle worker makes sure its target still answers.
    pub probe_interval: Duration,
    /// Told when a target goes down or comes back, and of dead letters.
    pub alerts: Alerts,
}

impl From<&ReplayConfig> for ReplaySettings {
    fn from(r: &ReplayConfig) -> Self {
        ReplaySettings {
            batch_size: r.batch_size,
            max_attempts: r.max_attempts,
            backoff_initial: Duration::from_millis(r.backoff_initial_ms),
            backoff_max: Duration::from_secs(r.backoff_max_seconds),
            probe_interval: Duration::from_secs(r.probe_interval_seconds),
            alerts: Alerts::none(),
        }
    }
}

impl Default for ReplaySettings {
    fn default() -> Self {
        (&ReplayConfig::default()).into()
    }
}

/// What replay needs of a target. [`Target`] is the real one; the tests use one in memory.
pub trait ReplayTarget: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// How many batches may be applied at once.
    fn parallelism(&self) -> usize;
    fn check(&self) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Missing downstream indexes, as WARN lines to log at start (see [`Target::index_advice`]).
    fn missing_indexes(&self) -> impl Future<Output = Vec<String>> + Send;
    /// See [`Target::ping`].
    fn ping(&self) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// See [`Target::apply_batch`].
    fn apply_batch<'a>(
        &'a self,
        entries: &'a [Entry],
        links: &'a mut Links,
        claims: &'a dyn Claims,
    ) -> impl Future<Output = Result<Vec<Applied>, TargetError>> + Send + 'a;
}

impl ReplayTarget for Target {
    fn name(&self) -> &str {
        Target::name(self)
    }
    fn parallelism(&self) -> usize {
        Target::parallelism(self)
    }
    fn check(&self) -> impl Future<Output = Result<(), TargetError>> + Send {
        Target::check(self)
    }
    fn ping(&self) -> impl Future<Output = Result<(), TargetError>> + Send {
        Target::ping(self)
    }
    async fn missing_indexes(&self) -> Vec<String> {
        let advice = self.index_advice().await.unwrap_or_default();
        advice
            .into_iter()
            .filter(|a| !a.present)
            .map(|a| format!("{} has no index on {} ({}); create one with: {}", a.table, a.expression, a.key, a.create))
            .collect()
    }
    fn apply_batch<'a>(
        &'a self,
        entries: &'a [Entry],
        links: &'a mut Links,
        claims: &'a dyn Claims,
    ) -> impl Future<Output = Result<Vec<Applied>, TargetError>> + Send + 'a {
        Target::apply_batch(self, entries, links, claims)
    }
}

/// One target with the tenants whose changes it receives.
pub struct Binding<T = Target> {
    pub target: T,
    pub tenants: Vec<String>,
}

/// Wall-clock milliseconds for retry times stored in staging, advanced by Tokio's clock, so that tests
/// with paused time see retries fall due without waiting.
#[derive(Clone, Copy)]
struct Clock {
    wall_ms: i64,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        Clock { wall_ms, start: tokio::time::Instant::now() }
    }

    fn now_ms(&self) -> i64 {
        self.wall_ms + self.start.elapsed().as_millis() as i64
    }
}

/// Exponential backoff with ±25 % jitter, so that many stalled entries do not retry in lockstep; never
/// longer than `backoff_max`, jitter included.
pub fn backoff(settings: &ReplaySettings, attempt: u32) -> Duration {
    let base = settings.backoff_initial.saturating_mul(1u32 << attempt.min(20)).min(settings.backoff_max);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let jitter = (u16::from_le_bytes(r) as f64 / u16::MAX as f64) * 0.5 - 0.25;
    base.mul_f64(1.0 + jitter).min(settings.backoff_max)
}

/// Why a step stopped early: the target is unreachable (retry the step later), or staging failed.
#[derive(Debug)]
enum StepError {
    Down(TargetError),
    Staging(StagingError),
}

impl From<StagingError> for StepError {
    fn from(e: StagingError) -> Self {
        StepError::Staging(e)
    }
}

/// Longest idle wait between looks at the journal and the retry queue.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What a worker knows of its target's reachability.
struct Reachability {
    /// Since when the target has been unreachable.
    down: Option<tokio::time::Instant>,
    attempts: u32,
    probed: tokio::time::Instant,
    /// Whether staging has the present state.
    recorded: bool,
}

impl Default for Reachability {
    fn default() -> Self {
        Reachability { down: None, attempts: 0, probed: tokio::time::Instant::now(), recorded: false }
    }
}

struct Worker<T> {
    binding: Binding<T>,
    store: Arc<dyn ReplayLog>,
    settings: ReplaySettings,
    clock: Clock,
}

/// Starts one worker per target. They stop when `shutdown` becomes true; `commits` wakes them when new
/// journal entries are committed.
pub fn spawn<T: ReplayTarget>(
    bindings: Vec<Binding<T>>,
    store: Arc<dyn ReplayLog>,
    settings: ReplaySettings,
    commits: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let clock = Clock::new();
    bindings
        .into_iter()
        .map(|binding| {
            let w = Arc::new(Worker { binding, store: store.clone(), settings: settings.clone(), clock });
            let (commits, shutdown) = (commits.clone(), shutdown.clone());
            tokio::spawn(async move { w.run(commits, shutdown).await })
        })
        .collect()
}

impl<T: ReplayTarget> Worker<T> {
    fn name(&self) -> &str {
        self.binding.target.name()
    }

    async fn run(self: Arc<Self>, mut commits: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
        let target = self.name().to_owned();
        let mut health = Reachability::default();
        match self.binding.target.check().await {
            Ok(()) => {
                tracing::info!(target = %target, tenants = ?self.binding.tenants, "replay started");
                self.reachable(&mut health).await;
                for missing in self.binding.target.missing_indexes().await {
                    tracing::warn!(target = %target, "{missing}: without it replay scans the table for every new user");
                }
            }
            Err(e) => {
                tracing::warn!(target = %target, tenants = ?self.binding.tenants, error = %e.report(), "replay started, but the target is not ready; replay will keep trying");
                self.unreachable(&mut health, &e, Duration::ZERO).await;
            }
        }
        let mut failures_in_a_row = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // A reconciliation run applying its plan to this target holds replay until it is done.
            let now = self.clock.now_ms();
            if self.store.replay_paused(self.name(), now).await.unwrap_or(false) {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let outcome = match self.step().await {
                // Nothing to apply: make sure an outage is still seen (and its end too) by pinging now and
                // then, or at once while the target is known to be down.
                Ok(false) if health.down.is_some() || health.probed.elapsed() >= self.settings.probe_interval => {
                    health.probed = tokio::time::Instant::now();
                    self.binding.target.ping().await.map(|()| false).map_err(StepError::Down)
                }
                other => other,
            };
            match outcome {
                Ok(did_work) => {
                    failures_in_a_row = 0;
                    self.reachable(&mut health).await;
                    if did_work {
                        continue;
                    }
                    // Idle: wait for new commits, the next due retry, or shutdown. A short poll, so that an
                    // operator's `scim-bridge retry` (another process) takes effect within a second or two.
                    let next_due = self.store.next_due(self.name()).await.ok().flatten();
                    let wait = next_due
                        .map(|d| Duration::from_millis((d - self.clock.now_ms()).max(0) as u64))
                        .unwrap_or(IDLE_POLL)
                        .min(IDLE_POLL);
                    tokio::select! {
                        _ = commits.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    let pause = backoff(&self.settings, failures_in_a_row);
                    failures_in_a_row = failures_in_a_row.saturating_add(1);
                    match e {
                        StepError::Down(err) => self.unreachable(&mut health, &err, pause).await,
                        StepError::Staging(err) => {
                            tracing::error!(target = %target, error = %err, retry_in_ms = pause.as_millis() as u64, "replay cannot use the staging database")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        tracing::info!(target = %target, "replay stopped");
    }

    /// The target answered: one INFO line when it comes back after an outage, recorded for `status`.
    async fn reachable(&self, health: &mut Reachability) {
        let was_down = health.down.take();
        if let Some(since) = was_down {
            tracing::info!(
                target = %self.name(),
                down_for_s = since.elapsed().as_secs(),
                attempts = health.attempts,
                "target reachable again; replay continues in order"
            );
            self.settings
                .alerts
                .send(Event::TargetUp { target: self.name().to_owned(), down_seconds: since.elapsed().as_secs() });
        }
        health.attempts = 0;
        if was_down.is_some() || !health.recorded {
            let recorded = self.store.record_health(self.name(), true, None, None).await;
            health.recorded = recorded.is_ok();
        }
    }

    /// An attempt to reach the target failed: one WARN line when an outage begins (later attempts log at
    /// DEBUG), and the state recorded for `status` after every attempt.
    async fn unreachable(&self, health: &mut Reachability, e: &TargetError, retry_in: Duration) {
        let report = e.report();
        health.attempts += 1;
        if health.down.is_none() {
            health.down = Some(tokio::time::Instant::now());
            tracing::warn!(target = %self.name(), error = %report, "target unreachable; changes are kept and will be applied in order when it is back");
            self.settings.alerts.send(Event::TargetDown { target: self.name().to_owned(), error: report.clone() });
        } else {
            tracing::debug!(target = %self.name(), error = %report, attempts = health.attempts, retry_in_ms = retry_in.as_millis() as u64, "target still unreachable");
        }
        let next = self.clock.now_ms() + retry_in.as_millis() as i64;
        let recorded = self.store.record_health(self.name(), false, Some(&report), Some(next)).await;
        health.recorded = recorded.is_ok();
    }

    fn claims(&self) -> StagedClaims {
        StagedClaims::new(self.store.clone(), self.name())
    }

    /// One round: due retries, then new journal entries. Ok(true) when it did something.
    async fn step(&self) -> Result<bool, StepError> {
        let retried = self.retry_due().await?;
        let cursor = self.store.cursor(self.name()).await?;
        let (entries, upto) = self.store.fetch(&self.binding.tenants, cursor, self.settings.batch_size).await?;
        let mut record = Record::new(self.name());
        record.cursor = Some(upto);
        if entries.is_empty() {
            if upto > cursor {
                // Only other tenants' changes: move past them.
                self.store.record(record).await?;
            }
            return Ok(retried);
        }
        let blocked = self.store.blocked(self.name()).await?;
        let mut links = self.load_links(&entries).await?;
        let mut failed: HashMap<ResourceRef, ChangeSeq> = HashMap::new();
        let mut ready = Vec::new();
        for e in entries {
            if blocked.contains(&e.resource()) {
                self.wait_behind(&mut record, &e, None);
            } else {
                ready.push(e);
            }
        }
        // Users before groups: a membership needs the member's row, and the journal order already puts a
        // user's creation before any membership that names it.
        let (users, groups): (Vec<Entry>, Vec<Entry>) = ready.into_iter().partition(|e| e.kind == Kind::User);
        for phase in [users, groups] {
            if phase.is_empty() {
                continue;
            }
            if let Err(e) = self.apply_phase(phase, &mut links, &mut record, &mut failed).await {
                // Keep what was applied (links, audit, failures) but not the position: the step is repeated,
                // and the entries already applied find their rows through the links.
                record.cursor = None;
                self.store.record(record).await?;
                return Err(e);
            }
        }
        let n = record.applied.len();
        self.store.record(record).await?;
        tracing::debug!(target = %self.name(), applied = n, "replay step committed");
        Ok(true)
    }

    async fn load_links(&self, entries: &[Entry]) -> Result<Links, StagingError> {
        let mut resources: HashSet<ResourceRef> = HashSet::new();
        for e in entries {
            resources.insert(e.resource());
            resources.extend(e.referenced());
        }
        self.store.links(self.name(), &resources).await
    }

    /// Applies entries of one kind: resources spread over parallel transactions, each resource's entries
    /// in order within one of them.
    async fn apply_phase(
        &self,
        entries: Vec<Entry>,
        links: &mut Links,
        record: &mut Record,
        failed: &mut HashMap<ResourceRef, ChangeSeq>,
    ) -> Result<(), StepError> {
        let lanes = self.binding.target.parallelism().max(1);
        let mut buckets: Vec<Vec<Entry>> = (0..lanes).map(|_| Vec::new()).collect();
        let mut lane_of: HashMap<ResourceRef, usize> = HashMap::new();
        let mut next = 0;
        for e in entries {
            let lane = *lane_of.entry(e.resource()).or_insert_with(|| {
                next += 1;
                (next - 1) % lanes
            });
            buckets[lane].push(e);
        }
        let buckets: Vec<Vec<Entry>> = buckets.into_iter().filter(|b| !b.is_empty()).collect();
        let target = &self.binding.target;
        let claims = &self.claims();
        let results = futures_util::future::join_all(buckets.iter().map(|b| {
            let mut lane_links = links.clone();
            async move {
                let r = target.apply_batch(b, &mut lane_links, claims).await;
                (r, lane_links)
            }
        }))
        .await;
        let mut isolate = Vec::new();
        let mut down = None;
        for (bucket, (result, lane_links)) in buckets.into_iter().zip(results) {
            // Whatever a lane applied is in its links even when it failed (a target keeps `links` equal to
            // what is downstream: nothing after a rolled-back transaction, the applied prefix for LDAP), so
            // a later attempt finds those rows instead of creating them again.
            merge_links(links, &bucket, &lane_links);
            match result {
                Ok(applied) => {
                    self.log_applied(&bucket, &applied);
                    record.applied.extend(bucket.into_iter().zip(applied));
                }
                Err(e) if e.is_transient() => down = Some(e),
                Err(_) => isolate.push(bucket),
            }
        }
        if let Some(e) = down {
            return Err(StepError::Down(e));
        }
        // A lane failed on some entry: apply its entries one by one to find which, and let the others through.
        for bucket in isolate {
            for e in bucket {
                let resource = e.resource();
                if let Some(first) = failed.get(&resource) {
                    let first = *first;
                    self.wait_behind(record, &e, Some(first));
                    continue;
                }
                let mut one_links = links.clone();
                let result = target.apply_batch(std::slice::from_ref(&e), &mut one_links, claims).await;
                merge_links(links, std::slice::from_ref(&e), &one_links);
                match result {
                    Ok(mut applied) => {
                        let a = applied.remove(0);
                        self.log_applied(std::slice::from_ref(&e), std::slice::from_ref(&a));
                        record.applied.push((e, a));
                    }
                    Err(err) if err.is_transient() => return Err(StepError::Down(err)),
                    Err(err) => {
                        failed.insert(resource, e.seq);
                        self.fail(record, &e, err.report(), 1);
                    }
                }
            }
        }
        Ok(())
    }

    fn log_applied(&self, entries: &[Entry], applied: &[Applied]) {
        for (e, a) in entries.iter().zip(applied) {
            tracing::info!(
                target = %self.name(),
                tenant = %e.tenant_name,
                request_id = %e.request_id,
                resource = e.kind.as_str(),
                resource_id = %e.resource_id,
                change_seq = e.seq.0,
                op = e.op.as_str(),
                outcome = a.outcome.as_str(),
                key = a.key.as_deref().unwrap_or("-"),
                detail = %a.detail,
                "change replayed"
            );
        }
    }

    /// Records a permanent failure: a retry later, or a dead letter after `max_attempts`.
    fn fail(&self, record: &mut Record, e: &Entry, msg: String, attempts: i64) {
        let dead = attempts >= self.settings.max_attempts;
        let next = self.clock.now_ms() + backoff(&self.settings, attempts.max(1) as u32 - 1).as_millis() as i64;
        if dead {
            tracing::error!(target = %self.name(), tenant = %e.tenant_name, request_id = %e.request_id, resource_id = %e.resource_id, change_seq = e.seq.0, attempts, error = %msg,
                "change parked as a dead letter; later changes of this resource wait behind it (scim-bridge journal / retry)");
            let name = ["userName", "displayName"]
                .iter()
                .find_map(|k| e.state.get(*k).and_then(|v| v.as_str()))
                .unwrap_or_default();
            self.settings.alerts.send(Event::DeadLetter {
                target: self.name().to_owned(),
                tenant: e.tenant_name.clone(),
                kind: e.kind.as_str().to_owned(),
                id: e.resource_id.to_string(),
                name: name.to_owned(),
                seq: e.seq.0,
                error: msg.clone(),
            });
        } else {
            tracing::warn!(target = %self.name(), tenant = %e.tenant_name, request_id = %e.request_id, resource_id = %e.resource_id, change_seq = e.seq.0, attempts, error = %msg, "change failed; will retry");
        }
        record.errors.push((e.clone(), msg.clone()));
        record.failures.push(Failure {
            target: self.name().to_owned(),
            seq: e.seq,
            tenant: e.tenant,
            resource_id: e.resource_id.clone(),
            state: if dead { FailureState::Dead } else { FailureState::Retry },
            attempts,
            next_attempt_ms: next,
            last_error: msg,
            updated: String::new(),
        });
    }

    fn wait_behind(&self, record: &mut Record, e: &Entry, first: Option<ChangeSeq>) {
        let msg = match first {
            Some(seq) => format!("waiting behind change {seq} of the same resource, which failed"),
            None => "waiting behind an earlier change of the same resource, which failed".to_owned(),
        };
        tracing::info!(target = %self.name(), tenant = %e.tenant_name, request_id = %e.request_id, resource_id = %e.resource_id, change_seq = e.seq.0, "{msg}");
        record.failures.push(Failure {
            target: self.name().to_owned(),
            seq: e.seq,
            tenant: e.tenant,
            resource_id: e.resource_id.clone(),
            state: FailureState::Waiting,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: msg,
            updated: String::new(),
        });
    }

    /// Retries due failed entries; after a success, the entries waiting behind it follow in order.
    async fn retry_due(&self) -> Result<bool, StepError> {
        let now = self.clock.now_ms();
        let due = self.store.due(self.name(), now).await?;
        if due.is_empty() {
            return Ok(false);
        }
        for f in due {
            let resource = f.resource();
            let waiting = self.store.waiting(self.name(), &resource).await?;
            let mut record = Record::new(self.name());
            let mut queue = vec![f];
            queue.extend(waiting);
            for (i, item) in queue.into_iter().enumerate() {
                let seq = item.seq;
                let Some(entry) = self.store.entry(seq).await? else {
                    record.resolved.push(seq); // the journal entry is gone (should not happen); drop the row
                    continue;
                };
                let mut links = self.load_links(std::slice::from_ref(&entry)).await?;
                match self.binding.target.apply_batch(std::slice::from_ref(&entry), &mut links, &self.claims()).await {
                    Ok(mut applied) => {
                        let a = applied.remove(0);
                        self.log_applied(std::slice::from_ref(&entry), std::slice::from_ref(&a));
                        record.resolved.push(seq);
                        record.applied.push((entry, a));
                    }
                    Err(err) if err.is_transient() => {
                        self.store.record(record).await?;
                        return Err(StepError::Down(err));
                    }
                    Err(err) => {
                        let attempts = if i == 0 { item.attempts + 1 } else { 1 };
                        self.fail(&mut record, &entry, err.report(), attempts);
                        break;
                    }
                }
            }
            self.store.record(record).await?;
        }
        Ok(true)
    }
}

/// Links learned in a lane are the truth for that lane's resources and for nothing else.
fn merge_links(links: &mut Links, entries: &[Entry], lane: &Links) {
    for e in entries {
        let resource = e.resource();
        match lane.get(&resource) {
            Some(k) => links.insert(resource, k.clone()),
            None => links.remove(&resource),
        };
    }
}

#[cfg(test)]
mod tests;
