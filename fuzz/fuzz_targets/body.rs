//! Request bodies of POST and PUT: normalisation against the resource schemas and validation up front, for
//! users and groups, lenient and strict: no panic, and normalising is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_bridge::scim::Rules;
use scim_bridge::scim::schema::{self, Kind};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    for kind in [Kind::User, Kind::Group] {
        for strict in [false, true] {
            let Ok(n) = schema::normalize_resource(kind, &body, strict) else { continue };
            if let Value::Object(doc) = &n {
                for require_match_email in [false, true] {
                    let _ = scim_bridge::scim::validate(kind, doc, Rules { strict, require_match_email });
                }
            }
            match schema::normalize_resource(kind, &n, strict) {
                Ok(again) => assert_eq!(again, n, "normalising twice changed the document"),
                Err(e) => panic!("a normalised document is refused when normalised again: {e}"),
            }
        }
    }
});
