//! Users in a SQL target: find (link, link column, match email), insert or update the mapped columns, set
//! and clear the blocked representation, and delete by policy.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::db::{Params, SqlValue, Tx};
use super::{Named, SqlTarget, Types, Work};
use crate::matching::match_email;
use crate::scim::schema::Kind;
use crate::staging::journal::{ChangeSeq, ResourceId, TenantId};
use crate::targets::link;
use crate::targets::{Applied, DeletePolicy, Entry, Links, NoClaims, Op, Outcome, TargetError};

/// The value "NOW" in a flag table: the time of the change, kept while the flag stays set.
const NOW: &str = "NOW";

/// How a flag table's "NOW" travels from `user_values` to the statement: as an object, which no mapped
/// SCIM value can be, so that a user whose title is literally "NOW" (or "NULL") keeps it.
fn now_marker() -> Value {
    serde_json::json!({ "$now": true })
}

pub(super) fn is_now(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("$now"))
}

/// The time of a change as "YYYY-MM-DD HH:MM:SS" (UTC), accepted by PostgreSQL timestamp casts, MySQL
/// DATETIME and SQLite alike. "NOW" in a flag table means the time the IdP made the change, not the time of
/// replay, so that replaying a change again writes the same value.
fn db_time(at: &str) -> String {
    let t: String = at.chars().take(19).collect();
    t.replacen('T', " ", 1)
}

impl SqlTarget {
    /// The mapped column values of a user, with flag representations applied.
    pub(super) fn user_values(&self, state: &Map<String, Value>, id: &str) -> Vec<(&str, Value)> {
        self.users
            .columns
            .iter()
            .map(|c| {
                let v = c.source.eval(state, id);
                let v = match &c.flag {
                    Some((t, f)) => {
                        let chosen = if v == Value::Bool(true) { t } else { f };
                        match chosen {
                            Value::String(s) if s == NOW => now_marker(),
                            Value::String(s) if s == "NULL" => Value::Null,
                            other => other.clone(),
                        }
                    }
                    None => v,
                };
                (c.name.as_str(), v)
            })
            .collect()
    }

    /// Finds the row of a user: by its link, by the link column, then by match email.
    async fn find_user(
        &self,
        tx: &mut Tx,
        types: &Types,
        w: &Work<'_>,
        email: Option<&str>,
        links: &Links,
    ) -> Result<(Option<String>, bool), TargetError> {
        if let Some(k) = &w.link {
            return Ok((Some(k.clone()), true));
        }
        let u = &self.users;
        let id = w.entry.resource_id.as_str();
        let (keys, email, match_column) = match (&u.link_column, &u.match_column, email) {
            (Some(lc), Some(mc), Some(email)) => match self.by_link_or_email(tx, types, lc, mc, id, email).await? {
                (Some(k), _) => return Ok((Some(k), true)),
                (None, keys) => (keys, email, mc),
            },
            (lc, mc, email) => {
                if let Some(lc) = lc
                    && let Some(k) =
                        self.keys_where(tx, types, &u.table, &u.key, lc, id, false).await?.into_iter().next()
                {
                    return Ok((Some(k), true));
                }
                let (Some(email), Some(mc)) = (email, mc) else { return Ok((None, false)) };
                (self.keys_where(tx, types, &u.table, &u.key, mc, email, true).await?, email, mc)
            }
        };
        let ambiguous = |keys: &[String]| {
            format!(
                "{} rows of {} have {} = {email:?} (keys {}); not guessing which one is this user — merge or fix them, then retry",
                keys.len(),
                u.table,
                match_column,
                keys.join(", ")
            )
        };
        let key = link::choose(keys, ambiguous, links, w.claims, Kind::User, &w.entry.resource()).await?;
        Ok((key, false))
    }

    /// Both lookups in one round trip: the key of the row carrying this SCIM id in the link column (which
    /// wins), else the keys of the rows with the match email. UNION ALL, not OR: each half is the plain
    /// equality its index serves, whatever the planner thinks of the table's size (PostgreSQL plans an OR
    /// in a statement prepared while the table was empty as a scan, and keeps that plan).
    async fn by_link_or_email(
        &self,
        tx: &mut Tx,
        types: &Types,
        link_column: &str,
        match_column: &str,
        id: &str,
        email: &str,
    ) -> Result<(Option<String>, Vec<String>), TargetError> {
        let u = &self.users;
        let mut p = Params::new(self.dialect, types.get(&u.table));
        let by_link = self.equals(&mut p, types, &u.table, link_column, id, false);
        let by_email = self.equals(&mut p, types, &u.table, match_column, email, true);
        let cols = format!("{}, {}", self.dialect.as_text(&self.q(&u.key)), self.dialect.as_text(&self.q(link_column)));
        let t = self.q(&u.table);
        let sql = format!("SELECT {cols} FROM {t} WHERE {by_link} UNION ALL SELECT {cols} FROM {t} WHERE {by_email}");
        let mut linked = None;
        let mut matching = Vec::new();
        for row in tx.query(&sql, &p.values).await? {
            let mut row = row.into_iter();
            let (Some(key), link) = (row.next().flatten(), row.next().flatten()) else { continue };
            if link.as_deref() == Some(id) {
                linked = Some(key);
            } else {
                matching.push(key);
            }
        }
        Ok((linked, matching))
    }

    pub(super) async fn apply_user(
        &self,
        tx: &mut Tx,
        types: &Types,
        w: &Work<'_>,
        links: &Links,
    ) -> Result<Applied, TargetError> {
        let e = w.entry;
        let u = &self.users;
        let t = types.get(&u.table);
        let email = match_email(&e.state);
        let (key, was_linked) = self.find_user(tx, types, w, email.as_deref(), links).await?;
        let values = self.user_values(&e.state, e.resource_id.as_str());
        let at = e.at.as_str();
        let mut named: Named<'_> = values.iter().map(|(c, v)| (*c, self.sql_value(v, at))).collect();
        named.insert("scim_id", SqlValue::Text(e.resource_id.0.clone()));
        named.insert("user_name", SqlValue::from_json(e.state.get("userName").unwrap_or(&Value::Null)));
        named.insert("match_email", email.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null));
        if e.op == Op::Delete {
            let Some(key) = key else {
                return Ok(Applied::new(None, Outcome::Absent, "no downstream row to remove"));
            };
            named.insert("key", SqlValue::Text(key.clone()));
            return match self.delete_policy {
                DeletePolicy::Block => {
                    self.block(tx, t, &key, e, &named).await?;
                    Ok(Applied::new(Some(key), Outcome::Blocked, "deleted in SCIM; blocked by policy"))
                }
                DeletePolicy::Delete => {
                    if let Some(g) = &self.groups {
                        self.delete_where(tx, types.get(&g.member_table), &g.member_table, &g.member_user_column, &key)
                            .await?;
                    }
                    match &self.statements.delete {
                        Some(c) => {
                            self.run_custom(tx, c, &named).await?;
                        }
                        None => {
                            self.delete_where(tx, t, &u.table, &u.key, &key).await?;
                        }
                    }
                    Ok(Applied::new(None, Outcome::Deleted, ""))
                }
            };
        }
        let (key, outcome) = match key {
            Some(key) => {
                named.insert("key", SqlValue::Text(key.clone()));
                let changed = self.update_user(tx, t, &key, &values, &named, at).await?;
                if changed || self.row_exists(tx, t, &key).await? {
                    (key, if was_linked { Outcome::Updated } else { Outcome::Linked })
                } else {
                    // The linked row was removed downstream: provision it again.
                    (self.insert_user(tx, types, &values, &named, e).await?, Outcome::Created)
                }
            }
            None => (self.insert_user(tx, types, &values, &named, e).await?, Outcome::Created),
        };
        named.insert("key", SqlValue::Text(key.clone()));
        let active = e.state.get("active") != Some(&Value::Bool(false));
        let flag = if active { &self.statements.unblock } else { &self.statements.block };
        if let Some(c) = flag {
            self.run_custom(tx, c, &named).await?;
        }
        let detail = if active { "" } else { "blocked (active = false)" };
        Ok(Applied::new(Some(key), outcome, detail))
    }

    fn sql_value(&self, v: &Value, at: &str) -> SqlValue {
        match v {
            v if is_now(v) => SqlValue::Text(db_time(at)),
            other => SqlValue::from_json(other),
        }
    }

    /// `SET` clauses for the mapped columns. A flag column whose value is "NOW" keeps an existing time so
    /// that replaying the entry leaves the same row.
    fn set_clauses(
        &self,
        p: &mut Params<'_>,
        values: &[(&str, Value)],
        only: Option<&dyn Fn(&str) -> bool>,
        at: &str,
    ) -> Vec<String> {
        let mut sets = Vec::new();
        for (col, v) in values {
            if only.is_some_and(|f| !f(col)) || *col == self.users.key {
                continue;
            }
            let qc = self.q(col);
            if is_now(v) {
                let ph = p.push(Some(col), SqlValue::Text(db_time(at)));
                sets.push(format!("{qc} = COALESCE({qc}, {ph})"));
            } else {
                let ph = p.push(Some(col), self.sql_value(v, at));
                sets.push(format!("{qc} = {ph}"));
            }
        }
        sets
    }

    async fn update_user(
        &self,
        tx: &mut Tx,
        t: Option<&HashMap<String, String>>,
        key: &str,
        values: &[(&str, Value)],
        named: &Named<'_>,
        at: &str,
    ) -> Result<bool, TargetError> {
        if let Some(c) = &self.statements.update {
            return Ok(self.run_custom_exec(tx, c, named).await? > 0);
        }
        let u = &self.users;
        let mut p = Params::new(self.dialect, t);
        let mut sets = self.set_clauses(&mut p, values, None, at);
        if let Some(lc) = &u.link_column {
            let ph = p.push(Some(lc), named.get("scim_id").cloned().unwrap_or(SqlValue::Null));
            sets.push(format!("{} = {ph}", self.q(lc)));
        }
        if sets.is_empty() {
            return self.row_exists(tx, t, key).await;
        }
        let kph = p.push(Some(&u.key), SqlValue::Text(key.to_owned()));
        let sql = format!("UPDATE {} SET {} WHERE {} = {kph}", self.q(&u.table), sets.join(", "), self.q(&u.key));
        Ok(tx.exec(&sql, &p.values).await? > 0)
    }

    async fn row_exists(
        &self,
        tx: &mut Tx,
        t: Option<&HashMap<String, String>>,
        key: &str,
    ) -> Result<bool, TargetError> {
        let u = &self.users;
        let mut p = Params::new(self.dialect, t);
        let ph = p.push(Some(&u.key), SqlValue::Text(key.to_owned()));
        let sql = format!("SELECT 1 FROM {} WHERE {} = {ph}", self.q(&u.table), self.q(&u.key));
        Ok(!tx.query(&sql, &p.values).await?.is_empty())
    }

    async fn insert_user(
        &self,
        tx: &mut Tx,
        types: &Types,
        values: &[(&str, Value)],
        named: &Named<'_>,
        e: &Entry,
    ) -> Result<String, TargetError> {
        let at = e.at.as_str();
        let u = &self.users;
        let t = types.get(&u.table);
        if let Some(c) = &self.statements.create {
            let rows = self.run_custom(tx, c, named).await?;
            if let Some(k) = rows.into_iter().next().and_then(|r| r.into_iter().next().flatten()) {
                return Ok(k);
            }
            // The statement returned no key: find the new row again by its match email, protecting no link
            // (it was made for this user a moment ago).
            let email = match_email(&e.state);
            let placeholder = placeholder_entry(&e.resource_id);
            let w = Work { entry: &placeholder, link: None, claims: &NoClaims };
            return match self.find_user(tx, types, &w, email.as_deref(), &Links::new()).await? {
                (Some(k), _) => Ok(k),
                (None, _) => Err(TargetError::permanent(
                    "statements.create returned no key and the new row cannot be found by its match email \
                     (return the key from the statement, or configure users.match_column)",
                )),
            };
        }
        let mut p = Params::new(self.dialect, t);
        let mut cols = Vec::new();
        for (col, v) in values {
            cols.push(self.q(col));
            p.push(Some(col), self.sql_value(v, at));
        }
        if let Some(lc) = &u.link_column {
            cols.push(self.q(lc));
            p.push(Some(lc), SqlValue::Text(e.resource_id.0.clone()));
        }
        if !u.key_mapped {
            return self.insert_returning_key(tx, &u.table, &u.key, &cols, &p).await;
        }
        let phs: Vec<&str> = p.placeholders().collect();
        let sql = format!("INSERT INTO {} ({}) VALUES ({})", self.q(&u.table), cols.join(", "), phs.join(", "));
        tx.exec(&sql, &p.values).await?;
        values
            .iter()
            .find(|(c, _)| *c == u.key)
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
            .ok_or_else(|| {
                TargetError::permanent(format!("the key column {:?} is mapped but the user has no value for it", u.key))
            })
    }

    async fn block(
        &self,
        tx: &mut Tx,
        t: Option<&HashMap<String, String>>,
        key: &str,
        e: &Entry,
        named: &Named<'_>,
    ) -> Result<(), TargetError> {
        if let Some(c) = &self.statements.block {
            self.run_custom(tx, c, named).await?;
            return Ok(());
        }
        // The blocked representation: the mapping of this user as if `active` were false.
        let mut blocked = e.state.clone();
        blocked.insert("active".into(), Value::Bool(false));
        let values = self.user_values(&blocked, e.resource_id.as_str());
        let flags: Vec<&str> =
            self.users.columns.iter().filter(|c| c.source.is_flag()).map(|c| c.name.as_str()).collect();
        if flags.is_empty() {
            return Err(TargetError::permanent(format!(
                "delete_policy is \"block\" but no column of {} is mapped from active (e.g. blocked = \"!active\") and no statements.block is set",
                self.users.table
            )));
        }
        let is_flag = |c: &str| flags.contains(&c);
        let mut p = Params::new(self.dialect, t);
        let sets = self.set_clauses(&mut p, &values, Some(&is_flag), e.at.as_str());
        let kph = p.push(Some(&self.users.key), SqlValue::Text(key.to_owned()));
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = {kph}",
            self.q(&self.users.table),
            sets.join(", "),
            self.q(&self.users.key)
        );
        tx.exec(&sql, &p.values).await?;
        Ok(())
    }
}

/// An entry standing for a user whose row a custom `create` statement just made.
fn placeholder_entry(scim_id: &ResourceId) -> Entry {
    Entry {
        seq: ChangeSeq(0),
        tenant: TenantId(0),
        tenant_name: String::new(),
        kind: Kind::User,
        resource_id: scim_id.clone(),
        op: Op::Create,
        request_id: String::new(),
        at: String::new(),
        state: Map::new(),
        members_added: Vec::new(),
        members_removed: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_time_of_the_change() {
        assert_eq!(db_time("2026-12-01T03:41:11.123Z"), "2026-12-01 03:41:11");
        assert!(is_now(&now_marker()));
        assert!(!is_now(&Value::String(NOW.into())), "a user's literal \"NOW\" is data");
    }
}
