//! The LDAP target end to end: real SCIM requests to the daemon, replayed into a throwaway OpenLDAP slapd
//! (tests/common/slapd.rs), asserting on entries read back with ldap3.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::slapd::{ADMIN_DN, ADMIN_PW, SUFFIX, Slapd};
use common::{TestServer, expect_ok as send, patch, post_as, replace};
use ldap3::{LdapConnAsync, Scope, SearchEntry};
use reqwest::Method;
use serde_json::{Value, json};

const USER_PW: &str = "Correct-Horse-1";

async fn find(slapd: &Slapd, base: &str, filter: &str) -> Vec<SearchEntry> {
    let mut l = slapd.admin().await;
    let (rs, _) = l.search(base, Scope::Subtree, filter, vec!["*", "+"]).await.unwrap().success().unwrap();
    rs.into_iter().map(SearchEntry::construct).collect()
}

fn attr(e: &SearchEntry, name: &str) -> Vec<String> {
    let mut v = e.attrs.get(name).cloned().unwrap_or_default();
    v.sort();
    v
}

/// The result code of binding as a user.
async fn bind_rc(slapd: &Slapd, dn: &str, pw: &str) -> u32 {
    let (conn, mut l) = LdapConnAsync::new(&slapd.url()).await.expect("connect");
    ldap3::drive!(conn);
    l.simple_bind(dn, pw).await.unwrap().rc
}

fn config(slapd: &Slapd, disable: &str, policy: &str, classes: &str, extra_attrs: &str) -> String {
    let pw_file = slapd.dir.path().join("bind-password");
    std::fs::write(&pw_file, format!("{ADMIN_PW}\n")).unwrap();
    format!(
        r#"
[replay]
max_attempts = 2
backoff_initial_ms = 50
backoff_max_seconds = 1

[[tenant]]
name = "tenant-a"
targets = ["dir"]

[[target]]
type = "ldap"
name = "dir"
url = "{url}"
bind_dn = "{ADMIN_DN}"
password_file = {pw:?}
timeout_seconds = 2
delete_policy = "{policy}"

[target.users]
base_dn = "ou=people,{SUFFIX}"
rdn = "uid={{userName}}"
object_classes = [{classes}]

[target.users.attributes]
cn = "{{name.givenName}} {{name.familyName}}"
sn = "name.familyName"
givenName = "name.givenName"
mail = "@match_email"
title = "title"
userPassword = "'{USER_PW}'"
{extra_attrs}

[target.disable]
{disable}

[target.groups]
base_dn = "ou=groups,{SUFFIX}"
object_class = "groupOfNames"
"#,
        url = slapd.url(),
        pw = pw_file.display().to_string(),
    )
}

fn user(user_name: &str, given: &str, family: &str) -> Value {
    json!({"userName": user_name, "active": true, "name": {"givenName": given, "familyName": family}})
}

async fn post(s: &TestServer, path: &str, body: &Value) -> String {
    post_as(s, &s.token, path, body).await
}

fn people(uid: &str) -> String {
    format!("uid={},ou=people,{SUFFIX}", ldap3::dn_escape(uid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_groups_and_ppolicy_lock() {
    let slapd = Slapd::start();
    {
        let mut l = slapd.admin().await;
        for (uid, mail) in
            [("legacy", "Ann.Legacy@Example.com"), ("dup1", "dup@example.com"), ("dup2", "dup@example.com")]
        {
            let attrs: Vec<(&str, HashSet<&str>)> = vec![
                ("objectClass", ["inetOrgPerson"].into()),
                ("uid", [uid].into()),
                ("cn", ["Legacy Entry"].into()),
                ("sn", ["Entry"].into()),
                ("mail", [mail].into()),
            ];
            l.add(&people(uid), attrs).await.unwrap().success().unwrap();
        }
    }
    let s = TestServer::start_daemon(&config(&slapd, "method = \"ppolicy\"", "block", "\"inetOrgPerson\"", "")).await;

    // Link an existing entry by mail (case-insensitive): no new entry, attributes updated.
    let ann = post(&s, "/Users", &user("ann.legacy@example.com", "Ann", "Lee")).await;
    let bob = post(&s, "/Users", &user("bob@example.com", "Bob", "Stone")).await;
    s.wait_replayed().await;
    let legacy = slapd.entry(&people("legacy")).await.expect("legacy entry");
    assert_eq!(attr(&legacy, "givenName"), ["Ann"]);
    assert_eq!(attr(&legacy, "cn"), ["Ann Lee"]);
    assert!(slapd.entry(&people("ann.legacy@example.com")).await.is_none(), "no duplicate entry");
    let bob_dn = people("bob@example.com");
    let e = slapd.entry(&bob_dn).await.expect("bob created");
    assert_eq!(
        (attr(&e, "cn"), attr(&e, "sn"), attr(&e, "mail")),
        (vec!["Bob Stone".to_owned()], vec!["Stone".to_owned()], vec!["bob@example.com".to_owned()])
    );
    assert_eq!(bind_rc(&slapd, &bob_dn, USER_PW).await, 0);

    // Disable with Entra's "False": the ppolicy lock makes his bind fail; enabling lets it succeed again.
    replace(&s, &format!("/Users/{bob}"), "active", json!("False")).await;
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&bob_dn).await.unwrap(), "pwdAccountLockedTime"), ["000001010000Z"]);
    assert_eq!(bind_rc(&slapd, &bob_dn, USER_PW).await, 49, "a locked account cannot bind");
    replace(&s, &format!("/Users/{bob}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert!(attr(&slapd.entry(&bob_dn).await.unwrap(), "pwdAccountLockedTime").is_empty());
    assert_eq!(bind_rc(&slapd, &bob_dn, USER_PW).await, 0);

    // Attribute update; a new userName renames the entry (modrdn).
    replace(&s, &format!("/Users/{bob}"), "title", json!("Buyer")).await;
    replace(&s, &format!("/Users/{bob}"), "userName", json!("robert@example.com")).await;
    s.wait_replayed().await;
    assert!(slapd.entry(&bob_dn).await.is_none(), "old DN gone");
    let bob_dn = people("robert@example.com");
    let e = slapd.entry(&bob_dn).await.expect("renamed entry");
    assert_eq!(
        (attr(&e, "title"), attr(&e, "mail")),
        (vec!["Buyer".to_owned()], vec!["robert@example.com".to_owned()])
    );

    // Groups: member DNs, single-value modifications, the empty-group placeholder.
    let sales =
        post(&s, "/Groups", &json!({"displayName": "Sales", "members": [{"value": ann}, {"value": bob}]})).await;
    s.wait_replayed().await;
    let gdn = format!("cn=Sales,ou=groups,{SUFFIX}");
    let mut both = vec![people("legacy"), bob_dn.clone()];
    both.sort();
    assert_eq!(attr(&slapd.entry(&gdn).await.expect("group"), "member"), both);
    for (op, who) in [("remove", &ann), ("remove", &bob)] {
        send(
            &s,
            Method::PATCH,
            &format!("/Groups/{sales}"),
            Some(&patch(json!([{"op": op, "path": format!("members[value eq \"{who}\"]")}]))),
        )
        .await;
    }
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&gdn).await.unwrap(), "member"), ["cn=empty-membership-placeholder"]);
    send(
        &s,
        Method::PATCH,
        &format!("/Groups/{sales}"),
        Some(&patch(json!([{"op": "add", "path": "members", "value": [{"value": ann}]}]))),
    )
    .await;
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&gdn).await.unwrap(), "member"), [people("legacy")]);

    // LDAP-special characters in the RDN and in the match filter.
    let odd = r#"o'hara,+"\<>;=#*()@example.com"#;
    post(&s, "/Users", &user(odd, "Odd", "Chars")).await;
    s.wait_replayed().await;
    let e = slapd.entry(&people(odd)).await.expect("entry with escaped RDN");
    assert_eq!(attr(&e, "uid"), [odd]);
    let found = find(&slapd, &format!("ou=people,{SUFFIX}"), &format!("(mail={})", ldap3::ldap_escape(odd))).await;
    assert_eq!(found.len(), 1);
    // Sent again under another SCIM id, the same address links to the same entry instead of failing.
    assert_eq!(find(&slapd, &format!("ou=people,{SUFFIX}"), "(sn=Chars)").await.len(), 1);

    // Two entries share an address: a dead letter naming both DNs.
    let dup = post(&s, "/Users", &user("dup@example.com", "Dup", "Licate")).await;
    s.wait_replayed().await;
    let f = s.staging_rows(&format!("SELECT state, last_error FROM replay_failures WHERE resource_id = '{dup}'"));
    assert_eq!(f[0][0], "dead", "{f:?}");
    assert!(f[0][1].contains("uid=dup1") && f[0][1].contains("uid=dup2"), "{}", f[0][1]);

    // DELETE with the block policy: the entry stays, locked; the audit names the DN.
    send(&s, Method::DELETE, &format!("/Users/{bob}"), None).await;
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&bob_dn).await.expect("kept"), "pwdAccountLockedTime"), ["000001010000Z"]);
    let audit =
        s.staging_rows(&format!("SELECT outcome, downstream_key FROM audit WHERE resource_id = '{bob}' ORDER BY id"));
    assert_eq!(audit.last().unwrap(), &vec!["blocked".to_owned(), bob_dn.clone()]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_move_and_ad_representations() {
    let slapd = Slapd::start();
    // An attribute while disabled.
    let s = TestServer::start_daemon(&config(
        &slapd,
        "method = \"attribute\"\nattribute = \"employeeType\"\nvalue = \"blocked\"",
        "block",
        "\"inetOrgPerson\"",
        "",
    ))
    .await;
    let a = post(&s, "/Users", &user("attr@example.com", "At", "Tribute")).await;
    send(
        &s,
        Method::PATCH,
        &format!("/Users/{a}"),
        Some(&patch(json!([{"op": "replace", "value": {"active": false}}]))),
    )
    .await;
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&people("attr@example.com")).await.unwrap(), "employeeType"), ["blocked"]);
    send(
        &s,
        Method::PATCH,
        &format!("/Users/{a}"),
        Some(&patch(json!([{"op": "replace", "value": {"active": true}}]))),
    )
    .await;
    s.wait_replayed().await;
    assert!(attr(&slapd.entry(&people("attr@example.com")).await.unwrap(), "employeeType").is_empty());
    s.stop().await;

    // A move to a disabled OU and back.
    let s = TestServer::start_daemon(&config(
        &slapd,
        &format!("method = \"move\"\ndisabled_base_dn = \"ou=disabled,{SUFFIX}\""),
        "block",
        "\"inetOrgPerson\"",
        "",
    ))
    .await;
    let m = post(&s, "/Users", &user("mover@example.com", "Mo", "Ver")).await;
    post(&s, "/Groups", &json!({"displayName": "Movers", "members": [{"value": m}]})).await;
    let movers = format!("cn=Movers,ou=groups,{SUFFIX}");
    replace(&s, &format!("/Users/{m}"), "active", json!("False")).await;
    s.wait_replayed().await;
    assert!(slapd.entry(&people("mover@example.com")).await.is_none());
    assert!(
        slapd.entry(&format!("uid=mover@example.com,ou=disabled,{SUFFIX}")).await.is_some(),
        "moved to the disabled OU"
    );
    assert_eq!(
        attr(&slapd.entry(&movers).await.unwrap(), "member"),
        [format!("uid=mover@example.com,ou=disabled,{SUFFIX}")]
    );
    replace(&s, &format!("/Users/{m}"), "active", json!("True")).await;
    s.wait_replayed().await;
    assert!(slapd.entry(&people("mover@example.com")).await.is_some(), "moved back");
    assert_eq!(
        attr(&slapd.entry(&movers).await.unwrap(), "member"),
        [people("mover@example.com")],
        "membership followed"
    );
    s.stop().await;

    // Active Directory's userAccountControl: only bit 0x2 changes (0x10200 = normal account whose password
    // does not expire), and DELETE with the delete policy removes the entry.
    let s = TestServer::start_daemon(&config(
        &slapd,
        // The stand-in has no unicodePwd and the connection is plain: no initial password.
        "method = \"ad\"\ninitial_password = \"none\"",
        "delete",
        "\"inetOrgPerson\", \"adCompatUser\"",
        "userAccountControl = \"'66048'\"",
    ))
    .await;
    let d = post(&s, "/Users", &user("ad@example.com", "Active", "Directory")).await;
    s.wait_replayed().await;
    let dn = people("ad@example.com");
    assert_eq!(attr(&slapd.entry(&dn).await.unwrap(), "userAccountControl"), ["66048"]);
    replace(&s, &format!("/Users/{d}"), "active", json!("False")).await;
    s.wait_replayed().await;
    // The mapped constant is written first, then the bit is set on what is there.
    assert_eq!(attr(&slapd.entry(&dn).await.unwrap(), "userAccountControl"), ["66050"]);
    send(&s, Method::DELETE, &format!("/Users/{d}"), None).await;
    s.wait_replayed().await;
    assert!(slapd.entry(&dn).await.is_none(), "deleted by policy");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing() {
    let mut slapd = Slapd::start();
    let s = TestServer::start_daemon(&config(&slapd, "method = \"ppolicy\"", "block", "\"inetOrgPerson\"", "")).await;
    let first = post(&s, "/Users", &user("first@example.com", "First", "One")).await;
    s.wait_replayed().await;
    slapd.stop();
    for n in 0..5 {
        post(&s, "/Users", &user(&format!("during{n}@example.com"), "During", &format!("{n}"))).await;
    }
    for title in ["t1", "t2", "t3"] {
        replace(&s, &format!("/Users/{first}"), "title", json!(title)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        s.staging_rows("SELECT 1 FROM replay_failures WHERE state = 'dead'").is_empty(),
        "an outage never makes dead letters"
    );
    slapd.run();
    s.wait_replayed().await;
    assert_eq!(find(&slapd, &format!("ou=people,{SUFFIX}"), "(givenName=During)").await.len(), 5);
    assert_eq!(attr(&slapd.entry(&people("first@example.com")).await.unwrap(), "title"), ["t3"]);
    s.stop().await;
}

/// ldaps:// and StartTLS through rustls, trusting the directory's private CA from `ca_file`; without it the
/// certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections() {
    let slapd = Slapd::start_tls();
    let ca = slapd.dir.path().join("ca.pem").display().to_string();
    let tls_port = slapd.tls_port.unwrap();
    let base = config(&slapd, "method = \"ppolicy\"", "block", "\"inetOrgPerson\"", "");
    let plain = format!("url = \"{}\"", slapd.url());
    for (name, url_line, extra) in [
        ("ldaps", format!("url = \"ldaps://127.0.0.1:{tls_port}\""), format!("ca_file = {ca:?}")),
        ("starttls", plain.clone(), format!("starttls = true\nca_file = {ca:?}")),
    ] {
        let cfg = base.replace(&plain, &format!("{url_line}\n{extra}"));
        let s = TestServer::start_daemon(&cfg).await;
        post(&s, "/Users", &user(&format!("{name}@example.com"), "Tls", name)).await;
        s.wait_replayed().await;
        assert!(slapd.entry(&people(&format!("{name}@example.com"))).await.is_some(), "{name}: entry written over TLS");
        s.stop().await;
    }
    // Without the CA the server's certificate is not trusted: the target reports it and is not used.
    let cfg = base.replace(&plain, &format!("url = \"ldaps://127.0.0.1:{tls_port}\""));
    let config = scim_bridge::config::Config::parse(&format!(
        "[staging]\npath = \"{}/x.db\"\n{cfg}",
        slapd.dir.path().display()
    ))
    .unwrap();
    let bindings = scim_bridge::daemon::bindings(&config).unwrap();
    let err = bindings[0].target.check().await.unwrap_err().report();
    assert!(err.to_lowercase().contains("certificate") || err.to_lowercase().contains("issuer"), "{err}");
}

/// posixGroup (memberUid, gidNumbers handed out one by one) and groupOfUniqueNames (uniqueMember DNs, the
/// placeholder while empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posix_and_unique_groups() {
    let slapd = Slapd::start();
    let base = config(&slapd, "method = \"ppolicy\"", "block", "\"inetOrgPerson\"", "");
    let posix = base.replace("object_class = \"groupOfNames\"", "object_class = \"posixGroup\"\ngid_start = 5000");
    let s = TestServer::start_daemon(&posix).await;
    let a = post(&s, "/Users", &user("pa@example.com", "Pa", "One")).await;
    let b = post(&s, "/Users", &user("pb@example.com", "Pb", "Two")).await;
    let g1 = post(&s, "/Groups", &json!({"displayName": "devs", "members": [{"value": a}, {"value": b}]})).await;
    post(&s, "/Groups", &json!({"displayName": "ops"})).await;
    s.wait_replayed().await;
    let devs = slapd.entry(&format!("cn=devs,ou=groups,{SUFFIX}")).await.expect("posix group");
    assert_eq!(attr(&devs, "memberUid"), ["pa@example.com", "pb@example.com"]);
    let ops = slapd.entry(&format!("cn=ops,ou=groups,{SUFFIX}")).await.expect("empty posix group");
    let mut gids = vec![attr(&devs, "gidNumber")[0].clone(), attr(&ops, "gidNumber")[0].clone()];
    gids.sort();
    assert_eq!(gids, ["5000", "5001"], "distinct gidNumbers from gid_start");
    assert!(attr(&ops, "memberUid").is_empty(), "a posixGroup may be empty");
    send(
        &s,
        Method::PATCH,
        &format!("/Groups/{g1}"),
        Some(&patch(json!([{"op": "Remove", "path": format!("members[value eq \"{a}\"]")}]))),
    )
    .await;
    s.wait_replayed().await;
    assert_eq!(
        attr(&slapd.entry(&format!("cn=devs,ou=groups,{SUFFIX}")).await.unwrap(), "memberUid"),
        ["pb@example.com"]
    );
    s.stop().await;

    let unique = base.replace("object_class = \"groupOfNames\"", "object_class = \"groupOfUniqueNames\"");
    let s = TestServer::start_daemon(&unique).await;
    let c = post(&s, "/Users", &user("uc@example.com", "Uc", "Three")).await;
    let g = post(&s, "/Groups", &json!({"displayName": "uniq", "members": [{"value": c}]})).await;
    s.wait_replayed().await;
    let dn = format!("cn=uniq,ou=groups,{SUFFIX}");
    assert_eq!(attr(&slapd.entry(&dn).await.unwrap(), "uniqueMember"), [people("uc@example.com")]);
    send(
        &s,
        Method::PATCH,
        &format!("/Groups/{g}"),
        Some(&patch(json!([{"op": "Remove", "path": "members", "value": [{"value": c}]}]))),
    )
    .await;
    s.wait_replayed().await;
    assert_eq!(attr(&slapd.entry(&dn).await.unwrap(), "uniqueMember"), ["cn=empty-membership-placeholder"]);
    s.stop().await;
}
