//! scim-bridge: a SCIM 2.0 service provider for Microsoft Entra ID and Okta that stages every change durably
//! and replays it into software without a SCIM endpoint of its own.
//!
//! The pipeline, one way only (see DESIGN.md):
//! - [`scim`]: the HTTP endpoint (RFC 7643/7644): authenticates the tenant, validates, hands changes on;
//! - [`staging`]: SQLite (WAL, fsync per group commit): desired state plus the journal (outbox);
//! - replay and targets (SQL, LDAP) and reconciliation read the journal (later stages).
//!
//! [`serve`] runs the HTTP service on a listener until a shutdown future resolves, so that tests start the
//! real server on `127.0.0.1:0`.

pub mod config;
pub mod daemon;
pub mod mapping;
pub mod matching;
pub mod replay;
pub mod scim;
pub mod staging;
pub mod target;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::scim::ScimSettings;
use crate::staging::Staging;

/// Serves SCIM on `listener` until `shutdown` resolves, then lets in-flight requests finish (at most
/// `grace`), then stops the staging writer once everything acknowledged is committed.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    staging: Staging,
    settings: ScimSettings,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = scim::router(staging.clone(), settings);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time; closing them");
            Ok(())
        }
    };
    drop(stop_rx);
    staging.close().await;
    result
}
