//! Alerts: `[[alert]]` webhooks told when a target goes down and comes back, when a change is parked as a
//! dead letter, and when a scheduled reconciliation run stops at its safety limit or fails. Events go
//! into a bounded queue that never blocks replay (a full queue drops the event with a WARN); one task per
//! webhook sends them in order, retrying with backoff. A target that stays down is reported once, then
//! reminded once per `repeat_minutes`, never once per retry. The URL may carry a secret: it is read from
//! a file or the environment if so configured, and never logged (alerts are named by their `name`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::webhook;
pub use crate::config::{AlertConfig, AlertFormat, EventKind};

/// Something an administrator wants to hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    TargetDown { target: String, error: String },
    TargetUp { target: String, down_seconds: u64 },
    DeadLetter { target: String, tenant: String, kind: String, id: String, name: String, seq: i64, error: String },
    ReconcileStopped { target: String, run: i64, detail: String },
    ReconcileFailed { target: String, run: i64, detail: String },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::TargetDown { .. } => EventKind::TargetDown,
            Event::TargetUp { .. } => EventKind::TargetUp,
            Event::DeadLetter { .. } => EventKind::DeadLetter,
            Event::ReconcileStopped { .. } => EventKind::ReconcileStopped,
            Event::ReconcileFailed { .. } => EventKind::ReconcileFailed,
        }
    }

    /// One line for people.
    pub fn text(&self) -> String {
        match self {
            Event::TargetDown { target, error } => format!("scim-bridge: target {target} is down: {error}"),
            Event::TargetUp { target, down_seconds } => {
                format!("scim-bridge: target {target} is reachable again (down for {down_seconds} s)")
            }
            Event::DeadLetter { target, tenant, kind, name, seq, error, .. } => format!(
                "scim-bridge: {kind} {name} of tenant {tenant} could not be written to {target} and is parked as a dead letter (change {seq}): {error}"
            ),
            Event::ReconcileStopped { target, run, detail } => {
                format!("scim-bridge: reconciliation run {run} of {target} stopped: {detail}")
            }
            Event::ReconcileFailed { target, run, detail } => {
                format!("scim-bridge: reconciliation run {run} of {target} failed: {detail}")
            }
        }
    }

    fn json(&self) -> Value {
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut v = match self {
            Event::TargetDown { target, error } => json!({"target": target, "error": error}),
            Event::TargetUp { target, down_seconds } => json!({"target": target, "down_seconds": down_seconds}),
            Event::DeadLetter { target, tenant, kind, id, name, seq, error } => {
                json!({"target": target, "tenant": tenant, "kind": kind, "id": id, "name": name, "seq": seq, "error": error})
            }
            Event::ReconcileStopped { target, run, detail } | Event::ReconcileFailed { target, run, detail } => {
                json!({"target": target, "run": run, "detail": detail})
            }
        };
        let kind = serde_json::to_value(self.kind()).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("event".into(), kind);
            m.insert("at".into(), at.into());
            m.insert("text".into(), self.text().into());
        }
        v
    }
}

/// Where events go: a cheap handle that never blocks.
#[derive(Clone, Default)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Event>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tx.is_some() { "Alerts(on)" } else { "Alerts(off)" })
    }
}

/// Events queued at most; more are dropped (with a WARN) rather than block replay.
const QUEUE: usize = 1024;

impl Alerts {
    /// No alerts configured.
    pub fn none() -> Alerts {
        Alerts { tx: None }
    }

    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            tracing::warn!("the alert queue is full; an alert was dropped");
        }
    }
}

/// A configured webhook with its URL resolved.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub url: String,
    pub format: AlertFormat,
    pub events: Vec<EventKind>,
    pub repeat: Duration,
}

/// Resolves the URL of an `[[alert]]` (file or environment).
///
/// # Errors
/// Not exactly one of url, url_file, url_env; the file or variable cannot be read; not an http(s) URL.
pub fn resolve(c: &AlertConfig) -> Result<Hook, String> {
    let url = match (&c.url, &c.url_file, &c.url_env) {
        (Some(u), None, None) => u.clone(),
        (None, Some(f), None) => std::fs::read_to_string(f)
            .map_err(|e| format!("url_file: cannot read {}: {e}", f.display()))?
            .trim()
            .to_owned(),
        (None, None, Some(v)) => {
            std::env::var(v).map_err(|_| format!("url_env: the environment variable {v} is not set"))?.trim().to_owned()
        }
        _ => return Err("give exactly one of url, url_file and url_env".into()),
    };
    webhook::parse(&url).map_err(|e| format!("the webhook URL {e}"))?;
    Ok(Hook {
        name: c.name.clone(),
        url,
        format: c.format,
        events: c.events.clone(),
        repeat: Duration::from_secs(c.repeat_minutes.max(1) * 60),
    })
}

/// Starts the senders; they end when `stop` becomes true. With no hooks, events go nowhere.
pub fn start(hooks: Vec<Hook>, stop: watch::Receiver<bool>) -> Alerts {
    if hooks.is_empty() {
        return Alerts::none();
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(dispatch(hooks, rx, stop));
    Alerts { tx: Some(tx) }
}

/// Fans events out to one queue per webhook, and reminds of targets that stay down.
async fn dispatch(hooks: Vec<Hook>, mut rx: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
    let mut queues = Vec::new();
    for hook in hooks {
        let (tx, hrx) = mpsc::channel(QUEUE);
        let repeat = hook.repeat;
        tokio::spawn(deliver(hook.clone(), hrx));
        queues.push((hook, tx, repeat));
    }
    // Per target that is down: the event, and when each webhook last heard of it.
    let mut down: HashMap<String, (Event, Vec<tokio::time::Instant>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => return },
            _ = tick.tick() => {
                for (target, (event, sent)) in &mut down {
                    for (i, (hook, tx, repeat)) in queues.iter().enumerate() {
                        if sent[i].elapsed() >= *repeat && wants(hook, EventKind::TargetDown) {
                            sent[i] = tokio::time::Instant::now();
                            tracing::debug!(target = %target, alert = %hook.name, "reminding that a target is still down");
                            let _ = tx.try_send(event.clone());
                        }
                    }
                }
                continue;
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        match &event {
            Event::TargetDown { target, .. } => {
                down.insert(target.clone(), (event.clone(), vec![tokio::time::Instant::now(); queues.len()]));
            }
            Event::TargetUp { target, .. } => {
                down.remove(target);
            }
            _ => {}
        }
        for (hook, tx, _) in &queues {
            if wants(hook, event.kind()) && tx.try_send(event.clone()).is_err() {
                tracing::warn!(alert = %hook.name, "the alert's queue is full (the webhook is slow or down); an alert was dropped");
            }
        }
    }
}

fn wants(hook: &Hook, kind: EventKind) -> bool {
    hook.events.is_empty() || hook.events.contains(&kind)
}

/// Sends one webhook's events in order, each retried with backoff (1, 2, 4, 8, 16 s) before it is given up.
async fn deliver(hook: Hook, mut rx: mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let body = match hook.format {
            AlertFormat::Json => event.json(),
            AlertFormat::Text => json!({"text": event.text()}),
        }
        .to_string();
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=6 {
            match webhook::post_json(&hook.url, &body, Duration::from_secs(10)).await {
                Ok(status) if (200..300).contains(&status) => {
                    tracing::debug!(alert = %hook.name, event = ?event.kind(), "alert sent");
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(status) => format!("the webhook answered {status}"),
                        Err(e) => e,
                    };
                    if attempt == 6 {
                        tracing::error!(alert = %hook.name, event = ?event.kind(), error = %why, "alert not delivered after 6 attempts; given up");
                    } else {
                        tracing::warn!(alert = %hook.name, event = ?event.kind(), error = %why, retry_in_seconds = wait.as_secs(), "alert not delivered; will retry");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
    }
}
