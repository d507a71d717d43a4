//! The `scim-bridge` command. This file only parses the command line and dispatches; each command group
//! lives in `cli/`: serve, check-config, token, and the replay commands (status, journal, retry).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match &cli.command {
        Command::Serve => cli::serve::run(config),
        Command::CheckConfig { connect } => cli::check_config::run(config, *connect),
        Command::Token { tenant } => cli::token::run(config, tenant),
        Command::Status => cli::replay::status(config),
        Command::Journal { target } => cli::replay::journal(config, target.as_deref()),
        Command::Retry { target, seq } => cli::replay::retry(config, target.as_deref(), *seq),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scim-bridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
