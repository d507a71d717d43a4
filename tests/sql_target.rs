//! The SQL target end to end: real SCIM requests to the daemon, replayed into the real PostgreSQL
//! (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) of this machine and into a SQLite file, asserting on the
//! downstream rows. Each test creates its own database and drops it at the end. PostgreSQL and MariaDB must
//! be running: these tests fail (they do not skip) when they are not.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::time::Duration;

use common::db::{Backend, TestDb};
use common::proxy::Proxy;
use common::{TestServer, expect_ok as send, patch, post_as, replace};
use reqwest::Method;
use serde_json::{Value, json};

fn target_toml(name: &str, url: &str, suffix: &str, policy: &str) -> String {
    format!(
        r#"
[[target]]
type = "sql"
name = "{name}"
url = "{url}"
delete_policy = "{policy}"
timeout_seconds = 2

[target.users]
table = "employees{suffix}"
key = "id"
match_column = "email"

[target.users.columns]
email = "@match_email"
first_name = "name.givenName"
last_name = "name.familyName"
full_name = "{{name.givenName}} {{name.familyName}}"
department = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
title = "title"
notes = "nickName"
blocked = {{ from = "!active", true = "Y", false = "N" }}
blocked_at = {{ from = "!active", true = "NOW", false = "NULL" }}

[target.groups]
table = "teams{suffix}"
key = "id"
name_column = "name"
member_table = "team_members{suffix}"
member_group_column = "team_id"
member_user_column = "employee_id"
"#
    )
}

fn config(db: &TestDb) -> String {
    format!(
        "[replay]\nmax_attempts = 2\nbackoff_initial_ms = 50\nbackoff_max_seconds = 1\n\
         [[tenant]]\nname = \"tenant-a\"\ntargets = [\"crm\"]\n[[tenant]]\nname = \"tenant-b\"\ntargets = [\"crm_del\"]\n\
         [[tenant]]\nname = \"tenant-c\"\ntargets = [\"crm\"]\n{}{}",
        target_toml("crm", &db.url, "", "block"),
        target_toml("crm_del", &db.url, "_d", "delete")
    )
}

fn user(user_name: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": user_name, "active": true,
        "name": {"givenName": given, "familyName": family},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"},
    })
}

async fn scenario(backend: Backend) {
    let db = TestDb::create(backend).await;
    db.create_tables("").await;
    db.create_tables("_d").await;
    // Legacy rows: an employee who already exists, and two rows sharing one address.
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('Ann.Legacy@Example.com', 'Old', 'N')").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('dup@example.com', 'D1', 'N')").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('dup@example.com', 'D2', 'N')").await;
    let ann_key = db.one(&format!("SELECT {} FROM employees WHERE first_name = 'Old'", db.t("id"))).await[0].clone();
    let cfg = config(&db);
    let s = TestServer::start_daemon(&cfg).await;

    // Link by email (case-insensitive), no duplicate.
    let ann = post_as(&s, &s.token, "/Users", &user("ann.legacy@example.com", "Ann", "Lee")).await;
    // Create.
    let bob = post_as(&s, &s.token, "/Users", &user("bob@example.com", "Bob", "Stone")).await;
    s.wait_replayed().await;
    assert_eq!(
        s.staging_rows("SELECT seq, last_error FROM replay_failures"),
        Vec::<Vec<String>>::new(),
        "no change failed"
    );
    let rows = db.rows(&format!("SELECT {}, first_name, full_name, department, {} FROM employees WHERE LOWER(email) = 'ann.legacy@example.com'", db.t("id"), db.t("blocked"))).await;
    assert_eq!(
        rows,
        vec![vec![ann_key.clone(), Some("Ann".into()), Some("Ann Lee".into()), Some("Sales".into()), Some("N".into())]]
    );
    assert_eq!(
        db.one(&format!("SELECT email, full_name, {} FROM employees WHERE first_name = 'Bob'", db.t("blocked"))).await,
        [Some("bob@example.com".into()), Some("Bob Stone".into()), Some("N".into())]
    );

    // Update, block with Entra's "False", stay blocked across another update, unblock.
    replace(&s, &format!("/Users/{bob}"), "title", json!("Buyer")).await;
    replace(&s, &format!("/Users/{bob}"), "active", json!("False")).await;
    s.wait_replayed().await;
    let blocked = db
        .one(&format!(
            "SELECT title, {}, {} FROM employees WHERE first_name = 'Bob'",
            db.t("blocked"),
            db.t("blocked_at")
        ))
        .await;
    assert_eq!(blocked[..2], [Some("Buyer".into()), Some("Y".into())]);
    assert!(blocked[2].is_some(), "blocked_at set: {blocked:?}");
    // The next change must fall in a later second than the block, or "kept" could not be told from "set again".
    wait_past_second(blocked[2].as_deref().unwrap()).await;
    replace(&s, &format!("/Users/{bob}"), "title", json!("Senior Buyer")).await;
    s.wait_replayed().await;
    let still = db
        .one(&format!(
            "SELECT title, {}, {} FROM employees WHERE first_name = 'Bob'",
            db.t("blocked"),
            db.t("blocked_at")
        ))
        .await;
    assert_eq!(
        still,
        [Some("Senior Buyer".into()), Some("Y".into()), blocked[2].clone()],
        "blocked_at kept while blocked"
    );
    replace(&s, &format!("/Users/{bob}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert_eq!(
        db.one(&format!("SELECT {}, {} FROM employees WHERE first_name = 'Bob'", db.t("blocked"), db.t("blocked_at")))
            .await,
        [Some("N".into()), None]
    );

    // Ambiguous match: a dead letter naming both rows; later changes of that user wait; others go on.
    let dup = post_as(&s, &s.token, "/Users", &user("dup@example.com", "Dup", "Licate")).await;
    send(
        &s,
        Method::PATCH,
        &format!("/Users/{dup}"),
        Some(&patch(json!([{"op": "replace", "path": "title", "value": "x"}]))),
    )
    .await;
    let carol = post_as(&s, &s.token, "/Users", &user("carol@example.com", "Carol", "King")).await;
    s.wait_replayed().await;
    let failures = s.staging_rows(&format!(
        "SELECT state, last_error FROM replay_failures WHERE resource_id = '{dup}' ORDER BY seq"
    ));
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0][0], "dead");
    let dup_keys =
        db.rows(&format!("SELECT {} FROM employees WHERE email = 'dup@example.com' ORDER BY id", db.t("id"))).await;
    for k in &dup_keys {
        assert!(failures[0][1].contains(k[0].as_deref().unwrap()), "error names key {k:?}: {}", failures[0][1]);
    }
    assert_eq!(failures[1][0], "waiting");
    assert_eq!(db.rows("SELECT 1 FROM employees WHERE first_name = 'Carol'").await.len(), 1);
    assert_eq!(db.rows("SELECT 1 FROM employees WHERE email = 'dup@example.com'").await.len(), 2, "no third row");

    // Groups: a row per group, a join row per membership.
    let team = post_as(
        &s,
        &s.token,
        "/Groups",
        &json!({"displayName": "Sales Team", "members": [{"value": ann}, {"value": bob}]}),
    )
    .await;
    s.wait_replayed().await;
    let team_key =
        db.one(&format!("SELECT {} FROM teams WHERE name = 'Sales Team'", db.t("id"))).await[0].clone().unwrap();
    assert_eq!(db.rows(&format!("SELECT 1 FROM team_members WHERE team_id = {team_key}")).await.len(), 2);
    send(
        &s,
        Method::PATCH,
        &format!("/Groups/{team}"),
        Some(&patch(json!([{"op": "Remove", "path": format!("members[value eq \"{bob}\"]")}]))),
    )
    .await;
    replace(&s, &format!("/Groups/{team}"), "displayName", json!("Sales EMEA")).await;
    s.wait_replayed().await;
    assert_eq!(
        db.rows(&format!("SELECT {} FROM team_members WHERE team_id = {team_key}", db.t("employee_id"))).await,
        vec![vec![ann_key.clone()]]
    );
    assert_eq!(db.one(&format!("SELECT name FROM teams WHERE id = {team_key}")).await, [Some("Sales EMEA".into())]);

    // Values that would break string-built SQL are stored verbatim.
    let nasty_given = "Robert'); DROP TABLE employees;--";
    let nasty_family = "O\"Brien \\ ; -- /* */ ' OR '1'='1";
    let long = "x".repeat(10_000);
    let mut u = user("nasty@example.com", nasty_given, nasty_family);
    u["nickName"] = json!(long);
    if backend != Backend::Postgres {
        u["title"] = json!("nul\u{0}inside"); // PostgreSQL text cannot hold NUL; see the PostgreSQL test below
    }
    post_as(&s, &s.token, "/Users", &u).await;
    s.wait_replayed().await;
    let row =
        db.one("SELECT first_name, last_name, notes, title FROM employees WHERE email = 'nasty@example.com'").await;
    assert_eq!(row[0].as_deref(), Some(nasty_given));
    assert_eq!(row[1].as_deref(), Some(nasty_family));
    assert_eq!(row[2].as_deref().map(str::len), Some(10_000));
    assert!(row[2].as_deref().is_some_and(|n| n.bytes().all(|b| b == b'x')));
    if backend != Backend::Postgres {
        assert_eq!(row[3].as_deref(), Some("nul\u{0}inside"));
    }

    // A literal "NULL" or "NOW" in user data is data, not a flag placeholder.
    replace(&s, &format!("/Users/{bob}"), "title", json!("NULL")).await;
    s.wait_replayed().await;
    assert_eq!(db.one("SELECT title FROM employees WHERE first_name = 'Bob'").await, [Some("NULL".into())]);

    // Another tenant bound to the same target cannot take over a row linked to tenant-a's user.
    let token_c = s.token_for("tenant-c");
    let intruder = post_as(&s, &token_c, "/Users", &user("carol@example.com", "Mallory", "Intruder")).await;
    s.wait_replayed().await;
    let f = s.staging_rows(&format!("SELECT state, last_error FROM replay_failures WHERE resource_id = '{intruder}'"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0][1].contains("already linked") && f[0][1].contains(&carol), "{}", f[0][1]);
    assert_eq!(
        db.one("SELECT first_name FROM employees WHERE email = 'carol@example.com'").await,
        [Some("Carol".into())]
    );

    // A group as a member of a group: left out of the user join table, and said so.
    let parent =
        post_as(&s, &s.token, "/Groups", &json!({"displayName": "Parent", "members": [{"value": team}]})).await;
    s.wait_replayed().await;
    let detail = s.staging_rows(&format!("SELECT detail FROM audit WHERE resource_id = '{parent}'"));
    assert!(detail[0][0].contains("left out") && detail[0][0].contains(&team), "{detail:?}");

    // DELETE with policy "block": the row stays, blocked.
    send(&s, Method::DELETE, &format!("/Users/{carol}"), None).await;
    s.wait_replayed().await;
    assert_eq!(
        db.one(&format!("SELECT {} FROM employees WHERE first_name = 'Carol'", db.t("blocked"))).await,
        [Some("Y".into())]
    );

    // DELETE with policy "delete" (tenant-b → crm_del): row and memberships removed.
    let token_b = s.token_for("tenant-b");
    let dan = post_as(&s, &token_b, "/Users", &user("dan@example.com", "Dan", "Brown")).await;
    post_as(&s, &token_b, "/Groups", &json!({"displayName": "Ops", "members": [{"value": dan}]})).await;
    s.wait_replayed().await;
    assert_eq!(db.rows("SELECT 1 FROM team_members_d").await.len(), 1);
    let (status, _) = common::send_as(&s, &token_b, Method::DELETE, &format!("/Users/{dan}"), None).await;
    assert_eq!(status, 204);
    s.wait_replayed().await;
    assert!(db.rows("SELECT 1 FROM employees_d").await.is_empty());
    assert!(db.rows("SELECT 1 FROM team_members_d").await.is_empty());
    assert!(
        db.rows("SELECT 1 FROM employees WHERE first_name = 'Dan'").await.is_empty(),
        "tenant-b's changes stay out of tenant-a's target"
    );

    // The audit trail names request, change and outcome.
    let audit = s.staging_rows(&format!("SELECT outcome, downstream_key, request_id FROM audit WHERE target = 'crm' AND resource_id = '{ann}' ORDER BY id"));
    assert_eq!(audit[0][0], "linked");
    assert_eq!(Some(audit[0][1].clone()), ann_key);
    assert_eq!(audit[0][2].len(), 32);

    // Idempotence: deliver every change a second time (as after a crash between applying a batch and
    // recording it), with the users' links forgotten so that they are found again by email: the
    // downstream rows end up exactly the same.
    let dump_sql = format!(
        "SELECT {}, email, first_name, last_name, full_name, department, title, notes, {}, {} FROM employees ORDER BY id",
        db.t("id"),
        db.t("blocked"),
        db.t("blocked_at")
    );
    let before = (
        shorten(db.rows(&dump_sql).await),
        db.rows(&format!("SELECT {}, {} FROM team_members ORDER BY 1, 2", db.t("team_id"), db.t("employee_id"))).await,
    );
    let dir = s.stop().await;
    {
        let c = rusqlite::Connection::open(dir.path().join("staging.db")).unwrap();
        c.execute_batch("UPDATE replay_cursor SET last_seq = 0; DELETE FROM links WHERE kind = 'User';").unwrap();
    }
    let config = scim_bridge::config::Config::parse(&format!(
        "[staging]\npath = {:?}\n{cfg}",
        dir.path().join("staging.db").display().to_string()
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scim_bridge::daemon::run(&config, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    wait_cursor(&dir.path().join("staging.db")).await;
    let after = (
        shorten(db.rows(&dump_sql).await),
        db.rows(&format!("SELECT {}, {} FROM team_members ORDER BY 1, 2", db.t("team_id"), db.t("employee_id"))).await,
    );
    for (b, a) in before.0.iter().zip(&after.0) {
        assert_eq!(b, a, "replaying the journal twice changed a downstream row");
    }
    assert_eq!(before, after, "replaying the journal twice changed the downstream rows");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Waits until the wall clock has left the second that `t` ("YYYY-MM-DD HH:MM:SS", UTC) names.
async fn wait_past_second(t: &str) {
    let t: String = t.chars().take(19).collect();
    loop {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replacen('T', " ", 1);
        if now[..19] > *t {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Long values as their length, so that a failed comparison prints readably.
fn shorten(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| {
            r.into_iter().map(|v| v.map(|s| if s.len() > 100 { format!("<{} chars>", s.len()) } else { s })).collect()
        })
        .collect()
}

async fn wait_cursor(staging: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = rusqlite::Connection::open(staging).unwrap();
        let (head, min): (i64, i64) = c
            .query_row(
                "SELECT (SELECT MAX(seq) FROM journal), (SELECT COALESCE(MIN(last_seq), 0) FROM replay_cursor)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if min >= head {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "replay did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_target() {
    scenario(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_target() {
    scenario(Backend::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_target() {
    scenario(Backend::Sqlite).await;
}

async fn outage(backend: Backend) {
    let db = TestDb::create(backend).await;
    db.create_tables("").await;
    let upstream = if backend == Backend::Postgres { 5432 } else { 3306 };
    let proxy = Proxy::start(0, upstream).await;
    let url = db.url.replace(&format!(":{upstream}/"), &format!(":{}/", proxy.port));
    let cfg = format!(
        "[replay]\nmax_attempts = 2\nbackoff_initial_ms = 50\nbackoff_max_seconds = 1\n[[tenant]]\nname = \"tenant-a\"\ntargets = [\"crm\"]\n{}",
        target_toml("crm", &url, "", "block")
    );
    let s = TestServer::start_daemon(&cfg).await;
    let first = post_as(&s, &s.token, "/Users", &user("first@example.com", "First", "One")).await;
    s.wait_replayed().await;
    assert_eq!(db.rows("SELECT 1 FROM employees").await.len(), 1);

    // The database goes away while changes keep arriving; the IdP is still answered at once.
    let port = proxy.cut();
    for n in 0..5 {
        post_as(&s, &s.token, "/Users", &user(&format!("during{n}@example.com"), "During", &format!("{n}"))).await;
    }
    for title in ["t1", "t2", "t3"] {
        replace(&s, &format!("/Users/{first}"), "title", json!(title)).await;
    }
    replace(&s, &format!("/Users/{first}"), "active", json!("False")).await;
    // Replay has tried and failed at least three times (the recorded health says so) before the check below.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.staging_rows("SELECT 1 FROM target_health WHERE reachable = 0 AND failures >= 3").is_empty() {
        assert!(std::time::Instant::now() < deadline, "replay never found the database unreachable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.rows("SELECT 1 FROM employees").await.len(), 1, "nothing applied while the database is unreachable");
    assert!(
        s.staging_rows("SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty(),
        "an outage never makes dead letters"
    );

    // Back on the same port: everything is applied, in order.
    let _proxy = Proxy::start(port, upstream).await;
    s.wait_replayed().await;
    assert_eq!(db.rows("SELECT 1 FROM employees").await.len(), 6);
    assert_eq!(
        db.one(&format!("SELECT title, {} FROM employees WHERE first_name = 'First'", db.t("blocked"))).await,
        [Some("t3".into()), Some("Y".into())]
    );
    let seqs: Vec<i64> = s
        .staging_rows(&format!(
            "SELECT seq FROM audit WHERE resource_id = '{first}' AND outcome != 'error' ORDER BY id"
        ))
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(seqs.len(), 5, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "applied in order: {seqs:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    outage(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_loses_nothing() {
    outage(Backend::Mariadb).await;
}

/// PostgreSQL text cannot hold NUL: such a change is parked with the database's own explanation instead of
/// being altered silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nul_is_a_clear_dead_letter() {
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    let cfg = format!(
        "[replay]\nmax_attempts = 1\nbackoff_initial_ms = 50\n[[tenant]]\nname = \"tenant-a\"\ntargets = [\"crm\"]\n{}",
        target_toml("crm", &db.url, "", "block")
    );
    let s = TestServer::start_daemon(&cfg).await;
    let mut u = user("nul@example.com", "Nul", "Byte");
    u["title"] = json!("a\u{0}b");
    let id = post_as(&s, &s.token, "/Users", &u).await;
    s.wait_replayed().await;
    let f = s.staging_rows(&format!("SELECT state, last_error FROM replay_failures WHERE resource_id = '{id}'"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0][0], "dead");
    assert!(f[0][1].contains("0x00"), "{}", f[0][1]);
    s.stop().await;
}

/// Replay searches by the match column (lowered where the database compares case-sensitively), the link
/// columns, the group name and both membership columns: each target reports which of them are not indexed,
/// with the statement that creates the index for its database, and the statements work.
async fn downstream_indexes(backend: Backend) {
    let db = TestDb::create(backend).await;
    db.create_tables("").await;
    let cfg =
        format!("[[tenant]]\nname = \"tenant-a\"\ntargets = [\"crm\"]\n{}", target_toml("crm", &db.url, "", "block"));
    let config =
        scim_bridge::config::Config::parse(&format!("[staging]\npath = \"/nonexistent/s.db\"\n{cfg}")).unwrap();
    let bindings = scim_bridge::daemon::bindings(&config).unwrap();
    let target = &bindings[0].target;
    target.check().await.unwrap();
    let advice = target.index_advice().await.unwrap();
    let missing: Vec<(&str, &str)> =
        advice.iter().filter(|a| !a.present).map(|a| (a.key, a.expression.as_str())).collect();
    let lowered = if backend == Backend::Mariadb { "email" } else { "lower(email)" };
    let name = if backend == Backend::Mariadb { "name" } else { "lower(name)" };
    assert_eq!(
        missing,
        [("users.match_column", lowered), ("groups.name_column", name), ("groups.member_user_column", "employee_id")],
        "{advice:#?}"
    );
    assert!(
        advice.iter().any(|a| a.key == "groups.member_group_column" && a.present),
        "the primary key leads with team_id"
    );
    for a in advice.iter().filter(|a| !a.present) {
        db.exec(&a.create).await;
    }
    let again = target.index_advice().await.unwrap();
    assert!(again.iter().all(|a| a.present), "{again:#?}");
    if backend == Backend::Sqlite {
        // And the lookup replay makes uses it.
        let conn = rusqlite::Connection::open(db.url.trim_start_matches("sqlite://")).unwrap();
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT CAST(\"id\" AS TEXT) FROM \"employees\" WHERE LOWER(\"email\") = LOWER(?1)",
                ["x"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("employees_email_lower_idx"), "{plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_downstream_indexes() {
    downstream_indexes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_downstream_indexes() {
    downstream_indexes(Backend::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_downstream_indexes() {
    downstream_indexes(Backend::Sqlite).await;
}
