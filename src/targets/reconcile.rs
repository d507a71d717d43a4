//! What reconciliation needs of a target: its `[target.reconcile]` settings, and the target's actual state
//! in a form every target shares — accounts with their key, link, match values, mapped values and
//! blocked state; groups with their members — plus the comparison of one account with what staging says,
//! after the target's own normalisation (trimmed CHAR columns and booleans in SQL, case-insensitive
//! attributes in LDAP).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// `[target.reconcile]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// When the daemon runs reconciliation (and applies it): a cron expression. The usual five fields
    /// (minute hour day-of-month month day-of-week, UTC) or six with seconds first.
    pub schedule: Option<String>,
    /// What a run does with an account scim-bridge once linked whose resource is gone or no longer bound
    /// to this target: "report" (default), "block", or "ignore". Accounts it never linked are only
    /// counted and listed, never touched.
    pub orphans: OrphanPolicy,
    /// The most accounts a run may block: a count (`25`) or a share of the linked accounts (`"10%"`). A
    /// plan that would block more stops before changing anything, unless run with `--force`.
    pub max_blocks: BlockLimit,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig { schedule: None, orphans: OrphanPolicy::Report, max_blocks: BlockLimit::Percent(10.0) }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicy {
    #[default]
    Report,
    Block,
    Ignore,
}

/// See [`ReconcileConfig::max_blocks`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockLimit {
    Count(u64),
    Percent(f64),
}

impl BlockLimit {
    /// The most blocks allowed with `linked` accounts linked (a percentage rounds up, and allows at least one).
    pub fn allowed(self, linked: usize) -> u64 {
        match self {
            BlockLimit::Count(n) => n,
            BlockLimit::Percent(p) => ((linked as f64) * p / 100.0).ceil().max(1.0) as u64,
        }
    }
}

impl fmt::Display for BlockLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockLimit::Count(n) => write!(f, "{n}"),
            BlockLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for BlockLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is neither a count (25) nor a percentage (\"10%\")");
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(BlockLimit::Percent(v)),
                _ => Err(bad()),
            },
            None => s.trim().parse().map(BlockLimit::Count).map_err(|_| bad()),
        }
    }
}

impl<'de> Deserialize<'de> for BlockLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BlockLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count (25) or a percentage (\"10%\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BlockLimit, E> {
                Ok(BlockLimit::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BlockLimit, E> {
                u64::try_from(v).map(BlockLimit::Count).map_err(|_| E::custom("max_blocks cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BlockLimit, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A cron expression as the configuration gives it: five fields get a seconds field of 0 in front.
///
/// # Errors
/// The expression does not parse, with the reason.
pub fn parse_schedule(text: &str) -> Result<cron::Schedule, String> {
    let fields = text.split_whitespace().count();
    let full = if fields == 5 { format!("0 {text}") } else { text.to_owned() };
    cron::Schedule::from_str(&full)
        .map_err(|e| format!("{text:?} is not a cron expression ({e}); use five fields, e.g. \"0 2 * * *\""))
}

/// An account as the target holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualUser {
    /// The downstream key (a SQL key, an LDAP DN): what links hold.
    pub key: String,
    /// The SCIM id in the link column, where the target has one.
    pub link: Option<String>,
    /// The values the match email is compared with, lower-cased.
    pub emails: Vec<String>,
    /// The values of the mapped fields (columns, attributes) as text, in the order of the target's mapping
    /// (the names are the target's, kept once rather than per account).
    pub values: Vec<Option<String>>,
    /// Whether the blocked representation is applied.
    pub blocked: bool,
}

/// A group as the target holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualGroup {
    pub key: String,
    pub name: String,
    pub link: Option<String>,
    /// The members, as the keys of their accounts.
    pub members: Vec<String>,
}

/// One field that differs between the target and staging.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Drift {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_limits() {
        assert_eq!("25".parse::<BlockLimit>(), Ok(BlockLimit::Count(25)));
        assert_eq!("10%".parse::<BlockLimit>(), Ok(BlockLimit::Percent(10.0)));
        assert!("ten".parse::<BlockLimit>().is_err() && "150%".parse::<BlockLimit>().is_err());
        assert_eq!(BlockLimit::Percent(10.0).allowed(1000), 100);
        assert_eq!(BlockLimit::Percent(10.0).allowed(3), 1, "at least one");
        assert_eq!(BlockLimit::Count(0).allowed(1000), 0);
    }

    #[test]
    fn five_field_cron_gets_seconds() {
        let s = parse_schedule("0 2 * * *").unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-12-01T05:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let next = s.after(&after).next().unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-02T02:00:00+00:00");
        assert!(parse_schedule("0 0 2 * * *").is_ok());
        let e = parse_schedule("at two").unwrap_err();
        assert!(e.contains("at two"), "{e}");
    }
}
