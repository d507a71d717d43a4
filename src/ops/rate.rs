//! Token buckets: requests per tenant, and failed authentications per client address. A bucket holds up to
//! `burst` tokens and refills at `requests_per_second`; a request takes one, and when none is left the
//! answer is 429 with the whole seconds until one will be (Okta honours whole seconds only). Hand-written:
//! twenty lines, where a crate would bring its own clock and concurrent map.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key (a tenant name, a client address).
#[derive(Debug, Default)]
pub struct Buckets<K: Hash + Eq> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Buckets kept at most; full ones are dropped first (a full bucket is the same as no bucket).
const MOST: usize = 10_000;

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new() -> Self {
        Buckets { buckets: Mutex::new(HashMap::new()) }
    }

    fn refill(b: &mut Bucket, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.requests_per_second).min(limit.burst as f64);
        b.at = now;
    }

    /// Whether a token is there, without taking it; when not, how long until one is.
    pub fn peek(&self, key: &K, limit: RateLimit) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else { return Ok(()) };
        let Some(b) = map.get_mut(key) else { return Ok(()) };
        Self::refill(b, limit, now);
        if b.tokens >= 1.0 { Ok(()) } else { Err(wait(b.tokens, limit)) }
    }

    /// Takes a token; when none is left, how long until one will be.
    pub fn take(&self, key: &K, limit: RateLimit) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else { return Ok(()) };
        if map.len() >= MOST && !map.contains_key(key) {
            map.retain(|_, b| {
                Self::refill(b, limit, now);
                b.tokens < limit.burst as f64
            });
        }
        let b = map.entry(key.clone()).or_insert(Bucket { tokens: limit.burst as f64, at: now });
        Self::refill(b, limit, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait(b.tokens, limit))
        }
    }
}

fn wait(tokens: f64, limit: RateLimit) -> Duration {
    Duration::from_secs_f64(((1.0 - tokens) / limit.requests_per_second).max(0.0))
}

/// Lets one log line per key through per interval, so that a client hammering a limit does not flood the
/// log with the same refusal.
#[derive(Debug)]
pub struct LogThrottle<K: Hash + Eq> {
    last: Mutex<HashMap<K, Instant>>,
    interval: Duration,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
    pub fn new(interval: Duration) -> Self {
        LogThrottle { last: Mutex::new(HashMap::new()), interval }
    }

    /// Whether to log now for `key`.
    pub fn allow(&self, key: &K) -> bool {
        let now = Instant::now();
        let Ok(mut map) = self.last.lock() else { return true };
        if map.len() >= MOST {
            map.retain(|_, at| now.saturating_duration_since(*at) < self.interval);
        }
        match map.get(key) {
            Some(at) if now.saturating_duration_since(*at) < self.interval => false,
            _ => {
                map.insert(key.clone(), now);
                true
            }
        }
    }
}

/// Seconds for `Retry-After`: whole, and at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate() {
        let limit = RateLimit { requests_per_second: 2.0, burst: 3 };
        let b: Buckets<&str> = Buckets::new();
        for _ in 0..3 {
            assert!(b.take(&"t", limit).is_ok());
        }
        let wait = b.take(&"t", limit).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::from_millis(400), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(b.take(&"other", limit).is_ok(), "buckets are per key");
        assert!(b.peek(&"never-seen", limit).is_ok());
        assert!(b.peek(&"t", limit).is_err());
    }

    #[test]
    fn one_log_line_per_key_and_interval() {
        let t = LogThrottle::new(Duration::from_secs(60));
        assert!(t.allow(&"a"));
        assert!(!t.allow(&"a"));
        assert!(t.allow(&"b"));
    }
}
