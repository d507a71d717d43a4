//! `scim-bridge reconcile` (plan, apply, or the linking report) and `scim-bridge runs` (what runs did).

use std::path::Path;

use anyhow::Context;
use scim_bridge::config::Config;
use scim_bridge::daemon;
use scim_bridge::ops::alerts::Alerts;
use scim_bridge::reconcile::progress::{Bar, Progress, Silent};
use scim_bridge::reconcile::{self, Request, Trigger, report};
use scim_bridge::staging::{self, ledger::RunStatus};
use serde_json::json;

use super::{load_config, small_runtime};

/// What `reconcile` was asked.
pub struct Args<'a> {
    pub target: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub dry_run: bool,
    pub json: bool,
    pub link_report: bool,
    pub force: bool,
}

/// Who runs this, for another run that finds the target busy.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("pid {} on {}", std::process::id(), if host.is_empty() { "this host" } else { &host })
}

/// The configured targets a command names (all without a name); an unknown name is an error.
fn chosen<'c>(config: &'c Config, target: Option<&str>) -> anyhow::Result<Vec<&'c scim_bridge::config::TargetConfig>> {
    let all: Vec<_> = config.targets.iter().collect();
    match target {
        None if all.is_empty() => anyhow::bail!("no [[target]] is configured: there is nothing to reconcile"),
        None => Ok(all),
        Some(t) => match all.iter().find(|c| c.name() == t) {
            Some(c) => Ok(vec![*c]),
            None => anyhow::bail!(
                "no target is named {t:?} in the configuration (targets: {})",
                if all.is_empty() {
                    "none".to_owned()
                } else {
                    all.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                }
            ),
        },
    }
}

pub fn run(path: Option<&Path>, args: &Args<'_>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let targets = chosen(&config, args.target)?;
    if let Some(t) = args.tenant
        && !config.tenants.iter().any(|c| c.name == t)
    {
        anyhow::bail!("no tenant is named {t:?} in the configuration");
    }
    let store = staging::open_ledger(&config.staging.path)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = small_runtime()?.block_on(async {
        let mut failed = false;
        let mut documents = Vec::new();
        for tc in targets {
            let target = daemon::build_target(tc)?;
            let tenants = config.tenants_of(tc.name());
            if let Some(t) = args.tenant
                && !tenants.iter().any(|n| n == t)
            {
                anyhow::bail!("tenant {t:?} is not bound to target {:?}", tc.name());
            }
            if args.link_report {
                let rows = reconcile::link_report(&target, &tenants, args.tenant, &store)
                    .await?
                    .map_err(|e| anyhow::anyhow!("target {}: {}", tc.name(), e.report()))?;
                if args.json {
                    documents.push(json!({"target": tc.name(), "users": rows}));
                } else {
                    print!("{}", report::link_table(tc.name(), &rows));
                }
                continue;
            }
            let bar = Bar::default();
            let progress: &dyn Progress =
                if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) { &Silent } else { &bar };
            let req = Request {
                target: &target,
                config: tc.reconcile(),
                tenants,
                tenant: args.tenant.map(str::to_owned),
                dry_run: args.dry_run,
                force: args.force,
                trigger: Trigger::Manual,
                holder: holder(),
                // The operator is watching: the outcome is printed, not sent.
                alerts: Alerts::none(),
            };
            let f = reconcile::run(req, &store, progress).await.with_context(|| format!("target {}", tc.name()))?;
            failed |= matches!(f.status, RunStatus::Stopped | RunStatus::Failed);
            if args.json {
                documents.push(json!({
                    "run": f.run_id, "target": tc.name(), "dry_run": args.dry_run, "status": f.status.as_str(),
                    "detail": f.detail, "applied": f.applied, "counts": f.plan.counts(), "plan": f.plan,
                }));
                continue;
            }
            print!("{}", report::table(&f.plan));
            match f.status {
                RunStatus::Done if args.dry_run => println!("run {}: dry run, nothing changed", f.run_id),
                RunStatus::Done => println!("run {}: applied {} change(s)", f.run_id, f.applied),
                status => {
                    println!("run {}: {}: {}", f.run_id, status.as_str(), f.detail.as_deref().unwrap_or_default())
                }
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&documents)?);
        }
        Ok::<_, anyhow::Error>(failed)
    })?;
    if failed {
        anyhow::bail!("reconciliation did not complete (see above)");
    }
    Ok(())
}

pub fn runs(path: Option<&Path>, target: Option<&str>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    if target.is_some() {
        chosen(&config, target)?;
    }
    let store = staging::open_ledger(&config.staging.path)?;
    print!("{}", report::runs_table(&small_runtime()?.block_on(store.runs(target, 50))?));
    Ok(())
}
