//! The LDAP target against a real Active Directory: a Samba AD domain controller provisioned for the test
//! by tests/servers/samba-dc.sh in a temporary directory (on its own loopback address, since AD's ports
//! are fixed), reached over ldaps:// and StartTLS with the DC's CA, bound as a service account with
//! rights on one OU only. Entra's cycle goes through SCIM to the daemon, and the directory is read back.
//! Needs root and Debian's samba packages (scripts/test.sh installs them); it fails, never skips, without.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::collections::HashSet;

use common::servers::{ScriptServer, values as attr};
use common::{TestServer, expect_ok as send, patch, post_as, replace};
use ldap3::{Mod, Scope, SearchEntry};
use reqwest::Method;
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// What the test sets as a user's password, to bind as that user.
const USER_PW: &str = "Test-Passw0rd-For-Binds!";
/// The users' UPN suffix, as in an Entra tenant (not the AD realm: Samba counts name@realm as taken by the
/// account whose sAMAccountName is name).
const DOMAIN: &str = "contoso.com";

struct Dc(ScriptServer);

impl Dc {
    async fn admin(&self) -> ldap3::Ldap {
        let s = &self.0;
        s.bind(s.get("ldaps_url"), s.get("admin_dn"), s.get("admin_password")).await.expect("admin bind")
    }

    async fn entry(&self, dn: &str) -> Option<SearchEntry> {
        let mut l = self.admin().await;
        match l.search(dn, Scope::Base, "(objectClass=*)", vec!["*"]).await.unwrap().success() {
            Ok((rs, _)) => rs.into_iter().next().map(SearchEntry::construct),
            Err(_) => None,
        }
    }

    async fn find(&self, filter: &str) -> Vec<SearchEntry> {
        let mut l = self.admin().await;
        let (rs, _) =
            l.search(self.0.get("base_dn"), Scope::Subtree, filter, vec!["*"]).await.unwrap().success().unwrap();
        rs.into_iter().map(SearchEntry::construct).collect()
    }

    /// The one entry with this mail.
    async fn by_mail(&self, mail: &str) -> SearchEntry {
        let found = self.find(&format!("(mail={mail})")).await;
        assert_eq!(found.len(), 1, "entries with mail {mail}: {:?}", found.iter().map(|e| &e.dn).collect::<Vec<_>>());
        found.into_iter().next().unwrap()
    }

    async fn set_password(&self, dn: &str) {
        let pw: Vec<u8> = format!("\"{USER_PW}\"").encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mods = vec![Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([pw]))];
        self.admin().await.modify(dn, mods).await.unwrap().success().unwrap();
    }

    /// The result code of binding as `dn` with the test's password.
    async fn bind_rc(&self, dn: &str) -> u32 {
        match self.0.bind(self.0.get("ldaps_url"), dn, USER_PW).await {
            Ok(_) => 0,
            Err(rc) => rc,
        }
    }

    async fn add_user(&self, dn: &str, sam: &str, mail: &str, upn: &str) {
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            ("objectClass", ["user"].into()),
            ("sAMAccountName", [sam].into()),
            ("mail", [mail].into()),
            ("userPrincipalName", [upn].into()),
        ];
        self.admin().await.add(dn, attrs).await.unwrap().success().unwrap();
    }
}

fn uac(e: &SearchEntry) -> u32 {
    attr(e, "userAccountControl")[0].parse().unwrap()
}

/// The AD target's configuration; `match_attr` is the attribute new users are linked by (mail or
/// userPrincipalName).
fn config(dc: &ScriptServer, connection: &str, policy: &str, match_attr: &str) -> String {
    let head = dc.target_head("ad", connection, dc.get("svc_dn"), "svc_password");
    format!(
        r#"{head}
delete_policy = "{policy}"

[target.users]
base_dn = "{ou}"
rdn = "cn={{displayName}}"
object_classes = ["top", "person", "organizationalPerson", "user"]
match_filter = "(&(objectClass=user)({match_attr}={{match_email}}))"
sam_account_name = "{{userName}}"
manager_attribute = "manager"

[target.users.attributes]
userPrincipalName = "userName"
givenName = "name.givenName"
sn = "name.familyName"
displayName = "displayName"
mail = "@match_email"
department = "{ENTERPRISE}:department"
title = "title"

[target.disable]
method = "ad"

[target.groups]
base_dn = "{groups}"
object_class = "group"
sam_account_name = "{{displayName}}"
"#,
        ou = dc.get("ou_dn"),
        groups = dc.get("groups_ou_dn"),
    )
}

fn user(user_name: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": user_name,
        "active": true,
        "displayName": format!("{given} {family}"),
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "title": "Engineer",
        ENTERPRISE: {"department": "Research"},
    })
}

async fn post(s: &TestServer, path: &str, body: &Value) -> String {
    post_as(s, &s.token, path, body).await
}

/// Sets (or with None removes) a user's manager as Entra does.
async fn set_manager(s: &TestServer, id: &str, manager: Option<&str>) {
    let path = format!("{ENTERPRISE}:manager");
    let op = match manager {
        Some(m) => json!([{"op": "Add", "path": path, "value": m}]),
        None => json!([{"op": "Remove", "path": path}]),
    };
    send(s, Method::PATCH, &format!("/Users/{id}"), Some(&patch(op))).await;
}

fn dead_letter(s: &TestServer, id: &str) -> String {
    let f = s.staging_rows(&format!("SELECT state, last_error FROM replay_failures WHERE resource_id = '{id}'"));
    assert_eq!(f.len(), 1, "one failure for {id}: {f:?}");
    assert_eq!(f[0][0], "dead", "{f:?}");
    f[0][1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_cycle_against_samba_ad() {
    let dc = Dc(ScriptServer::start("samba-dc.sh", &["127.0.0.2"]));
    let ou = dc.0.get("ou_dn").to_owned();
    // An account that exists before scim-bridge: linked by mail, not duplicated. Another, outside the OU
    // the service account may write, holds the sAMAccountName Jane's rule gives first.
    dc.add_user(&format!("CN=Ann Legacy,{ou}"), "ann", &format!("Ann.Legacy@{DOMAIN}"), &format!("ann@{DOMAIN}")).await;
    let base = dc.0.get("base_dn").to_owned();
    dc.add_user(&format!("CN=Other Jane,CN=Users,{base}"), "jane.young", "other.jane@elsewhere.test", "oj@x.test")
        .await;
    // Two accounts sharing an address: never guessed between. One known only by its UPN, for linking by
    // userPrincipalName.
    for (cn, sam) in [("Dup One", "dup1"), ("Dup Two", "dup2")] {
        dc.add_user(&format!("CN={cn},{ou}"), sam, &format!("dup@{DOMAIN}"), &format!("{sam}@{DOMAIN}")).await;
    }
    dc.add_user(&format!("CN=Upn Only,{ou}"), "upnonly", "old.address@elsewhere.test", &format!("upn.only@{DOMAIN}"))
        .await;
    // A UPN already in use elsewhere in the domain, for a new user to collide with.
    dc.add_user(&format!("CN=Taken,CN=Users,{base}"), "taken", "taken@elsewhere.test", &format!("clash@{DOMAIN}"))
        .await;

    let s =
        TestServer::start_daemon(&config(&dc.0, &format!("url = {:?}", dc.0.get("ldaps_url")), "block", "mail")).await;
    let mona = post(&s, "/Users", &user(&format!("mona.manager@{DOMAIN}"), "Mona", "Manager")).await;
    let ann = post(&s, "/Users", &user(&format!("ann.legacy@{DOMAIN}"), "Ann", "Legacy")).await;
    let jane = post(&s, "/Users", &user(&format!("jane.young@{DOMAIN}"), "Jane", "Young")).await;
    s.wait_replayed().await;
    set_manager(&s, &jane, Some(&mona)).await;
    s.wait_replayed().await;

    // Created as AD needs it: objectClass user, cn RDN, a unique sAMAccountName within 20 characters (the
    // first choice is taken in CN=Users, so the rule's alternative), UPN, attributes, the manager's DN,
    // and enabled (a random password was set in the add, so bit 0x2 is clear).
    let mona_dn = format!("CN=Mona Manager,{ou}");
    let jane_dn = format!("CN=Jane Young,{ou}");
    let failures = s.staging_rows("SELECT resource_id, state, last_error FROM replay_failures");
    let e = dc.entry(&jane_dn).await.unwrap_or_else(|| panic!("no entry for Jane; failures: {failures:?}"));
    assert!(attr(&e, "objectClass").iter().any(|c| c == "user"), "{:?}", attr(&e, "objectClass"));
    let sam = attr(&e, "sAMAccountName").remove(0);
    assert!(sam.starts_with("jane.young-") && sam.chars().count() == 15, "{sam}");
    assert_eq!(attr(&e, "userPrincipalName"), [format!("jane.young@{DOMAIN}")]);
    assert_eq!(
        [attr(&e, "givenName"), attr(&e, "sn"), attr(&e, "displayName"), attr(&e, "department"), attr(&e, "title")],
        [["Jane"], ["Young"], ["Jane Young"], ["Research"], ["Engineer"]].map(|v| v.map(str::to_owned).to_vec())
    );
    assert_eq!(attr(&e, "mail"), [format!("jane.young@{DOMAIN}")]);
    assert_eq!(attr(&e, "manager"), std::slice::from_ref(&mona_dn));
    assert_eq!(uac(&e), 0x200, "a normal, enabled account");
    assert_eq!(attr(&dc.entry(&mona_dn).await.unwrap(), "sAMAccountName"), ["mona.manager"]);
    // Ann's existing entry was linked by mail and updated, not duplicated; her sAMAccountName is hers.
    let legacy = dc.by_mail(&format!("ann.legacy@{DOMAIN}")).await;
    assert_eq!(legacy.dn, format!("CN=Ann Legacy,{ou}"));
    assert_eq!((attr(&legacy, "givenName"), attr(&legacy, "sAMAccountName")), (vec!["Ann".into()], vec!["ann".into()]));

    // Disabled through SCIM: bit 0x2 set by read-modify-write, the other bits kept (0x10000, "password
    // never expires", set here by hand), and a bind with the password the test set fails; re-enabled, it
    // succeeds.
    dc.set_password(&jane_dn).await;
    let mods = vec![Mod::Replace("userAccountControl", HashSet::from(["66048"]))];
    dc.admin().await.modify(&jane_dn, mods).await.unwrap().success().unwrap();
    assert_eq!(dc.bind_rc(&jane_dn).await, 0);
    replace(&s, &format!("/Users/{jane}"), "active", json!("False")).await;
    s.wait_replayed().await;
    assert_eq!(uac(&dc.entry(&jane_dn).await.unwrap()), 0x10202);
    assert_eq!(dc.bind_rc(&jane_dn).await, 49, "a disabled account cannot bind");
    replace(&s, &format!("/Users/{jane}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert_eq!(uac(&dc.entry(&jane_dn).await.unwrap()), 0x10200);
    assert_eq!(dc.bind_rc(&jane_dn).await, 0, "enabled again");

    // The manager changes, then goes: the attribute follows.
    set_manager(&s, &jane, Some(&ann)).await;
    s.wait_replayed().await;
    assert_eq!(attr(&dc.entry(&jane_dn).await.unwrap(), "manager"), [format!("CN=Ann Legacy,{ou}")]);
    set_manager(&s, &jane, None).await;
    s.wait_replayed().await;
    assert!(attr(&dc.entry(&jane_dn).await.unwrap(), "manager").is_empty());

    // Groups: objectClass group, global security groupType, sAMAccountName, members one value at a time,
    // empty allowed (no placeholder).
    let sales =
        post(&s, "/Groups", &json!({"displayName": "Sales", "members": [{"value": jane}, {"value": ann}]})).await;
    s.wait_replayed().await;
    let gdn = format!("CN=Sales,{}", dc.0.get("groups_ou_dn"));
    let g = dc.entry(&gdn).await.expect("group");
    assert!(attr(&g, "objectClass").iter().any(|c| c == "group"));
    assert_eq!((attr(&g, "groupType"), attr(&g, "sAMAccountName")), (vec!["-2147483646".into()], vec!["Sales".into()]));
    let mut both = vec![jane_dn.clone(), format!("CN=Ann Legacy,{ou}")];
    both.sort();
    assert_eq!(attr(&g, "member"), both);
    for who in [&ann, &jane] {
        let op = json!([{"op": "remove", "path": format!("members[value eq \"{who}\"]")}]);
        send(&s, Method::PATCH, &format!("/Groups/{sales}"), Some(&patch(op))).await;
    }
    s.wait_replayed().await;
    assert!(attr(&dc.entry(&gdn).await.unwrap(), "member").is_empty(), "an empty AD group, no placeholder");
    let op = json!([{"op": "add", "path": "members", "value": [{"value": jane}]}]);
    send(&s, Method::PATCH, &format!("/Groups/{sales}"), Some(&patch(op))).await;
    s.wait_replayed().await;
    assert_eq!(attr(&dc.entry(&gdn).await.unwrap(), "member"), std::slice::from_ref(&jane_dn));

    // A new display name renames the entry (modrdn); the membership follows.
    replace(&s, &format!("/Users/{jane}"), "displayName", json!("Jane Young-Smith")).await;
    s.wait_replayed().await;
    let jane_dn = format!("CN=Jane Young-Smith,{ou}");
    assert!(dc.entry(&format!("CN=Jane Young,{ou}")).await.is_none(), "old DN gone");
    assert_eq!(attr(&dc.entry(&jane_dn).await.expect("renamed"), "sAMAccountName"), std::slice::from_ref(&sam));
    assert_eq!(attr(&dc.entry(&gdn).await.unwrap(), "member"), std::slice::from_ref(&jane_dn));

    // AD's own refusal is permanent: a userPrincipalName another account holds is a dead letter naming
    // AD's reason, not an outage retried forever.
    let clash = post(&s, "/Users", &user(&format!("clash@{DOMAIN}"), "Clash", "Upn")).await;
    s.wait_replayed().await;
    let why = dead_letter(&s, &clash);
    assert!(why.contains("LDAP result"), "{why}");
    // Two entries with the user's address: a dead letter naming both.
    let dup = post(&s, "/Users", &user(&format!("dup@{DOMAIN}"), "Dup", "Licate")).await;
    s.wait_replayed().await;
    let why = dead_letter(&s, &dup);
    assert!(why.contains("CN=Dup One") && why.contains("CN=Dup Two"), "{why}");

    // DELETE with the block policy: the entry stays, disabled.
    send(&s, Method::DELETE, &format!("/Users/{mona}"), None).await;
    s.wait_replayed().await;
    assert_eq!(uac(&dc.entry(&mona_dn).await.expect("kept")) & 0x2, 0x2);

    // Reconciliation reads the directory back with AD's paged search: a title edited by hand is the only
    // drift planned (sAMAccountName, the password and the manager are not compared), and applying the
    // plan repairs it.
    let mods = vec![Mod::Replace("title", HashSet::from(["Edited By Hand"]))];
    dc.admin().await.modify(&jane_dn, mods).await.unwrap().success().unwrap();
    // A computer account in the OU is of class user too, but not a person: not even listed.
    let computer: Vec<(&str, HashSet<&str>)> =
        vec![("objectClass", ["computer"].into()), ("sAMAccountName", ["WS01$"].into())];
    dc.admin().await.add(&format!("CN=WS01,{ou}"), computer).await.unwrap().success().unwrap();
    let cfg = config(&dc.0, &format!("url = {:?}", dc.0.get("ldaps_url")), "block", "mail");
    let doc = s.reconcile(&cfg, &["--dry-run"]).await;
    let actions = doc["plan"]["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{doc}");
    let foreign: Vec<&str> =
        doc["plan"]["foreign"].as_array().unwrap().iter().filter_map(|f| f["key"].as_str()).collect();
    assert!(!foreign.is_empty() && foreign.iter().all(|k| !k.starts_with("CN=WS01")), "{foreign:?}");
    assert_eq!((&actions[0]["action"], &actions[0]["changes"][0]["field"]), (&json!("update"), &json!("title")));
    s.reconcile(&cfg, &[]).await;
    assert_eq!(attr(&dc.entry(&jane_dn).await.unwrap(), "title"), ["Engineer"]);

    // StartTLS on ldap:// with the delete policy: a user created and deleted, the group entry deleted.
    let starttls = format!("url = {:?}\nstarttls = true", dc.0.get("ldap_url"));
    let s = s.restart_daemon(&config(&dc.0, &starttls, "delete", "userPrincipalName")).await;
    let temp = post(&s, "/Users", &user(&format!("temp.worker@{DOMAIN}"), "Temp", "Worker")).await;
    s.wait_replayed().await;
    let temp_dn = format!("CN=Temp Worker,{ou}");
    assert_eq!(uac(&dc.entry(&temp_dn).await.expect("created over StartTLS")), 0x200);
    // Linked by userPrincipalName: the account keeps its name and takes the user's attributes.
    post(&s, "/Users", &user(&format!("upn.only@{DOMAIN}"), "Upn", "Person")).await;
    s.wait_replayed().await;
    let linked = dc.entry(&format!("CN=Upn Only,{ou}")).await.expect("linked entry");
    assert_eq!(
        (attr(&linked, "givenName"), attr(&linked, "mail")),
        (vec!["Upn".into()], vec![format!("upn.only@{DOMAIN}")])
    );
    assert!(dc.entry(&format!("CN=Upn Person,{ou}")).await.is_none(), "no duplicate");
    send(&s, Method::DELETE, &format!("/Users/{temp}"), None).await;
    send(&s, Method::DELETE, &format!("/Groups/{sales}"), None).await;
    s.wait_replayed().await;
    assert!(dc.entry(&temp_dn).await.is_none(), "deleted by policy");
    assert!(dc.entry(&gdn).await.is_none(), "group deleted");
    let audit = s.staging_rows("SELECT operations FROM audit WHERE operations LIKE '%unicodePwd%'");
    assert!(!audit.is_empty() && audit.iter().all(|r| r[0].contains("unicodePwd: (secret)")), "{audit:?}");
    s.stop().await;
}
