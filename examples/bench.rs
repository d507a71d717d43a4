//! Benchmark of the SCIM endpoint with durable staging, through real HTTP on loopback.
//!
//!     cargo run --release --example bench -- [--users 10000] [--dir target/bench-data]
//!     cargo run --release --example bench -- --scale [--users 1000000] [--dir target/bench-data]
//!
//! For concurrency 1 and 16, on a fresh staging database: creates of N users, userName filters, PATCHes
//! (replace title); then the time to add N members to one group in PATCHes of 100. The staging file lives on
//! the real disk (not tmpfs) so that every commit pays a real fsync.
//!
//! `--scale` stages N users (default 1,000,000) at concurrency 16 and then measures, at concurrency 1 and
//! 16, the query paths large tenants hit: equality on userName, displayName, externalId and emails.value;
//! `co` on userName; pages at startIndex 1, N/2 and N-100; and the process's memory (it serves in process).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap ends the run

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scim_bridge::http::ScimSettings;
use scim_bridge::staging;
use serde_json::json;

struct Args {
    users: Option<usize>,
    dir: std::path::PathBuf,
    scale: bool,
}

fn args() -> Args {
    let mut a = Args { users: None, dir: "target/bench-data".into(), scale: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--scale" {
            a.scale = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--users" => a.users = Some(value.parse().expect("--users takes a number")),
            "--dir" => a.dir = value.into(),
            other => panic!("unknown flag {other}; use --users N, --dir PATH and --scale"),
        }
    }
    a
}

/// The process's resident memory now and at its peak, in MiB (the server runs in this process).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:") / 1024, kib("VmHWM:") / 1024)
}

/// A list response's totalResults and whether it holds resources, read from its bytes without parsing
/// the page: the client's own JSON work would otherwise be measured with the server's.
async fn get_list(c: &reqwest::Client, url: String, token: &str) -> (u64, bool) {
    let resp = c.get(url).bearer_auth(token).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("body");
    let text = std::str::from_utf8(&body).expect("utf-8");
    let total = text
        .split_once("\"totalResults\":")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .expect("totalResults");
    (total, text.contains("\"Resources\":[{"))
}

/// The scale case: N users staged at concurrency 16, then every query path large tenants use.
async fn scale(a: &Args, client: reqwest::Client) {
    let n = a.users.unwrap_or(1_000_000);
    let server = start(&a.dir.join("scale")).await;
    println!("scim-bridge scale bench: {n} users, staging under {}", a.dir.join("scale").display());
    let (c, b, t) = (client.clone(), server.base.clone(), server.token.clone());
    let started = Instant::now();
    let r = run(n, 16, move |i| {
        let (c, b, t) = (c.clone(), b.clone(), t.clone());
        async move {
            let name = format!("user{i}@scale.example");
            let body = json!({
                "userName": name, "externalId": format!("ext{i}"), "displayName": format!("Scale User {i}"),
                "active": true, "name": {"givenName": "Scale", "familyName": format!("User {i}")},
                "emails": [{"value": format!("u{i}@mail.example"), "type": "work", "primary": true}],
            });
            let resp = c
                .post(format!("{b}/Users"))
                .bearer_auth(&t)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .expect("create");
            assert_eq!(resp.status(), 201);
        }
    })
    .await;
    report("stage", 16, r);
    let (now, peak) = rss();
    println!("staged {n} users in {:.0} s; RSS {now} MiB (peak {peak} MiB)", started.elapsed().as_secs_f64());

    type Query = (&'static str, Box<dyn Fn(usize) -> (String, Option<u64>) + Send + Sync>, usize);
    let queries: Vec<Query> = vec![
        (
            "userName eq",
            Box::new(move |i| {
                (format!("filter=userName%20eq%20%22user{}%40scale.example%22", (i * 7919) % n), Some(1))
            }),
            2000,
        ),
        (
            "displayName eq",
            Box::new(move |i| (format!("filter=displayName%20eq%20%22Scale%20User%20{}%22", (i * 7919) % n), Some(1))),
            2000,
        ),
        (
            "externalId eq",
            Box::new(move |i| (format!("filter=externalId%20eq%20%22ext{}%22", (i * 7919) % n), Some(1))),
            2000,
        ),
        (
            "emails.value eq",
            Box::new(move |i| {
                (format!("filter=emails.value%20eq%20%22u{}%40mail.example%22", (i * 7919) % n), Some(1))
            }),
            2000,
        ),
        (
            "userName co",
            Box::new(move |i| (format!("filter=userName%20co%20%22r{}%40scale%22&count=10", n / 2 + i), Some(1))),
            40,
        ),
        ("page 1", Box::new(|_| ("startIndex=1&count=100".to_owned(), None)), 400),
        ("page N/2", Box::new(move |i| (format!("startIndex={}&count=100", n / 2 + (i % 7) * 13), None)), 400),
        ("page N-100", Box::new(move |_| (format!("startIndex={}&count=100", n - 99), None)), 400),
    ];
    let queries = Arc::new(queries);
    for (qi, (label, _, count)) in queries.iter().enumerate() {
        for concurrency in [1, 16] {
            if *label == "userName co" && concurrency == 16 {
                continue;
            }
            let (c, b, t, qs) = (client.clone(), server.base.clone(), server.token.clone(), queries.clone());
            let r = run(*count, concurrency, move |i| {
                let (c, b, t, qs) = (c.clone(), b.clone(), t.clone(), qs.clone());
                async move {
                    let (q, expect) = (qs[qi].1)(i);
                    let (total, some) = get_list(&c, format!("{b}/Users?{q}"), &t).await;
                    match expect {
                        Some(e) => assert_eq!(total, e, "{q}"),
                        None => assert!(total == n as u64 && some, "{q}"),
                    }
                }
            })
            .await;
            report(label, concurrency, r);
        }
    }
    let (now, peak) = rss();
    println!("after the queries: RSS {now} MiB (peak {peak} MiB)");
    // Concurrent large reads: pages of 1,000 at concurrency 16.
    let (c, b, t) = (client.clone(), server.base.clone(), server.token.clone());
    let r = run(320, 16, move |i| {
        let (c, b, t) = (c.clone(), b.clone(), t.clone());
        async move {
            let (_, some) =
                get_list(&c, format!("{b}/Users?startIndex={}&count=1000", 1 + (i * 104_729) % n), &t).await;
            assert!(some);
        }
    })
    .await;
    report("page 1000", 16, r);
    let (now, peak) = rss();
    println!("after pages of 1,000 at c=16: RSS {now} MiB (peak {peak} MiB)");
    let _ = server.stop.send(());
    server.task.await.expect("server").expect("serve");
}

struct Server {
    base: String,
    token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(dir: &std::path::Path) -> Server {
    let _ = std::fs::remove_dir_all(dir);
    let path = dir.join("staging.db");
    let (_, token) = staging::rotate_token(&path, "bench").expect("token");
    let staging = staging::open(&path, Default::default()).expect("staging").resources;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/scim/v2", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(scim_bridge::http::serve(
        listener,
        staging,
        // The server's own speed is measured: no rate limit in the way.
        ScimSettings { rate_limit: None, ..Default::default() },
        Duration::from_secs(5),
        async {
            let _ = stopped.await;
        },
    ));
    Server { base, token, stop, task }
}

/// Runs `total` operations with `concurrency` workers; returns ops/s and sorted latencies.
async fn run<F, Fut>(total: usize, concurrency: usize, op: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    (total as f64 / secs, all)
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i].as_secs_f64() * 1000.0
}

fn report(what: &str, concurrency: usize, (rate, lat): (f64, Vec<Duration>)) {
    println!(
        "{what:<8} c={concurrency:<3} n={:<6} {rate:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    if a.scale {
        scale(&a, client).await;
        return;
    }
    let users = a.users.unwrap_or(10_000);
    println!("scim-bridge bench: {users} users, staging under {}", a.dir.display());
    for concurrency in [1, 16] {
        let server = start(&a.dir.join(format!("c{concurrency}"))).await;
        let ids: Arc<Vec<std::sync::OnceLock<String>>> = Arc::new((0..users).map(|_| Default::default()).collect());
        let (c, b, t, ids2) = (client.clone(), server.base.clone(), server.token.clone(), ids.clone());
        let r = run(users, concurrency, move |i| {
            let (c, b, t, ids) = (c.clone(), b.clone(), t.clone(), ids2.clone());
            async move {
                let name = format!("user{i}@bench.example");
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": name, "externalId": format!("ext{i}"), "active": true,
                    "name": {"givenName": "Bench", "familyName": format!("User {i}")},
                    "emails": [{"value": name, "type": "work", "primary": true}],
                });
                let resp = c
                    .post(format!("{b}/Users"))
                    .bearer_auth(&t)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("create");
                assert_eq!(resp.status(), 201);
                let v: serde_json::Value = resp.json().await.expect("json");
                let _ = ids[i].set(v["id"].as_str().expect("id").to_owned());
            }
        })
        .await;
        report("create", concurrency, r);

        let (c, b, t) = (client.clone(), server.base.clone(), server.token.clone());
        let n = users;
        let r = run(users, concurrency, move |i| {
            let (c, b, t) = (c.clone(), b.clone(), t.clone());
            async move {
                let k = (i * 7919) % n;
                let url = format!("{b}/Users?filter=userName%20eq%20%22user{k}%40bench.example%22");
                let v: serde_json::Value =
                    c.get(url).bearer_auth(&t).send().await.expect("filter").json().await.expect("json");
                assert_eq!(v["totalResults"], 1);
            }
        })
        .await;
        report("filter", concurrency, r);

        let (c, b, t, ids2) = (client.clone(), server.base.clone(), server.token.clone(), ids.clone());
        let r = run(users, concurrency, move |i| {
            let (c, b, t, ids) = (c.clone(), b.clone(), t.clone(), ids2.clone());
            async move {
                let id = ids[i].get().expect("created");
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "path": "title", "value": format!("Title {i}")}]});
                let resp = c
                    .patch(format!("{b}/Users/{id}"))
                    .bearer_auth(&t)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("patch");
                assert_eq!(resp.status(), 200);
            }
        })
        .await;
        report("patch", concurrency, r);

        if concurrency == 16 {
            let resp = client
                .post(format!("{}/Groups", server.base))
                .bearer_auth(&server.token)
                .header("content-type", "application/scim+json")
                .body(json!({"displayName": "Everyone"}).to_string())
                .send()
                .await
                .expect("group");
            let group: serde_json::Value = resp.json().await.expect("json");
            let gid = group["id"].as_str().expect("id").to_owned();
            let started = Instant::now();
            for chunk in ids.chunks(100) {
                let members: Vec<_> = chunk.iter().map(|id| json!({"value": id.get().expect("id")})).collect();
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Add", "path": "members", "value": members}]});
                let resp = client
                    .patch(format!("{}/Groups/{gid}", server.base))
                    .bearer_auth(&server.token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("members");
                assert_eq!(resp.status(), 204);
            }
            println!(
                "members  {} added to one group in PATCHes of 100: {:.2} s",
                ids.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let _ = server.stop.send(());
        server.task.await.expect("server").expect("serve");
    }
}
