//! The `attributes` and `excludedAttributes` projection of RFC 7644 §3.4.2.5, applied to a rendered
//! resource.

use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::schema::{self, Kind, Resolved, Returned};

/// The parsed `attributes` and `excludedAttributes` parameters.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    include: Vec<Resolved>,
    exclude: Vec<Resolved>,
}

fn parse_list(kind: Kind, param: &str, list: Option<&str>) -> Result<Vec<Resolved>, ScimError> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (schema_urn, name, sub) = schema::split_key(item);
            schema::resolve(kind, schema_urn, name, sub).map_err(|e| ScimError::invalid_value(format!("{param}: {e}")))
        })
        .collect()
}

impl Projection {
    /// # Errors
    /// An unknown attribute name in either list, named in the message.
    pub fn parse(kind: Kind, attributes: Option<&str>, excluded: Option<&str>) -> Result<Projection, ScimError> {
        Ok(Projection {
            include: parse_list(kind, "attributes", attributes)?,
            exclude: parse_list(kind, "excludedAttributes", excluded)?,
        })
    }

    /// Whether the projection leaves every attribute as it is (no `attributes`, no `excludedAttributes`).
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether group members must be loaded for this projection (a 10,000-member group is expensive).
    pub fn wants(&self, name: &str) -> bool {
        let named = |l: &[Resolved]| l.iter().any(|r| r.extension.is_none() && r.attr.name == name && r.sub.is_none());
        if !self.include.is_empty() {
            return self.include.iter().any(|r| r.extension.is_none() && r.attr.name == name);
        }
        !named(&self.exclude)
    }

    pub fn apply(&self, mut doc: Map<String, Value>) -> Map<String, Value> {
        if !self.include.is_empty() {
            let mut out = Map::new();
            for always in ["schemas", "id"] {
                if let Some(v) = doc.remove(always) {
                    out.insert(always.into(), v);
                }
            }
            for r in &self.include {
                copy(&doc, &mut out, r);
            }
            doc = out;
        }
        for r in &self.exclude {
            if r.attr.returned == Returned::Always {
                continue;
            }
            remove(&mut doc, r);
        }
        doc
    }
}

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, r: &Resolved) {
    let src = match r.extension {
        None => Some(from),
        Some(urn) => from.get(urn).and_then(Value::as_object),
    };
    let Some(value) = src.and_then(|m| m.get(r.attr.name)) else { return };
    let picked = match r.sub {
        None => value.clone(),
        Some(sub) => match value {
            Value::Object(o) => match o.get(sub.name) {
                Some(v) => json!({ sub.name: v }),
                None => return,
            },
            Value::Array(items) => {
                Value::Array(items.iter().filter_map(|i| i.get(sub.name).map(|v| json!({ sub.name: v }))).collect())
            }
            _ => return,
        },
    };
    let dest = schema::container(to, r.extension);
    match (dest.get_mut(r.attr.name), picked) {
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, picked) => {
            dest.insert(r.attr.name.to_string(), picked);
        }
    }
}

fn remove(doc: &mut Map<String, Value>, r: &Resolved) {
    let target = match r.extension {
        None => Some(&mut *doc),
        Some(urn) => doc.get_mut(urn).and_then(Value::as_object_mut),
    };
    let Some(target) = target else { return };
    match r.sub {
        None => {
            target.remove(r.attr.name);
        }
        Some(sub) => match target.get_mut(r.attr.name) {
            Some(Value::Object(o)) => {
                o.remove(sub.name);
            }
            Some(Value::Array(items)) => {
                for i in items {
                    if let Value::Object(o) = i {
                        o.remove(sub.name);
                    }
                }
            }
            _ => {}
        },
    }
    if let Some(urn) = r.extension {
        schema::prune(doc, Some(urn), r.attr.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{ENTERPRISE_SCHEMA, USER_SCHEMA};

    /// A rendered user, as `crate::http` produces it.
    fn rendered() -> Map<String, Value> {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
            "id": "u1",
            "userName": "a@x.com",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x.com", "type": "work"}],
            ENTERPRISE_SCHEMA: {"department": "Sales"},
            "meta": {"resourceType": "User"},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn attributes_keeps_only_named_plus_id() {
        let p = Projection::parse(Kind::User, Some("userName,name.givenName,emails.value,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"), None).unwrap();
        let r = p.apply(rendered());
        assert_eq!(
            Value::Object(r),
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
                "id": "u1",
                "userName": "a@x.com",
                "name": {"givenName": "A"},
                "emails": [{"value": "a@x.com"}],
                ENTERPRISE_SCHEMA: {"department": "Sales"},
            })
        );
    }

    #[test]
    fn excluded_attributes_never_drop_id() {
        let p = Projection::parse(
            Kind::User,
            None,
            Some("id,name,emails.type,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
        )
        .unwrap();
        let r = p.apply(rendered());
        assert_eq!(r["id"], json!("u1"));
        assert!(r.get("name").is_none());
        assert_eq!(r["emails"], json!([{"value": "a@x.com"}]));
        assert!(r.get(ENTERPRISE_SCHEMA).is_none());
        assert!(!Projection::parse(Kind::Group, None, Some("members")).unwrap().wants("members"));
        assert!(Projection::parse(Kind::Group, None, None).unwrap().wants("members"));
        assert!(!Projection::parse(Kind::Group, Some("displayName"), None).unwrap().wants("members"));
    }

    #[test]
    fn unknown_attribute_is_named() {
        let e = Projection::parse(Kind::User, Some("shoeSize"), None).unwrap_err();
        assert!(e.detail.contains("shoeSize"), "{}", e.detail);
    }
}
