//! Linking, shared by every target (contract point 4): a resource without a link is matched to an existing
//! downstream account (by email for users, by name for groups). One match is linked, none is created,
//! several are never guessed between; and an account already linked to another resource is never taken
//! over, since it would then be updated, blocked or deleted on someone else's behalf.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Links, TargetError};
use crate::scim::schema::Kind;
use crate::staging::ReplayLog;
use crate::staging::journal::ResourceRef;

/// Who a downstream key is already linked to, across all of a target's links (not only this batch's).
#[async_trait]
pub trait Claims: Send + Sync {
    /// The resource linked to `key` of this kind in this target, if any.
    ///
    /// # Errors
    /// The link store cannot be read: transient, so that the change waits instead of guessing.
    async fn owner(&self, kind: Kind, key: &str) -> Result<Option<ResourceRef>, TargetError>;
}

/// No links anywhere (a target's own lookups that need no protection).
pub struct NoClaims;

#[async_trait]
impl Claims for NoClaims {
    async fn owner(&self, _: Kind, _: &str) -> Result<Option<ResourceRef>, TargetError> {
        Ok(None)
    }
}

/// The links one target has in staging, as replay and reconciliation ask the targets to respect them.
pub struct StagedClaims {
    log: Arc<dyn ReplayLog>,
    target: String,
}

impl StagedClaims {
    pub fn new(log: Arc<dyn ReplayLog>, target: &str) -> StagedClaims {
        StagedClaims { log, target: target.to_owned() }
    }
}

#[async_trait]
impl Claims for StagedClaims {
    async fn owner(&self, kind: Kind, key: &str) -> Result<Option<ResourceRef>, TargetError> {
        // Not knowing is not "unclaimed": the change waits for staging rather than risk taking over a row.
        self.log
            .link_owner(&self.target, kind, key)
            .await
            .map_err(|e| TargetError::transient_from("cannot read link owners from staging", e))
    }
}

/// Refuses to link `me` to downstream `key` when another resource (of any tenant) is linked to it, in this
/// batch or before.
///
/// # Errors
/// Permanent, naming the resource that owns the key.
pub async fn check_unclaimed(
    links: &Links,
    claims: &dyn Claims,
    kind: Kind,
    me: &ResourceRef,
    key: &str,
) -> Result<(), TargetError> {
    let in_batch = links.iter().find(|(r, l)| l.key == key && l.kind == kind && *r != me).map(|(r, _)| r.clone());
    let owner = match in_batch {
        Some(r) => Some(r),
        None => claims.owner(kind, key).await?,
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
pub async fn choose(
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
            check_unclaimed(links, claims, kind, me, &found[0]).await?;
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

    #[async_trait]
    impl Claims for Owners {
        async fn owner(&self, kind: Kind, key: &str) -> Result<Option<ResourceRef>, TargetError> {
            Ok(self.0.iter().find(|(k, key2, _)| *k == kind && *key2 == key).map(|(_, _, r)| r.clone()))
        }
    }

    fn r(t: i64, id: &str) -> ResourceRef {
        ResourceRef { tenant: TenantId(t), id: ResourceId(id.into()) }
    }

    #[tokio::test]
    async fn a_key_of_the_other_kind_is_not_a_claim() {
        // A user is linked to key 7 of the users table; a group may still link team 7.
        let owners = Owners(vec![(Kind::User, "7", r(1, "user-1"))]);
        assert!(check_unclaimed(&Links::new(), &owners, Kind::Group, &r(1, "group-1"), "7").await.is_ok());
        let e = check_unclaimed(&Links::new(), &owners, Kind::User, &r(1, "user-2"), "7").await.unwrap_err();
        assert!(!e.is_transient() && e.report().contains("user-1"), "{}", e.report());
        assert!(check_unclaimed(&Links::new(), &owners, Kind::User, &r(1, "user-1"), "7").await.is_ok(), "its own");
    }

    #[tokio::test]
    async fn links_of_this_batch_count() {
        let mut links = Links::new();
        links.insert(r(2, "u"), Link { key: "k".into(), created: false, kind: Kind::User });
        assert!(check_unclaimed(&links, &NoClaims, Kind::User, &r(1, "v"), "k").await.is_err());
        assert!(check_unclaimed(&links, &NoClaims, Kind::Group, &r(1, "v"), "k").await.is_ok());
    }

    #[tokio::test]
    async fn several_matches_are_never_guessed() {
        let pick = async |found: Vec<&str>| {
            choose(
                found.into_iter().map(str::to_owned).collect(),
                |keys| format!("ambiguous: {}", keys.join(", ")),
                &Links::new(),
                &NoClaims,
                Kind::User,
                &r(1, "me"),
            )
            .await
        };
        assert_eq!(pick(vec![]).await.unwrap(), None);
        assert_eq!(pick(vec!["a"]).await.unwrap().as_deref(), Some("a"));
        assert_eq!(pick(vec!["a", "b"]).await.unwrap_err().report(), "ambiguous: a, b");
    }
}
