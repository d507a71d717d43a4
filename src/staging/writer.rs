//! The single staging writer. It takes queued changes in batches, applies each inside a savepoint of one
//! shared transaction (a rejected change rolls back alone), commits once with fsync, and only then answers
//! every request of the batch: many concurrent writes share one fsync (group commit) and none is answered
//! before it is durable.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::journal::Op;
use super::members;
use super::{Change, ChangeSeq, Committed, StagingError, Stored, TenantId, WriteRequest, WriterMsg};
use crate::scim::error::ScimError;
use crate::scim::schema::Kind;
use crate::scim::{self, patch};

pub(super) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<WriterMsg>,
    max_batch: usize,
    commits: tokio::sync::watch::Sender<u64>,
    generations: super::Generations,
) {
    let mut stopping = false;
    while !stopping {
        let (mut batch, mut probes) = (Vec::new(), Vec::new());
        match rx.blocking_recv() {
            Some(WriterMsg::Write(r)) => batch.push(r),
            Some(WriterMsg::Probe(p)) => probes.push(p),
            Some(WriterMsg::Stop) | None => break,
        }
        // Whatever queued up while the previous commit was syncing goes into this one.
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(WriterMsg::Write(r)) => batch.push(r),
                Ok(WriterMsg::Probe(p)) => probes.push(p),
                Ok(WriterMsg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, batch, &generations);
            commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        if !probes.is_empty() {
            let beat = conn
                .execute("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?1)", [now()])
                .map(|_| ())
                .map_err(|e| format!("staging cannot commit a write: {e}"));
            for p in probes {
                let _ = p.send(beat.clone());
            }
        }
    }
    tracing::debug!("staging writer stopped");
}

/// A failure of the storage itself rather than of the change: nothing can be committed until an operator
/// frees space or makes the file system writable, so clients are asked to retry (503).
fn storage_failure(e: &StagingError) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(e, StagingError::Db(db) if matches!(
        db.sqlite_error_code(),
        Some(C::DiskFull | C::ReadOnly | C::SystemIoFailure | C::CannotOpen | C::DatabaseBusy | C::DatabaseLocked)
    ))
}

fn commit_batch(conn: &mut Connection, batch: Vec<WriteRequest>, generations: &super::Generations) {
    let outcome = (|| {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        for req in &batch {
            let sp = tx.savepoint()?;
            // A bug in applying one change must fail that request, not kill the only writer thread.
            let applied =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(&sp, req))).unwrap_or_else(|_| {
                    tracing::error!(request_id = %req.request_id, "applying a change panicked; the change was refused");
                    Err(StagingError::Rejected(ScimError::internal()))
                });
            match applied {
                Ok(c) => {
                    sp.commit()?;
                    results.push(Ok(c));
                }
                Err(StagingError::Rejected(e)) => {
                    drop(sp); // rolls back this change only
                    results.push(Err(StagingError::Rejected(e)));
                }
                Err(other) => return Err(other),
            }
        }
        tx.commit()?;
        Ok::<_, StagingError>(results)
    })();
    match outcome {
        Ok(results) => {
            if let Ok(mut g) = generations.lock() {
                for (req, result) in batch.iter().zip(&results) {
                    if let Ok(Committed { seq: Some(_), .. }) = result {
                        let generation = g.entry((req.tenant, req.change.kind())).or_default();
                        generation.writes += 1;
                        if let Change::Delete { .. } = req.change {
                            generation.deletes += 1;
                        }
                    }
                }
            }
            for (req, result) in batch.into_iter().zip(results) {
                // A client that went away still had its change committed; nothing to do about the reply.
                let _ = req.reply.send(result);
            }
        }
        Err(e) => {
            // Nothing of this batch was committed, so nothing was acknowledged: clients are told to retry.
            let unavailable = storage_failure(&e);
            tracing::error!(error = %e, changes = batch.len(), storage_unavailable = unavailable, "staging commit failed; batch rolled back");
            let msg = e.to_string();
            for req in batch {
                let err = if unavailable {
                    StagingError::Unavailable(msg.clone())
                } else {
                    StagingError::Commit(msg.clone())
                };
                let _ = req.reply.send(Err(err));
            }
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The columns derived from a document, used for uniqueness and indexed filters.
struct Keys {
    name_key: String,
    display_key: Option<String>,
    display: Option<String>,
    external_id: Option<String>,
    emails: Vec<String>,
}

fn str_of<'a>(doc: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    doc.get(name).and_then(Value::as_str)
}

impl Keys {
    fn of(kind: Kind, doc: &Map<String, Value>) -> Keys {
        let external_id = str_of(doc, "externalId").map(str::to_owned);
        match kind {
            Kind::User => {
                let user_name = str_of(doc, "userName").unwrap_or_default();
                let display_name = str_of(doc, "displayName");
                let mut emails: Vec<String> = doc
                    .get("emails")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("value").and_then(Value::as_str))
                    .map(str::to_lowercase)
                    .collect();
                emails.sort();
                emails.dedup();
                Keys {
                    name_key: user_name.to_lowercase(),
                    display_key: display_name.map(str::to_lowercase),
                    display: Some(display_name.unwrap_or(user_name).to_owned()),
                    external_id,
                    emails,
                }
            }
            Kind::Group => {
                let display_name = str_of(doc, "displayName").unwrap_or_default();
                Keys {
                    name_key: display_name.to_lowercase(),
                    display_key: None,
                    display: Some(display_name.to_owned()),
                    external_id,
                    emails: Vec::new(),
                }
            }
        }
    }
}

/// The current row of a resource.
struct Current {
    seq: i64,
    doc: Map<String, Value>,
    version: i64,
    created: String,
    last_modified: String,
}

fn load(conn: &Connection, tenant: TenantId, kind: Kind, id: &str) -> Result<Current, StagingError> {
    let row = conn
        .prepare_cached(
            "SELECT seq, body, version, created, last_modified FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_row(params![tenant.0, kind.as_str(), id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((seq, body, version, created, last_modified)) = row else {
        return Err(ScimError::not_found(kind.as_str(), id).into());
    };
    let doc = super::read::parse_body(&body)?;
    Ok(Current { seq, doc, version, created, last_modified })
}

/// `If-Match` (RFC 7644 §3.14, RFC 7232 §3.1): `*`, or a list of (weak or strong) tags.
fn check_if_match(if_match: &Option<String>, version: i64) -> Result<(), ScimError> {
    let Some(header) = if_match else { return Ok(()) };
    let ok = header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version.to_string());
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "If-Match {header} does not match the current version W/\"{version}\""
        )))
    }
}

fn check_unique(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    keys: &Keys,
    doc: &Map<String, Value>,
    except_seq: Option<i64>,
) -> Result<(), StagingError> {
    let taken: Option<i64> = conn
        .prepare_cached("SELECT seq FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND name_key = ?3")?
        .query_row(params![tenant.0, kind.as_str(), keys.name_key], |r| r.get(0))
        .optional()?;
    match taken {
        Some(seq) if Some(seq) != except_seq => {
            let (attr, value) = match kind {
                Kind::User => ("userName", str_of(doc, "userName")),
                Kind::Group => ("displayName", str_of(doc, "displayName")),
            };
            Err(ScimError::uniqueness(format!(
                "{attr} {:?} is already used by another {} of this tenant",
                value.unwrap_or_default(),
                kind.as_str()
            ))
            .into())
        }
        _ => Ok(()),
    }
}

fn write_emails(conn: &Connection, tenant: TenantId, seq: i64, keys: &Keys, replace: bool) -> Result<(), StagingError> {
    if replace {
        conn.prepare_cached("DELETE FROM resource_emails WHERE resource_seq = ?1")?.execute([seq])?;
    }
    let mut ins =
        conn.prepare_cached("INSERT INTO resource_emails (resource_seq, tenant_id, email) VALUES (?1, ?2, ?3)")?;
    for e in &keys.emails {
        ins.execute(params![seq, tenant.0, e])?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn journal(
    conn: &Connection,
    req: &WriteRequest,
    kind: Kind,
    id: &str,
    op: Op,
    state: &Map<String, Value>,
    added: &[String],
    removed: &[String],
    version: i64,
    at: &str,
) -> Result<ChangeSeq, StagingError> {
    let list = |v: &[String]| if v.is_empty() { None } else { Some(json!(v).to_string()) };
    conn.prepare_cached(
        "INSERT INTO journal (tenant_id, kind, resource_id, op, request_id, state, members_added, members_removed, version, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        req.tenant.0,
        kind.as_str(),
        id,
        op.as_str(),
        req.request_id,
        Value::Object(state.clone()).to_string(),
        list(added),
        list(removed),
        version,
        at
    ])?;
    Ok(ChangeSeq(conn.last_insert_rowid()))
}

fn apply(conn: &Connection, req: &WriteRequest) -> Result<Committed, StagingError> {
    let tenant = req.tenant;
    match &req.change {
        Change::Create { kind, doc } => create(conn, req, *kind, doc.clone()),
        Change::Replace { kind, id, doc, if_match } => {
            let cur = load(conn, tenant, *kind, id)?;
            check_if_match(if_match, cur.version)?;
            update(conn, req, *kind, id, cur, doc.clone(), Op::Replace, Members::FromDoc)
        }
        Change::Patch { kind, id, ops, if_match } => {
            let cur = load(conn, tenant, *kind, id)?;
            check_if_match(if_match, cur.version)?;
            let mut doc = cur.doc.clone();
            if *kind == Kind::Group
                && let Some((rest, edits)) = patch::split_member_edits(ops)
            {
                patch::apply(*kind, &mut doc, &rest, req.rules.strict)?;
                scim::validate(*kind, &doc, req.rules)?;
                return update(conn, req, *kind, id, cur, doc, Op::Patch, Members::Edits(edits));
            }
            if *kind == Kind::Group {
                let members: Vec<Value> =
                    members::current(conn, cur.seq)?.into_iter().map(|(_, id)| json!({ "value": id })).collect();
                if !members.is_empty() {
                    doc.insert("members".into(), Value::Array(members));
                }
            }
            patch::apply(*kind, &mut doc, ops, req.rules.strict)?;
            scim::validate(*kind, &doc, req.rules)?;
            update(conn, req, *kind, id, cur, doc, Op::Patch, Members::FromDoc)
        }
        Change::Delete { kind, id, if_match } => {
            let cur = load(conn, tenant, *kind, id)?;
            check_if_match(if_match, cur.version)?;
            let at = now();
            // Groups listing this resource lose it with the delete (the membership rows cascade): each gets a
            // journal entry of its own, so that replay removes the membership downstream too.
            let containing: Vec<(i64, String, i64, String)> = conn
                .prepare_cached(
                    "SELECT g.seq, g.id, g.version, g.body FROM group_members m JOIN resources g ON g.seq = m.group_seq
                     WHERE m.member_seq = ?1",
                )?
                .query_map([cur.seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            conn.prepare_cached("DELETE FROM resources WHERE seq = ?1")?.execute([cur.seq])?;
            for (gseq, gid, gversion, gbody) in containing {
                conn.prepare_cached("UPDATE resources SET version = ?2, last_modified = ?3 WHERE seq = ?1")?
                    .execute(params![gseq, gversion + 1, at])?;
                let gdoc = super::read::parse_body(&gbody)?;
                journal(
                    conn,
                    req,
                    Kind::Group,
                    &gid,
                    Op::Patch,
                    &gdoc,
                    &[],
                    std::slice::from_ref(id),
                    gversion + 1,
                    &at,
                )?;
            }
            let seq = journal(conn, req, *kind, id, Op::Delete, &cur.doc, &[], &[], cur.version + 1, &at)?;
            Ok(Committed { seq: Some(seq), resource: None })
        }
    }
}

fn create(
    conn: &Connection,
    req: &WriteRequest,
    kind: Kind,
    mut doc: Map<String, Value>,
) -> Result<Committed, StagingError> {
    let tenant = req.tenant;
    let keys = Keys::of(kind, &doc);
    check_unique(conn, tenant, kind, &keys, &doc, None)?;
    check_manager(conn, tenant, &doc, req.rules.strict)?;
    let resolved = match kind {
        Kind::Group => members::resolve(conn, tenant, None, &doc, req.rules.strict)?,
        Kind::User => members::Resolved { known: Vec::new(), pending: Vec::new() },
    };
    let members = resolved.known;
    doc.remove("members");
    let id = uuid::Uuid::now_v7().to_string();
    let at = now();
    conn.prepare_cached(
        "INSERT INTO resources (tenant_id, kind, id, name_key, display_key, external_id, display, body, version, created, last_modified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9)",
    )?
    .execute(params![
        tenant.0,
        kind.as_str(),
        id,
        keys.name_key,
        keys.display_key,
        keys.external_id,
        keys.display,
        Value::Object(doc.clone()).to_string(),
        at
    ])?;
    let seq = conn.last_insert_rowid();
    write_emails(conn, tenant, seq, &keys, false)?;
    let mut ins = conn.prepare_cached("INSERT INTO group_members (group_seq, member_seq) VALUES (?1, ?2)")?;
    for (mseq, _) in &members {
        ins.execute([seq, *mseq])?;
    }
    if !resolved.pending.is_empty() {
        members::set_pending(conn, tenant, seq, &resolved.pending, &at)?;
    }
    let added: Vec<String> = members.iter().map(|(_, m)| m.id.clone()).collect();
    let change = journal(conn, req, kind, &id, Op::Create, &doc, &added, &[], 1, &at)?;
    adopt_pending(conn, req, &id, seq, &at)?;
    let members = (kind == Kind::Group).then(|| members.into_iter().map(|(_, m)| m).collect());
    Ok(Committed {
        seq: Some(change),
        resource: Some(Stored {
            kind,
            id,
            doc,
            members,
            body: None,
            version: 1,
            created: at.clone(),
            last_modified: at,
        }),
    })
}

/// The enterprise extension's manager, a reference to another user: in a strict tenant it must be a user
/// of the tenant; otherwise it is kept as given (the manager may be provisioned later), like a pending
/// group member.
fn check_manager(
    conn: &Connection,
    tenant: TenantId,
    doc: &Map<String, Value>,
    strict: bool,
) -> Result<(), StagingError> {
    if !strict {
        return Ok(());
    }
    let manager = doc
        .get(crate::scim::schema::ENTERPRISE_SCHEMA)
        .and_then(|e| e.get("manager"))
        .and_then(|m| m.get("value"))
        .and_then(Value::as_str);
    let Some(id) = manager else { return Ok(()) };
    let is_user = conn
        .prepare_cached("SELECT 1 FROM resources WHERE tenant_id = ?1 AND kind = 'User' AND id = ?2")?
        .query_row(params![tenant.0, id], |_| Ok(()))
        .optional()?
        .is_some();
    if is_user {
        Ok(())
    } else {
        Err(ScimError::invalid_value(format!("manager {id:?} is not a User of this tenant")).into())
    }
}

/// A new resource whose id groups of its tenant were waiting for (pending members): the memberships are
/// made and each group gets a journal entry, so that replay adds the member downstream too.
fn adopt_pending(conn: &Connection, req: &WriteRequest, id: &str, seq: i64, at: &str) -> Result<(), StagingError> {
    for group_seq in members::adopt(conn, req.tenant, id, seq)? {
        let (gid, gversion, gbody): (String, i64, String) = conn
            .prepare_cached("SELECT id, version, body FROM resources WHERE seq = ?1")?
            .query_row([group_seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        conn.prepare_cached("UPDATE resources SET version = ?2, last_modified = ?3 WHERE seq = ?1")?
            .execute(params![group_seq, gversion + 1, at])?;
        let gdoc = super::read::parse_body(&gbody)?;
        journal(conn, req, Kind::Group, &gid, Op::Patch, &gdoc, &[id.to_owned()], &[], gversion + 1, at)?;
    }
    Ok(())
}

/// How an update changes group membership.
enum Members {
    /// The document's `members` is the whole new set (PUT, and PATCHes that need the whole set).
    FromDoc,
    /// Only these ids are added or removed.
    Edits(Vec<patch::MemberEdit>),
}

#[allow(clippy::too_many_arguments)]
fn update(
    conn: &Connection,
    req: &WriteRequest,
    kind: Kind,
    id: &str,
    cur: Current,
    mut doc: Map<String, Value>,
    op: Op,
    members: Members,
) -> Result<Committed, StagingError> {
    let tenant = req.tenant;
    let keys = Keys::of(kind, &doc);
    check_unique(conn, tenant, kind, &keys, &doc, Some(cur.seq))?;
    check_manager(conn, tenant, &doc, req.rules.strict)?;
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut members_out = None;
    let at = now();
    if let (Kind::Group, Members::Edits(edits)) = (kind, members) {
        (added, removed) = members::apply_edits(conn, tenant, cur.seq, edits, req.rules.strict, &at)?;
    } else if kind == Kind::Group {
        let wanted = members::resolve(conn, tenant, Some(cur.seq), &doc, req.rules.strict)?;
        (added, removed) = members::replace(conn, cur.seq, &wanted.known)?;
        members::set_pending(conn, tenant, cur.seq, &wanted.pending, &at)?;
        members_out = Some(wanted.known.into_iter().map(|(_, m)| m).collect());
    }
    doc.remove("members");
    if doc == cur.doc && added.is_empty() && removed.is_empty() {
        // A change that changes nothing (a PUT of the same document, a PATCH that replaces a value with
        // itself or names an attribute this service ignores) is answered with the resource as it is: no
        // journal entry, no new version, nothing for replay to do.
        return Ok(Committed {
            seq: None,
            resource: Some(Stored {
                kind,
                id: id.to_owned(),
                doc,
                members: members_out,
                body: None,
                version: cur.version,
                created: cur.created,
                last_modified: cur.last_modified,
            }),
        });
    }
    let version = cur.version + 1;
    conn.prepare_cached(
        "UPDATE resources SET name_key = ?2, display_key = ?3, external_id = ?4, display = ?5, body = ?6,
                version = ?7, last_modified = ?8 WHERE seq = ?1",
    )?
    .execute(params![
        cur.seq,
        keys.name_key,
        keys.display_key,
        keys.external_id,
        keys.display,
        Value::Object(doc.clone()).to_string(),
        version,
        at
    ])?;
    if kind == Kind::User {
        write_emails(conn, tenant, cur.seq, &keys, true)?;
    }
    let seq = journal(conn, req, kind, id, op, &doc, &added, &removed, version, &at)?;
    Ok(Committed {
        seq: Some(seq),
        resource: Some(Stored {
            kind,
            id: id.to_owned(),
            doc,
            members: members_out,
            body: None,
            version,
            created: cur.created,
            last_modified: at,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_weak_strong_and_star() {
        assert!(check_if_match(&None, 3).is_ok());
        assert!(check_if_match(&Some("W/\"3\"".into()), 3).is_ok());
        assert!(check_if_match(&Some("\"3\"".into()), 3).is_ok());
        assert!(check_if_match(&Some("*".into()), 3).is_ok());
        assert!(check_if_match(&Some("W/\"1\", W/\"3\"".into()), 3).is_ok());
        let e = check_if_match(&Some("W/\"2\"".into()), 3).unwrap_err();
        assert_eq!(e.status, crate::scim::error::Status::PreconditionFailed);
    }

    fn request(tenant: i64, change: Change) -> WriteRequest {
        let (reply, _) = tokio::sync::oneshot::channel();
        WriteRequest { tenant: TenantId(tenant), request_id: "r".into(), rules: Default::default(), change, reply }
    }

    /// A group naming an id that is not a resource of its tenant keeps it pending; when a resource with
    /// that id appears in the tenant, the membership is made and journaled for replay. Another tenant's
    /// resource with the same id is never taken for it.
    #[test]
    fn pending_members_are_adopted_within_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::staging::open_migrated(&dir.path().join("s.db")).unwrap();
        conn.execute_batch("INSERT INTO tenants (id, name, created) VALUES (1, 'a', ''), (2, 'b', '');").unwrap();
        let doc = json!({"displayName": "Team", "members": [{"value": "later"}]}).as_object().unwrap().clone();
        let g = apply(&conn, &request(1, Change::Create { kind: Kind::Group, doc })).unwrap();
        assert_eq!(g.resource.unwrap().members.unwrap(), Vec::new(), "stored without the unknown member");
        let pending: i64 = conn.query_row("SELECT COUNT(*) FROM pending_members", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 1);
        let insert = |tenant: i64| {
            conn.execute(
                "INSERT INTO resources (tenant_id, kind, id, name_key, body, version, created, last_modified)
                 VALUES (?1, 'User', 'later', ?2, '{}', 1, '', '')",
                params![tenant, format!("later{tenant}")],
            )
            .unwrap();
            conn.last_insert_rowid()
        };
        // Another tenant's resource with that id: nothing happens.
        let other = insert(2);
        adopt_pending(
            &conn,
            &request(2, Change::Delete { kind: Kind::User, id: "x".into(), if_match: None }),
            "later",
            other,
            "t",
        )
        .unwrap();
        let members: i64 = conn.query_row("SELECT COUNT(*) FROM group_members", [], |r| r.get(0)).unwrap();
        assert_eq!(members, 0);
        // The tenant's own: adopted, and the group journaled with the member added.
        let own = insert(1);
        let req = request(1, Change::Delete { kind: Kind::User, id: "x".into(), if_match: None });
        adopt_pending(&conn, &req, "later", own, "t").unwrap();
        let member: i64 = conn.query_row("SELECT member_seq FROM group_members", [], |r| r.get(0)).unwrap();
        assert_eq!(member, own);
        let (op, added, version): (String, String, i64) = conn
            .query_row("SELECT op, members_added, version FROM journal ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((op.as_str(), added.as_str(), version), ("patch", "[\"later\"]", 2));
        let pending: i64 = conn.query_row("SELECT COUNT(*) FROM pending_members", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 0);
    }
}
