//! `scim-bridge token <tenant>`: create a tenant or rotate its token; `token list`, `token revoke`.

use std::path::Path;

use anyhow::Context;
use scim_bridge::staging;

use super::{TokenAction, load_config, small_runtime};

pub fn run(path: Option<&Path>, action: Option<&TokenAction>, tenant: Option<&str>) -> anyhow::Result<()> {
    match (action, tenant) {
        (Some(TokenAction::List), _) => list(path),
        (Some(TokenAction::Revoke { tenant }), _) => revoke(path, tenant),
        (Some(TokenAction::Rotate { tenant }), _) => rotate(path, tenant),
        (None, Some(tenant)) => rotate(path, tenant),
        (None, None) => {
            anyhow::bail!("name a tenant (scim-bridge token <tenant>), or use `token list` or `token revoke <tenant>`")
        }
    }
}

fn list(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = staging::open_ledger(&config.staging.path)?;
    let tenants = small_runtime()?.block_on(store.tenant_infos())?;
    if tenants.is_empty() {
        println!("no tenants yet; create one with `scim-bridge token <tenant>`");
    }
    for t in tenants {
        let token = match (&t.token_changed, t.has_token) {
            (Some(at), true) => format!("token issued {at}"),
            (None, true) => "token issued at creation".to_owned(),
            (Some(at), false) => format!("NO TOKEN (revoked {at})"),
            (None, false) => "NO TOKEN".to_owned(),
        };
        let targets = config.targets_of(&t.name);
        let bound = if targets.is_empty() {
            "bound to no target".to_owned()
        } else {
            format!("replayed into {}", targets.join(", "))
        };
        println!("{}: created {}, {token}, {bound}", t.name, t.created);
    }
    Ok(())
}

fn revoke(path: Option<&Path>, tenant: &str) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = staging::open_ledger(&config.staging.path)?;
    let runtime = small_runtime()?;
    if !runtime.block_on(store.revoke_token(tenant))? {
        let names = runtime.block_on(store.tenant_names())?;
        anyhow::bail!(
            "no tenant is named {tenant:?} (tenants: {})",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        );
    }
    println!(
        "Token of tenant {tenant:?} revoked: its requests are refused from now on. `scim-bridge token {tenant}` issues a new one."
    );
    Ok(())
}

fn rotate(path: Option<&Path>, tenant: &str) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let store = staging::open_ledger(&config.staging.path)?;
    let (t, token) = small_runtime()?
        .block_on(store.rotate_token(tenant))
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
