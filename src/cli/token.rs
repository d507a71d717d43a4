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
    if config.targets_of(&t.name).is_empty() {
        eprintln!(
            "warning: tenant {:?} is bound to no target in {}: its changes will be staged but replayed nowhere.\n\
             Bind it with a block such as:\n\n[[tenant]]\nname = {:?}\ntargets = [{}]\n",
            t.name,
            path.map(|p| p.display().to_string()).unwrap_or_else(|| "the embedded default".into()),
            t.name,
            config.targets.iter().map(|c| format!("{:?}", c.name())).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
