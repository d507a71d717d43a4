//! The ledger of the embedded SQLite staging database: everything it keeps beside the resources. Journal
//! reads, per-target cursors, links to downstream rows, failed entries and target health (replay's state),
//! reconciliation runs and their lease (`runs`), the audit trail and retention (`history`), and what
//! operators read and do (`operator`). One connection serves it; each replay step is one transaction.
//! The rest of the crate reaches it through the traits of `super::store`, implemented in `super::sqlite`;
//! the row types defined here are those traits' read models.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::journal::{Applied, ChangeSeq, Entry, Link, Links, Op, Outcome, ResourceId, ResourceRef, TenantId};
use super::read::{parse_body, parse_kind};
use super::{StagingError, open_connection, open_migrated};
use crate::scim::schema::Kind;

mod history;
mod operator;
mod runs;

pub use history::{AuditRow, Candidate, Change, LinkRow, Story};
pub use operator::{Health, PendingMember, TargetStats};
pub use runs::{Desired, LeaseHeld, Run, RunStatus, TargetLink};

/// Where a failed entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureState {
    /// Failed; another attempt is due at `next_attempt_ms`.
    Retry,
    /// Failed `max_attempts` times: parked until an operator retries it.
    Dead,
    /// Not attempted: an earlier entry of the same resource failed, and order must be kept.
    Waiting,
}

impl FailureState {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureState::Retry => "retry",
            FailureState::Dead => "dead",
            FailureState::Waiting => "waiting",
        }
    }

    fn parse(s: &str) -> Result<FailureState, StagingError> {
        match s {
            "retry" => Ok(FailureState::Retry),
            "dead" => Ok(FailureState::Dead),
            "waiting" => Ok(FailureState::Waiting),
            other => Err(StagingError::Corrupt(format!("a replay failure has the state {other:?}"))),
        }
    }
}

/// A failed entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub target: String,
    pub seq: ChangeSeq,
    pub tenant: TenantId,
    pub resource_id: ResourceId,
    pub state: FailureState,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub updated: String,
}

impl Failure {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef { tenant: self.tenant, id: self.resource_id.clone() }
    }
}

/// Everything one replay step writes, committed together.
#[derive(Debug, Default)]
pub struct Record {
    pub target: String,
    /// New journal position, when the step read new entries.
    pub cursor: Option<ChangeSeq>,
    pub applied: Vec<(Entry, Applied)>,
    /// Failure rows to insert or replace.
    pub failures: Vec<Failure>,
    /// Failure rows resolved (their entries were applied).
    pub resolved: Vec<ChangeSeq>,
    /// Failed attempts, for the audit trail.
    pub errors: Vec<(Entry, String)>,
}

impl Record {
    pub fn new(target: &str) -> Record {
        Record { target: target.to_owned(), ..Default::default() }
    }
}

/// Everything the embedded SQLite staging database keeps beside the resources: replay's cursors, links,
/// failures and health, the audit trail and reconciliation runs. Reached through the traits of
/// [`super::store`] (implemented in `super::sqlite`).
#[derive(Clone)]
pub struct SqliteLedger {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// A connection of its own for link-owner lookups made while a target applies a change.
    owners: Arc<Mutex<Connection>>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

type RawEntry =
    (i64, i64, String, String, String, String, Option<String>, Option<String>, Option<String>, String, String);

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn to_entry(raw: RawEntry) -> Result<Entry, StagingError> {
    let (seq, tenant, kind, resource_id, op, request_id, state, added, removed, at, tenant_name) = raw;
    let ids = |column: &str, v: Option<String>| -> Result<Vec<ResourceId>, StagingError> {
        match v {
            None => Ok(Vec::new()),
            Some(s) => serde_json::from_str::<Vec<String>>(&s)
                .map(|ids| ids.into_iter().map(ResourceId).collect())
                .map_err(|e| StagingError::Corrupt(format!("journal entry {seq}: {column} is not a list of ids: {e}"))),
        }
    };
    Ok(Entry {
        seq: ChangeSeq(seq),
        tenant: TenantId(tenant),
        tenant_name,
        kind: parse_kind(&kind)?,
        resource_id: ResourceId(resource_id),
        op: Op::parse(&op).ok_or_else(|| StagingError::Corrupt(format!("journal entry {seq} has the op {op:?}")))?,
        request_id,
        at,
        state: match state {
            Some(s) => parse_body(&s)?,
            None => serde_json::Map::new(),
        },
        members_added: ids("members_added", added)?,
        members_removed: ids("members_removed", removed)?,
    })
}

const ENTRY_COLUMNS: &str = "j.seq, j.tenant_id, j.kind, j.resource_id, j.op, j.request_id, j.state, j.members_added, j.members_removed, j.created, t.name";

impl SqliteLedger {
    /// # Errors
    /// The staging database cannot be opened.
    pub fn open(path: &Path) -> Result<SqliteLedger, StagingError> {
        let conn = open_migrated(path)?;
        let owners = open_connection(path)?;
        Ok(SqliteLedger {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            owners: Arc::new(Mutex::new(owners)),
        })
    }

    pub(in crate::staging) fn path(&self) -> &Path {
        &self.path
    }

    /// The resource linked to downstream `key` of this kind in `target`, if any. Users and groups live in
    /// different tables (or subtrees), so the same key of the other kind is someone else's row.
    pub(in crate::staging) fn owner(
        &self,
        target: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Option<ResourceRef>, StagingError> {
        let conn = self.owners.lock().map_err(|_| StagingError::Poisoned)?;
        let found = conn
            .prepare_cached(
                "SELECT tenant_id, resource_id FROM links WHERE target = ?1 AND kind = ?2 AND downstream_key = ?3 LIMIT 1",
            )?
            .query_row(params![target, kind.as_str(), key], |r| {
                Ok(ResourceRef { tenant: TenantId(r.get(0)?), id: ResourceId(r.get(1)?) })
            })
            .optional()?;
        Ok(found)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StagingError>) -> Result<T, StagingError> {
        let mut guard = self.conn.lock().map_err(|_| StagingError::Poisoned)?;
        f(&mut guard)
    }

    /// Runs store work on the blocking pool.
    ///
    /// # Errors
    /// What `f` returns, or `Worker` when the blocking task could not run.
    pub(in crate::staging) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteLedger) -> Result<T, StagingError> + Send + 'static,
    ) -> Result<T, StagingError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(|e| StagingError::Worker(e.to_string()))?
    }

    /// How far a target has read the journal.
    pub(in crate::staging) fn cursor(&self, target: &str) -> Result<ChangeSeq, StagingError> {
        self.with(|c| {
            Ok(ChangeSeq(
                c.query_row("SELECT last_seq FROM replay_cursor WHERE target = ?1", [target], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
            ))
        })
    }

    /// The newest journal sequence.
    pub(in crate::staging) fn head(&self) -> Result<ChangeSeq, StagingError> {
        self.with(|c| Ok(ChangeSeq(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| r.get(0))?)))
    }

    /// Journal entries after `after` of the named tenants, oldest first, and the journal position this read
    /// covers: the last entry returned when the limit was reached, else the journal head (entries of other
    /// tenants up to it need nothing from this target).
    pub(in crate::staging) fn fetch(
        &self,
        tenants: &[String],
        after: ChangeSeq,
        limit: usize,
    ) -> Result<(Vec<Entry>, ChangeSeq), StagingError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| r.get(0))?;
            if tenants.is_empty() {
                return Ok((Vec::new(), ChangeSeq(head)));
            }
            let marks = vec!["?"; tenants.len()].join(", ");
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM journal j JOIN tenants t ON t.id = j.tenant_id
                 WHERE j.seq > ? AND j.seq <= ? AND t.name IN ({marks}) ORDER BY j.seq LIMIT ?"
            );
            let mut values: Vec<rusqlite::types::Value> = vec![after.0.into(), head.into()];
            values.extend(tenants.iter().map(|t| rusqlite::types::Value::Text(t.clone())));
            values.push((limit as i64).into());
            let raw = {
                let mut stmt = tx.prepare_cached(&sql)?;
                stmt.query_map(params_from_iter(values), entry_from_row)?.collect::<Result<Vec<_>, _>>()?
            };
            let entries = raw.into_iter().map(to_entry).collect::<Result<Vec<_>, _>>()?;
            let upto = if entries.len() >= limit { entries.last().map_or(head, |e| e.seq.0) } else { head };
            Ok((entries, ChangeSeq(upto)))
        })
    }

    pub(in crate::staging) fn entry(&self, seq: ChangeSeq) -> Result<Option<Entry>, StagingError> {
        self.with(|c| {
            let raw = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM journal j JOIN tenants t ON t.id = j.tenant_id WHERE j.seq = ?1"
                ))?
                .query_row([seq.0], entry_from_row)
                .optional()?;
            raw.map(to_entry).transpose()
        })
    }

    /// Known links of a target for these resources.
    pub(in crate::staging) fn links(
        &self,
        target: &str,
        resources: &HashSet<ResourceRef>,
    ) -> Result<Links, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT downstream_key, origin, kind FROM links WHERE target = ?1 AND tenant_id = ?2 AND resource_id = ?3",
            )?;
            let mut out = Links::new();
            for r in resources {
                let row = stmt
                    .query_row(params![target, r.tenant.0, r.id.as_str()], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                    })
                    .optional()?;
                if let Some((key, origin, kind)) = row {
                    let created = match origin.as_str() {
                        "created" => true,
                        "linked" => false,
                        other => return Err(StagingError::Corrupt(format!("a link has the origin {other:?}"))),
                    };
                    out.insert(r.clone(), Link { key, created, kind: parse_kind(&kind)? });
                }
            }
            Ok(out)
        })
    }

    /// Resources of a target that have a failed entry (their later entries must wait).
    pub(in crate::staging) fn blocked(&self, target: &str) -> Result<HashSet<ResourceRef>, StagingError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT DISTINCT tenant_id, resource_id FROM replay_failures WHERE target = ?1")?;
            let rows = stmt
                .query_map([target], |r| Ok(ResourceRef { tenant: TenantId(r.get(0)?), id: ResourceId(r.get(1)?) }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The earliest failed entry of each blocked resource, when it is due for another attempt.
    pub(in crate::staging) fn due(&self, target: &str, now_ms: i64) -> Result<Vec<Failure>, StagingError> {
        self.failures(
            "WHERE f.target = ?1 AND f.state = 'retry' AND f.next_attempt <= ?2
               AND NOT EXISTS (SELECT 1 FROM replay_failures e WHERE e.target = f.target AND e.tenant_id = f.tenant_id
                               AND e.resource_id = f.resource_id AND e.seq < f.seq)
             ORDER BY f.seq",
            params![target, now_ms],
        )
    }

    /// When the next retry of a target is due, if any.
    pub(in crate::staging) fn next_due(&self, target: &str) -> Result<Option<i64>, StagingError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt) FROM replay_failures WHERE target = ?1 AND state = 'retry'",
                [target],
                |r| r.get(0),
            )?)
        })
    }

    /// The entries waiting behind a resource's failure, in order.
    pub(in crate::staging) fn waiting(
        &self,
        target: &str,
        resource: &ResourceRef,
    ) -> Result<Vec<Failure>, StagingError> {
        self.failures(
            "WHERE f.target = ?1 AND f.tenant_id = ?2 AND f.resource_id = ?3 AND f.state = 'waiting' ORDER BY f.seq",
            params![target, resource.tenant.0, resource.id.as_str()],
        )
    }

    /// All failure rows (of one target, or all), for the CLI.
    pub(in crate::staging) fn list_failures(&self, target: Option<&str>) -> Result<Vec<Failure>, StagingError> {
        match target {
            Some(t) => self.failures("WHERE f.target = ?1 ORDER BY f.target, f.seq", params![t]),
            None => self.failures("ORDER BY f.target, f.seq", params![]),
        }
    }

    fn failures(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<Failure>, StagingError> {
        self.with(|c| {
            let sql = format!(
                "SELECT f.target, f.seq, f.tenant_id, f.resource_id, f.state, f.attempts, f.next_attempt, f.last_error, f.updated
                 FROM replay_failures f {tail}"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(p, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            rows.map(|row| {
                let (target, seq, tenant, resource_id, state, attempts, next_attempt_ms, last_error, updated) = row?;
                Ok(Failure {
                    target,
                    seq: ChangeSeq(seq),
                    tenant: TenantId(tenant),
                    resource_id: ResourceId(resource_id),
                    state: FailureState::parse(&state)?,
                    attempts,
                    next_attempt_ms,
                    last_error,
                    updated,
                })
            })
            .collect()
        })
    }

    /// Whether the journal has an entry with this sequence number.
    pub(in crate::staging) fn has_entry(&self, seq: ChangeSeq) -> Result<bool, StagingError> {
        self.with(|c| {
            Ok(c.query_row("SELECT 1 FROM journal WHERE seq = ?1", [seq.0], |_| Ok(())).optional()?.is_some())
        })
    }

    /// Records that a target is reachable, or that an attempt to reach it failed. `since` is kept while
    /// the state stays the same.
    pub(in crate::staging) fn record_health(
        &self,
        target: &str,
        reachable: bool,
        error: Option<&str>,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StagingError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO target_health (target, reachable, since, failures, last_error, next_attempt, checked)
                 VALUES (?1, ?2, ?5, CASE WHEN ?2 THEN 0 ELSE 1 END, ?3, ?4, ?5)
                 ON CONFLICT (target) DO UPDATE SET
                    since = CASE WHEN reachable = excluded.reachable THEN since ELSE excluded.since END,
                    failures = CASE WHEN excluded.reachable THEN 0 ELSE failures * (1 - reachable) + 1 END,
                    last_error = COALESCE(excluded.last_error, last_error),
                    next_attempt = excluded.next_attempt, reachable = excluded.reachable, checked = excluded.checked",
                params![target, reachable, error, next_attempt_ms, now()],
            )?;
            Ok(())
        })
    }

    /// Commits one replay step.
    pub(in crate::staging) fn record(&self, r: &Record) -> Result<(), StagingError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let at = now();
            {
                let mut link = tx.prepare_cached(
                    "INSERT INTO links (target, tenant_id, resource_id, kind, downstream_key, linked, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (target, tenant_id, resource_id) DO UPDATE SET downstream_key = excluded.downstream_key,
                        origin = CASE WHEN excluded.origin = 'created' THEN 'created' ELSE links.origin END",
                )?;
                let mut unlink = tx.prepare_cached("DELETE FROM links WHERE target = ?1 AND tenant_id = ?2 AND resource_id = ?3")?;
                let mut audit = tx.prepare_cached(
                    "INSERT INTO audit (at, target, tenant_id, seq, request_id, kind, resource_id, op, downstream_key, outcome, detail, operations)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                let dead: HashSet<i64> =
                    r.failures.iter().filter(|f| f.state == FailureState::Dead).map(|f| f.seq.0).collect();
                for (e, a) in &r.applied {
                    let id = e.resource_id.as_str();
                    match &a.key {
                        Some(k) => {
                            let origin = if a.outcome == Outcome::Created { "created" } else { "linked" };
                            link.execute(params![r.target, e.tenant.0, id, e.kind.as_str(), k, at, origin])?
                        }
                        None => unlink.execute(params![r.target, e.tenant.0, id])?,
                    };
                    let ops = (!a.operations.is_empty()).then(|| serde_json::to_string(&a.operations).unwrap_or_default());
                    audit.execute(params![at, r.target, e.tenant.0, e.seq.0, e.request_id, e.kind.as_str(), id, e.op.as_str(), a.key, a.outcome.as_str(), a.detail, ops])?;
                }
                for (e, err) in &r.errors {
                    // A change parked as a dead letter says so in the trail (`history --outcome dead`).
                    let outcome = if dead.contains(&e.seq.0) { "dead" } else { "error" };
                    audit.execute(params![at, r.target, e.tenant.0, e.seq.0, e.request_id, e.kind.as_str(), e.resource_id.as_str(), e.op.as_str(), Option::<String>::None, outcome, err, Option::<String>::None])?;
                }
                let mut resolve = tx.prepare_cached("DELETE FROM replay_failures WHERE target = ?1 AND seq = ?2")?;
                for seq in &r.resolved {
                    resolve.execute(params![r.target, seq.0])?;
                }
                let mut fail = tx.prepare_cached(
                    "INSERT OR REPLACE INTO replay_failures (target, seq, tenant_id, resource_id, state, attempts, next_attempt, last_error, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                // A change already recorded as failed keeps its row when it is seen again (after a cursor
                // reset): marking it "waiting" would leave its resource with nothing to retry.
                let mut wait = tx.prepare_cached(
                    "INSERT OR IGNORE INTO replay_failures (target, seq, tenant_id, resource_id, state, attempts, next_attempt, last_error, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for f in &r.failures {
                    let stmt = if f.state == FailureState::Waiting { &mut wait } else { &mut fail };
                    stmt.execute(params![f.target, f.seq.0, f.tenant.0, f.resource_id.as_str(), f.state.as_str(), f.attempts, f.next_attempt_ms, f.last_error, at])?;
                }
                if let Some(cursor) = r.cursor {
                    tx.execute(
                        "INSERT INTO replay_cursor (target, last_seq) VALUES (?1, ?2)
                         ON CONFLICT (target) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                        params![r.target, cursor.0],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}
