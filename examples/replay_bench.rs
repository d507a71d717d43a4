//! Replay throughput into PostgreSQL: 10,000 creates, then 10,000 updates, staged first and then replayed
//! by the daemon's real replay workers into a fresh database on 127.0.0.1:5432.
//!
//!     cargo run --release --example replay_bench -- [--users 10000]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap ends the run

use std::time::{Duration, Instant};

use scim_bridge::config::Config;
use serde_json::json;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn target(url: &str) -> String {
    format!(
        r#"
[[target]]
type = "sql"
name = "crm"
url = "{url}"
max_connections = 4

[target.users]
table = "employees"
key = "id"
match_column = "email"

[target.users.columns]
email = "@match_email"
first_name = "name.givenName"
last_name = "name.familyName"
full_name = "{{name.givenName}} {{name.familyName}}"
title = "title"
blocked = {{ from = "!active", true = "Y", false = "N" }}
"#
    )
}

struct Daemon {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(text: &str) -> Daemon {
    let config = Config::parse(text).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/scim/v2", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scim_bridge::daemon::run(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("daemon");
    });
    Daemon { base, stop, task }
}

async fn stop(d: Daemon) {
    let _ = d.stop.send(());
    d.task.await.expect("daemon task");
}

fn progress(staging: &std::path::Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(staging).expect("staging");
    c.query_row(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM journal), (SELECT COALESCE(MAX(last_seq), 0) FROM replay_cursor WHERE target = 'crm')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("progress")
}

/// Starts the daemon with replay bound and reports how fast it catches up with the journal.
async fn replay(label: &str, staged: &str, bound: &str, staging: &std::path::Path, n: usize) {
    let (head, from) = progress(staging);
    let started = Instant::now();
    let d = start(bound).await;
    loop {
        let (_, at) = progress(staging);
        if at >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("replay {label:<8} {n} changes (journal {from}..{head}) in {secs:.2} s: {:.0} changes/s", n as f64 / secs);
    stop(d).await;
    let _ = staged;
}

async fn stage(d: &Daemon, token: &str, n: usize, ids: &mut Vec<String>, update: bool) {
    let client = reqwest::Client::new();
    let mut next = 0usize;
    while next < n {
        let mut batch = Vec::new();
        for i in next..(next + 16).min(n) {
            let (c, b, t) = (client.clone(), d.base.clone(), token.to_owned());
            let id = ids.get(i).cloned();
            batch.push(tokio::spawn(async move {
                let resp = match id {
                    Some(id) if update => {
                        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "Replace", "path": "title", "value": format!("Title {i}")}]});
                        c.patch(format!("{b}/Users/{id}")).bearer_auth(&t).header("content-type", "application/scim+json").body(body.to_string()).send().await
                    }
                    _ => {
                        let name = format!("user{i}@bench.example");
                        let body = json!({"userName": name, "active": true, "name": {"givenName": "Bench", "familyName": format!("User {i}")}});
                        c.post(format!("{b}/Users")).bearer_auth(&t).header("content-type", "application/scim+json").body(body.to_string()).send().await
                    }
                }
                .expect("request");
                assert!(resp.status().is_success(), "{}", resp.status());
                let v: serde_json::Value = resp.json().await.expect("json");
                v["id"].as_str().map(str::to_owned)
            }));
        }
        for (k, h) in batch.into_iter().enumerate() {
            let id = h.await.expect("task");
            if !update {
                ids.push(id.expect("id"));
            }
            let _ = k;
        }
        next += 16;
    }
}

#[tokio::main]
async fn main() {
    let mut n = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--users" => n = args.next().and_then(|v| v.parse().ok()).expect("--users takes a number"),
            other => panic!("unknown argument {other}"),
        }
    }
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(PG_ADMIN).await.expect("PostgreSQL on 127.0.0.1:5432");
    let db = format!("scimb_bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}"))).execute(&admin).await.expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&admin).await.expect("create");
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let pool = sqlx::AnyPool::connect(&url).await.expect("bench db");
    sqlx::query(
        "CREATE TABLE employees (id SERIAL PRIMARY KEY, email VARCHAR(320) NOT NULL, first_name TEXT, last_name TEXT,
         full_name TEXT, title TEXT, blocked CHAR(1) NOT NULL DEFAULT 'N')",
    )
    .execute(&pool)
    .await
    .expect("table");
    sqlx::query("CREATE INDEX employees_email ON employees (LOWER(email))").execute(&pool).await.expect("index");

    let dir = std::path::PathBuf::from("target/bench-data/replay");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let staging = dir.join("staging.db");
    let head = format!("[staging]\npath = {:?}\n[log]\nlevel = \"warn\"\n", staging.display().to_string());
    let (_, token) = scim_bridge::staging::rotate_token(&staging, "bench").expect("token");
    // Staged with no target configured (so no replay cursor moves), then replayed on its own.
    let unbound = format!("{head}[[tenant]]\nname = \"bench\"\n");
    let bound = format!("{head}[[tenant]]\nname = \"bench\"\ntargets = [\"crm\"]\n{}", target(&url));
    println!("scim-bridge replay bench: {n} users into PostgreSQL database {db}");
    let mut ids = Vec::new();
    let d = start(&unbound).await;
    stage(&d, &token, n, &mut ids, false).await;
    stop(d).await;
    replay("creates", &unbound, &bound, &staging, n).await;
    let d = start(&unbound).await;
    stage(&d, &token, n, &mut ids, true).await;
    stop(d).await;
    replay("updates", &unbound, &bound, &staging, n).await;
    let rows: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM employees").fetch_one(&pool).await.expect("count");
    println!("rows in employees: {}", rows.0);
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)"))).execute(&admin).await.expect("drop");
}
