//! Reads of staged resources: get by id, and filtered, sorted, paged lists. How each list becomes index
//! reads is in `query`; this module runs the plan, evaluates what the indexes cannot decide, and loads
//! the page.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};

use super::query::{self, Mark, STRIDE, Sort, SortKey};
use super::{Member, SqliteStaging, StagingError, Stored, TenantId};
use crate::scim::filter::{self, Filter};
use crate::scim::schema::Kind;

/// A list request, once parsed.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort: Sort,
    /// 1-based (RFC 7644 §3.4.2.4).
    pub start: usize,
    pub count: usize,
    /// Load group members (they can be many).
    pub with_members: bool,
    /// Return the page's bodies unparsed (`Stored::body`), for a response that needs no projection.
    pub raw: bool,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    pub total: usize,
    pub resources: Vec<Stored>,
}

pub(crate) fn parse_body(body: &str) -> Result<Map<String, Value>, StagingError> {
    match serde_json::from_str(body) {
        Ok(Value::Object(m)) => Ok(m),
        // Only this program writes the column, so this means the file was damaged or edited by hand.
        _ => Err(StagingError::Corrupt("a staged resource body is not a JSON object".into())),
    }
}

/// A `kind` column: the schema's CHECK allows only these two, so anything else is damage, never a user.
pub(crate) fn parse_kind(kind: &str) -> Result<Kind, StagingError> {
    Kind::parse(kind).ok_or_else(|| StagingError::Corrupt(format!("a staged row has the kind {kind:?}")))
}

fn mentions_members(f: &Filter) -> bool {
    match f {
        Filter::And(l, r) | Filter::Or(l, r) => mentions_members(l) || mentions_members(r),
        Filter::Not(x) => mentions_members(x),
        Filter::Present(p) | Filter::Compare(p, _, _) => p.attr.eq_ignore_ascii_case("members"),
        Filter::ValuePath { path, .. } => path.attr.eq_ignore_ascii_case("members"),
    }
}

const COLUMNS: &str = "seq, id, body, version, created, last_modified";

fn stored_from(kind: Kind, r: &Row<'_>) -> rusqlite::Result<(i64, String, String, i64, String, String)> {
    let _ = kind;
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_stored(kind: Kind, raw: (i64, String, String, i64, String, String)) -> Result<(i64, Stored), StagingError> {
    let (seq, id, body, version, created, last_modified) = raw;
    Ok((seq, Stored { kind, id, doc: parse_body(&body)?, members: None, body: None, version, created, last_modified }))
}

/// A row whose body is kept as text.
fn to_raw(kind: Kind, raw: (i64, String, String, i64, String, String)) -> Stored {
    let (_, id, body, version, created, last_modified) = raw;
    Stored { kind, id, doc: Map::new(), members: None, body: Some(body), version, created, last_modified }
}

fn members_of(conn: &Connection, group_seq: i64) -> Result<Vec<Member>, StagingError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.kind, r.display FROM group_members m JOIN resources r ON r.seq = m.member_seq
         WHERE m.group_seq = ?1 ORDER BY m.member_seq",
    )?;
    let rows = stmt.query_map([group_seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)))?;
    rows.map(|row| {
        let (id, kind, display) = row?;
        Ok(Member { id, kind: parse_kind(&kind)?, display })
    })
    .collect()
}

/// The document a filter is evaluated against: the stored body plus id, meta and (when loaded) members.
pub fn eval_doc(s: &Stored) -> Value {
    let mut doc = s.doc.clone();
    doc.insert("id".into(), json!(s.id));
    doc.insert(
        "meta".into(),
        json!({
            "resourceType": s.kind.as_str(),
            "created": s.created,
            "lastModified": s.last_modified,
            "version": format!("W/\"{}\"", s.version),
        }),
    );
    if let Some(members) = &s.members {
        doc.insert(
            "members".into(),
            Value::Array(
                members.iter().map(|m| json!({"value": m.id, "display": m.display, "type": m.kind.as_str()})).collect(),
            ),
        );
    }
    Value::Object(doc)
}

fn load(conn: &Connection, kind: Kind, seq: i64) -> Result<Option<Stored>, StagingError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM resources WHERE seq = ?1"))?
        .query_row([seq], |r| stored_from(kind, r))
        .optional()?;
    raw.map(|r| to_stored(kind, r).map(|(_, s)| s)).transpose()
}

/// Loads the rows of a page, in the page's order, with members when asked, bodies parsed or (`raw`) not.
fn load_page(conn: &Connection, kind: Kind, seqs: &[i64], q: &ListQuery) -> Result<Vec<Stored>, StagingError> {
    let mut out = Vec::with_capacity(seqs.len());
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM resources WHERE seq = ?1"))?;
    for &seq in seqs {
        let row = stmt.query_row([seq], |r| stored_from(kind, r)).optional()?;
        let Some(row) = row else { continue };
        let mut s = if q.raw { to_raw(kind, row) } else { to_stored(kind, row)?.1 };
        if q.with_members && kind == Kind::Group {
            s.members = Some(members_of(conn, seq)?);
        }
        out.push(s);
    }
    Ok(out)
}

/// What invalidates position marks: per (tenant, kind), the number of writes, and of deletes. Creation
/// order only shifts when something is deleted (new resources append at the end); any other order shifts
/// with every write.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Generation {
    pub writes: u64,
    pub deletes: u64,
}

/// Position marks per (tenant, kind, order), with the generation they were taken at.
pub(crate) type MarksCache = HashMap<(TenantId, Kind, Sort), (u64, Arc<Vec<Mark>>)>;

impl SqliteStaging {
    /// One resource by id, with its members when `with_members` (groups).
    ///
    /// # Errors
    /// The database cannot be read.
    pub(in crate::staging) async fn get(
        &self,
        tenant: TenantId,
        kind: Kind,
        id: String,
        with_members: bool,
    ) -> Result<Option<Stored>, StagingError> {
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3"
                ))?
                .query_row(params![tenant.0, kind.as_str(), id], |r| stored_from(kind, r))
                .optional()?;
            let Some(raw) = raw else { return Ok(None) };
            let (seq, mut stored) = to_stored(kind, raw)?;
            if with_members && kind == Kind::Group {
                stored.members = Some(members_of(conn, seq)?);
            }
            Ok(Some(stored))
        })
        .await
    }

    /// A page of the resources matching the query's filter, in its order.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(in crate::staging) async fn list(
        &self,
        tenant: TenantId,
        kind: Kind,
        q: ListQuery,
    ) -> Result<Page, StagingError> {
        let me = self.clone();
        self.read(move |conn| match &q.filter {
            None => me.unfiltered(conn, tenant, kind, &q),
            Some(f) => match query::plan(kind, f) {
                Some(plan) => {
                    let seqs = query::candidates(conn, tenant, kind, &plan)?;
                    let matches = if plan.exact { seqs } else { evaluate(conn, kind, f, seqs)? };
                    page_of(conn, tenant, kind, &q, matches)
                }
                None => scan(conn, tenant, kind, f, &q),
            },
        })
        .await
    }

    /// An unfiltered page: the total from the counter kept with every create and delete, the page from
    /// the order's index, found through position marks when it lies deep.
    fn unfiltered(&self, conn: &Connection, tenant: TenantId, kind: Kind, q: &ListQuery) -> Result<Page, StagingError> {
        let total: i64 = conn
            .prepare_cached("SELECT count FROM resource_counts WHERE tenant_id = ?1 AND kind = ?2")?
            .query_row(params![tenant.0, kind.as_str()], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let total = total.max(0) as usize;
        let position = q.start.saturating_sub(1);
        if position >= total || q.count == 0 {
            return Ok(Page { total, resources: Vec::new() });
        }
        let seqs = if position < STRIDE {
            query::page_seqs(conn, tenant, kind, q.sort, None, position, q.count)?
        } else {
            let mut marks = self.marks(conn, tenant, kind, q.sort, false)?;
            // New resources appended since the marks were taken lie beyond the last mark: take them again
            // rather than walk far.
            if position / STRIDE > marks.len() {
                marks = self.marks(conn, tenant, kind, q.sort, true)?;
            }
            let i = (position / STRIDE).min(marks.len().saturating_sub(1));
            let from = marks.get(i);
            let skip = position - from.map_or(0, |_| i * STRIDE);
            query::page_seqs(conn, tenant, kind, q.sort, from, skip, q.count)?
        };
        Ok(Page { total, resources: load_page(conn, kind, &seqs, q)? })
    }

    /// The position marks of an order, taken again when a write has moved positions since (or `fresh`).
    fn marks(
        &self,
        conn: &Connection,
        tenant: TenantId,
        kind: Kind,
        sort: Sort,
        fresh: bool,
    ) -> Result<Arc<Vec<Mark>>, StagingError> {
        let generation = self.generation(tenant, kind);
        let token = if sort.key == SortKey::Created { generation.deletes } else { generation.writes };
        let key = (tenant, kind, sort);
        if !fresh
            && let Some((t, m)) = self.inner.marks.lock().map_err(|_| StagingError::Poisoned)?.get(&key)
            && *t == token
        {
            return Ok(m.clone());
        }
        let marks = Arc::new(query::take_marks(conn, tenant, kind, sort)?);
        self.inner.marks.lock().map_err(|_| StagingError::Poisoned)?.insert(key, (token, marks.clone()));
        Ok(marks)
    }
}

/// Keeps the candidates whose documents match the filter (the indexes narrowed, the filter decides).
fn evaluate(conn: &Connection, kind: Kind, f: &Filter, seqs: Vec<i64>) -> Result<Vec<i64>, StagingError> {
    let need_members = kind == Kind::Group && mentions_members(f);
    let mut out = Vec::new();
    for seq in seqs {
        let Some(mut s) = load(conn, kind, seq)? else { continue };
        if need_members {
            s.members = Some(members_of(conn, seq)?);
        }
        if filter::matches(f, &eval_doc(&s)) {
            out.push(seq);
        }
    }
    Ok(out)
}

/// A page of matches (ascending seqs), in the query's order.
fn page_of(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    q: &ListQuery,
    mut matches: Vec<i64>,
) -> Result<Page, StagingError> {
    let total = matches.len();
    let skip = q.start.saturating_sub(1);
    match q.sort.key {
        SortKey::Created if q.sort.descending => matches.reverse(),
        SortKey::Created => {}
        _ => matches = sorted(conn, tenant, kind, q.sort, matches)?,
    }
    let page: Vec<i64> = matches.into_iter().skip(skip).take(q.count).collect();
    Ok(Page { total, resources: load_page(conn, kind, &page, q)? })
}

/// Matches in a sort order: a few are looked up one by one; many are picked out of the order's index.
fn sorted(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    sort: Sort,
    matches: Vec<i64>,
) -> Result<Vec<i64>, StagingError> {
    let all: Vec<i64>;
    if matches.len() > 4 * STRIDE {
        let wanted: std::collections::HashSet<i64> = matches.into_iter().collect();
        all = query::page_seqs(conn, tenant, kind, sort, None, 0, usize::MAX >> 2)?
            .into_iter()
            .filter(|s| wanted.contains(s))
            .collect();
        return Ok(all);
    }
    let column = match sort.key {
        SortKey::Created => "NULL",
        SortKey::Name => "name_key",
        SortKey::Display => "display_key",
        SortKey::ExternalId => "external_id",
        SortKey::LastModified => "last_modified",
    };
    let mut stmt = conn.prepare_cached(&format!("SELECT {column} FROM resources WHERE seq = ?1"))?;
    let mut keyed = Vec::with_capacity(matches.len());
    for seq in matches {
        let key: Option<String> = stmt.query_row([seq], |r| r.get(0))?;
        keyed.push((key, seq));
    }
    // Missing values last ascending, first descending (RFC 7644 §3.4.2.3); seq breaks ties.
    keyed.sort_by(|(ka, sa), (kb, sb)| {
        let by_key = match (ka, kb) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        };
        by_key.then(sa.cmp(sb))
    });
    if sort.descending {
        keyed.reverse();
    }
    Ok(keyed.into_iter().map(|(_, s)| s).collect())
}

/// A filter no index can narrow: the tenant's resources of this kind stream by in the query's order,
/// matches are counted, and only the page is kept, so memory holds one page, not the tenant.
fn scan(conn: &Connection, tenant: TenantId, kind: Kind, f: &Filter, q: &ListQuery) -> Result<Page, StagingError> {
    let need_members = kind == Kind::Group && mentions_members(f);
    let skip = q.start.saturating_sub(1);
    let sql =
        format!("SELECT {COLUMNS} FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY {}", q.sort.order_by());
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![tenant.0, kind.as_str()])?;
    let mut total = 0usize;
    let mut page = Vec::new();
    while let Some(r) = rows.next()? {
        let (seq, mut s) = to_stored(kind, stored_from(kind, r)?)?;
        if need_members {
            s.members = Some(members_of(conn, seq)?);
        }
        if filter::matches(f, &eval_doc(&s)) {
            total += 1;
            if total > skip && page.len() < q.count {
                if q.with_members && kind == Kind::Group && s.members.is_none() {
                    s.members = Some(members_of(conn, seq)?);
                }
                if !q.with_members {
                    s.members = None;
                }
                page.push(s);
            }
        }
    }
    Ok(Page { total, resources: page })
}
