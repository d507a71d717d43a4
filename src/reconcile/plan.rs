//! The plan: what staging says (the desired state, streamed page by page) against what the target holds
//! (its actual state, read once), resource by resource. Pure: no I/O, so that every rule is tested on
//! plain values.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::scim::schema::Kind;
use crate::staging::journal::{ResourceId, ResourceRef};
use crate::staging::ledger::{Desired, TargetLink};
use crate::targets::reconcile::{ActualGroup, ActualUser, Drift, OrphanPolicy};

/// One thing a run does (or, for reports, found).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// No account (or group) downstream: create it.
    Create {
        tenant: String,
        kind: &'static str,
        id: String,
        name: String,
    },
    /// One account has the user's match email and nobody else's link: link it (and bring it up to date).
    Link {
        tenant: String,
        id: String,
        name: String,
        key: String,
        changes: Vec<Drift>,
    },
    /// Several accounts match, or the one match is another resource's: reported, never guessed.
    Ambiguous {
        tenant: String,
        id: String,
        name: String,
        email: String,
        keys: Vec<String>,
        reason: String,
    },
    /// Linked, and some mapped values differ.
    Update {
        tenant: String,
        kind: &'static str,
        id: String,
        name: String,
        key: String,
        changes: Vec<Drift>,
    },
    /// The blocked flags say active, but the user is not.
    Block {
        tenant: String,
        id: String,
        name: String,
        key: String,
    },
    /// The blocked flags say blocked, but the user is active.
    Unblock {
        tenant: String,
        id: String,
        name: String,
        key: String,
    },
    AddMember {
        tenant: String,
        group_id: String,
        group: String,
        member_id: String,
        member: String,
    },
    RemoveMember {
        tenant: String,
        group_id: String,
        group: String,
        member_id: String,
        member_key: String,
    },
    /// An account (or group) linked once, whose resource is gone or no longer bound here.
    Orphan {
        kind: &'static str,
        key: String,
        tenant: String,
        id: String,
        why: String,
        policy: OrphanPolicyName,
    },
}

/// The orphan policy as the plan shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicyName {
    Report,
    Block,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Link { .. } => "link",
            Action::Ambiguous { .. } => "ambiguous",
            Action::Update { .. } => "update",
            Action::Block { .. } => "block",
            Action::Unblock { .. } => "unblock",
            Action::AddMember { .. } => "add_member",
            Action::RemoveMember { .. } => "remove_member",
            Action::Orphan { .. } => "orphan",
        }
    }

    /// Whether applying it blocks an account (for the safety limit).
    pub fn blocks(&self) -> bool {
        matches!(self, Action::Block { .. } | Action::Orphan { policy: OrphanPolicyName::Block, kind: "User", .. })
    }

    /// The resource it concerns, when applying it writes that resource.
    pub fn resource_id(&self) -> Option<&str> {
        match self {
            Action::Create { id, .. }
            | Action::Link { id, .. }
            | Action::Update { id, .. }
            | Action::Block { id, .. }
            | Action::Unblock { id, .. } => Some(id),
            Action::AddMember { group_id, .. } | Action::RemoveMember { group_id, .. } => Some(group_id),
            Action::Orphan { policy: OrphanPolicyName::Block, id, .. } => Some(id),
            Action::Ambiguous { .. } | Action::Orphan { .. } => None,
        }
    }
}

/// An account no resource was ever linked to: the application's own users, local admins. Counted and
/// listed, never touched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Foreign {
    pub key: String,
    pub email: Option<String>,
}

/// A run's plan for one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub target: String,
    pub actions: Vec<Action>,
    pub foreign: Vec<Foreign>,
    /// Resources left to replay: they have changes the target has not had yet, or failed ones.
    pub left_to_replay: usize,
    /// Accounts linked to a resource of this target, for a percentage safety limit.
    pub linked: usize,
}

impl Plan {
    /// Actions per name, plus `foreign` and `left_to_replay`.
    pub fn counts(&self) -> BTreeMap<String, i64> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for a in &self.actions {
            *counts.entry(a.name().to_owned()).or_default() += 1;
        }
        if !self.foreign.is_empty() {
            counts.insert("foreign".into(), self.foreign.len() as i64);
        }
        if self.left_to_replay > 0 {
            counts.insert("left_to_replay".into(), self.left_to_replay as i64);
        }
        counts
    }

    pub fn blocks(&self) -> usize {
        self.actions.iter().filter(|a| a.blocks()).count()
    }

    /// Whether a run would change anything.
    pub fn changes_anything(&self) -> bool {
        self.actions.iter().any(|a| a.resource_id().is_some())
    }
}

/// How the target compares one account with a staged user (see `Target::user_drift`), and which match
/// email it uses.
pub trait Compare {
    fn user_drift(&self, d: &Desired, actual: &ActualUser) -> (Vec<Drift>, bool);
    fn match_email(&self, d: &Desired) -> Option<String>;
    fn replays_groups(&self) -> bool;
}

/// A downstream key as compared: DNs without case and spaces (the same entry however it is written),
/// other keys as they are.
fn norm(key: &str) -> String {
    if key.contains('=') { crate::targets::ldap::norm_dn(key) } else { key.to_owned() }
}

fn display(d: &Desired) -> String {
    let field = if d.kind == Kind::User { "userName" } else { "displayName" };
    d.state.get(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

/// Builds a plan: `add_users` and `add_groups` with pages of the desired state, then `finish`.
pub struct Planner<'a, C: Compare> {
    target: &'a C,
    plan: Plan,
    users: Vec<ActualUser>,
    by_key: HashMap<String, usize>,
    by_email: HashMap<String, Vec<usize>>,
    by_link_column: HashMap<String, usize>,
    seen: HashSet<String>,
    groups: Vec<ActualGroup>,
    group_by_key: HashMap<String, usize>,
    group_by_name: HashMap<String, Vec<usize>>,
    groups_seen: HashSet<String>,
    links: HashMap<ResourceRef, TargetLink>,
    owners: HashMap<(Kind, String), ResourceRef>,
    left: HashSet<ResourceRef>,
    /// The users of this run's tenants that exist in staging (for orphans and memberships).
    staged: HashSet<ResourceRef>,
    tenants: HashMap<crate::staging::journal::TenantId, String>,
    tenant_filter: Option<crate::staging::journal::TenantId>,
    orphans: OrphanPolicy,
}

impl<'a, C: Compare> Planner<'a, C> {
    /// `tenants`: the tenants bound to the target (id, name); `tenant_filter`: the one a run is limited to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target_name: &str,
        target: &'a C,
        users: Vec<ActualUser>,
        groups: Vec<ActualGroup>,
        links: Vec<TargetLink>,
        left: HashSet<ResourceRef>,
        tenants: HashMap<crate::staging::journal::TenantId, String>,
        tenant_filter: Option<crate::staging::journal::TenantId>,
        orphans: OrphanPolicy,
    ) -> Self {
        let mut by_key = HashMap::new();
        let mut by_email: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_link_column = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            by_key.insert(norm(&u.key), i);
            for e in &u.emails {
                by_email.entry(e.clone()).or_default().push(i);
            }
            if let Some(l) = &u.link {
                by_link_column.insert(l.clone(), i);
            }
        }
        let mut group_by_key = HashMap::new();
        let mut group_by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            group_by_key.insert(norm(&g.key), i);
            group_by_name.entry(g.name.to_lowercase()).or_default().push(i);
        }
        let owners = links.iter().map(|l| ((l.kind, norm(&l.key)), l.resource.clone())).collect();
        let linked = links.iter().filter(|l| l.kind == Kind::User && by_key.contains_key(&norm(&l.key))).count();
        let links = links.into_iter().map(|l| (l.resource.clone(), l)).collect();
        Planner {
            target,
            plan: Plan { target: target_name.to_owned(), linked, ..Default::default() },
            users,
            by_key,
            by_email,
            by_link_column,
            seen: HashSet::new(),
            groups,
            group_by_key,
            group_by_name,
            groups_seen: HashSet::new(),
            links,
            owners,
            left,
            staged: HashSet::new(),
            tenants,
            tenant_filter,
            orphans,
        }
    }

    /// The account a user is linked to (staging's link, then the link column), if it still exists.
    fn linked_account(&self, d: &Desired) -> Option<usize> {
        let r = d.resource();
        self.links
            .get(&r)
            .and_then(|l| self.by_key.get(&norm(&l.key)).copied())
            .or_else(|| self.by_link_column.get(d.id.as_str()).copied())
    }

    /// Compares one page of staged users.
    pub fn add_users(&mut self, page: &[Desired]) {
        for d in page {
            let r = d.resource();
            self.staged.insert(r.clone());
            if let Some(l) = self.links.get(&r) {
                self.seen.insert(norm(&l.key));
            }
            if self.left.contains(&r) {
                if let Some(i) = self.linked_account(d) {
                    self.seen.insert(norm(&self.users[i].key));
                }
                self.plan.left_to_replay += 1;
                continue;
            }
            let (tenant, id, name) = (d.tenant_name.clone(), d.id.to_string(), display(d));
            let account = match self.linked_account(d) {
                Some(i) => Some((i, true)),
                None => match self.target.match_email(d) {
                    None => None,
                    Some(email) => {
                        let found = self.by_email.get(&email).cloned().unwrap_or_default();
                        let free: Vec<usize> = found
                            .iter()
                            .copied()
                            .filter(|i| {
                                self.owners.get(&(Kind::User, norm(&self.users[*i].key))).is_none_or(|o| *o == r)
                            })
                            .collect();
                        match (found.len(), free.len()) {
                            (0, _) => None,
                            (1, 1) => Some((free[0], false)),
                            (n, _) => {
                                let keys: Vec<String> = found.iter().map(|i| self.users[*i].key.clone()).collect();
                                let reason = if n == 1 {
                                    "the one match is linked to another resource".to_owned()
                                } else {
                                    format!("{n} accounts have this email; not guessing")
                                };
                                keys.iter().for_each(|k| {
                                    self.seen.insert(norm(k));
                                });
                                self.plan.actions.push(Action::Ambiguous { tenant, id, name, email, keys, reason });
                                continue;
                            }
                        }
                    }
                },
            };
            let Some((i, linked)) = account else {
                self.plan.actions.push(Action::Create { tenant, kind: "User", id, name });
                continue;
            };
            let actual = &self.users[i];
            self.seen.insert(norm(&actual.key));
            let (changes, flags_differ) = self.target.user_drift(d, actual);
            let key = actual.key.clone();
            if !linked {
                self.plan.actions.push(Action::Link {
                    tenant: tenant.clone(),
                    id: id.clone(),
                    name: name.clone(),
                    key: key.clone(),
                    changes,
                });
            } else if !changes.is_empty() {
                let a = Action::Update {
                    tenant: tenant.clone(),
                    kind: "User",
                    id: id.clone(),
                    name: name.clone(),
                    key: key.clone(),
                    changes,
                };
                self.plan.actions.push(a);
            }
            if flags_differ {
                let active = d.state.get("active") != Some(&serde_json::Value::Bool(false));
                self.plan.actions.push(if active {
                    Action::Unblock { tenant, id, name, key }
                } else {
                    Action::Block { tenant, id, name, key }
                });
            }
        }
    }

    /// The key of a user as a member: its link, or the account a planned link found.
    fn member_key(&self, member: &ResourceRef) -> Option<String> {
        if let Some(l) = self.links.get(member) {
            return Some(l.key.clone());
        }
        self.plan.actions.iter().find_map(|a| match a {
            Action::Link { id, key, .. } if id == member.id.as_str() => Some(key.clone()),
            _ => None,
        })
    }

    /// Compares one page of staged groups (after every user page).
    pub fn add_groups(&mut self, page: &[Desired]) {
        if !self.target.replays_groups() {
            return;
        }
        for d in page {
            let r = d.resource();
            if let Some(l) = self.links.get(&r) {
                self.groups_seen.insert(norm(&l.key));
            }
            if self.left.contains(&r) {
                self.plan.left_to_replay += 1;
                continue;
            }
            let (tenant, id, name) = (d.tenant_name.clone(), d.id.to_string(), display(d));
            let found = self.links.get(&r).and_then(|l| self.group_by_key.get(&norm(&l.key)).copied()).or_else(|| {
                let same_name = self.group_by_name.get(&name.to_lowercase())?;
                (same_name.len() == 1).then(|| same_name[0])
            });
            let Some(gi) = found else {
                self.plan.actions.push(Action::Create {
                    tenant: tenant.clone(),
                    kind: "Group",
                    id: id.clone(),
                    name: name.clone(),
                });
                for m in &d.members {
                    self.plan.actions.push(Action::AddMember {
                        tenant: tenant.clone(),
                        group_id: id.clone(),
                        group: name.clone(),
                        member_id: m.to_string(),
                        member: self.member_key(&d.member_ref(m)).unwrap_or_else(|| "(created by this run)".into()),
                    });
                }
                continue;
            };
            let actual = self.groups[gi].clone();
            self.groups_seen.insert(norm(&actual.key));
            if actual.name != name {
                let changes =
                    vec![Drift { field: "name".into(), old: Some(actual.name.clone()), new: Some(name.clone()) }];
                self.plan.actions.push(Action::Update {
                    tenant: tenant.clone(),
                    kind: "Group",
                    id: id.clone(),
                    name: name.clone(),
                    key: actual.key.clone(),
                    changes,
                });
            }
            let have: HashSet<String> = actual.members.iter().map(|m| norm(m)).collect();
            let mut wanted_keys = HashSet::new();
            for m in &d.members {
                let member = d.member_ref(m);
                match self.member_key(&member) {
                    Some(k) => {
                        wanted_keys.insert(norm(&k));
                        if !have.contains(&norm(&k)) {
                            self.plan.actions.push(Action::AddMember {
                                tenant: tenant.clone(),
                                group_id: id.clone(),
                                group: name.clone(),
                                member_id: m.to_string(),
                                member: k,
                            });
                        }
                    }
                    None if self.staged.contains(&member) => self.plan.actions.push(Action::AddMember {
                        tenant: tenant.clone(),
                        group_id: id.clone(),
                        group: name.clone(),
                        member_id: m.to_string(),
                        member: "(created by this run)".into(),
                    }),
                    None => {}
                }
            }
            // Members that are accounts of ours (linked users) and no longer in the group; the
            // application's own accounts in the group are left alone.
            for k in &actual.members {
                if wanted_keys.contains(&norm(k)) {
                    continue;
                }
                if let Some(owner) = self.owners.get(&(Kind::User, norm(k))) {
                    self.plan.actions.push(Action::RemoveMember {
                        tenant: tenant.clone(),
                        group_id: id.clone(),
                        group: name.clone(),
                        member_id: owner.id.to_string(),
                        member_key: k.clone(),
                    });
                }
            }
        }
    }

    /// Orphans and foreign accounts: what no staged resource of this run accounted for.
    pub fn finish(mut self) -> Plan {
        let policy = match self.orphans {
            OrphanPolicy::Ignore => None,
            OrphanPolicy::Report => Some(OrphanPolicyName::Report),
            OrphanPolicy::Block => Some(OrphanPolicyName::Block),
        };
        let mut orphans = Vec::new();
        for u in &self.users {
            if self.seen.contains(&norm(&u.key)) {
                continue;
            }
            let owner = self.owners.get(&(Kind::User, norm(&u.key))).cloned();
            match owner {
                Some(r) => {
                    // Another tenant's (outside this run), or already in the state a delete leaves it in.
                    if self.tenant_filter.is_some_and(|t| t != r.tenant) || u.blocked {
                        continue;
                    }
                    let (tenant, why) = match self.tenants.get(&r.tenant) {
                        Some(t) => (t.clone(), "its user is gone from staging".to_owned()),
                        None => (format!("#{}", r.tenant.0), "its tenant is no longer bound to this target".to_owned()),
                    };
                    if let Some(policy) = policy {
                        orphans.push(Action::Orphan {
                            kind: "User",
                            key: u.key.clone(),
                            tenant,
                            id: r.id.to_string(),
                            why,
                            policy,
                        });
                    }
                }
                None if u.link.is_some() => {
                    if let Some(policy) = policy {
                        let id = u.link.clone().unwrap_or_default();
                        orphans.push(Action::Orphan {
                            kind: "User",
                            key: u.key.clone(),
                            tenant: String::new(),
                            id,
                            why: "its link column names a SCIM id staging does not know".into(),
                            policy: if policy == OrphanPolicyName::Block { OrphanPolicyName::Report } else { policy },
                        });
                    }
                }
                None => self.plan.foreign.push(Foreign { key: u.key.clone(), email: u.emails.first().cloned() }),
            }
        }
        for g in &self.groups {
            if self.groups_seen.contains(&norm(&g.key)) {
                continue;
            }
            if let (Some(r), Some(_)) = (self.owners.get(&(Kind::Group, norm(&g.key))), policy)
                && self.tenant_filter.is_none_or(|t| t == r.tenant)
            {
                let tenant = self.tenants.get(&r.tenant).cloned().unwrap_or_else(|| format!("#{}", r.tenant.0));
                orphans.push(Action::Orphan {
                    kind: "Group",
                    key: g.key.clone(),
                    tenant,
                    id: r.id.to_string(),
                    why: "its group is gone from staging or no longer bound".into(),
                    policy: OrphanPolicyName::Report,
                });
            }
        }
        self.plan.actions.extend(orphans);
        self.plan
    }
}

trait MemberRef {
    fn member_ref(&self, id: &ResourceId) -> ResourceRef;
}

impl MemberRef for Desired {
    fn member_ref(&self, id: &ResourceId) -> ResourceRef {
        ResourceRef { tenant: self.tenant, id: id.clone() }
    }
}
