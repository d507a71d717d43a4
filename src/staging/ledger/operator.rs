//! What operators and monitoring read of replay, and what they do to it: reachability, positions and
//! failures per target, pending memberships; `retry` and `discard` of dead letters.

use rusqlite::{OptionalExtension, params};

use super::{ChangeSeq, Failure, FailureState, SqliteLedger, now};
use crate::staging::StagingError;

/// Whether a target is reachable, as replay last found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub target: String,
    pub reachable: bool,
    /// When the present state began (RFC 3339).
    pub since: String,
    /// Failed attempts in a row while unreachable.
    pub failures: i64,
    pub last_error: Option<String>,
    /// When the next attempt is due (unix milliseconds), while unreachable.
    pub next_attempt_ms: Option<i64>,
    /// When replay last recorded this (RFC 3339).
    pub checked: String,
}

/// A target's position and failures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetStats {
    pub cursor: ChangeSeq,
    /// Journal entries after the target's position.
    pub lag_changes: i64,
    /// When the oldest of them was acknowledged (RFC 3339).
    pub oldest_unread: Option<String>,
    pub retrying: i64,
    pub dead: i64,
    pub waiting: i64,
}

/// A member a group names that is not (yet) a resource of its tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMember {
    pub tenant: String,
    pub group_id: String,
    /// The group's displayName.
    pub group: String,
    pub member_id: String,
    pub since: String,
}

impl SqliteLedger {
    /// Makes dead letters (all of a target's, or one) due for a new round of attempts. Returns those queued.
    pub(in crate::staging) fn retry(
        &self,
        target: Option<&str>,
        seq: Option<ChangeSeq>,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError> {
        let dead = self.failures(
            "WHERE f.state = 'dead' AND (?1 IS NULL OR f.target = ?1) AND (?2 IS NULL OR f.seq = ?2) ORDER BY f.target, f.seq",
            params![target, seq.map(|s| s.0)],
        )?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut queue = tx.prepare_cached(
                    "UPDATE replay_failures SET state = 'retry', attempts = 0, next_attempt = ?3, updated = ?4
                     WHERE target = ?1 AND seq = ?2 AND state = 'dead'",
                )?;
                let at = now();
                for f in &dead {
                    queue.execute(params![f.target, f.seq.0, now_ms, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(dead)
    }
    /// Drops dead letters with this sequence number (of one target, or of every target that has one): the
    /// change will never reach that target. Each is recorded in the audit trail with `operator`, and the
    /// next change of the same resource waiting behind it becomes due, so that the resource moves on.
    /// Returns the dead letters dropped; none when there is no such dead letter.
    ///
    /// # Errors
    /// The database cannot be read or written.
    pub(in crate::staging) fn discard(
        &self,
        target: Option<&str>,
        seq: ChangeSeq,
        operator: &str,
        now_ms: i64,
    ) -> Result<Vec<Failure>, StagingError> {
        let dead = self.failures(
            "WHERE f.state = 'dead' AND (?1 IS NULL OR f.target = ?1) AND f.seq = ?2 ORDER BY f.target",
            params![target, seq.0],
        )?;
        let Some(entry) = (if dead.is_empty() { None } else { self.entry(seq)? }) else {
            return Ok(Vec::new());
        };
        self.with(|c| {
            let tx = c.transaction()?;
            let at = now();
            for f in &dead {
                tx.execute("DELETE FROM replay_failures WHERE target = ?1 AND seq = ?2 AND state = 'dead'", params![f.target, f.seq.0])?;
                tx.execute(
                    "INSERT INTO audit (at, target, tenant_id, seq, request_id, kind, resource_id, op, downstream_key, outcome, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 'discarded', ?9)",
                    params![
                        at,
                        f.target,
                        entry.tenant.0,
                        seq.0,
                        entry.request_id,
                        entry.kind.as_str(),
                        entry.resource_id.as_str(),
                        entry.op.as_str(),
                        format!("dead letter discarded by {operator} (last error: {})", f.last_error)
                    ],
                )?;
                // The first change waiting behind it goes next; the others follow it (see replay's retries).
                tx.execute(
                    "UPDATE replay_failures SET state = 'retry', attempts = 0, next_attempt = ?4, updated = ?5
                     WHERE target = ?1 AND seq = (SELECT MIN(seq) FROM replay_failures
                         WHERE target = ?1 AND tenant_id = ?2 AND resource_id = ?3 AND state = 'waiting')",
                    params![f.target, f.tenant.0, f.resource_id.as_str(), now_ms, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(dead)
    }

    /// Users and groups per tenant (kept by triggers; no scan).
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn tenant_counts(&self) -> Result<Vec<(String, i64, i64)>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.name,
                        COALESCE((SELECT count FROM resource_counts WHERE tenant_id = t.id AND kind = 'User'), 0),
                        COALESCE((SELECT count FROM resource_counts WHERE tenant_id = t.id AND kind = 'Group'), 0)
                 FROM tenants t ORDER BY t.name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The recorded health of every target.
    pub(in crate::staging) fn health(&self) -> Result<Vec<Health>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT target, reachable, since, failures, last_error, next_attempt, checked FROM target_health ORDER BY target",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Health {
                    target: r.get(0)?,
                    reachable: r.get(1)?,
                    since: r.get(2)?,
                    failures: r.get(3)?,
                    last_error: r.get(4)?,
                    next_attempt_ms: r.get(5)?,
                    checked: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Journal entries per tenant name (tenants without any included).
    pub(in crate::staging) fn changes_per_tenant(&self) -> Result<Vec<(String, i64)>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.name, (SELECT COUNT(*) FROM journal j WHERE j.tenant_id = t.id) FROM tenants t ORDER BY t.name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A target's position and failures, for `status`, metrics and readiness.
    pub(in crate::staging) fn target_stats(&self, target: &str) -> Result<TargetStats, StagingError> {
        let head = self.head()?;
        let cursor = self.cursor(target)?;
        self.with(|c| {
            let oldest_unread: Option<String> = c
                .prepare_cached("SELECT created FROM journal WHERE seq > ?1 ORDER BY seq LIMIT 1")?
                .query_row([cursor.0], |r| r.get(0))
                .optional()?;
            let mut stats = TargetStats { cursor, lag_changes: head.0 - cursor.0, oldest_unread, ..Default::default() };
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM replay_failures WHERE target = ?1 GROUP BY state")?;
            for row in stmt.query_map([target], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (state, n) = row?;
                match FailureState::parse(&state)? {
                    FailureState::Retry => stats.retrying = n,
                    FailureState::Dead => stats.dead = n,
                    FailureState::Waiting => stats.waiting = n,
                }
            }
            Ok(stats)
        })
    }

    /// How many pending group memberships there are.
    pub(in crate::staging) fn pending_count(&self) -> Result<i64, StagingError> {
        self.with(|c| Ok(c.query_row("SELECT COUNT(*) FROM pending_members", [], |r| r.get(0))?))
    }

    /// Pending group memberships: ids a group names that are not resources of its tenant.
    pub(in crate::staging) fn pending_members(&self) -> Result<Vec<PendingMember>, StagingError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.name, g.id, COALESCE(g.display, ''), p.member_id, p.since FROM pending_members p
                 JOIN resources g ON g.seq = p.group_seq JOIN tenants t ON t.id = p.tenant_id ORDER BY t.name, g.seq, p.member_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PendingMember {
                    tenant: r.get(0)?,
                    group_id: r.get(1)?,
                    group: r.get(2)?,
                    member_id: r.get(3)?,
                    since: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
