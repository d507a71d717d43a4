//! Targets: the downstream systems that replay (and reconciliation) write into. Each applies journal
//! entries in order per resource, idempotently (applying an entry twice leaves the same downstream state),
//! and tells transient failures (retry without limit) from permanent ones (retry a few times, then a dead
//! letter). Below them is only the journal model of `crate::staging::journal` and the mapping language.

pub mod ldap;
pub mod link;
pub mod reconcile;
pub mod sql;

use std::error::Error as StdError;

use serde::Deserialize;

pub use self::link::{Claims, NoClaims};
pub use crate::staging::journal::{Applied, Entry, Link, Links, Op, Outcome};

/// What a SCIM DELETE does downstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    /// Apply the blocked representation and keep the row or entry (the default: data is never lost).
    #[default]
    Block,
    /// Remove the row or entry and its memberships.
    Delete,
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A target setting that cannot work, found while building the target from its configuration. `key` is
/// the setting's path below its `[[target]]` block (`users.columns.first_name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BuildError {
    pub key: String,
    pub message: String,
}

pub(crate) fn bad(key: impl Into<String>, message: impl std::fmt::Display) -> BuildError {
    BuildError { key: key.into(), message: message.to_string() }
}

/// Why applying an entry failed. The message says what scim-bridge was doing; the source, when kept, is the
/// driver's own error (see [`TargetError::report`]).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target cannot be reached or is busy (connection refused, timeout, deadlock): retry, no limit.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The change cannot apply as it is (constraint violation, ambiguous match, mapping error).
    #[error("{message}")]
    Permanent {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl TargetError {
    pub fn transient(message: impl Into<String>) -> Self {
        TargetError::Transient { message: message.into(), source: None }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        TargetError::Permanent { message: message.into(), source: None }
    }
    pub fn transient_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TargetError::Transient { message: message.into(), source: Some(source.into()) }
    }
    pub fn permanent_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TargetError::Permanent { message: message.into(), source: Some(source.into()) }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Transient { .. })
    }

    /// The same failure, counted against the target as a whole rather than one change: a failure to
    /// introspect or to open a transaction must never turn a batch into dead letters.
    pub fn into_transient(self) -> Self {
        match self {
            TargetError::Permanent { message, source } => TargetError::Transient { message, source },
            t => t,
        }
    }

    /// The message and its sources, each once: "what we did: what the driver said". A source whose text
    /// the message already quotes is not repeated.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = self.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !text.is_empty() && !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}

/// A configured target.
// One per configured target, built once and shared: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Sql(sql::SqlTarget),
    Ldap(ldap::LdapTarget),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Sql(t) => t.name(),
            Target::Ldap(t) => t.name(),
        }
    }

    /// Applies entries (in order) as one unit: SQL targets in one transaction (all or none), LDAP entry by
    /// entry. `links` is read for each entry's resource and for group members, and reflects what is
    /// downstream afterwards, also on failure (nothing of a rolled-back transaction; the applied prefix
    /// for LDAP), so that a later attempt finds the rows instead of creating them again.
    ///
    /// # Errors
    /// The first entry that failed, classified transient or permanent.
    pub async fn apply_batch(
        &self,
        entries: &[Entry],
        links: &mut Links,
        claims: &dyn Claims,
    ) -> Result<Vec<Applied>, TargetError> {
        match self {
            Target::Sql(t) => t.apply_batch(entries, links, claims).await,
            Target::Ldap(t) => t.apply_batch(entries, links, claims).await,
        }
    }

    /// Checks the target's configuration against the live system (tables, columns, connectivity).
    ///
    /// # Errors
    /// What does not match, or why the target cannot be reached.
    pub async fn check(&self) -> Result<(), TargetError> {
        match self {
            Target::Sql(t) => t.check().await,
            Target::Ldap(t) => t.check().await,
        }
    }

    /// Whether the target answers now: a cheap round trip, made while replay is idle so that an outage is
    /// seen (and reported) before a change needs the target.
    ///
    /// # Errors
    /// Why the target cannot be reached.
    pub async fn ping(&self) -> Result<(), TargetError> {
        match self {
            Target::Sql(t) => t.ping().await,
            Target::Ldap(t) => t.check().await,
        }
    }

    /// Every account the target holds (for reconciliation).
    ///
    /// # Errors
    /// The target cannot be read.
    pub async fn snapshot_users(&self) -> Result<Vec<reconcile::ActualUser>, TargetError> {
        match self {
            Target::Sql(t) => t.snapshot_users().await,
            Target::Ldap(t) => t.snapshot_users().await,
        }
    }

    /// Every group the target holds, with its members (none when groups are not replayed here).
    ///
    /// # Errors
    /// The target cannot be read.
    pub async fn snapshot_groups(&self) -> Result<Vec<reconcile::ActualGroup>, TargetError> {
        match self {
            Target::Sql(t) => t.snapshot_groups().await,
            Target::Ldap(t) => t.snapshot_groups().await,
        }
    }

    /// What differs between an account and a staged user, and whether its blocked state disagrees.
    pub fn user_drift(
        &self,
        state: &serde_json::Map<String, serde_json::Value>,
        id: &str,
        actual: &reconcile::ActualUser,
    ) -> (Vec<reconcile::Drift>, bool) {
        match self {
            Target::Sql(t) => t.user_drift(state, id, actual),
            Target::Ldap(t) => t.user_drift(state, id, actual),
        }
    }

    /// The match email of a staged user as this target compares it (lower-cased); None when the target does
    /// not link by email.
    pub fn user_match(&self, state: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        match self {
            Target::Sql(t) => t.user_match(state),
            Target::Ldap(t) => t.user_match(state),
        }
    }

    /// Whether the target links existing accounts by the user's match email, so that a tenant bound to it
    /// must send users that have one.
    pub fn matches_by_email(&self) -> bool {
        match self {
            Target::Sql(t) => t.matches_by_email(),
            // The match filter always names {match_email}.
            Target::Ldap(_) => true,
        }
    }

    /// The downstream indexes replay's lookups rely on, and whether each exists (SQL targets; a directory
    /// server's indexes are its own configuration, not readable over LDAP in general).
    ///
    /// # Errors
    /// The target cannot be reached or its catalog read.
    pub async fn index_advice(&self) -> Result<Vec<sql::IndexAdvice>, TargetError> {
        match self {
            Target::Sql(t) => t.index_advice().await,
            Target::Ldap(_) => Ok(Vec::new()),
        }
    }

    /// How many batches may be applied at once.
    pub fn parallelism(&self) -> usize {
        match self {
            Target::Sql(t) => t.parallelism(),
            // Operations share one multiplexed connection; a few in flight hide the round trips.
            Target::Ldap(_) => 4,
        }
    }

    /// Whether this target replays groups (otherwise group entries are acknowledged as ignored).
    pub fn replays_groups(&self) -> bool {
        match self {
            Target::Sql(t) => t.replays_groups(),
            Target::Ldap(t) => t.replays_groups(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = TargetError::transient_from("cannot connect to db.example:5432", io);
        assert_eq!(e.report(), "cannot connect to db.example:5432: connection refused");
        let io = std::io::Error::other("disk full");
        let e = TargetError::permanent_from("write failed: disk full", io);
        assert_eq!(e.report(), "write failed: disk full");
        assert!(TargetError::permanent("x").into_transient().is_transient());
    }
}
