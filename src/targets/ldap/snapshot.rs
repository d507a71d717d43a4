//! The actual state of a directory, for reconciliation: every user entry under the users base (and the
//! disabled base, for the move method) with its mapped attributes, match attributes and disabled state,
//! and every group with its members, read with the paged results control (RFC 2696) so that a large
//! directory comes in pages the server can serve. Attribute values compare case-insensitively, as the
//! usual matching rules of mail, cn and uid do.

use std::collections::HashMap;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, Scope, SearchEntry};
use serde_json::{Map, Value};

use super::config::Disable;
use super::conn::classify;
use super::disable::{AD_DISABLED, LOCKED_FOREVER};
use super::{GroupClass, LdapTarget, text, write_only};
use crate::matching::match_email;
use crate::targets::TargetError;
use crate::targets::reconcile::{ActualGroup, ActualUser, Drift};

/// Entries per page.
const PAGE: i32 = 500;

/// A DN as compared: lower case, no spaces around separators.
pub(crate) fn norm_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

fn first<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a String> {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first())
}

fn all<'a>(e: &'a SearchEntry, attr: &str) -> &'a [String] {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).map_or(&[], |(_, v)| v.as_slice())
}

/// The attributes a match filter template compares with `{match_email}`: `(mail={match_email})` → mail.
fn match_attributes(template: &str) -> Vec<String> {
    template
        .split('(')
        .filter_map(|part| {
            part.split_once("={match_email}").map(|(a, _)| a.trim().trim_start_matches(['&', '|', '!']).to_owned())
        })
        .filter(|a| !a.is_empty())
        .collect()
}

impl LdapTarget {
    /// Every entry under `base` matching `filter`, with `attrs`, page by page, each handed to `each` as it
    /// arrives (a large directory is never held twice).
    async fn paged(
        &self,
        l: &mut Ldap,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
        mut each: impl FnMut(SearchEntry),
    ) -> Result<(), TargetError> {
        let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE))];
        let mut stream =
            l.streaming_search_with(adapters, base, Scope::Subtree, filter, attrs).await.map_err(classify)?;
        while let Some(entry) = stream.next().await.map_err(classify)? {
            each(SearchEntry::construct(entry));
        }
        let result = stream.finish().await;
        // 32 noSuchObject: the base does not exist yet (nothing provisioned there).
        if result.rc != 0 && result.rc != 32 {
            return Err(classify(ldap3::LdapError::LdapResult { result }));
        }
        Ok(())
    }

    fn user_filter(&self) -> String {
        let classes: String =
            self.users.object_classes.iter().map(|c| format!("(objectClass={})", ldap3::ldap_escape(c))).collect();
        // Active Directory's computer accounts are of class user too; they are not people.
        let computers = if matches!(self.disable, Disable::Ad { .. }) { "(!(objectClass=computer))" } else { "" };
        format!("(&{classes}{computers})")
    }

    fn blocked(&self, e: &SearchEntry) -> bool {
        match &self.disable {
            Disable::Attribute { attribute, value } => all(e, attribute).iter().any(|v| v.eq_ignore_ascii_case(value)),
            Disable::Ppolicy => first(e, "pwdAccountLockedTime").is_some_and(|v| v == LOCKED_FOREVER),
            Disable::Ad { .. } => {
                first(e, "userAccountControl").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v & AD_DISABLED != 0)
            }
            Disable::Move { disabled_base_dn } => norm_dn(&e.dn).ends_with(&norm_dn(disabled_base_dn)),
        }
    }

    /// Every user entry (under the disabled base too, for the move method), handed to `each`.
    async fn user_entries(
        &self,
        l: &mut Ldap,
        extra: &[&str],
        mut each: impl FnMut(SearchEntry),
    ) -> Result<(), TargetError> {
        let mut attrs: Vec<String> =
            self.users.attrs.iter().map(|(a, _)| a.clone()).filter(|a| !write_only(a)).collect();
        attrs.extend(match_attributes(&self.users.match_filter));
        attrs.extend(extra.iter().map(|a| (*a).to_owned()));
        match &self.disable {
            Disable::Attribute { attribute, .. } => attrs.push(attribute.clone()),
            Disable::Ppolicy => attrs.push("pwdAccountLockedTime".into()),
            Disable::Ad { .. } => attrs.push("userAccountControl".into()),
            Disable::Move { .. } => {}
        }
        let filter = self.user_filter();
        self.paged(l, &self.users.base_dn, &filter, attrs.clone(), &mut each).await?;
        if let Disable::Move { disabled_base_dn } = &self.disable
            && norm_dn(disabled_base_dn) != norm_dn(&self.users.base_dn)
        {
            self.paged(l, disabled_base_dn, &filter, attrs, &mut each).await?;
        }
        Ok(())
    }

    /// Every user entry.
    ///
    /// # Errors
    /// The directory cannot be searched.
    pub async fn snapshot_users(&self) -> Result<Vec<ActualUser>, TargetError> {
        let mut l = self.ldap().await?;
        let match_attrs = match_attributes(&self.users.match_filter);
        let mut users = Vec::new();
        self.user_entries(&mut l, &[], |e| {
            users.push(ActualUser {
                emails: match_attrs.iter().flat_map(|a| all(&e, a).iter().map(|v| v.to_lowercase())).collect(),
                values: self.users.attrs.iter().map(|(a, _)| all(&e, a).first().cloned()).collect(),
                blocked: self.blocked(&e),
                key: e.dn,
                link: None,
            });
        })
        .await?;
        Ok(users)
    }

    /// What differs between an entry and a staged user: the mapped attributes other than the RDN and
    /// passwords (compared case-insensitively), and whether its disabled state disagrees with `active`.
    pub fn user_drift(&self, state: &Map<String, Value>, id: &str, actual: &ActualUser) -> (Vec<Drift>, bool) {
        let mut drift = Vec::new();
        // The snapshot's values follow the order of the mapping.
        for ((attr, source), have) in self.users.attrs.iter().zip(&actual.values) {
            if attr.eq_ignore_ascii_case(&self.users.rdn_attr) || write_only(attr) {
                continue;
            }
            let want = text(&source.eval(state, id));
            let same = match (&want, have) {
                (Some(w), Some(h)) => w.trim().to_lowercase() == h.trim().to_lowercase(),
                (None, None) => true,
                _ => false,
            };
            if !same {
                drift.push(Drift { field: attr.clone(), old: have.clone(), new: want });
            }
        }
        let active = state.get("active") != Some(&Value::Bool(false));
        (drift, active == actual.blocked)
    }

    /// The match email of a staged user, lower-cased.
    pub fn user_match(&self, state: &Map<String, Value>) -> Option<String> {
        match_email(state).map(|e| e.to_lowercase())
    }

    /// Every group with its members (as user DNs), or none when groups are not replayed here.
    ///
    /// # Errors
    /// The directory cannot be searched.
    pub async fn snapshot_groups(&self) -> Result<Vec<ActualGroup>, TargetError> {
        let Some(g) = &self.groups else { return Ok(Vec::new()) };
        let mut l = self.ldap().await?;
        // posixGroup names members by uid: map them back to the users' DNs.
        let mut uids: HashMap<String, String> = HashMap::new();
        if g.class == GroupClass::Posix {
            self.user_entries(&mut l, &["uid"], |e| {
                if let Some(u) = first(&e, "uid") {
                    uids.insert(u.to_lowercase(), e.dn.clone());
                }
            })
            .await?;
        }
        let member_attr = g.class.member_attr();
        let filter = format!("(objectClass={})", g.class.object_class());
        let placeholder = norm_dn(&g.empty_member);
        let mut groups = Vec::new();
        self.paged(&mut l, &g.base_dn, &filter, vec![g.rdn_attr.clone(), member_attr.to_owned()], |e| {
            let members = all(&e, member_attr)
                .iter()
                .filter(|m| g.class == GroupClass::Posix || norm_dn(m) != placeholder)
                .filter_map(|m| {
                    if g.class == GroupClass::Posix { uids.get(&m.to_lowercase()).cloned() } else { Some(m.clone()) }
                })
                .collect();
            groups.push(ActualGroup {
                name: first(&e, &g.rdn_attr).cloned().unwrap_or_default(),
                link: None,
                members,
                key: e.dn,
            });
        })
        .await?;
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_attributes_of_templates() {
        assert_eq!(match_attributes("(mail={match_email})"), ["mail"]);
        assert_eq!(
            match_attributes("(&(objectClass=user)(|(mail={match_email})(userPrincipalName={match_email})))"),
            ["mail", "userPrincipalName"]
        );
    }

    #[test]
    fn dns_compare_without_case_and_spaces() {
        assert_eq!(norm_dn("uid=Ann, ou=People ,dc=x"), norm_dn("UID=ann,ou=people,dc=X"));
    }
}
