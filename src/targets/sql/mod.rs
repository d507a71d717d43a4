//! The SQL target: writes users (and optionally groups and memberships) into an application's own tables
//! in PostgreSQL, MySQL/MariaDB or SQLite, the way Tribe CRM's provisioning behaves: an existing account with
//! the user's email is linked rather than duplicated, deactivation sets a blocked flag and keeps the row,
//! and DELETE follows the target's policy.
//!
//! `build` turns the configuration into a target, `db` talks to the database, `users` and `groups` apply
//! journal entries.

mod build;
mod catalog;
pub mod config;
mod db;
mod groups;
mod snapshot;
mod users;

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::OnceCell;

use self::db::{Db, Dialect, Params, SqlValue, Tx};
use super::{Applied, Claims, DeletePolicy, Entry, Links, TargetError};
use crate::mapping::Source;
use crate::scim::schema::Kind;
use crate::staging::journal::remember;

struct Column {
    name: String,
    source: Source,
    /// Values for true and false when the column is a flag table.
    flag: Option<(Value, Value)>,
}

struct Users {
    table: String,
    key: String,
    match_column: Option<String>,
    link_column: Option<String>,
    columns: Vec<Column>,
    /// The key is one of the mapped columns (else the database generates it).
    key_mapped: bool,
}

struct Groups {
    table: String,
    key: String,
    name_column: String,
    link_column: Option<String>,
    member_table: String,
    member_group_column: String,
    member_user_column: String,
}

/// A custom statement with its `:name` parameters replaced by placeholders.
struct Custom {
    sql: String,
    params: Vec<String>,
}

#[derive(Default)]
struct CustomStatements {
    create: Option<Custom>,
    update: Option<Custom>,
    block: Option<Custom>,
    unblock: Option<Custom>,
    delete: Option<Custom>,
    add_member: Option<Custom>,
    remove_member: Option<Custom>,
}

pub use self::catalog::IndexAdvice;
/// What the database's catalog says of the configured tables, learned on first use.
type Types = catalog::Catalog;

/// Values of a statement's named parameters (`:key`, `:scim_id`, the mapped columns, …).
type Named<'a> = HashMap<&'a str, SqlValue>;

pub struct SqlTarget {
    name: String,
    dialect: Dialect,
    db: Db,
    delete_policy: DeletePolicy,
    users: Users,
    groups: Option<Groups>,
    statements: CustomStatements,
    catalog: OnceCell<Types>,
    max_connections: usize,
    /// How long to wait for the database before counting it as unreachable.
    timeout: std::time::Duration,
}

/// One entry to apply, with the link replay knows for its resource.
struct Work<'a> {
    entry: &'a Entry,
    link: Option<String>,
    claims: &'a dyn Claims,
}

impl SqlTarget {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn replays_groups(&self) -> bool {
        self.groups.is_some()
    }

    /// Whether existing accounts are linked by email (a `match_column` is configured).
    pub fn matches_by_email(&self) -> bool {
        self.users.match_column.is_some()
    }

    /// How many transactions may run at once.
    pub fn parallelism(&self) -> usize {
        self.max_connections
    }

    fn q(&self, ident: &str) -> String {
        self.dialect.quote(ident)
    }

    /// Checks that every configured table and column exists, and learns column types. Cached once it
    /// succeeds.
    ///
    /// # Errors
    /// Transient: the database is unreachable, or its tables do not match the configuration (an operator
    /// must fix one or the other; nothing is dead-lettered meanwhile).
    pub async fn check(&self) -> Result<(), TargetError> {
        self.db.connect_once(self.timeout).await?;
        self.catalog().await.map(|_| ())
    }

    /// Whether the database answers now (a `SELECT 1` through the pool).
    ///
    /// # Errors
    /// Transient, saying why the database cannot be reached.
    pub async fn ping(&self) -> Result<(), TargetError> {
        let mut tx = self.db.begin().await?;
        tx.query("SELECT 1", &[]).await?;
        tx.rollback().await;
        Ok(())
    }

    /// The (table, [(column, config key)]) pairs the configuration names.
    fn wanted_columns(&self) -> Vec<(&str, Vec<(&str, &'static str)>)> {
        let u = &self.users;
        let mut ucols = vec![(u.key.as_str(), "users.key")];
        if let Some(m) = &u.match_column {
            ucols.push((m, "users.match_column"));
        }
        if let Some(l) = &u.link_column {
            ucols.push((l, "users.link_column"));
        }
        ucols.extend(u.columns.iter().map(|c| (c.name.as_str(), "users.columns")));
        let mut wanted = vec![(u.table.as_str(), ucols)];
        if let Some(g) = &self.groups {
            let mut gcols = vec![(g.key.as_str(), "groups.key"), (g.name_column.as_str(), "groups.name_column")];
            if let Some(l) = &g.link_column {
                gcols.push((l, "groups.link_column"));
            }
            wanted.push((g.table.as_str(), gcols));
            wanted.push((
                g.member_table.as_str(),
                vec![
                    (g.member_group_column.as_str(), "groups.member_group_column"),
                    (g.member_user_column.as_str(), "groups.member_user_column"),
                ],
            ));
        }
        wanted
    }

    async fn catalog(&self) -> Result<&Types, TargetError> {
        self.catalog.get_or_try_init(|| self.read_catalog()).await
    }

    /// Applies entries in one transaction: all or none. `committed` changes only when the transaction does.
    ///
    /// # Errors
    /// The first entry that failed; a failure to reach the database concerns the whole target and is
    /// transient.
    pub async fn apply_batch(
        &self,
        entries: &[Entry],
        committed: &mut Links,
        claims: &dyn Claims,
    ) -> Result<Vec<Applied>, TargetError> {
        let mut local = committed.clone();
        let links = &mut local;
        let types = self.catalog().await.map_err(TargetError::into_transient)?;
        let mut tx = self.db.begin().await.map_err(TargetError::into_transient)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let resource = entry.resource();
            let w = Work { entry, link: links.get(&resource).map(|l| l.key.clone()), claims };
            let r = match entry.kind {
                Kind::User => self.apply_user(&mut tx, types, &w, links).await,
                Kind::Group => self.apply_group(&mut tx, types, &w, links).await,
            };
            match r {
                Ok(mut a) => {
                    a.operations = tx.take_trace();
                    remember(links, resource, entry.kind, &a);
                    out.push(a);
                }
                Err(e) => {
                    tx.rollback().await;
                    return Err(e);
                }
            }
        }
        // A failed commit leaves nothing applied; it is nearly always the connection going away.
        tx.commit().await.map_err(TargetError::into_transient)?;
        *committed = local;
        Ok(out)
    }

    fn custom_params(&self, custom: &Custom, named: &Named<'_>) -> Vec<SqlValue> {
        custom.params.iter().map(|p| named.get(p.as_str()).cloned().unwrap_or(SqlValue::Null)).collect()
    }

    async fn run_custom(
        &self,
        tx: &mut Tx,
        custom: &Custom,
        named: &Named<'_>,
    ) -> Result<Vec<Vec<Option<String>>>, TargetError> {
        tx.query(&custom.sql, &self.custom_params(custom, named)).await
    }

    async fn run_custom_exec(&self, tx: &mut Tx, custom: &Custom, named: &Named<'_>) -> Result<u64, TargetError> {
        tx.exec(&custom.sql, &self.custom_params(custom, named)).await
    }

    /// Keys (as text) of the rows of `table` whose `column` equals `value`; compared case-insensitively when
    /// `fold` (emails, group names), exactly otherwise (link columns holding SCIM ids). Where the column's
    /// collation already ignores case (MySQL `_ci`), a plain equality does, and a plain index serves it.
    #[allow(clippy::too_many_arguments)]
    async fn keys_where(
        &self,
        tx: &mut Tx,
        catalog: &Types,
        table: &str,
        key: &str,
        column: &str,
        value: &str,
        fold: bool,
    ) -> Result<Vec<String>, TargetError> {
        let mut p = Params::new(self.dialect, catalog.get(table));
        let cond = self.equals(&mut p, catalog, table, column, value, fold);
        let sql = format!("SELECT {} FROM {} WHERE {cond}", self.dialect.as_text(&self.q(key)), self.q(table));
        Ok(tx.query(&sql, &p.values).await?.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect())
    }

    /// `column = value` with the value bound, compared case-insensitively when `fold` (through LOWER on
    /// both sides, unless MySQL's collation of the column already folds case, where LOWER would defeat
    /// its index).
    fn equals(
        &self,
        p: &mut Params<'_>,
        catalog: &Types,
        table: &str,
        column: &str,
        value: &str,
        fold: bool,
    ) -> String {
        let fold = fold && !(self.dialect == Dialect::Mysql && catalog.folds(table, column));
        if fold {
            format!("LOWER({}) = LOWER({})", self.q(column), p.push(None, SqlValue::Text(value.to_owned())))
        } else {
            format!("{} = {}", self.q(column), p.push(Some(column), SqlValue::Text(value.to_owned())))
        }
    }

    /// Deletes the rows of `table` whose `column` equals `value`.
    async fn delete_where(
        &self,
        tx: &mut Tx,
        types: Option<&HashMap<String, String>>,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<u64, TargetError> {
        let mut p = Params::new(self.dialect, types);
        let ph = p.push(Some(column), SqlValue::Text(value.to_owned()));
        tx.exec(&format!("DELETE FROM {} WHERE {} = {ph}", self.q(table), self.q(column)), &p.values).await
    }

    /// Inserts a row and returns its generated key (as text).
    async fn insert_returning_key(
        &self,
        tx: &mut Tx,
        table: &str,
        key: &str,
        cols: &[String],
        p: &Params<'_>,
    ) -> Result<String, TargetError> {
        let phs: Vec<&str> = p.placeholders().collect();
        let base = format!("INSERT INTO {} ({}) VALUES ({})", self.q(table), cols.join(", "), phs.join(", "));
        let rows = match self.dialect {
            Dialect::Mysql => {
                tx.exec(&base, &p.values).await?;
                tx.query("SELECT CAST(LAST_INSERT_ID() AS CHAR)", &[]).await?
            }
            _ => tx.query(&format!("{base} RETURNING {}", self.dialect.as_text(&self.q(key))), &p.values).await?,
        };
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| TargetError::permanent(format!("the database returned no key for the new row of {table}")))
    }
}
