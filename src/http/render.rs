//! Turning staged resources into SCIM JSON: schemas, meta (with the version as a weak ETag and the
//! resource's URL, which only the HTTP layer knows) and member references.

use serde_json::{Map, Value, json};

use crate::staging::Stored;

pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The full representation of a resource; `base` is the absolute base URL (no trailing slash).
pub fn render(s: &Stored, base: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let mut schemas = vec![json!(s.kind.core_schema())];
    for (urn, _) in s.kind.extensions() {
        if s.doc.contains_key(*urn) {
            schemas.push(json!(urn));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), json!(s.id));
    for (k, v) in &s.doc {
        out.insert(k.clone(), v.clone());
    }
    if let Some(members) = &s.members {
        let list: Vec<Value> = members
            .iter()
            .map(|m| {
                let mut v = json!({
                    "value": m.id,
                    "$ref": format!("{base}/{}/{}", m.kind.endpoint(), m.id),
                    "type": m.kind.as_str(),
                });
                if let Some(d) = &m.display {
                    v["display"] = json!(d);
                }
                v
            })
            .collect();
        out.insert("members".into(), Value::Array(list));
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": s.kind.as_str(),
            "created": s.created,
            "lastModified": s.last_modified,
            "location": format!("{base}/{}/{}", s.kind.endpoint(), s.id),
            "version": etag(s.version),
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{ENTERPRISE_SCHEMA, Kind, USER_SCHEMA};

    fn stored() -> Stored {
        Stored {
            kind: Kind::User,
            id: "u1".into(),
            doc: json!({
                "userName": "a@x.com",
                "name": {"givenName": "A", "familyName": "B"},
                "emails": [{"value": "a@x.com", "type": "work"}],
                ENTERPRISE_SCHEMA: {"department": "Sales"},
            })
            .as_object()
            .unwrap()
            .clone(),
            members: None,
            version: 4,
            created: "c".into(),
            last_modified: "m".into(),
        }
    }

    #[test]
    fn renders_meta_and_schemas() {
        let r = render(&stored(), "http://h/scim/v2");
        assert_eq!(r["meta"]["version"], json!("W/\"4\""));
        assert_eq!(r["meta"]["location"], json!("http://h/scim/v2/Users/u1"));
        assert_eq!(r["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
    }
}
