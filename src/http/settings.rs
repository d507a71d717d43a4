//! What the HTTP layer is told by the configuration. The daemon builds it from `[server]`, the tenants and
//! `[metrics]`, and swaps it whole on reload; a request uses the settings in force when it arrived.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{RateLimit, ServerConfig};
use crate::scim::Rules;

#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Path prefix of every SCIM endpoint, e.g. `/scim/v2`.
    pub base_path: String,
    /// Requests with larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// What each tenant's requests are held to (strictness, the match-email rule of its targets).
    pub rules: TenantRules,
    /// Page size when a list request gives no `count`.
    pub default_page_size: usize,
    /// Largest page served (`ServiceProviderConfig.filter.maxResults`).
    pub max_page_size: usize,
    /// Absolute base URL for `meta.location` and `Location`; derived from the Host header when unset.
    pub public_url: Option<String>,
    /// Requests per tenant; None for no limit.
    pub rate_limit: Option<RateLimit>,
    /// A tenant's own rate limit, overriding `rate_limit`.
    pub tenant_rate_limits: HashMap<String, RateLimit>,
    /// Failed authentications accepted per client address and minute.
    pub auth_failures_per_minute: u32,
    /// Time a client has to send a request body (408 after it).
    pub body_timeout: Duration,
    /// Time from a request's headers to its answer (503 after it).
    pub request_timeout: Duration,
    pub metrics: MetricsAccess,
    /// SHA-256 of the admin token the status page requires; without one the page is off.
    pub status_token: Option<[u8; 32]>,
    /// The targets /readyz checks, by name.
    pub targets: Vec<String>,
    /// Each target with the tenants bound to it, for the status page.
    pub bindings: Vec<(String, Vec<String>)>,
}

/// Who may read /metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    pub enabled: bool,
    /// SHA-256 of the bearer token /metrics requires, if any.
    pub token_hash: Option<[u8; 32]>,
}

impl From<&ServerConfig> for ScimSettings {
    fn from(s: &ServerConfig) -> Self {
        ScimSettings {
            base_path: s.base_path.clone(),
            max_body_bytes: s.max_body_bytes,
            rules: TenantRules {
                default: Rules { strict: s.strict, require_match_email: false },
                ..Default::default()
            },
            default_page_size: s.default_page_size,
            max_page_size: s.max_page_size,
            public_url: s.public_url.clone(),
            rate_limit: Some(s.rate_limit),
            tenant_rate_limits: HashMap::new(),
            auth_failures_per_minute: s.auth_failures_per_minute,
            body_timeout: Duration::from_secs(s.body_timeout_seconds),
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            metrics: MetricsAccess { enabled: true, token_hash: None },
            status_token: None,
            targets: Vec::new(),
            bindings: Vec::new(),
        }
    }
}

impl Default for ScimSettings {
    fn default() -> Self {
        (&ServerConfig::default()).into()
    }
}

impl ScimSettings {
    /// The rate limit of a tenant's requests.
    pub fn rate_limit_of(&self, tenant: &str) -> Option<RateLimit> {
        self.tenant_rate_limits.get(tenant).copied().or(self.rate_limit)
    }

    /// The limit on failed authentications per client address.
    pub fn auth_failure_limit(&self) -> RateLimit {
        let n = self.auth_failures_per_minute.max(1);
        RateLimit { requests_per_second: f64::from(n) / 60.0, burst: n }
    }
}

/// The rules of each tenant; a tenant not listed (no `[[tenant]]` block) gets the default.
#[derive(Debug, Clone, Default)]
pub struct TenantRules {
    pub default: Rules,
    pub tenants: HashMap<String, Rules>,
}

impl TenantRules {
    pub fn of(&self, tenant: &str) -> Rules {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}
