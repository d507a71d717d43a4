//! The replay commands: `status` (tenants, targets, progress and reachability), `journal` (failed
//! changes), `retry` (dead letters, after their cause is fixed).

use std::path::Path;

use scim_bridge::config::Config;
use std::sync::Arc;

use scim_bridge::staging::ledger::{Failure, FailureState};
use scim_bridge::staging::{self, ChangeSeq, Ledger};

use super::{load_config, now_ms};

fn open(path: Option<&Path>) -> anyhow::Result<(Config, Arc<dyn Ledger>)> {
    let config = load_config(path)?;
    let store = staging::open_ledger(&config.staging.path)?;
    Ok((config, store))
}

/// A target named on the command line must be one of the configuration's.
fn known_target(config: &Config, target: Option<&str>) -> anyhow::Result<()> {
    match target {
        Some(t) if !config.targets.iter().any(|c| c.name() == t) => {
            let names: Vec<&str> = config.targets.iter().map(|c| c.name()).collect();
            anyhow::bail!(
                "no target is named {t:?} in the configuration (targets: {})",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )
        }
        _ => Ok(()),
    }
}

fn in_seconds(ms: i64) -> i64 {
    ((ms - now_ms()).max(0) + 999) / 1000
}

pub async fn status(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, store) = open(path)?;
    let head = store.head().await?;
    let failures = store.list_failures(None).await?;
    let health = store.health().await?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = config.staging.path.as_os_str().to_owned();
    wal.push("-wal");
    println!(
        "staging: {} ({:.1} MiB, WAL {:.1} MiB; applied changes and audit rows kept {})",
        config.staging.path.display(),
        size(&config.staging.path) as f64 / 1048576.0,
        size(Path::new(&wal)) as f64 / 1048576.0,
        if config.retention.days == 0 { "forever".to_owned() } else { format!("{} days", config.retention.days) }
    );
    match staging::running_daemon(&config.staging.path) {
        Some(pid) => println!("daemon: running (pid {pid}); journal head {head}"),
        None => println!("daemon: not running (target states below are as it last saw them); journal head {head}"),
    }
    let pending = store.pending_members().await?;
    for (tenant, changes) in store.changes_per_tenant().await? {
        let waiting: Vec<String> = pending
            .iter()
            .filter(|p| p.tenant == tenant)
            .map(|p| format!("{} in {:?}", p.member_id, p.group))
            .collect();
        if !waiting.is_empty() {
            let shown = waiting.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            let more = if waiting.len() > 5 { format!(" and {} more", waiting.len() - 5) } else { String::new() };
            println!(
                "tenant {tenant}: {} pending group membership(s), ids that are not users or groups of this tenant: {shown}{more}",
                waiting.len()
            );
        }
        let targets = config.targets_of(&tenant);
        if targets.is_empty() {
            println!(
                "tenant {tenant}: {changes} change(s) staged, replayed nowhere (no [[tenant]] block binds it to a target)"
            );
        } else {
            println!("tenant {tenant}: {changes} change(s) staged, replayed into {}", targets.join(", "));
        }
    }
    if config.targets.is_empty() {
        println!("no [[target]] configured: changes are staged but not replayed");
    }
    for t in &config.targets {
        let name = t.name();
        let cursor = store.cursor(name).await?;
        let count = |state: FailureState| failures.iter().filter(|f| f.target == name && f.state == state).count();
        let reach = match health.iter().find(|h| h.target == name) {
            None => "not contacted yet".to_owned(),
            Some(h) if h.reachable => format!("reachable since {}", h.since),
            Some(h) => format!(
                "UNREACHABLE since {} ({} failed attempt(s){}), last error: {}",
                h.since,
                h.failures,
                h.next_attempt_ms.map(|ms| format!(", next in {} s", in_seconds(ms))).unwrap_or_default(),
                h.last_error.as_deref().unwrap_or("-")
            ),
        };
        println!("target {name}: {reach}");
        println!(
            "target {name}: replayed up to {cursor} (lag {}), retrying {}, dead {}, waiting {}",
            head.0 - cursor.0,
            count(FailureState::Retry),
            count(FailureState::Dead),
            count(FailureState::Waiting)
        );
        match store.runs(Some(name), 1).await?.first() {
            Some(r) => println!(
                "target {name}: last reconciliation: run {} ({}{}) started {}, {}{}",
                r.id,
                r.trigger,
                if r.dry_run { ", dry run" } else { "" },
                r.started,
                r.status.as_str(),
                r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            None => println!("target {name}: never reconciled"),
        }
    }
    Ok(())
}

fn describe(f: &Failure) -> String {
    let when = if f.state == FailureState::Retry {
        format!(", next attempt in {} s", in_seconds(f.next_attempt_ms))
    } else {
        String::new()
    };
    format!(
        "{} seq {} tenant {} resource {}: {} after {} attempt(s){when}: {}",
        f.target,
        f.seq,
        f.tenant.0,
        f.resource_id,
        f.state.as_str(),
        f.attempts,
        f.last_error
    )
}

pub async fn journal(path: Option<&Path>, target: Option<&str>) -> anyhow::Result<()> {
    let (config, store) = open(path)?;
    known_target(&config, target)?;
    let failures = store.list_failures(target).await?;
    if failures.is_empty() {
        println!("no failed changes");
    }
    for f in failures {
        println!("{}", describe(&f));
    }
    Ok(())
}

pub async fn retry(path: Option<&Path>, target: Option<&str>, seq: Option<i64>) -> anyhow::Result<()> {
    let (config, store) = open(path)?;
    known_target(&config, target)?;
    let seq = seq.map(ChangeSeq);
    if let Some(s) = seq
        && !store.has_entry(s).await?
    {
        anyhow::bail!("the journal has no change with sequence {s}");
    }
    let queued = store.retry(target, seq, now_ms()).await?;
    if queued.is_empty() {
        match seq {
            Some(s) => {
                let state = store.list_failures(target).await?.into_iter().find(|f| f.seq == s).map(|f| f.state);
                match state {
                    Some(st) => anyhow::bail!("change {s} is not a dead letter (it is {})", st.as_str()),
                    None => anyhow::bail!(
                        "change {s} is not a dead letter{}",
                        target.map(|t| format!(" of target {t}")).unwrap_or_default()
                    ),
                }
            }
            None => println!("no dead letters to retry"),
        }
        return Ok(());
    }
    for f in &queued {
        println!("queued: {}", describe(f));
    }
    match staging::running_daemon(&config.staging.path) {
        Some(_) => {
            println!("{} dead letter(s) queued; the running daemon retries them within a few seconds", queued.len())
        }
        None => println!("{} dead letter(s) queued; they are retried when the daemon runs", queued.len()),
    }
    Ok(())
}

/// Who ran a command, for the audit trail.
fn operator() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| "?".into());
    let name = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).or_else(|_| std::env::var("LOGNAME"));
    match name {
        Ok(n) => format!("{n} (uid {uid}) with `scim-bridge journal discard`"),
        Err(_) => format!("uid {uid} with `scim-bridge journal discard`"),
    }
}

pub async fn discard(path: Option<&Path>, target: Option<&str>, seq: i64) -> anyhow::Result<()> {
    let (config, store) = open(path)?;
    known_target(&config, target)?;
    let seq = ChangeSeq(seq);
    if !store.has_entry(seq).await? {
        anyhow::bail!("the journal has no change with sequence {seq}");
    }
    let dropped = store.discard(target, seq, &operator(), now_ms()).await?;
    if dropped.is_empty() {
        let state = store.list_failures(target).await?.into_iter().find(|f| f.seq == seq).map(|f| f.state);
        match state {
            Some(st) => anyhow::bail!(
                "change {seq} is not a dead letter (it is {}); only dead letters are discarded",
                st.as_str()
            ),
            None => anyhow::bail!(
                "change {seq} is not a dead letter{}",
                target.map(|t| format!(" of target {t}")).unwrap_or_default()
            ),
        }
    }
    for f in &dropped {
        println!("discarded: {} (recorded in the audit trail)", describe(f));
    }
    Ok(())
}
