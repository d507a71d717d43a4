//! Group membership in staging: member ids resolved to resources of the same tenant, membership edits row by
//! row, and pending memberships: ids that are not (yet) a resource of the tenant. A pending member does not
//! make the whole group refused (one user that failed to provision would otherwise block every push of its
//! groups); it is kept aside, shown to the operator, never resolved against another tenant, and becomes a
//! membership if a resource with that id appears in the tenant. A strict tenant refuses such ids instead.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::{Member, StagingError, TenantId};
use crate::scim::error::ScimError;
use crate::scim::patch::MemberEdit;

/// A group document's member ids, resolved.
pub(super) struct Resolved {
    /// (seq, member) of the ids that are resources of the tenant, in the order given.
    pub known: Vec<(i64, Member)>,
    /// Ids that are not.
    pub pending: Vec<String>,
}

fn unknown(id: &str) -> StagingError {
    ScimError::invalid_value(format!("member {id:?} is not a User or Group of this tenant")).into()
}

fn find(conn: &Connection, tenant: TenantId, id: &str) -> Result<Option<(i64, String, Option<String>)>, StagingError> {
    Ok(conn
        .prepare_cached("SELECT seq, kind, display FROM resources WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant.0, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// Resolves the member ids of a group document to staged resources of the same tenant.
pub(super) fn resolve(
    conn: &Connection,
    tenant: TenantId,
    group_seq: Option<i64>,
    doc: &Map<String, Value>,
    strict: bool,
) -> Result<Resolved, StagingError> {
    let mut out = Resolved { known: Vec::new(), pending: Vec::new() };
    let mut seen = HashSet::new();
    for m in doc.get("members").and_then(Value::as_array).into_iter().flatten() {
        let Some(id) = m.get("value").and_then(Value::as_str) else {
            return Err(ScimError::invalid_value("every member needs a \"value\" (the member's id)").into());
        };
        if !seen.insert(id.to_owned()) {
            continue;
        }
        match find(conn, tenant, id)? {
            Some((seq, _, _)) if Some(seq) == group_seq => {
                return Err(ScimError::invalid_value("a group cannot be a member of itself").into());
            }
            Some((seq, kind, display)) => {
                out.known.push((seq, Member { id: id.to_owned(), kind: super::read::parse_kind(&kind)?, display }))
            }
            None if strict => return Err(unknown(id)),
            None => out.pending.push(id.to_owned()),
        }
    }
    Ok(out)
}

/// The members of a group: (seq, id).
pub(super) fn current(conn: &Connection, group_seq: i64) -> Result<Vec<(i64, String)>, StagingError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.member_seq, r.id FROM group_members m JOIN resources r ON r.seq = m.member_seq
         WHERE m.group_seq = ?1 ORDER BY m.member_seq",
    )?;
    let rows = stmt.query_map([group_seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Makes `ids` the pending members of a group (a create or a whole new member list).
pub(super) fn set_pending(
    conn: &Connection,
    tenant: TenantId,
    group_seq: i64,
    ids: &[String],
    at: &str,
) -> Result<(), StagingError> {
    conn.prepare_cached("DELETE FROM pending_members WHERE group_seq = ?1")?.execute([group_seq])?;
    let mut ins = conn.prepare_cached(
        "INSERT OR IGNORE INTO pending_members (group_seq, tenant_id, member_id, since) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for id in ids {
        ins.execute(params![group_seq, tenant.0, id, at])?;
    }
    Ok(())
}

/// Replaces a group's memberships with `wanted`; returns the (added, removed) ids.
pub(super) fn replace(
    conn: &Connection,
    group_seq: i64,
    wanted: &[(i64, Member)],
) -> Result<(Vec<String>, Vec<String>), StagingError> {
    let have = current(conn, group_seq)?;
    let wanted_seqs: HashSet<i64> = wanted.iter().map(|(s, _)| *s).collect();
    let have_seqs: HashSet<i64> = have.iter().map(|(s, _)| *s).collect();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut del = conn.prepare_cached("DELETE FROM group_members WHERE group_seq = ?1 AND member_seq = ?2")?;
    for (s, mid) in &have {
        if !wanted_seqs.contains(s) {
            del.execute([group_seq, *s])?;
            removed.push(mid.clone());
        }
    }
    let mut ins = conn.prepare_cached("INSERT INTO group_members (group_seq, member_seq) VALUES (?1, ?2)")?;
    for (s, m) in wanted {
        if !have_seqs.contains(s) {
            ins.execute([group_seq, *s])?;
            added.push(m.id.clone());
        }
    }
    Ok((added, removed))
}

/// Applies membership edits row by row (pending ones to the pending set); returns the net (added,
/// removed) ids of actual memberships.
pub(super) fn apply_edits(
    conn: &Connection,
    tenant: TenantId,
    group_seq: i64,
    edits: Vec<MemberEdit>,
    strict: bool,
    at: &str,
) -> Result<(Vec<String>, Vec<String>), StagingError> {
    let mut ins = conn.prepare_cached("INSERT OR IGNORE INTO group_members (group_seq, member_seq) VALUES (?1, ?2)")?;
    let mut del = conn.prepare_cached("DELETE FROM group_members WHERE group_seq = ?1 AND member_seq = ?2")?;
    let mut pend = conn.prepare_cached(
        "INSERT OR IGNORE INTO pending_members (group_seq, tenant_id, member_id, since) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut unpend = conn.prepare_cached("DELETE FROM pending_members WHERE group_seq = ?1 AND member_id = ?2")?;
    // Net effect per id, in first-touch order: (was a member before, is a member now).
    let mut net: Vec<(String, bool, bool)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for edit in edits {
        let (id, add) = match edit {
            MemberEdit::Add(id) => (id, true),
            MemberEdit::Remove(id) => (id, false),
        };
        let Some((seq, _, _)) = find(conn, tenant, &id)? else {
            match (add, strict) {
                (true, true) => return Err(unknown(&id)),
                (true, false) => pend.execute(params![group_seq, tenant.0, id, at])?,
                (false, _) => unpend.execute(params![group_seq, id])?,
            };
            continue;
        };
        if seq == group_seq {
            return Err(ScimError::invalid_value("a group cannot be a member of itself").into());
        }
        let changed = if add { ins.execute([group_seq, seq])? } else { del.execute([group_seq, seq])? } == 1;
        match index.get(&id) {
            Some(&i) => net[i].2 = add,
            None => {
                index.insert(id.clone(), net.len());
                net.push((id, if changed { !add } else { add }, add));
            }
        }
    }
    let added = net.iter().filter(|(_, before, now)| !before && *now).map(|(id, _, _)| id.clone()).collect();
    let removed = net.iter().filter(|(_, before, now)| *before && !now).map(|(id, _, _)| id.clone()).collect();
    Ok((added, removed))
}

/// The groups (seq) waiting for a member with this id in this tenant; their pending rows are removed and
/// the memberships made.
pub(super) fn adopt(conn: &Connection, tenant: TenantId, id: &str, seq: i64) -> Result<Vec<i64>, StagingError> {
    let groups: Vec<i64> = conn
        .prepare_cached("SELECT group_seq FROM pending_members WHERE tenant_id = ?1 AND member_id = ?2")?
        .query_map(params![tenant.0, id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for g in &groups {
        conn.prepare_cached("DELETE FROM pending_members WHERE group_seq = ?1 AND member_id = ?2")?
            .execute(params![g, id])?;
        conn.prepare_cached("INSERT OR IGNORE INTO group_members (group_seq, member_seq) VALUES (?1, ?2)")?
            .execute([*g, seq])?;
    }
    Ok(groups)
}
