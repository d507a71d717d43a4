//! `scim-bridge explain` (the story of one user or group) and `scim-bridge history` (recent actions).

use std::path::Path;
use std::time::{Duration, SystemTime};

use scim_bridge::ops::story;
use scim_bridge::staging;

use super::load_config;

pub async fn explain(path: Option<&Path>, query: &str, json: bool) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = staging::open_ledger(&config.staging.path)?;
    let found = store.find_resources(query).await?;
    let one = match found.as_slice() {
        [] => anyhow::bail!(
            "nothing matches {query:?}: give a userName, a group name, an email address, a SCIM id or a downstream key"
        ),
        [one] => one,
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|c| {
                    format!(
                        "  {} {} ({}) of tenant {}{}",
                        c.kind,
                        c.name,
                        c.id,
                        c.tenant,
                        if c.gone { ", deleted" } else { "" }
                    )
                })
                .collect();
            anyhow::bail!("{} resources match {query:?}; name one by its id:\n{}", several.len(), list.join("\n"))
        }
    };
    let narrative = story::narrate(&store.story(one).await?);
    if json {
        println!("{}", serde_json::to_string_pretty(&story::json(&narrative))?);
    } else {
        print!("{}", story::text(&narrative));
    }
    Ok(())
}

/// `--since`: a duration back from now (`1h`, `30m`, `7d`) or a time (RFC 3339).
fn since(text: &str) -> anyhow::Result<String> {
    if humantime::parse_rfc3339_weak(text).is_ok() {
        return Ok(text.to_owned());
    }
    let d: Duration = humantime::parse_duration(text).map_err(|e| {
        anyhow::anyhow!(
            "--since {text:?}: give a duration such as 1h or 7d, or a time such as 2026-12-01T08:00:00Z ({e})"
        )
    })?;
    let at = SystemTime::now().checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(humantime::format_rfc3339_millis(at).to_string())
}

pub async fn history(
    path: Option<&Path>,
    target: Option<&str>,
    since_text: Option<&str>,
    outcome: Option<&str>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let config = load_config(path)?;
    if let Some(t) = target
        && !config.targets.iter().any(|c| c.name() == t)
    {
        let names: Vec<&str> = config.targets.iter().map(|c| c.name()).collect();
        anyhow::bail!(
            "no target is named {t:?} in the configuration (targets: {})",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        );
    }
    const OUTCOMES: [&str; 10] =
        ["created", "linked", "updated", "blocked", "deleted", "ignored", "absent", "error", "dead", "discarded"];
    if let Some(o) = outcome
        && !OUTCOMES.contains(&o)
    {
        anyhow::bail!("--outcome {o:?} is not an outcome; use one of {}", OUTCOMES.join(", "));
    }
    let since = since_text.map(since).transpose()?;
    let store = staging::open_ledger(&config.staging.path)?;
    let rows = store.history(target, since.as_deref(), outcome, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no provisioning actions{}", since.map(|s| format!(" since {s}")).unwrap_or_default());
    }
    for r in rows {
        let who = if r.request_id.starts_with("reconcile-") {
            r.request_id.replace('-', " run ")
        } else {
            format!("request {}", r.request_id)
        };
        let key = r.key.as_deref().map(|k| format!(" key {k}")).unwrap_or_default();
        let detail = if r.detail.is_empty() { String::new() } else { format!(": {}", r.detail) };
        println!(
            "{} {} {} {} {} {} {}{key} ({who}, entry {}){detail}",
            r.at, r.target, r.tenant, r.outcome, r.kind, r.resource_id, r.op, r.seq
        );
    }
    Ok(())
}
