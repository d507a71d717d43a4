//! Directory servers started by the scripts in tests/servers/ (a Samba AD domain controller, a 389
//! Directory Server instance): `SCRIPT up DIR ARGS...` makes and starts one in a temporary directory and
//! prints `key=value` lines; `SCRIPT down DIR` stops it by its pid. Stopped when dropped. The packages come
//! from Debian; scripts/test.sh installs them when missing, and a test fails (never skips) without them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use ldap3::{LdapConnAsync, LdapConnSettings};

pub struct ScriptServer {
    script: PathBuf,
    pub dir: tempfile::TempDir,
    info: HashMap<String, String>,
}

impl ScriptServer {
    /// Starts a server with `tests/servers/<script> up DIR args...`; panics with its output on failure.
    pub fn start(script: &str, args: &[&str]) -> ScriptServer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/servers").join(script);
        let dir = tempfile::tempdir().expect("temp dir");
        let started = Instant::now();
        let out = Command::new(&script).arg("up").arg(dir.path()).args(args).output().expect("run the server script");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let server = ScriptServer {
            script: script.clone(),
            info: stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            dir,
        };
        assert!(
            out.status.success(),
            "{} up failed ({}):\n{stdout}\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{} up in {:.1} s", script.display(), started.elapsed().as_secs_f64());
        server
    }

    /// A value the script printed; panics naming the key when it did not.
    pub fn get(&self, key: &str) -> &str {
        self.info.get(key).unwrap_or_else(|| panic!("{} printed no {key}= line", self.script.display()))
    }

    /// A connection bound as `dn`, over TLS with the server's CA when the URL is ldaps://.
    pub async fn bind(&self, url: &str, dn: &str, password: &str) -> Result<ldap3::Ldap, u32> {
        let mut settings = LdapConnSettings::new();
        if let Some(ca) = self.info.get("ca_file") {
            settings = settings.set_config(client_tls(ca));
        }
        if url.starts_with("ldap://") && self.info.contains_key("ca_file") {
            settings = settings.set_starttls(true);
        }
        let (conn, mut l) = LdapConnAsync::with_settings(settings, url).await.expect("connect");
        ldap3::drive!(conn);
        let r = l.simple_bind(dn, password).await.expect("bind request");
        if r.rc == 0 { Ok(l) } else { Err(r.rc) }
    }
}

impl ScriptServer {
    /// The start of a daemon configuration replaying tenant-a into the LDAP target `name` on this server:
    /// quick retries and a dead letter at the first permanent failure, `connection` (the url lines), the
    /// server's CA, and `bind_dn` with the password the script printed as `password_key`, in a file.
    pub fn target_head(&self, name: &str, connection: &str, bind_dn: &str, password_key: &str) -> String {
        let pw_file = self.dir.path().join(format!("{name}-password"));
        std::fs::write(&pw_file, format!("{}\n", self.get(password_key))).expect("password file");
        format!(
            "[replay]\nmax_attempts = 1\nbackoff_initial_ms = 50\nbackoff_max_seconds = 1\n\n\
             [[tenant]]\nname = \"tenant-a\"\ntargets = [{name:?}]\n\n\
             [[target]]\ntype = \"ldap\"\nname = {name:?}\n{connection}\nca_file = {ca:?}\n\
             bind_dn = {bind_dn:?}\npassword_file = {pw:?}\n",
            ca = self.get("ca_file"),
            pw = pw_file.display().to_string(),
        )
    }
}

/// The values of an attribute (its name in any case), sorted.
pub fn values(e: &ldap3::SearchEntry, name: &str) -> Vec<String> {
    let mut v = e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default();
    v.sort();
    v
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).arg("down").arg(self.dir.path()).status();
    }
}

/// A rustls client trusting exactly the CA in `ca_file`.
pub fn client_tls(ca_file: &str) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(ca_file).expect("CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
