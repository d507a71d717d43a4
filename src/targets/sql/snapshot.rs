//! The actual state of a SQL target, for reconciliation: every account of the users table (key, link
//! column, match column, mapped columns) and every group with its members, read in pages ordered by key
//! (keyset pagination: each page is an index range, whatever the table's size), and the comparison of an
//! account with a staged user after the database's own normalisation.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::SqlTarget;
use super::db::{Params, SqlValue};
use super::users::is_now;
use crate::matching::match_email;
use crate::targets::TargetError;
use crate::targets::reconcile::{ActualGroup, ActualUser, Drift};

/// Rows read per page.
const PAGE: usize = 2000;

/// How a boolean reads back from each database (`t`, `true`, `1`, …).
fn as_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "1" | "y" | "yes" => Some(true),
        "f" | "false" | "0" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Whether a stored value is what the mapping asks for: CHAR padding and numeric formats do not count,
/// a missing value and an empty string are the same, and a flag time ("NOW") only needs to be set.
fn same(desired: &Value, actual: Option<&str>, fold: bool) -> bool {
    let actual = actual.filter(|a| !a.trim().is_empty());
    match desired {
        d if is_now(d) => actual.is_some(),
        Value::Null => actual.is_none(),
        Value::String(s) if s.trim().is_empty() => actual.is_none(),
        Value::String(s) => actual.is_some_and(|a| {
            let (a, s) = (a.trim_end(), s.trim_end());
            if fold { a.eq_ignore_ascii_case(s) || a.to_lowercase() == s.to_lowercase() } else { a == s }
        }),
        Value::Bool(b) => actual.and_then(as_bool) == Some(*b),
        Value::Number(n) => actual.and_then(|a| a.trim().parse::<f64>().ok()) == n.as_f64(),
        other => actual == Some(other.to_string().as_str()),
    }
}

/// A mapped value as the plan shows it.
fn shown(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        v if is_now(v) => Some("(the time of the change)".into()),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl SqlTarget {
    /// The columns read for each account: the key, then link and match columns, then the mapped ones.
    fn snapshot_columns(&self) -> Vec<&str> {
        let u = &self.users;
        let mut cols = vec![u.key.as_str()];
        cols.extend(u.link_column.as_deref());
        cols.extend(u.match_column.as_deref());
        for c in &u.columns {
            if !cols.contains(&c.name.as_str()) {
                cols.push(&c.name);
            }
        }
        cols
    }

    /// Rows of `table` in pages of `PAGE` ordered by `order` (a unique key, or a unique pair), each row
    /// the `columns` as text, handed to `each` page by page.
    async fn pages(
        &self,
        table: &str,
        columns: &[&str],
        order: &[&str],
        mut each: impl FnMut(Vec<Option<String>>),
    ) -> Result<(), TargetError> {
        let types = self.catalog().await?;
        let t = types.get(table);
        // Aliased: an output column named like the key ("CAST(id AS TEXT)" is named "id" in PostgreSQL)
        // would make ORDER BY sort the text, and the keyset would skip rows.
        let select: Vec<String> =
            columns.iter().enumerate().map(|(i, c)| format!("{} AS c{i}", self.dialect.as_text(&self.q(c)))).collect();
        let order_by: Vec<String> = order.iter().map(|c| self.q(c)).collect();
        let mut tx = self.db.begin().await?;
        let mut last: Option<Vec<String>> = None;
        loop {
            let mut p = Params::new(self.dialect, t);
            let filter = match &last {
                None => String::new(),
                // Keyset: rows after the last one, as (a > x) OR (a = x AND b > y).
                Some(values) => {
                    let mut ors = Vec::new();
                    for i in 0..order.len() {
                        let mut ands = Vec::new();
                        for (j, col) in order.iter().enumerate().take(i + 1) {
                            let ph = p.push(Some(col), SqlValue::Text(values[j].clone()));
                            let op = if j == i { ">" } else { "=" };
                            ands.push(format!("{} {op} {ph}", self.q(col)));
                        }
                        ors.push(format!("({})", ands.join(" AND ")));
                    }
                    format!("WHERE {}", ors.join(" OR "))
                }
            };
            let sql = format!(
                "SELECT {} FROM {} {filter} ORDER BY {} LIMIT {PAGE}",
                select.join(", "),
                self.q(table),
                order_by.join(", ")
            );
            let rows = tx.query(&sql, &p.values).await?;
            let n = rows.len();
            if let Some(row) = rows.last() {
                let positions: Vec<usize> =
                    order.iter().map(|o| columns.iter().position(|c| c == o).unwrap_or_default()).collect();
                last = Some(positions.iter().map(|i| row[*i].clone().unwrap_or_default()).collect());
            }
            rows.into_iter().for_each(&mut each);
            if n < PAGE {
                break;
            }
        }
        tx.rollback().await;
        Ok(())
    }

    /// Every account of the users table.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn snapshot_users(&self) -> Result<Vec<ActualUser>, TargetError> {
        let u = &self.users;
        let cols = self.snapshot_columns();
        let at = |name: &str| cols.iter().position(|c| *c == name);
        let flags: Vec<(usize, &Value)> = u
            .columns
            .iter()
            .filter_map(|c| c.flag.as_ref().map(|(t, _)| (at(&c.name).unwrap_or_default(), t)))
            .collect();
        let mut users = Vec::new();
        self.pages(&u.table, &cols, &[u.key.as_str()], |row| {
            let Some(key) = row.first().cloned().flatten() else { return };
            let get = |name: &Option<String>| name.as_deref().and_then(at).and_then(|i| row[i].clone());
            let blocked = !flags.is_empty()
                && flags.iter().all(|(i, when_true)| {
                    let v = match when_true {
                        Value::String(s) if s == "NULL" => &Value::Null,
                        other => other,
                    };
                    same(v, row[*i].as_deref(), false)
                });
            users.push(ActualUser {
                link: get(&u.link_column),
                emails: get(&u.match_column).map(|e| e.trim().to_lowercase()).into_iter().collect(),
                values: u.columns.iter().map(|c| at(&c.name).and_then(|i| row[i].clone())).collect(),
                blocked,
                key,
            });
        })
        .await?;
        Ok(users)
    }

    /// What differs between an account and a staged user: the mapped columns other than flags (shown old
    /// → new) and the link column; and whether the flag columns disagree with the user's `active`.
    pub fn user_drift(&self, state: &Map<String, Value>, id: &str, actual: &ActualUser) -> (Vec<Drift>, bool) {
        let u = &self.users;
        let mut drift = Vec::new();
        let mut flags_differ = false;
        // user_values follows the order of `columns`, as the snapshot's values do.
        for ((col, want), (column, have)) in
            self.user_values(state, id).into_iter().zip(u.columns.iter().zip(&actual.values))
        {
            if u.key_mapped && col == u.key {
                continue;
            }
            let fold = u.match_column.as_deref() == Some(col);
            if same(&want, have.as_deref(), fold) {
                continue;
            }
            if column.source.is_flag() {
                flags_differ = true;
            } else {
                drift.push(Drift { field: col.to_owned(), old: have.clone(), new: shown(&want) });
            }
        }
        if let Some(lc) = &u.link_column
            && actual.link.as_deref() != Some(id)
        {
            drift.push(Drift { field: lc.clone(), old: actual.link.clone(), new: Some(id.to_owned()) });
        }
        (drift, flags_differ)
    }

    /// The match email of a staged user as this target compares it.
    pub fn user_match(&self, state: &Map<String, Value>) -> Option<String> {
        self.users.match_column.as_ref().and_then(|_| match_email(state)).map(|e| e.to_lowercase())
    }

    /// Every group with its members (user keys), or none when groups are not replayed here.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn snapshot_groups(&self) -> Result<Vec<ActualGroup>, TargetError> {
        let Some(g) = &self.groups else { return Ok(Vec::new()) };
        let mut cols = vec![g.key.as_str(), g.name_column.as_str()];
        cols.extend(g.link_column.as_deref());
        let mut groups = Vec::new();
        self.pages(&g.table, &cols, &[g.key.as_str()], |row| {
            if let Some(key) = row.first().cloned().flatten() {
                groups.push(ActualGroup {
                    name: row.get(1).cloned().flatten().unwrap_or_default(),
                    link: if g.link_column.is_some() { row.get(2).cloned().flatten() } else { None },
                    members: Vec::new(),
                    key,
                });
            }
        })
        .await?;
        let member_cols = [g.member_group_column.as_str(), g.member_user_column.as_str()];
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        self.pages(&g.member_table, &member_cols, &member_cols, |row| {
            if let [Some(group), Some(user)] = &row[..] {
                members.entry(group.clone()).or_default().push(user.clone());
            }
        })
        .await?;
        for group in &mut groups {
            group.members = members.remove(&group.key).unwrap_or_default();
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_values_compare_after_normalisation() {
        assert!(same(&json!("Ann"), Some("Ann   "), false), "CHAR padding");
        assert!(!same(&json!("Ann"), Some("ann"), false));
        assert!(same(&json!("Ann@Example.com"), Some("ann@example.com"), true), "the match column folds case");
        assert!(same(&json!(true), Some("t"), false) && same(&json!(true), Some("1"), false));
        assert!(same(&json!(false), Some("0"), false) && !same(&json!(false), Some("1"), false));
        assert!(same(&json!(1), Some("1.0"), false));
        assert!(same(&Value::Null, Some(""), false) && same(&json!(""), None, false));
        assert!(!same(&Value::Null, Some("x"), false));
        assert!(
            same(&json!({"$now": true}), Some("2026-12-01 00:00:00"), false)
                && !same(&json!({"$now": true}), None, false)
        );
    }
}
