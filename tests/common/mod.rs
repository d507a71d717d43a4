//! Test harness: the real SCIM server on a loopback port with its own staging database, driven by a real
//! HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use scim_bridge::scim::ScimSettings;
use scim_bridge::staging::{self, Staging};
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
        let staging = Staging::open(&staging_path, Default::default()).expect("staging");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}{}", settings.base_path.trim_end_matches('/'));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(scim_bridge::serve(listener, staging, settings, Duration::from_secs(5), async {
            let _ = stopped.await;
        }));
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestServer { addr, base, token, client, staging_path, dir, stop: Some(stop), task: Some(task) }
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

pub fn user(user_name: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true,
        "emails": [{"value": user_name, "type": "work", "primary": true}],
    })
}
