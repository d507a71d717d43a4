//! The LDAP target against a real 389 Directory Server, made for the test by tests/servers/ds389.sh in a
//! temporary directory on free loopback ports and stopped by pid: inetOrgPerson users and groupOfNames
//! groups over ldaps:// with the instance's CA, disabling by `nsAccountLock` (389's own lock: the user's
//! bind fails) and by a move to a disabled OU, a schema refusal as a dead letter, and reconciliation over
//! 389's paged search. Needs Debian's 389-ds-base (scripts/test.sh installs it); fails, never skips, without.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::collections::HashSet;

use common::servers::{ScriptServer, values as attr};
use common::{TestServer, expect_ok as send, patch, post_as, replace};
use ldap3::{Mod, Scope, SearchEntry};
use reqwest::Method;
use serde_json::{Value, json};

const USER_PW: &str = "Correct-Horse-1";

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

struct Ds(ScriptServer);

impl Ds {
    fn base(&self, ou: &str) -> String {
        format!("ou={ou},{}", self.0.get("base_dn"))
    }

    async fn admin(&self) -> ldap3::Ldap {
        let s = &self.0;
        s.bind(s.get("ldaps_url"), s.get("admin_dn"), s.get("admin_password")).await.expect("admin bind")
    }

    async fn entry(&self, dn: &str) -> Option<SearchEntry> {
        let mut l = self.admin().await;
        match l.search(dn, Scope::Base, "(objectClass=*)", vec!["*", "nsAccountLock"]).await.unwrap().success() {
            Ok((rs, _)) => rs.into_iter().next().map(SearchEntry::construct),
            Err(_) => None,
        }
    }

    /// The result code of binding as `dn` with the mapped password.
    async fn bind_rc(&self, dn: &str) -> u32 {
        match self.0.bind(self.0.get("ldaps_url"), dn, USER_PW).await {
            Ok(_) => 0,
            Err(rc) => rc,
        }
    }

    async fn add_person(&self, l: &mut ldap3::Ldap, uid: &str, mail: &str) {
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            ("objectClass", ["inetOrgPerson"].into()),
            ("uid", [uid].into()),
            ("cn", [uid].into()),
            ("sn", ["Local"].into()),
            ("mail", [mail].into()),
        ];
        l.add(&format!("uid={uid},{}", self.base("people")), attrs).await.unwrap().success().unwrap();
    }
}

fn target(ds: &Ds, disable: &str) -> String {
    let connection = format!("url = {:?}", ds.0.get("ldaps_url"));
    let head = ds.0.target_head("ds", &connection, ds.0.get("admin_dn"), "admin_password");
    format!(
        r#"{head}
delete_policy = "block"

[target.users]
base_dn = "{people}"
rdn = "uid={{userName}}"
object_classes = ["inetOrgPerson"]

[target.users.attributes]
cn = "{{name.givenName}} {{name.familyName}}"
sn = "name.familyName"
givenName = "name.givenName"
mail = "@match_email"
telephoneNumber = "phoneNumbers[type eq \"work\"].value"
userPassword = "'{USER_PW}'"

[target.disable]
{disable}

[target.groups]
base_dn = "{groups}"
object_class = "groupOfNames"
"#,
        people = ds.base("people"),
        groups = ds.base("groups"),
    )
}

fn user(user_name: &str, given: &str, family: &str) -> Value {
    json!({"userName": user_name, "active": true, "name": {"givenName": given, "familyName": family},
        "emails": [{"value": format!("{user_name}@example.org"), "primary": true}]})
}

async fn post(s: &TestServer, path: &str, body: &Value) -> String {
    post_as(s, &s.token, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inetorgperson_lock_move_and_paged_reconcile_against_389() {
    let ds = Ds(ScriptServer::start("ds389.sh", &[&free_port(), &free_port()]));
    let people = |uid: &str| format!("uid={uid},{}", ds.base("people"));
    ds.add_person(&mut ds.admin().await, "legacy", "Ann@Example.org").await;

    let lock = "method = \"attribute\"\nattribute = \"nsAccountLock\"\nvalue = \"true\"";
    let s = TestServer::start_daemon(&target(&ds, lock)).await;
    let ann = post(&s, "/Users", &user("ann", "Ann", "Lee")).await;
    let bob = post(&s, "/Users", &user("bob", "Bob", "Stone")).await;
    let staff =
        post(&s, "/Groups", &json!({"displayName": "Staff", "members": [{"value": ann}, {"value": bob}]})).await;
    s.wait_replayed().await;

    // Ann's entry was linked by mail; Bob's created as an inetOrgPerson and can bind.
    let legacy = ds.entry(&people("legacy")).await.unwrap();
    assert_eq!((attr(&legacy, "givenName"), attr(&legacy, "cn")), (vec!["Ann".into()], vec!["Ann Lee".into()]));
    assert!(ds.entry(&people("ann")).await.is_none(), "no duplicate");
    let bob_dn = people("bob");
    assert!(attr(&ds.entry(&bob_dn).await.expect("bob"), "objectClass").contains(&"inetOrgPerson".into()));
    assert_eq!(ds.bind_rc(&bob_dn).await, 0);
    let gdn = format!("cn=Staff,{}", ds.base("groups"));
    let mut both = vec![people("legacy"), bob_dn.clone()];
    both.sort();
    assert_eq!(attr(&ds.entry(&gdn).await.expect("group"), "member"), both);

    // nsAccountLock: 389 refuses the locked user's bind (unwillingToPerform, "Account inactivated"), and
    // accepts it again once the lock is gone.
    replace(&s, &format!("/Users/{bob}"), "active", json!("False")).await;
    s.wait_replayed().await;
    assert_eq!(attr(&ds.entry(&bob_dn).await.unwrap(), "nsAccountLock"), ["true"]);
    assert_eq!(ds.bind_rc(&bob_dn).await, 53, "a locked account cannot bind");
    replace(&s, &format!("/Users/{bob}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert!(attr(&ds.entry(&bob_dn).await.unwrap(), "nsAccountLock").is_empty());
    assert_eq!(ds.bind_rc(&bob_dn).await, 0, "unlocked");

    // 389's schema lets a groupOfNames be empty: members go one value at a time, the last one too.
    for who in [&ann, &bob] {
        let op = json!([{"op": "remove", "path": format!("members[value eq \"{who}\"]")}]);
        send(&s, Method::PATCH, &format!("/Groups/{staff}"), Some(&patch(op))).await;
    }
    s.wait_replayed().await;
    assert!(attr(&ds.entry(&gdn).await.unwrap(), "member").is_empty());
    let op = json!([{"op": "add", "path": "members", "value": [{"value": bob}]}]);
    send(&s, Method::PATCH, &format!("/Groups/{staff}"), Some(&patch(op))).await;

    // 389 checks attribute syntax: a telephone number that is not one is refused (invalidAttributeSyntax),
    // a permanent failure of that user's change, dead-lettered rather than retried forever.
    let mut odd = user("odd", "Odd", "Phone");
    odd["phoneNumbers"] = json!([{"value": "call #9 (ext. ☎)", "type": "work"}]);
    let odd = post(&s, "/Users", &odd).await;
    s.wait_replayed().await;
    let f = s.staging_rows(&format!("SELECT state, last_error FROM replay_failures WHERE resource_id = '{odd}'"));
    assert_eq!(f[0][0], "dead", "{f:?}");
    assert!(f[0][1].contains("LDAP result 21"), "{}", f[0][1]);

    // The move method: a deactivated user's entry goes to ou=disabled and comes back; the group's member
    // value follows (389's referential integrity plugin is off by default, so scim-bridge does it).
    let move_to = format!("method = \"move\"\ndisabled_base_dn = \"{}\"", ds.base("disabled"));
    let s = s.restart_daemon(&target(&ds, &move_to)).await;
    replace(&s, &format!("/Users/{bob}"), "active", json!("False")).await;
    s.wait_replayed().await;
    let moved = format!("uid=bob,{}", ds.base("disabled"));
    assert!(ds.entry(&bob_dn).await.is_none() && ds.entry(&moved).await.is_some(), "moved to ou=disabled");
    assert_eq!(attr(&ds.entry(&gdn).await.unwrap(), "member"), [moved]);
    replace(&s, &format!("/Users/{bob}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert!(ds.entry(&bob_dn).await.is_some(), "moved back");
    assert_eq!(attr(&ds.entry(&gdn).await.unwrap(), "member"), std::slice::from_ref(&bob_dn));

    // Reconciliation reads 389 with the paged results control: 1,200 entries of the application's own
    // (more than two pages) are all counted as foreign, and a drifted attribute is planned and repaired.
    {
        let mut l = ds.admin().await;
        for i in 0..1200 {
            ds.add_person(&mut l, &format!("local{i:04}"), &format!("local{i:04}@example.org")).await;
        }
        let mods = vec![Mod::Replace("sn", HashSet::from(["Hand-Edited"]))];
        l.modify(&bob_dn, mods).await.unwrap().success().unwrap();
    }
    let cfg = target(&ds, &move_to);
    let doc = s.reconcile(&cfg, &["--dry-run"]).await;
    assert_eq!(doc["plan"]["foreign"].as_array().map(Vec::len), Some(1200), "{}", doc["plan"]["counts"]);
    let actions = doc["plan"]["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["action"], "update", "{actions:?}");
    s.reconcile(&cfg, &[]).await;
    assert_eq!(attr(&ds.entry(&bob_dn).await.unwrap(), "sn"), ["Stone"]);
    s.stop().await;
}
