//! Linking, shared by every target (contract point 4): a resource without a link is matched to an existing
//! downstream account (by email for users, by name for groups). One match is linked, none is created,
//! several are never guessed between; and an account already linked to another resource is never taken
//! over, since it would then be updated, blocked or deleted on someone else's behalf.

use super::{Links, TargetError};
use crate::scim::schema::Kind;
use crate::staging::journal::ResourceRef;

/// Who a downstream key is already linked to, across all of a target's links (not only this batch's).
pub trait Claims: Send + Sync {
    /// The resource linked to `key` of this kind in this target, if any.
    ///
    /// # Errors
    /// The link store cannot be read: transient, so that the change waits instead of guessing.
    fn owner(&self, kind: Kind, key: &str) -> Result<Option<ResourceRef>, TargetError>;
}

/// No links anywhere (a target's own lookups that need no protection).
pub struct NoClaims;

impl Claims for NoClaims {
    fn owner(&self, _: Kind, _: &str) -> Result<Option<ResourceRef>, TargetError> {
        Ok(None)
    }
}

/// Refuses to link `me` to downstream `key` when another resource (of any tenant) is linked to it, in this
/// batch or before.
///
/// # Errors
/// Permanent, naming the resource that owns the key.
pub fn check_unclaimed(
    links: &Links,
    claims: &dyn Claims,
    kind: Kind,
    me: &ResourceRef,
    key: &str,
) -> Result<(), TargetError> {
    let in_batch = links.iter().find(|(r, l)| l.key == key && l.kind == kind && *r != me).map(|(r, _)| r.clone());
    let owner = match in_batch {
        Some(r) => Some(r),
        None => claims.owner(kind, key)?,
    };
    match owner {
        Some(r) if r != *me => Err(TargetError::permanent(format!(
            "{key} matches, but it is already linked to {} {} of tenant {}; not linking a second SCIM resource to it",
            kind.as_str(),
            r.id,
            r.tenant.0
        ))),
        _ => Ok(()),
    }
}

/// Chooses among the downstream accounts a lookup found for `me`: none, exactly one that nobody else is
/// linked to, or an error. `ambiguous` describes several matches (naming them) for the operator.
///
/// # Errors
/// Several matches, or the one match is linked to another resource.
pub fn choose(
    mut found: Vec<String>,
    ambiguous: impl FnOnce(&[String]) -> String,
    links: &Links,
    claims: &dyn Claims,
    kind: Kind,
    me: &ResourceRef,
) -> Result<Option<String>, TargetError> {
    match found.len() {
        0 => Ok(None),
        1 => {
            check_unclaimed(links, claims, kind, me, &found[0])?;
            Ok(found.pop())
        }
        _ => Err(TargetError::permanent(ambiguous(&found))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::journal::{Link, ResourceId, TenantId};

    struct Owners(Vec<(Kind, &'static str, ResourceRef)>);

    impl Claims for Owners {
        fn owner(&self, kind: Kind, key: &str) -> Result<Option<ResourceRef>, TargetError> {
            Ok(self.0.iter().find(|(k, key2, _)| *k == kind && *key2 == key).map(|(_, _, r)| r.clone()))
        }
    }

    fn r(t: i64, id: &str) -> ResourceRef {
        ResourceRef { tenant: TenantId(t), id: ResourceId(id.into()) }
    }

    #[test]
    fn a_key_of_the_other_kind_is_not_a_claim() {
        // A user is linked to key 7 of the users table; a group may still link team 7.
        let owners = Owners(vec![(Kind::User, "7", r(1, "user-1"))]);
        assert!(check_unclaimed(&Links::new(), &owners, Kind::Group, &r(1, "group-1"), "7").is_ok());
        let e = check_unclaimed(&Links::new(), &owners, Kind::User, &r(1, "user-2"), "7").unwrap_err();
        assert!(!e.is_transient() && e.report().contains("user-1"), "{}", e.report());
        assert!(check_unclaimed(&Links::new(), &owners, Kind::User, &r(1, "user-1"), "7").is_ok(), "its own");
    }

    #[test]
    fn links_of_this_batch_count() {
        let mut links = Links::new();
        links.insert(r(2, "u"), Link { key: "k".into(), created: false, kind: Kind::User });
        assert!(check_unclaimed(&links, &NoClaims, Kind::User, &r(1, "v"), "k").is_err());
        assert!(check_unclaimed(&links, &NoClaims, Kind::Group, &r(1, "v"), "k").is_ok());
    }

    #[test]
    fn several_matches_are_never_guessed() {
        let pick = |found: Vec<&str>| {
            choose(
                found.into_iter().map(str::to_owned).collect(),
                |keys| format!("ambiguous: {}", keys.join(", ")),
                &Links::new(),
                &NoClaims,
                Kind::User,
                &r(1, "me"),
            )
        };
        assert_eq!(pick(vec![]).unwrap(), None);
        assert_eq!(pick(vec!["a"]).unwrap().as_deref(), Some("a"));
        assert_eq!(pick(vec!["a", "b"]).unwrap_err().report(), "ambiguous: a, b");
    }
}
