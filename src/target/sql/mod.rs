//! The SQL target: writes users (and optionally groups and memberships) into an application's own tables
//! in PostgreSQL, MySQL/MariaDB or SQLite, the way Tribe CRM's provisioning behaves: an existing account with
//! the user's email is linked rather than duplicated, deactivation sets a blocked flag and keeps the row,
//! and DELETE follows the target's policy.

pub mod config;
mod db;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use self::config::{ColumnSpec, DeletePolicy, GroupsConfig, SqlTargetConfig};
use self::db::{Db, Dialect, SqlValue, Tx, check_ident};
use super::{Applied, Links, Op, TargetError, Work};
use crate::mapping::Source;
use crate::matching::match_email;
use crate::scim::schema::Kind;

struct Column {
    name: String,
    source: Source,
    /// Values for true and false when the column is a flag table.
    flag: Option<(Value, Value)>,
}

struct Users {
    table: String,
    key: String,
    match_column: String,
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

/// Column types per table, learned from the database on first use (PostgreSQL casts need them).
type Types = HashMap<String, HashMap<String, String>>;

pub struct SqlTarget {
    name: String,
    dialect: Dialect,
    db: Db,
    delete_policy: DeletePolicy,
    users: Users,
    groups: Option<Groups>,
    statements: CustomStatements,
    types: OnceCell<Types>,
    max_connections: usize,
}

/// The value "NOW" in a flag table: the time of the change, kept while the flag stays set.
const NOW: &str = "NOW";

/// How a flag table's "NOW" travels from `user_values` to the statement: as an object, which no mapped
/// SCIM value can be, so that a user whose title is literally "NOW" (or "NULL") keeps it.
fn now_marker() -> Value {
    serde_json::json!({ "$now": true })
}

fn is_now(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("$now"))
}

fn resolve_url(cfg: &SqlTargetConfig) -> Result<String, String> {
    match (&cfg.url, &cfg.url_file, &cfg.url_env) {
        (Some(u), None, None) => Ok(u.clone()),
        (None, Some(f), None) => std::fs::read_to_string(f)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("url_file: cannot read {}: {e}", f.display())),
        (None, None, Some(var)) => {
            std::env::var(var).map_err(|_| format!("url_env: the environment variable {var} is not set"))
        }
        _ => Err("url: give exactly one of url, url_file and url_env".into()),
    }
}

/// Replaces `:name` parameters (outside quotes, not `::` casts) with the dialect's placeholders.
fn parse_custom(dialect: Dialect, sql: &str, allowed: &[&str]) -> Result<Custom, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::new();
    let mut params = Vec::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        let starts_name = chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic() || *n == '_');
        if c == ':' && starts_name && (i == 0 || chars[i - 1] != ':') {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "unknown parameter :{name} (available: {})",
                    allowed.iter().map(|a| format!(":{a}")).collect::<Vec<_>>().join(", ")
                ));
            }
            params.push(name);
            out.push_str(&dialect.param(params.len(), None));
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    Ok(Custom { sql: out, params })
}

/// Builds a statement's parameter list in textual order, with PostgreSQL casts to column types.
struct Params<'a> {
    dialect: Dialect,
    types: Option<&'a HashMap<String, String>>,
    values: Vec<SqlValue>,
}

impl<'a> Params<'a> {
    fn new(dialect: Dialect, types: Option<&'a HashMap<String, String>>) -> Self {
        Params { dialect, types, values: Vec::new() }
    }
    /// Adds a value destined for `column` and returns its placeholder.
    fn push(&mut self, column: Option<&str>, v: SqlValue) -> String {
        self.values.push(v);
        let cast = match (self.dialect, column) {
            (Dialect::Postgres, Some(c)) => self.types.and_then(|t| t.get(c)).map(String::as_str),
            _ => None,
        };
        self.dialect.param(self.values.len(), cast)
    }
}

/// The time of a change as "YYYY-MM-DD HH:MM:SS" (UTC), accepted by PostgreSQL timestamp casts, MySQL
/// DATETIME and SQLite alike. "NOW" in a flag table means the time the IdP made the change, not the time of
/// replay, so that replaying a change again writes the same value.
fn db_time(at: &str) -> String {
    let t: String = at.chars().take(19).collect();
    t.replacen('T', " ", 1)
}

impl SqlTarget {
    /// Builds the target from its configuration, checking identifiers, mapping expressions and custom
    /// statements.
    ///
    /// # Errors
    /// A message that starts with the offending key below `[[target]]`.
    pub fn from_config(cfg: &SqlTargetConfig) -> Result<SqlTarget, String> {
        let url = resolve_url(cfg)?;
        let (db, dialect) = Db::new(&url, cfg.max_connections, Duration::from_secs(cfg.timeout_seconds))
            .map_err(|e| format!("url: {e}"))?;
        let u = &cfg.users;
        for (key, ident) in [("users.table", &u.table), ("users.key", &u.key), ("users.match_column", &u.match_column)]
        {
            check_ident(ident).map_err(|e| format!("{key}: {e}"))?;
        }
        if let Some(l) = &u.link_column {
            check_ident(l).map_err(|e| format!("users.link_column: {e}"))?;
        }
        let mut columns = Vec::new();
        for (name, spec) in &u.columns {
            check_ident(name).map_err(|e| format!("users.columns.{name}: {e}"))?;
            let (source, flag) = match spec {
                ColumnSpec::Source(expr) => (Source::parse(Kind::User, expr), None),
                ColumnSpec::Bool(b) => (Ok(Source::Const(Value::Bool(*b))), None),
                ColumnSpec::Int(i) => (Ok(Source::Const(Value::from(*i))), None),
                ColumnSpec::Float(f) => (Ok(Source::Const(Value::from(*f))), None),
                ColumnSpec::Flag(f) => {
                    (Source::parse(Kind::User, &f.from), Some((f.when_true.clone(), f.when_false.clone())))
                }
            };
            let source = source.map_err(|e| format!("users.columns.{name}: {e}"))?;
            if flag.is_some() && !source.is_boolean() {
                return Err(format!(
                    "users.columns.{name}: a flag table's `from` must be a boolean attribute such as \"!active\""
                ));
            }
            columns.push(Column { name: name.clone(), source, flag });
        }
        let key_mapped = columns.iter().any(|c| c.name == u.key);
        let groups = match &cfg.groups {
            GroupsConfig::Mode(m) if m == "ignore" => None,
            GroupsConfig::Mode(m) => {
                return Err(format!(
                    "groups: {m:?} is not a mode; use \"ignore\" or a table (see config.toml.example)"
                ));
            }
            GroupsConfig::Table(g) => {
                for (key, ident) in [
                    ("groups.table", &g.table),
                    ("groups.key", &g.key),
                    ("groups.name_column", &g.name_column),
                    ("groups.member_table", &g.member_table),
                    ("groups.member_group_column", &g.member_group_column),
                    ("groups.member_user_column", &g.member_user_column),
                ] {
                    check_ident(ident).map_err(|e| format!("{key}: {e}"))?;
                }
                if let Some(l) = &g.link_column {
                    check_ident(l).map_err(|e| format!("groups.link_column: {e}"))?;
                }
                Some(Groups {
                    table: g.table.clone(),
                    key: g.key.clone(),
                    name_column: g.name_column.clone(),
                    link_column: g.link_column.clone(),
                    member_table: g.member_table.clone(),
                    member_group_column: g.member_group_column.clone(),
                    member_user_column: g.member_user_column.clone(),
                })
            }
        };
        let mut user_params: Vec<&str> = vec!["key", "scim_id", "user_name", "match_email"];
        user_params.extend(columns.iter().map(|c| c.name.as_str()));
        let member_params = ["group_key", "user_key", "scim_id"];
        let s = &cfg.statements;
        let custom = |key: &str, sql: &Option<String>, allowed: &[&str]| -> Result<Option<Custom>, String> {
            sql.as_deref()
                .map(|q| parse_custom(dialect, q, allowed).map_err(|e| format!("statements.{key}: {e}")))
                .transpose()
        };
        let statements = CustomStatements {
            create: custom("create", &s.create, &user_params)?,
            update: custom("update", &s.update, &user_params)?,
            block: custom("block", &s.block, &user_params)?,
            unblock: custom("unblock", &s.unblock, &user_params)?,
            delete: custom("delete", &s.delete, &user_params)?,
            add_member: custom("add_member", &s.add_member, &member_params)?,
            remove_member: custom("remove_member", &s.remove_member, &member_params)?,
        };
        Ok(SqlTarget {
            name: cfg.name.clone(),
            dialect,
            db,
            delete_policy: cfg.delete_policy,
            users: Users {
                table: u.table.clone(),
                key: u.key.clone(),
                match_column: u.match_column.clone(),
                link_column: u.link_column.clone(),
                columns,
                key_mapped,
            },
            groups,
            statements,
            types: OnceCell::new(),
            max_connections: cfg.max_connections.max(1) as usize,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn replays_groups(&self) -> bool {
        self.groups.is_some()
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
        self.types().await.map(|_| ())
    }

    async fn types(&self) -> Result<&Types, TargetError> {
        self.types
            .get_or_try_init(|| async {
                let mut wanted: Vec<(&str, Vec<(String, &str)>)> = Vec::new();
                let u = &self.users;
                let mut ucols = vec![(u.key.clone(), "users.key"), (u.match_column.clone(), "users.match_column")];
                if let Some(l) = &u.link_column {
                    ucols.push((l.clone(), "users.link_column"));
                }
                ucols.extend(u.columns.iter().map(|c| (c.name.clone(), "users.columns")));
                wanted.push((u.table.as_str(), ucols));
                if let Some(g) = &self.groups {
                    let mut gcols = vec![(g.key.clone(), "groups.key"), (g.name_column.clone(), "groups.name_column")];
                    if let Some(l) = &g.link_column {
                        gcols.push((l.clone(), "groups.link_column"));
                    }
                    wanted.push((g.table.as_str(), gcols));
                    wanted.push((
                        g.member_table.as_str(),
                        vec![
                            (g.member_group_column.clone(), "groups.member_group_column"),
                            (g.member_user_column.clone(), "groups.member_user_column"),
                        ],
                    ));
                }
                let mut types = Types::new();
                for (table, cols) in wanted {
                    let found: HashMap<String, String> =
                        self.db.columns(self.dialect, table).await?.into_iter().collect();
                    if found.is_empty() {
                        return Err(TargetError::Transient(format!(
                            "target {:?}: table {table:?} does not exist (or has no columns)",
                            self.name
                        )));
                    }
                    for (col, key) in cols {
                        if !found.contains_key(&col) {
                            return Err(TargetError::Transient(format!(
                                "target {:?}: {key}: column {col:?} does not exist in table {table:?}",
                                self.name
                            )));
                        }
                    }
                    types.insert(table.to_owned(), found);
                }
                Ok(types)
            })
            .await
    }

    /// Applies entries in one transaction: all or none. `committed` changes only when the transaction does.
    pub async fn apply_batch(
        &self,
        entries: &[super::Entry],
        committed: &mut Links,
        claims: &dyn super::Claims,
    ) -> Result<Vec<Applied>, (usize, TargetError)> {
        let mut local = committed.clone();
        let links = &mut local;
        // Failing to introspect or to open a transaction concerns the whole target, never one change: it
        // must not turn the changes of this batch into dead letters.
        let target_wide = |e: TargetError| (0, TargetError::Transient(e.to_string()));
        let types = self.types().await.map_err(target_wide)?;
        let mut tx = self.db.begin().await.map_err(target_wide)?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let id = (entry.tenant, entry.resource_id.clone());
            let w = Work { entry, link: links.get(&id).map(|l| l.key.clone()), claims };
            let r = match entry.kind {
                Kind::User => self.apply_user(&mut tx, types, &w, links).await,
                Kind::Group => self.apply_group(&mut tx, types, &w, links).await,
            };
            match r {
                Ok(a) => {
                    super::remember(links, id, entry.kind, &a);
                    out.push(a);
                }
                Err(e) => {
                    tx.rollback().await;
                    return Err((i, e));
                }
            }
        }
        // A failed commit leaves nothing applied; it is nearly always the connection going away.
        tx.commit().await.map_err(|e| (0, TargetError::Transient(e.to_string())))?;
        *committed = local;
        Ok(out)
    }

    /// The mapped column values of a user, with flag representations applied.
    fn user_values(&self, state: &Map<String, Value>, id: &str) -> Vec<(&str, Value)> {
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

    fn custom_params(&self, custom: &Custom, named: &HashMap<&str, SqlValue>) -> Vec<SqlValue> {
        custom.params.iter().map(|p| named.get(p.as_str()).cloned().unwrap_or(SqlValue::Null)).collect()
    }

    async fn run_custom(
        &self,
        tx: &mut Tx,
        custom: &Custom,
        named: &HashMap<&str, SqlValue>,
    ) -> Result<Vec<Vec<Option<String>>>, TargetError> {
        tx.query(&custom.sql, &self.custom_params(custom, named)).await
    }

    /// Keys (as text) of the rows of `table` whose `column` equals `value`; compared case-insensitively when
    /// `fold` (emails, group names), exactly otherwise (link columns holding SCIM ids).
    #[allow(clippy::too_many_arguments)]
    async fn keys_where(
        &self,
        tx: &mut Tx,
        types: Option<&HashMap<String, String>>,
        table: &str,
        key: &str,
        column: &str,
        value: &str,
        fold: bool,
    ) -> Result<Vec<String>, TargetError> {
        let mut p = Params::new(self.dialect, types);
        let (col, ph) = if fold {
            (format!("LOWER({})", self.q(column)), format!("LOWER({})", p.push(None, SqlValue::Text(value.to_owned()))))
        } else {
            (self.q(column), p.push(Some(column), SqlValue::Text(value.to_owned())))
        };
        let sql = format!("SELECT {} FROM {} WHERE {col} = {ph}", self.dialect.as_text(&self.q(key)), self.q(table));
        Ok(tx.query(&sql, &p.values).await?.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect())
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
        let t = types.get(&u.table);
        if let Some(lc) = &u.link_column
            && let Some(k) =
                self.keys_where(tx, t, &u.table, &u.key, lc, &w.entry.resource_id, false).await?.into_iter().next()
        {
            return Ok((Some(k), true));
        }
        let Some(email) = email else { return Ok((None, false)) };
        let keys = self.keys_where(tx, t, &u.table, &u.key, &u.match_column, email, true).await?;
        match keys.len() {
            0 => Ok((None, false)),
            1 => {
                super::check_unclaimed(links, w.claims, w.entry.tenant, &w.entry.resource_id, &keys[0])?;
                Ok((keys.into_iter().next(), false))
            }
            _ => Err(TargetError::Permanent(format!(
                "{} rows of {} have {} = {email:?} (keys {}); not guessing which one is this user — merge or fix them, then retry",
                keys.len(),
                u.table,
                u.match_column,
                keys.join(", ")
            ))),
        }
    }

    async fn apply_user(
        &self,
        tx: &mut Tx,
        types: &Types,
        w: &Work<'_>,
        links: &Links,
    ) -> Result<Applied, TargetError> {
        let e = &w.entry;
        let u = &self.users;
        let t = types.get(&u.table);
        let email = match_email(&e.state);
        let (key, was_linked) = self.find_user(tx, types, w, email.as_deref(), links).await?;
        let values = self.user_values(&e.state, &e.resource_id);
        let at = e.at.as_str();
        let mut named: HashMap<&str, SqlValue> = values.iter().map(|(c, v)| (*c, self.sql_value(v, at))).collect();
        named.insert("scim_id", SqlValue::Text(e.resource_id.clone()));
        named.insert("user_name", SqlValue::from_json(e.state.get("userName").unwrap_or(&Value::Null)));
        named.insert("match_email", email.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null));
        if e.op == Op::Delete {
            let Some(key) = key else {
                return Ok(Applied { key: None, outcome: "absent", detail: "no downstream row to remove".into() });
            };
            named.insert("key", SqlValue::Text(key.clone()));
            return match self.delete_policy {
                DeletePolicy::Block => {
                    self.block(tx, t, &key, e, &named).await?;
                    Ok(Applied {
                        key: Some(key),
                        outcome: "blocked",
                        detail: "deleted in SCIM; blocked by policy".into(),
                    })
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
                    Ok(Applied { key: None, outcome: "deleted", detail: String::new() })
                }
            };
        }
        let (key, outcome) = match key {
            Some(key) => {
                named.insert("key", SqlValue::Text(key.clone()));
                let changed = self.update_user(tx, t, &key, &values, &named, at).await?;
                if changed || self.row_exists(tx, t, &key).await? {
                    (key, if was_linked { "updated" } else { "linked" })
                } else {
                    // The linked row was removed downstream: provision it again.
                    (self.insert_user(tx, types, &values, &mut named, e).await?, "created")
                }
            }
            None => (self.insert_user(tx, types, &values, &mut named, e).await?, "created"),
        };
        named.insert("key", SqlValue::Text(key.clone()));
        let active = e.state.get("active") != Some(&Value::Bool(false));
        let flag = if active { &self.statements.unblock } else { &self.statements.block };
        if let Some(c) = flag {
            self.run_custom(tx, c, &named).await?;
        }
        let detail = if active { String::new() } else { "blocked (active = false)".to_owned() };
        Ok(Applied { key: Some(key), outcome, detail })
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
        named: &HashMap<&str, SqlValue>,
        at: &str,
    ) -> Result<bool, TargetError> {
        if let Some(c) = &self.statements.update {
            return Ok(!self.run_custom_exec(tx, c, named).await?.is_zero());
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

    async fn run_custom_exec(
        &self,
        tx: &mut Tx,
        c: &Custom,
        named: &HashMap<&str, SqlValue>,
    ) -> Result<Affected, TargetError> {
        Ok(Affected(tx.exec(&c.sql, &self.custom_params(c, named)).await?))
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
        named: &mut HashMap<&str, SqlValue>,
        e: &super::Entry,
    ) -> Result<String, TargetError> {
        let (scim_id, at) = (e.resource_id.as_str(), e.at.as_str());
        let email = match_email(&e.state);
        let email = email.as_deref();
        let u = &self.users;
        let t = types.get(&u.table);
        if let Some(c) = &self.statements.create {
            let rows = self.run_custom(tx, c, named).await?;
            if let Some(k) = rows.into_iter().next().and_then(|r| r.into_iter().next().flatten()) {
                return Ok(k);
            }
            let placeholder = placeholder_entry(scim_id);
            let w = Work { entry: &placeholder, link: None, claims: &super::NoClaims };
            return match self.find_user(tx, types, &w, email, &Links::new()).await? {
                (Some(k), _) => Ok(k),
                (None, _) => Err(TargetError::Permanent(
                    "statements.create returned no key and the new row cannot be found by its match email".into(),
                )),
            };
        }
        let mut p = Params::new(self.dialect, t);
        let mut cols = Vec::new();
        let mut phs = Vec::new();
        for (col, v) in values {
            cols.push(self.q(col));
            phs.push(p.push(Some(col), self.sql_value(v, at)));
        }
        if let Some(lc) = &u.link_column {
            cols.push(self.q(lc));
            phs.push(p.push(Some(lc), SqlValue::Text(scim_id.to_owned())));
        }
        let key_text = self.dialect.as_text(&self.q(&u.key));
        let base = format!("INSERT INTO {} ({}) VALUES ({})", self.q(&u.table), cols.join(", "), phs.join(", "));
        if u.key_mapped {
            tx.exec(&base, &p.values).await?;
            return values
                .iter()
                .find(|(c, _)| *c == u.key)
                .and_then(|(_, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .ok_or_else(|| {
                    TargetError::Permanent(format!(
                        "the key column {:?} is mapped but the user has no value for it",
                        u.key
                    ))
                });
        }
        let key = match self.dialect {
            Dialect::Mysql => {
                tx.exec(&base, &p.values).await?;
                tx.query("SELECT CAST(LAST_INSERT_ID() AS CHAR)", &[])
                    .await?
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next().flatten())
            }
            _ => tx
                .query(&format!("{base} RETURNING {key_text}"), &p.values)
                .await?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten()),
        };
        key.ok_or_else(|| {
            TargetError::Permanent(format!("the database returned no key for the new row of {}", u.table))
        })
    }

    async fn block(
        &self,
        tx: &mut Tx,
        t: Option<&HashMap<String, String>>,
        key: &str,
        e: &super::Entry,
        named: &HashMap<&str, SqlValue>,
    ) -> Result<(), TargetError> {
        if let Some(c) = &self.statements.block {
            self.run_custom(tx, c, named).await?;
            return Ok(());
        }
        // The blocked representation: the mapping of this user as if `active` were false.
        let mut blocked = e.state.clone();
        blocked.insert("active".into(), Value::Bool(false));
        let at = e.at.as_str();
        let values = self.user_values(&blocked, &e.resource_id);
        let flags: Vec<&str> =
            self.users.columns.iter().filter(|c| c.source.is_flag()).map(|c| c.name.as_str()).collect();
        if flags.is_empty() {
            return Err(TargetError::Permanent(format!(
                "delete_policy is \"block\" but no column of {} is mapped from active (e.g. blocked = \"!active\") and no statements.block is set",
                self.users.table
            )));
        }
        let is_flag = |c: &str| flags.contains(&c);
        let mut p = Params::new(self.dialect, t);
        let sets = self.set_clauses(&mut p, &values, Some(&is_flag), at);
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

    async fn apply_group(
        &self,
        tx: &mut Tx,
        types: &Types,
        w: &Work<'_>,
        links: &Links,
    ) -> Result<Applied, TargetError> {
        let Some(g) = &self.groups else {
            return Ok(Applied { key: None, outcome: "ignored", detail: "groups = \"ignore\"".into() });
        };
        let e = &w.entry;
        let gt = types.get(&g.table);
        let mt = types.get(&g.member_table);
        let name = e.state.get("displayName").and_then(Value::as_str).unwrap_or_default().to_owned();
        // Find the group row: link, link column, then the same name.
        let mut key = w.link.clone();
        if key.is_none()
            && let Some(lc) = &g.link_column
        {
            key = self.keys_where(tx, gt, &g.table, &g.key, lc, &e.resource_id, false).await?.into_iter().next();
        }
        if key.is_none() {
            let keys = self.keys_where(tx, gt, &g.table, &g.key, &g.name_column, &name, true).await?;
            if keys.len() > 1 {
                return Err(TargetError::Permanent(format!(
                    "{} rows of {} are named {name:?} (keys {}); not guessing",
                    keys.len(),
                    g.table,
                    keys.join(", ")
                )));
            }
            if let Some(k) = keys.first() {
                super::check_unclaimed(links, w.claims, e.tenant, &e.resource_id, k)?;
            }
            key = keys.into_iter().next();
        }
        if e.op == Op::Delete {
            let Some(key) = key else {
                return Ok(Applied { key: None, outcome: "absent", detail: "no downstream group to remove".into() });
            };
            self.delete_where(tx, mt, &g.member_table, &g.member_group_column, &key).await?;
            self.delete_where(tx, gt, &g.table, &g.key, &key).await?;
            return Ok(Applied { key: None, outcome: "deleted", detail: String::new() });
        }
        let (key, outcome) = match key {
            Some(k) => {
                let mut p = Params::new(self.dialect, gt);
                let mut sets = vec![format!(
                    "{} = {}",
                    self.q(&g.name_column),
                    p.push(Some(&g.name_column), SqlValue::Text(name.clone()))
                )];
                if let Some(lc) = &g.link_column {
                    sets.push(format!("{} = {}", self.q(lc), p.push(Some(lc), SqlValue::Text(e.resource_id.clone()))));
                }
                let kph = p.push(Some(&g.key), SqlValue::Text(k.clone()));
                tx.exec(
                    &format!("UPDATE {} SET {} WHERE {} = {kph}", self.q(&g.table), sets.join(", "), self.q(&g.key)),
                    &p.values,
                )
                .await?;
                (k, if w.link.is_some() { "updated" } else { "linked" })
            }
            None => {
                let mut p = Params::new(self.dialect, gt);
                let mut cols = vec![self.q(&g.name_column)];
                let mut phs = vec![p.push(Some(&g.name_column), SqlValue::Text(name.clone()))];
                if let Some(lc) = &g.link_column {
                    cols.push(self.q(lc));
                    phs.push(p.push(Some(lc), SqlValue::Text(e.resource_id.clone())));
                }
                let base =
                    format!("INSERT INTO {} ({}) VALUES ({})", self.q(&g.table), cols.join(", "), phs.join(", "));
                let k = match self.dialect {
                    Dialect::Mysql => {
                        tx.exec(&base, &p.values).await?;
                        tx.query("SELECT CAST(LAST_INSERT_ID() AS CHAR)", &[]).await?
                    }
                    _ => {
                        tx.query(&format!("{base} RETURNING {}", self.dialect.as_text(&self.q(&g.key))), &p.values)
                            .await?
                    }
                }
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())
                .ok_or_else(|| {
                    TargetError::Permanent(format!("the database returned no key for the new row of {}", g.table))
                })?;
                (k, "created")
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
                let user_key = match links.get(&(e.tenant, id.clone())) {
                    Some(l) if l.kind == Kind::User => &l.key,
                    _ => {
                        if add {
                            skipped.push(id.clone());
                        }
                        continue;
                    }
                };
                self.membership(tx, mt, &key, user_key, add, &e.resource_id).await?;
                changes.push(format!("{}{id}", if add { "+" } else { "-" }));
            }
        }
        let mut detail = if changes.is_empty() { String::new() } else { format!("members {}", changes.join(" ")) };
        if !skipped.is_empty() {
            detail.push_str(&format!("; not provisioned here, left out: {}", skipped.join(" ")));
        }
        Ok(Applied { key: Some(key), outcome, detail })
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
            let named: HashMap<&str, SqlValue> = [
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

struct Affected(u64);

impl Affected {
    fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

fn placeholder_entry(scim_id: &str) -> super::Entry {
    super::Entry {
        seq: 0,
        tenant: crate::staging::TenantId(0),
        kind: Kind::User,
        resource_id: scim_id.to_owned(),
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
    fn custom_statement_parameters() {
        let c = parse_custom(
            Dialect::Postgres,
            "UPDATE e SET x = CAST(:key AS integer), y = ':not', z = :email::text",
            &["key", "email"],
        )
        .unwrap();
        assert_eq!(c.sql, "UPDATE e SET x = CAST(CAST($1 AS TEXT) AS integer), y = ':not', z = CAST($2 AS TEXT)::text");
        assert_eq!(c.params, ["key", "email"]);
        let c = parse_custom(Dialect::Mysql, "CALL block_employee(:key)", &["key"]).unwrap();
        assert_eq!((c.sql.as_str(), c.params.len()), ("CALL block_employee(?)", 1));
        let e = parse_custom(Dialect::Mysql, "CALL x(:nope)", &["key"]).map(|_| ()).unwrap_err();
        assert!(e.contains(":nope"), "{e}");
    }
}
