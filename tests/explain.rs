//! Seeing what happened: `scim-bridge explain` after a full Entra cycle into PostgreSQL (link by email,
//! create, disable, rename, a group member, a dead letter and its retry), `history`, and the status page
//! loaded in a real headless Chromium (Debian's `chromium`, installed by scripts/test.sh), checked from
//! its DOM and kept as a screenshot in target/test-artifacts/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::path::Path;

use common::bin::{self, post, until};
use common::db::{Backend, TestDb};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-the-status-page";

fn config(db: &TestDb, dir: &Path) -> String {
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{ADMIN}\n")).unwrap();
    format!(
        r#"[status]
token_file = {token:?}

[replay]
max_attempts = 1

[[tenant]]
name = "entra"
targets = ["crm"]

[[target]]
type = "sql"
name = "crm"
url = "{url}"

[target.users]
table = "employees"
key = "id"
match_column = "email"

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
"#,
        url = db.url
    )
}

async fn explain(dir: &Path, cfg: &str, query: &str) -> String {
    let o = bin::run(dir, &["explain", query, "--config", cfg]).await;
    let said = bin::text(&o);
    assert!(o.status.success(), "{said}");
    said
}

fn chromium(args: &[&str]) -> std::process::Output {
    std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=420,1600"])
        .args(args)
        .output()
        .expect("chromium: scripts/test.sh installs Debian's chromium package")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_history_and_the_status_page() {
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    db.exec("INSERT INTO employees (email, first_name, blocked) VALUES ('ann@example.com', 'Legacy', 'N')").await;
    db.exec("ALTER TABLE employees ADD CONSTRAINT no_forbidden CHECK (title IS NULL OR title <> 'Forbidden')").await;
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), &config(&db, dir.path()));
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "entra").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();

    let create = async |name: &str, title: &str| {
        let r = post(
            &d,
            &token,
            "/Users",
            &json!({"userName": name, "title": title, "name": {"givenName": name.split('@').next().unwrap()}}),
        )
        .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    };
    let ann = create("ann@example.com", "Buyer").await;
    let bob = create("bob@example.com", "Clerk").await;
    let carol = create("carol@example.com", "Forbidden").await;
    let hostile = create("<script>alert(1)</script>@example.com", "Spy").await;
    bin::replace(&d, &token, &format!("/Users/{ann}"), "active", json!("False")).await;
    bin::replace(&d, &token, &format!("/Users/{bob}"), "userName", json!("robert@example.com")).await;
    let group = post(&d, &token, "/Groups", &json!({"displayName": "Sales", "members": [{"value": ann}]})).await;
    assert_eq!(group.status(), 201);
    until("carol is a dead letter", async || {
        !bin::staging_rows(dir.path(), "SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty()
    })
    .await;

    // Ann: found by email, linked, disabled, made a member.
    let story = explain(dir.path(), &cfg, "ann@example.com").await;
    for needle in [
        "User ann@example.com",
        "SCIM POST: journal entry",
        "title = \"Buyer\"",
        "replay → crm: entry 1 linked (downstream key 1)",
        "UPDATE \"employees\" SET \"blocked\" = $1, \"email\" = $2",
        "#2 = \"ann@example.com\"",
        "SCIM PATCH",
        "active = false",
        "blocked (active = false)",
        "crm: 1 (linked, since",
        "crm: blocked (the newest change, inactive, is applied)",
    ] {
        assert!(story.contains(needle), "{needle:?} in\n{story}");
    }
    let story = explain(dir.path(), &cfg, &bob).await;
    assert!(
        story.contains("userName = \"robert@example.com\"") && story.contains("INSERT INTO \"employees\""),
        "{story}"
    );
    assert!(story.contains("#2 = \"robert@example.com\""), "the rename reached the email column:\n{story}");
    let story = explain(dir.path(), &cfg, "carol@example.com").await;
    assert!(story.contains("parked as a dead letter") && story.contains("no_forbidden"), "{story}");
    assert!(story.contains("crm: entry 3 dead after 1 attempt(s)"), "{story}");

    // The cause fixed downstream, the dead letter retried: the story goes on.
    db.exec("ALTER TABLE employees DROP CONSTRAINT no_forbidden").await;
    let o = bin::run(dir.path(), &["retry", "--config", &cfg]).await;
    assert!(o.status.success(), "{}", bin::text(&o));
    until("carol replayed", async || bin::staging_rows(dir.path(), "SELECT 1 FROM replay_failures").is_empty()).await;
    let story = explain(dir.path(), &cfg, &carol).await;
    assert!(story.contains("replay → crm: entry 3 created"), "{story}");
    assert!(story.contains("failed changes:\n    none"), "{story}");
    let story = explain(dir.path(), &cfg, "Sales").await;
    assert!(story.contains(&format!("+ member {ann}")) && story.contains("INSERT INTO \"team_members\""), "{story}");

    // Ambiguous and unknown input.
    let o = bin::run(dir.path(), &["explain", "nobody@example.com", "--config", &cfg]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(bin::text(&o).contains("nothing matches"), "{}", bin::text(&o));

    // History: newest first, filtered.
    let o = bin::run(dir.path(), &["history", "--since", "1h", "--outcome", "dead", "--config", &cfg]).await;
    let said = bin::text(&o);
    assert!(
        o.status.success() && said.lines().count() == 1 && said.contains(&carol) && said.contains("no_forbidden"),
        "{said}"
    );
    let o = bin::run(dir.path(), &["history", "--target", "crm", "--config", &cfg]).await;
    let said = bin::text(&o);
    let first = said.lines().next().unwrap();
    assert!(first.contains(&carol) && first.contains("created"), "newest first: {said}");
    let o = bin::run(dir.path(), &["history", "--outcome", "exploded", "--config", &cfg]).await;
    assert_eq!(o.status.code(), Some(1));

    // The status page: refused without the admin token and with a tenant token.
    let origin = d.base.trim_end_matches("/scim/v2").to_owned();
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{origin}/status")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{origin}/status")).bearer_auth(&token).send().await.unwrap().status(), 401);
    // A dead letter to show: one more forbidden title.
    db.exec("ALTER TABLE employees ADD CONSTRAINT no_banned CHECK (title IS NULL OR title <> 'Banned')").await;
    let dan = create("dan@example.com", "Banned").await;
    until("dan is a dead letter", async || {
        !bin::staging_rows(dir.path(), "SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty()
    })
    .await;

    let url = format!("http://admin:{ADMIN}@{}/status", origin.trim_start_matches("http://"));
    let dom = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("<h1>scim-bridge status</h1>"), "{dom}");
    assert!(dom.contains("<td>entra</td><td>5</td><td>1</td><td>crm</td>"), "tenant counts:\n{dom}");
    assert!(dom.contains("no_banned"), "the dead letter's error:\n{dom}");
    assert!(dom.contains(&format!("/status/explain?id={}", dan.replace('-', "%2D"))), "a link to dan's story:\n{dom}");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the hostile userName is text:\n{dom}");
    assert!(!dom.contains("<script>alert"), "never markup:\n{dom}");
    let _ = hostile;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(&[&format!("--screenshot={}", shot.display()), &url]);
    assert!(shot.exists(), "screenshot: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&shot).unwrap().len() > 5_000, "a page, not a blank");
    let story_url = format!("http://admin:{ADMIN}@{}/status/explain?id={dan}", origin.trim_start_matches("http://"));
    let page = String::from_utf8_lossy(&chromium(&["--dump-dom", &story_url]).stdout).into_owned();
    assert!(page.contains("parked as a dead letter") && page.contains("dan@example.com"), "{page}");
    d.stop().await;
}
