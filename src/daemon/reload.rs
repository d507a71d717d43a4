//! Reload (SIGHUP): read the configuration again and apply what can change while serving — tenants and
//! their rules and rate limits, targets (their replay workers restart), timeouts and limits, the metrics
//! token, the TLS certificate, the log level. A change that needs a restart (the listen address, the base
//! path, staging, the log format, turning TLS on or off) refuses the whole reload with an ERROR naming the
//! key; so does a file that does not parse, a target that cannot be built or a certificate that cannot be
//! read. A refused reload changes nothing: the daemon goes on with the configuration it had.
//!
//! Tokens need no reload: they are looked up in staging on every request, so `scim-bridge token` and
//! `token revoke` take effect at once.

use std::sync::Arc;
use std::time::Duration;

use super::{ReplayRun, alert_hooks, bindings, connection_limits, scim_settings};
use crate::config::Config;
use crate::http::{ConnectionLimits, ScimSettings};
use crate::ops::Shared;
use crate::ops::tls::{Tls, server_config};
use crate::staging::Ledger;

/// Reads the configuration again (the file, with the same overrides as at start).
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Replaces the log filter (`log.level`).
pub type LogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The daemon's configuration in force and what applies it.
pub(super) struct Running {
    pub config: Config,
    pub settings: Arc<Shared<ScimSettings>>,
    pub limits: Arc<Shared<ConnectionLimits>>,
    pub tls: Option<Arc<Tls>>,
    pub replay: Option<ReplayRun>,
    pub store: Arc<dyn Ledger>,
    pub commits: tokio::sync::watch::Receiver<u64>,
    pub source: Option<ConfigSource>,
    pub log_level: Option<LogLevel>,
    pub grace: Duration,
}

/// The settings only a restart applies, with their values in a configuration.
fn restart_only(c: &Config) -> [(&'static str, String); 6] {
    [
        ("server.listen", c.server.listen.clone()),
        ("server.base_path", c.server.base_path.clone()),
        ("server.tls", if c.server.tls.is_some() { "set".into() } else { "not set".into() }),
        ("staging.path", c.staging.path.display().to_string()),
        ("staging.max_batch", c.staging.max_batch.to_string()),
        ("log.format", format!("{:?}", c.log.format).to_lowercase()),
    ]
}

/// The first setting that differs and needs a restart, as a message naming it.
fn needs_restart(old: &Config, new: &Config) -> Option<String> {
    restart_only(old).into_iter().zip(restart_only(new)).find(|(a, b)| a.1 != b.1).map(|((key, was), (_, now))| {
        format!("{key} changed from {was:?} to {now:?}, which needs a restart (systemctl restart scim-bridge)")
    })
}

/// The sections that differ, for the log line of a reload.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server != new.server {
        changed.push("server");
    }
    if old.tenants != new.tenants {
        changed.push("tenant");
    }
    if old.targets != new.targets {
        changed.push("target");
    }
    if old.replay != new.replay {
        changed.push("replay");
    }
    if old.metrics != new.metrics {
        changed.push("metrics");
    }
    if old.log != new.log {
        changed.push("log");
    }
    if old.retention != new.retention {
        changed.push("retention");
    }
    if old.alerts != new.alerts {
        changed.push("alert");
    }
    if old.status != new.status {
        changed.push("status");
    }
    changed
}

impl Running {
    /// A line for the service manager's status.
    pub fn status(&self) -> String {
        format!("serving; {} target(s), {} tenant block(s)", self.config.targets.len(), self.config.tenants.len())
    }

    /// Reads the configuration again and applies it, or refuses it whole; logs which.
    pub async fn reload(&mut self) {
        if self.source.is_none() {
            tracing::warn!(
                "reload requested, but this daemon runs on the embedded default: there is no file to read again"
            );
            return;
        }
        tracing::info!("reload requested; reading the configuration again");
        match self.try_reload().await {
            Ok(changed) if changed.is_empty() => {
                tracing::info!(
                    "configuration reloaded: nothing changed; the TLS certificate and the metrics token were read again"
                )
            }
            Ok(changed) => tracing::info!(changed = ?changed, "configuration reloaded"),
            // One line, as journald and log shippers take it (TOML errors come with a drawing of the spot).
            Err(e) => tracing::error!(
                "configuration NOT reloaded, still running on the previous one: {}",
                e.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        }
    }

    async fn try_reload(&mut self) -> Result<Vec<&'static str>, String> {
        let source = self.source.as_ref().ok_or("there is no configuration file to read again")?;
        let new = source()?;
        if let Some(why) = needs_restart(&self.config, &new) {
            return Err(why);
        }
        // Everything that can fail is prepared before anything is swapped.
        let replay_changed = self.config.targets != new.targets
            || self.config.tenants != new.tenants
            || self.config.replay != new.replay;
        let bindings = bindings(&new).map_err(|e| e.to_string())?;
        let settings = scim_settings(&new, &bindings).map_err(|e| e.to_string())?;
        let hooks = alert_hooks(&new).map_err(|e| e.to_string())?;
        let tls = match &new.server.tls {
            Some(t) => Some(server_config(&t.cert_file, &t.key_file).map_err(|e| e.to_string())?),
            None => None,
        };
        let level_changed = self.config.log.level != new.log.level;
        if level_changed && let Some(set) = &self.log_level {
            set(&new.log.level).map_err(|e| format!("log.level: {e}"))?;
        }
        self.settings.set(settings);
        self.limits.set(connection_limits(&new));
        if let (Some(current), Some(next)) = (&self.tls, tls) {
            current.swap(next);
        }
        if replay_changed {
            if let Some(old) = self.replay.take() {
                old.stop(self.grace).await;
            }
            self.replay = Some(ReplayRun::start(bindings, &self.store, &new, hooks, self.commits.clone()));
            tracing::info!(targets = new.targets.len(), "replay workers restarted with the new targets and tenants");
        }
        let changed = changed_sections(&self.config, &new);
        self.config = new;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_named() {
        let old = Config::embedded();
        let mut new = old.clone();
        new.server.listen = "127.0.0.1:9".into();
        let why = needs_restart(&old, &new).unwrap();
        assert!(why.contains("server.listen") && why.contains("127.0.0.1:9"), "{why}");
        let mut new = old.clone();
        new.staging.path = "/elsewhere.db".into();
        assert!(needs_restart(&old, &new).unwrap().contains("staging.path"));
        let mut new = old.clone();
        new.server.max_connections = 7;
        new.server.rate_limit.burst = 3;
        assert_eq!(needs_restart(&old, &new), None);
        assert_eq!(changed_sections(&old, &new), ["server"]);
    }
}
