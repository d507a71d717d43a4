//! The README's first command: `scim-bridge serve` without a config file starts on the embedded default,
//! prints a token once, and replays into the SQLite demo application database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_runs_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    // The embedded default listens on 127.0.0.1:7644; only the port is moved (SCIM_BRIDGE_LISTEN), away
    // from a daemon a developer may be running.
    let mut child = Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("SCIM_BRIDGE_CONFIG")
        .env("SCIM_BRIDGE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut token, mut base) = (None, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(t) = line.trim().strip_prefix("scimb_") {
                token = Some(format!("scimb_{t}"));
            }
            if let Some(u) = line.strip_prefix("scim-bridge listening on ") {
                base = Some(u.to_owned());
                break;
            }
        }
    })
    .await
    .expect("started");
    let (token, base) = (token.expect("a token was printed"), base.expect("listening"));
    let client = reqwest::Client::new();
    let body = serde_json::json!({"userName": "ann@example.com", "name": {"givenName": "Ann", "familyName": "Lee"}, "active": true});
    let resp = client
        .post(format!("{base}/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let app = dir.path().join("scim-bridge-data/app.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row: Option<(String, String, i64)> = rusqlite::Connection::open(&app)
            .and_then(|c| {
                c.query_row("SELECT email, full_name, blocked FROM employees", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
            })
            .ok();
        if let Some(row) = row {
            assert_eq!(row, ("ann@example.com".to_owned(), "Ann Lee".to_owned(), 0));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the demo database never got the user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().unwrap();
}
