//! Progress of a run: a bar with counts and rate on a terminal (indicatif), and in the daemon one INFO line
//! at the start of each phase, every 10 s, and at the end.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a run reports as it goes.
pub trait Progress: Send + Sync {
    /// A new phase, with the number of steps when known.
    fn phase(&self, name: &str, total: Option<u64>);
    /// Steps done in the current phase.
    fn advance(&self, n: u64);
    /// A line worth telling.
    fn note(&self, text: &str);
    fn finish(&self);
}

/// Nothing (tests, JSON output).
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn note(&self, _: &str) {}
    fn finish(&self) {}
}

/// INFO lines: at each phase, every `every`, and at the end.
pub struct LogLines {
    target: String,
    every: Duration,
    state: Mutex<(String, u64, Option<u64>, Instant, Instant)>,
}

impl LogLines {
    pub fn new(target: &str) -> LogLines {
        let now = Instant::now();
        LogLines {
            target: target.to_owned(),
            every: Duration::from_secs(10),
            state: Mutex::new((String::new(), 0, None, now, now)),
        }
    }
}

impl Progress for LogLines {
    fn phase(&self, name: &str, total: Option<u64>) {
        if let Ok(mut s) = self.state.lock() {
            let now = Instant::now();
            *s = (name.to_owned(), 0, total, now, now);
        }
        tracing::info!(target = %self.target, total = ?total, "reconciliation: {name}");
    }
    fn advance(&self, n: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        s.1 += n;
        if s.4.elapsed() >= self.every {
            s.4 = Instant::now();
            let rate = s.1 as f64 / s.3.elapsed().as_secs_f64().max(0.001);
            tracing::info!(target = %self.target, done = s.1, total = ?s.2, per_second = rate.round(), "reconciliation: {}", s.0);
        }
    }
    fn note(&self, text: &str) {
        tracing::info!(target = %self.target, "reconciliation: {text}");
    }
    fn finish(&self) {
        if let Ok(s) = self.state.lock() {
            tracing::debug!(target = %self.target, done = s.1, "reconciliation: {} done", s.0);
        }
    }
}

/// A progress bar on standard error, for a terminal.
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Default for Bar {
    fn default() -> Self {
        Bar { bar: Mutex::new(None) }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        let Ok(mut b) = self.bar.lock() else { return };
        if let Some(old) = b.take() {
            old.finish_and_clear();
        }
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_message(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *b = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            bar.inc(n);
        }
    }
    fn note(&self, text: &str) {
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(bar) = b.take()
        {
            bar.finish_and_clear();
        }
    }
}
