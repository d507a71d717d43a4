//! Reconciliation against a real OpenLDAP slapd (tests/common/slapd.rs): users and a group provisioned
//! through SCIM, the directory drifted behind the daemon's back (an entry deleted, an attribute changed,
//! a ppolicy lock removed from an inactive user and set on an active one, a member dropped, a foreign
//! entry added), the exact dry-run plan asserted, applied, and a second run planning nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::collections::HashSet;

use common::bin::{self, post, until};
use common::slapd::{ADMIN_DN, ADMIN_PW, SUFFIX, Slapd};
use ldap3::Mod;
use serde_json::{Value, json};

fn people(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

async fn modify(slapd: &Slapd, dn: &str, mods: Vec<Mod<&str>>) {
    slapd.admin().await.modify(dn, mods).await.unwrap().success().unwrap();
}

async fn plan(dir: &std::path::Path, cfg: &str, args: &[&str]) -> Value {
    let mut all = vec!["reconcile", "--json", "--config", cfg];
    all.extend(args);
    let o = bin::run(dir, &all).await;
    assert!(o.status.success(), "{}", bin::text(&o));
    serde_json::from_slice::<Value>(&o.stdout).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_drift_is_planned_and_repaired() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PW).unwrap();
    let extra = format!(
        r#"[[tenant]]
name = "t"
targets = ["dir"]

[[target]]
type = "ldap"
name = "dir"
url = "{url}"
bind_dn = "{ADMIN_DN}"
password_file = {pw:?}

[target.users]
base_dn = "ou=people,{SUFFIX}"
rdn = "uid={{userName}}"

[target.users.attributes]
cn = "{{name.givenName}} {{name.familyName}}"
sn = "name.familyName"
mail = "@match_email"
title = "title"

[target.disable]
method = "ppolicy"

[target.groups]
base_dn = "ou=groups,{SUFFIX}"
object_class = "groupOfNames"
"#,
        url = slapd.url()
    );
    let config = bin::config(dir.path(), &extra);
    let cfg = config.display().to_string();
    let token = bin::token(dir.path(), &config, "t").await;
    let d = bin::start(dir.path(), &["--config", &cfg], &[]).await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for name in ["ann", "bob", "carol", "dan", "eve"] {
        let body = json!({"userName": name, "emails": [{"value": format!("{name}@example.com"), "primary": true}],
            "title": "Staff", "name": {"givenName": name, "familyName": "Doe"}, "active": name != "carol"});
        let r = post(&d, &token, "/Users", &body).await;
        assert_eq!(r.status(), 201);
        ids.insert(name, r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let members: Vec<Value> = ["ann", "bob"].iter().map(|n| json!({"value": ids[n]})).collect();
    assert_eq!(post(&d, &token, "/Groups", &json!({"displayName": "Sales", "members": members})).await.status(), 201);
    let sales = format!("cn=Sales,ou=groups,{SUFFIX}");
    until("replayed", async || {
        slapd.entry(&sales).await.is_some_and(|g| g.attrs.get("member").is_some_and(|m| m.len() == 2))
    })
    .await;
    assert_eq!(bin::plan_actions(&plan(dir.path(), &cfg, &["--dry-run"]).await), Vec::<String>::new());

    {
        let mut l = slapd.admin().await;
        l.delete(&people("dan")).await.unwrap().success().unwrap();
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            ("objectClass", ["inetOrgPerson"].into()),
            ("uid", ["local-admin"].into()),
            ("cn", ["Local Admin"].into()),
            ("sn", ["Admin"].into()),
        ];
        l.add(&people("local-admin"), attrs).await.unwrap().success().unwrap();
    }
    modify(&slapd, &people("bob"), vec![Mod::Replace("title", ["Janitor"].into())]).await;
    modify(&slapd, &people("carol"), vec![Mod::Delete("pwdAccountLockedTime", HashSet::new())]).await;
    modify(&slapd, &people("eve"), vec![Mod::Replace("pwdAccountLockedTime", ["000001010000Z"].into())]).await;
    modify(&slapd, &sales, vec![Mod::Delete("member", [people("bob").as_str()].into())]).await;

    let doc = plan(dir.path(), &cfg, &["--dry-run"]).await;
    assert_eq!(
        bin::plan_actions(&doc),
        ["add_member Sales", "block carol", "create dan", "unblock eve", "update bob title"],
        "{doc}"
    );
    assert_eq!(doc["plan"]["foreign"][0]["key"], people("local-admin"), "{doc}");
    assert!(slapd.entry(&people("dan")).await.is_none(), "a dry run changes nothing");

    let doc = plan(dir.path(), &cfg, &[]).await;
    assert_eq!(doc["status"], "done", "{doc}");
    let bob = slapd.entry(&people("bob")).await.unwrap();
    assert_eq!(bob.attrs["title"], ["Staff"]);
    assert!(slapd.entry(&people("carol")).await.unwrap().attrs.contains_key("pwdAccountLockedTime"));
    assert!(!slapd.entry(&people("eve")).await.unwrap().attrs.contains_key("pwdAccountLockedTime"));
    assert_eq!(slapd.entry(&people("dan")).await.unwrap().attrs["mail"], ["dan@example.com"]);
    let members: HashSet<String> = slapd.entry(&sales).await.unwrap().attrs["member"].iter().cloned().collect();
    assert_eq!(members, [people("ann"), people("bob")].into_iter().collect());
    assert!(slapd.entry(&people("local-admin")).await.is_some(), "never touched");

    assert_eq!(
        bin::plan_actions(&plan(dir.path(), &cfg, &["--dry-run"]).await),
        Vec::<String>::new(),
        "a second run plans nothing"
    );
    d.stop().await;
}
