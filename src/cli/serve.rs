//! `scim-bridge serve`: the daemon, until SIGTERM or Ctrl-C.

use std::path::Path;

use anyhow::Context;
use scim_bridge::config::Config;
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
    if embedded {
        daemon::prepare_demo_database(Path::new("scim-bridge-data/app.db"))
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
    daemon::run(&config, listener, shutdown_signal()).await?;
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
