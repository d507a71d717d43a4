//! The LDAP target: users (and optionally groups) as directory entries in OpenLDAP, 389-DS or Active
//! Directory, written with ldap3. An existing entry with the user's email is linked rather than duplicated;
//! deactivation applies the configured disable representation; DN values are escaped per RFC 4514 and
//! filter values per RFC 4515.

pub mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry, dn_escape, ldap_escape};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use self::config::{Disable, LdapTargetConfig};
use super::sql::config::DeletePolicy;
use super::{Applied, Entry, Link, Links, Op, TargetError};
use crate::mapping::Source;
use crate::matching::match_email;
use crate::scim::schema::Kind;

/// OpenLDAP ppolicy's "locked until an administrator unlocks" value (draft-behera-ldap-password-policy).
const LOCKED_FOREVER: &str = "000001010000Z";
/// Active Directory's ACCOUNTDISABLE bit of userAccountControl.
const AD_DISABLED: u32 = 0x2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum GroupClass {
    Names,
    UniqueNames,
    Posix,
}

impl GroupClass {
    fn object_class(self) -> &'static str {
        match self {
            GroupClass::Names => "groupOfNames",
            GroupClass::UniqueNames => "groupOfUniqueNames",
            GroupClass::Posix => "posixGroup",
        }
    }
    fn member_attr(self) -> &'static str {
        match self {
            GroupClass::Names => "member",
            GroupClass::UniqueNames => "uniqueMember",
            GroupClass::Posix => "memberUid",
        }
    }
}

struct Users {
    base_dn: String,
    rdn_attr: String,
    rdn: Source,
    object_classes: Vec<String>,
    match_filter: String,
    attrs: Vec<(String, Source)>,
}

struct Groups {
    base_dn: String,
    rdn_attr: String,
    rdn: Source,
    class: GroupClass,
    empty_member: String,
    gid_start: u32,
}

pub struct LdapTarget {
    name: String,
    url: String,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    bind_dn: String,
    password: String,
    timeout: Duration,
    delete_policy: DeletePolicy,
    users: Users,
    disable: Disable,
    groups: Option<Groups>,
    conn: Mutex<Option<Ldap>>,
    /// The last gidNumber handed out: groups created in parallel lanes must not get the same one.
    last_gid: Mutex<Option<u32>>,
}

fn split_rdn(kind: Kind, key: &str, rdn: &str) -> Result<(String, Source), String> {
    let (attr, template) =
        rdn.split_once('=').ok_or_else(|| format!("{key}: {rdn:?} must be attribute={{template}}"))?;
    let attr = attr.trim();
    if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("{key}: {attr:?} is not an attribute name"));
    }
    let source = Source::parse(kind, template).map_err(|e| format!("{key}: {e}"))?;
    Ok((attr.to_owned(), source))
}

fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("ca_file: cannot read {}: {e}", ca_file.display()))?;
    // Exactly the CAs of ca_file are trusted: a private directory CA, without the public ones.
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for item in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls::pki_types::CertificateDer<'static> =
            item.map_err(|e| format!("ca_file: {} is not PEM: {e}", ca_file.display()))?;
        roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err(format!("ca_file: no certificate in {}", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("ca_file: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Transient: the directory is unreachable, busy or unavailable, or the bind failed (a setting of the
/// target, not of the change). Permanent: the server refused this operation.
fn classify(e: LdapError) -> TargetError {
    match e {
        LdapError::LdapResult { result } => classify_rc(result.rc, &result.text),
        other => TargetError::Transient(other.to_string()),
    }
}

fn classify_rc(rc: u32, text: &str) -> TargetError {
    let msg = format!("LDAP result {rc}{}{text}", if text.is_empty() { "" } else { ": " });
    match rc {
        // operationsError, referral (a read-only replica), insufficientAccessRights, invalidCredentials,
        // busy, unavailable, unwillingToPerform (read-only or shutting down), other, and the client-side
        // server-down / timeout / connect errors: the directory, not the change.
        1 | 10 | 49 | 50 | 51 | 52 | 53 | 80 | 81 | 85 | 91 => TargetError::Transient(msg),
        _ => TargetError::Permanent(msg),
    }
}

fn set(values: &[String]) -> HashSet<String> {
    values.iter().cloned().collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "TRUE" } else { "FALSE" }.to_owned()),
        other => Some(other.to_string()),
    }
}

impl LdapTarget {
    /// # Errors
    /// A message starting with the offending key below `[[target]]`.
    pub fn from_config(cfg: &LdapTargetConfig) -> Result<LdapTarget, String> {
        let lower = cfg.url.to_ascii_lowercase();
        if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
            return Err("url: must start with ldap:// or ldaps://".into());
        }
        if cfg.starttls && lower.starts_with("ldaps://") {
            return Err("starttls: not with ldaps:// (the connection is already TLS)".into());
        }
        let password = match (&cfg.password_file, &cfg.password_env) {
            (Some(f), None) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("password_file: cannot read {}: {e}", f.display()))?,
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("password_env: the environment variable {var} is not set"))?
            }
            _ => return Err("password_file: give exactly one of password_file and password_env".into()),
        };
        let tls = cfg.ca_file.as_deref().map(tls_config).transpose()?;
        let u = &cfg.users;
        let (rdn_attr, rdn) = split_rdn(Kind::User, "users.rdn", &u.rdn)?;
        let mut attrs = Vec::new();
        for (attr, expr) in &u.attributes {
            if !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("users.attributes.{attr}: not an attribute name"));
            }
            attrs.push((
                attr.clone(),
                Source::parse(Kind::User, expr).map_err(|e| format!("users.attributes.{attr}: {e}"))?,
            ));
        }
        if !u.match_filter.contains("{match_email}")
            || ldap3::parse_filter(u.match_filter.replace("{match_email}", "x@example.com")).is_err()
        {
            return Err(format!(
                "users.match_filter: {:?} must be an LDAP filter containing {{match_email}}",
                u.match_filter
            ));
        }
        if u.object_classes.is_empty() {
            return Err("users.object_classes: name at least one object class, e.g. [\"inetOrgPerson\"]".into());
        }
        let groups = match &cfg.groups {
            None => None,
            Some(g) => {
                let (rdn_attr, rdn) = split_rdn(Kind::Group, "groups.rdn", &g.rdn)?;
                let class = match g.object_class.as_str() {
                    "groupOfNames" => GroupClass::Names,
                    "groupOfUniqueNames" => GroupClass::UniqueNames,
                    "posixGroup" => GroupClass::Posix,
                    other => {
                        return Err(format!(
                            "groups.object_class: {other:?} is not groupOfNames, groupOfUniqueNames or posixGroup"
                        ));
                    }
                };
                Some(Groups {
                    base_dn: g.base_dn.clone(),
                    rdn_attr,
                    rdn,
                    class,
                    empty_member: g.empty_member.clone(),
                    gid_start: g.gid_start,
                })
            }
        };
        Ok(LdapTarget {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            starttls: cfg.starttls,
            tls,
            bind_dn: cfg.bind_dn.clone(),
            password,
            timeout: Duration::from_secs(cfg.timeout_seconds.max(1)),
            delete_policy: cfg.delete_policy,
            users: Users {
                base_dn: u.base_dn.clone(),
                rdn_attr,
                rdn,
                object_classes: u.object_classes.clone(),
                match_filter: u.match_filter.clone(),
                attrs,
            },
            disable: cfg.disable.clone(),
            groups,
            conn: Mutex::new(None),
            last_gid: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn replays_groups(&self) -> bool {
        self.groups.is_some()
    }

    /// A bound connection, made on first use and again after a failure.
    async fn ldap(&self) -> Result<Ldap, TargetError> {
        let mut guard = self.conn.lock().await;
        if let Some(l) = guard.as_ref() {
            return Ok(l.clone());
        }
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout).set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| TargetError::Transient(format!("cannot connect to {}: {e}", self.url)))?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout)
            .simple_bind(&self.bind_dn, &self.password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| TargetError::Transient(format!("bind as {} failed: {e}", self.bind_dn)))?;
        *guard = Some(ldap.clone());
        Ok(ldap)
    }

    /// Forgets the connection after a transient failure, so that the next attempt reconnects.
    async fn reset(&self, e: &TargetError) {
        if e.is_transient() {
            *self.conn.lock().await = None;
        }
    }

    pub async fn check(&self) -> Result<(), TargetError> {
        let r = self.check_inner().await;
        if let Err(e) = &r {
            self.reset(e).await;
        }
        r
    }

    async fn check_inner(&self) -> Result<(), TargetError> {
        let mut l = self.ldap().await?;
        for base in std::iter::once(&self.users.base_dn).chain(self.groups.as_ref().map(|g| &g.base_dn)) {
            self.search(&mut l, base, Scope::Base, "(objectClass=*)", &["1.1"]).await.map_err(|e| {
                TargetError::Transient(format!("target {:?}: base DN {base:?} cannot be read: {e}", self.name))
            })?;
        }
        Ok(())
    }

    async fn search(
        &self,
        l: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, TargetError> {
        let (entries, _) = l
            .with_timeout(self.timeout)
            .search(base, scope, filter, attrs.to_vec())
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// The entry at `dn`, or None when it does not exist.
    async fn read(&self, l: &mut Ldap, dn: &str, attrs: &[&str]) -> Result<Option<SearchEntry>, TargetError> {
        match l
            .with_timeout(self.timeout)
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn modify(&self, l: &mut Ldap, dn: &str, mods: Vec<Mod<String>>) -> Result<(), TargetError> {
        if mods.is_empty() {
            return Ok(());
        }
        l.with_timeout(self.timeout).modify(dn, mods).await.and_then(|r| r.success()).map(|_| ()).map_err(classify)
    }

    /// A modify whose result code is returned rather than turned into an error (member edits tolerate some).
    async fn modify_rc(&self, l: &mut Ldap, dn: &str, mods: Vec<Mod<String>>) -> Result<u32, TargetError> {
        let r = l.with_timeout(self.timeout).modify(dn, mods).await.map_err(classify)?;
        Ok(r.rc)
    }

    /// Applies entries one after another. LDAP has no transactions: on failure the entries before the failed
    /// one stay applied, which is harmless because every apply is idempotent.
    pub async fn apply_batch(
        &self,
        entries: &[Entry],
        links: &mut Links,
        claims: &dyn super::Claims,
    ) -> Result<Vec<Applied>, (usize, TargetError)> {
        let mut l = match self.ldap().await {
            Ok(l) => l,
            Err(e) => return Err((0, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let id = (e.tenant, e.resource_id.clone());
            let link = links.get(&id).cloned();
            let r = match e.kind {
                Kind::User => self.apply_user(&mut l, e, link, links, claims).await,
                Kind::Group => self.apply_group(&mut l, e, link.map(|l| l.key), links, claims).await,
            };
            match r {
                Ok(a) => {
                    super::remember(links, id, e.kind, &a);
                    out.push(a);
                }
                Err(err) => {
                    self.reset(&err).await;
                    return Err((i, err));
                }
            }
        }
        Ok(out)
    }

    /// Finds a user's entry: by its link (if the entry still exists), else by the match filter.
    async fn find_user(
        &self,
        l: &mut Ldap,
        link: Option<String>,
        email: Option<&str>,
    ) -> Result<(Option<String>, bool), TargetError> {
        if let Some(dn) = link
            && self.read(l, &dn, &["1.1"]).await?.is_some()
        {
            return Ok((Some(dn), true));
        }
        let Some(email) = email else { return Ok((None, false)) };
        let filter = self.users.match_filter.replace("{match_email}", &ldap_escape(email));
        let mut bases = vec![self.users.base_dn.clone()];
        if let Disable::Move { disabled_base_dn } = &self.disable {
            bases.push(disabled_base_dn.clone());
        }
        let mut dns = Vec::new();
        for base in bases {
            dns.extend(self.search(l, &base, Scope::Subtree, &filter, &["1.1"]).await?.into_iter().map(|e| e.dn));
        }
        match dns.len() {
            0 => Ok((None, false)),
            1 => Ok((dns.pop(), false)),
            _ => Err(TargetError::Permanent(format!(
                "{} entries match {filter}: {}; not guessing which one is this user — fix the directory, then retry",
                dns.len(),
                dns.join("; ")
            ))),
        }
    }

    fn user_rdn(&self, state: &Map<String, Value>, id: &str) -> Result<String, TargetError> {
        let v = text(&self.users.rdn.eval(state, id)).ok_or_else(|| {
            TargetError::Permanent(format!("the RDN attribute {} has no value for this user", self.users.rdn_attr))
        })?;
        Ok(format!("{}={}", self.users.rdn_attr, dn_escape(v)))
    }

    async fn apply_user(
        &self,
        l: &mut Ldap,
        e: &Entry,
        link: Option<Link>,
        links: &Links,
        claims: &dyn super::Claims,
    ) -> Result<Applied, TargetError> {
        let email = match_email(&e.state);
        // Entries found by email keep their name: their uid or cn may be a login the directory relies on.
        // Entries this service created follow the RDN template when its source changes.
        let rename = link.as_ref().is_some_and(|l| l.created);
        let (dn, was_linked) = self.find_user(l, link.map(|l| l.key), email.as_deref()).await?;
        if let (Some(found), false) = (&dn, was_linked) {
            super::check_unclaimed(links, claims, e.tenant, &e.resource_id, found)?;
        }
        let active = e.state.get("active") != Some(&Value::Bool(false));
        if e.op == Op::Delete {
            let Some(dn) = dn else {
                return Ok(Applied { key: None, outcome: "absent", detail: "no directory entry to remove".into() });
            };
            return match self.delete_policy {
                DeletePolicy::Block => {
                    let dn = self.place(l, &dn, &e.state, &e.resource_id, false, rename).await?;
                    self.represent(l, &dn, false).await?;
                    Ok(Applied {
                        key: Some(dn),
                        outcome: "blocked",
                        detail: "deleted in SCIM; disabled by policy".into(),
                    })
                }
                DeletePolicy::Delete => {
                    self.drop_memberships(l, &dn).await?;
                    match l.with_timeout(self.timeout).delete(&dn).await.and_then(|r| r.success()) {
                        Ok(_) => {}
                        Err(LdapError::LdapResult { result }) if result.rc == 32 => {}
                        Err(err) => return Err(classify(err)),
                    }
                    Ok(Applied { key: None, outcome: "deleted", detail: dn })
                }
            };
        }
        let values: Vec<(String, Option<String>)> =
            self.users.attrs.iter().map(|(a, s)| (a.clone(), text(&s.eval(&e.state, &e.resource_id)))).collect();
        let (dn, outcome) = match dn {
            Some(dn) => {
                let dn = self.place(l, &dn, &e.state, &e.resource_id, active, rename).await?;
                let mods = values
                    .iter()
                    .filter(|(a, _)| !a.eq_ignore_ascii_case(&self.users.rdn_attr))
                    .map(|(a, v)| Mod::Replace(a.clone(), v.iter().cloned().collect()))
                    .collect();
                self.modify(l, &dn, mods).await?;
                (dn, if was_linked { "updated" } else { "linked" })
            }
            None => {
                let rdn = self.user_rdn(&e.state, &e.resource_id)?;
                let parent = match (&self.disable, active) {
                    (Disable::Move { disabled_base_dn }, false) => disabled_base_dn.clone(),
                    _ => self.users.base_dn.clone(),
                };
                let dn = format!("{rdn},{parent}");
                let mut attrs: Vec<(String, HashSet<String>)> =
                    vec![("objectClass".into(), set(&self.users.object_classes))];
                let rdn_value = text(&self.users.rdn.eval(&e.state, &e.resource_id)).unwrap_or_default();
                let mut has_rdn = false;
                for (a, v) in &values {
                    if let Some(v) = v {
                        let mut vals: HashSet<String> = [v.clone()].into();
                        if a.eq_ignore_ascii_case(&self.users.rdn_attr) {
                            vals.insert(rdn_value.clone());
                            has_rdn = true;
                        }
                        attrs.push((a.clone(), vals));
                    }
                }
                if !has_rdn {
                    attrs.push((self.users.rdn_attr.clone(), [rdn_value].into()));
                }
                // A new entry carries its disabled representation from the start: one write, not two.
                if !active {
                    match &self.disable {
                        Disable::Attribute { attribute, value } => {
                            attrs.push((attribute.clone(), [value.clone()].into()))
                        }
                        Disable::Ppolicy => {
                            attrs.push(("pwdAccountLockedTime".into(), [LOCKED_FOREVER.to_owned()].into()))
                        }
                        Disable::Ad => {
                            for (a, vals) in attrs.iter_mut() {
                                if a.eq_ignore_ascii_case("userAccountControl") {
                                    let v: u32 = vals.iter().next().and_then(|v| v.parse().ok()).unwrap_or(0x200);
                                    *vals = [(v | AD_DISABLED).to_string()].into();
                                }
                            }
                        }
                        Disable::Move { .. } => {}
                    }
                }
                match l.with_timeout(self.timeout).add(&dn, attrs).await.and_then(|r| r.success()) {
                    Ok(_) => {
                        let detail = if active { String::new() } else { "created disabled (active = false)".into() };
                        return Ok(Applied { key: Some(dn), outcome: "created", detail });
                    }
                    // An entry with this name exists. Created by an earlier attempt whose outcome was not
                    // recorded, it carries this user's address and no other resource's link: take it over.
                    // Anyone else's entry of the same name is not touched.
                    Err(LdapError::LdapResult { result }) if result.rc == 68 => {
                        let existing = self.read(l, &dn, &["mail"]).await?;
                        let same = existing.as_ref().is_some_and(|x| {
                            x.attrs.get("mail").is_some_and(|m| {
                                m.iter().any(|v| email.as_deref().is_some_and(|e| v.eq_ignore_ascii_case(e)))
                            })
                        });
                        if !same {
                            return Err(TargetError::Permanent(format!(
                                "an entry named {dn} already exists and is not this user's (its mail differs); choose another RDN template or resolve it in the directory"
                            )));
                        }
                        super::check_unclaimed(links, claims, e.tenant, &e.resource_id, &dn)?;
                        let mods =
                            values.iter().map(|(a, v)| Mod::Replace(a.clone(), v.iter().cloned().collect())).collect();
                        self.modify(l, &dn, mods).await?;
                        (dn, "linked")
                    }
                    Err(err) => return Err(classify(err)),
                }
            }
        };
        self.represent(l, &dn, active).await?;
        let detail = if active { String::new() } else { "disabled (active = false)".into() };
        Ok(Applied { key: Some(dn), outcome, detail })
    }

    /// Renames or moves the entry when its RDN value changed or (move method) its enabled state did.
    async fn place(
        &self,
        l: &mut Ldap,
        dn: &str,
        state: &Map<String, Value>,
        id: &str,
        active: bool,
        rename: bool,
    ) -> Result<String, TargetError> {
        let (cur_rdn, cur_parent) = split_dn(dn);
        let rdn = if rename { self.user_rdn(state, id)? } else { cur_rdn.to_owned() };
        let parent = match &self.disable {
            Disable::Move { disabled_base_dn } if !active => disabled_base_dn.clone(),
            Disable::Move { .. } => self.users.base_dn.clone(),
            _ => cur_parent.to_owned(),
        };
        let same_rdn = cur_rdn.eq_ignore_ascii_case(&rdn);
        let same_parent = cur_parent.eq_ignore_ascii_case(&parent);
        if same_rdn && same_parent {
            return Ok(dn.to_owned());
        }
        let new_sup = if same_parent { None } else { Some(parent.as_str()) };
        let old_member = match &self.groups {
            Some(g) => Some(self.member_value(l, g.class, dn).await?),
            None => None,
        };
        l.with_timeout(self.timeout)
            .modifydn(dn, &rdn, true, new_sup)
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        let new_dn = format!("{rdn},{parent}");
        // Groups name members by DN (or uid): follow the rename, as the refint overlay would, so that a
        // move to a disabled OU and back, or a new uid, leaves no stale membership.
        if let (Some(g), Some(old)) = (&self.groups, old_member) {
            let new = self.member_value(l, g.class, &new_dn).await?;
            if old != new {
                let attr = g.class.member_attr().to_owned();
                let filter = format!("({attr}={})", ldap_escape(old.as_str()));
                for group in self.search(l, &g.base_dn, Scope::Subtree, &filter, &["1.1"]).await? {
                    let mods = vec![
                        Mod::Delete(attr.clone(), [old.clone()].into()),
                        Mod::Add(attr.clone(), [new.clone()].into()),
                    ];
                    match self.modify_rc(l, &group.dn, mods).await? {
                        0 | 16 | 20 => {}
                        rc => return Err(classify_rc(rc, &format!("renaming a member of {}", group.dn))),
                    }
                }
            }
        }
        Ok(new_dn)
    }

    /// Applies the enabled or disabled representation (the move method is handled by `place`).
    async fn represent(&self, l: &mut Ldap, dn: &str, active: bool) -> Result<(), TargetError> {
        match &self.disable {
            Disable::Attribute { attribute, value } => {
                let vals: HashSet<String> = if active { HashSet::new() } else { [value.clone()].into() };
                self.modify(l, dn, vec![Mod::Replace(attribute.clone(), vals)]).await
            }
            Disable::Ppolicy => {
                let vals: HashSet<String> = if active { HashSet::new() } else { [LOCKED_FOREVER.to_owned()].into() };
                self.modify(l, dn, vec![Mod::Replace("pwdAccountLockedTime".into(), vals)]).await
            }
            Disable::Ad => {
                // Read-modify-write: only ACCOUNTDISABLE changes, every other flag is kept.
                let entry = self.read(l, dn, &["userAccountControl"]).await?;
                let current: u32 = entry
                    .and_then(|e| e.attrs.get("userAccountControl").and_then(|v| v.first().cloned()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0x200);
                let wanted = if active { current & !AD_DISABLED } else { current | AD_DISABLED };
                if wanted == current {
                    return Ok(());
                }
                self.modify(l, dn, vec![Mod::Replace("userAccountControl".into(), [wanted.to_string()].into())]).await
            }
            Disable::Move { .. } => Ok(()),
        }
    }

    /// Removes a user about to be deleted from the groups that list it.
    async fn drop_memberships(&self, l: &mut Ldap, dn: &str) -> Result<(), TargetError> {
        let Some(g) = &self.groups else { return Ok(()) };
        let value = self.member_value(l, g.class, dn).await?;
        let filter = format!("({}={})", g.class.member_attr(), ldap_escape(&value));
        for group in self.search(l, &g.base_dn, Scope::Subtree, &filter, &["1.1"]).await? {
            self.remove_member(l, g, &group.dn, &value).await?;
        }
        Ok(())
    }

    /// The value naming a user in a group: its DN, or its uid for posixGroup.
    async fn member_value(&self, l: &mut Ldap, class: GroupClass, user_dn: &str) -> Result<String, TargetError> {
        if class != GroupClass::Posix {
            return Ok(user_dn.to_owned());
        }
        let entry = self.read(l, user_dn, &["uid"]).await?;
        entry
            .and_then(|e| e.attrs.get("uid").and_then(|v| v.first().cloned()))
            .ok_or_else(|| TargetError::Permanent(format!("{user_dn} has no uid for a posixGroup memberUid")))
    }

    async fn remove_member(&self, l: &mut Ldap, g: &Groups, group_dn: &str, value: &str) -> Result<(), TargetError> {
        let attr = g.class.member_attr().to_owned();
        match self.modify_rc(l, group_dn, vec![Mod::Delete(attr.clone(), [value.to_owned()].into())]).await? {
            0 | 16 => Ok(()), // 16 noSuchAttribute: already gone
            // 65 objectClassViolation: the last member of a groupOfNames; the placeholder takes its place.
            65 if g.class != GroupClass::Posix => {
                let mods = vec![
                    Mod::Add(attr.clone(), [g.empty_member.clone()].into()),
                    Mod::Delete(attr, [value.to_owned()].into()),
                ];
                match self.modify_rc(l, group_dn, mods).await? {
                    0 | 16 => Ok(()),
                    rc => Err(classify_rc(rc, "removing the last member")),
                }
            }
            rc => Err(classify_rc(rc, &format!("removing a member of {group_dn}"))),
        }
    }

    async fn add_member(&self, l: &mut Ldap, g: &Groups, group_dn: &str, value: &str) -> Result<(), TargetError> {
        let attr = g.class.member_attr().to_owned();
        match self.modify_rc(l, group_dn, vec![Mod::Add(attr.clone(), [value.to_owned()].into())]).await? {
            0 | 20 => {} // 20 attributeOrValueExists: already a member
            rc => return Err(classify_rc(rc, &format!("adding a member to {group_dn}"))),
        }
        if g.class != GroupClass::Posix {
            match self.modify_rc(l, group_dn, vec![Mod::Delete(attr, [g.empty_member.clone()].into())]).await? {
                0 | 16 => {}
                rc => return Err(classify_rc(rc, "removing the empty-group placeholder")),
            }
        }
        Ok(())
    }

    async fn next_gid(&self, l: &mut Ldap, g: &Groups) -> Result<u32, TargetError> {
        // Held across the search so that two lanes cannot both read the same highest number.
        let mut last = self.last_gid.lock().await;
        let entries = self.search(l, &g.base_dn, Scope::Subtree, "(objectClass=posixGroup)", &["gidNumber"]).await?;
        let max =
            entries.iter().filter_map(|e| e.attrs.get("gidNumber")?.first()?.parse::<u32>().ok()).chain(*last).max();
        let next = match max {
            None => g.gid_start,
            Some(m) => m
                .checked_add(1)
                .ok_or_else(|| TargetError::Permanent(format!("no gidNumber left above {m} under {}", g.base_dn)))?
                .max(g.gid_start),
        };
        *last = Some(next);
        Ok(next)
    }

    async fn apply_group(
        &self,
        l: &mut Ldap,
        e: &Entry,
        link: Option<String>,
        links: &Links,
        claims: &dyn super::Claims,
    ) -> Result<Applied, TargetError> {
        let Some(g) = &self.groups else {
            return Ok(Applied { key: None, outcome: "ignored", detail: "no [target.groups] configured".into() });
        };
        let name = text(&g.rdn.eval(&e.state, &e.resource_id))
            .ok_or_else(|| TargetError::Permanent(format!("the group RDN attribute {} has no value", g.rdn_attr)))?;
        let rdn = format!("{}={}", g.rdn_attr, dn_escape(name.as_str()));
        let mut dn = None;
        if let Some(d) = link
            && self.read(l, &d, &["1.1"]).await?.is_some()
        {
            dn = Some(d);
        }
        if dn.is_none() {
            let filter =
                format!("(&(objectClass={})({}={}))", g.class.object_class(), g.rdn_attr, ldap_escape(name.as_str()));
            let found = self.search(l, &g.base_dn, Scope::OneLevel, &filter, &["1.1"]).await?;
            if found.len() > 1 {
                return Err(TargetError::Permanent(format!("{} groups match {filter}; not guessing", found.len())));
            }
            if let Some(f) = found.first() {
                super::check_unclaimed(links, claims, e.tenant, &e.resource_id, &f.dn)?;
            }
            dn = found.into_iter().next().map(|e| e.dn);
        }
        if e.op == Op::Delete {
            let Some(dn) = dn else {
                return Ok(Applied { key: None, outcome: "absent", detail: "no directory group to remove".into() });
            };
            match l.with_timeout(self.timeout).delete(&dn).await.and_then(|r| r.success()) {
                Ok(_) => {}
                Err(LdapError::LdapResult { result }) if result.rc == 32 => {}
                Err(err) => return Err(classify(err)),
            }
            return Ok(Applied { key: None, outcome: "deleted", detail: dn });
        }
        // Members without an entry here (their user failed to replay or was deleted since), and groups in
        // a posixGroup, are left out and named in the audit detail rather than failing the group's change.
        let mut added = Vec::new();
        let mut skipped = Vec::new();
        for id in &e.members_added {
            match links.get(&(e.tenant, id.clone())) {
                Some(m) if m.kind == Kind::User || g.class != GroupClass::Posix => {
                    added.push(self.member_value(l, g.class, &m.key).await?)
                }
                _ => skipped.push(id.clone()),
            }
        }
        let (dn, outcome) = match dn {
            Some(dn) => {
                let (cur_rdn, parent) = split_dn(&dn);
                let dn = if cur_rdn.eq_ignore_ascii_case(&rdn) {
                    dn.clone()
                } else {
                    l.with_timeout(self.timeout)
                        .modifydn(&dn, &rdn, true, None)
                        .await
                        .and_then(|r| r.success())
                        .map_err(classify)?;
                    format!("{rdn},{parent}")
                };
                for v in &added {
                    self.add_member(l, g, &dn, v).await?;
                }
                (dn, "updated")
            }
            None => {
                let dn = format!("{rdn},{}", g.base_dn);
                let mut attrs: Vec<(String, HashSet<String>)> = vec![
                    ("objectClass".into(), [g.class.object_class().to_owned()].into()),
                    (g.rdn_attr.clone(), [name.clone()].into()),
                ];
                let members: HashSet<String> = added.iter().cloned().collect();
                match g.class {
                    GroupClass::Posix => {
                        attrs.push(("gidNumber".into(), [self.next_gid(l, g).await?.to_string()].into()));
                        if !members.is_empty() {
                            attrs.push(("memberUid".into(), members));
                        }
                    }
                    class => {
                        let members = if members.is_empty() { [g.empty_member.clone()].into() } else { members };
                        attrs.push((class.member_attr().to_owned(), members));
                    }
                }
                match l.with_timeout(self.timeout).add(&dn, attrs).await.and_then(|r| r.success()) {
                    Ok(_) => {}
                    Err(LdapError::LdapResult { result }) if result.rc == 68 => {
                        for v in &added {
                            self.add_member(l, g, &dn, v).await?;
                        }
                    }
                    Err(err) => return Err(classify(err)),
                }
                (dn, "created")
            }
        };
        for id in &e.members_removed {
            let Some(user_dn) = links.get(&(e.tenant, id.clone())).map(|l| &l.key) else { continue };
            let v = self.member_value(l, g.class, user_dn).await.unwrap_or_else(|_| user_dn.clone());
            self.remove_member(l, g, &dn, &v).await?;
        }
        let mut detail = format!("+{} -{} members", added.len(), e.members_removed.len());
        if !skipped.is_empty() {
            detail.push_str(&format!("; not provisioned here, left out: {}", skipped.join(" ")));
        }
        Ok(Applied { key: Some(dn), outcome, detail })
    }
}

/// Splits a DN into its first RDN and the rest, honouring `\,` escapes.
fn split_dn(dn: &str) -> (&str, &str) {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return (&dn[..i], &dn[i + 1..]),
            _ => i += 1,
        }
    }
    (dn, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_split_honours_escapes() {
        assert_eq!(split_dn("uid=a\\,b,ou=people,dc=x"), ("uid=a\\,b", "ou=people,dc=x"));
        assert_eq!(split_dn("dc=x"), ("dc=x", ""));
    }

    #[test]
    fn escaping_per_rfc() {
        // RFC 4514 §2.4 allows hex pairs for every special character, and ldap3 writes them so.
        assert_eq!(dn_escape(",+\"\\<>;=#x "), "\\2c\\2b\\22\\5c\\3c\\3e\\3b\\3d#x\\20");
        assert!(dn_escape("#lead").starts_with("\\23"), "{}", dn_escape("#lead"));
        assert_eq!(ldap_escape("*()\\"), "\\2a\\28\\29\\5c");
    }
}
