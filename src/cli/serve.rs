//! `scim-bridge serve`: the daemon, until SIGTERM or Ctrl-C.

use std::path::Path;

use anyhow::Context;
use scim_bridge::config::Config;
use scim_bridge::staging::DaemonLock;
use scim_bridge::{daemon, staging};

use super::{init_logging, load_config};

pub fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    init_logging(&config.log.level);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("while starting the runtime")?;
    runtime.block_on(serve(config, path.is_none()))
}

async fn serve(config: Config, embedded: bool) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let staging_path = config.staging.path.clone();
    // Before anything is created or printed: a second daemon on the same staging database stops here.
    let lock = DaemonLock::acquire(&staging_path)?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("while binding {addr} (server.listen)"))?;
    if embedded {
        daemon::prepare_demo_database(Path::new("scim-bridge-data/app.db"))
            .context("while creating the demo application database scim-bridge-data/app.db")?;
        // The embedded default shows the whole flow with one command: on its first start it creates a tenant
        // and prints its token once. Only now, with the listener bound, so that the token is not printed by
        // a start that then fails.
        if staging::tenant_names(&staging_path)?.is_empty() {
            let (_, token) = staging::rotate_token(&staging_path, "default")?;
            println!("Created tenant \"default\". Its bearer token (shown once, store it now):\n\n    {token}\n");
            println!("(A lost token is replaced with `scim-bridge token default`.)\n");
        }
    }
    let tenants = staging::tenant_names(&staging_path)?;
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
    println!("scim-bridge listening on http://{local}{base}");
    tracing::info!(
        listen = %local,
        base_path = base,
        staging = %staging_path.display(),
        lock = %lock.path().display(),
        tenants = tenants.len(),
        targets = config.targets.len(),
        "scim-bridge started"
    );
    daemon::run_locked(&config, &lock, listener, shutdown_signal()).await?;
    tracing::info!("scim-bridge stopped; every acknowledged change is committed");
    Ok(())
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
