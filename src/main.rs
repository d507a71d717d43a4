//! The `scim-bridge` command: serve, check-config, token.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scim_bridge::config::Config;
use scim_bridge::staging;
use scim_bridge::staging::replay_store::ReplayStore;

#[derive(Parser)]
#[command(version, about = "SCIM 2.0 bridge from Entra ID / Okta to SQL databases and LDAP directories")]
struct Cli {
    /// Config file (TOML). Without it, the embedded default: 127.0.0.1:7644, staging in ./scim-bridge-data.
    #[arg(long, short, global = true, env = "SCIM_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
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

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: under systemd, escape codes would land in the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::CheckConfig { connect } => check_config(&cli.config, *connect),
        Command::Token { tenant } => token(&cli.config, tenant),
        Command::Serve => serve(&cli.config),
        Command::Status => status(&cli.config),
        Command::Journal { target } => journal(&cli.config, target.as_deref()),
        Command::Retry { target, seq } => retry(&cli.config, target.as_deref(), *seq),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scim-bridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Option<PathBuf>, connect: bool) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("while starting the runtime")?;
    runtime.block_on(async {
        let bindings = config.bindings()?;
        match path {
            Some(p) => println!(
                "{}: OK (listen {}, staging {}, {} target(s))",
                p.display(),
                config.server.listen,
                config.staging.path.display(),
                bindings.len()
            ),
            None => println!("no config file given: the embedded default is valid"),
        }
        let mut failed = 0;
        if connect {
            for b in &bindings {
                match tokio::time::timeout(std::time::Duration::from_secs(30), b.target.check()).await {
                    Ok(Ok(())) => println!("target {}: reachable, tables and columns as configured", b.target.name()),
                    Ok(Err(e)) => {
                        failed += 1;
                        println!("target {}: {e}", b.target.name());
                    }
                    Err(_) => {
                        failed += 1;
                        println!("target {}: no answer within 30 s", b.target.name());
                    }
                }
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} target(s) failed the check");
        }
        Ok(())
    })
}

fn token(path: &Option<PathBuf>, tenant: &str) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let (t, token) = staging::rotate_token(&config.staging.path, tenant)
        .with_context(|| format!("while issuing a token for tenant {tenant:?}"))?;
    eprintln!("New bearer token for tenant {:?} (shown once; any previous token of this tenant is revoked):", t.name);
    println!("{token}");
    Ok(())
}

fn serve(path: &Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    init_logging(&config.log.level);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("while starting the runtime")?;
    runtime.block_on(run(config, path.is_none()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

fn status(path: &Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = ReplayStore::open(&config.staging.path).context("while opening the staging database")?;
    let head = store.head()?;
    let failures = store.list_failures(None)?;
    println!("journal head: {head}");
    if config.targets.is_empty() {
        println!("no [[target]] configured: changes are staged but not replayed");
    }
    for t in &config.targets {
        let name = t.name();
        let cursor = store.cursor(name)?;
        let count = |state: &str| failures.iter().filter(|f| f.target == name && f.state == state).count();
        println!(
            "target {name}: replayed up to {cursor} (lag {}), retrying {}, dead {}, waiting {}",
            head - cursor,
            count("retry"),
            count("dead"),
            count("waiting")
        );
    }
    Ok(())
}

fn journal(path: &Option<PathBuf>, target: Option<&str>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = ReplayStore::open(&config.staging.path).context("while opening the staging database")?;
    let failures = store.list_failures(target)?;
    if failures.is_empty() {
        println!("no failed changes");
    }
    for f in failures {
        let when = if f.state == "retry" {
            format!(", next attempt in {} s", ((f.next_attempt_ms - now_ms()).max(0) + 999) / 1000)
        } else {
            String::new()
        };
        println!(
            "{} seq {} tenant {} resource {}: {} after {} attempt(s){when}: {}",
            f.target, f.seq, f.tenant.0, f.resource_id, f.state, f.attempts, f.last_error
        );
    }
    Ok(())
}

fn retry(path: &Option<PathBuf>, target: Option<&str>, seq: Option<i64>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = ReplayStore::open(&config.staging.path).context("while opening the staging database")?;
    let n = store.retry(target, seq, now_ms())?;
    println!("{n} dead letter(s) queued for another round of attempts; a running daemon picks them up within a minute");
    Ok(())
}

async fn run(config: Config, embedded: bool) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let staging_path = config.staging.path.clone();
    if embedded {
        scim_bridge::daemon::prepare_demo_database(std::path::Path::new("scim-bridge-data/app.db"))
            .context("while creating the demo application database scim-bridge-data/app.db")?;
    }
    // The embedded default shows the whole flow with one command: on first start it creates a tenant and
    // prints its token once.
    if embedded {
        let existing = staging::tenant_names(&staging_path).context("while opening the staging database")?;
        if existing.is_empty() {
            let (_, token) = staging::rotate_token(&staging_path, "default")?;
            println!("Created tenant \"default\". Its bearer token (shown once, store it now):\n\n    {token}\n");
        }
    }
    let tenants = staging::tenant_names(&staging_path)
        .with_context(|| format!("while opening the staging database {}", staging_path.display()))?;
    if tenants.is_empty() {
        tracing::warn!("no tenant has a token yet: every request will be refused; run `scim-bridge token <tenant>`");
    }
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("while binding {addr} (server.listen)"))?;
    let local = listener.local_addr()?;
    let base = config.server.base_path.trim_end_matches('/');
    println!("scim-bridge listening on http://{local}{base}");
    tracing::info!(
        listen = %local,
        base_path = base,
        staging = %staging_path.display(),
        tenants = tenants.len(),
        targets = config.targets.len(),
        "scim-bridge started"
    );
    scim_bridge::daemon::run(&config, listener, shutdown_signal()).await?;
    tracing::info!("scim-bridge stopped; every acknowledged change is committed");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
