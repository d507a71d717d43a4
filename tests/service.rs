//! scim-bridge as a service: the notify protocol (against a NOTIFY_SOCKET the test binds; systemd is not
//! PID 1 on these machines), reload on SIGHUP (tokens, certificate, metrics token, refusals), TLS with a
//! test CA, readiness through a target outage, metrics after known traffic, JSON logs, and graceful
//! shutdown under load. Each test runs the real binary (tests/common/bin.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bin::{self, Daemon, post, until};
use common::db::{Backend, TestDb};
use common::proxy::Proxy;
use common::raw;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// `[[tenant]] t` bound to a SQLite target `crm` (the demo schema) in `dir`.
fn sqlite_target(dir: &Path) -> String {
    let app = dir.join("app.db");
    scim_bridge::daemon::prepare_demo_database(&app).unwrap();
    format!(
        "[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"sqlite://{}\"\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n[target.users.columns]\n\
         email = \"@match_email\"\n",
        app.display()
    )
}

fn user(name: &str) -> Value {
    json!({"userName": name, "emails": [{"value": name, "primary": true}]})
}

fn kill(d: &Daemon, signal: &str) {
    let ok = std::process::Command::new("kill").args([signal, &d.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// The daemon's origin (scheme, host and port) from its SCIM base URL.
fn origin(d: &Daemon) -> String {
    d.base.trim_end_matches("/scim/v2").to_owned()
}

fn port(d: &Daemon) -> u16 {
    origin(d).rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_hears_ready_watchdog_reload_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let listening = heard.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => listening.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            if Arc::strong_count(&listening) == 1 {
                return;
            }
        }
    });
    let heard_now = || heard.lock().unwrap().clone();
    let config = bin::config(dir.path(), &sqlite_target(dir.path()));
    let cfg = config.display().to_string();
    let env = [("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")];
    let d = bin::start(dir.path(), &["--config", &cfg], &env).await.unwrap();

    until("READY=1", async || heard_now().iter().any(|m| m.starts_with("READY=1\nSTATUS=serving"))).await;
    until("WATCHDOG=1 about every 200 ms", async || heard_now().iter().filter(|m| *m == "WATCHDOG=1").count() >= 4)
        .await;
    // /healthz answers once READY=1 was sent: the listener was bound before.
    let health = reqwest::get(format!("{}/healthz", origin(&d))).await.unwrap();
    assert_eq!(health.status(), 200);

    kill(&d, "-HUP");
    until("RELOADING=1 then READY=1 again", async || {
        let m = heard_now();
        let reloading = m.iter().position(|m| m.starts_with("RELOADING=1"));
        reloading.is_some_and(|i| m[i..].iter().any(|m| m.starts_with("READY=1")))
    })
    .await;
    d.wait_for_line("configuration reloaded").await;

    d.stop().await;
    until("STOPPING=1", async || heard_now().iter().any(|m| m.starts_with("STOPPING=1"))).await;
    let m = heard_now();
    let ready = m.iter().position(|m| m.starts_with("READY=1")).unwrap();
    assert!(m[..ready].iter().all(|m| !m.starts_with("WATCHDOG")), "no watchdog before READY: {m:?}");
}

/// A client for the daemon's TLS listener that trusts only `ca`.
fn tls_client(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(port: u16, ca: &Path) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tls_client(ca).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await
}

/// TLS with a test CA (TLS 1.2 and 1.3 only); on SIGHUP a renewed certificate (here: from another CA) and a rotated token take
/// effect while a client keeps its connection open, and that connection goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_and_token_reload_keep_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    common::certs::make_certificates(d_, "old-");
    common::certs::make_certificates(d_, "new-");
    std::fs::copy(d_.join("old-server.pem"), d_.join("cert.pem")).unwrap();
    std::fs::copy(d_.join("old-server.key"), d_.join("key.pem")).unwrap();
    let extra = format!("[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", d_.join("cert.pem"), d_.join("key.pem"));
    let config = bin::config(d_, &extra);
    let cfg = config.display().to_string();
    let old_token = bin::token(d_, &config, "t").await;
    let d = bin::start(d_, &["--config", &cfg], &[]).await.unwrap();
    assert!(d.base.starts_with("https://"), "{}", d.base);
    let port = port(&d);

    // A client trusting the test CA: the handshake succeeds and SCIM answers over TLS 1.3.
    let mut first = tls_connect(port, &d_.join("old-ca.pem")).await.unwrap();
    assert_eq!(first.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let a = raw::exchange(&mut first, &raw::get("/scim/v2/ServiceProviderConfig", &old_token)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // TLS 1.2 is offered too, TLS 1.1 is not.
    for (version, accepted) in [("-tls1_2", true), ("-tls1_1", false)] {
        let o = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-CAfile"])
            .arg(d_.join("old-ca.pem"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout);
        assert_eq!(!said.contains("Cipher is (NONE)"), accepted, "{version}: {said}");
    }
    assert!(tls_connect(port, &d_.join("new-ca.pem")).await.is_err(), "not yet the new certificate");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, raw::get("/healthz", "-").as_bytes()).await.unwrap();
    assert!(raw::closed_within(&mut plain, Duration::from_secs(5)).await);

    // A connection kept open across the reload.
    let mut held = tls_connect(port, &d_.join("old-ca.pem")).await.unwrap();
    let a = raw::exchange(&mut held, &raw::get("/scim/v2/Users", &old_token)).await;
    assert_eq!(a.status, 200);

    let new_token = bin::token(d_, &config, "t").await;
    std::fs::copy(d_.join("new-server.pem"), d_.join("cert.pem")).unwrap();
    std::fs::copy(d_.join("new-server.key"), d_.join("key.pem")).unwrap();
    kill(&d, "-HUP");
    d.wait_for_line("configuration reloaded").await;

    let a = raw::exchange(&mut held, &raw::get("/scim/v2/Users", &new_token)).await;
    assert_eq!(a.status, 200, "the open connection goes on, with the new token: {}", a.body);
    let a = raw::exchange(&mut held, &raw::get("/scim/v2/Users", &old_token)).await;
    assert_eq!(a.status, 401, "the rotated-out token is refused: {}", a.body);
    let mut fresh = tls_connect(port, &d_.join("new-ca.pem")).await.expect("new connections get the new certificate");
    assert_eq!(raw::exchange(&mut fresh, &raw::get("/scim/v2/Users", &new_token)).await.status, 200);
    assert!(tls_connect(port, &d_.join("old-ca.pem")).await.is_err(), "the old certificate is gone");

    // A broken certificate file on reload keeps the running certificate.
    std::fs::write(d_.join("cert.pem"), "not a certificate").unwrap();
    kill(&d, "-HUP");
    let refused = d.wait_for_line("NOT reloaded").await;
    assert!(refused.contains("server.tls.cert_file"), "{refused}");
    assert!(tls_connect(port, &d_.join("new-ca.pem")).await.is_ok());
    d.stop().await;
}

/// Reload applies what it can (the metrics token file, limits) and refuses the whole file, naming the
/// key, when a setting needs a restart or the file is broken; the daemon keeps serving either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_or_refuses_whole_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    let token_file = d_.join("metrics.token");
    std::fs::write(&token_file, "first-secret\n").unwrap();
    let metrics = format!("[metrics]\ntoken_file = {token_file:?}\n");
    let config = bin::config(d_, &metrics);
    let cfg = config.display().to_string();
    // A fixed port, so that the file names the address the daemon listens on.
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1:0", &listen);
    std::fs::write(&config, &text).unwrap();
    let d = bin::start(d_, &["--config", &cfg], &[]).await.unwrap();
    let client = reqwest::Client::new();
    let scrape = async |token: Option<&str>| {
        let mut r = client.get(format!("http://{listen}/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().status().as_u16()
    };
    assert_eq!(scrape(None).await, 401);
    assert_eq!(scrape(Some("first-secret")).await, 200);

    std::fs::write(&token_file, "second-secret").unwrap();
    kill(&d, "-HUP");
    d.wait_for_line("configuration reloaded").await;
    assert_eq!(scrape(Some("second-secret")).await, 200);
    assert_eq!(scrape(Some("first-secret")).await, 401);

    for (broken, needle) in [
        (text.replace(&listen, "127.0.0.1:1"), "server.listen"),
        (format!("{text}\n[server]\nport = 1\n"), "server"),
        (text.replace("[metrics]", "[metrics]\nenabled = \"yes\""), "enabled"),
        (format!("{text}\n[[target]]\ntype = \"sql\"\nname = \"x\"\nurl = \"oracle://db\"\n"), "target"),
    ] {
        std::fs::write(&config, &broken).unwrap();
        let before = d.lines_with("NOT reloaded").len();
        kill(&d, "-HUP");
        until("the reload is refused", async || d.lines_with("NOT reloaded").len() > before).await;
        let line = d.lines_with("NOT reloaded").pop().unwrap();
        assert!(line.contains(needle), "{needle}: {line}");
        assert_eq!(reqwest::get(format!("{}/healthz", origin(&d))).await.unwrap().status(), 200);
        assert_eq!(scrape(Some("second-secret")).await, 200, "the previous configuration stays in force");
    }
    d.stop().await;
}

/// /readyz is 503 naming the target while its database port is cut, and 200 again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_target_outage() {
    let db = TestDb::create(Backend::Postgres).await;
    db.create_tables("").await;
    let proxy = Proxy::start(0, 5432).await;
    let url = db.url.replace(":5432/", &format!(":{}/", proxy.port));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[replay]\nprobe_interval_seconds = 1\nbackoff_initial_ms = 100\nbackoff_max_seconds = 1\n\
         [[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"{url}\"\n\
         timeout_seconds = 2\n[target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n\
         [target.users.columns]\nemail = \"@match_email\"\n"
    );
    let config = bin::config(dir.path(), &extra);
    let d = bin::start(dir.path(), &["--config", &config.display().to_string()], &[]).await.unwrap();
    let ready = async || {
        let r = reqwest::get(format!("{}/readyz", origin(&d))).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    until("ready", async || ready().await.0 == 200).await;
    let (_, body) = ready().await;
    assert_eq!(body["targets"]["crm"]["ready"], true, "{body}");
    assert_eq!(body["staging"]["ready"], true, "{body}");

    let port = proxy.cut();
    until("not ready while the port is cut", async || ready().await.0 == 503).await;
    let (_, body) = ready().await;
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(body["targets"]["crm"]["ready"], false, "{body}");
    assert!(body["targets"]["crm"]["error"].as_str().unwrap().contains(&port.to_string()), "{body}");
    assert_eq!(reqwest::get(format!("{}/healthz", origin(&d))).await.unwrap().status(), 200, "alive all the same");

    let _back = Proxy::start(port, 5432).await;
    until("ready again", async || ready().await.0 == 200).await;
    d.stop().await;
}

/// Counters and gauges after known traffic: requests by route, method and status, accepted changes,
/// authentication failures, the journal head, replay lag reaching zero, target reachability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), &sqlite_target(dir.path()));
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &config.display().to_string()], &[]).await.unwrap();
    for n in 0..3 {
        assert_eq!(post(&d, &token, "/Users", &user(&format!("u{n}@example.com"))).await.status(), 201);
    }
    assert_eq!(post(&d, &token, "/Users", &json!({"userName": ""})).await.status(), 400);
    let client = reqwest::Client::new();
    for bad in ["wrong-1", "wrong-2"] {
        let r = client.get(format!("{}/Users", d.base)).bearer_auth(bad).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = client.get(format!("{}/Users/nosuch", d.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let scrape = async || reqwest::get(format!("{}/metrics", origin(&d))).await.unwrap().text().await.unwrap();
    until("replayed: no lag", async || scrape().await.contains("scim_bridge_replay_lag_changes{target=\"crm\"} 0"))
        .await;
    let text = scrape().await;
    assert!(d.lines_with("wrong-1").is_empty(), "a presented token is never logged");
    for needle in [
        "scim_bridge_http_requests_total{route=\"/scim/v2/Users\",method=\"POST\",status=\"201\"} 3",
        "scim_bridge_http_requests_total{route=\"/scim/v2/Users\",method=\"POST\",status=\"400\"} 1",
        "scim_bridge_http_requests_total{route=\"/scim/v2/Users/{id}\",method=\"GET\",status=\"404\"} 1",
        "scim_bridge_http_request_duration_seconds_count{route=\"/scim/v2/Users\",method=\"POST\"} 4",
        "scim_bridge_changes_accepted_total{tenant=\"t\"} 3",
        "scim_bridge_authentication_failures_total{reason=\"invalid\"} 2",
        "scim_bridge_journal_head 3",
        "scim_bridge_replay_lag_seconds{target=\"crm\"} 0",
        "scim_bridge_replay_dead_letters{target=\"crm\"} 0",
        "scim_bridge_target_up{target=\"crm\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    d.stop().await;
}

/// `[log] format = "json"`: one JSON object per line with the same fields as the text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), "[log]\nformat = \"json\"\n");
    let d = bin::start(dir.path(), &["--config", &config.display().to_string()], &[]).await.unwrap();
    d.wait_for_line("scim-bridge started").await;
    let out = d.out.clone();
    d.stop().await;
    let logged: Vec<String> = out.lock().unwrap().clone();
    let started = logged.iter().find(|l| l.contains("scim-bridge started")).unwrap();
    let v: Value = serde_json::from_str(started).unwrap_or_else(|e| panic!("{e}: {started}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["message"], "scim-bridge started", "{v}");
    assert!(v["listen"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    for l in logged.iter().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

/// Under systemd (JOURNAL_STREAM names the file stderr is), text logs carry no timestamps: the journal
/// adds its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_text_logs_have_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = bin::config(dir.path(), "");
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = tokio::process::Command::new(bin::BIN)
        .args(["serve", "--config", &config.display().to_string()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until("started", async || std::fs::read_to_string(&log).unwrap().contains("scim-bridge started")).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("scim-bridge started")).unwrap();
    assert!(line.starts_with(" INFO") || line.starts_with("INFO"), "no timestamp first: {line:?}");
    assert!(!line.contains("\u{1b}["), "no colour: {line:?}");
}

/// SIGTERM while sixteen clients write: every acknowledged change is there after a restart, requests
/// still arriving are refused or answered (never half-stored), and a slow upload does not hold the
/// shutdown for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "shutdown_grace_seconds = 20\nrate_limit = { requests_per_second = 1e9, burst = 1000000 }\n";
    let config = bin::config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("[staging]", &format!("{extra}[staging]"));
    std::fs::write(&config, text).unwrap();
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, base, token, acked) = (client.clone(), d.base.clone(), token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("w{w}-n{n}@example.com");
                let sent = client
                    .post(format!("{base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(user(&name).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    Ok(r) => assert_eq!(r.status(), 503, "only 201 or a retry-later while stopping"),
                    Err(_) => return,
                }
            }
        }));
    }
    // A slow upload: headers and half a body, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", port(&d))).await.unwrap();
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{\"userName\":"
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopping = Instant::now();
    let pid = d.pid();
    let out = d.out.clone();
    let mut child = d.child;
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let answer = raw::read_answer(&mut slow).await;
    assert_eq!(answer.status, 503, "the slow upload is cut short at shutdown: {}", answer.body);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops").unwrap();
    assert!(status.success(), "{:?}", out.lock().unwrap());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "did not wait out the grace period: {:?}",
        stopping.elapsed()
    );
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "load while stopping: {}", acked.len());

    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let mut present = std::collections::HashSet::new();
    let mut start = 1;
    loop {
        let page: Value = client
            .get(format!("{}/Users?startIndex={start}&count=1000", d.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let resources = page["Resources"].as_array().cloned().unwrap_or_default();
        if resources.is_empty() {
            break;
        }
        start += resources.len();
        present.extend(resources.iter().map(|r| r["userName"].as_str().unwrap().to_owned()));
    }
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged creates lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    d.stop().await;
}
