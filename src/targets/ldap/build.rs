//! Building an LDAP target from its configuration: URL and TLS settings, the bind password from a file or
//! the environment, RDN templates, mapped attributes and the match filter, each checked and named by key.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::config::{Disable, InitialPassword, LdapTargetConfig};
use super::{GroupClass, Groups, LdapTarget, Users};
use crate::mapping::Source;
use crate::scim::schema::Kind;
use crate::targets::{BuildError, bad};

/// An LDAP attribute description as the configuration may name one: letters, digits and hyphens.
fn is_attribute_name(a: &str) -> bool {
    !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// An optional template (`sam_account_name`), parsed for `kind` and named by `key` when it is wrong.
fn template(kind: Kind, key: &str, text: Option<&str>) -> Result<Option<Source>, BuildError> {
    text.map(|t| Source::parse(kind, t).map_err(|e| bad(key, e))).transpose()
}

fn split_rdn(kind: Kind, key: &str, rdn: &str) -> Result<(String, Source), BuildError> {
    let (attr, template) =
        rdn.split_once('=').ok_or_else(|| bad(key, format!("{rdn:?} must be attribute={{template}}")))?;
    let attr = attr.trim();
    if !is_attribute_name(attr) {
        return Err(bad(key, format!("{attr:?} is not an attribute name")));
    }
    let source = Source::parse(kind, template).map_err(|e| bad(key, e))?;
    Ok((attr.to_owned(), source))
}

fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, BuildError> {
    let pem = std::fs::read(ca_file).map_err(|e| bad("ca_file", format!("cannot read {}: {e}", ca_file.display())))?;
    // Exactly the CAs of ca_file are trusted: a private directory CA, without the public ones.
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for item in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls::pki_types::CertificateDer<'static> =
            item.map_err(|e| bad("ca_file", format!("{} is not PEM: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| bad("ca_file", e))?;
        found += 1;
    }
    if found == 0 {
        return Err(bad("ca_file", format!("no certificate in {}", ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("ca_file", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn password(cfg: &LdapTargetConfig) -> Result<String, BuildError> {
    match (&cfg.password_file, &cfg.password_env) {
        (Some(f), None) => std::fs::read_to_string(f)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| bad("password_file", format!("cannot read {}: {e}", f.display()))),
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| bad("password_env", format!("the environment variable {var} is not set")))
        }
        _ => Err(bad("password_file", "give exactly one of password_file and password_env")),
    }
}

fn users(cfg: &LdapTargetConfig) -> Result<Users, BuildError> {
    let u = &cfg.users;
    let (rdn_attr, rdn) = split_rdn(Kind::User, "users.rdn", &u.rdn)?;
    let mut attrs = Vec::new();
    for (attr, expr) in &u.attributes {
        let key = format!("users.attributes.{attr}");
        if !is_attribute_name(attr) {
            return Err(bad(key, "not an attribute name"));
        }
        attrs.push((attr.clone(), Source::parse(Kind::User, expr).map_err(|e| bad(&key, e))?));
    }
    if !u.match_filter.contains("{match_email}")
        || ldap3::parse_filter(u.match_filter.replace("{match_email}", "x@example.com")).is_err()
    {
        return Err(bad(
            "users.match_filter",
            format!("{:?} must be an LDAP filter containing {{match_email}}", u.match_filter),
        ));
    }
    if u.object_classes.is_empty() {
        return Err(bad("users.object_classes", "name at least one object class, e.g. [\"inetOrgPerson\"]"));
    }
    let sam = template(Kind::User, "users.sam_account_name", u.sam_account_name.as_deref())?;
    if let Some(a) = &u.manager_attribute
        && !is_attribute_name(a)
    {
        return Err(bad("users.manager_attribute", format!("{a:?} is not an attribute name")));
    }
    Ok(Users {
        sam,
        manager_attr: u.manager_attribute.clone(),
        base_dn: u.base_dn.clone(),
        rdn_attr,
        rdn,
        object_classes: u.object_classes.clone(),
        match_filter: u.match_filter.clone(),
        attrs,
    })
}

fn groups(cfg: &LdapTargetConfig) -> Result<Option<Groups>, BuildError> {
    let Some(g) = &cfg.groups else { return Ok(None) };
    let (rdn_attr, rdn) = split_rdn(Kind::Group, "groups.rdn", &g.rdn)?;
    let class = match g.object_class.as_str() {
        "groupOfNames" => GroupClass::Names,
        "groupOfUniqueNames" => GroupClass::UniqueNames,
        "posixGroup" => GroupClass::Posix,
        "group" => GroupClass::Ad,
        other => {
            return Err(bad(
                "groups.object_class",
                format!("{other:?} is not groupOfNames, groupOfUniqueNames, posixGroup or group"),
            ));
        }
    };
    let sam = template(Kind::Group, "groups.sam_account_name", g.sam_account_name.as_deref())?;
    Ok(Some(Groups {
        base_dn: g.base_dn.clone(),
        rdn_attr,
        rdn,
        class,
        empty_member: g.empty_member.clone(),
        gid_start: g.gid_start,
        group_type: g.group_type,
        sam,
    }))
}

impl LdapTarget {
    /// Builds the target from its configuration. Nothing connects yet.
    ///
    /// # Errors
    /// The offending key below `[[target]]` and what is wrong with it.
    pub fn from_config(cfg: &LdapTargetConfig) -> Result<LdapTarget, BuildError> {
        let lower = cfg.url.to_ascii_lowercase();
        if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
            return Err(bad("url", "must start with ldap:// or ldaps://"));
        }
        if cfg.starttls && lower.starts_with("ldaps://") {
            return Err(bad("starttls", "not with ldaps:// (the connection is already TLS)"));
        }
        if let Disable::Ad { initial_password: InitialPassword::Random } = cfg.disable
            && !cfg.starttls
            && !lower.starts_with("ldaps://")
        {
            return Err(bad(
                "disable.initial_password",
                "Active Directory accepts a password only over TLS: use an ldaps:// url or starttls = true (or initial_password = \"none\" for a directory that only imitates AD)",
            ));
        }
        Ok(LdapTarget {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            starttls: cfg.starttls,
            tls: cfg.ca_file.as_deref().map(tls_config).transpose()?,
            bind_dn: cfg.bind_dn.clone(),
            password: password(cfg)?,
            timeout: Duration::from_secs(cfg.timeout_seconds.max(1)),
            delete_policy: cfg.delete_policy,
            users: users(cfg)?,
            disable: cfg.disable.clone(),
            groups: groups(cfg)?,
            conn: Mutex::new(None),
            last_gid: Mutex::new(None),
        })
    }
}
