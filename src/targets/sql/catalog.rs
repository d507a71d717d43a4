//! What the SQL target learns from the database's catalog: the configured tables and columns exist, their
//! types (PostgreSQL casts need them), which text columns compare case-insensitively (MySQL `_ci`
//! collations), and whether the columns replay searches by are indexed. Without those indexes every new
//! user is a scan of the application's table: replay of 10,000 creates into PostgreSQL ran at 360 rows/s
//! without them and 2,500 with them.

use std::collections::{HashMap, HashSet};

use super::SqlTarget;
use super::db::{Db, Dialect, SqlValue};
use crate::targets::TargetError;

/// Columns per table (with their types), learned once.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<String, HashMap<String, String>>,
    /// (table, column) of text columns whose collation ignores case.
    folded: HashSet<(String, String)>,
}

impl Catalog {
    /// The column types of a table.
    pub fn get(&self, table: &str) -> Option<&HashMap<String, String>> {
        self.tables.get(table)
    }

    /// Whether the database itself compares this column case-insensitively, so that an equality needs no
    /// LOWER() on either side (and can use a plain index).
    pub fn folds(&self, table: &str, column: &str) -> bool {
        self.folded.contains(&(table.to_owned(), column.to_owned()))
    }
}

/// One column as the catalog describes it.
struct ColumnInfo {
    name: String,
    ty: String,
    collation: Option<String>,
}

fn split_table(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, table),
    }
}

async fn columns(db: &Db, dialect: Dialect, table: &str) -> Result<Vec<ColumnInfo>, TargetError> {
    let (schema, name) = split_table(table);
    let mut tx = db.begin().await?;
    let rows = match dialect {
        Dialect::Postgres => {
            tx.query(
                "SELECT a.attname::text, format_type(a.atttypid, NULL), NULL FROM pg_attribute a
                 WHERE a.attrelid = to_regclass(CAST($1 AS TEXT)) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[SqlValue::Text(dialect.quote(table))],
            )
            .await?
        }
        Dialect::Mysql => {
            let sql = format!(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(collation_name AS CHAR)
                 FROM information_schema.columns WHERE table_schema = {} AND table_name = ? ORDER BY ordinal_position",
                if schema.is_some() { "?" } else { "DATABASE()" }
            );
            let mut params: Vec<SqlValue> = schema.map(|s| SqlValue::Text(s.to_owned())).into_iter().collect();
            params.push(SqlValue::Text(name.to_owned()));
            tx.query(&sql, &params).await?
        }
        Dialect::Sqlite => {
            tx.query("SELECT name, type, NULL FROM pragma_table_info(?1)", &[SqlValue::Text(name.to_owned())]).await?
        }
    };
    tx.rollback().await;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            r.resize(3, None);
            ColumnInfo {
                name: r[0].take().unwrap_or_default(),
                ty: r[1].take().unwrap_or_default(),
                collation: r[2].take(),
            }
        })
        .collect())
}

/// The leading key of each index of a table, normalised (`email`, `lower(email)`).
async fn index_heads(db: &Db, dialect: Dialect, table: &str) -> Result<Vec<String>, TargetError> {
    let (schema, name) = split_table(table);
    let mut tx = db.begin().await?;
    let heads = match dialect {
        Dialect::Postgres => {
            let rows = tx
                .query(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = CAST($1 AS TEXT)
                     AND schemaname = COALESCE(CAST($2 AS TEXT), current_schema())",
                    &[SqlValue::Text(name.to_owned()), schema.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()))],
                )
                .await?;
            rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).filter_map(|def| first_key(&def)).collect()
        }
        Dialect::Mysql => {
            let sql = format!(
                "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics WHERE table_schema = {}
                 AND table_name = ? AND seq_in_index = 1 AND column_name IS NOT NULL",
                if schema.is_some() { "?" } else { "DATABASE()" }
            );
            let mut params: Vec<SqlValue> = schema.map(|s| SqlValue::Text(s.to_owned())).into_iter().collect();
            params.push(SqlValue::Text(name.to_owned()));
            let rows = tx.query(&sql, &params).await?;
            rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).map(|c| normalise(&c)).collect()
        }
        Dialect::Sqlite => {
            // Column indexes (including those behind PRIMARY KEY and UNIQUE) by name; expression indexes
            // from their CREATE statement.
            let rows = tx
                .query(
                    "SELECT ii.name, m.sql FROM pragma_index_list(?1) il JOIN pragma_index_xinfo(il.name) ii
                     LEFT JOIN sqlite_master m ON m.type = 'index' AND m.name = il.name WHERE ii.seqno = 0",
                    &[SqlValue::Text(name.to_owned())],
                )
                .await?;
            rows.into_iter()
                .filter_map(|mut r| {
                    r.resize(2, None);
                    match (r[0].take(), r[1].take()) {
                        (Some(col), _) => Some(normalise(&col)),
                        (None, Some(sql)) => first_key(&sql),
                        (None, None) => None,
                    }
                })
                .collect()
        }
    };
    tx.rollback().await;
    Ok(heads)
}

/// The first key of an index definition `… ON table [USING method] (key, …)`, normalised.
fn first_key(def: &str) -> Option<String> {
    let open = def.find(" (").or_else(|| def.find('('))?;
    let inner = def[open..].trim_start();
    let inner = inner.strip_prefix('(')?;
    let mut depth = 0i32;
    let mut end = inner.len();
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                end = i;
                break;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    Some(normalise(&inner[..end]))
}

/// A key without quotes, casts, parentheses, spaces or case: `lower((email)::text)` and `LOWER("email")`
/// are both `loweremail`.
fn normalise(key: &str) -> String {
    let mut k = key.to_lowercase().replace(['"', '`'], "");
    for cast in ["::text", "::character varying", "::varchar", " collate nocase"] {
        k = k.replace(cast, "");
    }
    k.chars().filter(|c| !c.is_whitespace() && *c != '(' && *c != ')').collect()
}

/// An index replay relies on, and whether the database has it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexAdvice {
    /// The setting that makes replay search by it (`users.match_column`).
    pub key: &'static str,
    pub table: String,
    /// The searched expression, as replay writes it (`lower(email)`, `scim_id`).
    pub expression: String,
    pub present: bool,
    /// The statement that creates it, for this database.
    pub create: String,
}

impl SqlTarget {
    /// Reads the catalog: every configured table and column must exist.
    pub(super) async fn read_catalog(&self) -> Result<Catalog, TargetError> {
        let mut catalog = Catalog::default();
        for (table, cols) in self.wanted_columns() {
            let found = columns(&self.db, self.dialect, table).await?;
            if found.is_empty() {
                return Err(TargetError::transient(format!("table {table:?} does not exist (or has no columns)")));
            }
            for (col, key) in cols {
                if !found.iter().any(|c| c.name == col) {
                    return Err(TargetError::transient(format!(
                        "{key}: column {col:?} does not exist in table {table:?}"
                    )));
                }
            }
            for c in &found {
                if c.collation.as_deref().is_some_and(|co| co.ends_with("_ci")) {
                    catalog.folded.insert((table.to_owned(), c.name.clone()));
                }
            }
            catalog.tables.insert(table.to_owned(), found.into_iter().map(|c| (c.name, c.ty)).collect());
        }
        Ok(catalog)
    }

    /// The indexes replay's lookups need, and whether each exists: the match column (on its lowered form
    /// where the database compares case-sensitively), the link columns, the group name, and both columns of
    /// the membership table.
    ///
    /// # Errors
    /// The database cannot be reached or read.
    pub async fn index_advice(&self) -> Result<Vec<IndexAdvice>, TargetError> {
        let catalog = self.catalog().await?;
        let mut wanted: Vec<(&'static str, &str, &str, bool)> = Vec::new();
        let u = &self.users;
        if let Some(m) = &u.match_column {
            wanted.push(("users.match_column", &u.table, m, true));
        }
        if let Some(l) = &u.link_column {
            wanted.push(("users.link_column", &u.table, l, false));
        }
        if let Some(g) = &self.groups {
            wanted.push(("groups.name_column", &g.table, &g.name_column, true));
            if let Some(l) = &g.link_column {
                wanted.push(("groups.link_column", &g.table, l, false));
            }
            wanted.push(("groups.member_group_column", &g.member_table, &g.member_group_column, false));
            wanted.push(("groups.member_user_column", &g.member_table, &g.member_user_column, false));
        }
        let mut heads: HashMap<&str, Vec<String>> = HashMap::new();
        let mut out = Vec::new();
        for (key, table, column, fold) in wanted {
            if !heads.contains_key(table) {
                heads.insert(table, index_heads(&self.db, self.dialect, table).await?);
            }
            let lowered = fold && !(self.dialect == Dialect::Mysql && catalog.folds(table, column));
            let expression = if lowered { format!("lower({column})") } else { column.to_owned() };
            let present = heads[table].contains(&normalise(&expression));
            let ty = catalog.get(table).and_then(|t| t.get(column)).map(String::as_str).unwrap_or_default();
            out.push(IndexAdvice {
                key,
                table: table.to_owned(),
                expression,
                present,
                create: self.create_index(table, column, lowered, ty),
            });
        }
        Ok(out)
    }

    fn create_index(&self, table: &str, column: &str, lowered: bool, ty: &str) -> String {
        let name = format!("{}_{column}{}_idx", table.replace('.', "_"), if lowered { "_lower" } else { "" });
        let (qt, qc) = (self.q(table), self.q(column));
        match (self.dialect, lowered) {
            // CONCURRENTLY: built without locking out the application's writes.
            (Dialect::Postgres, true) => format!("CREATE INDEX CONCURRENTLY {name} ON {qt} (lower({qc}));"),
            (Dialect::Postgres, false) => format!("CREATE INDEX CONCURRENTLY {name} ON {qt} ({qc});"),
            // A case-sensitive collation: a functional index (MySQL 8.0.13 and later; on MariaDB, give the
            // column a _ci collation instead).
            (Dialect::Mysql, true) => format!("CREATE INDEX {name} ON {qt} ((LOWER({qc})));"),
            (Dialect::Mysql, false) => {
                // TEXT and BLOB columns can only be indexed on a prefix.
                let prefix = if ty.contains("text") || ty.contains("blob") { "(255)" } else { "" };
                format!("CREATE INDEX {name} ON {qt} ({qc}{prefix});")
            }
            (Dialect::Sqlite, true) => format!("CREATE INDEX {name} ON {qt} (lower({qc}));"),
            (Dialect::Sqlite, false) => format!("CREATE INDEX {name} ON {qt} ({qc});"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_are_read_back() {
        assert_eq!(
            first_key("CREATE INDEX e_l ON public.employees USING btree (lower((email)::text))").as_deref(),
            Some("loweremail")
        );
        assert_eq!(
            first_key("CREATE UNIQUE INDEX p ON public.team_members USING btree (team_id, employee_id)").as_deref(),
            Some("team_id")
        );
        assert_eq!(first_key("CREATE INDEX x ON \"employees\" (LOWER(\"email\"))").as_deref(), Some("loweremail"));
        assert_eq!(normalise("lower(email)"), normalise("LOWER( \"email\" )"));
    }
}
