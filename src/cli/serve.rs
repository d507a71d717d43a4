//! `scim-bridge serve`: the daemon, until SIGTERM or Ctrl-C; SIGHUP reloads the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use scim_bridge::config::Config;
use scim_bridge::daemon::{ConfigSource, Hooks, LogLevel};
use scim_bridge::ops::notify::Notifier;
use scim_bridge::staging::DaemonLock;
use scim_bridge::{daemon, staging};

use super::{init_logging, load_config};

pub fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let log_level = init_logging(&config.log);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("while starting the runtime")?;
    runtime.block_on(serve(config, path.map(Path::to_owned), log_level))
}

async fn serve(config: Config, path: Option<PathBuf>, log_level: LogLevel) -> anyhow::Result<()> {
    let embedded = path.is_none();
    let addr = config.listen_addr()?;
    let staging_path = config.staging.path.clone();
    // Before anything is created or printed: a second daemon on the same staging database stops here.
    let lock = DaemonLock::acquire(&staging_path)?;
    let ledger = staging::open_ledger(&staging_path)?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("while binding {addr} (server.listen)"))?;
    if embedded {
        daemon::prepare_demo_database(Path::new("scim-bridge-data/app.db"))
            .context("while creating the demo application database scim-bridge-data/app.db")?;
        // The embedded default shows the whole flow with one command: on its first start it creates a tenant
        // and prints its token once. Only now, with the listener bound, so that the token is not printed by
        // a start that then fails.
        if ledger.tenant_names().await?.is_empty() {
            let (_, token) = ledger.rotate_token("default").await?;
            println!("Created tenant \"default\". Its bearer token (shown once, store it now):\n\n    {token}\n");
            println!("(A lost token is replaced with `scim-bridge token default`.)\n");
        }
    }
    let tenants = ledger.tenant_names().await?;
    drop(ledger);
    if tenants.is_empty() {
        tracing::warn!("no tenant has a token yet: every request will be refused; run `scim-bridge token <tenant>`");
    }
    for t in &tenants {
        if config.targets_of(t).is_empty() {
            tracing::warn!(
                tenant = %t,
                "tenant is bound to no target: its changes are staged but replayed nowhere; \
                 add a [[tenant]] block with name = {t:?} and targets = [...] to the config"
            );
        }
    }
    let local = listener.local_addr()?;
    let base = config.server.base_path.trim_end_matches('/');
    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    println!("scim-bridge listening on {scheme}://{local}{base}");
    tracing::info!(
        listen = %local,
        base_path = base,
        staging = %staging_path.display(),
        lock = %lock.path().display(),
        tenants = tenants.len(),
        targets = config.targets.len(),
        "scim-bridge started"
    );
    let notifier = Arc::new(Notifier::from_env());
    if notifier.enabled() {
        tracing::debug!(watchdog = ?notifier.watchdog_interval(), "notifying the service manager");
    }
    let hooks = Hooks {
        notifier: Some(notifier),
        reload: Some(reload_requests()?),
        source: path.map(|p| -> ConfigSource { Arc::new(move || load_config(Some(&p)).map_err(|e| format!("{e:#}"))) }),
        log_level: Some(log_level),
    };
    daemon::run_service(&config, &lock, listener, shutdown_signal(), hooks).await?;
    tracing::info!("scim-bridge stopped; every acknowledged change is committed");
    Ok(())
}

/// SIGHUP, as a stream of reload requests.
fn reload_requests() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("while setting up the SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
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
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
