//! The `scim-bridge` command. This file only parses the command line and dispatches; each command group
//! lives in `cli/`: serve, check-config, token, and the replay commands (status, journal, retry).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, JournalAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match &cli.command {
        Command::Serve => cli::serve::run(config),
        Command::CheckConfig { connect } => cli::check_config::run(config, *connect),
        Command::Token { action, tenant } => cli::token::run(config, action.as_ref(), tenant.as_deref()),
        Command::Status => cli::replay::status(config),
        Command::Journal { action: None, target } => cli::replay::journal(config, target.as_deref()),
        Command::Journal { action: Some(JournalAction::Discard { seq, target: t }), target } => {
            cli::replay::discard(config, t.as_deref().or(target.as_deref()), *seq)
        }
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
