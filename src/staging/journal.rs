//! The journal model: what staging records of every acknowledged change and of what replay did with it.
//! Replay, reconciliation and the targets speak these types; staging stores them. Nothing here knows how a
//! target writes a row or an entry.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::scim::schema::Kind;

/// A tenant: one IdP connection with its own token and its own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub i64);

/// The sequence number of a journal entry; replay applies the entries of one resource in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangeSeq(pub i64);

impl fmt::Display for ChangeSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The SCIM `id` of a user or group, issued by staging.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(pub String);

impl ResourceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ResourceId {
    fn from(s: &str) -> Self {
        ResourceId(s.to_owned())
    }
}

/// A resource of a tenant: ids are unique within a tenant only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    pub tenant: TenantId,
    pub id: ResourceId,
}

/// What a SCIM request did to a resource.
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

/// A journal entry as replay sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: ChangeSeq,
    pub tenant: TenantId,
    /// The tenant's name, for log lines and messages.
    pub tenant_name: String,
    pub kind: Kind,
    pub resource_id: ResourceId,
    pub op: Op,
    pub request_id: String,
    /// When the change was acknowledged (RFC 3339).
    pub at: String,
    /// The resource after the change (before it, for a delete).
    pub state: Map<String, Value>,
    pub members_added: Vec<ResourceId>,
    pub members_removed: Vec<ResourceId>,
}

impl Entry {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef { tenant: self.tenant, id: self.resource_id.clone() }
    }

    /// A member of this entry's group, as a resource of the same tenant.
    pub fn member(&self, id: &ResourceId) -> ResourceRef {
        ResourceRef { tenant: self.tenant, id: id.clone() }
    }

    /// The user's manager: the enterprise extension's `manager.value` (or a bare string), as a resource of
    /// the same tenant.
    pub fn manager(&self) -> Option<ResourceRef> {
        let m = self.state.get(crate::scim::schema::ENTERPRISE_SCHEMA)?.get("manager")?;
        let id = m.get("value").unwrap_or(m).as_str()?.trim();
        (!id.is_empty()).then(|| self.member(&ResourceId(id.to_owned())))
    }

    /// The other resources this entry names, whose links replay loads with the entry's own: group members
    /// and a user's manager.
    pub fn referenced(&self) -> impl Iterator<Item = ResourceRef> + '_ {
        self.members_added.iter().chain(&self.members_removed).map(|m| self.member(m)).chain(self.manager())
    }
}

/// What applying an entry did downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new row or entry was made.
    Created,
    /// An existing account was found by email (or name) and linked.
    Linked,
    Updated,
    /// Deleted in SCIM and blocked downstream by the delete policy.
    Blocked,
    Deleted,
    /// The target does not replay this kind of resource.
    Ignored,
    /// Nothing downstream to change (a delete of what was never provisioned).
    Absent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Linked => "linked",
            Outcome::Updated => "updated",
            Outcome::Blocked => "blocked",
            Outcome::Deleted => "deleted",
            Outcome::Ignored => "ignored",
            Outcome::Absent => "absent",
        }
    }
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The downstream key the resource is now linked to; None when the link is gone (deleted).
    pub key: Option<String>,
    pub outcome: Outcome,
    pub detail: String,
    /// What was written downstream, readable: statements with their values, LDAP operations.
    pub operations: Vec<String>,
}

impl Applied {
    pub fn new(key: Option<String>, outcome: Outcome, detail: impl Into<String>) -> Applied {
        Applied { key, outcome, detail: detail.into(), operations: Vec::new() }
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

/// Links of resources of one target. Group replay reads its members' keys from it.
pub type Links = HashMap<ResourceRef, Link>;

/// Records the outcome of applying an entry in a links map.
pub fn remember(links: &mut Links, resource: ResourceRef, kind: Kind, applied: &Applied) {
    match &applied.key {
        Some(k) => {
            let created = applied.outcome == Outcome::Created || links.get(&resource).is_some_and(|l| l.created);
            links.insert(resource, Link { key: k.clone(), created, kind });
        }
        None => {
            links.remove(&resource);
        }
    }
}
