//! Replay throughput into slapd: 10,000 user creates staged, then replayed into a fresh directory.
//! A benchmark, not a test: run it with
//!
//!     cargo test --release --test ldap_bench -- --ignored --nocapture
//!
//! (USERS=n to change the count; SLAPD_NOSYNC=1 runs slapd without a sync per write, which shows how much
//! of the time is the directory's own durability).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::time::{Duration, Instant};

use common::slapd::{ADMIN_DN, ADMIN_PW, SUFFIX, Slapd};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn ldap_replay_throughput() {
    let n: usize = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let slapd = Slapd::start();
    let pw = slapd.dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PW).unwrap();
    let staging = slapd.dir.path().join("staging.db");
    let head = format!(
        "[server]\nrate_limit = {{ requests_per_second = 1e9, burst = 1000000 }}\n[staging]\npath = {:?}\n[log]\nlevel = \"warn\"\n",
        staging.display().to_string()
    );
    let target = format!(
        "[[target]]\ntype = \"ldap\"\nname = \"dir\"\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = {:?}\n\
         [target.users]\nbase_dn = \"ou=people,{SUFFIX}\"\nrdn = \"uid={{userName}}\"\n\
         [target.users.attributes]\ncn = \"{{name.givenName}} {{name.familyName}}\"\nsn = \"name.familyName\"\nmail = \"@match_email\"\n",
        slapd.url(),
        pw.display().to_string()
    );
    let (_, token) = scim_bridge::staging::rotate_token(&staging, "bench").unwrap();
    let run = |text: String| async move {
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
        (base, stop, task)
    };
    // Stage with no target configured, so that replay is measured on its own.
    let (base, stop, task) = run(format!("{head}[[tenant]]\nname = \"bench\"\n")).await;
    let client = reqwest::Client::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut calls = Vec::new();
        for i in chunk {
            let body = json!({"userName": format!("user{i}@bench.example"), "name": {"givenName": "Bench", "familyName": format!("User {i}")}});
            calls.push(
                client
                    .post(format!("{base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send(),
            );
        }
        for c in futures_util::future::join_all(calls).await {
            assert_eq!(c.unwrap().status(), 201);
        }
    }
    let _ = stop.send(());
    task.await.unwrap();
    let started = Instant::now();
    let (_base, stop, task) = run(format!("{head}[[tenant]]\nname = \"bench\"\ntargets = [\"dir\"]\n{target}")).await;
    loop {
        let c = rusqlite::Connection::open(&staging).unwrap();
        let (h, at): (i64, i64) = c
            .query_row(
                "SELECT (SELECT MAX(seq) FROM journal), (SELECT COALESCE(MAX(last_seq), 0) FROM replay_cursor)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if at >= h {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    task.await.unwrap();
    println!("ldap replay: {n} creates into slapd in {secs:.2} s: {:.0} creates/s", n as f64 / secs);
}
