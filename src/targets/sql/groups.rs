//! Groups in a SQL target: a row per group (found by link, link column, then the same name) and a row per
//! membership in the join table, changed one membership at a time.

use std::collections::HashMap;

use serde_json::Value;

use super::db::{Params, SqlValue, Tx};
use super::{Named, SqlTarget, Types, Work};
use crate::scim::schema::Kind;
use crate::targets::link;
use crate::targets::{Applied, Links, Op, Outcome, TargetError};

impl SqlTarget {
    pub(super) async fn apply_group(
        &self,
        tx: &mut Tx,
        types: &Types,
        w: &Work<'_>,
        links: &Links,
    ) -> Result<Applied, TargetError> {
        let Some(g) = &self.groups else {
            return Ok(Applied::new(None, Outcome::Ignored, "groups = \"ignore\""));
        };
        let e = w.entry;
        let gt = types.get(&g.table);
        let mt = types.get(&g.member_table);
        let name = e.state.get("displayName").and_then(Value::as_str).unwrap_or_default().to_owned();
        // Find the group row: link, link column, then the same name.
        let mut key = w.link.clone();
        if key.is_none()
            && let Some(lc) = &g.link_column
        {
            key = self
                .keys_where(tx, types, &g.table, &g.key, lc, e.resource_id.as_str(), false)
                .await?
                .into_iter()
                .next();
        }
        if key.is_none() {
            let keys = self.keys_where(tx, types, &g.table, &g.key, &g.name_column, &name, true).await?;
            let ambiguous = |keys: &[String]| {
                format!(
                    "{} rows of {} are named {name:?} (keys {}); not guessing",
                    keys.len(),
                    g.table,
                    keys.join(", ")
                )
            };
            key = link::choose(keys, ambiguous, links, w.claims, Kind::Group, &e.resource()).await?;
        }
        if e.op == Op::Delete {
            let Some(key) = key else {
                return Ok(Applied::new(None, Outcome::Absent, "no downstream group to remove"));
            };
            self.delete_where(tx, mt, &g.member_table, &g.member_group_column, &key).await?;
            self.delete_where(tx, gt, &g.table, &g.key, &key).await?;
            return Ok(Applied::new(None, Outcome::Deleted, ""));
        }
        let scim_id = SqlValue::Text(e.resource_id.0.clone());
        let (key, outcome) = match key {
            Some(k) => {
                let mut p = Params::new(self.dialect, gt);
                let mut sets = vec![format!(
                    "{} = {}",
                    self.q(&g.name_column),
                    p.push(Some(&g.name_column), SqlValue::Text(name.clone()))
                )];
                if let Some(lc) = &g.link_column {
                    sets.push(format!("{} = {}", self.q(lc), p.push(Some(lc), scim_id.clone())));
                }
                let kph = p.push(Some(&g.key), SqlValue::Text(k.clone()));
                tx.exec(
                    &format!("UPDATE {} SET {} WHERE {} = {kph}", self.q(&g.table), sets.join(", "), self.q(&g.key)),
                    &p.values,
                )
                .await?;
                (k, if w.link.is_some() { Outcome::Updated } else { Outcome::Linked })
            }
            None => {
                let mut p = Params::new(self.dialect, gt);
                let mut cols = vec![self.q(&g.name_column)];
                p.push(Some(&g.name_column), SqlValue::Text(name.clone()));
                if let Some(lc) = &g.link_column {
                    cols.push(self.q(lc));
                    p.push(Some(lc), scim_id);
                }
                (self.insert_returning_key(tx, &g.table, &g.key, &cols, &p).await?, Outcome::Created)
            }
        };
        let mut changes = Vec::new();
        let mut skipped = Vec::new();
        for (ids, add) in [(&e.members_added, true), (&e.members_removed, false)] {
            for id in ids.iter() {
                // A member without a row here (its user failed to replay, or was deleted since) or that is
                // itself a group (the join table holds users) is left out and named in the audit detail;
                // reconciliation repairs what is missing. Failing the group's change instead would block
                // every later change of the group behind one member.
                let user_key = match links.get(&e.member(id)) {
                    Some(l) if l.kind == Kind::User => &l.key,
                    _ => {
                        if add {
                            skipped.push(id.to_string());
                        }
                        continue;
                    }
                };
                self.membership(tx, mt, &key, user_key, add, e.resource_id.as_str()).await?;
                changes.push(format!("{}{id}", if add { "+" } else { "-" }));
            }
        }
        let mut detail = if changes.is_empty() { String::new() } else { format!("members {}", changes.join(" ")) };
        if !skipped.is_empty() {
            detail.push_str(&format!("; not provisioned here, left out: {}", skipped.join(" ")));
        }
        Ok(Applied::new(Some(key), outcome, detail))
    }

    async fn membership(
        &self,
        tx: &mut Tx,
        mt: Option<&HashMap<String, String>>,
        group_key: &str,
        user_key: &str,
        add: bool,
        group_scim_id: &str,
    ) -> Result<(), TargetError> {
        let Some(g) = &self.groups else { return Ok(()) };
        let custom = if add { &self.statements.add_member } else { &self.statements.remove_member };
        if let Some(c) = custom {
            let named: Named<'_> = [
                ("group_key", SqlValue::Text(group_key.to_owned())),
                ("user_key", SqlValue::Text(user_key.to_owned())),
                ("scim_id", SqlValue::Text(group_scim_id.to_owned())),
            ]
            .into_iter()
            .collect();
            self.run_custom(tx, c, &named).await?;
            return Ok(());
        }
        let (gc, uc) = (self.q(&g.member_group_column), self.q(&g.member_user_column));
        let mut p = Params::new(self.dialect, mt);
        let gph = p.push(Some(&g.member_group_column), SqlValue::Text(group_key.to_owned()));
        let uph = p.push(Some(&g.member_user_column), SqlValue::Text(user_key.to_owned()));
        let mt_q = self.q(&g.member_table);
        if add {
            // Idempotent without relying on a unique constraint the legacy schema may lack.
            let exists =
                tx.query(&format!("SELECT 1 FROM {mt_q} WHERE {gc} = {gph} AND {uc} = {uph}"), &p.values).await?;
            if exists.is_empty() {
                tx.exec(&format!("INSERT INTO {mt_q} ({gc}, {uc}) VALUES ({gph}, {uph})"), &p.values).await?;
            }
        } else {
            tx.exec(&format!("DELETE FROM {mt_q} WHERE {gc} = {gph} AND {uc} = {uph}"), &p.values).await?;
        }
        Ok(())
    }
}
