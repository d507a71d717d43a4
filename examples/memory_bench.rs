//! The daemon's memory before, during and after a burst of hostile requests: `scim-bridge serve` (the
//! release binary, built first) as a child process, RSS read from /proc. The burst: 32 clients sending
//! 2,016 near-limit bodies of malformed and deeply nested JSON, huge filters and huge userNames; then the
//! daemon idles for 10 s. KIND=0..3 sends one kind only (junk, nesting, a huge filter, a huge userName).
//!
//!     cargo build --release && cargo run --release --example memory_bench
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap ends the run

use std::time::{Duration, Instant};

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[tokio::main]
async fn main() {
    let bin = std::path::Path::new("target/release/scim-bridge");
    assert!(bin.exists(), "build the release binary first: cargo build --release");
    let dir = std::path::PathBuf::from("target/bench-data/memory");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nrate_limit = {{ requests_per_second = 1e9, burst = 1000000 }}\n\
             [staging]\npath = \"{}\"\n[log]\nlevel = \"error\"\n[[tenant]]\nname = \"t\"\n",
            dir.join("staging.db").display()
        ),
    )
    .expect("config");
    let token = std::process::Command::new(bin).args(["token", "t", "--config"]).arg(&config).output().expect("token");
    let token = String::from_utf8(token.stdout).expect("utf-8").trim().to_owned();
    let mut child = std::process::Command::new(bin)
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}/scim/v2");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("idle after start:          RSS {:>4} MiB", rss_mib(pid));

    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let junk = "x".repeat(1_000_000);
    let filter = format!("userName%20eq%20%22{}%22", "a".repeat(60_000));
    let started = Instant::now();
    let mut peak = 0;
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let (client, base, token, nested, junk, filter) =
                (client.clone(), base.clone(), token.clone(), nested.clone(), junk.clone(), filter.clone());
            tokio::spawn(async move {
                for i in 0..63 {
                    let kind = std::env::var("KIND").ok().and_then(|k| k.parse::<usize>().ok()).unwrap_or((w + i) % 4);
                    let req = match kind {
                        0 => client.post(format!("{base}/Users")).body(junk.clone()),
                        1 => client.post(format!("{base}/Users")).body(nested.clone()),
                        2 => client.get(format!("{base}/Users?filter={filter}")),
                        _ => client.post(format!("{base}/Users")).body(format!("{{\"userName\": \"{junk}\"}}")),
                    };
                    let _ = req.bearer_auth(&token).header("content-type", "application/scim+json").send().await;
                }
            })
        })
        .collect();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..600 {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    for t in tasks {
        t.await.expect("client");
    }
    let burst = started.elapsed();
    println!("burst of 2,016 hostile requests at c=32 in {:.1} s", burst.as_secs_f64());
    println!("right after the burst:     RSS {:>4} MiB", rss_mib(pid));
    for s in [2, 10] {
        tokio::time::sleep(Duration::from_secs(if s == 2 { 2 } else { 8 })).await;
        println!("{s:>2} s idle after the burst: RSS {:>4} MiB", rss_mib(pid));
    }
    peak = peak.max(watcher.await.unwrap_or(0));
    println!("peak during the burst:     RSS {peak:>4} MiB");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
}
