//! The disabled representation of a user entry (contract point 5): an attribute, an OpenLDAP ppolicy lock,
//! Active Directory's ACCOUNTDISABLE bit, or a move to a disabled OU (handled where entries are placed).

use std::collections::HashSet;

use ldap3::{Ldap, Mod};

use super::LdapTarget;
use super::ad::{random_password, unicode_pwd};
use super::config::{Disable, InitialPassword};
use crate::targets::TargetError;

/// OpenLDAP ppolicy's "locked until an administrator unlocks" value (draft-behera-ldap-password-policy).
pub(super) const LOCKED_FOREVER: &str = "000001010000Z";
/// Active Directory's ACCOUNTDISABLE bit of userAccountControl.
pub(super) const AD_DISABLED: u32 = 0x2;
/// userAccountControl of a normal account, when an entry has none yet.
const AD_NORMAL_ACCOUNT: u32 = 0x200;

impl LdapTarget {
    /// Applies the enabled or disabled representation (the move method is handled by `place`).
    pub(super) async fn represent(&self, l: &mut Ldap, dn: &str, active: bool) -> Result<(), TargetError> {
        match &self.disable {
            Disable::Attribute { attribute, value } => {
                let vals: HashSet<String> = if active { HashSet::new() } else { [value.clone()].into() };
                self.modify(l, dn, vec![Mod::Replace(attribute.clone(), vals)]).await
            }
            Disable::Ppolicy => {
                let vals: HashSet<String> = if active { HashSet::new() } else { [LOCKED_FOREVER.to_owned()].into() };
                self.modify(l, dn, vec![Mod::Replace("pwdAccountLockedTime".into(), vals)]).await
            }
            Disable::Ad { .. } => {
                // Read-modify-write: only ACCOUNTDISABLE changes, every other flag is kept.
                let entry = self.read(l, dn, &["userAccountControl"]).await?;
                let current: u32 = entry
                    .and_then(|e| e.attrs.get("userAccountControl").and_then(|v| v.first().cloned()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(AD_NORMAL_ACCOUNT);
                let wanted = if active { current & !AD_DISABLED } else { current | AD_DISABLED };
                if wanted == current {
                    return Ok(());
                }
                self.modify(l, dn, vec![Mod::Replace("userAccountControl".into(), [wanted.to_string()].into())]).await
            }
            Disable::Move { .. } => Ok(()),
        }
    }

    /// Adds the enabled or disabled representation to the attributes of a new entry, so that a user
    /// created inactive takes one write, not two. For Active Directory with a random initial password,
    /// returns the `unicodePwd` value to add with the entry, which is then enabled from the start.
    pub(super) fn state_on_create(
        &self,
        attrs: &mut Vec<(String, HashSet<String>)>,
        active: bool,
    ) -> Result<Option<(&'static str, Vec<u8>)>, TargetError> {
        match &self.disable {
            Disable::Attribute { attribute, value } if !active => {
                attrs.push((attribute.clone(), [value.clone()].into()))
            }
            Disable::Ppolicy if !active => {
                attrs.push(("pwdAccountLockedTime".into(), [LOCKED_FOREVER.to_owned()].into()))
            }
            Disable::Ad { initial_password } => {
                let random = *initial_password == InitialPassword::Random;
                if !random && active {
                    return Ok(None);
                }
                let at = match attrs.iter().position(|(a, _)| a.eq_ignore_ascii_case("userAccountControl")) {
                    Some(i) => i,
                    None => {
                        attrs.push(("userAccountControl".into(), HashSet::new()));
                        attrs.len() - 1
                    }
                };
                let vals = &mut attrs[at].1;
                let v: u32 = vals.iter().next().and_then(|v| v.parse().ok()).unwrap_or(AD_NORMAL_ACCOUNT);
                let v = if active { v & !AD_DISABLED } else { v | AD_DISABLED };
                *vals = [v.to_string()].into();
                if random {
                    return Ok(Some(("unicodePwd", unicode_pwd(&random_password()?))));
                }
            }
            _ => {}
        }
        Ok(None)
    }
}
