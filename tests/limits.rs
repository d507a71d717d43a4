//! The limits that keep one tenant or one hostile client from starving the others, against the real
//! binary over raw TCP where a well-behaved client would not do what is tested: the per-tenant rate
//! limit, failed authentications per address, the header, idle and body timeouts, and the connection cap.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::time::{Duration, Instant};

use common::bin::{self, Daemon};
use common::raw;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn port(d: &Daemon) -> u16 {
    d.base.trim_end_matches("/scim/v2").rsplit(':').next().unwrap().parse().unwrap()
}

/// A daemon with `server` settings added to `[server]`, and tenant blocks in `tail`.
async fn daemon(dir: &std::path::Path, server: &str, tail: &str) -> (Daemon, std::path::PathBuf) {
    let config = bin::config(dir, tail);
    let text = std::fs::read_to_string(&config).unwrap().replace("[staging]", &format!("{server}\n[staging]"));
    std::fs::write(&config, text).unwrap();
    let d = bin::start(dir, &["--config", &config.display().to_string()], &[]).await.unwrap();
    (d, config)
}

async fn connect(d: &Daemon) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port(d))).await.unwrap()
}

/// A tenant over its rate limit gets 429 with an RFC 7644 body and a whole-second Retry-After; another
/// tenant is not affected; the bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_tenant_rate_limit_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = "[[tenant]]\nname = \"busy\"\nrate_limit = { requests_per_second = 2.0, burst = 5 }\n[[tenant]]\nname = \"calm\"\n";
    let (d, config) = daemon(dir.path(), "", tenants).await;
    let busy = bin::token(dir.path(), &config, "busy").await;
    let calm = bin::token(dir.path(), &config, "calm").await;
    let client = reqwest::Client::new();
    let get = async |token: &str| client.get(format!("{}/Users", d.base)).bearer_auth(token).send().await.unwrap();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let r = get(&busy).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            let retry_after = r.headers()["retry-after"].to_str().unwrap().to_owned();
            limited = Some((retry_after, r.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(&statuses[..5], &[200; 5], "the burst passes: {statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "then 429: {statuses:?}");
    let (retry_after, body) = limited.unwrap();
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "whole seconds: {retry_after:?}");
    assert_eq!(body["status"], "429", "{body}");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{body}");
    assert_eq!(get(&calm).await.status(), 200, "another tenant has its own bucket");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&busy).await.status(), 200, "refilled at 2 per second");
    let logged = d.lines_with("over its rate limit");
    assert_eq!(logged.len(), 1, "one WARN per tenant and minute, not one per request: {logged:?}");
    assert!(logged[0].contains("busy"), "{}", logged[0]);
    let metrics = reqwest::get(format!("{}/metrics", d.base.trim_end_matches("/scim/v2"))).await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("scim_bridge_rate_limited_total{tenant=\"busy\"} 5"), "{text}");
    d.stop().await;
}

/// Failed authentications are limited per client address: past the limit even a valid token from that
/// address waits; the refusal is logged once, never with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let (d, config) = daemon(dir.path(), "auth_failures_per_minute = 3", "").await;
    let good = bin::token(dir.path(), &config, "t").await;
    let client = reqwest::Client::new();
    let get = async |token: &str| client.get(format!("{}/Users", d.base)).bearer_auth(token).send().await.unwrap();
    for n in 0..3 {
        assert_eq!(get(&format!("guess-{n}")).await.status(), 401);
    }
    let r = get("guess-3").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(get(&good).await.status(), 429, "the address waits, whatever it sends");
    assert_eq!(d.lines_with("too many failed authentications").len(), 1);
    assert!(d.lines_with("guess-").is_empty(), "tokens are never logged");
    d.stop().await;
}

/// A client that sends nothing, or its headers a byte at a time, is disconnected after the header
/// timeout; an idle kept-alive connection after the idle timeout; a body that stops arriving gets 408.
/// Normal requests are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_idle_connections_and_stalled_bodies_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = "header_timeout_seconds = 1\nidle_timeout_seconds = 2\nbody_timeout_seconds = 1";
    let (d, config) = daemon(dir.path(), server, "").await;
    let token = bin::token(dir.path(), &config, "t").await;

    let mut silent = connect(&d).await;
    let started = Instant::now();
    assert!(raw::closed_within(&mut silent, Duration::from_secs(5)).await, "a silent client is disconnected");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    let mut dribbler = connect(&d).await;
    let started = Instant::now();
    let request = raw::get("/scim/v2/Users", &token);
    let mut cut = false;
    for byte in request.as_bytes() {
        if dribbler.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(cut || raw::closed_within(&mut dribbler, Duration::from_secs(1)).await, "a byte-a-second client is cut");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Kept alive after a request, then quiet: closed.
    let mut kept = connect(&d).await;
    assert_eq!(raw::exchange(&mut kept, &request).await.status, 200);
    let started = Instant::now();
    assert!(raw::closed_within(&mut kept, Duration::from_secs(5)).await, "an idle kept-alive connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // A body that stops: 408 with a SCIM error.
    let mut stalled = connect(&d).await;
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{\"user"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let a = raw::read_answer(&mut stalled).await;
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(a.body.contains("did not arrive"), "{}", a.body);

    let r = reqwest::Client::new().get(format!("{}/Users", d.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    d.stop().await;
}

/// A flood of idle connections beyond the cap does not lock out a client with a request: the longest idle
/// connections make room, with a WARN that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_idle_clients_does_not_stop_a_normal_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = "max_connections = 50\nheader_timeout_seconds = 60\nidle_timeout_seconds = 60";
    let (d, config) = daemon(dir.path(), server, "").await;
    let token = bin::token(dir.path(), &config, "t").await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(connect(&d).await);
    }
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..5 {
        let r = client.get(format!("{}/Users", d.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let w = client
            .post(format!("{}/Users", d.base))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(format!("{{\"userName\":\"u{}@example.com\"}}", uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap();
        assert_eq!(w.status(), 201);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let warned = d.lines_with("connection limit reached");
    assert!(!warned.is_empty() && warned[0].contains("closing the longest idle"), "{warned:?}");
    // The oldest idle connections were the ones closed.
    let mut closed = 0;
    for s in idle.iter_mut().take(300) {
        if raw::closed_within(s, Duration::from_millis(20)).await {
            closed += 1;
        }
    }
    assert!(closed >= 250, "closed {closed} of the oldest 300");
    d.stop().await;
}
