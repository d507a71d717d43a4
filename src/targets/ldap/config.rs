//! Configuration of an LDAP target (`[[target]]` with `type = "ldap"`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::targets::DeletePolicy;
use crate::targets::reconcile::ReconcileConfig;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapTargetConfig {
    pub name: String,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an ldap:// connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file of the CA certificates to trust for TLS, instead of the system's trust store (for a
    /// directory whose certificate comes from a private CA).
    pub ca_file: Option<PathBuf>,
    /// The DN to bind as (simple bind).
    pub bind_dn: String,
    /// Exactly one of password_file (a file holding the password) and password_env (an environment variable).
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// Seconds for connecting and for each operation before the directory counts as unreachable.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// "block" (default: apply the disable representation, keep the entry) or "delete".
    #[serde(default)]
    pub delete_policy: DeletePolicy,
    pub users: LdapUsers,
    #[serde(default)]
    pub disable: Disable,
    pub groups: Option<LdapGroups>,
    /// Scheduled reconciliation and its limits.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
}

fn default_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapUsers {
    /// Where user entries are created.
    pub base_dn: String,
    /// The RDN: `attribute={template}`, e.g. `uid={userName}` or `cn={displayName}`. A change of the value
    /// renames the entry (modrdn).
    pub rdn: String,
    #[serde(default = "default_user_classes")]
    pub object_classes: Vec<String>,
    /// The filter that finds an existing entry for a new user, `{match_email}` replaced by the match email
    /// (escaped per RFC 4515).
    #[serde(default = "default_match")]
    pub match_filter: String,
    /// attribute = source, in the same mapping language as the SQL target's columns.
    pub attributes: BTreeMap<String, String>,
    /// Active Directory: a template for `sAMAccountName`, set when the entry is created and not changed
    /// after (it is the user's logon name). The value is cut down to what AD accepts (see
    /// `targets::ldap::ad`): up to its first `@`, without the characters AD forbids, at most 20
    /// characters, and made unique in the domain with a suffix derived from the SCIM id.
    pub sam_account_name: Option<String>,
    /// The attribute that holds the DN of the user's manager (`manager`), from the enterprise extension's
    /// `manager.value` when the manager is provisioned in this directory; removed when the user has no
    /// manager or the manager is not provisioned here.
    pub manager_attribute: Option<String>,
}

fn default_user_classes() -> Vec<String> {
    vec!["inetOrgPerson".into()]
}
fn default_match() -> String {
    "(mail={match_email})".into()
}

/// How a deactivated user is represented.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Disable {
    /// Set `attribute: value` while disabled, remove it when enabled (e.g. employeeType: blocked).
    Attribute { attribute: String, value: String },
    /// OpenLDAP ppolicy: pwdAccountLockedTime 000001010000Z (locked until an administrator unlocks).
    #[default]
    Ppolicy,
    /// Active Directory: bit 0x2 (ACCOUNTDISABLE) of userAccountControl, other bits kept.
    Ad {
        /// What a new account gets as its password (AD keeps an account without one disabled).
        #[serde(default)]
        initial_password: InitialPassword,
    },
    /// Move the entry below another base DN while disabled, and back.
    Move { disabled_base_dn: String },
}

/// The password an Active Directory account gets when scim-bridge creates it.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialPassword {
    /// A random password of 32 characters from the four character classes, set as `unicodePwd` in the
    /// add itself (AD accepts it only over TLS), never stored or logged: the account can be enabled, and
    /// its person sets a password through the organisation's reset process or Entra password writeback.
    #[default]
    Random,
    /// No password: for a directory that only imitates AD's userAccountControl. A real AD refuses to
    /// enable an account without a password (0000052D), so enabling becomes a dead letter.
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapGroups {
    pub base_dn: String,
    /// `cn={displayName}`.
    #[serde(default = "default_group_rdn")]
    pub rdn: String,
    /// groupOfNames, groupOfUniqueNames, posixGroup, or group (Active Directory).
    #[serde(default = "default_group_class")]
    pub object_class: String,
    /// Active Directory (object_class = "group"): groupType; the default -2147483646 is a global security
    /// group.
    #[serde(default = "default_group_type")]
    pub group_type: i32,
    /// Active Directory: a template for the group's `sAMAccountName` (same rule as users', at most 256
    /// characters), set at creation.
    pub sam_account_name: Option<String>,
    /// groupOfNames and groupOfUniqueNames need at least one member: this DN stands in while a group has
    /// none, and is removed when a real member arrives.
    #[serde(default = "default_empty_member")]
    pub empty_member: String,
    /// posixGroup: the first gidNumber handed out; later groups get the highest in use plus one.
    #[serde(default = "default_gid")]
    pub gid_start: u32,
}

fn default_group_rdn() -> String {
    "cn={displayName}".into()
}
fn default_group_class() -> String {
    "groupOfNames".into()
}
fn default_group_type() -> i32 {
    // ACCOUNT_GROUP (0x2) | SECURITY_ENABLED (0x80000000).
    -2_147_483_646
}
fn default_empty_member() -> String {
    "cn=empty-membership-placeholder".into()
}
fn default_gid() -> u32 {
    10000
}
