//! The command line: arguments, and what every command shares (loading the configuration, logging, the
//! runtime). One file per command group.

pub mod check_config;
pub mod history;
pub mod reconcile;
pub mod replay;
pub mod serve;
pub mod token;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use scim_bridge::config::{Config, LogConfig, LogFormat};
use scim_bridge::daemon::LogLevel;
use scim_bridge::ops::notify::stderr_is_journal;

#[derive(Parser)]
#[command(version, about = "SCIM 2.0 bridge from Entra ID / Okta to SQL databases and LDAP directories")]
pub struct Cli {
    /// Config file (TOML). Without it, the embedded default: 127.0.0.1:7644, staging in ./scim-bridge-data.
    #[arg(long, short, global = true, env = "SCIM_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Validate the config file and exit (run by the systemd unit before start and reload).
    CheckConfig {
        /// Also connect to every target and check that its tables and columns exist.
        #[arg(long)]
        connect: bool,
    },
    /// Create a tenant, or rotate its token, and print the new token once. The old token stops working at once.
    /// `token list` shows the tenants, `token revoke <tenant>` withdraws a token.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
        /// Tenant name (letters, digits, '-', '_', '.').
        #[arg(required = true)]
        tenant: Option<String>,
    },
    /// Replay progress per target: journal position, lag, failed and dead changes.
    Status,
    /// List changes that failed to replay (retrying, dead letters, and those waiting behind them).
    /// `journal discard --seq N` drops a dead letter for good.
    Journal {
        #[command(subcommand)]
        action: Option<JournalAction>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Compare each target with staging and repair the drift; --dry-run shows the plan and changes nothing.
    Reconcile {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only this tenant's users and groups.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the plan (create, link, update, block, unblock, members, orphans) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// For every staged user: already linked, or how many downstream accounts have its email.
        #[arg(long, conflicts_with_all = ["dry_run", "force"])]
        link_report: bool,
        /// Apply even when the plan blocks more accounts than max_blocks allows (this once).
        #[arg(long)]
        force: bool,
    },
    /// The story of one user or group: every SCIM request, what each target did (with the statements or
    /// LDAP operations), its links, failures, and whether it is blocked downstream.
    Explain {
        /// A userName, group name, email address, SCIM id or downstream key.
        query: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent provisioning actions from the audit trail, newest first.
    History {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only since then: a duration back from now (1h, 7d) or a time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only this outcome: created, linked, updated, blocked, deleted, ignored, absent, error, dead, discarded.
        #[arg(long)]
        outcome: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Reconciliation runs, newest first: trigger, dry or not, counts per action, how each ended.
    Runs {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Give dead letters a new round of attempts (after fixing their cause downstream).
    Retry {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only this journal sequence number.
        #[arg(long)]
        seq: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// The tenants, with when each was created and its token issued or revoked (never the tokens).
    List,
    /// Revoke a tenant's token: its requests are refused from now on. Its data stays; `token <tenant>`
    /// issues a new token.
    Revoke { tenant: String },
    /// Same as `token <tenant>`, for a tenant named like a subcommand.
    Rotate { tenant: String },
}

#[derive(Subcommand)]
pub enum JournalAction {
    /// Drop a dead letter: the change will never be applied to the target. Recorded in the audit trail;
    /// the changes of the same resource waiting behind it go on.
    Discard {
        /// The dead letter's journal sequence number (see `journal`).
        #[arg(long)]
        seq: i64,
        /// Only the dead letter of this target (default: every target where that change is dead).
        #[arg(long)]
        target: Option<String>,
    },
}

/// The configuration file, or the embedded default without one.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    // Overrides for running several instances side by side (tests, trials) without editing the file.
    if let Ok(listen) = std::env::var("SCIM_BRIDGE_LISTEN") {
        config.server.listen = listen;
        config.validate()?;
    }
    Ok(config)
}

/// Sets up logging as `[log]` says: text for people (without timestamps under systemd, whose journal
/// adds them, and without colour off a terminal) or JSON, one object per line. Returns what changes the
/// level on reload; `RUST_LOG`, when set, wins over `log.level` both now and then.
pub fn init_logging(log: &LogConfig) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};

    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let journal = stderr_is_journal();
    match log.format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).init(),
        LogFormat::Text if journal => {
            registry.with(fmt::layer().without_time().with_ansi(false).with_writer(std::io::stderr)).init()
        }
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry.with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).init()
        }
    }
    std::sync::Arc::new(move |level: &str| {
        if from_env {
            tracing::info!("log.level is not applied: RUST_LOG is set and wins");
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a valid filter: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Runs a command's async work (staging, connection checks) to its end on a small runtime.
pub fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    small_runtime()?.block_on(work)
}

/// A runtime for commands that do a little async work (connection checks).
pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("while starting the runtime")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
