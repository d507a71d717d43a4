//! PATCH requests (RFC 7644 §3.5.2, with Entra's and Okta's dialects) parsed and applied to a realistic
//! user and group, in lenient and strict mode: no panic, and a document that applied cleanly is still a
//! valid, normalised resource.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_bridge::scim::patch;
use scim_bridge::scim::schema::{self, Kind};
use serde_json::{Map, Value, json};

fn doc(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    let Ok(ops) = patch::parse_request(&body) else { return };
    let user = doc(json!({
        "userName": "bjensen@example.com", "active": true, "displayName": "Babs Jensen", "title": "Tour Guide",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen III"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}, {"value": "babs@home.example", "type": "home"}],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "department": "Tour Operations", "manager": {"value": "26118915"}},
    }));
    let group = doc(json!({"displayName": "Tour Guides", "members": [{"value": "2819c223"}, {"value": "902c246b"}]}));
    for (kind, start) in [(Kind::User, &user), (Kind::Group, &group)] {
        let _ = patch::split_member_edits(&ops);
        for strict in [false, true] {
            let mut d = start.clone();
            if patch::apply(kind, &mut d, &ops, strict).is_ok() {
                // What a PATCH leaves must read back as a resource of its kind.
                if let Err(e) = schema::normalize_resource(kind, &Value::Object(d.clone()), false) {
                    panic!("a patched document no longer normalises: {e}: {d:?}");
                }
            }
        }
    }
});
