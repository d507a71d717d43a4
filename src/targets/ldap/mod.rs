//! The LDAP target: users (and optionally groups) as directory entries in OpenLDAP, 389-DS or Active
//! Directory, written with ldap3. An existing entry with the user's email is linked rather than duplicated;
//! deactivation applies the configured disable representation; DN values are escaped per RFC 4514 and
//! filter values per RFC 4515.
//!
//! `build` turns the configuration into a target, `conn` connects, binds and classifies errors, `users`,
//! `disable` and `groups` apply journal entries, `ad` holds what Active Directory needs beyond that.

mod ad;
mod build;
pub mod config;
mod conn;
mod disable;
mod groups;
mod snapshot;
mod users;

pub(crate) use self::snapshot::norm_dn;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, dn_escape, ldap_escape};
use serde_json::Value;
use tokio::sync::Mutex;

use self::config::Disable;
use super::{Applied, Claims, DeletePolicy, Entry, Links, TargetError};
use crate::mapping::Source;
use crate::scim::schema::Kind;
use crate::staging::journal::remember;

#[derive(Debug, Clone, Copy, PartialEq)]
enum GroupClass {
    Names,
    UniqueNames,
    Posix,
    /// Active Directory's `group`: member DNs, empty groups allowed, groupType and sAMAccountName.
    Ad,
}

impl GroupClass {
    fn object_class(self) -> &'static str {
        match self {
            GroupClass::Names => "groupOfNames",
            GroupClass::UniqueNames => "groupOfUniqueNames",
            GroupClass::Posix => "posixGroup",
            GroupClass::Ad => "group",
        }
    }
    fn member_attr(self) -> &'static str {
        match self {
            GroupClass::Names | GroupClass::Ad => "member",
            GroupClass::UniqueNames => "uniqueMember",
            GroupClass::Posix => "memberUid",
        }
    }
    /// Whether the schema requires at least one member (a placeholder stands in while a group is empty).
    fn needs_member(self) -> bool {
        matches!(self, GroupClass::Names | GroupClass::UniqueNames)
    }
}

struct Users {
    base_dn: String,
    rdn_attr: String,
    rdn: Source,
    object_classes: Vec<String>,
    match_filter: String,
    attrs: Vec<(String, Source)>,
    /// Active Directory's logon name, set at creation.
    sam: Option<Source>,
    manager_attr: Option<String>,
}

struct Groups {
    base_dn: String,
    rdn_attr: String,
    rdn: Source,
    class: GroupClass,
    empty_member: String,
    gid_start: u32,
    group_type: i32,
    sam: Option<Source>,
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

tokio::task_local! {
    /// The writes of the entry being applied, for the audit trail: one per apply, however many batches
    /// run at once on the shared connection.
    static TRACE: std::cell::RefCell<Vec<String>>;
}

/// Password attributes: written, never read back or compared (directories hash them on write), and
/// masked in the audit trail.
fn write_only(attr: &str) -> bool {
    attr.eq_ignore_ascii_case("userPassword") || attr.eq_ignore_ascii_case("unicodePwd")
}

fn set(values: &[String]) -> HashSet<String> {
    values.iter().cloned().collect()
}

/// A mapped value as the text of an attribute value; None for "no value".
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "TRUE" } else { "FALSE" }.to_owned()),
        other => Some(other.to_string()),
    }
}

/// An RDN `attr=value` with the value escaped per RFC 4514.
fn rdn(attr: &str, value: &str) -> String {
    format!("{attr}={}", dn_escape(value))
}

/// A filter from a template with `{match_email}`, the address escaped per RFC 4515.
fn match_filter(template: &str, email: &str) -> String {
    template.replace("{match_email}", &ldap_escape(email))
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

impl LdapTarget {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn replays_groups(&self) -> bool {
        self.groups.is_some()
    }

    /// Applies entries one after another. LDAP has no transactions: on failure the entries before the failed
    /// one stay applied (and in `links`), which is harmless because every apply is idempotent.
    ///
    /// # Errors
    /// The first entry that failed.
    pub async fn apply_batch(
        &self,
        entries: &[Entry],
        links: &mut Links,
        claims: &dyn Claims,
    ) -> Result<Vec<Applied>, TargetError> {
        let mut l = self.ldap().await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let resource = e.resource();
            let link = links.get(&resource).cloned();
            let (r, operations) = TRACE
                .scope(std::cell::RefCell::new(Vec::new()), async {
                    let r = match e.kind {
                        Kind::User => self.apply_user(&mut l, e, link, links, claims).await,
                        Kind::Group => self.apply_group(&mut l, e, link.map(|l| l.key), links, claims).await,
                    };
                    (r, TRACE.with(|t| t.take()))
                })
                .await;
            match r {
                Ok(mut a) => {
                    a.operations = operations;
                    remember(links, resource, e.kind, &a);
                    out.push(a);
                }
                Err(err) => {
                    self.reset(&err).await;
                    return Err(err);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_split_honours_escapes() {
        assert_eq!(split_dn("uid=a\\,b,ou=people,dc=x"), ("uid=a\\,b", "ou=people,dc=x"));
        assert_eq!(split_dn("dc=x"), ("dc=x", ""));
    }

    /// Reads an RFC 4514 attribute value back: `\XX` hex pairs and `\c` escapes. Fails on a special
    /// character left unescaped (which would end or split the RDN).
    fn unescape(v: &str) -> Result<String, char> {
        let mut out = Vec::new();
        let mut chars = v.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let a = chars.next().ok_or('\\')?;
                    match (a.to_digit(16), chars.peek().and_then(|b| b.to_digit(16))) {
                        (Some(hi), Some(lo)) => {
                            chars.next();
                            out.push((hi * 16 + lo) as u8);
                        }
                        _ => out.extend(a.to_string().as_bytes()),
                    }
                }
                ',' | '+' | '"' | '<' | '>' | ';' | '\u{0}' => return Err(c),
                c => out.extend(c.to_string().as_bytes()),
            }
        }
        String::from_utf8(out).map_err(|_| '?')
    }

    /// Values with every character that is special in a DN or a filter, and NUL, go through our RDN and
    /// match-filter building: the RDN stays one RDN whose value reads back unchanged, and the filter stays
    /// one equality assertion on the whole value.
    #[test]
    fn rdn_and_match_filter_escape_hostile_values() {
        let hostile = "#a,b+c\"d\\e<f>g;h=i*k(l)m\u{0}n ";
        let r = rdn("uid", hostile);
        let dn = format!("{r},ou=people,dc=x");
        let (first, rest) = split_dn(&dn);
        assert_eq!((first, rest), (r.as_str(), "ou=people,dc=x"), "the value split the DN");
        let value = first.strip_prefix("uid=").unwrap();
        assert_eq!(unescape(value).as_deref(), Ok(hostile), "{value}");
        assert!(value.starts_with("\\23") && value.ends_with("\\20"), "leading # and trailing space: {value}");

        let f = match_filter("(&(objectClass=inetOrgPerson)(mail={match_email}))", hostile);
        assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
        // Only the template's own parentheses remain; the value's *, (, ), \ and NUL are hex pairs.
        assert_eq!((f.matches('(').count(), f.matches(')').count()), (3, 3), "{f}");
        assert!(!f.contains('*') && !f.contains('\u{0}'), "{f}");
        assert!(f.contains("\\2ak\\28l\\29m\\00n") && f.contains("\\5ce"), "{f}");
    }
}
