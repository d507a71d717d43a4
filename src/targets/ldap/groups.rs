//! Group entries: groupOfNames and groupOfUniqueNames (member DNs, a placeholder member while empty),
//! posixGroup (memberUid, gidNumber allocated) or Active Directory's group (member DNs, groupType,
//! sAMAccountName, empty allowed). Every membership change is a single modify of one value,
//! never a rewrite of the member list.

use std::collections::HashSet;

use ldap3::{Ldap, LdapError, Mod, Scope, ldap_escape};

use super::conn::{ALREADY_EXISTS, classify, classify_rc};
use super::{GroupClass, Groups, LdapTarget, rdn, split_dn, text};
use crate::scim::schema::Kind;
use crate::targets::link::{self, Claims};
use crate::targets::{Applied, Entry, Links, Op, Outcome, TargetError};

impl LdapTarget {
    pub(super) async fn drop_memberships(&self, l: &mut Ldap, dn: &str) -> Result<(), TargetError> {
        let Some(g) = &self.groups else { return Ok(()) };
        let value = self.member_value(l, g.class, dn).await?;
        let filter = format!("({}={})", g.class.member_attr(), ldap_escape(&value));
        for group in self.search(l, &g.base_dn, Scope::Subtree, &filter, &["1.1"]).await? {
            self.remove_member(l, g, &group.dn, &value).await?;
        }
        Ok(())
    }

    /// The value naming a user in a group: its DN, or its uid for posixGroup.
    pub(super) async fn member_value(
        &self,
        l: &mut Ldap,
        class: GroupClass,
        user_dn: &str,
    ) -> Result<String, TargetError> {
        if class != GroupClass::Posix {
            return Ok(user_dn.to_owned());
        }
        let entry = self.read(l, user_dn, &["uid"]).await?;
        entry
            .and_then(|e| e.attrs.get("uid").and_then(|v| v.first().cloned()))
            .ok_or_else(|| TargetError::permanent(format!("{user_dn} has no uid for a posixGroup memberUid")))
    }

    async fn remove_member(&self, l: &mut Ldap, g: &Groups, group_dn: &str, value: &str) -> Result<(), TargetError> {
        let attr = g.class.member_attr().to_owned();
        match self.modify_rc(l, group_dn, vec![Mod::Delete(attr.clone(), [value.to_owned()].into())]).await? {
            0 | 16 => Ok(()), // 16 noSuchAttribute: already gone
            // Active Directory answers unwillingToPerform for a value that is not there.
            53 if g.class == GroupClass::Ad && !self.has_member(l, group_dn, &attr, value).await? => Ok(()),
            // 65 objectClassViolation: the last member of a groupOfNames; the placeholder takes its place.
            65 if g.class.needs_member() => {
                let mods = vec![
                    Mod::Add(attr.clone(), [g.empty_member.clone()].into()),
                    Mod::Delete(attr, [value.to_owned()].into()),
                ];
                match self.modify_rc(l, group_dn, mods).await? {
                    0 | 16 => Ok(()),
                    rc => Err(classify_rc(rc, "removing the last member")),
                }
            }
            rc => Err(classify_rc(rc, &format!("removing a member of {group_dn}"))),
        }
    }

    async fn add_member(&self, l: &mut Ldap, g: &Groups, group_dn: &str, value: &str) -> Result<(), TargetError> {
        let attr = g.class.member_attr().to_owned();
        match self.modify_rc(l, group_dn, vec![Mod::Add(attr.clone(), [value.to_owned()].into())]).await? {
            0 | 20 => {} // 20 attributeOrValueExists: already a member
            // Active Directory answers entryAlreadyExists for a member that is there.
            68 if g.class == GroupClass::Ad && self.has_member(l, group_dn, &attr, value).await? => {}
            rc => return Err(classify_rc(rc, &format!("adding a member to {group_dn}"))),
        }
        if g.class.needs_member() {
            match self.modify_rc(l, group_dn, vec![Mod::Delete(attr, [g.empty_member.clone()].into())]).await? {
                0 | 16 => {}
                rc => return Err(classify_rc(rc, "removing the empty-group placeholder")),
            }
        }
        Ok(())
    }

    /// Whether the group holds the value, asked with a filter (a large AD group lists its members only in
    /// ranges).
    async fn has_member(&self, l: &mut Ldap, group_dn: &str, attr: &str, value: &str) -> Result<bool, TargetError> {
        let filter = format!("({attr}={})", ldap_escape(value));
        Ok(!self.search(l, group_dn, Scope::Base, &filter, &["1.1"]).await?.is_empty())
    }

    async fn next_gid(&self, l: &mut Ldap, g: &Groups) -> Result<u32, TargetError> {
        // Held across the search so that two lanes cannot both read the same highest number.
        let mut last = self.last_gid.lock().await;
        let entries = self.search(l, &g.base_dn, Scope::Subtree, "(objectClass=posixGroup)", &["gidNumber"]).await?;
        let max =
            entries.iter().filter_map(|e| e.attrs.get("gidNumber")?.first()?.parse::<u32>().ok()).chain(*last).max();
        let next = match max {
            None => g.gid_start,
            Some(m) => m
                .checked_add(1)
                .ok_or_else(|| TargetError::permanent(format!("no gidNumber left above {m} under {}", g.base_dn)))?
                .max(g.gid_start),
        };
        *last = Some(next);
        Ok(next)
    }

    pub(super) async fn apply_group(
        &self,
        l: &mut Ldap,
        e: &Entry,
        link: Option<String>,
        links: &Links,
        claims: &dyn Claims,
    ) -> Result<Applied, TargetError> {
        let Some(g) = &self.groups else {
            return Ok(Applied::new(None, Outcome::Ignored, "no [target.groups] configured"));
        };
        let name = text(&g.rdn.eval(&e.state, e.resource_id.as_str()))
            .ok_or_else(|| TargetError::permanent(format!("the group RDN attribute {} has no value", g.rdn_attr)))?;
        let rdn = rdn(&g.rdn_attr, &name);
        let mut dn = None;
        if let Some(d) = link
            && self.read(l, &d, &["1.1"]).await?.is_some()
        {
            dn = Some(d);
        }
        if dn.is_none() {
            let filter =
                format!("(&(objectClass={})({}={}))", g.class.object_class(), g.rdn_attr, ldap_escape(name.as_str()));
            let found = self.search(l, &g.base_dn, Scope::OneLevel, &filter, &["1.1"]).await?;
            let ambiguous =
                |dns: &[String]| format!("{} groups match {filter}: {}; not guessing", dns.len(), dns.join("; "));
            let dns = found.into_iter().map(|e| e.dn).collect();
            dn = link::choose(dns, ambiguous, links, claims, Kind::Group, &e.resource()).await?;
        }
        if e.op == Op::Delete {
            let Some(dn) = dn else {
                return Ok(Applied::new(None, Outcome::Absent, "no directory group to remove"));
            };
            self.delete_entry(l, &dn).await?;
            return Ok(Applied::new(None, Outcome::Deleted, dn));
        }
        // Members without an entry here (their user failed to replay or was deleted since), and groups in
        // a posixGroup, are left out and named in the audit detail rather than failing the group's change.
        let mut added = Vec::new();
        let mut skipped = Vec::new();
        for id in &e.members_added {
            match links.get(&e.member(id)) {
                Some(m) if m.kind == Kind::User || g.class != GroupClass::Posix => {
                    added.push(self.member_value(l, g.class, &m.key).await?)
                }
                _ => skipped.push(id.to_string()),
            }
        }
        let (dn, outcome) = match dn {
            Some(dn) => {
                let (cur_rdn, parent) = split_dn(&dn);
                let dn = if cur_rdn.eq_ignore_ascii_case(&rdn) {
                    dn.clone()
                } else {
                    self.rename(l, &dn, &rdn, None).await?;
                    format!("{rdn},{parent}")
                };
                for v in &added {
                    self.add_member(l, g, &dn, v).await?;
                }
                (dn, Outcome::Updated)
            }
            None => {
                let dn = format!("{rdn},{}", g.base_dn);
                let mut attrs: Vec<(String, HashSet<String>)> = vec![
                    ("objectClass".into(), [g.class.object_class().to_owned()].into()),
                    (g.rdn_attr.clone(), [name.clone()].into()),
                ];
                let mut members: HashSet<String> = added.iter().cloned().collect();
                match g.class {
                    GroupClass::Posix => {
                        attrs.push(("gidNumber".into(), [self.next_gid(l, g).await?.to_string()].into()));
                    }
                    GroupClass::Ad => attrs.push(("groupType".into(), [g.group_type.to_string()].into())),
                    GroupClass::Names | GroupClass::UniqueNames => {}
                }
                if members.is_empty() && g.class.needs_member() {
                    members.insert(g.empty_member.clone());
                }
                if !members.is_empty() {
                    attrs.push((g.class.member_attr().to_owned(), members));
                }
                if let Some(sam) = &g.sam {
                    let value = text(&sam.eval(&e.state, e.resource_id.as_str()));
                    let name = self.unique_sam(l, Kind::Group, value, &e.resource()).await?;
                    attrs.push(("sAMAccountName".into(), [name].into()));
                }
                match self.add_entry(l, &dn, attrs, None).await {
                    Ok(_) => {}
                    Err(LdapError::LdapResult { result }) if result.rc == ALREADY_EXISTS => {
                        for v in &added {
                            self.add_member(l, g, &dn, v).await?;
                        }
                    }
                    Err(err) => return Err(classify(err)),
                }
                (dn, Outcome::Created)
            }
        };
        for id in &e.members_removed {
            let Some(user_dn) = links.get(&e.member(id)).map(|l| &l.key) else { continue };
            let v = self.member_value(l, g.class, user_dn).await.unwrap_or_else(|_| user_dn.clone());
            self.remove_member(l, g, &dn, &v).await?;
        }
        let mut detail = format!("+{} -{} members", added.len(), e.members_removed.len());
        if !skipped.is_empty() {
            detail.push_str(&format!("; not provisioned here, left out: {}", skipped.join(" ")));
        }
        Ok(Applied::new(Some(dn), outcome, detail))
    }
}
