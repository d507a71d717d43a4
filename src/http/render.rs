//! Turning staged resources into SCIM JSON: schemas, meta (with the version as a weak ETag and the
//! resource's URL, which only the HTTP layer knows) and member references.

use serde_json::{Map, Value, json};

use crate::staging::Stored;

pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The member references of a group.
fn members_json(members: &[crate::staging::Member], base: &str) -> Vec<Value> {
    members
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
        .collect()
}

fn meta(s: &Stored, base: &str) -> Value {
    json!({
        "resourceType": s.kind.as_str(),
        "created": s.created,
        "lastModified": s.last_modified,
        "location": format!("{base}/{}/{}", s.kind.endpoint(), s.id),
        "version": etag(s.version),
    })
}

/// The full representation as JSON text. A resource read with its body unparsed (a list without
/// projection) is spliced around that text instead of being parsed and written again: a page of 1,000
/// users costs a few copies, not 1,000 parses. The stored body is a JSON object written by staging, whose
/// keys are attribute names, never `id`, `meta`, `schemas` or `members`.
pub fn render_text(s: &Stored, base: &str) -> String {
    let Some(body) = &s.body else {
        return Value::Object(render(s, base)).to_string();
    };
    let inner = body.trim().strip_prefix('{').and_then(|b| b.strip_suffix('}')).unwrap_or_default().trim();
    let mut schemas = vec![s.kind.core_schema()];
    for (urn, _) in s.kind.extensions() {
        // A top-level key: an unescaped quote after `{` or `,` cannot occur inside a string value.
        let key = format!("\"{urn}\":");
        if inner.starts_with(&key) || inner.contains(&format!(",{key}")) {
            schemas.push(urn);
        }
    }
    let mut out = String::with_capacity(body.len() + 256);
    out.push_str("{\"schemas\":");
    out.push_str(&json!(schemas).to_string());
    out.push_str(",\"id\":");
    out.push_str(&json!(s.id).to_string());
    if !inner.is_empty() {
        out.push(',');
        out.push_str(inner);
    }
    if let Some(members) = &s.members {
        out.push_str(",\"members\":");
        out.push_str(&Value::Array(members_json(members, base)).to_string());
    }
    out.push_str(",\"meta\":");
    out.push_str(&meta(s, base).to_string());
    out.push('}');
    out
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
        out.insert("members".into(), Value::Array(members_json(members, base)));
    }
    out.insert("meta".into(), meta(s, base));
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
            body: None,
            version: 4,
            created: "c".into(),
            last_modified: "m".into(),
        }
    }

    /// Splicing an unparsed body gives the same resource as rendering the parsed one.
    #[test]
    fn spliced_text_is_the_rendered_resource() {
        let mut s = stored();
        for members in [None, Some(vec![crate::staging::Member { id: "m".into(), kind: Kind::User, display: None }])] {
            s.members = members;
            let parsed = Value::Object(render(&s, "http://h/scim/v2"));
            let raw = Stored { body: Some(Value::Object(s.doc.clone()).to_string()), doc: Map::new(), ..s.clone() };
            let spliced: Value = serde_json::from_str(&render_text(&raw, "http://h/scim/v2")).unwrap();
            assert_eq!(spliced, parsed);
        }
        let tricky = Stored {
            body: Some(
                r#"{"title":"\",\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\":","userName":"x"}"#
                    .into(),
            ),
            doc: Map::new(),
            ..stored()
        };
        let v: Value = serde_json::from_str(&render_text(&tricky, "http://h")).unwrap();
        assert_eq!(v["schemas"], json!([USER_SCHEMA]), "a value that looks like the key is not the key");
        let empty = Stored { body: Some("{}".into()), doc: Map::new(), ..stored() };
        let v: Value = serde_json::from_str(&render_text(&empty, "http://h")).unwrap();
        assert_eq!(v["id"], "u1");
    }

    #[test]
    fn renders_meta_and_schemas() {
        let r = render(&stored(), "http://h/scim/v2");
        assert_eq!(r["meta"]["version"], json!("W/\"4\""));
        assert_eq!(r["meta"]["location"], json!("http://h/scim/v2/Users/u1"));
        assert_eq!(r["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
    }
}
