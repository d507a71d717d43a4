//! Targets: the downstream systems replay writes into. Each applies journal entries, in order per resource,
//! idempotently (applying an entry twice leaves the same downstream state), and tells transient failures
//! (retry without limit) from permanent ones (retry a few times, then a dead letter).

pub mod ldap;
pub mod sql;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::scim::schema::Kind;
use crate::staging::TenantId;

/// A journal entry as replay sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: i64,
    pub tenant: TenantId,
    pub kind: Kind,
    pub resource_id: String,
    pub op: Op,
    pub request_id: String,
    /// When the change was acknowledged (RFC 3339).
    pub at: String,
    /// The resource after the change (before it, for a delete).
    pub state: Map<String, Value>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Replace,
    Patch,
    Delete,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "create" => Op::Create,
            "replace" => Op::Replace,
            "patch" => Op::Patch,
            "delete" => Op::Delete,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Replace => "replace",
            Op::Patch => "patch",
            Op::Delete => "delete",
        }
    }
}

/// One entry to apply, with the link replay knows for its resource.
#[derive(Clone)]
pub struct Work<'a> {
    pub entry: &'a Entry,
    pub link: Option<String>,
    pub claims: &'a dyn Claims,
}

/// Who a downstream key is already linked to, across all of a target's links (not only this batch's).
pub trait Claims: Send + Sync {
    /// The (tenant, SCIM id) linked to `key` in this target, if any.
    fn owner(&self, key: &str) -> Option<(TenantId, String)>;
}

/// No links anywhere (a target's own lookups that need no protection).
pub struct NoClaims;

impl Claims for NoClaims {
    fn owner(&self, _: &str) -> Option<(TenantId, String)> {
        None
    }
}

/// Refuses to link a resource to a row or entry that another resource (of any tenant) is linked to: found
/// by email or name, it would otherwise be updated, blocked or deleted on behalf of someone else.
pub fn check_unclaimed(
    links: &Links,
    claims: &dyn Claims,
    tenant: TenantId,
    resource_id: &str,
    key: &str,
) -> Result<(), TargetError> {
    let mine = |t: TenantId, id: &str| t == tenant && id == resource_id;
    let in_batch = links.iter().find(|((t, id), l)| l.key == key && !mine(*t, id)).map(|((t, id), _)| (*t, id.clone()));
    match in_batch.or_else(|| claims.owner(key)) {
        Some((t, id)) if !mine(t, &id) => Err(TargetError::Permanent(format!(
            "{key} matches, but it is already linked to resource {id} of tenant {}; not linking a second SCIM resource to it",
            t.0
        ))),
        _ => Ok(()),
    }
}

/// What applying an entry did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The downstream key the resource is now linked to; None when the link is gone (deleted).
    pub key: Option<String>,
    /// created, linked, updated, blocked, deleted, ignored, absent
    pub outcome: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// The target cannot be reached or is busy (connection refused, timeout, deadlock): retry, no limit.
    #[error("{0}")]
    Transient(String),
    /// The change cannot apply as it is (constraint violation, ambiguous match, mapping error).
    #[error("{0}")]
    Permanent(String),
}

impl TargetError {
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Transient(_))
    }
}

/// The downstream row or entry a resource is linked to.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub key: String,
    /// scim-bridge created it (rather than finding an existing one by email): only such entries are
    /// renamed when their naming attribute changes.
    pub created: bool,
    /// The kind of the linked resource (a group's members may be users or groups).
    pub kind: Kind,
}

/// Links of resources: (tenant, SCIM id) → link. Group replay reads user keys from it.
pub type Links = HashMap<(TenantId, String), Link>;

/// Records the outcome of applying an entry in a links map.
pub fn remember(links: &mut Links, id: (TenantId, String), kind: Kind, applied: &Applied) {
    match &applied.key {
        Some(k) => {
            let created = applied.outcome == "created" || links.get(&id).is_some_and(|l| l.created);
            links.insert(id, Link { key: k.clone(), created, kind });
        }
        None => {
            links.remove(&id);
        }
    }
}

/// A configured target.
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

    /// Applies entries (in order) in one downstream transaction: all of them, or none. `links` is read for
    /// each entry's resource and for group members, and updated as entries apply, so that a later entry of
    /// the same resource finds the row an earlier one created. On failure, the index of the entry that
    /// failed; the caller then discards `links`.
    pub async fn apply_batch(
        &self,
        entries: &[Entry],
        links: &mut Links,
        claims: &dyn Claims,
    ) -> Result<Vec<Applied>, (usize, TargetError)> {
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
