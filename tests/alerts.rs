//! Alerts received by a webhook listener the test starts: a PostgreSQL target cut off through a TCP
//! forwarder gives exactly one "down" and one "recovered" message however many retries happen in between,
//! and a dead letter gives one message naming the user; the text format is what Slack and Teams accept.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bin::{self, post, until};
use common::db::{Backend, TestDb};
use common::proxy::Proxy;
use serde_json::{Value, json};

/// A webhook receiver: every POSTed body, by path.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let store = store.clone();
        async move {
            store.lock().unwrap().push((uri.path().to_owned(), serde_json::from_str(&body).unwrap_or(Value::Null)));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_dead_letters_are_told_once() {
    let (hook, got) = receiver().await;
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    db.exec("ALTER TABLE employees ADD CONSTRAINT no_banned CHECK (title IS NULL OR title <> 'Banned')").await;
    let proxy = Proxy::start(0, 5432).await;
    let url = db.url.replace(":5432/", &format!(":{}/", proxy.port));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.url");
    std::fs::write(&secret_file, format!("{hook}/services/T000/B000/s3cr3t\n")).unwrap();
    let extra = format!(
        "[replay]\nmax_attempts = 1\nprobe_interval_seconds = 1\nbackoff_initial_ms = 100\nbackoff_max_seconds = 1\n\
         [[alert]]\nname = \"ops-json\"\nurl = \"{hook}/json\"\n\
         [[alert]]\nname = \"chat\"\nurl_file = {secret_file:?}\nformat = \"text\"\nevents = [\"target_down\", \"target_up\"]\n\
         [[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"{url}\"\ntimeout_seconds = 2\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n\
         [target.users.columns]\nemail = \"@match_email\"\ntitle = \"title\"\n"
    );
    let config = bin::config(dir.path(), &extra);
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &config.display().to_string()], &[]).await.unwrap();
    let of = |path: &str, event: &str| -> Vec<Value> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(p, v)| {
                p == path && (v["event"] == event || v["text"].as_str().is_some_and(|t| t.contains(event)))
            })
            .map(|(_, v)| v.clone())
            .collect()
    };

    let port = proxy.cut();
    until("one down message", async || of("/json", "target_down").len() == 1).await;
    // Many retries later, still one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(of("/json", "target_down").len(), 1, "{:?}", got.lock().unwrap());
    let down = &of("/json", "target_down")[0];
    assert_eq!(down["target"], "crm");
    assert!(down["error"].as_str().unwrap().contains(&port.to_string()), "{down}");
    assert_eq!(of("/services/T000/B000/s3cr3t", "is down").len(), 1, "the text webhook too: {:?}", got.lock().unwrap());

    let _back = Proxy::start(port, 5432).await;
    until("one recovered message", async || of("/json", "target_up").len() == 1).await;
    assert_eq!(of("/services/T000/B000/s3cr3t", "reachable again").len(), 1);

    assert_eq!(
        post(&d, &token, "/Users", &json!({"userName": "mallory@example.com", "title": "Banned"})).await.status(),
        201
    );
    until("one dead letter message", async || of("/json", "dead_letter").len() == 1).await;
    let dead = &of("/json", "dead_letter")[0];
    assert_eq!(dead["name"], "mallory@example.com", "{dead}");
    assert!(dead["error"].as_str().unwrap().contains("no_banned"), "{dead}");
    assert!(dead["text"].as_str().unwrap().contains("mallory@example.com"), "{dead}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(of("/services/T000/B000/s3cr3t", "dead letter").len(), 0, "the chat hook wants outages only");
    assert!(d.lines_with("s3cr3t").is_empty(), "the secret URL is never logged");
    d.stop().await;
}
