//! Reconciliation at scale: USERS (default 100,000) users staged, then `scim-bridge reconcile` (the real
//! binary, as a child process) against PostgreSQL and against slapd, after replay brought every user
//! across: a run with nothing to do, and a run repairing 1% drift. Prints each run's time and the child's
//! peak RSS. A benchmark, not a test: run it with
//!
//!     cargo test --release --test reconcile_bench -- --ignored --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::bin::BIN;
use common::db::{Backend, TestDb};
use common::slapd::{ADMIN_DN, ADMIN_PW, SUFFIX, Slapd};
use ldap3::{LdapConnAsync, Mod, Scope, SearchEntry};
use serde_json::{Value, json};

/// Runs `scim-bridge reconcile --json` and returns (seconds, peak RSS in MiB, counts).
async fn timed(dir: &Path, cfg: &str) -> (f64, u64, Value) {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(BIN)
        .args(["reconcile", "--json", "--config", cfg])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0;
    let mut stdout = child.stdout.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out).await.unwrap();
        out
    });
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib / 1024);
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "reconcile failed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = reader.await.unwrap();
    let doc: Value = serde_json::from_slice(&out).unwrap();
    (started.elapsed().as_secs_f64(), peak, doc[0]["counts"].clone())
}

async fn stage(dir: &Path, n: usize) -> String {
    let staging = dir.join("data/staging.db");
    let (_, token) = scim_bridge::staging::rotate_token(&staging, "bench").unwrap();
    let text = format!(
        "[server]\nrate_limit = {{ requests_per_second = 1e9, burst = 1000000 }}\n[staging]\npath = {:?}\n[log]\nlevel = \"warn\"\n[[tenant]]\nname = \"bench\"\n",
        staging.display().to_string()
    );
    let config = scim_bridge::config::Config::parse(&text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/scim/v2", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scim_bridge::daemon::run(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    let client = reqwest::Client::new();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let calls: Vec<_> = chunk
            .iter()
            .map(|i| {
                let body = json!({"userName": format!("user{i}@bench.example"), "title": "Staff", "active": true,
                    "name": {"givenName": "Bench", "familyName": format!("User {i}")}});
                client
                    .post(format!("{base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
            })
            .collect();
        for c in futures_util::future::join_all(calls).await {
            assert_eq!(c.unwrap().status(), 201);
        }
    }
    println!("staged {n} users in {:.1} s", started.elapsed().as_secs_f64());
    let _ = stop.send(());
    task.await.unwrap();
    text
}

/// Runs the daemon on `config` until `target` has replayed the whole journal; prints how long it took.
async fn replay(config: &Path, target: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let config = scim_bridge::config::Config::parse(&text).unwrap();
    let staging = config.staging.path.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scim_bridge::daemon::run(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    let started = Instant::now();
    loop {
        let c = rusqlite::Connection::open(&staging).unwrap();
        let done: bool = c
            .query_row(
                "SELECT COALESCE((SELECT last_seq FROM replay_cursor WHERE target = ?1), 0) >= (SELECT MAX(seq) FROM journal)",
                [target],
                |r| r.get(0),
            )
            .unwrap();
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{:<28} {:>7.2} s", format!("replayed into {target}"), started.elapsed().as_secs_f64());
    let _ = stop.send(());
    task.await.unwrap();
}

fn report(what: &str, (secs, rss, counts): &(f64, u64, Value)) {
    println!("{what:<28} {secs:>7.2} s   peak RSS {rss:>4} MiB   {counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn reconcile_at_scale() {
    let n: usize = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let head = stage(dir.path(), n).await;

    // PostgreSQL.
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    db.exec("CREATE INDEX employees_email ON employees (LOWER(email))").await;
    db.exec("CREATE INDEX employees_scim_id ON employees (scim_id)").await;
    let pg = format!(
        "{}targets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"{}\"\n[target.reconcile]\nmax_blocks = 0\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\nlink_column = \"scim_id\"\n\
         [target.users.columns]\nemail = \"@match_email\"\nfirst_name = \"name.givenName\"\nlast_name = \"name.familyName\"\ntitle = \"title\"\n\
         blocked = {{ from = \"!active\", true = \"Y\", false = \"N\" }}\n",
        head, db.url
    );
    let cfg = dir.path().join("pg.toml");
    std::fs::write(&cfg, pg).unwrap();
    let cfg = cfg.display().to_string();
    println!("reconciliation of {n} users against PostgreSQL:");
    replay(Path::new(&cfg), "crm").await;
    let rows =
        db.one(&format!("SELECT {}, {} FROM employees", db.t("COUNT(*)"), db.t("COUNT(DISTINCT scim_id)"))).await;
    assert_eq!(rows, [Some(n.to_string()), Some(n.to_string())], "every user replayed once");
    report("no change", &timed(dir.path(), &cfg).await);
    db.exec("UPDATE employees SET title = 'Drifted' WHERE id % 100 = 0").await;
    let drift = timed(dir.path(), &cfg).await;
    report("1% drift repaired", &drift);
    assert_eq!(drift.2["update"], n as u64 / 100);

    // slapd.
    let slapd = Slapd::start();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PW).unwrap();
    let ldap = format!(
        "{}targets = [\"dir\"]\n[[target]]\ntype = \"ldap\"\nname = \"dir\"\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = {:?}\n\
         [target.reconcile]\nmax_blocks = 0\n[target.users]\nbase_dn = \"ou=people,{SUFFIX}\"\nrdn = \"uid={{userName}}\"\n\
         [target.users.attributes]\ncn = \"{{name.givenName}} {{name.familyName}}\"\nsn = \"name.familyName\"\nmail = \"@match_email\"\ntitle = \"title\"\n",
        head.replace("targets = [\"crm\"]\n", ""),
        slapd.url(),
        pw.display().to_string()
    );
    let cfg = dir.path().join("ldap.toml");
    std::fs::write(&cfg, ldap).unwrap();
    let cfg = cfg.display().to_string();
    println!("reconciliation of {n} users against slapd:");
    replay(Path::new(&cfg), "dir").await;
    report("no change", &timed(dir.path(), &cfg).await);
    let (conn, mut l) = LdapConnAsync::new(&slapd.url()).await.unwrap();
    ldap3::drive!(conn);
    l.simple_bind(ADMIN_DN, ADMIN_PW).await.unwrap().success().unwrap();
    for i in (0..n).step_by(100) {
        let dn = format!("uid=user{i}@bench.example,ou=people,{SUFFIX}");
        l.modify(&dn, vec![Mod::Replace("title", ["Drifted"].into())]).await.unwrap().success().unwrap();
    }
    let drift = timed(dir.path(), &cfg).await;
    report("1% drift repaired", &drift);
    assert_eq!(drift.2["update"], n as u64 / 100);
    let (rs, _) = l
        .search(&format!("ou=people,{SUFFIX}"), Scope::OneLevel, "(title=Drifted)", vec!["1.1"])
        .await
        .unwrap()
        .success()
        .unwrap();
    assert!(rs.into_iter().map(SearchEntry::construct).next().is_none(), "every drifted entry repaired");
}
