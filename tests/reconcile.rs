//! Reconciliation end to end, with the real binary: users and groups provisioned through SCIM into the
//! machine's PostgreSQL and MariaDB and a SQLite file (and slapd, in tests/reconcile_ldap.rs), then the
//! target drifted behind the daemon's back. The exact dry-run plan is asserted (and that it changed
//! nothing), then applied while the daemon runs, then a second run must plan nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::path::Path;

use common::bin::{self, post, until};
use common::db::{Backend, TestDb};
use serde_json::{Value, json};

fn target(url: &str, orphans: &str) -> String {
    format!(
        r#"
[[target]]
type = "sql"
name = "crm"
url = "{url}"
timeout_seconds = 5

[target.reconcile]
orphans = "{orphans}"
max_blocks = 5

[target.users]
table = "employees"
key = "id"
match_column = "email"
link_column = "scim_id"

[target.users.columns]
email = "@match_email"
first_name = "name.givenName"
title = "title"
blocked = {{ from = "!active", true = "Y", false = "N" }}

[target.groups]
table = "teams"
key = "id"
name_column = "name"
member_table = "team_members"
member_group_column = "team_id"
member_user_column = "employee_id"
"#
    )
}

fn user(name: &str, given: &str, title: &str) -> Value {
    json!({"userName": name, "active": true, "title": title, "name": {"givenName": given, "familyName": "X"}})
}

async fn reconcile(dir: &Path, cfg: &str, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["reconcile", "--json", "--config", cfg];
    all.extend(args);
    let o = bin::run(dir, &all).await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let doc: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), doc[0].clone())
}

async fn snapshot(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.rows(&format!("SELECT email, first_name, title, {}, scim_id FROM employees ORDER BY email", db.t("blocked")))
        .await
}

async fn drift_and_repair(backend: Backend) {
    let db = TestDb::create(backend).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    // The application's own account, never provisioned: counted, never touched.
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('admin@crm.local', 'Local', 'N')").await;
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(
        dir.path(),
        &format!("[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n{}", target(&db.url, "block")),
    );
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for (name, given, title) in [
        ("ann", "Ann", "CEO"),
        ("bob", "Bob", "Buyer"),
        ("carol", "Carol", "Clerk"),
        ("dan", "Dan", "Dev"),
        ("eve", "Eve", "Eng"),
        ("fay", "Fay", "Fin"),
    ] {
        let r = post(&d, &token, "/Users", &user(&format!("{name}@example.com"), given, title)).await;
        assert_eq!(r.status(), 201);
        ids.insert(name, r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    bin::replace(&d, &token, &format!("/Users/{}", ids["carol"]), "active", json!(false)).await;
    let members: Vec<Value> = ["ann", "bob"].iter().map(|n| json!({"value": ids[n]})).collect();
    assert_eq!(post(&d, &token, "/Groups", &json!({"displayName": "Sales", "members": members})).await.status(), 201);
    // fay leaves the IdP: deleted in SCIM, blocked downstream by the default policy.
    let r = reqwest::Client::new()
        .delete(format!("{}/Users/{}", d.base, ids["fay"]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    until("everything replayed", async || {
        db.rows("SELECT 1 FROM team_members").await.len() == 2
            && db
                .rows(&format!("SELECT 1 FROM employees WHERE email = 'fay@example.com' AND {} = 'Y'", db.t("blocked")))
                .await
                .len()
                == 1
    })
    .await;
    let (ok, doc) = reconcile(dir.path(), &cfg, &["--dry-run"]).await;
    assert!(ok, "{doc}");
    assert_eq!(bin::plan_actions(&doc), Vec::<String>::new(), "in sync after replay: {doc}");
    assert_eq!(doc["plan"]["foreign"].as_array().unwrap().len(), 1, "the local admin is listed: {doc}");

    // Drift behind the daemon's back.
    db.exec("DELETE FROM employees WHERE email = 'dan@example.com'").await;
    db.exec("UPDATE employees SET title = 'Janitor' WHERE email = 'bob@example.com'").await;
    db.exec("UPDATE employees SET blocked = 'N' WHERE email = 'carol@example.com'").await;
    db.exec("UPDATE employees SET blocked = 'Y' WHERE email = 'eve@example.com'").await;
    db.exec("UPDATE employees SET scim_id = NULL WHERE email = 'ann@example.com'").await;
    db.exec("UPDATE employees SET blocked = 'N' WHERE email = 'fay@example.com'").await;
    db.exec("DELETE FROM team_members WHERE employee_id = (SELECT id FROM employees WHERE email = 'bob@example.com')")
        .await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('intruder@crm.local', 'Who', 'N')").await;
    let before = snapshot(&db).await;

    let (ok, doc) = reconcile(dir.path(), &cfg, &["--dry-run"]).await;
    assert!(ok, "{doc}");
    assert_eq!(
        bin::plan_actions(&doc),
        [
            "add_member Sales".to_owned(),
            "block carol".into(),
            "create dan".into(),
            format!("orphan {} block", ids["fay"]),
            "unblock eve".into(),
            "update ann scim_id".into(),
            "update bob title".into(),
        ],
        "{doc}"
    );
    let bob =
        doc["plan"]["actions"].as_array().unwrap().iter().find(|a| a["name"] == "bob@example.com").unwrap().clone();
    assert_eq!(bob["changes"][0], json!({"field": "title", "old": "Janitor", "new": "Buyer"}));
    assert_eq!(doc["plan"]["foreign"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(snapshot(&db).await, before, "a dry run changes nothing");

    let (ok, doc) = reconcile(dir.path(), &cfg, &[]).await;
    assert!(ok, "{doc}");
    assert_eq!(doc["status"], "done", "{doc}");
    let rows = snapshot(&db).await;
    let row = |email: &str| rows.iter().find(|r| r[0].as_deref() == Some(email)).unwrap().clone();
    assert_eq!(row("ann@example.com")[4].as_deref(), Some(ids["ann"].as_str()), "link column restored");
    assert_eq!(row("bob@example.com")[2].as_deref(), Some("Buyer"));
    assert_eq!(row("carol@example.com")[3].as_deref(), Some("Y"));
    assert_eq!(row("dan@example.com")[1].as_deref(), Some("Dan"), "created again");
    assert_eq!(row("eve@example.com")[3].as_deref(), Some("N"));
    assert_eq!(row("fay@example.com")[3].as_deref(), Some("Y"), "the orphan is blocked again (orphans = \"block\")");
    assert_eq!(
        row("intruder@crm.local"),
        [Some("intruder@crm.local".into()), Some("Who".into()), None, Some("N".into()), None]
    );
    assert_eq!(db.rows("SELECT 1 FROM team_members").await.len(), 2);
    let audit =
        bin::staging_rows(dir.path(), "SELECT DISTINCT request_id FROM audit WHERE request_id LIKE 'reconcile-%'");
    assert_eq!(audit, [[format!("reconcile-{}", doc["run"])]], "applied actions are audited under the run id");

    let (ok, doc) = reconcile(dir.path(), &cfg, &["--dry-run"]).await;
    assert!(ok, "{doc}");
    assert_eq!(bin::plan_actions(&doc), Vec::<String>::new(), "a second run plans nothing: {doc}");
    let runs = bin::text(&bin::run(dir.path(), &["runs", "--config", &cfg]).await);
    assert!(runs.contains("manual (dry run)") && runs.contains(": done"), "{runs}");
    let status = bin::text(&bin::run(dir.path(), &["status", "--config", &cfg]).await);
    assert!(status.contains("target crm: last reconciliation: run"), "{status}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_planned_and_repaired_in_postgres() {
    drift_and_repair(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_planned_and_repaired_in_mariadb() {
    drift_and_repair(Backend::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_planned_and_repaired_in_sqlite() {
    drift_and_repair(Backend::Sqlite).await;
}

/// A tenant bound to the target after its users were staged: replay only carries changes made from then
/// on, and one run brings the earlier users across. Before it, the linking report says what will happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_bound_late_is_brought_across_by_one_run() {
    let db = TestDb::create(Backend::Sqlite).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('old@example.com', 'Old', 'N')").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('twin@example.com', 'T1', 'N')").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('twin@example.com', 'T2', 'N')").await;
    let dir = tempfile::tempdir().unwrap();
    let unbound = format!(
        "[[tenant]]\nname = \"early\"\ntargets = [\"crm\"]\n[[tenant]]\nname = \"late\"\n{}",
        target(&db.url, "report")
    );
    let config = bin::config(dir.path(), &unbound);
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "late").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    for (name, given) in [("old", "Olivia"), ("new1", "N1"), ("new2", "N2"), ("twin", "Tw")] {
        assert_eq!(post(&d, &token, "/Users", &user(&format!("{name}@example.com"), given, "T")).await.status(), 201);
    }
    until("replay went past the late tenant's changes", async || {
        bin::staging_rows(
            dir.path(),
            "SELECT 1 FROM replay_cursor WHERE target = 'crm' AND last_seq >= (SELECT MAX(seq) FROM journal)",
        )
        .len()
            == 1
    })
    .await;
    // Bind it, and reload.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("name = \"late\"\n", "name = \"late\"\ntargets = [\"crm\"]\n");
    std::fs::write(&config, text).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status();
    d.wait_for_line("replay workers restarted").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(db.rows("SELECT 1 FROM employees").await.len(), 3, "replay brought nothing across");

    let o = bin::run(dir.path(), &["reconcile", "--link-report", "--config", &cfg]).await;
    let said = bin::text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("4 user(s): 0 already linked, 1 with exactly one match, 1 with several, 2 with none"),
        "{said}"
    );
    assert!(said.contains("several  late         twin@example.com <twin@example.com> -> "), "{said}");

    let (ok, doc) = reconcile(dir.path(), &cfg, &["--tenant", "late"]).await;
    assert!(ok, "{doc}");
    assert_eq!(bin::plan_actions(&doc), ["ambiguous twin", "create new1", "create new2", "link old"], "{doc}");
    assert_eq!(
        db.rows("SELECT email, first_name FROM employees WHERE scim_id IS NOT NULL ORDER BY email").await,
        [
            [Some("new1@example.com".into()), Some("N1".into())],
            [Some("new2@example.com".into()), Some("N2".into())],
            [Some("old@example.com".into()), Some("Olivia".into())]
        ]
    );
    let (_, doc) = reconcile(dir.path(), &cfg, &["--tenant", "late", "--dry-run"]).await;
    assert_eq!(
        bin::plan_actions(&doc),
        ["ambiguous twin"],
        "only the ambiguity is left, for a person to resolve: {doc}"
    );
    for (args, needle) in [
        (vec!["reconcile", "--target", "nosuch"], "no target is named \"nosuch\""),
        (vec!["reconcile", "--tenant", "nosuch"], "no tenant is named \"nosuch\""),
        (vec!["runs", "--target", "nosuch"], "no target is named \"nosuch\""),
    ] {
        let mut args = args;
        args.extend(["--config", &cfg]);
        let o = bin::run(dir.path(), &args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(bin::text(&o).contains(needle), "{}", bin::text(&o));
    }
    d.stop().await;
}

/// After the CRM was restored from an old backup in which everyone is active, a run would block most
/// accounts: the safety limit stops it before it changes anything, records why, and `--force` passes it.
/// A run started while another holds the target is refused, naming that run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_limit_stops_a_mass_block_and_force_passes_it() {
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n{}", target(&db.url, "report"))
        .replace("max_blocks = 5", "max_blocks = \"20%\"");
    let config = bin::config(dir.path(), &text);
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    for n in 0..10 {
        let r = post(&d, &token, "/Users", &user(&format!("u{n}@example.com"), "U", "T")).await;
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        if n < 8 {
            bin::replace(&d, &token, &format!("/Users/{id}"), "active", json!(false)).await;
        }
    }
    until("blocked downstream", async || db.rows("SELECT 1 FROM employees WHERE blocked = 'Y'").await.len() == 8).await;
    db.exec("UPDATE employees SET blocked = 'N'").await;

    let (ok, doc) = reconcile(dir.path(), &cfg, &[]).await;
    assert!(!ok, "exit code 1 when stopped");
    assert_eq!(doc["status"], "stopped", "{doc}");
    let detail = doc["detail"].as_str().unwrap();
    assert!(
        detail.contains("would block 8 account(s)")
            && detail.contains("max_blocks = 20%")
            && detail.contains("--force"),
        "{detail}"
    );
    assert_eq!(db.rows("SELECT 1 FROM employees WHERE blocked = 'Y'").await.len(), 0, "nothing changed");
    let runs = bin::text(&bin::run(dir.path(), &["runs", "--config", &cfg]).await);
    assert!(runs.contains(": stopped") && runs.contains("would block 8"), "{runs}");

    // Another process holds the target (a scheduled run in the daemon takes the same lease).
    let store = scim_bridge::staging::open_ledger(&dir.path().join("data/staging.db")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let held = store.start_run("crm", "schedule", false, "the daemon, pid 1", now).await.unwrap().unwrap();
    let o = bin::run(dir.path(), &["reconcile", "--force", "--config", &cfg]).await;
    assert_eq!(o.status.code(), Some(1));
    let said = bin::text(&o);
    assert!(said.contains(&format!("in progress (run {held}, the daemon, pid 1)")), "{said}");
    store.finish_run(held, scim_bridge::staging::ledger::RunStatus::Done, &Default::default(), None).await.unwrap();

    let (ok, doc) = reconcile(dir.path(), &cfg, &["--force"]).await;
    assert!(ok, "{doc}");
    assert_eq!(doc["applied"], 8, "{doc}");
    assert_eq!(db.rows("SELECT 1 FROM employees WHERE blocked = 'Y'").await.len(), 8);
    d.stop().await;
}

/// With `[target.reconcile] schedule`, the daemon runs reconciliation by itself and repairs drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_its_schedule() {
    let db = TestDb::create(Backend::Sqlite).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    let dir = tempfile::tempdir().unwrap();
    // Every two seconds (six fields: seconds first).
    let text = format!("[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n{}", target(&db.url, "report"))
        .replace("max_blocks = 5", "max_blocks = 5\nschedule = \"*/2 * * * * *\"");
    let config = bin::config(dir.path(), &text);
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    assert_eq!(post(&d, &token, "/Users", &user("gus@example.com", "Gus", "Guard")).await.status(), 201);
    until("replayed", async || db.rows("SELECT 1 FROM employees").await.len() == 1).await;
    db.exec("UPDATE employees SET title = 'Drifted'").await;
    until("repaired by a scheduled run", async || {
        db.rows("SELECT 1 FROM employees WHERE title = 'Guard'").await.len() == 1
    })
    .await;
    let runs = bin::text(&bin::run(dir.path(), &["runs", "--config", &cfg]).await);
    assert!(runs.contains("crm schedule started"), "{runs}");
    d.wait_for_line("reconciliation finished").await;
    d.stop().await;
}

/// Tables larger than a page are read whole, in key order (a regression: PostgreSQL sorted the text of
/// the key, and the keyset skipped rows).
async fn large_table_read_whole(backend: Backend) {
    let db = TestDb::create(backend).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD COLUMN scim_id VARCHAR(64)").await;
    let n = 4_500;
    let concat = if backend == Backend::Mariadb { "CONCAT('u', x, '@x')" } else { "'u' || x || '@x'" };
    // Four digits crossed (MariaDB stops recursion at 1,000 rows).
    db.exec(&format!(
        "INSERT INTO employees (email, blocked) WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 9)
         SELECT {concat}, 'N' FROM (SELECT a.n * 1000 + b.n * 100 + c.n * 10 + e.n AS x FROM d a, d b, d c, d e) s WHERE x < {n}"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(
        dir.path(),
        &format!("[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n{}", target(&db.url, "report")),
    );
    let (ok, doc) = reconcile(dir.path(), &config.display().to_string(), &["--dry-run"]).await;
    assert!(ok, "{doc}");
    let foreign = doc["plan"]["foreign"].as_array().unwrap();
    assert_eq!(foreign.len(), n, "every row read once");
    let keys: std::collections::HashSet<&str> = foreign.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_tables_are_read_whole() {
    for backend in [Backend::Postgres, Backend::Mariadb, Backend::Sqlite] {
        large_table_read_whole(backend).await;
    }
}
