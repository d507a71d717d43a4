//! A throwaway OpenLDAP server for tests: a cn=config directory made with slapadd in a temporary
//! directory (mdb backend, core/cosine/inetorgperson/nis schemas, the ppolicy overlay with a default
//! policy, and userAccountControl in a small auxiliary class standing in for Active Directory's),
//! `slapd` as a child process on a free loopback port, stopped by its pid when dropped.
//! slapd comes from Debian's packages; scripts/test.sh installs it when missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const ADMIN_PW: &str = "test-admin-secret";

pub struct Slapd {
    pub port: u16,
    /// The ldaps:// port, when started with TLS.
    pub tls_port: Option<u16>,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn config_ldif(dir: &std::path::Path, tls: bool) -> String {
    let d = dir.display();
    // SLAPD_NOSYNC=1 (benchmarks only): mdb without a sync per write, to show replay's own ceiling.
    let nosync = if std::env::var("SLAPD_NOSYNC").is_ok_and(|v| v == "1") { "olcDbNoSync: TRUE\n" } else { "" };
    let tls = if tls {
        format!(
            "olcTLSCACertificateFile: {d}/ca.pem\nolcTLSCertificateFile: {d}/server.pem\nolcTLSCertificateKeyFile: {d}/server.key\n"
        )
    } else {
        String::new()
    };
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

include: file:///etc/ldap/schema/nis.ldif

dn: cn={{4}}adcompat,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: {{4}}adcompat
olcAttributeTypes: ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
olcObjectClasses: ( 1.3.6.1.4.1.55555.1.1 NAME 'adCompatUser' DESC 'test stand-in for an Active Directory account' AUXILIARY MAY userAccountControl )

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {d}/data
olcDbMaxSize: 1073741824
{nosync}olcSuffix: {SUFFIX}
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PW}
olcDbIndex: objectClass eq
olcDbIndex: mail eq
olcDbIndex: uid eq
olcDbIndex: cn eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by * read

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{SUFFIX}
"
    )
}

/// The base entries every test starts from.
pub fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=disabled,{SUFFIX}
objectClass: organizationalUnit
ou: disabled

dn: ou=policies,{SUFFIX}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{SUFFIX}
objectClass: applicationProcess
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE
"
    )
}

impl Slapd {
    /// Starts a fresh slapd with the base entries loaded.
    pub fn start() -> Slapd {
        Self::start_with(false)
    }

    /// Starts a fresh slapd that also speaks ldaps:// and StartTLS, with a certificate from a test CA
    /// (`dir/ca.pem`).
    pub fn start_tls() -> Slapd {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Slapd {
        assert!(
            std::path::Path::new("/usr/sbin/slapd").exists(),
            "OpenLDAP slapd is not installed: run scripts/test.sh (it installs Debian's slapd and ldap-utils)"
        );
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("slapd.d")).expect("slapd.d");
        std::fs::create_dir_all(dir.path().join("data")).expect("data");
        if tls {
            super::certs::make_certificates(dir.path(), "");
        }
        std::fs::write(dir.path().join("config.ldif"), config_ldif(dir.path(), tls)).expect("config");
        std::fs::write(dir.path().join("base.ldif"), base_ldif()).expect("base");
        let out = Command::new("/usr/sbin/slapadd")
            .args(["-n0", "-F"])
            .arg(dir.path().join("slapd.d"))
            .arg("-l")
            .arg(dir.path().join("config.ldif"))
            .output()
            .expect("slapadd");
        assert!(out.status.success(), "slapadd -n0: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("/usr/sbin/slapadd")
            .args(["-n1", "-F"])
            .arg(dir.path().join("slapd.d"))
            .arg("-l")
            .arg(dir.path().join("base.ldif"))
            .output()
            .expect("slapadd");
        assert!(out.status.success(), "slapadd -n1: {}", String::from_utf8_lossy(&out.stderr));
        let mut s = Slapd { port: free_port(), tls_port: tls.then(free_port), dir, child: None };
        s.run();
        s
    }

    /// Starts (or restarts) slapd on its port.
    pub fn run(&mut self) {
        let child = Command::new("/usr/sbin/slapd")
            .arg("-F")
            .arg(self.dir.path().join("slapd.d"))
            .arg("-h")
            .arg(match self.tls_port {
                Some(t) => format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{t}/", self.port),
                None => format!("ldap://127.0.0.1:{}/", self.port),
            })
            // -d keeps slapd in the foreground as our child, so that it is stopped by its pid.
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops slapd (SIGKILL, as an outage would), keeping its data for `run`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Slapd {
    /// A connection bound as the directory's administrator.
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut l) = ldap3::LdapConnAsync::new(&self.url()).await.expect("connect");
        ldap3::drive!(conn);
        l.simple_bind(ADMIN_DN, ADMIN_PW).await.expect("bind").success().expect("admin bind");
        l
    }

    /// The entry at `dn` with its user and operational attributes, or None.
    pub async fn entry(&self, dn: &str) -> Option<ldap3::SearchEntry> {
        let mut l = self.admin().await;
        match l.search(dn, ldap3::Scope::Base, "(objectClass=*)", vec!["*", "+"]).await.expect("search").success() {
            Ok((rs, _)) => rs.into_iter().next().map(ldap3::SearchEntry::construct),
            Err(_) => None,
        }
    }
}
