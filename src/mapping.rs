//! Declarative mapping from a SCIM resource to target fields, shared by every target: an attribute path
//! (`name.givenName`, `emails[type eq "work"].value`, `urn:…:enterprise:2.0:User:department`), a negated
//! boolean for flags (`!active`), a constant (`'text'`, or a TOML number or boolean), or a template
//! (`"{name.givenName} {name.familyName}"`), or `@match_email`: the address used to link accounts (userName
//! when it is one, else the primary, work or first email).

use serde_json::{Map, Value};

use crate::scim::filter::{self, PatchPath};
use crate::scim::schema::{self, Kind, Ty};

/// Where a target field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(AttrRef),
    /// `!active`: the negation of a boolean attribute. A user without `active` counts as active, so
    /// `!active` is then false (not blocked).
    Not(AttrRef),
    Const(Value),
    Template(Vec<Part>),
    /// `@match_email`: see `crate::matching::match_email`.
    MatchEmail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Attr(AttrRef),
}

/// A resolved attribute reference with canonical names.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRef {
    pub text: String,
    extension: Option<&'static str>,
    attr: &'static str,
    multi: bool,
    ty: Ty,
    sub: Option<&'static str>,
    filter: Option<filter::Filter>,
}

impl AttrRef {
    /// Parses and checks a path against the resource schema.
    ///
    /// # Errors
    /// A message naming the path and what is wrong with it.
    pub fn parse(kind: Kind, text: &str) -> Result<AttrRef, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("id") {
            return Ok(AttrRef {
                text: "id".into(),
                extension: None,
                attr: "id",
                multi: false,
                ty: Ty::String,
                sub: None,
                filter: None,
            });
        }
        let PatchPath { attr, filter, sub_after_filter } =
            filter::parse_path(text).map_err(|e| format!("invalid attribute path {text:?}: {e}"))?;
        let r = schema::resolve(kind, attr.schema.as_deref(), &attr.attr, attr.sub.as_deref())
            .map_err(|e| format!("attribute path {text:?}: {e}"))?;
        let sub = match (r.sub, &sub_after_filter) {
            (Some(s), _) => Some(s),
            (None, Some(name)) => Some(
                schema::find(r.attr.sub, name)
                    .ok_or_else(|| format!("attribute path {text:?}: unknown sub-attribute {name:?}"))?,
            ),
            (None, None) => None,
        };
        if r.attr.ty == Ty::Complex && sub.is_none() && schema::find(r.attr.sub, "value").is_none() {
            return Err(format!("attribute path {text:?} names a complex attribute; name one of its sub-attributes"));
        }
        let ty = sub.map(|s| s.ty).unwrap_or(r.attr.ty);
        Ok(AttrRef {
            text: text.to_owned(),
            extension: r.extension,
            attr: r.attr.name,
            multi: r.attr.multi,
            ty,
            sub: sub.map(|s| s.name).or(if r.attr.ty == Ty::Complex { Some("value") } else { None }),
            filter,
        })
    }

    pub fn is_boolean(&self) -> bool {
        self.ty == Ty::Boolean
    }

    /// The attribute's value in a document (`id` included), or Null. For a multi-valued attribute without a
    /// filter, the primary value, else the first.
    pub fn get(&self, doc: &Map<String, Value>, id: &str) -> Value {
        if self.attr == "id" && self.extension.is_none() {
            return Value::String(id.to_owned());
        }
        let holder = match self.extension {
            None => Some(doc),
            Some(urn) => doc.get(urn).and_then(Value::as_object),
        };
        let Some(v) = holder.and_then(|h| h.get(self.attr)) else { return Value::Null };
        let element = if self.multi {
            let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
            let chosen = match &self.filter {
                Some(f) => items.iter().find(|e| filter::matches(f, e)),
                None => items.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))).or(items.first()),
            };
            match chosen {
                Some(e) => e,
                None => return Value::Null,
            }
        } else {
            v
        };
        match self.sub {
            Some(s) => element.get(s).cloned().unwrap_or(Value::Null),
            None => element.clone(),
        }
    }
}

impl Source {
    /// Parses a field's source expression.
    ///
    /// # Errors
    /// A message naming the expression and the problem.
    pub fn parse(kind: Kind, expr: &str) -> Result<Source, String> {
        let e = expr.trim();
        if e.eq_ignore_ascii_case("@match_email") {
            return Ok(Source::MatchEmail);
        }
        if let Some(rest) = e.strip_prefix('!') {
            let r = AttrRef::parse(kind, rest)?;
            if !r.is_boolean() {
                return Err(format!(
                    "{expr:?}: '!' negates a boolean attribute such as active; {:?} is not one",
                    r.text
                ));
            }
            return Ok(Source::Not(r));
        }
        if e.len() >= 2 && e.starts_with('\'') && e.ends_with('\'') {
            return Ok(Source::Const(Value::String(e[1..e.len() - 1].to_owned())));
        }
        if e.contains('{') {
            return parse_template(kind, e).map(Source::Template);
        }
        AttrRef::parse(kind, e).map(Source::Path)
    }

    /// Evaluates against a staged document.
    pub fn eval(&self, doc: &Map<String, Value>, id: &str) -> Value {
        match self {
            Source::Path(r) => r.get(doc, id),
            Source::Not(r) => match r.get(doc, id) {
                Value::Bool(b) => Value::Bool(!b),
                // SCIM: a user without `active` is active (RFC 7643 §4.1.1 leaves the default to the
                // provider; Entra and Okta always send it).
                _ => Value::Bool(false),
            },
            Source::Const(v) => v.clone(),
            Source::MatchEmail => crate::matching::match_email(doc).map(Value::String).unwrap_or(Value::Null),
            Source::Template(parts) => {
                let mut out = String::new();
                let mut any = false;
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Attr(r) => match r.get(doc, id) {
                            Value::Null => {}
                            Value::String(s) => {
                                any = true;
                                out.push_str(&s);
                            }
                            other => {
                                any = true;
                                out.push_str(&other.to_string());
                            }
                        },
                    }
                }
                let trimmed = out.split_whitespace().collect::<Vec<_>>().join(" ");
                if any { Value::String(trimmed) } else { Value::Null }
            }
        }
    }

    /// Whether the value is a boolean (a negation, or a path to a boolean attribute).
    pub fn is_boolean(&self) -> bool {
        matches!(self, Source::Not(_)) || matches!(self, Source::Path(r) if r.is_boolean())
    }

    /// Whether the value depends on `active` (a blocked-flag field).
    pub fn is_flag(&self) -> bool {
        matches!(self, Source::Not(r) | Source::Path(r) if r.attr == "active" && r.extension.is_none())
    }
}

fn parse_template(kind: Kind, e: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = e;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("template {e:?}: '{{' without a closing '}}'"))?;
        parts.push(Part::Attr(AttrRef::parse(kind, &after[..close]).map_err(|m| format!("template {e:?}: {m}"))?));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("template {e:?}: '}}' without an opening '{{'"));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        json!({
            "userName": "ann@x.com",
            "active": false,
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "home@x.com", "type": "home"}, {"value": "work@x.com", "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales", "manager": {"value": "m1"}},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn ev(expr: &str) -> Value {
        Source::parse(Kind::User, expr).unwrap().eval(&doc(), "id-1")
    }

    #[test]
    fn paths_templates_negation_constants() {
        assert_eq!(ev("name.givenName"), json!("Ann"));
        assert_eq!(ev("NAME.GIVENNAME"), json!("Ann"));
        assert_eq!(ev("emails[type eq \"home\"].value"), json!("home@x.com"));
        assert_eq!(ev("emails"), json!("work@x.com"));
        assert_eq!(ev("emails.value"), json!("work@x.com"));
        assert_eq!(ev("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"), json!("Sales"));
        assert_eq!(ev("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"), json!("m1"));
        assert_eq!(ev("{name.givenName} {name.familyName}"), json!("Ann Lee"));
        assert_eq!(ev("{name.givenName} {nickName}"), json!("Ann"));
        assert_eq!(ev("{nickName}"), Value::Null);
        assert_eq!(ev("!active"), json!(true));
        assert_eq!(ev("active"), json!(false));
        assert_eq!(ev("'scim'"), json!("scim"));
        assert_eq!(ev("id"), json!("id-1"));
        assert_eq!(ev("title"), Value::Null);
        assert_eq!(ev("@match_email"), json!("ann@x.com"));
        assert!(Source::parse(Kind::User, "!active").unwrap().is_flag());
        assert!(!Source::parse(Kind::User, "title").unwrap().is_flag());
    }

    #[test]
    fn absent_active_is_not_blocked() {
        let d = json!({"userName": "a@x.com"}).as_object().unwrap().clone();
        assert_eq!(Source::parse(Kind::User, "!active").unwrap().eval(&d, "i"), json!(false));
    }

    #[test]
    fn errors_name_the_expression() {
        for (bad, needle) in [
            ("shoeSize", "shoeSize"),
            ("!title", "!title"),
            ("name", "name"),
            ("{name.givenName", "closing"),
            ("emails[type eq", "emails[type eq"),
        ] {
            let e = Source::parse(Kind::User, bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
