//! Contract point 1, "acknowledged means durable": a daemon process is killed with SIGKILL while clients
//! stream creates; after each restart every create that was answered 201 must be there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");

async fn start(config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn scim-bridge");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("scim-bridge listening on ") {
                return url.to_owned();
            }
        }
        panic!("scim-bridge exited before listening");
    })
    .await
    .expect("scim-bridge did not start within 30 s");
    (child, base)
}

async fn all_user_names(client: &reqwest::Client, base: &str, token: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut start = 1;
    loop {
        let page: serde_json::Value = client
            .get(format!("{base}/Users?startIndex={start}&count=1000&attributes=userName"))
            .bearer_auth(token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let items = page["Resources"].as_array().expect("Resources");
        for u in items {
            names.insert(u["userName"].as_str().expect("userName").to_owned());
        }
        start += items.len();
        if items.is_empty() || start > page["totalResults"].as_u64().expect("total") as usize {
            return names;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_create() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n# Sixteen writers as fast as they can: no rate limit in the way.\nrate_limit = {{ requests_per_second = 1e9, burst = 1000000 }}\n[staging]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n",
            dir.path().join("staging.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN).args(["token", "crash", "--config"]).arg(&config).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut total_acked_at_kill = Vec::new();

    for round in 0..10u64 {
        let (mut child, base) = start(&config).await;
        let present = all_user_names(&client, &base, &token).await;
        let expected = acked.lock().unwrap().clone();
        let missing: Vec<&String> = expected.iter().filter(|n| !present.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged creates lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );

        let mut writers = Vec::new();
        for w in 0..16 {
            let (client, base, token, acked) = (client.clone(), base.clone(), token.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("r{round}-w{w}-n{n}@crash.example");
                    let body = serde_json::json!({"userName": name, "emails": [{"value": name}]});
                    let sent = client
                        .post(format!("{base}/Users"))
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                        Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                        Err(_) => return, // the daemon is gone
                    }
                }
            }));
        }
        // Kill at a different moment each round, mid-stream.
        tokio::time::sleep(Duration::from_millis(150 + 37 * round)).await;
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        for w in writers {
            w.await.expect("writer task");
        }
        total_acked_at_kill.push(acked.lock().unwrap().len());
    }

    let (mut child, base) = start(&config).await;
    let present = all_user_names(&client, &base, &token).await;
    let expected = acked.lock().unwrap().clone();
    assert!(expected.len() > 100, "too few creates were acknowledged to test anything: {total_acked_at_kill:?}");
    let missing = expected.iter().filter(|n| !present.contains(*n)).count();
    assert_eq!(missing, 0, "acknowledged creates lost after the last kill");
    eprintln!("acknowledged creates at each kill: {total_acked_at_kill:?}; present after restart: {}", present.len());
    // A graceful stop exits cleanly.
    let pid = child.id().expect("pid") as i32;
    // SAFETY-free: the kill(1) command sends SIGTERM without unsafe code.
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("graceful stop").unwrap();
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");
}
