//! The story of one user or group, oldest first, as `scim-bridge explain` and the status page tell it:
//! every SCIM request that changed it (what changed: attribute names and new values), and for each target
//! what replay and reconciliation did (outcome, downstream key, the statements or LDAP operations with
//! their values, errors and retries), its current links, and whether it is blocked downstream.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::staging::ledger::{Change, Story};

/// One step of the story.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub at: String,
    /// "SCIM PATCH" for a request, "replay → crm" or "reconciliation run 3 → crm" for a target.
    pub who: String,
    pub summary: String,
    /// Changed attributes, or what was written downstream.
    pub details: Vec<String>,
}

/// The story, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct Narrative {
    pub tenant: String,
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub gone: bool,
    pub steps: Vec<Step>,
    /// Per target: the downstream key and how the link was made.
    pub links: Vec<String>,
    /// Changes that failed and are retrying, dead, or waiting.
    pub failures: Vec<String>,
    /// Per target: blocked downstream or not, as replay last wrote it.
    pub blocked: Vec<String>,
}

/// Attributes never shown (none is stored, but a story must not be the place one leaks).
const SECRET: [&str; 1] = ["password"];

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if SECRET.iter().any(|s| k.eq_ignore_ascii_case(s)) {
                    continue;
                }
                flatten(&path, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// What a change set, attribute by attribute, against the state before it.
fn changed(before: Option<&Map<String, Value>>, after: &Map<String, Value>) -> Vec<String> {
    let mut old = Vec::new();
    if let Some(b) = before {
        flatten("", &Value::Object(b.clone()), &mut old);
    }
    let mut new = Vec::new();
    flatten("", &Value::Object(after.clone()), &mut new);
    let mut out = Vec::new();
    for (path, value) in &new {
        if !old.iter().any(|(p, v)| p == path && v == value) {
            out.push(format!("{path} = {value}"));
        }
    }
    let kept: BTreeSet<&String> = new.iter().map(|(p, _)| p).collect();
    for (path, _) in &old {
        if !kept.contains(path) {
            out.push(format!("{path} removed"));
        }
    }
    out
}

fn request(c: &Change) -> String {
    match c.op.as_str() {
        "create" => "SCIM POST".into(),
        "replace" => "SCIM PUT".into(),
        "patch" => "SCIM PATCH".into(),
        "delete" => "SCIM DELETE".into(),
        other => format!("SCIM {other}"),
    }
}

/// Tells the story.
pub fn narrate(story: &Story) -> Narrative {
    let mut steps: Vec<(String, u8, i64, Step)> = Vec::new();
    let mut before: Option<&Map<String, Value>> = None;
    for c in &story.changes {
        let mut details = if c.op == "delete" { Vec::new() } else { changed(before, &c.state) };
        details.extend(c.members_added.iter().map(|m| format!("+ member {m}")));
        details.extend(c.members_removed.iter().map(|m| format!("- member {m}")));
        let summary = format!("journal entry {} (request {})", c.seq, c.request_id);
        steps.push((c.at.clone(), 0, c.seq, Step { at: c.at.clone(), who: request(c), summary, details }));
        if c.op != "delete" {
            before = Some(&c.state);
        }
    }
    for a in &story.audit {
        let who = match a.request_id.strip_prefix("reconcile-") {
            Some(run) => format!("reconciliation run {run} → {}", a.target),
            None => format!("replay → {}", a.target),
        };
        let key = a.key.as_deref().map(|k| format!(" (downstream key {k})")).unwrap_or_default();
        let summary = match a.outcome.as_str() {
            "error" => format!("entry {} failed: {}", a.seq, a.detail),
            "dead" => format!("entry {} parked as a dead letter: {}", a.seq, a.detail),
            "discarded" => format!("entry {} discarded: {}", a.seq, a.detail),
            outcome => {
                let detail = if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) };
                format!("entry {} {outcome}{key}{detail}", a.seq)
            }
        };
        steps.push((a.at.clone(), 1, a.id, Step { at: a.at.clone(), who, summary, details: a.operations.clone() }));
    }
    steps.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    let last = story.changes.last();
    let inactive = last.is_some_and(|c| c.state.get("active") == Some(&Value::Bool(false)) || c.op == "delete");
    let blocked = story
        .links
        .iter()
        .map(|l| {
            let applied = story
                .audit
                .iter()
                .rev()
                .find(|a| a.target == l.target && !matches!(a.outcome.as_str(), "error" | "dead" | "discarded"));
            let up_to_date = match (applied, last) {
                (Some(a), Some(c)) => a.seq >= c.seq,
                _ => false,
            };
            match (inactive, up_to_date) {
                (true, true) => format!("{}: blocked (the newest change, inactive, is applied)", l.target),
                (false, true) => format!("{}: not blocked (the newest change, active, is applied)", l.target),
                (_, false) => format!("{}: the newest change is not applied yet", l.target),
            }
        })
        .collect();
    let r = &story.resource;
    Narrative {
        tenant: r.tenant.clone(),
        kind: r.kind,
        id: r.id.clone(),
        name: r.name.clone(),
        gone: r.gone,
        steps: steps.into_iter().map(|(_, _, _, s)| s).collect(),
        links: story
            .links
            .iter()
            .map(|l| format!("{}: {} ({}, since {})", l.target, l.key, l.origin, l.linked))
            .collect(),
        failures: story
            .failures
            .iter()
            .map(|f| {
                format!(
                    "{}: entry {} {} after {} attempt(s): {}",
                    f.target,
                    f.seq,
                    f.state.as_str(),
                    f.attempts,
                    f.last_error
                )
            })
            .collect(),
        blocked,
    }
}

/// The story as text.
pub fn text(n: &Narrative) -> String {
    let mut out = format!(
        "{} {} ({}) of tenant {}{}\n",
        n.kind,
        n.name,
        n.id,
        n.tenant,
        if n.gone { " — deleted in SCIM" } else { "" }
    );
    for s in &n.steps {
        out.push_str(&format!("\n{}  {}: {}\n", s.at, s.who, s.summary));
        for d in &s.details {
            out.push_str(&format!("    {d}\n"));
        }
    }
    let section = |out: &mut String, title: &str, lines: &[String], none: &str| {
        out.push_str(&format!("\n{title}:\n"));
        if lines.is_empty() {
            out.push_str(&format!("    {none}\n"));
        }
        for l in lines {
            out.push_str(&format!("    {l}\n"));
        }
    };
    section(&mut out, "links", &n.links, "none: not provisioned in any target");
    section(&mut out, "failed changes", &n.failures, "none");
    section(&mut out, "blocked downstream", &n.blocked, "no target holds it");
    out
}

/// The story as JSON.
pub fn json(n: &Narrative) -> Value {
    json!(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_attributes_and_new_values_never_passwords() {
        let before: Map<String, Value> =
            serde_json::from_value(json!({"userName": "ann", "name": {"givenName": "Ann"}, "title": "x"})).unwrap();
        let after: Map<String, Value> = serde_json::from_value(
            json!({"userName": "ann", "name": {"givenName": "Anne"}, "active": false, "password": "s3cret"}),
        )
        .unwrap();
        let c = changed(Some(&before), &after);
        assert_eq!(c, ["active = false", "name.givenName = \"Anne\"", "title removed"]);
        assert!(!changed(None, &after).iter().any(|l| l.contains("s3cret")));
    }
}
