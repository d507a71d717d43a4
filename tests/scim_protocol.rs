//! The SCIM surface over real HTTP: authentication and tenant isolation, validation up front (nothing
//! stored on a bad request), filters, paging, projection, ETags, PATCH atomicity and discovery endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use common::{TestServer, decode, send_as, user};
use reqwest::Method;
use serde_json::{Value, json};

async fn create(s: &TestServer, body: &Value) -> Value {
    let (status, v) = s.send(Method::POST, "/Users", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

async fn total(s: &TestServer, path: &str) -> u64 {
    let (status, v) = s.send(Method::GET, path, None).await;
    assert_eq!(status, 200, "{v}");
    v["totalResults"].as_u64().unwrap()
}

fn journal_count(s: &TestServer) -> i64 {
    let conn = rusqlite::Connection::open(&s.staging_path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_scim_error() {
    let s = TestServer::start().await;
    let resp = s.client.get(s.url("/Users")).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"scim-bridge\"");
    let (status, v) = decode(resp).await;
    assert_eq!(status, 401);
    assert_eq!(v["status"], "401");
    assert_eq!(v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    let (status, _) = send_as(&s, "scimb_0000", Method::GET, "/Users", None).await;
    assert_eq!(status, 401);
    let (status, _) = send_as(&s, "", Method::POST, "/Users", Some(&user("a@x.com"))).await;
    assert_eq!(status, 401);
    assert_eq!(journal_count(&s), 0);
    s.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let s = TestServer::start().await;
    let other = s.token_for("tenant-b");
    let a = create(&s, &user("shared@x.com")).await;
    let id = a["id"].as_str().unwrap();
    // The same userName is free in another tenant.
    let (status, b) = send_as(&s, &other, Method::POST, "/Users", Some(&user("shared@x.com"))).await;
    assert_eq!(status, 201, "{b}");
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(user("shared@x.com"))),
        (
            Method::PATCH,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
            ),
        ),
        (Method::DELETE, None),
    ] {
        let (status, v) = send_as(&s, &other, method.clone(), &format!("/Users/{id}"), body.as_ref()).await;
        assert_eq!(status, 404, "{method} as tenant-b: {v}");
    }
    let (_, list) = send_as(&s, &other, Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], b["id"]);
    // A group of tenant B naming tenant A's user gets no member: the id is kept pending for tenant B.
    let g = json!({"displayName": "G", "members": [{"value": id}]});
    let (status, v) = send_as(&s, &other, Method::POST, "/Groups", Some(&g)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["members"], json!([]), "{v}");
    // Tenant A's user is untouched.
    let (status, v) = s.send(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!((status, v["meta"]["version"].as_str()), (200, Some("W/\"1\"")));
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_store_nothing() {
    // tenant-a is bound (as the daemon would find) to a target that links accounts by email.
    let mut settings = scim_bridge::http::ScimSettings { max_body_bytes: 4096, ..Default::default() };
    settings
        .rules
        .tenants
        .insert("tenant-a".into(), scim_bridge::scim::Rules { require_match_email: true, ..Default::default() });
    let s = TestServer::start_with(settings).await;
    // Tribe CRM rule: neither an email-shaped userName nor any email.
    let (status, v) =
        s.send(Method::POST, "/Users", Some(&json!({"userName": "jdoe", "name": {"givenName": "J"}}))).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("jdoe"));
    // An identifier far beyond any directory's limit (it would become a megabyte index key).
    let (status, v) = s.send(Method::POST, "/Users", Some(&json!({"userName": "a".repeat(3000)}))).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("userName is 3000 characters long"), "{v}");
    // A non-email userName with an email is fine.
    let (status, _) =
        s.send(Method::POST, "/Users", Some(&json!({"userName": "jdoe", "emails": [{"value": "jdoe@x.com"}]}))).await;
    assert_eq!(status, 201);
    // Malformed JSON.
    let resp = s
        .req(Method::POST, "/Users")
        .header("content-type", "application/scim+json")
        .body("{\"userName\": ")
        .send()
        .await
        .unwrap();
    let (status, v) = decode(resp).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidSyntax")), "{v}");
    // Oversized body, with and without a Content-Length the server can check first.
    let big = json!({"userName": "big@x.com", "displayName": "x".repeat(10_000)});
    let (status, v) = s.send(Method::POST, "/Users", Some(&big)).await;
    assert_eq!((status, v["status"].as_str()), (413, Some("413")), "{v}");
    assert_eq!(chunked_post_status(&s, &big.to_string()).await, 413);
    // Wrong content type.
    let resp = s.req(Method::POST, "/Users").header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    // Wrong types name the attribute.
    let (status, v) = s.send(Method::POST, "/Users", Some(&json!({"userName": "t@x.com", "active": "perhaps"}))).await;
    assert_eq!(status, 400);
    assert!(v["detail"].as_str().unwrap().contains("active"), "{v}");
    assert_eq!(total(&s, "/Users").await, 1);
    assert_eq!(journal_count(&s), 1);
    s.stop().await;
}

/// Sends a POST with a chunked body (no Content-Length), so that the limit must be enforced while reading.
async fn chunked_post_status(s: &TestServer, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr, s.token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(1000) {
        conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        conn.write_all(chunk).await.unwrap();
        if conn.write_all(b"\r\n").await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer).await;
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn filters_paging_and_projection() {
    let s = TestServer::start().await;
    for (i, (name, title, dept)) in [
        ("ann", "Engineer", "R&D"),
        ("bob", "Manager", "Sales"),
        ("cyd", "Engineer", "Sales"),
        ("dan", "Intern", "R&D"),
    ]
    .iter()
    .enumerate()
    {
        let mut u = user(&format!("{name}@example.com"));
        u["title"] = json!(title);
        u["displayName"] = json!(name.to_uppercase());
        u["externalId"] = json!(if i == 3 { "4711".to_owned() } else { format!("EXT-{i}") });
        u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = json!({"department": dept});
        create(&s, &u).await;
    }
    let q = |f: &str| format!("/Users?filter={}", urlencode(f));
    for (filter, expected) in [
        ("userName eq \"ANN@example.com\"", 1),
        ("username Eq \"bob@example.com\"", 1),
        ("userName ne \"ann@example.com\"", 3),
        ("userName co \"n@\"", 2),
        ("userName sw \"c\"", 1),
        ("userName ew \"example.com\"", 4),
        ("title pr", 4),
        ("nickName pr", 0),
        ("userName gt \"bob@example.com\"", 2),
        ("userName ge \"bob@example.com\"", 3),
        ("userName lt \"bob@example.com\"", 1),
        ("userName le \"bob@example.com\"", 2),
        (
            "title eq \"Engineer\" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"Sales\"",
            1,
        ),
        ("title eq \"Intern\" or (title eq \"Manager\" and not (displayName eq \"x\"))", 2),
        ("emails[type eq \"work\" and value co \"ann\"]", 1),
        ("emails[type eq \"work\"].value eq \"dan@example.com\"", 1),
        ("emails.value eq \"CYD@example.com\"", 1),
        ("externalId eq EXT-2", 1),
        ("externalId eq 4711", 1),
        ("externalId eq \"ext-2\"", 0),
        ("displayName eq \"bob\"", 1),
        ("meta.resourceType eq \"User\"", 4),
        ("active eq true", 4),
    ] {
        assert_eq!(total(&s, &q(filter)).await, expected, "{filter}");
    }
    for bad in ["userName eq", "userName xx \"a\"", "(userName eq \"a\"", "shoeSize eq 4", "active gt true"] {
        let (status, v) = s.send(Method::GET, &q(bad), None).await;
        assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidFilter")), "{bad}: {v}");
    }
    // Paging: stable creation order, 1-based startIndex.
    let (_, page) = s.send(Method::GET, "/Users?startIndex=2&count=2", None).await;
    assert_eq!(page["totalResults"], 4);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 2);
    assert_eq!(page["Resources"][0]["userName"], "bob@example.com");
    assert_eq!(page["Resources"][1]["userName"], "cyd@example.com");
    let (_, page) = s.send(Method::GET, "/Users?count=0", None).await;
    assert_eq!((page["totalResults"].as_u64(), page["Resources"].as_array().map(Vec::len)), (Some(4), Some(0)));
    let (_, page) = s.send(Method::GET, &format!("{}&startIndex=2&count=1", q("title eq \"Engineer\"")), None).await;
    assert_eq!(
        (page["totalResults"].as_u64(), page["Resources"][0]["userName"].as_str()),
        (Some(2), Some("cyd@example.com"))
    );
    // Projection.
    let (_, page) = s
        .send(
            Method::GET,
            &format!("{}&attributes=userName,name.givenName", q("userName eq \"ann@example.com\"")),
            None,
        )
        .await;
    let r = page["Resources"][0].as_object().unwrap();
    let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "schemas", "userName"]);
    let (_, page) = s.send(Method::GET, "/Users?excludedAttributes=emails,title&count=1", None).await;
    assert!(page["Resources"][0].get("emails").is_none());
    assert!(page["Resources"][0].get("title").is_none());
    assert!(page["Resources"][0].get("userName").is_some());
    let (status, v) = s.send(Method::GET, "/Users?attributes=shoeSize", None).await;
    assert_eq!(status, 400, "{v}");
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn etags_uniqueness_and_atomic_patch() {
    let s = TestServer::start().await;
    let resp = s.req(Method::POST, "/Users").json(&user("eve@x.com")).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["etag"], "W/\"1\"");
    let (_, eve) = decode(resp).await;
    let id = eve["id"].as_str().unwrap();
    assert_eq!(location, s.url(&format!("/Users/{id}")));
    assert_eq!(eve["meta"]["location"], location);
    // userName uniqueness is case-insensitive.
    let (status, v) = s.send(Method::POST, "/Users", Some(&user("EVE@x.com"))).await;
    assert_eq!((status, v["scimType"].as_str(), v["status"].as_str()), (409, Some("uniqueness"), Some("409")));
    // If-Match.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "Boss"}]});
    let resp =
        s.req(Method::PATCH, &format!("/Users/{id}")).header("if-match", "W/\"7\"").json(&patch).send().await.unwrap();
    assert_eq!(resp.status(), 412);
    let resp =
        s.req(Method::PATCH, &format!("/Users/{id}")).header("if-match", "W/\"1\"").json(&patch).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "W/\"2\"");
    // Atomic PATCH: the second operation fails, so the first is not applied either.
    let bad = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": "title", "value": "Changed"},
        {"op": "replace", "path": "emails[type eq \"home\" or value co \"zzz\"].value", "value": "x@y.com"}
    ]});
    let (status, v) = s.send(Method::PATCH, &format!("/Users/{id}"), Some(&bad)).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("noTarget")), "{v}");
    let (_, now) = s.send(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(now["title"], "Boss");
    assert_eq!(now["meta"]["version"], "W/\"2\"");
    // Group displayName uniqueness; a group cannot be its own member.
    let (status, _) = s.send(Method::POST, "/Groups", Some(&json!({"displayName": "Ops"}))).await;
    assert_eq!(status, 201);
    let (status, v) = s.send(Method::POST, "/Groups", Some(&json!({"displayName": "ops"}))).await;
    assert_eq!((status, v["scimType"].as_str()), (409, Some("uniqueness")));
    let (_, ops) = s.send(Method::GET, "/Groups?filter=displayName%20eq%20%22Ops%22", None).await;
    let ops_id = ops["Resources"][0]["id"].as_str().unwrap().to_owned();
    let (status, v) = s
        .send(
            Method::PUT,
            &format!("/Groups/{ops_id}"),
            Some(&json!({"displayName": "Ops", "members": [{"value": ops_id}]})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["detail"].as_str().unwrap().contains("itself"), "{v}");
    // PUT with a different id in the body.
    let mut put = user("eve@x.com");
    put["id"] = json!("someone-else");
    let (status, v) = s.send(Method::PUT, &format!("/Users/{id}"), Some(&put)).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("mutability")));
    s.stop().await;
}

#[tokio::test]
async fn password_is_never_stored_or_returned() {
    let s = TestServer::start().await;
    let secret = "Very-Secret-Placeholder-9c1f";
    let mut u = user("pw@x.com");
    u["password"] = json!(secret);
    let v = create(&s, &u).await;
    assert!(v.get("password").is_none());
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, v) = s.send(Method::GET, &format!("/Users/{id}?attributes=password,userName"), None).await;
    assert!(v.get("password").is_none(), "{v}");
    let path = s.staging_path.clone();
    let _dir = s.stop().await;
    // Neither the database nor its WAL contains the password.
    for suffix in ["", "-wal"] {
        let file = format!("{}{suffix}", path.display());
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{file} contains the password");
        }
    }
    assert!(std::fs::metadata(&path).is_ok());
}

#[tokio::test]
async fn discovery_endpoints_are_read_only() {
    let s = TestServer::start().await;
    let (status, spc) = s.send(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(status, 200);
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 1000);
    let (_, rt) = s.send(Method::GET, "/ResourceTypes", None).await;
    assert_eq!(rt["totalResults"], 2);
    let (status, rt) = s.send(Method::GET, "/ResourceTypes/User", None).await;
    assert_eq!(
        (status, rt["schemaExtensions"][0]["schema"].as_str()),
        (200, Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"))
    );
    let (_, schemas) = s.send(Method::GET, "/Schemas", None).await;
    assert_eq!(schemas["totalResults"], 3);
    let (status, user_schema) = s.send(Method::GET, "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", None).await;
    assert_eq!(status, 200);
    let attrs = user_schema["attributes"].as_array().unwrap();
    assert!(attrs.iter().any(|a| a["name"] == "userName" && a["uniqueness"] == "server"));
    for path in ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"] {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let (status, v) = s.send(method.clone(), path, Some(&json!({}))).await;
            assert_eq!((status, v["status"].as_str()), (405, Some("405")), "{method} {path}");
        }
    }
    let (status, v) = s.send(Method::GET, "/Nope", None).await;
    assert_eq!((status, v["status"].as_str()), (404, Some("404")));
    s.stop().await;
}

#[tokio::test]
async fn group_membership_edits_are_exact_and_atomic() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(create(&s, &user(&format!("m{n}@x.com"))).await["id"].as_str().unwrap().to_owned());
    }
    let (status, g) =
        s.send(Method::POST, "/Groups", Some(&json!({"displayName": "Team", "members": [{"value": ids[0]}]}))).await;
    assert_eq!(status, 201, "{g}");
    assert_eq!(g["members"][0]["display"], "m0@x.com");
    let gid = g["id"].as_str().unwrap().to_owned();
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let members = |v: &Value| -> Vec<String> {
        v["members"]
            .as_array()
            .map(|a| a.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    // Re-adding a member, removing a non-member: no error, no duplicate.
    let (status, _) = s
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(&patch(json!([
                {"op": "add", "path": "members", "value": [{"value": ids[0]}, {"value": ids[1]}]},
                {"op": "remove", "path": format!("members[value eq \"{}\"]", ids[3])},
            ]))),
        )
        .await;
    assert_eq!(status, 204);
    let (_, g) = s.send(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(members(&g), [ids[0].clone(), ids[1].clone()]);
    // One unknown member fails the whole PATCH, including the rename before it.
    let (status, v) = s
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(&patch(json!([
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "members", "value": [{"value": ids[2]}, {"value": gid}]},
            ]))),
        )
        .await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidValue")), "{v}");
    let (_, g) = s.send(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(g["displayName"], "Team");
    assert_eq!(members(&g), [ids[0].clone(), ids[1].clone()]);
    // Replacing the whole set.
    let (status, _) = s
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(&patch(json!([
                {"op": "replace", "path": "members", "value": [{"value": ids[2]}, {"value": ids[3]}]},
            ]))),
        )
        .await;
    assert_eq!(status, 204);
    let (_, g) = s.send(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(members(&g), [ids[2].clone(), ids[3].clone()]);
    // Deleting a user removes its membership.
    let (status, _) = s.send(Method::DELETE, &format!("/Users/{}", ids[3]), None).await;
    assert_eq!(status, 204);
    let (_, g) = s.send(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(members(&g), [ids[2].clone()]);
    // Members filter on groups.
    let (_, l) = s.send(Method::GET, &format!("/Groups?filter=members%5Bvalue%20eq%20%22{}%22%5D", ids[2]), None).await;
    assert_eq!(l["totalResults"], 1);
    // The journal holds the net membership changes, in order.
    let conn = rusqlite::Connection::open(&s.staging_path).unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> = conn
        .prepare("SELECT op, members_added, members_removed FROM journal WHERE resource_id = ?1 ORDER BY seq")
        .unwrap()
        .query_map([&gid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0], ("create".into(), Some(json!([ids[0]]).to_string()), None));
    assert_eq!(rows[1], ("patch".into(), Some(json!([ids[1]]).to_string()), None));
    assert_eq!(
        rows[2],
        ("patch".into(), Some(json!([ids[2], ids[3]]).to_string()), Some(json!([ids[0], ids[1]]).to_string()))
    );
    s.stop().await;
}

#[tokio::test]
async fn odd_input_is_refused_or_ignored_without_harm() {
    let s = TestServer::start().await;
    let v = create(&s, &user("odd@x.com")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    // Multibyte keys where a URN prefix is looked for: ignored, and the writer keeps working.
    let p = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"abcé": "x", "urné:y": 1}}]});
    let (status, _) = s.send(Method::PATCH, &format!("/Users/{id}"), Some(&p)).await;
    assert_eq!(status, 200);
    let (status, _) = s.send(Method::POST, "/Users", Some(&json!({"userName": "odd2@x.com", "ünïcode": 1}))).await;
    assert_eq!(status, 201);
    let (status, _) = s.send(Method::GET, "/Users?attributes=abcé", None).await;
    assert_eq!(status, 400);
    // A custom extension attribute in the same PATCH as a deactivation: the deactivation applies.
    let p = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:custom:2.0:User:worksiteId", "value": "W1"},
        {"op": "Replace", "path": "active", "value": "False"}]});
    let (status, v) = s.send(Method::PATCH, &format!("/Users/{id}"), Some(&p)).await;
    assert_eq!((status, v["active"].as_bool()), (200, Some(false)), "{v}");
    // A bad `attributes` parameter on a write is refused before anything is stored.
    let before = journal_count(&s);
    let (status, _) = s.send(Method::POST, "/Users?attributes=shoeSize", Some(&user("late@x.com"))).await;
    assert_eq!(status, 400);
    assert_eq!(journal_count(&s), before);
    let (_, l) = s.send(Method::GET, "/Users?filter=userName%20eq%20%22late@x.com%22", None).await;
    assert_eq!(l["totalResults"], 0);
    // Unquoted values that look like numbers but are not written as JSON writes them stay strings.
    let mut u = user("num@x.com");
    u["externalId"] = json!("1.50");
    create(&s, &u).await;
    let (_, l) = s.send(Method::GET, "/Users?filter=externalId%20eq%201.50", None).await;
    assert_eq!(l["totalResults"], 1);
    s.stop().await;
}

#[tokio::test]
async fn indexed_lookups_stay_within_the_tenant() {
    let s = TestServer::start().await;
    let other = s.token_for("tenant-b");
    let mut u = user("iso@x.com");
    u["externalId"] = json!("EXT-ISO");
    u["displayName"] = json!("Iso Lated");
    create(&s, &u).await;
    for filter in [
        "userName%20eq%20%22iso@x.com%22",
        "externalId%20eq%20%22EXT-ISO%22",
        "emails.value%20eq%20%22iso@x.com%22",
        "displayName%20eq%20%22Iso%20Lated%22",
        "userName%20co%20%22iso%22",
    ] {
        let (_, l) = send_as(&s, &other, Method::GET, &format!("/Users?filter={filter}"), None).await;
        assert_eq!(l["totalResults"], 0, "{filter}");
        let (_, l) = s.send(Method::GET, &format!("/Users?filter={filter}"), None).await;
        assert_eq!(l["totalResults"], 1, "{filter}");
    }
    s.stop().await;
}

/// A change that changes nothing (an attribute this service ignores, a value replaced by itself, a PUT of
/// the same document) answers with the resource as it is: no journal entry, no new version. In strict mode
/// an unknown path is refused.
#[tokio::test]
async fn a_change_that_changes_nothing_is_not_journaled() {
    let s = TestServer::start().await;
    let u = create(&s, &user("noop@x.com")).await;
    let id = u["id"].as_str().unwrap();
    let before = journal_count(&s);
    for ops in [
        json!([{"op": "replace", "path": "nosuch.attr", "value": "x"}]),
        json!([{"op": "Replace", "path": "userName", "value": "noop@x.com"}]),
        json!([{"op": "replace", "value": {"active": "True"}}]),
    ] {
        let (status, v) = s.send(Method::PATCH, &format!("/Users/{id}"), Some(&common::patch(ops.clone()))).await;
        assert_eq!((status, v["meta"]["version"].as_str()), (200, Some("W/\"1\"")), "{ops}: {v}");
    }
    let (status, v) = s.send(Method::PUT, &format!("/Users/{id}"), Some(&user("noop@x.com"))).await;
    assert_eq!((status, v["meta"]["version"].as_str()), (200, Some("W/\"1\"")), "{v}");
    assert_eq!(journal_count(&s), before, "nothing journaled");
    let (status, v) = s
        .send(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(&common::patch(json!([{"op": "replace", "path": "title", "value": "x"}]))),
        )
        .await;
    assert_eq!((status, v["meta"]["version"].as_str()), (200, Some("W/\"2\"")), "a real change still counts: {v}");
    assert_eq!(journal_count(&s), before + 1);
    s.stop().await;

    let mut settings = scim_bridge::http::ScimSettings::default();
    settings.rules.default.strict = true;
    let s = TestServer::start_with(settings).await;
    let u = create(&s, &user("strict@x.com")).await;
    let path = format!("/Users/{}", u["id"].as_str().unwrap());
    let body = common::patch(json!([{"op": "replace", "path": "nosuch.attr", "value": "x"}]));
    let (status, v) = s.send(Method::PATCH, &path, Some(&body)).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidPath")), "{v}");
    s.stop().await;
}

/// A filter that is not UTF-8 once percent-decoded is refused (not answered with an empty list), and an
/// invalid filter is quoted in the error only in part.
#[tokio::test]
async fn filters_that_cannot_be_read_are_refused_clearly() {
    let s = TestServer::start().await;
    create(&s, &user("f@x.com")).await;
    let resp = s.req(Method::GET, "/Users?filter=userName%20eq%20%22%FF%FE%22").send().await.unwrap();
    let (status, v) = decode(resp).await;
    assert_eq!((status, v["scimType"].as_str()), (400, Some("invalidFilter")), "{v}");
    let huge = format!("userName eq \"a\" and ({}", "title eq \"x\" or ".repeat(2000));
    let resp = s.req(Method::GET, &format!("/Users?filter={}", urlencode(&huge))).send().await.unwrap();
    let (status, v) = decode(resp).await;
    assert_eq!(status, 400, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(huge.len() > 25_000 && detail.len() < 600, "{} characters quoted", detail.len());
    s.stop().await;
}
