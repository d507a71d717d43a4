//! Replay's logic against a target in memory, with Tokio's clock paused (it jumps ahead whenever every task
//! waits), so that backoff and retries are tested without sleeping: per-resource order, isolation of a
//! failing resource, waiting behind a dead letter, and backoff through an outage. The journal is real:
//! changes are staged through the staging writer into a SQLite file.

use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::*;
use crate::staging::journal::ResourceId;
use crate::staging::{Change, Ledger, ResourceStore, Stores, TenantId};

/// What the memory target was asked to do and how it should fail.
#[derive(Default)]
struct State {
    /// Entries applied (committed), in the order they were applied.
    applied: Vec<(String, ChangeSeq)>,
    /// Users (the local part of their userName) whose changes with this title fail permanently.
    refuse: Vec<(String, String)>,
    /// While set, every batch fails as if the target were unreachable.
    down: bool,
    /// When each attempt during an outage was made.
    attempts_while_down: Vec<tokio::time::Instant>,
}

#[derive(Clone, Default)]
struct Memory(Arc<Mutex<State>>);

impl Memory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn applied_of(&self, user: &str) -> Vec<ChangeSeq> {
        self.state().applied.iter().filter(|(u, _)| u == user).map(|(_, s)| *s).collect()
    }
}

impl ReplayTarget for Memory {
    fn name(&self) -> &str {
        "memory"
    }
    fn parallelism(&self) -> usize {
        3
    }
    async fn check(&self) -> Result<(), TargetError> {
        Ok(())
    }
    async fn missing_indexes(&self) -> Vec<String> {
        Vec::new()
    }
    async fn ping(&self) -> Result<(), TargetError> {
        if self.state().down { Err(TargetError::transient("connection refused")) } else { Ok(()) }
    }
    /// All or nothing, like a SQL transaction.
    async fn apply_batch<'a>(
        &'a self,
        entries: &'a [Entry],
        _links: &'a mut Links,
        _claims: &'a dyn Claims,
    ) -> Result<Vec<Applied>, TargetError> {
        let mut s = self.state();
        if s.down {
            s.attempts_while_down.push(tokio::time::Instant::now());
            return Err(TargetError::transient("connection refused"));
        }
        let mut batch = Vec::new();
        for e in entries {
            let user_name = e.state.get("userName").and_then(Value::as_str).unwrap_or_default();
            let user = user_name.split('@').next().unwrap_or_default().to_owned();
            let title = e.state.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
            if s.refuse.contains(&(user.clone(), title.clone())) {
                return Err(TargetError::permanent(format!("{user}: title {title:?} violates a constraint")));
            }
            batch.push((user, e.seq));
        }
        s.applied.extend(batch);
        Ok(entries
            .iter()
            .map(|_| Applied::new(Some("k".into()), crate::staging::journal::Outcome::Updated, ""))
            .collect())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    staging: Arc<dyn ResourceStore>,
    store: Arc<dyn Ledger>,
    tenant: TenantId,
    target: Memory,
    stop: watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

fn doc(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Harness {
    async fn start(target: Memory) -> Harness {
        let mut h = Harness::open(target);
        h.run();
        h
    }

    /// The staging database and the target, with no replay worker yet: changes written now are all
    /// there when the workers start, so no write is in flight while they run.
    fn open(target: Memory) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging.db");
        let (tenant, _) = crate::staging::rotate_token(&path, "t").unwrap();
        let Stores { resources: staging, ledger: store } = crate::staging::open(&path, Default::default()).unwrap();
        let (stop, _) = watch::channel(false);
        Harness { _dir: dir, staging, store, tenant: tenant.id, target, stop, workers: Vec::new() }
    }

    /// Starts the replay workers.
    fn run(&mut self) {
        self.run_on(self.store.clone());
    }

    /// Starts the replay workers on `log` as their side of staging.
    fn run_on(&mut self, log: Arc<dyn ReplayLog>) {
        let settings = ReplaySettings {
            batch_size: 100,
            max_attempts: 2,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            probe_interval: Duration::from_secs(30),
            alerts: Default::default(),
        };
        let binding = Binding { target: self.target.clone(), tenants: vec!["t".into()] };
        let stopping = self.stop.subscribe();
        self.workers = spawn(vec![binding], log, settings, self.staging.commits(), stopping);
    }

    async fn create(&self, user: &str) -> (ResourceId, ChangeSeq) {
        let user_name = format!("{user}@example.com");
        let change = Change::Create { kind: Kind::User, doc: doc(json!({"userName": user_name, "title": "t0"})) };
        let c = self.staging.write(self.tenant, "req", Default::default(), change).await.unwrap();
        (ResourceId(c.resource.unwrap().id), c.seq.unwrap())
    }

    async fn retitle(&self, id: &ResourceId, title: &str) -> ChangeSeq {
        let ops = crate::scim::patch::parse_request(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": title}],
        }))
        .unwrap();
        let change = Change::Patch { kind: Kind::User, id: id.0.clone(), ops, if_match: None };
        self.staging.write(self.tenant, "req", Default::default(), change).await.unwrap().seq.unwrap()
    }

    async fn failures(&self) -> Vec<(String, ChangeSeq, FailureState)> {
        self.store.list_failures(None).await.unwrap().into_iter().map(|f| (f.resource_id.0, f.seq, f.state)).collect()
    }

    /// Waits (in paused time) until `done` holds; fails after a simulated hour.
    async fn until(&self, what: &str, done: impl AsyncFn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        while !done(self).await {
            assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            w.await.unwrap();
        }
        self.staging.close().await;
    }
}

#[test]
fn backoff_doubles_with_jitter_and_caps() {
    let s = ReplaySettings {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..Default::default()
    };
    for (attempt, base) in [(0u32, 100u64), (1, 200), (2, 400), (3, 800), (4, 1000), (30, 1000)] {
        let d = backoff(&s, attempt).as_millis() as u64;
        assert!(d >= base * 3 / 4 && d <= (base * 5 / 4 + 1).min(1000), "attempt {attempt}: {d} ms vs {base}");
    }
}

/// Changes of one resource apply in journal order; a resource whose change fails is isolated (the others
/// in its lane still apply), becomes a dead letter after `max_attempts`, and its later changes wait behind
/// it. A retry after the cause is fixed applies the dead letter and then the waiting changes, in order.
#[tokio::test(start_paused = true)]
async fn order_isolation_dead_letters_and_retry() {
    let target = Memory::default();
    target.state().refuse.push(("bob".into(), "t2".into()));
    let h = Harness::start(target).await;
    let users = ["ann", "bob", "cyd", "dan", "eve"];
    let mut ids = Vec::new();
    let mut seqs: HashMap<&str, Vec<ChangeSeq>> = HashMap::new();
    for u in users {
        let (id, seq) = h.create(u).await;
        ids.push(id);
        seqs.insert(u, vec![seq]);
    }
    for title in ["t1", "t2", "t3"] {
        for (u, id) in users.iter().zip(&ids) {
            seqs.entry(u).or_default().push(h.retitle(id, title).await);
        }
    }
    let bob = ids[1].0.clone();
    h.until("bob's change parked as a dead letter", async |h| {
        h.failures().await.iter().any(|(r, _, s)| *r == bob && *s == FailureState::Dead)
    })
    .await;
    h.until("everyone else applied", async |h| {
        users.iter().filter(|u| **u != "bob").all(|u| h.target.applied_of(u).len() == 4)
    })
    .await;
    for u in users.iter().filter(|u| **u != "bob") {
        let applied = h.target.applied_of(u);
        assert!(applied.windows(2).all(|w| w[0] < w[1]), "{u}: applied out of order: {applied:?}");
        assert_eq!(applied, seqs[u], "{u}: every change applied once");
    }
    // Bob: create and t1 applied; t2 dead; t3 waits behind it.
    assert_eq!(h.target.applied_of("bob"), seqs["bob"][..2]);
    let bob_failures: Vec<(ChangeSeq, FailureState)> =
        h.failures().await.into_iter().filter(|(r, _, _)| *r == bob).map(|(_, s, st)| (s, st)).collect();
    assert_eq!(bob_failures, [(seqs["bob"][2], FailureState::Dead), (seqs["bob"][3], FailureState::Waiting)]);

    // The operator fixes the cause and retries: the dead letter, then the waiting change, in order.
    h.target.state().refuse.clear();
    assert_eq!(h.store.retry(None, None, 0).await.unwrap().len(), 1);
    h.until("bob caught up", async |h| h.target.applied_of("bob").len() == 4).await;
    assert_eq!(h.target.applied_of("bob"), seqs["bob"]);
    h.until("failure rows resolved", async |h| h.failures().await.is_empty()).await;
    h.stop().await;
}

/// A target that is down is retried with growing pauses, without limit and without dead letters; when it
/// is back, everything applies in order.
#[tokio::test(start_paused = true)]
async fn outage_backs_off_and_loses_nothing() {
    let target = Memory::default();
    target.state().down = true;
    // Staged before replay starts: a write waits on the staging writer's thread, which paused time does
    // not count as work, so a write in flight between two attempts could let the clock jump ahead.
    let mut h = Harness::open(target);
    let (ann, created) = h.create("ann").await;
    let mut seqs = vec![created];
    for t in ["t1", "t2", "t3"] {
        seqs.push(h.retitle(&ann, t).await);
    }
    h.run();
    h.until("eight attempts during the outage", async |h| h.target.state().attempts_while_down.len() >= 8).await;
    assert!(h.target.applied_of("ann").is_empty(), "nothing applied while down");
    h.target.state().down = false;
    h.until("ann applied after the outage", async |h| h.target.applied_of("ann").len() == 4).await;
    assert_eq!(h.target.applied_of("ann"), seqs);
    assert!(h.failures().await.is_empty(), "an outage makes no failure rows: {:?}", h.failures().await);
    let attempts = h.target.state().attempts_while_down.clone();
    let gaps: Vec<u128> = attempts.windows(2).take(7).map(|w| (w[1] - w[0]).as_millis()).collect();
    // 500 ms doubled per attempt (±25 % jitter), never above the 8 s cap: 0.5, 1, 2, 4, 8, 8, 8 s.
    for (gap, base) in gaps.iter().zip([500u128, 1000, 2000, 4000, 8000, 8000, 8000]) {
        let most = (base * 5 / 4).min(8000) + 20;
        assert!(*gap >= base * 3 / 4 && *gap <= most, "pause {gap} ms, expected about {base}: {gaps:?}");
    }
    h.stop().await;
}

/// A test double of replay's side of staging: the real ledger, except that recording a step fails while
/// `refuse` is set, as when the staging disk is full.
struct Unrecordable {
    inner: Arc<dyn Ledger>,
    refuse: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ReplayLog for Unrecordable {
    async fn cursor(&self, target: &str) -> Result<ChangeSeq, StagingError> {
        self.inner.cursor(target).await
    }
    async fn head(&self) -> Result<ChangeSeq, StagingError> {
        self.inner.head().await
    }
    async fn fetch(
        &self,
        tenants: &[String],
        after: ChangeSeq,
        limit: usize,
    ) -> Result<(Vec<Entry>, ChangeSeq), StagingError> {
        self.inner.fetch(tenants, after, limit).await
    }
    async fn entry(&self, seq: ChangeSeq) -> Result<Option<Entry>, StagingError> {
        self.inner.entry(seq).await
    }
    async fn links(&self, target: &str, resources: &HashSet<ResourceRef>) -> Result<Links, StagingError> {
        self.inner.links(target, resources).await
    }
    async fn link_owner(&self, target: &str, kind: Kind, key: &str) -> Result<Option<ResourceRef>, StagingError> {
        self.inner.link_owner(target, kind, key).await
    }
    async fn blocked(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError> {
        self.inner.blocked(target).await
    }
    async fn due(&self, target: &str, now_ms: i64) -> Result<Vec<Failure>, StagingError> {
        self.inner.due(target, now_ms).await
    }
    async fn next_due(&self, target: &str) -> Result<Option<i64>, StagingError> {
        self.inner.next_due(target).await
    }
    async fn waiting(&self, target: &str, resource: &ResourceRef) -> Result<Vec<Failure>, StagingError> {
        self.inner.waiting(target, resource).await
    }
    async fn record(&self, step: Record) -> Result<(), StagingError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(StagingError::Closed);
        }
        self.inner.record(step).await
    }
    async fn record_health(
        &self,
        target: &str,
        reachable: bool,
        error: Option<&str>,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StagingError> {
        self.inner.record_health(target, reachable, error, next_attempt_ms).await
    }
    async fn replay_paused(&self, target: &str, now_ms: i64) -> Result<bool, StagingError> {
        self.inner.replay_paused(target, now_ms).await
    }
}

/// A step that staging cannot record is repeated once staging takes writes again, never skipped: the
/// position moves only with the record of what was applied (downstream, the repeat finds its rows through
/// the links a real target keeps, so it applies each change again rather than losing one).
#[tokio::test(start_paused = true)]
async fn a_step_staging_cannot_record_is_repeated_not_skipped() {
    let mut h = Harness::open(Memory::default());
    let (ann, created) = h.create("ann").await;
    let mut seqs = vec![created];
    for t in ["t1", "t2"] {
        seqs.push(h.retitle(&ann, t).await);
    }
    let log = Arc::new(Unrecordable {
        inner: h.store.clone(),
        refuse: std::sync::atomic::AtomicBool::new(true),
        refused: std::sync::atomic::AtomicUsize::new(0),
    });
    h.run_on(log.clone());
    h.until("three steps refused by staging", async |_| log.refused.load(std::sync::atomic::Ordering::SeqCst) >= 3)
        .await;
    assert_eq!(h.store.cursor("memory").await.unwrap(), ChangeSeq(0), "the position did not move");
    let applied_while_refused = h.target.applied_of("ann").len();
    assert!(applied_while_refused >= 3, "the step was attempted: {applied_while_refused}");
    log.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let head = *seqs.last().unwrap();
    h.until("the position reached the last change", async |h| h.store.cursor("memory").await.unwrap() == head).await;
    let applied = h.target.applied_of("ann");
    assert_eq!(applied[applied.len() - 3..], seqs[..], "the recorded step applied every change in order");
    assert!(h.failures().await.is_empty(), "a staging failure is not the change's fault: {:?}", h.failures().await);
    h.stop().await;
}
