//! Scheduled runs in the daemon: one task per target with a `[target.reconcile] schedule`, sleeping until
//! the next time the cron expression names (UTC), then running reconciliation and applying it. Single
//! flight comes from the run's lease in staging: a run still going (started by hand, or a slow one) makes
//! the next scheduled one skip with a log line, rather than queue up.
//!
//! Time is read from Tokio's clock, anchored to the wall clock at start, so that tests drive a schedule
//! with paused time instead of waiting for it.

use std::future::Future;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The wall clock, advanced by Tokio's clock (see the module documentation).
#[derive(Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    at: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { wall: SystemTime::now(), at: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.wall + self.at.elapsed())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How long from `now` until the schedule's next time.
pub fn until_next(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.after(&now).next()?;
    (next - now).to_std().ok()
}

/// Runs `run` at every time of `schedule` until `stop` becomes true. `run` gets the time it was due.
pub async fn every<F, Fut>(schedule: cron::Schedule, clock: Clock, mut stop: watch::Receiver<bool>, mut run: F)
where
    F: FnMut(DateTime<Utc>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let now = clock.now();
        let Some(wait) = until_next(&schedule, now) else { return };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if *stop.borrow() {
            return;
        }
        run(clock.now()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::targets::reconcile::parse_schedule;

    #[test]
    fn next_time_of_five_and_six_field_schedules() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T01:59:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(until_next(&parse_schedule("0 2 * * *").unwrap(), now), Some(Duration::from_secs(30)));
        assert_eq!(until_next(&parse_schedule("*/15 * * * *").unwrap(), now), Some(Duration::from_secs(30)));
        assert_eq!(until_next(&parse_schedule("0 0 3 * * *").unwrap(), now), Some(Duration::from_secs(3630)));
    }

    /// With paused time: a run every 15 minutes fires four times in an hour, each at its time; a run that
    /// takes longer than the interval does not make the next ones pile up.
    #[tokio::test(start_paused = true)]
    async fn runs_at_each_time_and_never_overlaps() {
        let clock = Clock::new();
        let (stop_tx, stop) = watch::channel(false);
        let fired: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
        let f = fired.clone();
        let task = tokio::spawn(every(parse_schedule("*/15 * * * *").unwrap(), clock, stop, move |at| {
            let f = f.clone();
            async move {
                f.lock().unwrap().push(at);
                // Longer than one interval: the task runs one at a time, so times in between are skipped.
                if f.lock().unwrap().len() == 2 {
                    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
                }
            }
        }));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let fired = fired.lock().unwrap().clone();
        assert!(fired.len() == 3, "{fired:?}");
        for at in &fired {
            assert_eq!(chrono::Timelike::minute(at) % 15, 0, "{at}");
            assert_eq!(chrono::Timelike::second(at), 0, "{at}");
        }
        let gaps: Vec<i64> = fired.windows(2).map(|w| (w[1] - w[0]).num_minutes()).collect();
        assert_eq!(gaps, [15, 30], "the long second run made the third wait for the next time");
    }
}
