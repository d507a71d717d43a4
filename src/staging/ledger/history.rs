//! What happened, as staging recorded it: the audit trail by time (`history`), everything known of one
//! resource (`explain`: its journal entries, what each target did, its links and failures), and
//! retention, which removes old applied entries and audit rows.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Failure, SqliteLedger};
use crate::scim::schema::Kind;
use crate::staging::StagingError;
use crate::staging::journal::{ResourceId, ResourceRef, TenantId};
use crate::staging::read::{parse_body, parse_kind};

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub target: String,
    pub tenant: String,
    pub seq: i64,
    pub request_id: String,
    pub kind: String,
    pub resource_id: String,
    /// The resource's userName or group name, while it exists.
    pub name: Option<String>,
    pub op: String,
    pub key: Option<String>,
    pub outcome: String,
    pub detail: String,
    /// What was written downstream (statements with values, LDAP operations).
    pub operations: Vec<String>,
}

/// A resource a query names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub tenant: String,
    pub kind: &'static str,
    pub id: String,
    /// userName or displayName.
    pub name: String,
    /// Deleted in SCIM (only its journal entries remain).
    pub gone: bool,
}

impl Candidate {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef { tenant: self.tenant_id, id: ResourceId(self.id.clone()) }
    }
}

/// One journal entry of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub seq: i64,
    pub at: String,
    pub request_id: String,
    pub op: String,
    #[serde(skip)]
    pub state: Map<String, Value>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
}

/// A resource's link in one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRow {
    pub target: String,
    pub key: String,
    pub origin: String,
    pub linked: String,
}

/// Everything staging knows of one resource, oldest first.
#[derive(Debug, Clone)]
pub struct Story {
    pub resource: Candidate,
    pub changes: Vec<Change>,
    pub audit: Vec<AuditRow>,
    pub links: Vec<LinkRow>,
    pub failures: Vec<Failure>,
}

const AUDIT_COLUMNS: &str = "a.id, a.at, a.target, COALESCE(t.name, '#' || a.tenant_id), a.seq, a.request_id, a.kind, a.resource_id, a.op, a.downstream_key, a.outcome, a.detail, a.operations,
    (SELECT COALESCE(r.display, r.name_key) FROM resources r WHERE r.tenant_id = a.tenant_id AND r.id = a.resource_id)";

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    let ops: Option<String> = r.get(12)?;
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        target: r.get(2)?,
        tenant: r.get(3)?,
        seq: r.get(4)?,
        request_id: r.get(5)?,
        kind: r.get(6)?,
        resource_id: r.get(7)?,
        op: r.get(8)?,
        key: r.get(9)?,
        outcome: r.get(10)?,
        detail: r.get(11)?,
        operations: ops.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default(),
        name: r.get(13)?,
    })
}

impl SqliteLedger {
    /// Audit rows newest first: of one target or all, since a time (RFC 3339), with one outcome.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn history(
        &self,
        target: Option<&str>,
        since: Option<&str>,
        outcome: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StagingError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit a LEFT JOIN tenants t ON t.id = a.tenant_id
                 WHERE (?1 IS NULL OR a.target = ?1) AND (?2 IS NULL OR a.at >= ?2) AND (?3 IS NULL OR a.outcome = ?3)
                 ORDER BY a.id DESC LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![target, since, outcome, limit as i64], audit_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The resources a query names: a SCIM id, a userName or group name, an email address, or a downstream
    /// key; deleted resources too, by id or key.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn find_resources(&self, query: &str) -> Result<Vec<Candidate>, StagingError> {
        self.with(|c| {
            let mut found: Vec<Candidate> = Vec::new();
            let mut add = |tenant_id: i64, tenant: String, kind: String, id: String, name: String, gone: bool| {
                if !found.iter().any(|f| f.tenant_id.0 == tenant_id && f.id == id) {
                    let kind = parse_kind(&kind).map(Kind::as_str).unwrap_or("User");
                    found.push(Candidate { tenant_id: TenantId(tenant_id), tenant, kind, id, name, gone });
                }
            };
            let lower = query.to_lowercase();
            let mut live = c.prepare_cached(
                "SELECT r.tenant_id, t.name, r.kind, r.id, COALESCE(r.display, r.name_key) FROM resources r JOIN tenants t ON t.id = r.tenant_id
                 WHERE r.id = ?1 OR r.name_key = ?2 OR r.seq IN (SELECT resource_seq FROM resource_emails WHERE email = ?2)",
            )?;
            for row in live.query_map(params![query, lower], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))? {
                let (t, tn, k, id, name) = row?;
                add(t, tn, k, id, name, false);
            }
            // Downstream keys and ids of deleted resources: through links and the journal.
            let mut linked = c.prepare_cached(
                "SELECT DISTINCT l.tenant_id, t.name, l.kind, l.resource_id FROM links l JOIN tenants t ON t.id = l.tenant_id
                 WHERE l.downstream_key = ?1 OR LOWER(l.downstream_key) = ?2
                 UNION SELECT DISTINCT j.tenant_id, t.name, j.kind, j.resource_id FROM journal j JOIN tenants t ON t.id = j.tenant_id
                 WHERE j.resource_id = ?1",
            )?;
            let rows: Vec<(i64, String, String, String)> = linked
                .query_map(params![query, lower], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            for (t, tn, k, id) in rows {
                let live: Option<String> = c
                    .query_row("SELECT COALESCE(display, name_key) FROM resources WHERE tenant_id = ?1 AND id = ?2", params![t, id], |r| r.get(0))
                    .optional()?;
                let name = match &live {
                    Some(n) => n.clone(),
                    None => last_name(c, t, &id)?,
                };
                add(t, tn, k, id, name, live.is_none());
            }
            Ok(found)
        })
    }

    /// The userName or group name of a resource, while it exists.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn resource_name(&self, tenant: TenantId, id: &str) -> Result<Option<String>, StagingError> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT COALESCE(display, name_key) FROM resources WHERE tenant_id = ?1 AND id = ?2")?
                .query_row(params![tenant.0, id], |r| r.get(0))
                .optional()?)
        })
    }

    /// Everything staging knows of one resource.
    ///
    /// # Errors
    /// The staging database cannot be read.
    pub(in crate::staging) fn story(&self, resource: &Candidate) -> Result<Story, StagingError> {
        let r = resource.resource();
        let changes = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, created, request_id, op, state, members_added, members_removed FROM journal
                 WHERE tenant_id = ?1 AND resource_id = ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![r.tenant.0, r.id.as_str()], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })?;
            let ids =
                |v: Option<String>| v.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok()).unwrap_or_default();
            let mut out = Vec::new();
            for row in rows {
                let (seq, at, request_id, op, state, added, removed) = row?;
                let state = match state {
                    Some(s) => parse_body(&s)?,
                    None => Map::new(),
                };
                out.push(Change {
                    seq,
                    at,
                    request_id,
                    op,
                    state,
                    members_added: ids(added),
                    members_removed: ids(removed),
                });
            }
            Ok(out)
        })?;
        let (audit, links) = self.with(|c| {
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit a LEFT JOIN tenants t ON t.id = a.tenant_id
                 WHERE a.tenant_id = ?1 AND a.resource_id = ?2 ORDER BY a.id"
            );
            let audit = c.prepare_cached(&sql)?.query_map(params![r.tenant.0, r.id.as_str()], audit_row)?.collect::<Result<Vec<_>, _>>()?;
            let links = c
                .prepare_cached("SELECT target, downstream_key, origin, linked FROM links WHERE tenant_id = ?1 AND resource_id = ?2 ORDER BY target")?
                .query_map(params![r.tenant.0, r.id.as_str()], |row| {
                    Ok(LinkRow { target: row.get(0)?, key: row.get(1)?, origin: row.get(2)?, linked: row.get(3)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((audit, links))
        })?;
        let failures = self.list_failures(None)?.into_iter().filter(|f| f.resource() == r).collect();
        Ok(Story { resource: resource.clone(), changes, audit, links, failures })
    }

    /// Removes journal entries and audit rows older than `cutoff` (RFC 3339): of the journal only entries
    /// every target in `targets` has replayed, that no failure refers to, and that are not the newest entry
    /// of their resource (which `explain` and reconciliation read). In batches, so that the staging writer
    /// is never held for long. Returns (journal entries, audit rows) removed.
    ///
    /// # Errors
    /// The staging database cannot be written.
    pub(in crate::staging) fn prune(&self, targets: &[String], cutoff: &str) -> Result<(u64, u64), StagingError> {
        let mut applied_up_to = self.head()?.0;
        for t in targets {
            applied_up_to = applied_up_to.min(self.cursor(t)?.0);
        }
        let mut removed = (0u64, 0u64);
        loop {
            let n = self.with(|c| {
                Ok(c.execute(
                    "DELETE FROM journal WHERE seq IN (
                        SELECT j.seq FROM journal j WHERE j.created < ?1 AND j.seq <= ?2
                          AND NOT EXISTS (SELECT 1 FROM replay_failures f WHERE f.seq = j.seq)
                          AND EXISTS (SELECT 1 FROM journal n WHERE n.tenant_id = j.tenant_id AND n.resource_id = j.resource_id AND n.seq > j.seq)
                        ORDER BY j.created LIMIT 5000)",
                    params![cutoff, applied_up_to],
                )?)
            })?;
            removed.0 += n as u64;
            if n < 5000 {
                break;
            }
        }
        loop {
            let n = self.with(|c| {
                Ok(c.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT 5000)",
                    [cutoff],
                )?)
            })?;
            removed.1 += n as u64;
            if n < 5000 {
                break;
            }
        }
        Ok(removed)
    }
}

/// The name a deleted resource last had (from its newest journal entry).
fn last_name(c: &rusqlite::Connection, tenant: i64, id: &str) -> Result<String, StagingError> {
    let state: Option<String> = c
        .query_row(
            "SELECT state FROM journal WHERE tenant_id = ?1 AND resource_id = ?2 ORDER BY seq DESC LIMIT 1",
            params![tenant, id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let doc = state.map(|s| parse_body(&s)).transpose()?.unwrap_or_default();
    Ok(["userName", "displayName"]
        .iter()
        .find_map(|k| doc.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::journal::{Applied, ChangeSeq, Entry, Op, Outcome};
    use crate::staging::ledger::Record;

    /// Only applied entries older than the cutoff go; the newest of each resource and failed ones stay;
    /// audit rows go by age alone.
    #[test]
    fn retention_removes_only_applied_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (tenant, _) = crate::staging::rotate_token(&path, "t").unwrap();
        let store = SqliteLedger::open(&path).unwrap();
        store
            .with(|c| {
                for (seq, id, created) in [(1, "a", "2025-01-01"), (2, "a", "2025-01-02"), (3, "b", "2025-01-03"), (4, "b", "2025-01-04"), (5, "a", "2026-11-30"), (6, "c", "2025-01-05"), (7, "c", "2025-01-06")] {
                    c.execute(
                        "INSERT INTO journal (seq, tenant_id, kind, resource_id, op, request_id, state, version, created) VALUES (?1, ?2, 'User', ?3, 'replace', 'r', '{}', 1, ?4)",
                        params![seq, tenant.id.0, id, created],
                    )?;
                }
                c.execute("INSERT INTO replay_failures (target, seq, tenant_id, resource_id, state, attempts, next_attempt, last_error, updated) VALUES ('crm', 3, ?1, 'b', 'dead', 5, 0, 'x', 'now')", [tenant.id.0])?;
                Ok(())
            })
            .unwrap();
        let mut record = Record::new("crm");
        record.cursor = Some(ChangeSeq(6));
        let e = |seq: i64| Entry {
            seq: ChangeSeq(seq),
            tenant: tenant.id,
            tenant_name: "t".into(),
            kind: Kind::User,
            resource_id: ResourceId("a".into()),
            op: Op::Replace,
            request_id: "r".into(),
            at: String::new(),
            state: Map::new(),
            members_added: Vec::new(),
            members_removed: Vec::new(),
        };
        record.applied.push((e(1), Applied::new(Some("k".into()), Outcome::Updated, "")));
        store.record(&record).unwrap();
        store.with(|c| Ok(c.execute("UPDATE audit SET at = '2025-01-01T00:00:00Z'", [])?)).unwrap();
        let (journal, audit) = store.prune(&["crm".into()], "2026-01-01").unwrap();
        let left: Vec<i64> = store
            .with(|c| {
                Ok(c.prepare("SELECT seq FROM journal ORDER BY seq")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        // 1, 2: old, applied, not the newest of "a" (5 is): removed. 3: a dead letter. 4: the newest of "b".
        // 6: old and applied, but 7 is newer... and 7 is not applied (cursor 6): 6 goes, 7 stays.
        assert_eq!(left, [3, 4, 5, 7]);
        assert_eq!((journal, audit), (3, 1));
    }
}
