//! The corners generic SCIM clients and conformance tools use (issue: accept every well-formed client),
//! over real HTTP: the match-email rule only where a bound target needs it, pending group members,
//! endpoint names in any case and with a trailing slash, `.search`, removing a whole extension, the
//! manager reference, sorting, and 501 for what is not offered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use common::{TestServer, decode, patch, send_as};
use reqwest::Method;
use scim_bridge::http::ScimSettings;
use scim_bridge::scim::Rules;
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn created(s: &TestServer, token: &str, path: &str, body: &Value) -> Value {
    let (status, v) = send_as(s, token, Method::POST, path, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

async fn post_search(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let resp = s
        .req(Method::POST, path)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    decode(resp).await
}

fn pending(s: &TestServer) -> Vec<Vec<String>> {
    s.staging_rows("SELECT member_id FROM pending_members ORDER BY member_id")
}

/// The Tribe CRM rule (a user needs an email-shaped userName or an email) holds only for a tenant bound
/// to a target that links by email, and that tenant's /Schemas says so; other tenants accept RFC 7643's
/// minimum, `userName` alone. Checked on the real daemon with the embedded demo's kind of target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_rule_belongs_to_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.db");
    scim_bridge::daemon::prepare_demo_database(&app).unwrap();
    let cfg = format!(
        "[[tenant]]\nname = \"tenant-a\"\ntargets = [\"app\"]\n[[target]]\ntype = \"sql\"\nname = \"app\"\nurl = \"sqlite://{}\"\n\
         [target.users]\ntable = \"employees\"\nkey = \"id\"\nmatch_column = \"email\"\n[target.users.columns]\nemail = \"@match_email\"\n",
        app.display()
    );
    let s = TestServer::start_daemon(&cfg).await;
    let bound = s.token.clone();
    let unbound = s.token_for("tenant-b");
    let jdoe = json!({"userName": "jdoe"});
    let (status, v) = send_as(&s, &bound, Method::POST, "/Users", Some(&jdoe)).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    let u = created(&s, &unbound, "/Users", &jdoe).await;
    assert_eq!(u["userName"], "jdoe");

    // The same rule for a PATCH that removes the only email.
    let ann = created(&s, &bound, "/Users", &json!({"userName": "ann", "emails": [{"value": "ann@x.com"}]})).await;
    let remove = patch(json!([{"op": "remove", "path": "emails"}]));
    let (status, v) =
        send_as(&s, &bound, Method::PATCH, &format!("/Users/{}", ann["id"].as_str().unwrap()), Some(&remove)).await;
    assert_eq!(status, 400, "{v}");
    let bob = created(&s, &unbound, "/Users", &json!({"userName": "bob", "emails": [{"value": "bob@x.com"}]})).await;
    let (status, v) =
        send_as(&s, &unbound, Method::PATCH, &format!("/Users/{}", bob["id"].as_str().unwrap()), Some(&remove)).await;
    assert_eq!(status, 200, "{v}");

    // Discoverable: the bound tenant's User schema describes the rule; the other's does not.
    let describes = |v: &Value| {
        v["attributes"].as_array().unwrap().iter().any(|a| {
            a["name"] == "emails" && a["description"].as_str().unwrap().contains("links existing accounts by email")
        })
    };
    let (_, v) = send_as(&s, &bound, Method::GET, "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", None).await;
    assert!(describes(&v), "{v}");
    let (_, v) = send_as(&s, &unbound, Method::GET, "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", None).await;
    assert!(!describes(&v), "{v}");
    s.stop().await;
}

/// Members that are not users of the tenant are kept pending instead of failing the group; they are never
/// resolved against another tenant; a strict tenant refuses them.
#[tokio::test]
async fn unknown_members_are_pending() {
    let s = TestServer::start().await;
    let other = s.token_for("tenant-b");
    let theirs = created(&s, &other, "/Users", &common::user("theirs@x.com")).await;
    let theirs = theirs["id"].as_str().unwrap();
    let ann = created(&s, &s.token, "/Users", &common::user("ann@x.com")).await;
    let ann = ann["id"].as_str().unwrap();
    let g =
        json!({"displayName": "Team", "members": [{"value": ann}, {"value": "never-provisioned"}, {"value": theirs}]});
    let team = created(&s, &s.token, "/Groups", &g).await;
    assert_eq!(team["members"].as_array().unwrap().len(), 1, "{team}");
    assert_eq!(team["members"][0]["value"], ann);
    let mut expected = vec![vec!["never-provisioned".to_owned()], vec![theirs.to_owned()]];
    expected.sort();
    assert_eq!(pending(&s), expected, "another tenant's user is not this tenant's member");

    let path = format!("/Groups/{}", team["id"].as_str().unwrap());
    let add = patch(json!([{"op": "add", "path": "members", "value": [{"value": "also-unknown"}]}]));
    let (status, v) = s.send(Method::PATCH, &path, Some(&add)).await;
    assert_eq!(status, 204, "{v}");
    assert_eq!(pending(&s).len(), 3);
    let remove = patch(json!([{"op": "remove", "path": "members[value eq \"never-provisioned\"]"}]));
    let (status, _) = s.send(Method::PATCH, &path, Some(&remove)).await;
    assert_eq!(status, 204);
    assert_eq!(pending(&s).len(), 2);
    // A PUT replaces the pending set with its own unknown ids.
    let put = json!({"displayName": "Team", "members": [{"value": ann}, {"value": "x-1"}]});
    let (status, v) = s.send(Method::PUT, &path, Some(&put)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(pending(&s), [["x-1".to_owned()]]);
    s.stop().await;

    let mut settings = ScimSettings::default();
    settings.rules.default.strict = true;
    let s = TestServer::start_with(settings).await;
    let (status, v) =
        s.send(Method::POST, "/Groups", Some(&json!({"displayName": "G", "members": [{"value": "nope"}]}))).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    s.stop().await;
}

/// The manager reference follows the members' rule: kept as given unless the tenant is strict.
#[tokio::test]
async fn manager_references_follow_the_same_rule() {
    let body = json!({"userName": "e@x.com", ENTERPRISE: {"manager": {"value": "not-yet"}}});
    let s = TestServer::start().await;
    let u = created(&s, &s.token, "/Users", &body).await;
    assert_eq!(u[ENTERPRISE]["manager"]["value"], "not-yet");
    s.stop().await;
    let mut settings = ScimSettings::default();
    settings.rules.default = Rules { strict: true, ..Default::default() };
    let s = TestServer::start_with(settings).await;
    let (status, v) = s.send(Method::POST, "/Users", Some(&body)).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    let boss = created(&s, &s.token, "/Users", &json!({"userName": "boss@x.com"})).await;
    let ok = json!({"userName": "e@x.com", ENTERPRISE: {"manager": {"value": boss["id"]}}});
    created(&s, &s.token, "/Users", &ok).await;
    s.stop().await;
}

#[tokio::test]
async fn endpoint_names_in_any_case_and_trailing_slashes() {
    let s = TestServer::start().await;
    let u = created(&s, &s.token, "/users/", &common::user("case@x.com")).await;
    let id = u["id"].as_str().unwrap();
    for path in [
        "/users".to_owned(),
        "/Users/".to_owned(),
        "/Users/?filter=userName%20eq%20%22case@x.com%22".to_owned(),
        format!("/USERS/{id}/"),
        "/serviceproviderconfig".to_owned(),
        "/schemas/".to_owned(),
        "/resourcetypes/User".to_owned(),
    ] {
        let (status, v) = s.send(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {v}");
    }
    let (_, v) = s.send(Method::GET, "/users?filter=userName%20eq%20%22case@x.com%22", None).await;
    assert_eq!(v["totalResults"], 1);
    let (status, _) = s.send(Method::GET, &format!("/Users/{}", id.to_uppercase()), None).await;
    assert_eq!(status, 404, "ids keep their case");
    s.stop().await;
}

#[tokio::test]
async fn search_with_post() {
    let s = TestServer::start().await;
    for n in ["a", "b", "c", "d"] {
        created(&s, &s.token, "/Users", &common::user(&format!("{n}@x.com"))).await;
    }
    created(&s, &s.token, "/Groups", &json!({"displayName": "Grp"})).await;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName sw \"b\" or userName sw \"c\"", "attributes": ["userName"], "startIndex": 2, "count": 5,
    });
    let (status, v) = post_search(&s, "/Users/.search", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["totalResults"].as_u64(), v["startIndex"].as_u64()), (Some(2), Some(2)));
    assert_eq!(v["Resources"][0]["userName"], "c@x.com");
    assert!(v["Resources"][0].get("emails").is_none(), "attributes applied");
    let (get_status, get) = s.send(Method::GET, "/Users?filter=userName%20sw%20%22b%22%20or%20userName%20sw%20%22c%22&attributes=userName&startIndex=2&count=5", None).await;
    assert_eq!((get_status, get), (200, v), "the same answer as GET");
    let (status, v) = post_search(&s, "/Users/.search", json!({"filtre": "userName sw \"a\""})).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidSyntax")), "{v}");
    let (status, _) = s.send(Method::GET, "/Users/.search", None).await;
    assert_eq!(status, 405);
    // At the root: users, then groups, paged as one list.
    let resp = s
        .req(Method::POST, "/.search")
        .header("content-type", "application/scim+json")
        .body("{\"count\": 3, \"startIndex\": 3}")
        .send()
        .await
        .unwrap();
    let (status, v) = decode(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["totalResults"], 5);
    let types: Vec<&str> =
        v["Resources"].as_array().unwrap().iter().map(|r| r["meta"]["resourceType"].as_str().unwrap()).collect();
    assert_eq!(types, ["User", "User", "Group"]);
    // A filter on a user attribute covers users only at the root.
    let resp = s
        .req(Method::POST, "/.search")
        .header("content-type", "application/scim+json")
        .body("{\"filter\": \"userName eq \\\"a@x.com\\\"\"}")
        .send()
        .await
        .unwrap();
    let (_, v) = decode(resp).await;
    assert_eq!(v["totalResults"], 1, "{v}");
    let resp = s
        .req(Method::POST, "/Groups/.search")
        .header("content-type", "application/scim+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (_, v) = decode(resp).await;
    assert_eq!(v["totalResults"], 1, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn removing_a_whole_extension() {
    let s = TestServer::start().await;
    let u = created(
        &s,
        &s.token,
        "/Users",
        &json!({"userName": "x@x.com", ENTERPRISE: {"department": "Ops", "costCenter": "7"}}),
    )
    .await;
    let path = format!("/Users/{}", u["id"].as_str().unwrap());
    let (status, v) = s.send(Method::PATCH, &path, Some(&patch(json!([{"op": "remove", "path": ENTERPRISE}])))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get(ENTERPRISE).is_none(), "{v}");
    assert!(!v["schemas"].as_array().unwrap().contains(&json!(ENTERPRISE)), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn sorting_and_what_is_not_offered() {
    let s = TestServer::start().await;
    for (name, display, ext) in [
        ("cat@x.com", Some("Zed"), Some("E2")),
        ("ant@x.com", None, Some("E3")),
        ("bee@x.com", Some("amy"), None),
        ("dog@x.com", Some("Bo"), Some("E1")),
    ] {
        let mut u = common::user(name);
        if let Some(d) = display {
            u["displayName"] = json!(d);
        }
        if let Some(e) = ext {
            u["externalId"] = json!(e);
        }
        created(&s, &s.token, "/Users", &u).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap().to_owned()).collect()
    };
    let get = |q: &'static str| s.send(Method::GET, format!("/Users?{q}").leak(), None);
    let (_, v) = get("sortBy=userName").await;
    assert_eq!(names(&v), ["ant@x.com", "bee@x.com", "cat@x.com", "dog@x.com"]);
    let (_, v) = get("sortBy=userName&sortOrder=descending&startIndex=2&count=2").await;
    assert_eq!(names(&v), ["cat@x.com", "bee@x.com"]);
    let (_, v) = get("sortBy=displayName").await;
    assert_eq!(names(&v), ["bee@x.com", "dog@x.com", "cat@x.com", "ant@x.com"], "case-insensitive, missing last");
    let (_, v) = get("sortBy=displayName&sortOrder=descending").await;
    assert_eq!(names(&v), ["ant@x.com", "cat@x.com", "dog@x.com", "bee@x.com"], "missing first when descending");
    let (_, v) = get("sortBy=externalId").await;
    assert_eq!(names(&v), ["dog@x.com", "cat@x.com", "ant@x.com", "bee@x.com"]);
    let (_, v) = get("sortBy=meta.created&sortOrder=descending").await;
    assert_eq!(names(&v), ["dog@x.com", "bee@x.com", "ant@x.com", "cat@x.com"]);
    let bee = get("filter=userName%20eq%20%22bee@x.com%22").await.1["Resources"][0]["id"].as_str().unwrap().to_owned();
    common::replace(&s, &format!("/Users/{bee}"), "title", json!("Keeper")).await;
    let (_, v) = get("sortBy=meta.lastModified&sortOrder=descending&count=1").await;
    assert_eq!(names(&v), ["bee@x.com"]);
    let (_, v) = get("filter=userName%20ew%20%22.com%22&sortBy=displayName&startIndex=3").await;
    assert_eq!(
        (v["totalResults"].as_u64(), names(&v)),
        (Some(4), vec!["cat@x.com".to_owned(), "ant@x.com".to_owned()])
    );

    let (status, v) = get("sortBy=title").await;
    assert_eq!(status, 501, "{v}");
    assert_eq!(v["status"], "501");
    let (status, _) = get("sortBy=shoeSize").await;
    assert_eq!(status, 400);
    let (_, v) = s.send(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(v["sort"]["supported"], true);
    for path in ["/Bulk", "/Me"] {
        let (status, v) = s.send(Method::POST, path, Some(&json!({}))).await;
        assert_eq!((status, v["status"].as_str()), (501, Some("501")), "{path}: {v}");
    }
    s.stop().await;
}
