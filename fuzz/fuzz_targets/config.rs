//! The configuration loader on arbitrary TOML: parsing, validation and building the targets (mapping
//! expressions, identifiers, custom statements) never panic; errors name a key.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

/// Building SQL targets prepares connection pools, which needs a runtime (nothing connects).
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = scim_bridge::config::Config::parse(text) else { return };
    let _ = config.listen_addr();
    for t in &config.tenants {
        let _ = config.targets_of(&t.name);
    }
    RUNTIME.block_on(async {
        if let Err(e) = scim_bridge::daemon::bindings(&config) {
            assert!(e.to_string().starts_with("config key target."), "a target error names its key: {e}");
        }
    });
});
