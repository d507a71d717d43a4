//! The `scim-bridge` binary as an administrator runs it: `serve` as a child process (its log lines kept
//! for assertions, stopped by its pid), and the other commands run to completion.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");

/// A running `scim-bridge serve`.
pub struct Daemon {
    pub child: Child,
    /// The SCIM base URL it printed.
    pub base: String,
    /// Everything it wrote to standard output and standard error so far, a line each.
    pub out: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static, out: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            out.lock().unwrap().push(line);
        }
    });
}

/// Starts `scim-bridge serve` with `args` in `dir` and waits until it listens (or exits).
pub async fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Daemon, Vec<String>> {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("SCIM_BRIDGE_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn scim-bridge");
    let out: Arc<Mutex<Vec<String>>> = Arc::default();
    collect(child.stdout.take().expect("stdout"), out.clone());
    collect(child.stderr.take().expect("stderr"), out.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listening =
            out.lock().unwrap().iter().find_map(|l| l.strip_prefix("scim-bridge listening on ").map(str::to_owned));
        if let Some(base) = listening {
            return Ok(Daemon { child, base, out });
        }
        if let Ok(Some(_)) = child.try_wait() {
            tokio::time::sleep(Duration::from_millis(100)).await; // let the readers drain
            return Err(out.lock().unwrap().clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "scim-bridge did not start: {:?}", out.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("pid")
    }

    /// The lines so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.out.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits until a line containing `needle` has been written.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.lines_with(needle).into_iter().next() {
                return l;
            }
            assert!(tokio::time::Instant::now() < deadline, "no line with {needle:?}: {:?}", self.out.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it with SIGTERM (by pid) and waits for it to exit.
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Runs another command (`token`, `status`, `journal`, `retry`, `check-config`) to completion.
pub async fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SCIM_BRIDGE_CONFIG")
        .output()
        .await
        .expect("run scim-bridge")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Writes a config file into `dir`; `extra` is TOML after `[server]` (listen on a free port) and
/// `[staging]` (in `dir`).
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let staging = dir.join("data/staging.db");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[staging]\npath = {:?}\n{extra}", staging.display().to_string()),
    )
    .expect("write config");
    path
}

/// Issues a token for `tenant` with the CLI and returns it.
pub async fn token(dir: &Path, config: &Path, tenant: &str) -> String {
    let o = run(dir, &["token", tenant, "--config", &config.display().to_string()]).await;
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).expect("utf-8").trim().to_owned()
}

/// POSTs a SCIM document with a tenant's token.
pub async fn post(d: &Daemon, token: &str, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", d.base))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Rows of a query on the staging database of a daemon run in `dir` (see [`config`]), as text.
pub fn staging_rows(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(dir.join("data/staging.db")).unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get_ref(i).map(|v| match v {
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    other => other.as_str().map(str::to_owned).unwrap_or_else(|_| format!("{other:?}")),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Waits until `f` holds, polling.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PATCHes one attribute as Entra does (`"op": "Replace"` with a path), expecting 200.
pub async fn replace(d: &Daemon, token: &str, path: &str, attr: &str, value: Value) {
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": attr, "value": value}]});
    let r = reqwest::Client::new()
        .patch(format!("{}{path}", d.base))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// A reconciliation plan's actions as short strings, sorted: "update bob title", "block carol",
/// "orphan <id> <policy>", …
pub fn plan_actions(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = doc["plan"]["actions"]
        .as_array()
        .expect("plan.actions")
        .iter()
        .map(|a| {
            let who = a["name"]
                .as_str()
                .or(a["group"].as_str())
                .unwrap_or_default()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_owned();
            match a["action"].as_str().expect("action") {
                "update" => {
                    let fields: Vec<&str> = a["changes"]
                        .as_array()
                        .expect("changes")
                        .iter()
                        .map(|c| c["field"].as_str().expect("field"))
                        .collect();
                    format!("update {who} {}", fields.join(","))
                }
                "orphan" => {
                    format!("orphan {} {}", a["id"].as_str().unwrap_or_default(), a["policy"].as_str().expect("policy"))
                }
                other => format!("{other} {who}"),
            }
        })
        .collect();
    out.sort();
    out
}
