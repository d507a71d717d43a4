//! What an administrator (and a careless one) meets when running the real binary: one daemon per staging
//! database, private state files, tenants bound to no target, target outages in `status`, `retry` acting
//! at once, a full disk, and two processes opening a new staging file together. Each test drives
//! `scim-bridge` as a child process (tests/common/bin.rs) over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::bin::{self, post, staging_rows, until};
use common::db::{Backend, TestDb};
use common::proxy::Proxy;
use serde_json::{Value, json};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn user(name: &str) -> Value {
    json!({"userName": name, "active": true, "name": {"givenName": "G", "familyName": "F"}})
}

/// Defect 1: a second `serve` on the same staging database refuses to start and names the first one's
/// pid; the commands that only read or queue keep working beside the daemon. Defect 7: the state files
/// are private. Defect 10: a failed authentication is logged with the client's address and request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_staging_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), "");
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let first = bin::start(dir.path(), &["--config", &cfg], &[]).await.expect("first daemon");
    let second =
        bin::start(dir.path(), &["--config", &cfg], &[]).await.err().expect("the second daemon must not start");
    let said = second.join("\n");
    assert!(said.contains(&format!("pid {}", first.pid())) && said.contains("staging.db"), "{said}");

    for args in [vec!["status"], vec!["journal"], vec!["retry"], vec!["token", "t2"]] {
        let mut args: Vec<&str> = args;
        args.extend(["--config", &cfg]);
        let o = bin::run(dir.path(), &args).await;
        assert!(o.status.success(), "{args:?} while the daemon runs: {}", bin::text(&o));
    }
    let o = bin::run(dir.path(), &["status", "--config", &cfg]).await;
    assert!(bin::text(&o).contains(&format!("daemon: running (pid {})", first.pid())), "{}", bin::text(&o));

    assert_eq!(post(&first, &token, "/Users", &user("a@example.com")).await.status(), 201);
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "staging directory");
    for f in ["staging.db", "staging.db-wal", "staging.db-shm", "staging.db.lock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    let resp = post(&first, "scimb_wrong", "/Users", &user("b@example.com")).await;
    assert_eq!(resp.status(), 401);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let line = first.wait_for_line("unknown bearer token").await;
    assert!(line.contains("client=127.0.0.1") && line.contains(&request_id), "{line}");
    assert!(!line.contains("scimb_wrong"), "the token is never logged: {line}");
    first.stop().await;
}

/// Defect 2, on the embedded default: a team `Legacy` that has the same numeric key as a linked employee
/// is linked to the group `Legacy`, not refused as "already linked". Defect 10: the first token is not
/// printed by a start that then fails to bind. Defect 7: the demo database is private too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_team_and_user_with_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let failed = bin::start(dir.path(), &[], &[("SCIM_BRIDGE_LISTEN", &port)]).await.err().expect("port in use");
    assert!(failed.iter().any(|l| l.contains("server.listen")), "{failed:?}");
    assert!(!failed.iter().any(|l| l.contains("scimb_")), "no token printed by a start that failed: {failed:?}");
    drop(taken);

    let d = bin::start(dir.path(), &[], &[("SCIM_BRIDGE_LISTEN", "127.0.0.1:0")]).await.expect("embedded");
    let token = d.lines_with("scimb_").first().map(|l| l.trim().to_owned()).expect("the token is printed once");
    let app = dir.path().join("scim-bridge-data/app.db");
    assert_eq!(mode(&dir.path().join("scim-bridge-data")), 0o700);
    assert_eq!(mode(&app), 0o600);
    rusqlite::Connection::open(&app).unwrap().execute("INSERT INTO teams (name) VALUES ('Legacy')", []).unwrap();
    let resp = post(&d, &token, "/Users", &user("ann@example.com")).await;
    assert_eq!(resp.status(), 201);
    let ann: Value = resp.json().await.unwrap();
    let group = json!({"displayName": "Legacy", "members": [{"value": ann["id"]}]});
    let resp = post(&d, &token, "/Groups", &group).await;
    assert_eq!(resp.status(), 201);
    let gid = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let keys = |sql: &str| -> Vec<String> {
        let c = rusqlite::Connection::open(&app).unwrap();
        let mut s = c.prepare(sql).unwrap();
        s.query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    until("the group replayed", async || !keys("SELECT scim_id FROM teams WHERE scim_id IS NOT NULL").is_empty()).await;
    assert_eq!(keys("SELECT CAST(id AS TEXT) FROM employees"), ["1"], "the employee has key 1");
    assert_eq!(
        keys("SELECT CAST(id AS TEXT) || ' ' || scim_id FROM teams"),
        [format!("1 {gid}")],
        "team 1 linked, not duplicated"
    );
    assert_eq!(keys("SELECT CAST(team_id AS TEXT) FROM team_members"), ["1"]);
    let staging = dir.path().join("scim-bridge-data/staging.db");
    let failures: i64 = rusqlite::Connection::open(&staging)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM replay_failures", [], |r| r.get(0))
        .unwrap();
    assert_eq!(failures, 0);
    // Replay's log lines name the tenant and carry the request id.
    let line = d.wait_for_line("change replayed").await;
    assert!(line.contains("tenant=default") && line.contains("request_id="), "{line}");
    d.stop().await;
}

/// Defect 3: a tenant bound to no target (a typo in `token`) is warned about by `token` and `serve`, and
/// `status` says its changes are replayed nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_bound_to_no_target_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.db");
    scim_bridge::daemon::prepare_demo_database(&app).unwrap();
    let extra = format!(
        "[[tenant]]\nname = \"default\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"sqlite://{}\"\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n[target.users.columns]\nemail = \"@match_email\"\n",
        app.display()
    );
    let config = bin::config(dir.path(), &extra);
    let cfg = config.display().to_string();
    let o = bin::run(dir.path(), &["token", "defualt", "--config", &cfg]).await;
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("bound to no target") && said.contains("name = \"defualt\""), "{said}");
    let typo = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let o = bin::run(dir.path(), &["token", "default", "--config", &cfg]).await;
    assert!(!bin::text(&o).contains("bound to no target"), "{}", bin::text(&o));

    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let warn = d.wait_for_line("bound to no target").await;
    assert!(warn.contains("WARN") && warn.contains("defualt"), "{warn}");
    assert!(
        d.lines_with("bound to no target").iter().all(|l| !l.contains("tenant=default ")),
        "only the unbound tenant"
    );
    assert_eq!(post(&d, &typo, "/Users", &user("x@example.com")).await.status(), 201);
    let o = bin::run(dir.path(), &["status", "--config", &cfg]).await;
    let status = bin::text(&o);
    assert!(status.contains("tenant defualt: 1 change(s) staged, replayed nowhere"), "{status}");
    assert!(status.contains("tenant default: 0 change(s) staged, replayed into crm"), "{status}");
    d.stop().await;
}

/// Defect 4: with its database cut off, a target is shown unreachable by `status` (since when, the last
/// error naming host and port, the next attempt), the daemon logs one WARN when it goes down and one
/// INFO when it is back, and `check-config --connect` names host and port and fails fast when refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outage_is_visible() {
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    let proxy = Proxy::start(0, 5432).await;
    let url = db.url.replace(":5432/", &format!(":{}/", proxy.port));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[replay]\nbackoff_initial_ms = 100\nbackoff_max_seconds = 2\n[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n\
         [[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"{url}\"\ntimeout_seconds = 2\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n[target.users.columns]\nemail = \"@match_email\"\n"
    );
    let config = bin::config(dir.path(), &extra);
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    assert_eq!(post(&d, &token, "/Users", &user("first@example.com")).await.status(), 201);
    until("first user replayed", async || db.rows("SELECT 1 FROM employees").await.len() == 1).await;

    let port = proxy.cut();
    assert_eq!(post(&d, &token, "/Users", &user("during@example.com")).await.status(), 201, "still acknowledged");
    let status = async || bin::text(&bin::run(dir.path(), &["status", "--config", &cfg]).await);
    until("status shows the outage after a few attempts", async || {
        let s = status().await;
        s.contains("UNREACHABLE") && !s.contains("(1 failed attempt")
    })
    .await;
    let s = status().await;
    let line = s.lines().find(|l| l.contains("UNREACHABLE")).unwrap().to_owned();
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("next in") && line.contains("since"),
        "{line}"
    );
    assert_eq!(d.lines_with("target unreachable").len(), 1, "one WARN per outage, not per attempt");

    // check-config --connect: the port refuses connections, said at once with host and port.
    let started = Instant::now();
    let o = bin::run(dir.path(), &["check-config", "--connect", "--config", &cfg]).await;
    assert!(!o.status.success());
    let said = bin::text(&o);
    assert!(said.contains(&format!("127.0.0.1:{port}")) && said.to_lowercase().contains("refused"), "{said}");
    assert!(!said.contains("pool timed out"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast: {:?}", started.elapsed());

    let _back = Proxy::start(port, 5432).await;
    until("the user staged during the outage replayed", async || db.rows("SELECT 1 FROM employees").await.len() == 2)
        .await;
    until("status shows it reachable", async || status().await.contains("target crm: reachable since")).await;
    assert_eq!(d.lines_with("target reachable again").len(), 1, "one INFO when it is back");
    d.stop().await;
}

/// A daemon replaying tenant "t" into the demo SQLite database, whose `employees` table refuses the rows
/// `when` matches (a dead letter on demand, with `message`); `columns` are mapped after email. Returns the
/// daemon, the tenant's token and the config path.
async fn daemon_refusing(dir: &Path, when: &str, message: &str, columns: &str) -> (bin::Daemon, String, String) {
    let app = dir.join("app.db");
    scim_bridge::daemon::prepare_demo_database(&app).unwrap();
    let conn = rusqlite::Connection::open(&app).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON employees WHEN {when} BEGIN SELECT RAISE(ABORT, '{message}'); END;"
    ))
    .unwrap();
    let extra = format!(
        "[replay]\nmax_attempts = 1\n[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\n\
         url = \"sqlite://{}\"\n[target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n\
         [target.users.columns]\nemail = \"@match_email\"\n{columns}",
        app.display()
    );
    let config = bin::config(dir, &extra);
    let cfg = config.display().to_string();
    let token = bin::token(dir, &config, "t").await;
    let d = bin::start(dir, &["--config", &cfg], &[]).await.unwrap();
    (d, token, cfg)
}

/// Defect 5: `retry` says what it queued and a running daemon acts on it within about two seconds; a
/// target or sequence that does not exist is an error (exit code 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_acts_at_once_and_names_what_it_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (d, token, cfg) = daemon_refusing(dir.path(), "NEW.email = 'bob@example.com'", "bob is not welcome", "").await;
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    assert_eq!(post(&d, &token, "/Users", &user("bob@example.com")).await.status(), 201);
    until("bob is a dead letter", async || {
        !staging_rows(dir.path(), "SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty()
    })
    .await;
    let seq = staging_rows(dir.path(), "SELECT seq FROM replay_failures")[0][0].clone();

    for (args, needle) in [
        (vec!["journal", "--target", "nosuch"], "no target is named \"nosuch\""),
        (vec!["retry", "--target", "nosuch"], "no target is named \"nosuch\""),
        (vec!["retry", "--seq", "999"], "no change with sequence 999"),
    ] {
        let mut args = args;
        args.extend(["--config", &cfg]);
        let o = bin::run(dir.path(), &args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", bin::text(&o));
        assert!(bin::text(&o).contains(needle), "{args:?}: {}", bin::text(&o));
    }

    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    let o = bin::run(dir.path(), &["retry", "--config", &cfg]).await;
    let said = bin::text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains(&format!("queued: crm seq {seq}")) && said.contains("bob is not welcome"), "{said}");
    assert!(said.contains("within a few seconds"), "{said}");
    let queued = Instant::now();
    until("the retried change applied", async || staging_rows(dir.path(), "SELECT 1 FROM replay_failures").is_empty())
        .await;
    assert!(queued.elapsed() < Duration::from_secs(3), "retry took {:?}", queued.elapsed());
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM employees", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
    d.stop().await;
}

/// Defect 6: a write that cannot be stored because the disk is full answers 503 with `Retry-After` and an
/// RFC 7644 error body (so that Entra and Okta retry), and writes succeed again once there is room. The
/// staging directory is a 1 MB tmpfs, which needs root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503() {
    let whoami = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout).trim(),
        "0",
        "this test mounts a small tmpfs and must run as root (CI does; run scripts/test.sh as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mount = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&data).status();
    assert!(mount.unwrap().success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let config = bin::config(dir.path(), "");
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let mut full = None;
    for n in 0..400 {
        let mut u = user(&format!("u{n}@example.com"));
        u["title"] = json!("x".repeat(20_000));
        let resp = post(&d, &token, "/Users", &u).await;
        if resp.status() != 201 {
            full = Some(resp);
            break;
        }
    }
    let resp = full.expect("the 1 MB disk filled up");
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "503");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    d.wait_for_line("answering 503").await;

    let grown = std::process::Command::new("mount").args(["-o", "remount,size=16m"]).arg(&data).status().unwrap();
    assert!(grown.success());
    assert_eq!(post(&d, &token, "/Users", &user("after@example.com")).await.status(), 201, "room again");
    d.stop().await;
}

/// Defect 9: `token` and `serve` started together on a staging file that does not exist yet both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_serve_together_on_a_new_file() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let config = bin::config(dir.path(), "");
        let cfg = config.display().to_string();
        let serve_args = ["--config", cfg.as_str()];
        let token_args = ["token", "t", "--config", cfg.as_str()];
        let (served, token) = tokio::join!(bin::start(dir.path(), &serve_args, &[]), bin::run(dir.path(), &token_args));
        assert!(token.status.success(), "{}", bin::text(&token));
        served.expect("serve started beside token").stop().await;
    }
}

/// `token list` shows tenants and their token dates but never a token; `token revoke` refuses the
/// tenant's requests at once; a name that does not exist fails with exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), "[[tenant]]\nname = \"entra\"\n");
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "entra").await;
    let other = bin::token(dir.path(), &config, "okta").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let o = bin::run(dir.path(), &["token", "list", "--config", &cfg]).await;
    let said = bin::text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("entra: created 20") && said.contains("token issued 20"), "{said}");
    assert!(said.contains("okta: created") && said.contains("bound to no target"), "{said}");
    assert!(!said.contains(&token) && !said.contains(&other) && !said.contains("scimb_"), "never a token: {said}");

    assert_eq!(post(&d, &token, "/Users", &user("a@example.com")).await.status(), 201);
    let o = bin::run(dir.path(), &["token", "revoke", "entra", "--config", &cfg]).await;
    assert!(o.status.success(), "{}", bin::text(&o));
    assert_eq!(post(&d, &token, "/Users", &user("b@example.com")).await.status(), 401, "refused at once");
    assert_eq!(post(&d, &other, "/Users", &user("b@example.com")).await.status(), 201, "other tenants go on");
    let said = bin::text(&bin::run(dir.path(), &["token", "list", "--config", &cfg]).await);
    assert!(said.contains("entra: created") && said.contains("NO TOKEN (revoked 20"), "{said}");

    let o = bin::run(dir.path(), &["token", "revoke", "nosuch", "--config", &cfg]).await;
    assert_eq!(o.status.code(), Some(1), "{}", bin::text(&o));
    assert!(bin::text(&o).contains("no tenant is named \"nosuch\" (tenants: entra, okta)"), "{}", bin::text(&o));
    // A new token brings the tenant back, with its data.
    let token = bin::token(dir.path(), &config, "entra").await;
    let r = reqwest::Client::new().get(format!("{}/Users", d.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["totalResults"], 1);
    d.stop().await;
}

/// `journal discard --seq N` drops a dead letter, records who did it in the audit trail, and lets the
/// change waiting behind it go on; anything but a dead letter is refused with exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_discard_drops_a_dead_letter_and_the_resource_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (d, token, cfg) =
        daemon_refusing(dir.path(), "NEW.first_name = 'Bobby'", "no Bobby here", "first_name = \"name.givenName\"\n")
            .await;
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    let created =
        post(&d, &token, "/Users", &json!({"userName": "bob@example.com", "name": {"givenName": "Bobby"}})).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    until("the create is a dead letter", async || {
        !staging_rows(dir.path(), "SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty()
    })
    .await;
    // A later change of the same user waits behind the dead letter.
    let fix = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": "Bob"}]});
    let r = reqwest::Client::new()
        .patch(format!("{}/Users/{id}", d.base))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(fix.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until("the fix waits", async || {
        !staging_rows(dir.path(), "SELECT 1 FROM replay_failures WHERE state = 'waiting'").is_empty()
    })
    .await;
    let dead = staging_rows(dir.path(), "SELECT seq FROM replay_failures WHERE state = 'dead'")[0][0].clone();
    let waiting = staging_rows(dir.path(), "SELECT seq FROM replay_failures WHERE state = 'waiting'")[0][0].clone();

    for (seq, needle) in
        [(waiting.as_str(), "is not a dead letter (it is waiting)"), ("999", "no change with sequence 999")]
    {
        let o = bin::run(dir.path(), &["journal", "discard", "--seq", seq, "--config", &cfg]).await;
        assert_eq!(o.status.code(), Some(1), "{}", bin::text(&o));
        assert!(bin::text(&o).contains(needle), "{}", bin::text(&o));
    }
    let o = bin::run(dir.path(), &["journal", "discard", "--seq", &dead, "--config", &cfg]).await;
    let said = bin::text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains(&format!("discarded: crm seq {dead}")) && said.contains("no Bobby here"), "{said}");
    let audit = staging_rows(
        dir.path(),
        &format!("SELECT outcome, detail FROM audit WHERE seq = {dead} AND outcome = 'discarded'"),
    );
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0][1].contains("journal discard") && audit[0][1].contains("no Bobby here"), "{audit:?}");
    // The waiting fix goes on, and brings the user downstream as it is now.
    until("nothing left failing", async || staging_rows(dir.path(), "SELECT 1 FROM replay_failures").is_empty()).await;
    let bob: String =
        conn.query_row("SELECT first_name FROM employees WHERE email = 'bob@example.com'", [], |r| r.get(0)).unwrap();
    assert_eq!(bob, "Bob");
    d.stop().await;
}
