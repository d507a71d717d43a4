//! `scim-bridge token <tenant>`: create a tenant or rotate its token.

use std::path::Path;

use anyhow::Context;
use scim_bridge::staging;

use super::load_config;

pub fn run(path: Option<&Path>, tenant: &str) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let (t, token) = staging::rotate_token(&config.staging.path, tenant)
        .with_context(|| format!("while issuing a token for tenant {tenant:?}"))?;
    eprintln!("New bearer token for tenant {:?} (shown once; any previous token of this tenant is revoked):", t.name);
    println!("{token}");
    Ok(())
}
