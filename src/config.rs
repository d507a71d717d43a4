//! Configuration: one TOML file, every key documented in `config.toml.example`, validated at start with
//! errors that name the key. Without a file the daemon runs on the embedded default (`Config::embedded`).
//! Data and validation only: the daemon builds targets and settings from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::staging::StagingOptions;
use crate::targets::ldap::config::LdapTargetConfig;
use crate::targets::reconcile::{ReconcileConfig, parse_schedule};
use crate::targets::sql::config::SqlTargetConfig;

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub staging: StagingConfig,
    pub log: LogConfig,
    pub replay: ReplayConfig,
    pub metrics: MetricsConfig,
    pub retention: RetentionConfig,
    pub status: StatusConfig,
    /// `[[alert]]`: webhooks told of outages, dead letters and stopped reconciliation runs.
    #[serde(rename = "alert")]
    pub alerts: Vec<AlertConfig>,
    /// `[[tenant]]`: which targets each tenant's changes are replayed into.
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// `[[target]]`: the downstream systems.
    #[serde(rename = "target")]
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Journal entries read and applied per step.
    pub batch_size: usize,
    /// Attempts of a change that fails permanently (constraint violation, ambiguous match) before it is
    /// parked as a dead letter. Transient failures (target down) retry without limit.
    pub max_attempts: i64,
    /// First retry delay in milliseconds; doubled per failure, with jitter, up to backoff_max_seconds.
    pub backoff_initial_ms: u64,
    pub backoff_max_seconds: u64,
    /// Seconds between checks that an idle target still answers (a cheap round trip), so that an outage
    /// shows in `status`, /readyz and the metrics before a change needs the target.
    pub probe_interval_seconds: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            batch_size: 500,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_seconds: 300,
            probe_interval_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's name, as given to `scim-bridge token <name>`.
    pub name: String,
    /// Names of the targets its changes are replayed into.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Overrides `server.strict` for this tenant.
    pub strict: Option<bool>,
    /// Overrides `server.rate_limit` for this tenant.
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `requests_per_second` on average, bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// `[server.tls]`: serve HTTPS. Both files are PEM; the certificate file may hold the chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[metrics]`: Prometheus text at /metrics, outside the SCIM base path.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// A bearer token /metrics requires, read from a file (re-read on SIGHUP) or an environment variable.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
}

/// `[[alert]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// How log lines name this alert (the URL is never logged).
    pub name: String,
    /// The webhook: exactly one of url, url_file (a file holding it) and url_env.
    pub url: Option<String>,
    pub url_file: Option<std::path::PathBuf>,
    pub url_env: Option<String>,
    /// "json" (every field of the event) or "text" (`{"text": …}`, which Slack and Microsoft Teams
    /// incoming webhooks accept).
    #[serde(default)]
    pub format: AlertFormat,
    /// The events wanted; all when empty.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// Minutes between "still down" reminders while a target stays down.
    #[serde(default = "default_repeat")]
    pub repeat_minutes: u64,
}

fn default_repeat() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TargetDown,
    TargetUp,
    DeadLetter,
    ReconcileStopped,
    ReconcileFailed,
}

/// `[status]`: the read-only status page at /status, for administrators. Off until an admin token is
/// given (never a tenant token).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// The admin token, read from a file (re-read on SIGHUP) or an environment variable.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
}

/// `[retention]`: how long applied changes and audit rows are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days; 0 keeps everything.
    pub days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 90 }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, token_file: None, token_env: None }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    Sql(SqlTargetConfig),
    Ldap(LdapTargetConfig),
}

impl TargetConfig {
    pub fn name(&self) -> &str {
        match self {
            TargetConfig::Sql(c) => &c.name,
            TargetConfig::Ldap(c) => &c.name,
        }
    }

    /// `[target.reconcile]`.
    pub fn reconcile(&self) -> &ReconcileConfig {
        match self {
            TargetConfig::Sql(c) => &c.reconcile,
            TargetConfig::Ldap(c) => &c.reconcile,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Path prefix of the SCIM endpoints.
    pub base_path: String,
    /// Absolute URL of the base path as clients reach it (behind a reverse proxy); used in `Location`
    /// headers and `meta.location`. Derived from the request's Host header when unset.
    pub public_url: Option<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Refuse unknown attributes with 400 instead of ignoring them.
    pub strict: bool,
    /// Page size of list responses when the client sends no `count`.
    pub default_page_size: usize,
    /// Largest page a client may ask for.
    pub max_page_size: usize,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_seconds: u64,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP).
    pub tls: Option<TlsConfig>,
    /// Seconds a client has to send a request's headers, and to start its next request on a kept-alive
    /// connection; a client that sends nothing (or a byte now and then) is disconnected after it.
    pub header_timeout_seconds: u64,
    /// Seconds a connection may stay without any traffic in either direction before it is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds a client has to send a request's body (408 after it).
    pub body_timeout_seconds: u64,
    /// Seconds a request may take from its headers to its answer (503 with Retry-After after it).
    pub request_timeout_seconds: u64,
    /// Connections served at once; more are refused (503 over plain HTTP) with a WARN while the limit lasts.
    pub max_connections: usize,
    /// The rate limit of each tenant (a `[[tenant]]` block may set its own); above it, 429 with Retry-After.
    pub rate_limit: RateLimit,
    /// Failed authentications accepted per client address per minute; above it, 429 without checking.
    pub auth_failures_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7644".into(),
            base_path: "/scim/v2".into(),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            strict: false,
            default_page_size: 100,
            max_page_size: 1000,
            shutdown_grace_seconds: 30,
            tls: None,
            header_timeout_seconds: 10,
            idle_timeout_seconds: 120,
            body_timeout_seconds: 30,
            request_timeout_seconds: 60,
            max_connections: 4096,
            // Entra ID sends a few requests a second per application, Okta at most a few per second and
            // tenant; this leaves room for both and for import bursts.
            rate_limit: RateLimit { requests_per_second: 50.0, burst: 200 },
            auth_failures_per_minute: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// The SQLite staging database file (created with its directory if missing).
    pub path: PathBuf,
    /// Most changes committed together in one transaction (group commit).
    pub max_batch: usize,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            path: PathBuf::from("scim-bridge-data/staging.db"),
            max_batch: StagingOptions::default().max_batch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `scim_bridge=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
    /// "text" (for people and journald) or "json" (one object per line, for log shippers).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// The embedded default configuration (see `Config::embedded`).
pub const EMBEDDED: &str = include_str!("embedded.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

fn check_rate(key: &str, r: &RateLimit) -> Result<(), ConfigError> {
    if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) || r.burst == 0 {
        return Err(invalid(key, "requests_per_second must be positive and burst at least 1"));
    }
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, has an unknown key, or a value fails validation; the
    /// message names the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// As for [`Config::load`].
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string().trim_end().to_owned() })?;
        config.validate()?;
        Ok(config)
    }

    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        self.listen_addr()?;
        if !s.base_path.starts_with('/')
            || s.base_path.contains(char::is_whitespace)
            || s.base_path.contains(['?', '#', '{', '}'])
        {
            return Err(invalid(
                "server.base_path",
                format!("{:?} must be a URL path starting with '/', e.g. \"/scim/v2\"", s.base_path),
            ));
        }
        if let Some(u) = &s.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(invalid("server.public_url", format!("{u:?} must be an absolute http:// or https:// URL")));
        }
        if s.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", format!("{} is too small; at least 1024", s.max_body_bytes)));
        }
        if s.max_page_size == 0 {
            return Err(invalid("server.max_page_size", "must be at least 1"));
        }
        if s.default_page_size == 0 || s.default_page_size > s.max_page_size {
            return Err(invalid(
                "server.default_page_size",
                format!("{} must be between 1 and server.max_page_size ({})", s.default_page_size, s.max_page_size),
            ));
        }
        for (key, value) in [
            ("server.header_timeout_seconds", s.header_timeout_seconds),
            ("server.idle_timeout_seconds", s.idle_timeout_seconds),
            ("server.body_timeout_seconds", s.body_timeout_seconds),
            ("server.request_timeout_seconds", s.request_timeout_seconds),
            ("server.max_connections", s.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        check_rate("server.rate_limit", &s.rate_limit)?;
        if let (Some(_), Some(_)) = (&self.metrics.token_file, &self.metrics.token_env) {
            return Err(invalid("metrics.token_file", "give token_file or token_env, not both"));
        }
        if let (Some(_), Some(_)) = (&self.status.token_file, &self.status.token_env) {
            return Err(invalid("status.token_file", "give token_file or token_env, not both"));
        }
        let mut alert_names = std::collections::HashSet::new();
        for a in &self.alerts {
            if !alert_names.insert(a.name.as_str()) {
                return Err(invalid(format!("alert.{}", a.name), "two alerts have this name"));
            }
            let given = [a.url.is_some(), a.url_file.is_some(), a.url_env.is_some()].iter().filter(|g| **g).count();
            if given != 1 {
                return Err(invalid(format!("alert.{}", a.name), "give exactly one of url, url_file and url_env"));
            }
        }
        if self.staging.path.as_os_str().is_empty() {
            return Err(invalid("staging.path", "must name the staging database file"));
        }
        if self.staging.max_batch == 0 {
            return Err(invalid("staging.max_batch", "must be at least 1"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?} is not a valid filter: {e}", self.log.level)))?;
        let r = &self.replay;
        if r.batch_size == 0 {
            return Err(invalid("replay.batch_size", "must be at least 1"));
        }
        if r.max_attempts < 1 {
            return Err(invalid("replay.max_attempts", "must be at least 1"));
        }
        if r.probe_interval_seconds == 0 {
            return Err(invalid("replay.probe_interval_seconds", "must be at least 1"));
        }
        if r.backoff_initial_ms == 0 || r.backoff_max_seconds == 0 {
            return Err(invalid("replay.backoff_initial_ms", "backoff delays must be positive"));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            let name = t.name();
            crate::staging::validate_tenant_name(name)
                .map_err(|e| invalid("target.name", e.replace("tenant", "target")))?;
            if !names.insert(name) {
                return Err(invalid(format!("target.{name}"), "two targets have this name"));
            }
            if let Some(schedule) = &t.reconcile().schedule {
                parse_schedule(schedule).map_err(|e| invalid(format!("target.{name}.reconcile.schedule"), e))?;
            }
        }
        let mut tenants = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            crate::staging::validate_tenant_name(&t.name).map_err(|e| invalid(format!("tenant[{i}].name"), e))?;
            if !tenants.insert(t.name.as_str()) {
                return Err(invalid(format!("tenant.{}", t.name), "listed twice"));
            }
            if let Some(r) = &t.rate_limit {
                check_rate(&format!("tenant.{}.rate_limit", t.name), r)?;
            }
            for target in &t.targets {
                if !names.contains(target.as_str()) {
                    return Err(invalid(
                        format!("tenant.{}.targets", t.name),
                        format!("no [[target]] is named {target:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configuration used when no file is given: staging and a SQLite demo application database in
    /// ./scim-bridge-data, the tenant "default" replayed into it.
    pub fn embedded() -> Config {
        // The embedded text is part of the build and covered by a test, so it always parses.
        Config::parse(EMBEDDED).unwrap_or_default()
    }

    /// Checks, without creating anything, that the staging database's directory exists and is writable,
    /// or could be created: the nearest existing ancestor is a writable directory.
    ///
    /// # Errors
    /// `staging.path`, naming the directory and why it cannot be used.
    pub fn check_staging_dir(&self) -> Result<(), ConfigError> {
        let path = &self.staging.path;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut existing = dir.as_path();
        while !existing.exists() {
            match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            }
        }
        let key = "staging.path";
        if !existing.is_dir() {
            return Err(invalid(
                key,
                format!("{} cannot be created: {} is not a directory", dir.display(), existing.display()),
            ));
        }
        let probe = existing.join(format!(".scim-bridge-check-{}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) => {
                let what = if existing == dir.as_path() {
                    format!("the directory {} is not writable", dir.display())
                } else {
                    format!("{} cannot be created: {} is not writable", dir.display(), existing.display())
                };
                Err(invalid(key, format!("{what} ({e})")))
            }
        }
    }

    /// The targets a tenant's changes are replayed into; empty for a tenant with no `[[tenant]]` block.
    pub fn targets_of(&self, tenant: &str) -> Vec<&str> {
        self.tenants.iter().filter(|t| t.name == tenant).flat_map(|t| t.targets.iter().map(String::as_str)).collect()
    }

    /// The names of the tenants bound to the target `target`.
    pub fn tenants_of(&self, target: &str) -> Vec<String> {
        self.tenants.iter().filter(|t| t.targets.iter().any(|n| n == target)).map(|t| t.name.clone()).collect()
    }

    /// # Errors
    /// `server.listen` is not an `address:port`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{:?} is not an address:port such as \"127.0.0.1:7644\"", self.server.listen),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7644");
        assert_eq!(c.server.base_path, "/scim/v2");
    }

    #[test]
    fn staging_directory_is_checked_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &Path| Config::parse(&format!("[staging]\npath = {:?}\n", p.display().to_string())).unwrap();
        at(&dir.path().join("new/deeper/staging.db")).check_staging_dir().unwrap();
        assert!(!dir.path().join("new").exists(), "nothing was created");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let e = at(&file.join("staging.db")).check_staging_dir().unwrap_err().to_string();
        assert!(e.contains("staging.path") && e.contains("not a directory"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n").unwrap_err().to_string();
        assert!(e.contains("lsiten"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[server]\nlisten = \"localhost\"", "server.listen"),
            ("[server]\nbase_path = \"scim\"", "server.base_path"),
            ("[server]\nmax_body_bytes = 10", "server.max_body_bytes"),
            ("[server]\ndefault_page_size = 5000", "server.default_page_size"),
            ("[server]\npublic_url = \"scim.example.com\"", "server.public_url"),
            ("[staging]\nmax_batch = 0", "staging.max_batch"),
            ("[log]\nlevel = \"=[\"", "log.level"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
