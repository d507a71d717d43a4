//! Reads of staged resources: get by id, and filtered, paged lists. Equality filters on the indexed
//! attributes (id, userName, displayName, externalId, emails) are answered from indexes; anything else is
//! evaluated over the tenant's resources of that kind, in stable creation order.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};

use super::{Member, Staging, StagingError, Stored, TenantId};
use crate::scim::filter::{self, AttrPath, CompareOp, Filter};
use crate::scim::schema::{self, Kind};

/// An indexed equality lookup a filter can be answered from.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Id(String),
    /// userName of users, displayName of groups (lower-cased, as indexed).
    Name(String),
    /// displayName of users (lower-cased).
    Display(String),
    ExternalId(String),
    /// Any email value (lower-cased).
    Email(String),
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

fn resolved_name(kind: Kind, p: &AttrPath) -> Option<(&'static str, Option<&'static str>)> {
    let r = schema::resolve(kind, p.schema.as_deref(), &p.attr, p.sub.as_deref()).ok()?;
    if r.extension.is_some() {
        return None;
    }
    Some((r.attr.name, r.sub.map(|s| s.name)))
}

/// The index lookups whose union contains every resource the filter can match, or None when the filter
/// needs a scan.
pub fn plan(kind: Kind, f: &Filter) -> Option<Vec<Lookup>> {
    match f {
        Filter::Compare(p, CompareOp::Eq, Value::Number(n)) => {
            plan(kind, &Filter::Compare(p.clone(), CompareOp::Eq, Value::String(n.to_string())))
        }
        Filter::Compare(p, CompareOp::Eq, Value::String(v)) => {
            let lookup = match (kind, resolved_name(kind, p)?) {
                (_, ("id", None)) => Lookup::Id(v.clone()),
                (_, ("externalId", None)) => Lookup::ExternalId(v.clone()),
                (Kind::User, ("userName", None)) => Lookup::Name(v.to_lowercase()),
                (Kind::User, ("displayName", None)) => Lookup::Display(v.to_lowercase()),
                (Kind::Group, ("displayName", None)) => Lookup::Name(v.to_lowercase()),
                (Kind::User, ("emails", None | Some("value"))) => Lookup::Email(v.to_lowercase()),
                _ => return None,
            };
            Some(vec![lookup])
        }
        // emails[type eq "work"].value eq "x", or emails[value eq "x"]
        Filter::ValuePath { path, filter: inner, then } if kind == Kind::User => {
            if resolved_name(kind, path)? != ("emails", None) {
                return None;
            }
            let value_eq = |f: &Filter| match f {
                Filter::Compare(p, CompareOp::Eq, Value::String(v))
                    if p.schema.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("value") =>
                {
                    Some(vec![Lookup::Email(v.to_lowercase())])
                }
                _ => None,
            };
            then.as_deref().and_then(value_eq).or_else(|| conjuncts(inner).into_iter().find_map(value_eq))
        }
        Filter::And(l, r) => plan(kind, l).or_else(|| plan(kind, r)),
        Filter::Or(l, r) => {
            let mut a = plan(kind, l)?;
            a.extend(plan(kind, r)?);
            Some(a)
        }
        _ => None,
    }
}

fn conjuncts(f: &Filter) -> Vec<&Filter> {
    match f {
        Filter::And(l, r) => {
            let mut v = conjuncts(l);
            v.extend(conjuncts(r));
            v
        }
        other => vec![other],
    }
}

fn mentions_members(f: &Filter) -> bool {
    match f {
        Filter::And(l, r) | Filter::Or(l, r) => mentions_members(l) || mentions_members(r),
        Filter::Not(x) => mentions_members(x),
        Filter::Present(p) | Filter::Compare(p, _, _) => p.attr.eq_ignore_ascii_case("members"),
        Filter::ValuePath { path, .. } => path.attr.eq_ignore_ascii_case("members"),
    }
}

struct RowData {
    seq: i64,
    stored: Stored,
}

const COLUMNS: &str = "seq, id, body, version, created, last_modified";

fn row_data(kind: Kind, r: &Row<'_>) -> rusqlite::Result<(i64, String, String, i64, String, String)> {
    let _ = kind;
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_row(kind: Kind, raw: (i64, String, String, i64, String, String)) -> Result<RowData, StagingError> {
    let (seq, id, body, version, created, last_modified) = raw;
    Ok(RowData {
        seq,
        stored: Stored { kind, id, doc: parse_body(&body)?, members: None, version, created, last_modified },
    })
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

fn lookup_rows(conn: &Connection, tenant: TenantId, kind: Kind, l: &Lookup) -> Result<Vec<RowData>, StagingError> {
    let (sql, value) = match l {
        Lookup::Id(v) => ("id = ?3", v),
        Lookup::Name(v) => ("name_key = ?3", v),
        Lookup::Display(v) => ("display_key = ?3", v),
        Lookup::ExternalId(v) => ("external_id = ?3", v),
        Lookup::Email(v) => {
            ("seq IN (SELECT resource_seq FROM resource_emails WHERE tenant_id = ?1 AND email = ?3)", v)
        }
    };
    let q = format!("SELECT {COLUMNS} FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND {sql} ORDER BY seq");
    let mut stmt = conn.prepare_cached(&q)?;
    let raw = stmt
        .query_map(params![tenant.0, kind.as_str(), value], |r| row_data(kind, r))?
        .collect::<Result<Vec<_>, _>>()?;
    raw.into_iter().map(|r| to_row(kind, r)).collect()
}

impl Staging {
    /// One resource by id, with its members when `with_members` (groups).
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn get(
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
                .query_row(params![tenant.0, kind.as_str(), id], |r| row_data(kind, r))
                .optional()?;
            let Some(raw) = raw else { return Ok(None) };
            let mut row = to_row(kind, raw)?;
            if with_members && kind == Kind::Group {
                row.stored.members = Some(members_of(conn, row.seq)?);
            }
            Ok(Some(row.stored))
        })
        .await
    }

    /// A page of the resources matching `filter`, in creation order. `start` is 1-based (RFC 7644 §3.4.2.4).
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn list(
        &self,
        tenant: TenantId,
        kind: Kind,
        filter: Option<Filter>,
        start: usize,
        count: usize,
        with_members: bool,
    ) -> Result<Page, StagingError> {
        self.read(move |conn| {
            let skip = start.saturating_sub(1);
            let Some(f) = filter else {
                let total: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM resources WHERE tenant_id = ?1 AND kind = ?2")?
                    .query_row(params![tenant.0, kind.as_str()], |r| r.get(0))?;
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY seq LIMIT ?3 OFFSET ?4"
                ))?;
                let raw = stmt
                    .query_map(params![tenant.0, kind.as_str(), count as i64, skip as i64], |r| row_data(kind, r))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut rows = raw.into_iter().map(|r| to_row(kind, r)).collect::<Result<Vec<_>, _>>()?;
                return finish(conn, kind, total as usize, &mut rows, with_members);
            };
            // Matches are counted as rows stream by and only the requested page is kept, so a filter that
            // needs a scan holds one page in memory, not the tenant's whole table.
            let need_members = kind == Kind::Group && mentions_members(&f);
            let mut total = 0usize;
            let mut page: Vec<RowData> = Vec::new();
            let mut consider = |mut row: RowData| -> Result<(), StagingError> {
                if need_members {
                    row.stored.members = Some(members_of(conn, row.seq)?);
                }
                if filter::matches(&f, &eval_doc(&row.stored)) {
                    total += 1;
                    if total > skip && page.len() < count {
                        page.push(row);
                    }
                }
                Ok(())
            };
            match plan(kind, &f) {
                Some(lookups) => {
                    let mut rows = Vec::new();
                    for l in &lookups {
                        rows.extend(lookup_rows(conn, tenant, kind, l)?);
                    }
                    rows.sort_by_key(|r| r.seq);
                    rows.dedup_by_key(|r| r.seq);
                    for row in rows {
                        consider(row)?;
                    }
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY seq"
                    ))?;
                    let mut rows = stmt.query(params![tenant.0, kind.as_str()])?;
                    while let Some(r) = rows.next()? {
                        consider(to_row(kind, row_data(kind, r)?)?)?;
                    }
                }
            }
            finish(conn, kind, total, &mut page, with_members)
        })
        .await
    }
}

fn finish(
    conn: &Connection,
    kind: Kind,
    total: usize,
    rows: &mut Vec<RowData>,
    with_members: bool,
) -> Result<Page, StagingError> {
    for row in rows.iter_mut() {
        if kind == Kind::Group {
            row.stored.members = if with_members { Some(members_of(conn, row.seq)?) } else { None };
        }
    }
    Ok(Page { total, resources: rows.drain(..).map(|r| r.stored).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: Kind, s: &str) -> Option<Vec<Lookup>> {
        plan(kind, &filter::parse_filter(s).unwrap())
    }

    #[test]
    fn plans_indexed_equalities() {
        assert_eq!(p(Kind::User, "userName eq \"A@X.com\""), Some(vec![Lookup::Name("a@x.com".into())]));
        assert_eq!(p(Kind::User, "USERNAME EQ \"a\""), Some(vec![Lookup::Name("a".into())]));
        assert_eq!(p(Kind::User, "externalId eq jyoung"), Some(vec![Lookup::ExternalId("jyoung".into())]));
        assert_eq!(p(Kind::User, "externalId eq 12345"), Some(vec![Lookup::ExternalId("12345".into())]));
        assert_eq!(p(Kind::User, "emails[type eq \"work\"].value eq \"A@x\""), Some(vec![Lookup::Email("a@x".into())]));
        assert_eq!(p(Kind::User, "emails.value eq \"a@x\""), Some(vec![Lookup::Email("a@x".into())]));
        assert_eq!(p(Kind::Group, "displayName eq \"Sales\""), Some(vec![Lookup::Name("sales".into())]));
        assert_eq!(
            p(Kind::User, "userName eq \"a\" or externalId eq \"b\""),
            Some(vec![Lookup::Name("a".into()), Lookup::ExternalId("b".into())])
        );
        assert_eq!(p(Kind::User, "title eq \"x\" and userName eq \"a\""), Some(vec![Lookup::Name("a".into())]));
    }

    #[test]
    fn scans_what_indexes_cannot_answer() {
        assert_eq!(p(Kind::User, "userName co \"a\""), None);
        assert_eq!(p(Kind::User, "userName eq \"a\" or title eq \"x\""), None);
        assert_eq!(p(Kind::User, "not (userName eq \"a\")"), None);
    }
}
