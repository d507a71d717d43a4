//! What Active Directory needs beyond plain LDAP: a `sAMAccountName` within AD's limits and unique in the
//! domain, and a random initial password as `unicodePwd`.
//!
//! The sAMAccountName rule, documented in the README: take the mapped value up to its first `@`; remove
//! the characters AD forbids (`" / \ [ ] : ; | = , + * ? < >`, control characters) and leading or
//! trailing spaces and dots; keep at most 20 characters (256 for groups). If another entry in the domain
//! already has that name, the name is its first 15 characters (251 for groups), `-`, and four hex digits
//! of the SHA-256 of the tenant and SCIM id: deterministic, so a retry picks the same name. If that is
//! taken too, the change is refused naming both.

use ldap3::{Ldap, Scope, ldap_escape};
use sha2::{Digest, Sha256};

use super::LdapTarget;
use crate::scim::schema::Kind;
use crate::staging::journal::ResourceRef;
use crate::targets::TargetError;

/// AD's limit for a user's sAMAccountName (the pre-Windows 2000 logon name).
pub(super) const SAM_USER_MAX: usize = 20;
/// The schema's limit for a group's.
pub(super) const SAM_GROUP_MAX: usize = 256;

/// The name the rule gives before any collision: None when nothing usable is left.
pub(super) fn sam_base(value: &str, max: usize) -> Option<String> {
    let local = value.split('@').next().unwrap_or_default();
    let kept: String = local.chars().filter(|c| !c.is_control() && !"\"/\\[]:;|=,+*?<>".contains(*c)).collect();
    let trimmed = kept.trim_matches(|c: char| c == ' ' || c == '.');
    let cut: String = trimmed.chars().take(max).collect();
    let cut = cut.trim_end_matches([' ', '.']).to_owned();
    (!cut.is_empty()).then_some(cut)
}

/// The name used when the base name is taken: a prefix and four hex digits of the resource's hash.
pub(super) fn sam_alternative(base: &str, resource: &ResourceRef, max: usize) -> String {
    let digest = Sha256::digest(format!("{}/{}", resource.tenant.0, resource.id.as_str()).as_bytes());
    let prefix: String = base.chars().take(max - 5).collect();
    format!("{}-{}", prefix.trim_end_matches([' ', '.']), hex::encode(&digest[..2]))
}

/// The domain's naming context: the `DC=` components at the end of a DN (the DN itself when it has none).
pub(super) fn domain_of(dn: &str) -> String {
    let parts: Vec<&str> = dn.split(',').collect();
    let dcs: Vec<&str> =
        parts.iter().rev().take_while(|p| p.trim().to_ascii_lowercase().starts_with("dc=")).copied().collect();
    if dcs.is_empty() { dn.to_owned() } else { dcs.into_iter().rev().map(str::trim).collect::<Vec<_>>().join(",") }
}

/// A random password AD's default complexity policy accepts: 32 characters, at least one of each of upper
/// case, lower case, digits and symbols. Never stored or logged.
pub(super) fn random_password() -> Result<String, TargetError> {
    const CLASSES: [&[u8]; 4] =
        [b"ABCDEFGHJKLMNPQRSTUVWXYZ", b"abcdefghijkmnopqrstuvwxyz", b"23456789", b"!#%+-.=?@^_~"];
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TargetError::transient(format!("no randomness for a password: {e}")))?;
    let all: Vec<u8> = CLASSES.concat();
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // The first four come one from each class, the rest from all of them. (The modulo's bias is
            // at most one in 256 over an alphabet of 70: irrelevant for 32 characters.)
            let set = CLASSES.get(i).copied().unwrap_or(&all);
            char::from(set[usize::from(*b) % set.len()])
        })
        .collect())
}

/// A password as AD's `unicodePwd` takes it: the password in double quotes, UTF-16 little endian.
pub(super) fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"").encode_utf16().flat_map(u16::to_le_bytes).collect()
}

impl LdapTarget {
    /// A sAMAccountName for a new entry of `kind` from the mapped `value`, unique in the domain.
    pub(super) async fn unique_sam(
        &self,
        l: &mut Ldap,
        kind: Kind,
        value: Option<String>,
        resource: &ResourceRef,
    ) -> Result<String, TargetError> {
        let max = if kind == Kind::User { SAM_USER_MAX } else { SAM_GROUP_MAX };
        let value = value.unwrap_or_default();
        let base = sam_base(&value, max).ok_or_else(|| {
            TargetError::permanent(format!(
                "the sAMAccountName template gives {value:?}, which has no character Active Directory accepts in a logon name"
            ))
        })?;
        let domain = domain_of(&self.users.base_dn);
        let alternative = sam_alternative(&base, resource, max);
        for candidate in [&base, &alternative] {
            let filter = format!("(sAMAccountName={})", ldap_escape(candidate.as_str()));
            if self.search(l, &domain, Scope::Subtree, &filter, &["1.1"]).await?.is_empty() {
                return Ok(candidate.clone());
            }
        }
        Err(TargetError::permanent(format!(
            "sAMAccountName {base:?} and its alternative {alternative:?} are both taken in {domain}; rename one of those accounts or change the template"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::journal::{ResourceId, TenantId};

    #[test]
    fn sam_account_names_follow_the_documented_rule() {
        assert_eq!(sam_base("jane.young@contoso.com", 20).as_deref(), Some("jane.young"));
        assert_eq!(sam_base("a\"b/c\\d[e]f:g;h|i=j,k+l*m?n<o>p", 20).as_deref(), Some("abcdefghijklmnop"));
        assert_eq!(sam_base(" .bartholomew.montgomery-smythe@x", 20).as_deref(), Some("bartholomew.montgome"));
        // A cut that ends in a dot loses it: AD refuses a trailing dot.
        assert_eq!(sam_base("abcdefghijklmnopqrs.tuv", 20).as_deref(), Some("abcdefghijklmnopqrs"));
        assert_eq!(sam_base("@contoso.com", 20), None);
        assert_eq!(sam_base("Zoë Ångström", 20).as_deref(), Some("Zoë Ångström"));
        let r = ResourceRef { tenant: TenantId(1), id: ResourceId("2819c223".into()) };
        let alt = sam_alternative("bartholomew.montgome", &r, 20);
        assert_eq!(alt.chars().count(), 20, "{alt}");
        assert!(alt.starts_with("bartholomew.mon-"), "{alt}");
        assert_eq!(alt, sam_alternative("bartholomew.montgome", &r, 20), "deterministic");
        let other = ResourceRef { tenant: TenantId(2), id: ResourceId("2819c223".into()) };
        assert_ne!(alt, sam_alternative("bartholomew.montgome", &other, 20), "per tenant");
    }

    #[test]
    fn domain_is_the_trailing_dc_components() {
        assert_eq!(domain_of("OU=scim,DC=corp,DC=example"), "DC=corp,DC=example");
        assert_eq!(domain_of("ou=people, dc=example, dc=com"), "dc=example,dc=com");
        assert_eq!(domain_of("o=acme"), "o=acme");
    }

    #[test]
    fn random_passwords_meet_the_complexity_policy() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.chars().count(), 32);
        assert!(a.chars().any(|c| c.is_ascii_uppercase()) && a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()) && a.chars().any(|c| !c.is_ascii_alphanumeric()));
        assert_eq!(unicode_pwd("ab"), [b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
    }
}
