//! How plans, linking reports and runs read: a table for people (counts per action, then one row per
//! action), JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan::{Action, Plan};
use crate::staging::ledger::Run;

/// An id shortened for a table (the JSON output has it whole).
fn short(id: &str) -> String {
    if id.chars().count() > 13 { format!("{}…", id.chars().take(12).collect::<String>()) } else { id.to_owned() }
}

fn cell(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(none)".into(),
    }
}

/// The plan as a table: counts first, then each action.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    let counts = plan.counts();
    let _ = writeln!(out, "target {}: {} linked account(s)", plan.target, plan.linked);
    if counts.is_empty() {
        let _ = writeln!(out, "  nothing to do: the target matches staging");
        return out;
    }
    for (action, n) in &counts {
        let _ = writeln!(out, "  {action:<15} {n:>8}");
    }
    let mut rows: Vec<[String; 5]> = Vec::new();
    for a in &plan.actions {
        let (tenant, resource, key, detail) = match a {
            Action::Create { tenant, kind, id, name } => {
                (tenant, format!("{name} ({})", short(id)), String::new(), format!("new {kind}"))
            }
            Action::Link { tenant, id, name, key, changes } => {
                (tenant, format!("{name} ({})", short(id)), key.clone(), changes_text(changes, "link by email"))
            }
            Action::Ambiguous { tenant, id, name, email, keys, reason } => {
                (tenant, format!("{name} ({})", short(id)), keys.join(", "), format!("{email}: {reason}"))
            }
            Action::Update { tenant, id, name, key, changes, .. } => {
                (tenant, format!("{name} ({})", short(id)), key.clone(), changes_text(changes, ""))
            }
            Action::Block { tenant, id, name, key } => {
                (tenant, format!("{name} ({})", short(id)), key.clone(), "inactive in SCIM".into())
            }
            Action::Unblock { tenant, id, name, key } => {
                (tenant, format!("{name} ({})", short(id)), key.clone(), "active in SCIM".into())
            }
            Action::AddMember { tenant, group, group_id, member_id, member } => {
                (tenant, format!("{group} ({})", short(group_id)), member.clone(), format!("+ member {member_id}"))
            }
            Action::RemoveMember { tenant, group, group_id, member_id, member_key } => {
                (tenant, format!("{group} ({})", short(group_id)), member_key.clone(), format!("- member {member_id}"))
            }
            Action::Orphan { kind, key, tenant, id, why, policy } => (
                tenant,
                format!("{kind} {id}"),
                key.clone(),
                format!(
                    "{why}; policy: {}",
                    serde_json::to_value(policy).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                ),
            ),
        };
        rows.push([a.name().to_owned(), tenant.clone(), resource, key, detail]);
    }
    if !rows.is_empty() {
        let _ = writeln!(out);
        rows.insert(0, ["action", "tenant", "resource", "downstream", "detail"].map(str::to_owned));
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).min(48);
        let widths = [width(0), width(1), width(2), width(3)];
        for r in &rows {
            let _ = writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        }
    }
    if !plan.foreign.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} account(s) were never linked to a SCIM resource (the application's own; never touched):",
            plan.foreign.len()
        );
        for f in plan.foreign.iter().take(50) {
            let _ = writeln!(out, "  {} {}", f.key, f.email.as_deref().unwrap_or(""));
        }
        if plan.foreign.len() > 50 {
            let _ = writeln!(out, "  … and {} more (--json lists them all)", plan.foreign.len() - 50);
        }
    }
    if plan.left_to_replay > 0 {
        let _ = writeln!(
            out,
            "\n{} resource(s) left to replay: they have changes the target has not had yet, or failed ones",
            plan.left_to_replay
        );
    }
    out
}

fn changes_text(changes: &[crate::targets::reconcile::Drift], empty: &str) -> String {
    if changes.is_empty() {
        return empty.to_owned();
    }
    changes.iter().map(|c| format!("{}: {} -> {}", c.field, cell(&c.old), cell(&c.new))).collect::<Vec<_>>().join("; ")
}

/// One user of a linking report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRow {
    pub tenant: String,
    pub id: String,
    pub user_name: String,
    pub email: Option<String>,
    /// "linked", "one", "several", "none", "no email".
    pub result: &'static str,
    pub keys: Vec<String>,
}

/// The linking report as a table, with counts first.
pub fn link_table(target: &str, rows: &[LinkRow]) -> String {
    let mut out = String::new();
    let count = |r: &str| rows.iter().filter(|x| x.result == r).count();
    let _ = writeln!(
        out,
        "target {target}: {} user(s): {} already linked, {} with exactly one match, {} with several, {} with none (would be created), {} without an email",
        rows.len(),
        count("linked"),
        count("one"),
        count("several"),
        count("none"),
        count("no email")
    );
    for r in rows.iter().filter(|r| r.result != "linked") {
        let keys = if r.keys.is_empty() { String::new() } else { format!(" -> {}", r.keys.join(", ")) };
        let _ = writeln!(
            out,
            "  {:<8} {:<12} {} <{}>{keys}",
            r.result,
            r.tenant,
            r.user_name,
            r.email.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Runs as lines, newest first.
pub fn runs_table(runs: &[Run]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        let _ = writeln!(out, "no reconciliation runs yet");
    }
    for r in runs {
        let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "run {} {} {}{} started {} {}: {}{}{}",
            r.id,
            r.target,
            r.trigger,
            if r.dry_run { " (dry run)" } else { "" },
            r.started,
            r.ended.as_deref().map(|e| format!("ended {e}")).unwrap_or_else(|| "still running".into()),
            r.status.as_str(),
            if counts.is_empty() { String::new() } else { format!(" — {}", counts.join(", ")) },
            r.detail.as_deref().map(|d| format!("\n    {d}")).unwrap_or_default(),
        );
    }
    out
}
