//! Test harness: the real SCIM server on a loopback port with its own staging database, driven by a real
//! HTTP client.
#![allow(dead_code)]

pub mod bin;
pub mod certs;
pub mod db;
pub mod proxy;
pub mod raw;
pub mod servers;
pub mod slapd;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use scim_bridge::http::ScimSettings;
use scim_bridge::staging;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub token: String,
    pub client: Client,
    pub staging_path: PathBuf,
    /// How many targets the daemon replays into (wait_replayed waits for each).
    pub targets: usize,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(ScimSettings::default()).await
    }

    pub async fn start_with(settings: ScimSettings) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let staging_path = dir.path().join("staging.db");
        let (_, token) = staging::rotate_token(&staging_path, "tenant-a").expect("token");
        let staging = staging::open(&staging_path, Default::default()).expect("staging").resources;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}{}", settings.base_path.trim_end_matches('/'));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(scim_bridge::http::serve(listener, staging, settings, Duration::from_secs(5), async {
            let _ = stopped.await;
        }));
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestServer { addr, base, token, client, staging_path, targets: 0, dir, stop: Some(stop), task: Some(task) }
    }

    /// The whole daemon (SCIM, staging, replay) with a configuration: `extra` is TOML appended after the
    /// staging section (tenants, targets, replay settings). Tokens are issued for tenant-a (self.token).
    pub async fn start_daemon(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let staging_path = dir.path().join("staging.db");
        let text = format!("[staging]\npath = {:?}\n{extra}", staging_path.display().to_string());
        let config = scim_bridge::config::Config::parse(&text).expect("test config");
        let (_, token) = staging::rotate_token(&staging_path, "tenant-a").expect("token");
        Self::launch(config, dir, staging_path, token).await
    }

    async fn launch(
        config: scim_bridge::config::Config,
        dir: TempDir,
        staging_path: PathBuf,
        token: String,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}{}", config.server.base_path.trim_end_matches('/'));
        let targets = config.targets.len();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            scim_bridge::daemon::run(&config, listener, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestServer { addr, base, token, client, staging_path, targets, dir, stop: Some(stop), task: Some(task) }
    }

    /// Stops the daemon and starts it again on the same staging database and configuration.
    pub async fn restart_daemon(self, extra: &str) -> TestServer {
        let token = self.token.clone();
        let staging_path = self.staging_path.clone();
        let dir = self.stop().await;
        let text = format!("[staging]\npath = {:?}\n{extra}", staging_path.display().to_string());
        let config = scim_bridge::config::Config::parse(&text).expect("test config");
        Self::launch(config, dir, staging_path, token).await
    }

    /// Waits until every target has replayed the whole journal and nothing is due for a retry.
    pub async fn wait_replayed(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let conn = rusqlite::Connection::open(&self.staging_path).expect("staging");
            let head: i64 =
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| r.get(0)).expect("head");
            let behind: i64 = conn
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM replay_cursor WHERE last_seq < ?1) + (SELECT COUNT(*) FROM replay_failures WHERE state = 'retry')",
                    [head],
                    |r| r.get(0),
                )
                .expect("progress");
            let targets: i64 = conn.query_row("SELECT COUNT(*) FROM replay_cursor", [], |r| r.get(0)).expect("cursors");
            if behind == 0 && targets as usize >= self.targets {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replay did not catch up within 30 s (head {head}, behind {behind})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `scim-bridge reconcile --json` (with `args`) on this daemon's staging database, with `extra` as
    /// the rest of the configuration, and returns the first target's document.
    pub async fn reconcile(&self, extra: &str, args: &[&str]) -> Value {
        let dir = self.staging_path.parent().expect("staging directory");
        let cfg = dir.join("reconcile.toml");
        let text = format!("[staging]\npath = {:?}\n{extra}", self.staging_path.display().to_string());
        std::fs::write(&cfg, text).expect("write config");
        let cfg = cfg.display().to_string();
        let mut all = vec!["reconcile", "--json", "--config", cfg.as_str()];
        all.extend(args);
        let o = bin::run(dir, &all).await;
        assert!(o.status.success(), "{}", bin::text(&o));
        serde_json::from_slice::<Value>(&o.stdout).expect("JSON")[0].clone()
    }

    /// Rows of the staging database (failures, audit, links) for assertions.
    pub fn staging_rows(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(&self.staging_path).expect("staging");
        let mut stmt = conn.prepare(sql).expect("sql");
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Real(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                    })
                })
                .collect()
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// A token for another tenant of the same server.
    pub fn token_for(&self, tenant: &str) -> String {
        staging::rotate_token(&self.staging_path, tenant).expect("token").1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(&self.token)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        send_as(self, &self.token, method, path, body).await
    }

    /// Stops the server gracefully; returns its directory so that a test can inspect the files after.
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server");
        }
        self.dir
    }
}

pub async fn send_as(s: &TestServer, token: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut r = s.client.request(method, s.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.header("content-type", "application/scim+json").body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    decode(resp).await
}

pub async fn decode(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, v)
}

/// A PatchOp body.
pub fn patch(ops: Value) -> Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// POSTs as `token` and returns the new resource's id, expecting 201.
pub async fn post_as(s: &TestServer, token: &str, path: &str, body: &Value) -> String {
    let (status, v) = send_as(s, token, reqwest::Method::POST, path, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

/// Sends a request and expects 200 or 204.
pub async fn expect_ok(s: &TestServer, method: reqwest::Method, path: &str, body: Option<&Value>) {
    let (status, v) = s.send(method.clone(), path, body).await;
    assert!(status == 200 || status == 204, "{method} {path}: {status} {v}");
}

/// PATCHes one attribute the way Entra does (`"op": "Replace"` with a path), expecting success.
pub async fn replace(s: &TestServer, resource: &str, attr: &str, value: Value) {
    let body = patch(serde_json::json!([{"op": "Replace", "path": attr, "value": value}]));
    expect_ok(s, reqwest::Method::PATCH, resource, Some(&body)).await;
}

pub fn user(user_name: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true,
        "emails": [{"value": user_name, "type": "work", "primary": true}],
    })
}
