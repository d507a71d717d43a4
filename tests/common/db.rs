//! Test databases on the machine's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306), and SQLite
//! files: one database per test, dropped when the test ends. These tests fail, not skip, when PostgreSQL or
//! MariaDB is missing (scripts/test.sh starts them when installed).

use std::time::Duration;

use sqlx::Row as _;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Backend {
    Postgres,
    Mariadb,
    Sqlite,
}

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub name: String,
    pool: Option<sqlx::AnyPool>,
    _dir: Option<tempfile::TempDir>,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MY_ADMIN: &str = "mysql://root@127.0.0.1:3306/mysql";

async fn admin(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect(url).await.unwrap_or_else(|e| {
        panic!("cannot reach {url}: {e}. These tests need the machine's PostgreSQL and MariaDB running (see README, Tests).")
    })
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        let name = format!("scimb_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        match backend {
            Backend::Postgres => {
                let a = admin(PG_ADMIN).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&a)
                    .await
                    .expect("create database");
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                let pool = admin(&url).await;
                TestDb { backend, url, name, pool: Some(pool), _dir: None }
            }
            Backend::Mariadb => {
                let a = admin(MY_ADMIN).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&a)
                    .await
                    .expect("create database");
                let url = format!("mysql://root@127.0.0.1:3306/{name}");
                let pool = admin(&url).await;
                TestDb { backend, url, name, pool: Some(pool), _dir: None }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("dir");
                let path = dir.path().join("app.db");
                rusqlite::Connection::open(&path).expect("sqlite");
                TestDb { backend, url: format!("sqlite://{}", path.display()), name, pool: None, _dir: Some(dir) }
            }
        }
    }

    pub fn sqlite_path(&self) -> String {
        self.url.trim_start_matches("sqlite://").to_owned()
    }

    pub async fn exec(&self, sql: &str) {
        match &self.pool {
            Some(p) => {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(p)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            None => {
                rusqlite::Connection::open(self.sqlite_path())
                    .expect("open")
                    .execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// Text of a column expression, whatever its type.
    pub fn t(&self, expr: &str) -> String {
        match self.backend {
            Backend::Mariadb => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS TEXT)"),
        }
    }

    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.pool {
            Some(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(p)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .or_else(|_| r.try_get::<Option<i64>, _>(i).map(|v| v.map(|n| n.to_string())))
                                .or_else(|_| r.try_get::<Option<i32>, _>(i).map(|v| v.map(|n| n.to_string())))
                                .expect("a text or integer column")
                        })
                        .collect()
                })
                .collect(),
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).expect("open");
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                            })
                        })
                        .collect()
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
            }
        }
    }

    pub async fn one(&self, sql: &str) -> Vec<Option<String>> {
        let mut rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.remove(0)
    }

    pub async fn create_tables(&self, suffix: &str) {
        let (id, text, ts) = match self.backend {
            Backend::Postgres => ("SERIAL PRIMARY KEY", "TEXT", "TIMESTAMP NULL"),
            Backend::Mariadb => ("INT AUTO_INCREMENT PRIMARY KEY", "TEXT", "DATETIME NULL"),
            Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "TEXT NULL"),
        };
        self.exec(&format!(
            "CREATE TABLE employees{suffix} (id {id}, email VARCHAR(320) NOT NULL, first_name {text}, last_name {text},
             full_name {text}, department {text}, title {text}, notes {text}, blocked CHAR(1) NOT NULL DEFAULT 'N', blocked_at {ts})"
        ))
        .await;
        self.exec(&format!("CREATE TABLE teams{suffix} (id {id}, name VARCHAR(200) NOT NULL)")).await;
        self.exec(&format!(
            "CREATE TABLE team_members{suffix} (team_id INTEGER NOT NULL, employee_id INTEGER NOT NULL, PRIMARY KEY (team_id, employee_id))"
        ))
        .await;
    }
}

/// Every test database is dropped when its test ends, also when the test fails, so that no `scimb_*`
/// database is left behind. Drop cannot await, so a thread with a runtime of its own does the work.
impl Drop for TestDb {
    fn drop(&mut self) {
        let (backend, name) = (self.backend, self.name.clone());
        let sql = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            Backend::Mariadb => format!("DROP DATABASE IF EXISTS {name}"),
            Backend::Sqlite => return,
        };
        let admin_url = if backend == Backend::Postgres { PG_ADMIN } else { MY_ADMIN };
        let pool = self.pool.take();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                if let Some(p) = pool {
                    p.close().await;
                }
                let admin = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await?;
                admin.close().await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {name}: {dropped:?}");
        }
    }
}
