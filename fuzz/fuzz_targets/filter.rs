//! The filter and PATCH-path parsers (RFC 7644 §3.4.2.2, §3.5.2) on arbitrary text, and evaluation of what
//! parses against a realistic user: no panic, no runaway recursion, and printing what parsed never fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_bridge::scim::filter;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let user = json!({
        "id": "2819c223", "userName": "bjensen@example.com", "active": true, "title": "Tour Guide",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}, {"value": "b@home.example", "type": "home"}],
        "meta": {"created": "2026-01-23T04:56:22Z", "lastModified": "2026-05-13T04:42:34Z", "version": "W/\"3\""},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "manager": {"value": "26118915"}},
    });
    if let Ok(f) = filter::parse_filter(text) {
        let _ = filter::matches(&f, &user);
        let _ = scim_bridge::scim::check_filter(scim_bridge::scim::schema::Kind::User, &f);
    }
    let _ = filter::parse_path(text);
});
