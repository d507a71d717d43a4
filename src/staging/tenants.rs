//! Tenants and their bearer tokens. Tokens are 256-bit random secrets shown once; only their SHA-256 is
//! stored. A slow password hash is not needed for secrets of that entropy, and SHA-256 keeps the check
//! on every request cheap.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{SqliteStaging, StagingError, TenantId, open_migrated};
use crate::scim::error::ScimError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// A prefix makes leaked tokens recognisable to secret scanners and to people reading logs.
const TOKEN_PREFIX: &str = "scimb_";

/// A fresh random bearer token.
///
/// # Errors
/// The operating system's random source failed.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tenant names appear in logs, metrics and CLI arguments: keep them plain.
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(format!("invalid tenant name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")) }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Creates the tenant if it does not exist and gives it a new token, replacing (revoking) any previous one.
/// Works on the database file directly, so it can run while the daemon is serving.
///
/// # Errors
/// Invalid tenant name, the database cannot be opened, or no randomness is available.
pub fn rotate_token(path: &Path, name: &str) -> Result<(Tenant, String), StagingError> {
    validate_tenant_name(name).map_err(|e| StagingError::Rejected(ScimError::invalid_value(e)))?;
    let mut conn = open_migrated(path)?;
    let token = generate_token().map_err(|e| StagingError::Worker(format!("no randomness available: {e}")))?;
    let hash = hash_token(&token);
    let tx = conn.transaction()?;
    let now = now();
    tx.execute(
        "INSERT INTO tenants (name, token_hash, created, token_rotated) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(name) DO UPDATE SET token_hash = excluded.token_hash, token_rotated = excluded.token_rotated",
        params![name, &hash[..], now],
    )?;
    let id: i64 = tx.query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| r.get(0))?;
    tx.commit()?;
    Ok((Tenant { id: TenantId(id), name: name.to_owned() }, token))
}

/// A tenant as `token list` shows it: never the token, only whether one is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInfo {
    pub name: String,
    pub created: String,
    /// When the token was last issued, or revoked.
    pub token_changed: Option<String>,
    pub has_token: bool,
}

/// Every tenant with its token's dates.
///
/// # Errors
/// The database cannot be opened.
pub fn tenant_infos(path: &Path) -> Result<Vec<TenantInfo>, StagingError> {
    let conn = open_migrated(path)?;
    let mut stmt =
        conn.prepare("SELECT name, created, token_rotated, token_hash IS NOT NULL FROM tenants ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(TenantInfo { name: r.get(0)?, created: r.get(1)?, token_changed: r.get(2)?, has_token: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a tenant's token: its requests are refused from now on (the tenant, its resources and its
/// journal stay; `token <tenant>` issues a new token). Returns false when no tenant has that name.
///
/// # Errors
/// The database cannot be opened or written.
pub fn revoke_token(path: &Path, name: &str) -> Result<bool, StagingError> {
    let conn = open_migrated(path)?;
    let changed =
        conn.execute("UPDATE tenants SET token_hash = NULL, token_rotated = ?2 WHERE name = ?1", params![name, now()])?;
    Ok(changed == 1)
}

/// The names of the tenants in a staging database (created and migrated if missing).
///
/// # Errors
/// The database cannot be opened.
pub fn tenant_names(path: &Path) -> Result<Vec<String>, StagingError> {
    let conn = open_migrated(path)?;
    Ok(list_tenants(&conn)?.into_iter().map(|t| t.name).collect())
}

/// The tenants that exist, by name.
///
/// # Errors
/// The database cannot be read.
pub fn list_tenants(conn: &Connection) -> Result<Vec<Tenant>, StagingError> {
    let mut stmt = conn.prepare("SELECT id, name FROM tenants ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok(Tenant { id: TenantId(r.get(0)?), name: r.get(1)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl SqliteStaging {
    /// The tenant a bearer token belongs to, if any. Looked up on every request so that a rotation by the
    /// CLI revokes the old token at once, without a restart.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(in crate::staging) async fn authenticate(&self, token: &str) -> Result<Option<Tenant>, StagingError> {
        let hash = hash_token(token);
        self.read(move |conn| {
            let row: Option<(i64, String, Vec<u8>)> = conn
                .prepare_cached("SELECT id, name, token_hash FROM tenants WHERE token_hash = ?1")?
                .query_row([&hash[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            // The index lookup is on a hash of a 256-bit secret, so its timing reveals nothing useful; the
            // final comparison is constant-time all the same.
            Ok(row.and_then(|(id, name, stored)| {
                bool::from(stored.ct_eq(&hash[..])).then_some(Tenant { id: TenantId(id), name })
            }))
        })
        .await
    }

    /// All tenants.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(in crate::staging) async fn tenants(&self) -> Result<Vec<Tenant>, StagingError> {
        self.read(list_tenants).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(validate_tenant_name("entra-prod_1.x").is_ok());
        assert!(validate_tenant_name("").is_err());
        assert!(validate_tenant_name("a b").unwrap_err().contains("\"a b\""));
    }

    #[tokio::test]
    async fn rotation_revokes_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (t1, old) = rotate_token(&path, "acme").unwrap();
        let (t2, new) = rotate_token(&path, "acme").unwrap();
        assert_eq!(t1, t2);
        let staging = SqliteStaging::open(&path, Default::default()).unwrap();
        assert_eq!(staging.authenticate(&new).await.unwrap(), Some(t1));
        assert_eq!(staging.authenticate(&old).await.unwrap(), None);
        assert_eq!(staging.authenticate("scimb_nope").await.unwrap(), None);
        staging.close().await;
    }
}
