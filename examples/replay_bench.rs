//! Replay throughput into PostgreSQL with `config.toml.example`'s own schema (its commented DDL, indexes
//! included) and its own `crm` target, into a fresh database on 127.0.0.1:5432:
//! - creates, then updates, staged first and then replayed by the daemon's real replay workers (catch-up);
//! - end to end: creates through HTTP at concurrency 16 while replay runs beside them (ingestion and
//!   replay rates together, the case where both compete for the staging database).
//!
//!     cargo run --release --example replay_bench -- [--users 10000]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap ends the run

use std::time::{Duration, Instant};

use scim_bridge::config::Config;
use serde_json::json;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const EXAMPLE: &str = include_str!("../config.toml.example");

/// The example's commented `CREATE …;` statements (the schema the example target is written for).
fn example_ddl() -> Vec<String> {
    let section = EXAMPLE.split("# Targets. Example").nth(1).expect("the example's Targets section");
    let section = section.split("[[target]]").next().expect("DDL before the target");
    let text: String = section
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The example configuration with its database URL, staging file and log level replaced; `bound` keeps the
/// example tenant bound to the `crm` target.
fn example_config(url: &str, staging: &std::path::Path, bound: bool) -> String {
    let mut text = EXAMPLE
        .replace("url = \"postgres://scim_bridge@127.0.0.1:5432/crm\"", &format!("url = \"{url}\""))
        .replace("path = \"scim-bridge-data/staging.db\"", &format!("path = {:?}", staging.display().to_string()))
        .replace("level = \"info\"", "level = \"warn\"")
        // Replay's speed is measured, not the rate limit's.
        .replace(
            "rate_limit = { requests_per_second = 50.0, burst = 200 }",
            "rate_limit = { requests_per_second = 1e9, burst = 1000000 }",
        );
    if !bound {
        // No worker for "crm" while staging: a worker of a target with no tenant bound moves its cursor
        // past the entries, which would then never be replayed.
        text = text
            .replace("targets = [\"crm\"]", "targets = []")
            .replace("type = \"sql\"\nname = \"crm\"", "type = \"sql\"\nname = \"staging-only\"");
    }
    text
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

async fn caught_up(staging: &std::path::Path) {
    loop {
        let (head, at) = progress(staging);
        if at >= head {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the daemon with replay bound and reports how fast it catches up with the journal.
async fn replay(label: &str, bound: &str, staging: &std::path::Path, n: usize) {
    let (head, from) = progress(staging);
    let started = Instant::now();
    let d = start(bound).await;
    caught_up(staging).await;
    let secs = started.elapsed().as_secs_f64();
    println!("replay {label:<8} {n} changes (journal {from}..{head}) in {secs:.2} s: {:.0} changes/s", n as f64 / secs);
    stop(d).await;
}

/// Sends `n` creates (or, with `ids`, PATCHes of those users' title) at concurrency 16.
async fn stage(d: &Daemon, token: &str, range: std::ops::Range<usize>, ids: &mut Vec<String>, update: bool) {
    let client = reqwest::Client::new();
    let mut next = range.start;
    while next < range.end {
        let mut batch = Vec::new();
        for i in next..(next + 16).min(range.end) {
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
                        let body = json!({"userName": name, "active": true, "name": {"givenName": "Bench", "familyName": format!("User {i}")},
                            "phoneNumbers": [{"type": "mobile", "value": format!("+31 6 {i:08}")}]});
                        c.post(format!("{b}/Users")).bearer_auth(&t).header("content-type", "application/scim+json").body(body.to_string()).send().await
                    }
                }
                .expect("request");
                assert!(resp.status().is_success(), "{}", resp.status());
                let v: serde_json::Value = resp.json().await.expect("json");
                v["id"].as_str().map(str::to_owned)
            }));
        }
        for h in batch {
            let id = h.await.expect("task");
            if !update {
                ids.push(id.expect("id"));
            }
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
    let ddl = example_ddl();
    for statement in &ddl {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    let dir = std::path::PathBuf::from("target/bench-data/replay");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let staging = dir.join("staging.db");
    let (_, token) = scim_bridge::staging::rotate_token(&staging, "entra-prod").expect("token");
    // Staged with the tenant bound to nothing and no worker for the target (so its cursor stays at the
    // start), then replayed on its own.
    let unbound = example_config(&url, &staging, false);
    let bound = example_config(&url, &staging, true);
    println!(
        "scim-bridge replay bench: {n} users into PostgreSQL database {db}, config.toml.example's schema ({} statements) and target",
        ddl.len()
    );
    let mut ids = Vec::new();
    let d = start(&unbound).await;
    stage(&d, &token, 0..n, &mut ids, false).await;
    stop(d).await;
    replay("creates", &bound, &staging, n).await;
    let d = start(&unbound).await;
    stage(&d, &token, 0..n, &mut ids, true).await;
    stop(d).await;
    replay("updates", &bound, &staging, n).await;

    // End to end: creates arrive while replay runs.
    let d = start(&bound).await;
    let started = Instant::now();
    stage(&d, &token, n..2 * n, &mut ids, false).await;
    let ingest = started.elapsed().as_secs_f64();
    caught_up(&staging).await;
    let total = started.elapsed().as_secs_f64();
    println!(
        "end to end: {n} creates over HTTP at c=16 in {ingest:.2} s ({:.0}/s) while replaying; all replayed after {total:.2} s ({:.0} rows/s)",
        n as f64 / ingest,
        n as f64 / total
    );
    stop(d).await;

    let rows: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM employees").fetch_one(&pool).await.expect("count");
    println!("rows in employees: {}", rows.0);
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)"))).execute(&admin).await.expect("drop");
}
