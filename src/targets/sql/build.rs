//! Building a SQL target from its configuration: the connection URL (from the file, a secret file or the
//! environment), checked identifiers, parsed mapping expressions and custom statements. Everything that
//! can be known wrong before connecting is refused here, naming the key.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::config::{ColumnSpec, GroupsConfig, SqlTargetConfig};
use super::db::{Db, Dialect, check_ident};
use super::{Column, Custom, CustomStatements, Groups, SqlTarget, Users};
use crate::mapping::Source;
use crate::scim::schema::Kind;
use crate::targets::{BuildError, bad};

fn resolve_url(cfg: &SqlTargetConfig) -> Result<String, BuildError> {
    match (&cfg.url, &cfg.url_file, &cfg.url_env) {
        (Some(u), None, None) => Ok(u.clone()),
        (None, Some(f), None) => std::fs::read_to_string(f)
            .map(|s| s.trim().to_owned())
            .map_err(|e| bad("url_file", format!("cannot read {}: {e}", f.display()))),
        (None, None, Some(var)) => {
            std::env::var(var).map_err(|_| bad("url_env", format!("the environment variable {var} is not set")))
        }
        _ => Err(bad("url", "give exactly one of url, url_file and url_env")),
    }
}

fn ident(key: &str, ident: &str) -> Result<(), BuildError> {
    check_ident(ident).map_err(|e| bad(key, e))
}

/// Replaces `:name` parameters (outside quotes, not `::` casts) with the dialect's placeholders.
pub(super) fn parse_custom(dialect: Dialect, sql: &str, allowed: &[&str]) -> Result<Custom, String> {
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

fn columns(cfg: &SqlTargetConfig) -> Result<Vec<Column>, BuildError> {
    let mut columns = Vec::new();
    for (name, spec) in &cfg.users.columns {
        let key = format!("users.columns.{name}");
        ident(&key, name)?;
        let (source, flag) = match spec {
            ColumnSpec::Source(expr) => (Source::parse(Kind::User, expr), None),
            ColumnSpec::Bool(b) => (Ok(Source::Const(Value::Bool(*b))), None),
            ColumnSpec::Int(i) => (Ok(Source::Const(Value::from(*i))), None),
            ColumnSpec::Float(f) => (Ok(Source::Const(Value::from(*f))), None),
            ColumnSpec::Flag(f) => {
                (Source::parse(Kind::User, &f.from), Some((f.when_true.clone(), f.when_false.clone())))
            }
        };
        let source = source.map_err(|e| bad(&key, e))?;
        if flag.is_some() && !source.is_boolean() {
            return Err(bad(key, "a flag table's `from` must be a boolean attribute such as \"!active\""));
        }
        columns.push(Column { name: name.clone(), source, flag });
    }
    Ok(columns)
}

fn groups(cfg: &SqlTargetConfig) -> Result<Option<Groups>, BuildError> {
    let GroupsConfig::Table(g) = &cfg.groups else { return Ok(None) };
    for (key, value) in [
        ("groups.table", &g.table),
        ("groups.key", &g.key),
        ("groups.name_column", &g.name_column),
        ("groups.member_table", &g.member_table),
        ("groups.member_group_column", &g.member_group_column),
        ("groups.member_user_column", &g.member_user_column),
    ] {
        ident(key, value)?;
    }
    if let Some(l) = &g.link_column {
        ident("groups.link_column", l)?;
    }
    Ok(Some(Groups {
        table: g.table.clone(),
        key: g.key.clone(),
        name_column: g.name_column.clone(),
        link_column: g.link_column.clone(),
        member_table: g.member_table.clone(),
        member_group_column: g.member_group_column.clone(),
        member_user_column: g.member_user_column.clone(),
    }))
}

impl SqlTarget {
    /// Builds the target from its configuration, checking identifiers, mapping expressions and custom
    /// statements. Nothing connects yet.
    ///
    /// # Errors
    /// The offending key below `[[target]]` and what is wrong with it.
    pub fn from_config(cfg: &SqlTargetConfig) -> Result<SqlTarget, BuildError> {
        let url = resolve_url(cfg)?;
        let (db, dialect) =
            Db::new(&url, cfg.max_connections, Duration::from_secs(cfg.timeout_seconds)).map_err(|e| bad("url", e))?;
        let u = &cfg.users;
        for (key, value) in [("users.table", &u.table), ("users.key", &u.key)] {
            ident(key, value)?;
        }
        if let Some(m) = &u.match_column {
            ident("users.match_column", m)?;
        }
        if let Some(l) = &u.link_column {
            ident("users.link_column", l)?;
        }
        let columns = columns(cfg)?;
        let key_mapped = columns.iter().any(|c| c.name == u.key);
        let mut user_params: Vec<&str> = vec!["key", "scim_id", "user_name", "match_email"];
        user_params.extend(columns.iter().map(|c| c.name.as_str()));
        let member_params = ["group_key", "user_key", "scim_id"];
        let s = &cfg.statements;
        let custom = |key: &str, sql: &Option<String>, allowed: &[&str]| -> Result<Option<Custom>, BuildError> {
            sql.as_deref()
                .map(|q| parse_custom(dialect, q, allowed).map_err(|e| bad(format!("statements.{key}"), e)))
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
            groups: groups(cfg)?,
            statements,
            catalog: OnceCell::new(),
            max_connections: cfg.max_connections.max(1) as usize,
            timeout: Duration::from_secs(cfg.timeout_seconds),
        })
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
