//! `scim-bridge check-config [--connect]`: validate the configuration, and optionally reach every target.

use std::path::Path;
use std::time::Duration;

use scim_bridge::daemon;

use super::{load_config, small_runtime};

pub fn run(path: Option<&Path>, connect: bool) -> anyhow::Result<()> {
    let config = load_config(path)?;
    config.check_staging_dir()?;
    small_runtime()?.block_on(async {
        let bindings = daemon::bindings(&config)?;
        match path {
            Some(p) => println!(
                "{}: OK (listen {}, staging {}, {} target(s))",
                p.display(),
                config.server.listen,
                config.staging.path.display(),
                bindings.len()
            ),
            None => println!("no config file given: the embedded default is valid"),
        }
        let mut failed = 0;
        if connect {
            for b in &bindings {
                let name = b.target.name();
                match tokio::time::timeout(Duration::from_secs(30), b.target.check()).await {
                    Ok(Ok(())) => {
                        println!("target {name}: reachable, tables and columns as configured");
                        for a in b.target.index_advice().await.unwrap_or_default() {
                            if a.present {
                                println!("target {name}: {} indexed on {} ({})", a.table, a.expression, a.key);
                            } else {
                                println!(
                                    "target {name}: {} has no index on {} ({}): replay searches the whole table for every change that needs it; create one with\n    {}",
                                    a.table, a.expression, a.key, a.create
                                );
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        failed += 1;
                        println!("target {name}: {}", e.report());
                    }
                    Err(_) => {
                        failed += 1;
                        println!("target {name}: no answer within 30 s");
                    }
                }
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} target(s) failed the check");
        }
        Ok(())
    })
}
