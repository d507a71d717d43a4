//! The command line: arguments, and what every command shares (loading the configuration, logging, the
//! runtime). One file per command group.

pub mod check_config;
pub mod replay;
pub mod serve;
pub mod token;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use scim_bridge::config::Config;

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
    Token {
        /// Tenant name (letters, digits, '-', '_', '.').
        tenant: String,
    },
    /// Replay progress per target: journal position, lag, failed and dead changes.
    Status,
    /// List changes that failed to replay (retrying, dead letters, and those waiting behind them).
    Journal {
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

pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: under systemd, escape codes would land in the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// A runtime for commands that do a little async work (connection checks).
pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("while starting the runtime")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
