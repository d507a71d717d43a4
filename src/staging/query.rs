//! How list requests become index reads. Every shape here is answered from an index and does work in
//! proportion to the page or to the matches, never a sort of the tenant's rows (`EXPLAIN QUERY PLAN`
//! assertions below keep it so):
//! - the stable order is creation order (`seq`, the rowid), read from `resources_order(tenant_id, kind)`;
//!   `sortBy` orders come from the index of their column, `seq` breaking ties;
//! - `startIndex` deep in a large tenant is found from position marks (every [`STRIDE`]th row of an
//!   order, taken once and kept until a write moves positions), so that a page costs an offset of less
//!   than one stride;
//! - equality, presence and `sw` on the indexed attributes are index lookups or ranges; `co` and `ew` scan
//!   the lowered shadow columns (`name_key`, `display_key`, `resource_emails.email`) through covering
//!   indexes, never the JSON bodies.

use rusqlite::{Connection, params};
use serde_json::Value;

use super::StagingError;
use crate::scim::filter::{AttrPath, CompareOp, Filter};
use crate::scim::schema::{self, Kind};
use crate::staging::TenantId;

/// Rows between two position marks.
pub const STRIDE: usize = 1024;

/// The attributes lists can be sorted by (RFC 7644 §3.4.2.3), each answered from an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    /// Creation order (`meta.created`, and the order of unsorted lists).
    Created,
    /// userName of users, displayName of groups (case-insensitive).
    Name,
    /// displayName of users (case-insensitive); users without one sort last.
    Display,
    /// externalId (case-exact); resources without one sort last.
    ExternalId,
    LastModified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    pub const DEFAULT: Sort = Sort { key: SortKey::Created, descending: false };

    /// The sort a `sortBy` attribute names, if it is one of those answered from an index.
    pub fn by(kind: Kind, attr: &str, descending: bool) -> Option<Sort> {
        let (s, name, sub) = schema::split_key(attr);
        let r = schema::resolve(kind, s, name, sub).ok()?;
        if r.extension.is_some() {
            return None;
        }
        let key = match (kind, r.attr.name, r.sub.map(|s| s.name)) {
            (Kind::User, "userName", None) | (Kind::Group, "displayName", None) => SortKey::Name,
            (Kind::User, "displayName", None) => SortKey::Display,
            (_, "externalId", None) => SortKey::ExternalId,
            (_, "meta", Some("created")) | (_, "id", None) => SortKey::Created,
            (_, "meta", Some("lastModified")) => SortKey::LastModified,
            _ => return None,
        };
        Some(Sort { key, descending })
    }

    /// The column of the key (None: the rowid itself).
    fn column(self) -> Option<&'static str> {
        match self.key {
            SortKey::Created => None,
            SortKey::Name => Some("name_key"),
            SortKey::Display => Some("display_key"),
            SortKey::ExternalId => Some("external_id"),
            SortKey::LastModified => Some("last_modified"),
        }
    }

    fn nullable(self) -> bool {
        matches!(self.key, SortKey::Display | SortKey::ExternalId)
    }

    /// ORDER BY: the key, then `seq`. Missing values sort last ascending and first descending (RFC 7644
    /// §3.4.2.3); SQLite reads NULLS LAST from the index without a sort.
    pub fn order_by(self) -> String {
        let dir = if self.descending { " DESC" } else { "" };
        match self.column() {
            None => format!("seq{dir}"),
            Some(c) if self.nullable() => {
                let nulls = if self.descending { " NULLS FIRST" } else { " NULLS LAST" };
                format!("{c}{dir}{nulls}, seq{dir}")
            }
            Some(c) => format!("{c}{dir}, seq{dir}"),
        }
    }

    /// The key column as selected next to `seq` (NULL for creation order).
    fn select_key(self) -> &'static str {
        self.column().unwrap_or("NULL")
    }
}

/// A row's place in an order: its key value and seq.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub key: Option<String>,
    pub seq: i64,
}

/// Every [`STRIDE`]th row of a tenant's resources of one kind in one order: `marks[i]` is the row at
/// 0-based position `i * STRIDE`.
pub fn take_marks(conn: &Connection, tenant: TenantId, kind: Kind, sort: Sort) -> Result<Vec<Mark>, StagingError> {
    let sql = format!(
        "SELECT {}, seq FROM resources WHERE tenant_id = ?1 AND kind = ?2 ORDER BY {}",
        sort.select_key(),
        sort.order_by()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![tenant.0, kind.as_str()])?;
    let mut marks = Vec::new();
    let mut i = 0usize;
    while let Some(r) = rows.next()? {
        if i.is_multiple_of(STRIDE) {
            marks.push(Mark { key: r.get(0)?, seq: r.get(1)? });
        }
        i += 1;
    }
    Ok(marks)
}

/// The seqs of a page of an unfiltered list: `skip` rows after `from` (the row at the start position of
/// a mark, or the first row when None), then `count`.
pub fn page_seqs(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    sort: Sort,
    from: Option<&Mark>,
    skip: usize,
    count: usize,
) -> Result<Vec<i64>, StagingError> {
    let order = sort.order_by();
    let cmp = if sort.descending { "<=" } else { ">=" };
    let mut out = Vec::with_capacity(count);
    let mut run =
        |cond: &str, extra: Vec<rusqlite::types::Value>, skip: usize, want: usize| -> Result<usize, StagingError> {
            let sql = format!(
                "SELECT seq FROM resources WHERE tenant_id = ?1 AND kind = ?2{cond} ORDER BY {order} LIMIT ?3 OFFSET ?4"
            );
            let mut values: Vec<rusqlite::types::Value> =
                vec![tenant.0.into(), kind.as_str().to_owned().into(), (want as i64).into(), (skip as i64).into()];
            values.extend(extra);
            let mut stmt = conn.prepare_cached(&sql)?;
            let before = out.len();
            for seq in stmt.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, i64>(0))? {
                out.push(seq?);
            }
            Ok(out.len() - before)
        };
    let Some(m) = from else {
        run("", Vec::new(), skip, count)?;
        return Ok(out);
    };
    match (sort.column(), &m.key) {
        (None, _) => {
            run(&format!(" AND seq {cmp} ?5"), vec![m.seq.into()], skip, count)?;
        }
        // The mark is among the rows without a value: only such rows follow it (ascending), or, descending,
        // the rows with values follow the NULL group.
        (Some(c), None) => {
            let got = run(&format!(" AND {c} IS NULL AND seq {cmp} ?5"), vec![m.seq.into()], skip, count)?;
            if sort.descending && got < count {
                let nulls_left = if got == 0 { count_nulls_from(conn, tenant, kind, c, m.seq, true)? } else { 0 };
                run(&format!(" AND {c} IS NOT NULL"), Vec::new(), skip.saturating_sub(nulls_left), count - got)?;
            }
        }
        (Some(c), Some(v)) => {
            let got = run(
                &format!(" AND {c} IS NOT NULL AND ({c}, seq) {cmp} (?5, ?6)"),
                vec![v.clone().into(), m.seq.into()],
                skip,
                count,
            )?;
            if sort.nullable() && !sort.descending && got < count {
                let valued_left = if got == 0 { count_values_from(conn, tenant, kind, c, v, m.seq)? } else { 0 };
                run(&format!(" AND {c} IS NULL"), Vec::new(), skip.saturating_sub(valued_left), count - got)?;
            }
        }
    }
    Ok(out)
}

/// How many rows without a value follow (descending: precede) position `seq` in the NULL group.
fn count_nulls_from(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    c: &str,
    seq: i64,
    descending: bool,
) -> Result<usize, StagingError> {
    let cmp = if descending { "<=" } else { ">=" };
    let sql =
        format!("SELECT COUNT(*) FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND {c} IS NULL AND seq {cmp} ?3");
    Ok(conn.prepare_cached(&sql)?.query_row(params![tenant.0, kind.as_str(), seq], |r| r.get::<_, i64>(0))? as usize)
}

/// How many rows with a value come at or after `(v, seq)` (ascending).
fn count_values_from(
    conn: &Connection,
    tenant: TenantId,
    kind: Kind,
    c: &str,
    v: &str,
    seq: i64,
) -> Result<usize, StagingError> {
    let sql = format!(
        "SELECT COUNT(*) FROM resources WHERE tenant_id = ?1 AND kind = ?2 AND {c} IS NOT NULL AND ({c}, seq) >= (?3, ?4)"
    );
    Ok(conn.prepare_cached(&sql)?.query_row(params![tenant.0, kind.as_str(), v, seq], |r| r.get::<_, i64>(0))? as usize)
}

/// A column an attribute is indexed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    /// userName of users, displayName of groups (lower-cased).
    Name,
    /// displayName of users (lower-cased).
    Display,
    ExternalId,
    /// Any email value (lower-cased), in `resource_emails`.
    Email,
}

/// One index read: the resources whose column satisfies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Eq(Column, String),
    /// Starts with.
    Sw(Column, String),
    /// Contains (a scan of the shadow column, not of the bodies).
    Co(Column, String),
    /// Ends with.
    Ew(Column, String),
    Present(Column),
}

/// The index reads whose union holds every resource a filter can match, and whether that union is exactly
/// the filter's matches (so that no body needs to be read to evaluate it). None when the filter needs a
/// scan of the bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub lookups: Vec<Lookup>,
    pub exact: bool,
}

fn column(kind: Kind, p: &AttrPath) -> Option<Column> {
    let r = schema::resolve(kind, p.schema.as_deref(), &p.attr, p.sub.as_deref()).ok()?;
    if r.extension.is_some() {
        return None;
    }
    Some(match (kind, r.attr.name, r.sub.map(|s| s.name)) {
        (_, "id", None) => Column::Id,
        (_, "externalId", None) => Column::ExternalId,
        (Kind::User, "userName", None) | (Kind::Group, "displayName", None) => Column::Name,
        (Kind::User, "displayName", None) => Column::Display,
        (Kind::User, "emails", None | Some("value")) => Column::Email,
        _ => return None,
    })
}

/// Whether a column compares case-insensitively (and so is stored lower-cased).
fn folded(c: Column) -> bool {
    matches!(c, Column::Name | Column::Display | Column::Email)
}

fn compare(kind: Kind, p: &AttrPath, op: CompareOp, v: &Value) -> Option<Lookup> {
    let c = column(kind, p)?;
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if c == Column::ExternalId || c == Column::Id => n.to_string(),
        _ => return None,
    };
    let text = if folded(c) { text.to_lowercase() } else { text };
    Some(match op {
        CompareOp::Eq => Lookup::Eq(c, text),
        CompareOp::Sw => Lookup::Sw(c, text),
        CompareOp::Co => Lookup::Co(c, text),
        CompareOp::Ew => Lookup::Ew(c, text),
        _ => return None,
    })
}

/// The plan of a filter (see [`Plan`]).
pub fn plan(kind: Kind, f: &Filter) -> Option<Plan> {
    match f {
        Filter::Compare(p, op, v) => compare(kind, p, *op, v).map(|l| Plan { lookups: vec![l], exact: true }),
        Filter::Present(p) => {
            let c = column(kind, p)?;
            Some(Plan { lookups: vec![Lookup::Present(c)], exact: true })
        }
        // emails[type eq "work"].value eq "x", or emails[value eq "x"]: the address narrows, the rest is
        // checked on the candidates.
        Filter::ValuePath { path, filter: inner, then } if kind == Kind::User => {
            if column(kind, path)? != Column::Email {
                return None;
            }
            let value_eq = |f: &Filter| match f {
                Filter::Compare(p, CompareOp::Eq, Value::String(v))
                    if p.schema.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("value") =>
                {
                    Some(Lookup::Eq(Column::Email, v.to_lowercase()))
                }
                _ => None,
            };
            let l = then.as_deref().and_then(value_eq).or_else(|| conjuncts(inner).into_iter().find_map(value_eq))?;
            Some(Plan { lookups: vec![l], exact: false })
        }
        // The narrower side answers; the whole filter is checked on its candidates.
        Filter::And(l, r) => {
            let (a, b) = (plan(kind, l), plan(kind, r));
            let pick = match (a, b) {
                (Some(a), Some(b)) => Some(if selectivity(&b) < selectivity(&a) { b } else { a }),
                (a, b) => a.or(b),
            };
            pick.map(|p| Plan { lookups: p.lookups, exact: false })
        }
        Filter::Or(l, r) => {
            let (mut a, b) = (plan(kind, l)?, plan(kind, r)?);
            a.lookups.extend(b.lookups);
            a.exact &= b.exact;
            Some(a)
        }
        _ => None,
    }
}

/// Lower is narrower: equality first, then prefixes, then scans.
fn selectivity(p: &Plan) -> usize {
    p.lookups
        .iter()
        .map(|l| match l {
            Lookup::Eq(..) => 1,
            Lookup::Sw(..) => 10,
            Lookup::Present(..) => 100,
            Lookup::Co(..) | Lookup::Ew(..) => 1000,
        })
        .sum()
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

/// The smallest string greater than every string starting with `prefix` (for a `sw` range), or None
/// when there is none (a prefix of U+10FFFF characters).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = (last as u32).checked_add(1).and_then(char::from_u32) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The SQL of a lookup (selecting matching seqs) and its values after `?1` tenant and `?2` kind.
pub fn lookup_sql(l: &Lookup) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let res = "SELECT seq FROM resources WHERE tenant_id = ?1 AND kind = ?2";
    let email = "SELECT e.resource_seq FROM resource_emails e JOIN resources r ON r.seq = e.resource_seq \
                 WHERE e.tenant_id = ?1 AND r.kind = ?2";
    let col = |c: Column| match c {
        Column::Id => "id",
        Column::Name => "name_key",
        Column::Display => "display_key",
        Column::ExternalId => "external_id",
        Column::Email => "e.email",
    };
    let base = |c: Column| if c == Column::Email { email } else { res };
    match l {
        Lookup::Eq(c, v) => (format!("{} AND {} = ?3", base(*c), col(*c)), vec![V::Text(v.clone())]),
        Lookup::Sw(c, v) => match prefix_end(v) {
            Some(end) => (
                format!("{} AND {} >= ?3 AND {} < ?4", base(*c), col(*c), col(*c)),
                vec![V::Text(v.clone()), V::Text(end)],
            ),
            None => (format!("{} AND {} >= ?3", base(*c), col(*c)), vec![V::Text(v.clone())]),
        },
        Lookup::Co(c, v) => (format!("{} AND instr({}, ?3) > 0", base(*c), col(*c)), vec![V::Text(v.clone())]),
        Lookup::Ew(c, v) => (
            format!("{} AND substr({}, -length(?3)) = ?3 AND length({}) >= length(?3)", base(*c), col(*c), col(*c)),
            vec![V::Text(v.clone())],
        ),
        Lookup::Present(Column::Email) => (email.to_owned(), Vec::new()),
        Lookup::Present(c) => (format!("{res} AND {} IS NOT NULL", col(*c)), Vec::new()),
    }
}

/// The seqs matching a plan's lookups, ascending, without duplicates.
pub fn candidates(conn: &Connection, tenant: TenantId, kind: Kind, plan: &Plan) -> Result<Vec<i64>, StagingError> {
    let mut out = Vec::new();
    for l in &plan.lookups {
        let (sql, extra) = lookup_sql(l);
        let mut values: Vec<rusqlite::types::Value> = vec![tenant.0.into(), kind.as_str().to_owned().into()];
        values.extend(extra);
        let mut stmt = conn.prepare_cached(&sql)?;
        for seq in stmt.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, i64>(0))? {
            out.push(seq?);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests;
