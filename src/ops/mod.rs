//! What running scim-bridge as a service needs beside the pipeline: systemd notification, TLS on the
//! listener, rate limits, metrics, and the story of a resource (`explain`, the status page). The HTTP layer and the daemon use these; they read staging, never
//! the other way round.

pub mod alerts;
pub mod metrics;
pub mod notify;
pub mod rate;
pub mod retention;
pub mod story;
pub mod tls;
pub mod webhook;

use std::sync::{Arc, RwLock};

/// A value swapped whole on reload (settings, limits); readers take the current one and keep it for as
/// long as they need it, so that one request sees one configuration.
pub struct Shared<T>(RwLock<Arc<T>>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared(RwLock::new(Arc::new(value)))
    }
    pub fn get(&self) -> Arc<T> {
        self.0.read().map(|v| v.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut v) => *v = Arc::new(value),
            Err(p) => *p.into_inner() = Arc::new(value),
        }
    }
}
