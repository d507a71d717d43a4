//! The daemon: the staging store, the SCIM endpoint and one replay worker per target, started and stopped
//! together. `main` runs it on a signal; tests run it on `127.0.0.1:0` with a future of their own.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::replay;
use crate::staging::replay_store::ReplayStore;
use crate::staging::{Staging, StagingError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Staging(#[from] StagingError),
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs until `shutdown` resolves: HTTP stops first (in-flight requests finish and are committed), then
/// the replay workers finish their current step.
///
/// # Errors
/// Invalid target configuration, an unusable staging database, or a failing listener.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Only rustls's ring provider is compiled in (sqlx and ldap3 are built with it), so rustls would pick it
    // on its own; installing it here makes the choice explicit and immune to a dependency that enables a
    // second provider, which would otherwise make rustls panic on first use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bindings = config.bindings()?;
    let staging = Staging::open(&config.staging.path, config.staging_options())?;
    let store = ReplayStore::open(&config.staging.path)?;
    let (stop_replay, replay_stopping) = tokio::sync::watch::channel(false);
    let workers = replay::spawn(bindings, store, config.replay_settings(), staging.commits(), replay_stopping);
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let served = crate::serve(listener, staging, config.scim_settings(), grace, shutdown).await;
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
/// flag, `teams` and `team_members`), if it does not exist yet.
///
/// # Errors
/// The file cannot be created.
pub fn prepare_demo_database(path: &Path) -> Result<(), rusqlite::Error> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = rusqlite::Connection::open(path)?;
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
}
