//! The database connection behind the SQL target: PostgreSQL and MySQL/MariaDB through sqlx's Any driver,
//! SQLite files through rusqlite. Everything is a bound parameter; identifiers are validated and quoted.
//! Values are bound as text for PostgreSQL and cast in SQL to the column's type (learned from the catalog),
//! so one binding path serves integer, boolean, date and text columns alike.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::targets::TargetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl SqlValue {
    pub fn from_json(v: &serde_json::Value) -> SqlValue {
        match v {
            serde_json::Value::Null => SqlValue::Null,
            serde_json::Value::Bool(b) => SqlValue::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Int(i),
                None => SqlValue::Float(n.as_f64().unwrap_or_default()),
            },
            serde_json::Value::String(s) => SqlValue::Text(s.clone()),
            other => SqlValue::Text(other.to_string()),
        }
    }

    fn as_text(&self) -> Option<String> {
        match self {
            SqlValue::Null => None,
            SqlValue::Bool(b) => Some(b.to_string()),
            SqlValue::Int(i) => Some(i.to_string()),
            SqlValue::Float(f) => Some(f.to_string()),
            SqlValue::Text(s) => Some(s.clone()),
        }
    }
}

/// A checked identifier (`name` or `schema.name`): letters, digits and `_`, not starting with a digit.
/// Quoted on use, so reserved words are fine; anything else is refused at configuration time.
pub fn check_ident(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.split('.').count() <= 2
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a plain SQL identifier (letters, digits, '_', optionally schema.name)"))
    }
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::Mysql),
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }

    /// Quotes a checked identifier.
    pub fn quote(self, ident: &str) -> String {
        let q = if self == Dialect::Mysql { '`' } else { '"' };
        ident.split('.').map(|p| format!("{q}{p}{q}")).collect::<Vec<_>>().join(".")
    }

    /// The placeholder for parameter `n` (1-based). PostgreSQL parameters are text cast to `cast` (the
    /// column's type) when given.
    pub fn param(self, n: usize, cast: Option<&str>) -> String {
        match (self, cast) {
            (Dialect::Postgres, Some(t)) => format!("CAST(CAST(${n} AS TEXT) AS {t})"),
            (Dialect::Postgres, None) => format!("CAST(${n} AS TEXT)"),
            (Dialect::Mysql, _) => "?".into(),
            (Dialect::Sqlite, _) => format!("?{n}"),
        }
    }

    /// An expression reading a column as text, so that results decode the same way for every type.
    pub fn as_text(self, expr: &str) -> String {
        match self {
            Dialect::Mysql => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS TEXT)"),
        }
    }
}

/// Builds a statement's parameter list in textual order, with PostgreSQL casts to column types.
pub struct Params<'a> {
    dialect: Dialect,
    types: Option<&'a std::collections::HashMap<String, String>>,
    pub values: Vec<SqlValue>,
    placeholders: Vec<String>,
}

impl<'a> Params<'a> {
    pub fn new(dialect: Dialect, types: Option<&'a std::collections::HashMap<String, String>>) -> Self {
        Params { dialect, types, values: Vec::new(), placeholders: Vec::new() }
    }

    /// Adds a value destined for `column` and returns its placeholder.
    pub fn push(&mut self, column: Option<&str>, v: SqlValue) -> String {
        self.values.push(v);
        let cast = match (self.dialect, column) {
            (Dialect::Postgres, Some(c)) => self.types.and_then(|t| t.get(c)).map(String::as_str),
            _ => None,
        };
        let ph = self.dialect.param(self.values.len(), cast);
        self.placeholders.push(ph.clone());
        ph
    }

    /// Every placeholder handed out, in order (the VALUES list of an INSERT).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.placeholders.iter().map(String::as_str)
    }
}

/// A connection pool (or, for SQLite, one connection) to the target database.
#[derive(Clone)]
pub enum Db {
    Any(sqlx::AnyPool),
    Sqlite(Arc<Mutex<Option<rusqlite::Connection>>>, PathBuf),
}

static DRIVERS: Once = Once::new();

impl Db {
    /// Prepares a pool; nothing connects until first use, so a database that is down at start delays
    /// replay instead of preventing the daemon from starting.
    pub fn new(url: &str, max_connections: u32, timeout: Duration) -> Result<(Db, Dialect), String> {
        let dialect = Dialect::from_url(url)
            .ok_or_else(|| "the URL must start with postgres://, mysql://, mariadb:// or sqlite:".to_owned())?;
        if dialect == Dialect::Sqlite {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            if path.is_empty() {
                return Err("a sqlite: URL needs a file path, e.g. sqlite:///var/lib/app/app.db".into());
            }
            return Ok((Db::Sqlite(Arc::new(Mutex::new(None)), PathBuf::from(path)), dialect));
        }
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let url = if dialect == Dialect::Mysql && url.starts_with("mariadb:") {
            url.replacen("mariadb:", "mysql:", 1)
        } else {
            url.to_owned()
        };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_lazy(&url)
            .map_err(|e| format!("invalid database URL: {e}"))?;
        Ok((Db::Any(pool), dialect))
    }

    /// Where the database is, for messages: `host:port`, or the SQLite file.
    pub fn endpoint(&self) -> String {
        match self {
            Db::Any(pool) => {
                let url = &pool.connect_options().database_url;
                let default = if url.scheme().starts_with("postgres") { 5432 } else { 3306 };
                format!("{}:{}", url.host_str().unwrap_or("localhost"), url.port().unwrap_or(default))
            }
            Db::Sqlite(_, path) => path.display().to_string(),
        }
    }

    /// Connects once, outside the pool, so that a database that cannot be reached is reported at once and
    /// with the driver's own reason (connection refused, unknown host, authentication) instead of a pool
    /// timeout.
    ///
    /// # Errors
    /// Transient, naming `host:port` and the reason.
    pub async fn connect_once(&self, timeout: Duration) -> Result<(), TargetError> {
        let pool = match self {
            Db::Any(pool) => pool,
            Db::Sqlite(conn, path) => {
                let mut tx = begin_sqlite(conn, path).await?;
                tx.query("SELECT 1", &[]).await?;
                tx.rollback().await;
                return Ok(());
            }
        };
        let options = pool.connect_options();
        let endpoint = self.endpoint();
        match tokio::time::timeout(timeout, sqlx::ConnectOptions::connect(&*options)).await {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            }
            Ok(Err(e)) => Err(TargetError::transient_from(format!("cannot connect to the database at {endpoint}"), e)),
            Err(_) => Err(TargetError::transient(format!(
                "the database at {endpoint} did not answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, TargetError> {
        match self {
            Db::Any(pool) => {
                let pg = pool.connect_options().database_url.scheme().starts_with("postgres");
                match pool.begin().await {
                    Ok(tx) => Ok(Tx { conn: Conn::Any(Some(tx), pg), trace: Vec::new() }),
                    // The pool only says it waited in vain; a direct attempt says why.
                    Err(sqlx::Error::PoolTimedOut) => match self.connect_once(Duration::from_secs(5)).await {
                        Err(e) => Err(e),
                        Ok(()) => Err(TargetError::transient(format!(
                            "no free connection to the database at {} (all in use)",
                            self.endpoint()
                        ))),
                    },
                    Err(e) => Err(classify_sqlx(e)),
                }
            }
            Db::Sqlite(conn, path) => begin_sqlite(conn, path).await,
        }
    }
}

async fn begin_sqlite(
    conn: &Arc<Mutex<Option<rusqlite::Connection>>>,
    path: &std::path::Path,
) -> Result<Tx, TargetError> {
    let mut guard = conn.clone().lock_owned().await;
    if guard.is_none() {
        let c = blocking(|| {
            rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        })
        .map_err(|e| TargetError::transient_from(format!("cannot open {}", path.display()), e))?;
        c.busy_timeout(Duration::from_secs(5)).map_err(classify_sqlite)?;
        *guard = Some(c);
    }
    let mut tx = SqliteTx { guard, open: false };
    tx.run(|c| c.execute_batch("BEGIN IMMEDIATE")).map_err(classify_sqlite)?;
    tx.open = true;
    Ok(Tx { conn: Conn::Sqlite(tx), trace: Vec::new() })
}

/// Runs blocking SQLite work without stalling other tasks on a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

pub struct SqliteTx {
    guard: OwnedMutexGuard<Option<rusqlite::Connection>>,
    open: bool,
}

impl SqliteTx {
    fn run<T>(&mut self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = self.guard.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
        blocking(|| f(conn))
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open
            && let Some(c) = self.guard.as_ref()
        {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
}

/// The connection of an open transaction.
enum Conn {
    /// `pg`: PostgreSQL, where every parameter is bound as text (see the module comment).
    Any(Option<sqlx::Transaction<'static, sqlx::Any>>, bool),
    Sqlite(SqliteTx),
}

/// An open transaction. Dropping it without `commit` rolls back. It keeps a readable trace of the writes
/// it made (statement and parameter values), for the audit trail and `scim-bridge explain`.
pub struct Tx {
    conn: Conn,
    trace: Vec<String>,
}

/// A statement without the casts PostgreSQL's binding adds (`CAST(CAST($1 AS TEXT) AS integer)` → `$1`).
fn uncast(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("CAST(CAST(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "CAST(CAST(".len()..];
        let inner = after.find(" AS TEXT) AS ").and_then(|j| {
            // The type may hold parentheses of its own (numeric(10,2)): find the one that closes the cast.
            let tail = &after[j + " AS TEXT) AS ".len()..];
            let mut depth = 0;
            tail.char_indices()
                .find_map(|(k, c)| match c {
                    '(' => {
                        depth += 1;
                        None
                    }
                    ')' if depth == 0 => Some(k),
                    ')' => {
                        depth -= 1;
                        None
                    }
                    _ => None,
                })
                .map(|k| (&after[..j], &tail[k + 1..]))
        });
        match inner {
            Some((param, tail)) => {
                out.push_str(param);
                rest = tail;
            }
            None => {
                out.push_str("CAST(CAST(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A statement with its parameter values, as `explain` shows it.
fn readable(sql: &str, params: &[SqlValue]) -> String {
    let values: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let shown = match v {
                SqlValue::Null => "NULL".to_owned(),
                SqlValue::Text(s) if s.chars().count() > 200 => {
                    format!("{:?}…", s.chars().take(200).collect::<String>())
                }
                SqlValue::Text(s) => format!("{s:?}"),
                other => other.as_text().unwrap_or_default(),
            };
            format!("#{} = {shown}", i + 1)
        })
        .collect();
    let sql = uncast(&sql.split_whitespace().collect::<Vec<_>>().join(" "));
    if values.is_empty() { sql } else { format!("{sql}  [{}]", values.join(", ")) }
}

/// Whether a statement writes (reads are not traced).
fn writes(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or_default().to_ascii_uppercase();
    !matches!(head.as_str(), "SELECT" | "WITH R")
}

fn to_rusqlite(v: &SqlValue) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        SqlValue::Null => V::Null,
        SqlValue::Bool(b) => V::Integer(i64::from(*b)),
        SqlValue::Int(i) => V::Integer(*i),
        SqlValue::Float(f) => V::Real(*f),
        SqlValue::Text(s) => V::Text(s.clone()),
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &[SqlValue],
    all_text: bool,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for p in params {
        q = if all_text {
            q.bind(p.as_text())
        } else {
            match p {
                SqlValue::Null => q.bind(Option::<String>::None),
                SqlValue::Bool(b) => q.bind(i64::from(*b)),
                SqlValue::Int(i) => q.bind(*i),
                SqlValue::Float(f) => q.bind(*f),
                SqlValue::Text(s) => q.bind(s.clone()),
            }
        };
    }
    q
}

impl Tx {
    /// The writes traced since the last call.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    fn any(&mut self) -> Result<&mut sqlx::Transaction<'static, sqlx::Any>, TargetError> {
        match &mut self.conn {
            Conn::Any(Some(t), _) => Ok(t),
            _ => Err(TargetError::transient("transaction already finished")),
        }
    }

    /// Runs a query; every result column is read as optional text.
    pub async fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<Option<String>>>, TargetError> {
        if writes(sql) {
            self.trace.push(readable(sql, params));
        }
        match &mut self.conn {
            Conn::Sqlite(tx) => {
                let params: Vec<rusqlite::types::Value> = params.iter().map(to_rusqlite).collect();
                tx.run(|c| {
                    let mut stmt = c.prepare_cached(sql)?;
                    let n = stmt.column_count();
                    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => None,
                                    rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                                    rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                        Some(String::from_utf8_lossy(t).into_owned())
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })?;
                    rows.collect()
                })
                .map_err(classify_sqlite)
            }
            Conn::Any(_, pg) => {
                let pg = *pg;
                let tx = self.any()?;
                // Identifiers in `sql` are checked and quoted, values are bound: the text is safe by construction.
                let rows = bind_all(sqlx::query(AssertSqlSafe(sql.to_owned())), params, pg)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(classify_sqlx)?;
                rows.iter().map(|r| (0..r.len()).map(|i| any_text(r, i)).collect()).collect()
            }
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub async fn exec(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, TargetError> {
        self.trace.push(readable(sql, params));
        match &mut self.conn {
            Conn::Sqlite(tx) => {
                let params: Vec<rusqlite::types::Value> = params.iter().map(to_rusqlite).collect();
                tx.run(|c| c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter())))
                    .map(|n| n as u64)
                    .map_err(classify_sqlite)
            }
            Conn::Any(_, pg) => {
                let pg = *pg;
                let tx = self.any()?;
                let r = bind_all(sqlx::query(AssertSqlSafe(sql.to_owned())), params, pg)
                    .execute(&mut **tx)
                    .await
                    .map_err(classify_sqlx)?;
                Ok(r.rows_affected())
            }
        }
    }

    pub async fn commit(self) -> Result<(), TargetError> {
        match self.conn {
            Conn::Any(Some(t), _) => t.commit().await.map_err(classify_sqlx),
            Conn::Any(None, _) => Ok(()),
            Conn::Sqlite(mut tx) => {
                let r = tx.run(|c| c.execute_batch("COMMIT")).map_err(classify_sqlite);
                if r.is_ok() {
                    tx.open = false;
                }
                r
            }
        }
    }

    pub async fn rollback(self) {
        match self.conn {
            Conn::Any(Some(t), _) => {
                let _ = t.rollback().await;
            }
            Conn::Any(None, _) => {}
            Conn::Sqlite(tx) => drop(tx),
        }
    }
}

/// A result column as text. Generated statements cast to text already; custom statements (a `create` that
/// returns its new integer key) may not.
fn any_text(r: &sqlx::any::AnyRow, i: usize) -> Result<Option<String>, TargetError> {
    if let Ok(v) = r.try_get::<Option<String>, _>(i) {
        return Ok(v);
    }
    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
        return Ok(v.map(|n| n.to_string()));
    }
    if let Ok(v) = r.try_get::<Option<i32>, _>(i) {
        return Ok(v.map(|n| n.to_string()));
    }
    if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
        return Ok(v.map(|n| n.to_string()));
    }
    r.try_get::<Option<bool>, _>(i).map(|v| v.map(|b| b.to_string())).map_err(|e| {
        TargetError::permanent_from(format!("result column {i} cannot be read as text; CAST it in the statement"), e)
    })
}

/// Transient: the database is unreachable, restarting, or the statement lost a lock race. Permanent: the
/// statement itself is refused (constraint, type, syntax): retrying the same change will not help.
fn classify_sqlx(e: sqlx::Error) -> TargetError {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            TargetError::transient_from("the connection to the database failed", e)
        }
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let msg = db.message().to_owned();
            let transient = code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // admin shutdown, cannot connect now
                || code == "40001" || code == "40P01" // serialization failure, deadlock
                || code == "55P03" // lock not available
                || code.starts_with("28") // authentication: the target's settings, not this change
                || code == "3D000" // the database does not exist (yet)
                // The target as a whole is unfit right now, not this change: a replica after failover
                // (read-only), a statement timeout, an application migration in progress (missing table or
                // column), revoked privileges.
                || code == "25006" || code == "57014" || code == "42P01" || code == "42703" || code == "42501"
                || msg.contains("Lock wait timeout") || msg.contains("Deadlock found")
                || msg.contains("Access denied") || msg.contains("Unknown database")
                || msg.contains("read-only") || msg.contains("read only") || msg.contains("doesn't exist")
                || msg.contains("Unknown column") || msg.contains("command denied");
            let text = if code.is_empty() { msg } else { format!("{msg} (SQLSTATE {code})") };
            if transient { TargetError::transient(text) } else { TargetError::permanent(text) }
        }
        _ => TargetError::permanent_from("the database refused the statement", e),
    }
}

fn classify_sqlite(e: rusqlite::Error) -> TargetError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::SystemIoFailure | C::DiskFull) => {
            TargetError::transient_from("the SQLite database is busy or unavailable", e)
        }
        _ => TargetError::permanent_from("SQLite refused the statement", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert!(check_ident("employees").is_ok());
        assert!(check_ident("crm.employees").is_ok());
        for bad in ["", "a b", "x;drop", "1abc", "a.b.c", "\"x\"", "a-b"] {
            assert!(check_ident(bad).is_err(), "{bad}");
        }
        assert_eq!(Dialect::Postgres.quote("crm.employees"), "\"crm\".\"employees\"");
        assert_eq!(Dialect::Mysql.quote("employees"), "`employees`");
    }

    #[test]
    fn traces_read_without_binding_casts() {
        assert_eq!(
            uncast(
                "UPDATE t SET a = CAST(CAST($1 AS TEXT) AS numeric(10,2)), b = CAST(CAST($2 AS TEXT) AS character varying) WHERE id = CAST(CAST($3 AS TEXT) AS integer)"
            ),
            "UPDATE t SET a = $1, b = $2 WHERE id = $3"
        );
        assert_eq!(
            readable("INSERT INTO t (a) VALUES (?1)", &[SqlValue::Text("x".into())]),
            "INSERT INTO t (a) VALUES (?1)  [#1 = \"x\"]"
        );
    }

    #[test]
    fn placeholders_per_dialect() {
        assert_eq!(Dialect::Postgres.param(2, Some("integer")), "CAST(CAST($2 AS TEXT) AS integer)");
        assert_eq!(Dialect::Mysql.param(2, None), "?");
        assert_eq!(Dialect::Sqlite.param(2, None), "?2");
    }
}
