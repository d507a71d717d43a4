//! The daemon: wiring. It builds the targets from the configuration, opens staging, and runs the SCIM
//! endpoint and one replay worker per target, started and stopped together. It tells the service manager
//! how it is doing (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) and re-reads its configuration when asked
//! (SIGHUP, see `reload`). `main` runs it on signals; tests run it on `127.0.0.1:0` with a future of their
//! own.

mod reload;
mod schedules;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, MetricsConfig, TargetConfig};
use crate::http::{ConnectionLimits, Listener, MetricsAccess, ScimSettings, Service};
use crate::ops::Shared;
use crate::ops::alerts;
use crate::ops::metrics::Metrics;
use crate::ops::notify::Notifier;
use crate::ops::retention;
use crate::ops::tls::{Tls, TlsError};
use crate::replay::{self, Binding, ReplaySettings};
use crate::scim::Rules;
use crate::staging::{self, Ledger, Stores};
use crate::staging::{DaemonLock, StagingError, StagingOptions, hash_token};
use crate::targets::Target;
use crate::targets::ldap::LdapTarget;
use crate::targets::sql::SqlTarget;

pub use reload::{ConfigSource, LogLevel};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Staging(#[from] StagingError),
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds one target from its configuration. Needs a Tokio runtime (connection pools are prepared, not
/// connected).
///
/// # Errors
/// A setting that cannot work, named as `target.<name>.<key>`.
pub fn build_target(t: &TargetConfig) -> Result<Target, ConfigError> {
    match t {
        TargetConfig::Sql(c) => SqlTarget::from_config(c).map(Target::Sql),
        TargetConfig::Ldap(c) => LdapTarget::from_config(c).map(Target::Ldap),
    }
    .map_err(|e| ConfigError::Invalid { key: format!("target.{}.{}", t.name(), e.key), message: e.message })
}

/// The configured targets, each with the tenants bound to it.
///
/// # Errors
/// As for [`build_target`].
pub fn bindings(config: &Config) -> Result<Vec<Binding>, ConfigError> {
    config
        .targets
        .iter()
        .map(|t| Ok(Binding { target: build_target(t)?, tenants: config.tenants_of(t.name()) }))
        .collect()
}

/// A token read from its file or environment variable (the file trimmed), kept only as a hash; `key` is
/// the config section for errors (`metrics`, `status`).
///
/// # Errors
/// The file cannot be read, the variable is not set, or the token is empty; named by key.
fn token_hash(key: &str, file: Option<&Path>, env: Option<&str>) -> Result<Option<[u8; 32]>, ConfigError> {
    let invalid = |k: &str, message: String| ConfigError::Invalid { key: format!("{key}.{k}"), message };
    let token = match (file, env) {
        (Some(file), _) => Some((
            "token_file",
            std::fs::read_to_string(file)
                .map_err(|e| invalid("token_file", format!("cannot read {}: {e}", file.display())))?,
        )),
        (None, Some(var)) => Some((
            "token_env",
            std::env::var(var)
                .map_err(|_| invalid("token_env", format!("the environment variable {var} is not set")))?,
        )),
        (None, None) => None,
    };
    match token {
        Some((k, t)) if t.trim().is_empty() => Err(invalid(k, "the token is empty".into())),
        Some((_, t)) => Ok(Some(hash_token(t.trim()))),
        None => Ok(None),
    }
}

/// Who may read /metrics: the token is read from its file or environment variable now (and again on
/// reload), and kept only as a hash.
///
/// # Errors
/// As for `token_hash`.
pub fn metrics_access(m: &MetricsConfig) -> Result<MetricsAccess, ConfigError> {
    Ok(MetricsAccess {
        enabled: m.enabled,
        token_hash: token_hash("metrics", m.token_file.as_deref(), m.token_env.as_deref())?,
    })
}

/// The HTTP layer's settings from `[server]` and `[metrics]`, with each configured tenant's rules
/// (strict per `server.strict` or the tenant's own `strict`, and the match-email rule where a bound target
/// links accounts by email) and rate limit.
///
/// # Errors
/// The metrics token cannot be read (see [`metrics_access`]).
pub fn scim_settings(config: &Config, bindings: &[Binding]) -> Result<ScimSettings, ConfigError> {
    let mut settings = ScimSettings::from(&config.server);
    for t in &config.tenants {
        let require_match_email = bindings.iter().any(|b| b.tenants.contains(&t.name) && b.target.matches_by_email());
        let strict = t.strict.unwrap_or(config.server.strict);
        settings.rules.tenants.insert(t.name.clone(), Rules { strict, require_match_email });
        if let Some(r) = t.rate_limit {
            settings.tenant_rate_limits.insert(t.name.clone(), r);
        }
    }
    settings.metrics = metrics_access(&config.metrics)?;
    settings.status_token =
        token_hash("status", config.status.token_file.as_deref(), config.status.token_env.as_deref())?;
    settings.targets = config.targets.iter().map(|t| t.name().to_owned()).collect();
    settings.bindings = bindings.iter().map(|b| (b.target.name().to_owned(), b.tenants.clone())).collect();
    Ok(settings)
}

/// The webhooks of `[[alert]]`, their URLs read from files or the environment.
///
/// # Errors
/// A URL that cannot be read or is not http(s), named as `alert.<name>`.
pub fn alert_hooks(config: &Config) -> Result<Vec<alerts::Hook>, ConfigError> {
    config
        .alerts
        .iter()
        .map(|a| {
            alerts::resolve(a).map_err(|message| ConfigError::Invalid { key: format!("alert.{}", a.name), message })
        })
        .collect()
}

/// The connection limits of `[server]`.
pub fn connection_limits(config: &Config) -> ConnectionLimits {
    let s = &config.server;
    ConnectionLimits {
        header_timeout: Duration::from_secs(s.header_timeout_seconds),
        idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
        max_connections: s.max_connections,
    }
}

/// What a service run adds to a plain run: the service manager, reload requests, and where the
/// configuration is read from again.
#[derive(Default)]
pub struct Hooks {
    /// The service manager's notification socket (a no-op when not run by systemd).
    pub notifier: Option<Arc<Notifier>>,
    /// Each message asks for the configuration to be read again and applied (SIGHUP).
    pub reload: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    /// Reads the configuration again; without it a reload request is refused.
    pub source: Option<ConfigSource>,
    /// Changes the log filter on reload.
    pub log_level: Option<LogLevel>,
}

/// Takes the staging database for this process (see [`DaemonLock`]) and runs the daemon until `shutdown`
/// resolves.
///
/// # Errors
/// Another daemon serves the same staging database, or as for [`run_locked`].
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let lock = DaemonLock::acquire(&config.staging.path)?;
    run_locked(config, &lock, listener, shutdown).await
}

/// As [`run_service`] without service manager or reloads.
///
/// # Errors
/// As for [`run_service`].
pub async fn run_locked(
    config: &Config,
    lock: &DaemonLock,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    run_service(config, lock, listener, shutdown, Hooks::default()).await
}

/// The replay workers and reconciliation schedules of one configuration, stopped together.
struct ReplayRun {
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl ReplayRun {
    fn start(
        bindings: Vec<Binding>,
        store: &Arc<dyn Ledger>,
        config: &Config,
        hooks: Vec<alerts::Hook>,
        commits: tokio::sync::watch::Receiver<u64>,
    ) -> ReplayRun {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let alerts = alerts::start(hooks, stopping.clone());
        let mut workers = schedules::spawn(config, &alerts, &stopping);
        if config.retention.days > 0 {
            let targets = config.targets.iter().map(|t| t.name().to_owned()).collect();
            workers.push(tokio::spawn(retention::daily(
                store.clone(),
                config.retention.days,
                targets,
                stopping.clone(),
            )));
        }
        let settings = ReplaySettings { alerts, ..ReplaySettings::from(&config.replay) };
        workers.extend(replay::spawn(bindings, store.clone(), settings, commits, stopping));
        ReplayRun { stop, workers }
    }

    /// Stops the workers after their current step (at most `grace`).
    async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        for w in std::mem::take(&mut self.workers) {
            if tokio::time::timeout(grace, w).await.is_err() {
                tracing::warn!("a replay worker did not stop in time; its step will be repeated on the next start");
            }
        }
    }
}

impl Drop for ReplayRun {
    /// Workers whose run is dropped without `stop` (a task cancelled mid-reload) still stop.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs until `shutdown` resolves: HTTP stops first (in-flight requests finish and are committed), then
/// the replay workers finish their current step. `_lock` proves that this process owns the staging
/// database. READY=1 is sent once staging is open and migrated, the targets are built and the listener
/// (bound by the caller) serves.
///
/// # Errors
/// Invalid target configuration, an unusable certificate, an unusable staging database, or a failing
/// listener.
pub async fn run_service(
    config: &Config,
    _lock: &DaemonLock,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    // Only rustls's ring provider is compiled in (sqlx and ldap3 are built with it), so rustls would pick it
    // on its own; installing it here makes the choice explicit and immune to a dependency that enables a
    // second provider, which would otherwise make rustls panic on first use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bindings = bindings(config)?;
    let settings = Arc::new(Shared::new(scim_settings(config, &bindings)?));
    let tls = config.server.tls.as_ref().map(Tls::load).transpose()?.map(Arc::new);
    let Stores { resources: staging, ledger: store } =
        staging::open(&config.staging.path, StagingOptions { max_batch: config.staging.max_batch })?;
    let metrics = Arc::new(Metrics::new());
    let replay = ReplayRun::start(bindings, &store, config, alert_hooks(config)?, staging.commits());
    let limits = Arc::new(Shared::new(connection_limits(config)));
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let listener = Listener {
        listener,
        tls: tls.clone(),
        limits: limits.clone(),
        refused: Some(metrics.connections_refused.clone()),
    };
    // Readiness, metrics and the status page read staging's ledger on a handle of their own, so that a
    // scrape never waits behind a replay step.
    let service = Service {
        staging: staging.clone(),
        settings: settings.clone(),
        metrics,
        replay: Some(staging::open_ledger(&config.staging.path)?),
    };
    let notifier = hooks.notifier.unwrap_or_else(|| Arc::new(Notifier::disabled()));
    let running = reload::Running {
        config: config.clone(),
        settings,
        limits,
        tls,
        replay: Some(replay),
        store,
        commits: staging.commits(),
        source: hooks.source,
        log_level: hooks.log_level,
        grace,
    };
    let running = Arc::new(tokio::sync::Mutex::new(running));
    let (stop_reloads, mut reloads_stopped) = tokio::sync::watch::channel(false);
    let reloader = hooks.reload.map(|mut requests| {
        let (notifier, running) = (notifier.clone(), running.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    request = requests.recv() => if request.is_none() { break },
                    _ = reloads_stopped.wait_for(|s| *s) => break,
                }
                notifier.reloading();
                let mut running = running.lock().await;
                running.reload().await;
                notifier.ready(&running.status());
            }
        })
    });
    // The watchdog is fed while the runtime runs tasks and the staging writer answers: a hung writer (a
    // stuck disk, a bug) gets the daemon restarted by systemd, which a timer thread alone would hide.
    let watchdog = notifier.watchdog_interval().map(|every| {
        let (notifier, staging) = (notifier.clone(), staging.clone());
        tokio::spawn(async move {
            loop {
                if staging.writer_answers(every / 2).await {
                    notifier.watchdog();
                } else {
                    tracing::error!(
                        seconds = every.as_secs(),
                        "the staging writer did not answer; not feeding the watchdog"
                    );
                }
                tokio::time::sleep(every).await;
            }
        })
    });
    notifier.ready(&running.lock().await.status());
    let stopping = notifier.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.stopping();
    };
    let served = crate::http::serve_with(listener, service, grace, shutdown).await;
    // A reload in progress completes; then the replay workers of the configuration in force stop.
    let _ = stop_reloads.send(true);
    if let Some(task) = reloader {
        let _ = task.await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    let replay = running.lock().await.replay.take();
    if let Some(r) = replay {
        r.stop(grace).await;
    }
    served?;
    Ok(())
}

/// Creates the demo application database of the embedded default (an `employees` table with a `blocked`
/// flag, `teams` and `team_members`), private to its owner, if it does not exist yet.
///
/// # Errors
/// The file cannot be created.
pub fn prepare_demo_database(path: &Path) -> Result<(), DaemonError> {
    crate::staging::private_file(path)?;
    let conn = rusqlite::Connection::open(path).map_err(StagingError::from)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS employees (
             id         INTEGER PRIMARY KEY AUTOINCREMENT,
             email      TEXT NOT NULL,
             first_name TEXT,
             last_name  TEXT,
             full_name  TEXT,
             job_title  TEXT,
             department TEXT,
             blocked    INTEGER NOT NULL DEFAULT 0,
             scim_id    TEXT
         );
         CREATE TABLE IF NOT EXISTS teams (
             id      INTEGER PRIMARY KEY AUTOINCREMENT,
             name    TEXT NOT NULL,
             scim_id TEXT
         );
         CREATE TABLE IF NOT EXISTS team_members (
             team_id     INTEGER NOT NULL REFERENCES teams(id),
             employee_id INTEGER NOT NULL REFERENCES employees(id),
             PRIMARY KEY (team_id, employee_id)
         );
         -- The lookups replay makes: by email (case-insensitive), by SCIM id, by team name, by member.
         CREATE INDEX IF NOT EXISTS employees_email_lower_idx ON employees (lower(email));
         CREATE INDEX IF NOT EXISTS employees_scim_id_idx ON employees (scim_id);
         CREATE INDEX IF NOT EXISTS teams_name_lower_idx ON teams (lower(name));
         CREATE INDEX IF NOT EXISTS teams_scim_id_idx ON teams (scim_id);
         CREATE INDEX IF NOT EXISTS team_members_employee_id_idx ON team_members (employee_id);",
    )
    .map_err(StagingError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED;

    #[tokio::test]
    async fn example_config_is_valid() {
        let text = include_str!("../../config.toml.example");
        let c = Config::parse(text).unwrap();
        assert_eq!(bindings(&c).unwrap()[0].tenants, ["entra-prod"]);
    }

    /// The commented LDAP targets of the example (OpenLDAP, Active Directory, 389-DS), uncommented, parse
    /// and build (with a password file that exists, and the system's CAs instead of ca_file).
    #[tokio::test]
    async fn example_ldap_targets_are_valid() {
        let text = include_str!("../../config.toml.example");
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let mut names = Vec::new();
        for block in text.split("\n# [[target]]\n").skip(1) {
            let mut toml = String::from("[[target]]\n");
            for line in block.lines().take_while(|l| l.starts_with('#') && !l.starts_with("# ----")) {
                let line = line.strip_prefix("# ").unwrap_or("");
                if line.starts_with("ca_file") {
                    continue;
                }
                if line.starts_with("password_file") {
                    toml.push_str(&format!("password_file = {:?}\n", pw.display().to_string()));
                } else {
                    toml.push_str(line);
                    toml.push('\n');
                }
            }
            let name = toml.lines().find_map(|l| l.strip_prefix("name = ")).unwrap().trim_matches('"').to_owned();
            let tenant = format!("[[tenant]]\nname = \"t\"\ntargets = [{name:?}]\n");
            let c = Config::parse(&format!("{tenant}{toml}")).unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
            bindings(&c).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "ad" {
                // A random initial password needs TLS: plain ldap:// is refused, naming the key.
                let plain = toml.replace("ldaps://dc1.corp.example.com:636", "ldap://dc1.corp.example.com:389");
                let c = Config::parse(&format!("{tenant}{plain}")).unwrap();
                let e = bindings(&c).map(|_| ()).unwrap_err().to_string();
                assert!(e.contains("target.ad.disable.initial_password") && e.contains("TLS"), "{e}");
            }
            names.push(name);
        }
        assert_eq!(names, ["directory", "ad", "ds389"]);
    }

    #[tokio::test]
    async fn embedded_default_parses_and_builds() {
        let c = Config::parse(EMBEDDED).unwrap();
        assert_eq!(c.tenants[0].name, "default");
        assert_eq!(bindings(&c).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn target_errors_name_the_key() {
        let base = "[[tenant]]\nname = \"t\"\ntargets = [\"crm\"]\n[[target]]\ntype = \"sql\"\nname = \"crm\"\nurl = \"sqlite:///tmp/x.db\"\n[target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n[target.users.columns]\n";
        let c = Config::parse(&format!("{base}first = \"name.givenName\"\n")).unwrap();
        assert_eq!(bindings(&c).unwrap()[0].tenants, ["t"]);
        for (extra, needle) in [
            ("first = \"name.shoeSize\"\n", "target.crm.users.columns.first"),
            ("\"bad col\" = \"title\"\n", "target.crm.users.columns.bad col"),
            ("blocked = { from = \"title\", true = 1, false = 0 }\n", "target.crm.users.columns.blocked"),
        ] {
            let c = Config::parse(&format!("{base}{extra}")).unwrap();
            let e = bindings(&c).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = Config::parse(&base.replace("targets = [\"crm\"]", "targets = [\"nope\"]")).unwrap_err().to_string();
        assert!(e.contains("tenant.t.targets") && e.contains("nope"), "{e}");
        let e = Config::parse(&base.replace("url = ", "uri = ")).unwrap_err().to_string();
        assert!(e.contains("uri"), "{e}");
        let e = Config::parse(&base.replace("[target.users]", "groups = \"ignor\"\n[target.users]"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ignor") && e.contains("\"ignore\""), "{e}");
    }
}
