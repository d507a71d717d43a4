//! The directory connection: connect (ldap://, StartTLS, ldaps://), bind, reconnect after a failure, the
//! few operations the target uses with their timeouts, and the classification of LDAP result codes into
//! transient (the directory) and permanent (this change) failures.

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};

use super::LdapTarget;
use crate::targets::TargetError;

/// Transient: the directory is unreachable, busy or unavailable, or the bind failed (a setting of the
/// target, not of the change). Permanent: the server refused this operation.
pub(super) fn classify(e: LdapError) -> TargetError {
    match e {
        LdapError::LdapResult { result } => classify_rc(result.rc, &result.text),
        other => TargetError::transient_from("the directory cannot be reached", other),
    }
}

pub(super) fn classify_rc(rc: u32, text: &str) -> TargetError {
    let msg = format!("LDAP result {rc}{}{text}", if text.is_empty() { "" } else { ": " });
    match rc {
        // Active Directory begins its diagnostics with a Win32 error code ("00002035: ..."): its
        // unwillingToPerform is a refusal of this operation (a rule of AD's), not a server going away.
        53 if ad_code(text).is_some() => TargetError::permanent(msg),
        // operationsError, referral (a read-only replica), insufficientAccessRights, invalidCredentials,
        // busy, unavailable, unwillingToPerform (read-only or shutting down), other, and the client-side
        // server-down / timeout / connect errors: the directory, not the change.
        1 | 10 | 49 | 50 | 51 | 52 | 53 | 80 | 81 | 85 | 91 => TargetError::transient(msg),
        _ => TargetError::permanent(msg),
    }
}

/// The Win32 error code Active Directory puts before its diagnostic text, e.g. 0000052D.
fn ad_code(text: &str) -> Option<&str> {
    let code = text.get(..8)?;
    (code.bytes().all(|b| b.is_ascii_hexdigit()) && text[8..].starts_with(':')).then_some(code)
}

/// noSuchObject.
pub(super) const NO_SUCH_OBJECT: u32 = 32;
/// entryAlreadyExists.
pub(super) const ALREADY_EXISTS: u32 = 68;

impl LdapTarget {
    /// A bound connection, made on first use and again after a failure.
    pub(super) async fn ldap(&self) -> Result<Ldap, TargetError> {
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
            .map_err(|e| TargetError::transient_from(format!("cannot connect to {}", self.url), e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout)
            .simple_bind(&self.bind_dn, &self.password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| TargetError::transient_from(format!("bind as {} failed", self.bind_dn), e))?;
        *guard = Some(ldap.clone());
        Ok(ldap)
    }

    /// Forgets the connection after a transient failure, so that the next attempt reconnects.
    pub(super) async fn reset(&self, e: &TargetError) {
        if e.is_transient() {
            *self.conn.lock().await = None;
        }
    }

    /// Connects, binds and reads the base DNs.
    ///
    /// # Errors
    /// Transient: the directory cannot be reached, the bind fails, or a base DN cannot be read.
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
            self.search(&mut l, base, Scope::Base, "(objectClass=*)", &["1.1"])
                .await
                .map_err(|e| TargetError::transient_from(format!("base DN {base:?} cannot be read"), e))?;
        }
        Ok(())
    }

    pub(super) async fn search(
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
    pub(super) async fn read(
        &self,
        l: &mut Ldap,
        dn: &str,
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, TargetError> {
        match l
            .with_timeout(self.timeout)
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            Err(LdapError::LdapResult { result }) if result.rc == NO_SUCH_OBJECT => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Notes a write for the audit trail of the entry being applied, with secret values masked.
    pub(super) fn note(&self, op: String) {
        let _ = super::TRACE.try_with(|t| t.borrow_mut().push(op));
    }

    /// Adds an entry (the caller handles "already exists"). `secret` is a binary value such as AD's
    /// `unicodePwd`, shown masked in the trace.
    pub(super) async fn add_entry(
        &self,
        l: &mut Ldap,
        dn: &str,
        attrs: Vec<(String, std::collections::HashSet<String>)>,
        secret: Option<(&str, Vec<u8>)>,
    ) -> Result<ldap3::LdapResult, LdapError> {
        let mut shown: Vec<String> = attrs.iter().map(|(a, v)| format!("{a}: {}", values(a, v.iter()))).collect();
        let mut raw: Vec<(Vec<u8>, std::collections::HashSet<Vec<u8>>)> =
            attrs.into_iter().map(|(a, v)| (a.into_bytes(), v.into_iter().map(String::into_bytes).collect())).collect();
        if let Some((attr, value)) = secret {
            shown.push(format!("{attr}: (secret)"));
            raw.push((attr.as_bytes().to_vec(), [value].into()));
        }
        self.note(format!("add {dn} ({})", shown.join("; ")));
        l.with_timeout(self.timeout).add(dn, raw).await.and_then(|r| r.success())
    }

    pub(super) async fn modify(&self, l: &mut Ldap, dn: &str, mods: Vec<Mod<String>>) -> Result<(), TargetError> {
        if mods.is_empty() {
            return Ok(());
        }
        self.note(format!("modify {dn}: {}", show_mods(&mods)));
        l.with_timeout(self.timeout).modify(dn, mods).await.and_then(|r| r.success()).map(|_| ()).map_err(classify)
    }

    /// A modify whose result code is returned rather than turned into an error (member edits tolerate some).
    pub(super) async fn modify_rc(&self, l: &mut Ldap, dn: &str, mods: Vec<Mod<String>>) -> Result<u32, TargetError> {
        self.note(format!("modify {dn}: {}", show_mods(&mods)));
        let r = l.with_timeout(self.timeout).modify(dn, mods).await.map_err(classify)?;
        Ok(r.rc)
    }

    /// Renames and/or moves an entry.
    pub(super) async fn rename(
        &self,
        l: &mut Ldap,
        dn: &str,
        rdn: &str,
        new_sup: Option<&str>,
    ) -> Result<(), TargetError> {
        self.note(format!("rename {dn} to {rdn}{}", new_sup.map(|s| format!(" under {s}")).unwrap_or_default()));
        l.with_timeout(self.timeout)
            .modifydn(dn, rdn, true, new_sup)
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        Ok(())
    }

    /// Deletes an entry; one that is already gone counts as deleted.
    pub(super) async fn delete_entry(&self, l: &mut Ldap, dn: &str) -> Result<(), TargetError> {
        self.note(format!("delete {dn}"));
        match l.with_timeout(self.timeout).delete(dn).await.and_then(|r| r.success()) {
            Ok(_) => Ok(()),
            Err(LdapError::LdapResult { result }) if result.rc == NO_SUCH_OBJECT => Ok(()),
            Err(err) => Err(classify(err)),
        }
    }
}

/// Attribute values as a trace shows them: secrets masked.
fn values<'a>(attr: &str, vals: impl Iterator<Item = &'a String>) -> String {
    let secret = super::write_only(attr);
    let mut shown: Vec<String> = vals.map(|v| if secret { "(secret)".to_owned() } else { format!("{v:?}") }).collect();
    shown.sort();
    if shown.is_empty() { "(none)".to_owned() } else { shown.join(", ") }
}

fn show_mods(mods: &[Mod<String>]) -> String {
    mods.iter()
        .map(|m| match m {
            Mod::Add(a, v) => format!("add {a} {}", values(a, v.iter())),
            Mod::Delete(a, v) => format!("delete {a} {}", values(a, v.iter())),
            Mod::Replace(a, v) => format!("replace {a} {}", values(a, v.iter())),
            Mod::Increment(a, v) => format!("increment {a} {v}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Result codes and texts as a Samba AD domain controller and OpenLDAP send them.
    #[test]
    fn directory_errors_are_classified() {
        let permanent = [
            (19, "0000052D: Constraint violation - check_password_restrictions: the password is too short."),
            (68, "00002071: samldb: samAccountName 'jyoung' already in use!"),
            (19, "0000202F: samldb: userPrincipalName 'j@x' is already in use "),
            (53, "00002035: Unwilling to perform. Old RDN must be deleted"),
            (65, "attribute 'foo' not allowed"),
            (21, "telephoneNumber: value #0 invalid per syntax"),
        ];
        for (rc, text) in permanent {
            assert!(!classify_rc(rc, text).is_transient(), "{rc} {text}");
        }
        let transient = [(51, ""), (52, ""), (53, "shutting down"), (50, "acl: unable to get access"), (80, "")];
        for (rc, text) in transient {
            assert!(classify_rc(rc, text).is_transient(), "{rc} {text}");
        }
        assert_eq!(ad_code("0000052D: x"), Some("0000052D"));
        assert_eq!(ad_code("0000052D x"), None);
        assert_eq!(ad_code("short"), None);
    }
}
