//! The daemon: wiring. It builds the targets from the configuration, opens staging, and runs the SCIM
//! endpoint and one replay worker per target, started and stopped together. `main` runs it on a signal;
//! tests run it on `127.0.0.1:0` with a future of their own.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, TargetConfig};
use crate::http::ScimSettings;
use crate::replay::{self, Binding, ReplaySettings};
use crate::scim::Rules;
use crate::staging::replay_state::ReplayStore;
use crate::staging::{DaemonLock, Staging, StagingError, StagingOptions};
use crate::targets::Target;
use crate::targets::ldap::LdapTarget;
use crate::targets::sql::SqlTarget;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
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
        .map(|t| {
            let tenants = config
                .tenants
                .iter()
                .filter(|tc| tc.targets.iter().any(|n| n == t.name()))
                .map(|tc| tc.name.clone())
                .collect();
            Ok(Binding { target: build_target(t)?, tenants })
        })
        .collect()
}

/// The SCIM endpoint's settings from `[server]`, with each configured tenant's rules: strict per
/// `server.strict` (or the tenant's own `strict`), and the match-email rule where a bound target links
/// accounts by email.
pub fn scim_settings(config: &Config, bindings: &[Binding]) -> ScimSettings {
    let mut settings = ScimSettings::from(&config.server);
    for t in &config.tenants {
        let require_match_email = bindings.iter().any(|b| b.tenants.contains(&t.name) && b.target.matches_by_email());
        let strict = t.strict.unwrap_or(config.server.strict);
        settings.rules.tenants.insert(t.name.clone(), Rules { strict, require_match_email });
    }
    settings
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

/// Runs until `shutdown` resolves: HTTP stops first (in-flight requests finish and are committed), then
/// the replay workers finish their current step. `_lock` proves that this process owns the staging
/// database.
///
/// # Errors
/// Invalid target configuration, an unusable staging database, or a failing listener.
pub async fn run_locked(
    config: &Config,
    _lock: &DaemonLock,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Only rustls's ring provider is compiled in (sqlx and ldap3 are built with it), so rustls would pick it
    // on its own; installing it here makes the choice explicit and immune to a dependency that enables a
    // second provider, which would otherwise make rustls panic on first use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bindings = bindings(config)?;
    let settings_scim = scim_settings(config, &bindings);
    let staging = Staging::open(&config.staging.path, StagingOptions { max_batch: config.staging.max_batch })?;
    let store = ReplayStore::open(&config.staging.path)?;
    let (stop_replay, replay_stopping) = tokio::sync::watch::channel(false);
    let settings = ReplaySettings::from(&config.replay);
    let workers = replay::spawn(bindings, store, settings, staging.commits(), replay_stopping);
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let served = crate::http::serve(listener, staging, settings_scim, grace, shutdown).await;
    let _ = stop_replay.send(true);
    for w in workers {
        if tokio::time::timeout(grace, w).await.is_err() {
            tracing::warn!("a replay worker did not stop in time; its step will be repeated on the next start");
        }
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
         );",
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
        let text = include_str!("../config.toml.example");
        let c = Config::parse(text).unwrap();
        assert_eq!(bindings(&c).unwrap()[0].tenants, ["entra-prod"]);
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
