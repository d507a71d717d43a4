//! User entries: find (link, then the match filter), add or modify the mapped attributes, rename or move
//! (modrdn) with group memberships following, disable, and delete by policy.

use std::collections::HashSet;

use ldap3::{Ldap, LdapError, Mod, Scope};
use serde_json::{Map, Value};

use super::config::Disable;
use super::conn::{ALREADY_EXISTS, classify, classify_rc};
use super::{LdapTarget, match_filter, rdn, set, split_dn, text};
use crate::matching::match_email;
use crate::scim::schema::Kind;
use crate::targets::link::{self, Claims};
use crate::targets::{Applied, DeletePolicy, Entry, Link, Links, Op, Outcome, TargetError};

impl LdapTarget {
    /// Finds a user's entry: by its link (if the entry still exists), else by the match filter.
    async fn find_user(
        &self,
        l: &mut Ldap,
        e: &Entry,
        link: Option<String>,
        links: &Links,
        claims: &dyn Claims,
    ) -> Result<(Option<String>, bool), TargetError> {
        if let Some(dn) = link
            && self.read(l, &dn, &["1.1"]).await?.is_some()
        {
            return Ok((Some(dn), true));
        }
        let Some(email) = match_email(&e.state) else { return Ok((None, false)) };
        let filter = match_filter(&self.users.match_filter, &email);
        let mut bases = vec![self.users.base_dn.clone()];
        if let Disable::Move { disabled_base_dn } = &self.disable {
            bases.push(disabled_base_dn.clone());
        }
        let mut dns = Vec::new();
        for base in bases {
            dns.extend(self.search(l, &base, Scope::Subtree, &filter, &["1.1"]).await?.into_iter().map(|e| e.dn));
        }
        let ambiguous = |dns: &[String]| {
            format!(
                "{} entries match {filter}: {}; not guessing which one is this user — fix the directory, then retry",
                dns.len(),
                dns.join("; ")
            )
        };
        Ok((link::choose(dns, ambiguous, links, claims, Kind::User, &e.resource()).await?, false))
    }

    fn user_rdn(&self, state: &Map<String, Value>, id: &str) -> Result<String, TargetError> {
        let v = text(&self.users.rdn.eval(state, id)).ok_or_else(|| {
            TargetError::permanent(format!("the RDN attribute {} has no value for this user", self.users.rdn_attr))
        })?;
        Ok(rdn(&self.users.rdn_attr, &v))
    }

    pub(super) async fn apply_user(
        &self,
        l: &mut Ldap,
        e: &Entry,
        link: Option<Link>,
        links: &Links,
        claims: &dyn Claims,
    ) -> Result<Applied, TargetError> {
        let id = e.resource_id.as_str();
        // Entries found by email keep their name: their uid or cn may be a login the directory relies on.
        // Entries this service created follow the RDN template when its source changes.
        let rename = link.as_ref().is_some_and(|l| l.created);
        let (dn, was_linked) = self.find_user(l, e, link.map(|l| l.key), links, claims).await?;
        let active = e.state.get("active") != Some(&Value::Bool(false));
        if e.op == Op::Delete {
            let Some(dn) = dn else {
                return Ok(Applied::new(None, Outcome::Absent, "no directory entry to remove"));
            };
            return match self.delete_policy {
                DeletePolicy::Block => {
                    let dn = self.place(l, &dn, &e.state, id, false, rename).await?;
                    self.represent(l, &dn, false).await?;
                    Ok(Applied::new(Some(dn), Outcome::Blocked, "deleted in SCIM; disabled by policy"))
                }
                DeletePolicy::Delete => {
                    self.drop_memberships(l, &dn).await?;
                    self.delete_entry(l, &dn).await?;
                    Ok(Applied::new(None, Outcome::Deleted, dn))
                }
            };
        }
        let mut values: Vec<(String, Option<String>)> =
            self.users.attrs.iter().map(|(a, s)| (a.clone(), text(&s.eval(&e.state, id)))).collect();
        let mut notes: Vec<String> = Vec::new();
        if let Some(attr) = &self.users.manager_attr {
            values.push((attr.clone(), manager_dn(e, links, &mut notes)));
        }
        let (dn, outcome) = match dn {
            Some(dn) => {
                let dn = self.place(l, &dn, &e.state, id, active, rename).await?;
                let mods = values
                    .iter()
                    .filter(|(a, _)| !a.eq_ignore_ascii_case(&self.users.rdn_attr))
                    .map(|(a, v)| Mod::Replace(a.clone(), v.iter().cloned().collect()))
                    .collect();
                self.modify(l, &dn, mods).await?;
                (dn, if was_linked { Outcome::Updated } else { Outcome::Linked })
            }
            None => match self.add_user(l, e, &values, active, links, claims).await? {
                (dn, Outcome::Created) => {
                    if !active {
                        notes.insert(0, "created disabled (active = false)".into());
                    }
                    return Ok(Applied::new(Some(dn), Outcome::Created, notes.join("; ")));
                }
                other => other,
            },
        };
        self.represent(l, &dn, active).await?;
        if !active {
            notes.insert(0, "disabled (active = false)".into());
        }
        Ok(Applied::new(Some(dn), outcome, notes.join("; ")))
    }

    /// Adds a new entry for the user, already in its enabled or disabled representation. An entry of the
    /// same name made by an earlier attempt (whose outcome was not recorded) is taken over.
    async fn add_user(
        &self,
        l: &mut Ldap,
        e: &Entry,
        values: &[(String, Option<String>)],
        active: bool,
        links: &Links,
        claims: &dyn Claims,
    ) -> Result<(String, Outcome), TargetError> {
        let id = e.resource_id.as_str();
        let rdn = self.user_rdn(&e.state, id)?;
        let parent = match (&self.disable, active) {
            (Disable::Move { disabled_base_dn }, false) => disabled_base_dn.clone(),
            _ => self.users.base_dn.clone(),
        };
        let dn = format!("{rdn},{parent}");
        let mut attrs: Vec<(String, HashSet<String>)> = vec![("objectClass".into(), set(&self.users.object_classes))];
        let rdn_value = text(&self.users.rdn.eval(&e.state, id)).unwrap_or_default();
        let mut has_rdn = false;
        for (a, v) in values {
            if let Some(v) = v {
                let mut vals: HashSet<String> = [v.clone()].into();
                if a.eq_ignore_ascii_case(&self.users.rdn_attr) {
                    vals.insert(rdn_value.clone());
                    has_rdn = true;
                }
                attrs.push((a.clone(), vals));
            }
        }
        if !has_rdn {
            attrs.push((self.users.rdn_attr.clone(), [rdn_value].into()));
        }
        if let Some(sam) = &self.users.sam {
            let name = self.unique_sam(l, Kind::User, text(&sam.eval(&e.state, id)), &e.resource()).await?;
            attrs.push(("sAMAccountName".into(), [name].into()));
        }
        let secret = self.state_on_create(&mut attrs, active)?;
        match self.add_entry(l, &dn, attrs, secret).await {
            Ok(_) => Ok((dn, Outcome::Created)),
            // An entry with this name exists. Created by an earlier attempt whose outcome was not recorded,
            // it carries this user's address and no other resource's link: take it over. Anyone else's
            // entry of the same name is not touched.
            Err(LdapError::LdapResult { result }) if result.rc == ALREADY_EXISTS => {
                let email = match_email(&e.state);
                let existing = self.read(l, &dn, &["mail"]).await?;
                if existing.is_none() {
                    // No entry of that name: a value the directory keeps unique (AD's sAMAccountName or
                    // userPrincipalName) is another entry's.
                    return Err(classify_rc(result.rc, &result.text));
                }
                let same = existing.as_ref().is_some_and(|x| {
                    x.attrs
                        .get("mail")
                        .is_some_and(|m| m.iter().any(|v| email.as_deref().is_some_and(|e| v.eq_ignore_ascii_case(e))))
                });
                if !same {
                    return Err(TargetError::permanent(format!(
                        "an entry named {dn} already exists and is not this user's (its mail differs); choose another RDN template or resolve it in the directory"
                    )));
                }
                link::check_unclaimed(links, claims, Kind::User, &e.resource(), &dn).await?;
                let mods = values.iter().map(|(a, v)| Mod::Replace(a.clone(), v.iter().cloned().collect())).collect();
                self.modify(l, &dn, mods).await?;
                Ok((dn, Outcome::Linked))
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Renames or moves the entry when its RDN value changed or (move method) its enabled state did.
    async fn place(
        &self,
        l: &mut Ldap,
        dn: &str,
        state: &Map<String, Value>,
        id: &str,
        active: bool,
        rename: bool,
    ) -> Result<String, TargetError> {
        let (cur_rdn, cur_parent) = split_dn(dn);
        let rdn = if rename { self.user_rdn(state, id)? } else { cur_rdn.to_owned() };
        let parent = match &self.disable {
            Disable::Move { disabled_base_dn } if !active => disabled_base_dn.clone(),
            Disable::Move { .. } => self.users.base_dn.clone(),
            _ => cur_parent.to_owned(),
        };
        let same_rdn = cur_rdn.eq_ignore_ascii_case(&rdn);
        let same_parent = cur_parent.eq_ignore_ascii_case(&parent);
        if same_rdn && same_parent {
            return Ok(dn.to_owned());
        }
        let new_sup = if same_parent { None } else { Some(parent.as_str()) };
        let old_member = match &self.groups {
            Some(g) => Some(self.member_value(l, g.class, dn).await?),
            None => None,
        };
        self.rename(l, dn, &rdn, new_sup).await?;
        let new_dn = format!("{rdn},{parent}");
        // Groups name members by DN (or uid): follow the rename, as the refint overlay would, so that a
        // move to a disabled OU and back, or a new uid, leaves no stale membership.
        if let (Some(g), Some(old)) = (&self.groups, old_member) {
            let new = self.member_value(l, g.class, &new_dn).await?;
            if old != new {
                let attr = g.class.member_attr().to_owned();
                let filter = format!("({attr}={})", ldap3::ldap_escape(old.as_str()));
                for group in self.search(l, &g.base_dn, Scope::Subtree, &filter, &["1.1"]).await? {
                    let mods = vec![
                        Mod::Delete(attr.clone(), [old.clone()].into()),
                        Mod::Add(attr.clone(), [new.clone()].into()),
                    ];
                    match self.modify_rc(l, &group.dn, mods).await? {
                        0 | 16 | 20 => {}
                        rc => return Err(classify_rc(rc, &format!("renaming a member of {}", group.dn))),
                    }
                }
            }
        }
        Ok(new_dn)
    }
}

/// The DN of the user's manager when the manager is provisioned here (linked); otherwise none, with a note
/// for the audit detail when the user names a manager this directory does not have.
fn manager_dn(e: &Entry, links: &Links, notes: &mut Vec<String>) -> Option<String> {
    let manager = e.manager()?;
    match links.get(&manager) {
        Some(link) if link.kind == Kind::User => Some(link.key.clone()),
        _ => {
            notes.push(format!("manager {} is not provisioned here; manager left empty", manager.id.as_str()));
            None
        }
    }
}
