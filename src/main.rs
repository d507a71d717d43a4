//! The `scim-bridge` command. This file only parses the command line and dispatches; each command group
//! lives in `cli/`: serve, check-config, token, the replay commands (status, journal, retry) and
//! reconciliation (reconcile, runs), and what happened (explain, history).

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
        Command::Status => cli::block_on(cli::replay::status(config)),
        Command::Journal { action: None, target } => cli::block_on(cli::replay::journal(config, target.as_deref())),
        Command::Journal { action: Some(JournalAction::Discard { seq, target: t }), target } => {
            cli::block_on(cli::replay::discard(config, t.as_deref().or(target.as_deref()), *seq))
        }
        Command::Retry { target, seq } => cli::block_on(cli::replay::retry(config, target.as_deref(), *seq)),
        Command::Reconcile { target, tenant, dry_run, json, link_report, force } => cli::reconcile::run(
            config,
            &cli::reconcile::Args {
                target: target.as_deref(),
                tenant: tenant.as_deref(),
                dry_run: *dry_run,
                json: *json,
                link_report: *link_report,
                force: *force,
            },
        ),
        Command::Runs { target } => cli::reconcile::runs(config, target.as_deref()),
        Command::Explain { query, json } => cli::block_on(cli::history::explain(config, query, *json)),
        Command::History { target, since, outcome, limit, json } => cli::block_on(cli::history::history(
            config,
            target.as_deref(),
            since.as_deref(),
            outcome.as_deref(),
            *limit,
            *json,
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scim-bridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
