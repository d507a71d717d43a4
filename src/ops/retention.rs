//! Retention: once a day the daemon removes journal entries and audit rows older than `[retention] days`,
//! never an entry a target has not applied, a failed one, or the newest of a resource (see
//! `AuditLog::prune`). The first pass runs an hour after start, so that a restart loop does not prune
//! over and over.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::staging::AuditLog;

/// Runs retention daily until `stop` becomes true.
pub async fn daily(store: Arc<dyn AuditLog>, days: u64, targets: Vec<String>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(3600);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        wait = Duration::from_secs(24 * 3600);
        let cutoff =
            SystemTime::now().checked_sub(Duration::from_secs(days * 24 * 3600)).unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff = humantime::format_rfc3339_millis(cutoff).to_string();
        match store.prune(&targets, &cutoff).await {
            Ok((journal, audit)) => {
                tracing::info!(days, before = %cutoff, journal_entries = journal, audit_rows = audit, "retention: removed old applied changes and audit rows")
            }
            Err(e) => tracing::error!(error = %e, "retention failed; it runs again tomorrow"),
        }
    }
}
