//! Certificates for TLS tests, made with the openssl command (scripts/test.sh installs it).

use std::path::Path;
use std::process::Command;

/// A throwaway CA and a server certificate for 127.0.0.1 (an IP subjectAltName, which rustls checks), as
/// `{prefix}ca.pem`, `{prefix}server.pem` and `{prefix}server.key` in `dir`.
pub fn make_certificates(dir: &Path, prefix: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(
        dir.join(format!("{prefix}server.ext")),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{prefix}ca.key"),
        "-out",
        &format!("{prefix}ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=scim-bridge test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{prefix}server.key"),
        "-out",
        &format!("{prefix}server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &format!("{prefix}server.csr"),
        "-CA",
        &format!("{prefix}ca.pem"),
        "-CAkey",
        &format!("{prefix}ca.key"),
        "-CAcreateserial",
        "-out",
        &format!("{prefix}server.pem"),
        "-days",
        "2",
        "-extfile",
        &format!("{prefix}server.ext"),
    ]);
}
