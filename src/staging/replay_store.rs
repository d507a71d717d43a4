//! Replay's state in the staging database: journal reads, per-target cursors, links to downstream rows,
//! failed entries and the audit trail. Replay has its own connection; its writes are batched, one
//! transaction per replayed batch.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::{StagingError, TenantId, open_connection, read::parse_body};
use crate::scim::schema::Kind;
use crate::target::{Applied, Entry, Link, Links, Op};

/// A failed entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub target: String,
    pub seq: i64,
    pub tenant: TenantId,
    pub resource_id: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub updated: String,
}

/// Everything one replay step writes, committed together.
#[derive(Debug, Default)]
pub struct Record {
    pub target: String,
    /// New journal position, when the step read new entries.
    pub cursor: Option<i64>,
    pub applied: Vec<(Entry, Applied)>,
    /// Failure rows to insert or replace.
    pub failures: Vec<Failure>,
    /// Failure rows resolved (their entries were applied).
    pub resolved: Vec<i64>,
    /// Failed attempts, for the audit trail.
    pub errors: Vec<(Entry, String)>,
}

#[derive(Clone)]
pub struct ReplayStore {
    conn: Arc<Mutex<Connection>>,
    /// A connection of its own for link-owner lookups made while a target applies a change.
    claims: Arc<Mutex<Connection>>,
}

/// Link owners of one target, read from staging (see `crate::target::Claims`). The lookup is a single
/// indexed read on its own connection, short enough to run inline on the replay task.
pub struct StoreClaims {
    conn: Arc<Mutex<Connection>>,
    target: String,
}

impl crate::target::Claims for StoreClaims {
    fn owner(&self, key: &str) -> Option<(TenantId, String)> {
        let conn = self.conn.lock().ok()?;
        let found = conn
            .prepare_cached(
                "SELECT tenant_id, resource_id FROM links WHERE target = ?1 AND downstream_key = ?2 LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![self.target, key], |r| Ok((TenantId(r.get(0)?), r.get(1)?))).optional()
            });
        match found {
            Ok(v) => v,
            Err(e) => {
                // Unknown is treated as unclaimed only after saying so: the match itself stays email-exact.
                tracing::error!(target = %self.target, error = %e, "cannot read link owners from staging");
                None
            }
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

type RawEntry = (i64, i64, String, String, String, String, Option<String>, Option<String>, Option<String>, String);

fn to_entry(raw: RawEntry) -> Result<Entry, StagingError> {
    let (seq, tenant, kind, resource_id, op, request_id, state, added, removed, at) = raw;
    let ids = |v: Option<String>| -> Vec<String> {
        v.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok()).unwrap_or_default()
    };
    Ok(Entry {
        seq,
        tenant: TenantId(tenant),
        kind: Kind::parse(&kind)
            .ok_or_else(|| StagingError::Commit(format!("journal entry {seq} has kind {kind:?}")))?,
        resource_id,
        op: Op::parse(&op).ok_or_else(|| StagingError::Commit(format!("journal entry {seq} has op {op:?}")))?,
        request_id,
        at,
        state: match state {
            Some(s) => parse_body(&s)?,
            None => serde_json::Map::new(),
        },
        members_added: ids(added),
        members_removed: ids(removed),
    })
}

const ENTRY_COLUMNS: &str = "j.seq, j.tenant_id, j.kind, j.resource_id, j.op, j.request_id, j.state, j.members_added, j.members_removed, j.created";

impl ReplayStore {
    /// # Errors
    /// The staging database cannot be opened.
    pub fn open(path: &Path) -> Result<ReplayStore, StagingError> {
        let mut conn = open_connection(path)?;
        super::migrations::migrate(&mut conn)?;
        let claims = open_connection(path)?;
        Ok(ReplayStore { conn: Arc::new(Mutex::new(conn)), claims: Arc::new(Mutex::new(claims)) })
    }

    /// Link owners of a target, for `Target::apply_batch`.
    pub fn claims(&self, target: &str) -> StoreClaims {
        StoreClaims { conn: self.claims.clone(), target: target.to_owned() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StagingError>) -> Result<T, StagingError> {
        let mut guard = self.conn.lock().map_err(|_| StagingError::Join("replay store lock poisoned".into()))?;
        f(&mut guard)
    }

    /// Runs store work on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReplayStore) -> Result<T, StagingError> + Send + 'static,
    ) -> Result<T, StagingError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(|e| StagingError::Join(e.to_string()))?
    }

    pub fn cursor(&self, target: &str) -> Result<i64, StagingError> {
        self.with(|c| {
            Ok(c.query_row("SELECT last_seq FROM replay_cursor WHERE target = ?1", [target], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// The newest journal sequence.
    pub fn head(&self) -> Result<i64, StagingError> {
        self.with(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| r.get(0))?))
    }

    /// Journal entries after `after` of the named tenants, oldest first, and the journal position this read
    /// covers: the last entry returned when the limit was reached, else the journal head (entries of other
    /// tenants up to it need nothing from this target).
    pub fn fetch(&self, tenants: &[String], after: i64, limit: usize) -> Result<(Vec<Entry>, i64), StagingError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| r.get(0))?;
            if tenants.is_empty() {
                return Ok((Vec::new(), head));
            }
            let marks = vec!["?"; tenants.len()].join(", ");
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM journal j JOIN tenants t ON t.id = j.tenant_id
                 WHERE j.seq > ? AND j.seq <= ? AND t.name IN ({marks}) ORDER BY j.seq LIMIT ?"
            );
            let mut values: Vec<rusqlite::types::Value> = vec![after.into(), head.into()];
            values.extend(tenants.iter().map(|t| rusqlite::types::Value::Text(t.clone())));
            values.push((limit as i64).into());
            let raw = {
                let mut stmt = tx.prepare_cached(&sql)?;
                stmt.query_map(params_from_iter(values), entry_from_row)?.collect::<Result<Vec<_>, _>>()?
            };
            let entries = raw.into_iter().map(to_entry).collect::<Result<Vec<_>, _>>()?;
            let upto = if entries.len() >= limit { entries.last().map_or(head, |e| e.seq) } else { head };
            Ok((entries, upto))
        })
    }

    pub fn entry(&self, seq: i64) -> Result<Option<Entry>, StagingError> {
        self.with(|c| {
            let raw = c
                .prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM journal j WHERE j.seq = ?1"))?
                .query_row([seq], entry_from_row)
                .optional()?;
            raw.map(to_entry).transpose()
        })
    }

    /// Known links of a target for these resources.
    pub fn links(&self, target: &str, ids: &HashSet<(TenantId, String)>) -> Result<Links, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT downstream_key, origin, kind FROM links WHERE target = ?1 AND tenant_id = ?2 AND resource_id = ?3",
            )?;
            let mut out = Links::new();
            for (tenant, id) in ids {
                let row = stmt
                    .query_row(params![target, tenant.0, id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                    })
                    .optional()?;
                if let Some((key, origin, kind)) = row {
                    let kind = Kind::parse(&kind).unwrap_or(Kind::User);
                    out.insert((*tenant, id.clone()), Link { key, created: origin == "created", kind });
                }
            }
            Ok(out)
        })
    }

    /// Resources of a target that have a failed entry (their later entries must wait).
    pub fn blocked(&self, target: &str) -> Result<HashSet<(TenantId, String)>, StagingError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT DISTINCT tenant_id, resource_id FROM replay_failures WHERE target = ?1")?;
            let rows = stmt.query_map([target], |r| Ok((TenantId(r.get(0)?), r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The earliest failed entry of each blocked resource, when it is due for another attempt.
    pub fn due(&self, target: &str, now_ms: i64) -> Result<Vec<Failure>, StagingError> {
        self.failures(
            "WHERE f.target = ?1 AND f.state = 'retry' AND f.next_attempt <= ?2
               AND NOT EXISTS (SELECT 1 FROM replay_failures e WHERE e.target = f.target AND e.tenant_id = f.tenant_id
                               AND e.resource_id = f.resource_id AND e.seq < f.seq)
             ORDER BY f.seq",
            params![target, now_ms],
        )
    }

    /// When the next retry of a target is due, if any.
    pub fn next_due(&self, target: &str) -> Result<Option<i64>, StagingError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt) FROM replay_failures WHERE target = ?1 AND state = 'retry'",
                [target],
                |r| r.get(0),
            )?)
        })
    }

    /// The entries waiting behind a resource's failure, in order.
    pub fn waiting(&self, target: &str, tenant: TenantId, resource_id: &str) -> Result<Vec<Failure>, StagingError> {
        self.failures(
            "WHERE f.target = ?1 AND f.tenant_id = ?2 AND f.resource_id = ?3 AND f.state = 'waiting' ORDER BY f.seq",
            params![target, tenant.0, resource_id],
        )
    }

    /// All failure rows (of one target, or all), for the CLI.
    pub fn list_failures(&self, target: Option<&str>) -> Result<Vec<Failure>, StagingError> {
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
                Ok(Failure {
                    target: r.get(0)?,
                    seq: r.get(1)?,
                    tenant: TenantId(r.get(2)?),
                    resource_id: r.get(3)?,
                    state: r.get(4)?,
                    attempts: r.get(5)?,
                    next_attempt_ms: r.get(6)?,
                    last_error: r.get(7)?,
                    updated: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Makes dead letters (all of a target's, or one) due for a new round of attempts. Returns how many.
    pub fn retry(&self, target: Option<&str>, seq: Option<i64>, now_ms: i64) -> Result<usize, StagingError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE replay_failures SET state = 'retry', attempts = 0, next_attempt = ?3, updated = ?4
                 WHERE state = 'dead' AND (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR seq = ?2)",
                params![target, seq, now_ms, now()],
            )?;
            Ok(n)
        })
    }

    /// Commits one replay step.
    pub fn record(&self, r: &Record) -> Result<(), StagingError> {
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
                    "INSERT INTO audit (at, target, tenant_id, seq, request_id, kind, resource_id, op, downstream_key, outcome, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for (e, a) in &r.applied {
                    match &a.key {
                        Some(k) => {
                            let origin = if a.outcome == "created" { "created" } else { "linked" };
                            link.execute(params![r.target, e.tenant.0, e.resource_id, e.kind.as_str(), k, at, origin])?
                        }
                        None => unlink.execute(params![r.target, e.tenant.0, e.resource_id])?,
                    };
                    audit.execute(params![at, r.target, e.tenant.0, e.seq, e.request_id, e.kind.as_str(), e.resource_id, e.op.as_str(), a.key, a.outcome, a.detail])?;
                }
                for (e, err) in &r.errors {
                    audit.execute(params![at, r.target, e.tenant.0, e.seq, e.request_id, e.kind.as_str(), e.resource_id, e.op.as_str(), Value::Null.as_str(), "error", err])?;
                }
                let mut resolve = tx.prepare_cached("DELETE FROM replay_failures WHERE target = ?1 AND seq = ?2")?;
                for seq in &r.resolved {
                    resolve.execute(params![r.target, seq])?;
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
                    let stmt = if f.state == "waiting" { &mut wait } else { &mut fail };
                    stmt.execute(params![f.target, f.seq, f.tenant.0, f.resource_id, f.state, f.attempts, f.next_attempt_ms, f.last_error, at])?;
                }
                if let Some(cursor) = r.cursor {
                    tx.execute(
                        "INSERT INTO replay_cursor (target, last_seq) VALUES (?1, ?2)
                         ON CONFLICT (target) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                        params![r.target, cursor],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}
