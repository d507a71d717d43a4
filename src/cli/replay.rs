//! The replay commands: `status` (progress per target), `journal` (failed changes), `retry` (dead
//! letters, after their cause is fixed).

use std::path::Path;

use anyhow::Context;
use scim_bridge::staging::ChangeSeq;
use scim_bridge::staging::replay_state::{FailureState, ReplayStore};

use super::{load_config, now_ms};

fn open(path: Option<&Path>) -> anyhow::Result<(scim_bridge::config::Config, ReplayStore)> {
    let config = load_config(path)?;
    let store = ReplayStore::open(&config.staging.path).context("while opening the staging database")?;
    Ok((config, store))
}

pub fn status(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, store) = open(path)?;
    let head = store.head()?;
    let failures = store.list_failures(None)?;
    println!("journal head: {head}");
    if config.targets.is_empty() {
        println!("no [[target]] configured: changes are staged but not replayed");
    }
    for t in &config.targets {
        let name = t.name();
        let cursor = store.cursor(name)?;
        let count = |state: FailureState| failures.iter().filter(|f| f.target == name && f.state == state).count();
        println!(
            "target {name}: replayed up to {cursor} (lag {}), retrying {}, dead {}, waiting {}",
            head.0 - cursor.0,
            count(FailureState::Retry),
            count(FailureState::Dead),
            count(FailureState::Waiting)
        );
    }
    Ok(())
}

pub fn journal(path: Option<&Path>, target: Option<&str>) -> anyhow::Result<()> {
    let (_, store) = open(path)?;
    let failures = store.list_failures(target)?;
    if failures.is_empty() {
        println!("no failed changes");
    }
    for f in failures {
        let when = if f.state == FailureState::Retry {
            format!(", next attempt in {} s", ((f.next_attempt_ms - now_ms()).max(0) + 999) / 1000)
        } else {
            String::new()
        };
        println!(
            "{} seq {} tenant {} resource {}: {} after {} attempt(s){when}: {}",
            f.target,
            f.seq,
            f.tenant.0,
            f.resource_id,
            f.state.as_str(),
            f.attempts,
            f.last_error
        );
    }
    Ok(())
}

pub fn retry(path: Option<&Path>, target: Option<&str>, seq: Option<i64>) -> anyhow::Result<()> {
    let (_, store) = open(path)?;
    let n = store.retry(target, seq.map(ChangeSeq), now_ms())?;
    println!("{n} dead letter(s) queued for another round of attempts; a running daemon picks them up within a minute");
    Ok(())
}
