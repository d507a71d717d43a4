//! Scheduled reconciliation in the daemon: one task per target with `[target.reconcile] schedule`, each
//! with a target of its own (its own connections, so that a long run does not take replay's), stopped
//! with the replay workers of the same configuration.

use tokio::sync::watch;

use crate::config::Config;
use crate::ops::alerts::Alerts;
use crate::reconcile::progress::LogLines;
use crate::reconcile::schedule::{Clock, every};
use crate::reconcile::{self, ReconcileError, Request, Trigger};
use crate::staging;
use crate::targets::reconcile::parse_schedule;

/// Starts the schedule tasks of `config`; they end when `stop` becomes true.
pub(super) fn spawn(
    config: &Config,
    alerts: &Alerts,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for tc in &config.targets {
        let Some(text) = tc.reconcile().schedule.clone() else { continue };
        // Validated with the configuration; a failure here would be a bug, logged rather than fatal.
        let schedule = match parse_schedule(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target = %tc.name(), "reconcile.schedule: {e}");
                continue;
            }
        };
        let target = match super::build_target(tc) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target = %tc.name(), error = %e, "scheduled reconciliation not started");
                continue;
            }
        };
        let store = match staging::open_ledger(&config.staging.path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target = %tc.name(), error = %e, "scheduled reconciliation not started: staging");
                continue;
            }
        };
        let tenants = config.tenants_of(tc.name());
        let settings = tc.reconcile().clone();
        tracing::info!(target = %tc.name(), schedule = %text, "scheduled reconciliation (UTC)");
        let (stop, alerts) = (stop.clone(), alerts.clone());
        tasks.push(tokio::spawn(async move {
            let name = target.name().to_owned();
            every(schedule, Clock::new(), stop, |at| {
                let (target, store, tenants, settings, name) =
                    (&target, &store, tenants.clone(), &settings, name.clone());
                let alerts = alerts.clone();
                async move {
                    tracing::info!(target = %name, due = %at.to_rfc3339(), "scheduled reconciliation due");
                    let req = Request {
                        target,
                        config: settings,
                        tenants,
                        tenant: None,
                        dry_run: false,
                        force: false,
                        trigger: Trigger::Schedule,
                        holder: format!("the daemon, pid {}", std::process::id()),
                        alerts,
                    };
                    match reconcile::run(req, store, &LogLines::new(&name)).await {
                        Ok(_) => {}
                        Err(ReconcileError::Busy(held)) => {
                            tracing::warn!(target = %name, "scheduled reconciliation skipped: {held}")
                        }
                        Err(e) => tracing::error!(target = %name, error = %e, "scheduled reconciliation failed"),
                    }
                }
            })
            .await;
        }));
    }
    tasks
}
