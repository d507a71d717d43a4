//! The resource schemas this service provider serves (RFC 7643 §4 User and Group, §4.3 enterprise extension):
//! attribute definitions used to normalise incoming bodies, resolve paths case-insensitively and answer
//! `/Schemas`.

use serde_json::{Map, Value, json};

use super::error::ScimError;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadWrite,
    ReadOnly,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Default,
    Always,
    Never,
}

/// One attribute definition (RFC 7643 §2.2 characteristics, those this server acts on).
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub unique: bool,
    pub sub: &'static [Attr],
    pub description: &'static str,
}

const fn attr(name: &'static str, ty: Ty, description: &'static str) -> Attr {
    Attr {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique: false,
        sub: &[],
        description,
    }
}

const fn complex(name: &'static str, sub: &'static [Attr], description: &'static str) -> Attr {
    Attr { sub, ..attr(name, Ty::Complex, description) }
}

const fn multi(name: &'static str, sub: &'static [Attr], description: &'static str) -> Attr {
    Attr { sub, multi: true, ..attr(name, Ty::Complex, description) }
}

/// The sub-attributes shared by emails, phoneNumbers, ims, photos, entitlements, roles, x509Certificates.
const PLURAL: &[Attr] = &[
    attr("value", Ty::String, "The attribute's significant value."),
    attr("display", Ty::String, "A human-readable name, primarily used for display purposes."),
    attr("type", Ty::String, "A label indicating the attribute's function, e.g. 'work' or 'home'."),
    attr("primary", Ty::Boolean, "Whether this is the primary value."),
];

const NAME: &[Attr] = &[
    attr("formatted", Ty::String, "The full name, formatted for display."),
    attr("familyName", Ty::String, "The family name."),
    attr("givenName", Ty::String, "The given name."),
    attr("middleName", Ty::String, "The middle name(s)."),
    attr("honorificPrefix", Ty::String, "The honorific prefix(es)."),
    attr("honorificSuffix", Ty::String, "The honorific suffix(es)."),
];

const ADDRESS: &[Attr] = &[
    attr("formatted", Ty::String, "The full mailing address, formatted for display."),
    attr("streetAddress", Ty::String, "The full street address."),
    attr("locality", Ty::String, "The city or locality."),
    attr("region", Ty::String, "The state or region."),
    attr("postalCode", Ty::String, "The zip code or postal code."),
    attr("country", Ty::String, "The country name component."),
    attr("type", Ty::String, "A label indicating the address's function, e.g. 'work' or 'home'."),
    attr("primary", Ty::Boolean, "Whether this is the primary address."),
];

const GROUP_REF: &[Attr] = &[
    Attr { mutability: Mutability::ReadOnly, ..attr("value", Ty::String, "The id of the group.") },
    Attr { mutability: Mutability::ReadOnly, ..attr("$ref", Ty::Reference, "The URI of the group.") },
    Attr { mutability: Mutability::ReadOnly, ..attr("display", Ty::String, "The group's display name.") },
    Attr { mutability: Mutability::ReadOnly, ..attr("type", Ty::String, "'direct' or 'indirect'.") },
];

pub const ID: Attr = Attr {
    case_exact: true,
    mutability: Mutability::ReadOnly,
    returned: Returned::Always,
    unique: true,
    ..attr("id", Ty::String, "Unique identifier of the resource, issued by the service provider.")
};

pub const EXTERNAL_ID: Attr = Attr {
    case_exact: true,
    ..attr("externalId", Ty::String, "Identifier of the resource as defined by the provisioning client.")
};

const META_SUB: &[Attr] = &[
    attr("resourceType", Ty::String, "The name of the resource type."),
    attr("created", Ty::DateTime, "When the resource was added to the service provider."),
    attr("lastModified", Ty::DateTime, "When the resource was last modified."),
    attr("location", Ty::Reference, "The URI of the resource."),
    Attr { case_exact: true, ..attr("version", Ty::String, "The version (weak ETag) of the resource.") },
];

pub const META: Attr =
    Attr { mutability: Mutability::ReadOnly, sub: META_SUB, ..attr("meta", Ty::Complex, "Resource metadata.") };

pub const USER_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        unique: true,
        ..attr("userName", Ty::String, "Unique identifier for the user, typically an email address.")
    },
    complex("name", NAME, "The components of the user's name."),
    attr("displayName", Ty::String, "The name of the user, suitable for display."),
    attr("nickName", Ty::String, "The casual way to address the user."),
    Attr { ty: Ty::Reference, ..attr("profileUrl", Ty::Reference, "A URI to the user's online profile.") },
    attr("title", Ty::String, "The user's title, such as 'Vice President'."),
    attr("userType", Ty::String, "The relationship between the organisation and the user."),
    attr("preferredLanguage", Ty::String, "The user's preferred written or spoken language."),
    attr("locale", Ty::String, "The user's default location for localisation."),
    attr("timezone", Ty::String, "The user's time zone in IANA format."),
    attr("active", Ty::Boolean, "The user's administrative status; false blocks the account downstream."),
    Attr {
        mutability: Mutability::WriteOnly,
        returned: Returned::Never,
        ..attr("password", Ty::String, "Accepted for compatibility; never stored nor returned.")
    },
    multi("emails", PLURAL, "Email addresses for the user."),
    multi("phoneNumbers", PLURAL, "Phone numbers for the user."),
    multi("ims", PLURAL, "Instant messaging addresses for the user."),
    multi("photos", PLURAL, "URLs of photos of the user."),
    multi("addresses", ADDRESS, "Physical mailing addresses for the user."),
    Attr {
        mutability: Mutability::ReadOnly,
        ..multi("groups", GROUP_REF, "The groups the user belongs to (maintained by the server).")
    },
    multi("entitlements", PLURAL, "Entitlements of the user."),
    multi("roles", PLURAL, "Roles of the user."),
    multi("x509Certificates", PLURAL, "X.509 certificates of the user."),
];

const MANAGER: &[Attr] = &[
    attr("value", Ty::String, "The id of the manager's User resource."),
    attr("$ref", Ty::Reference, "The URI of the manager's User resource."),
    Attr { mutability: Mutability::ReadOnly, ..attr("displayName", Ty::String, "The manager's display name.") },
];

pub const ENTERPRISE_ATTRS: &[Attr] = &[
    attr("employeeNumber", Ty::String, "Numeric or alphanumeric identifier assigned by the organisation."),
    attr("costCenter", Ty::String, "Name of a cost center."),
    attr("organization", Ty::String, "Name of an organisation."),
    attr("division", Ty::String, "Name of a division."),
    attr("department", Ty::String, "Name of a department."),
    complex("manager", MANAGER, "The user's manager."),
];

const MEMBER: &[Attr] = &[
    Attr {
        case_exact: true,
        mutability: Mutability::Immutable,
        ..attr("value", Ty::String, "The id of the member resource.")
    },
    Attr { mutability: Mutability::Immutable, ..attr("$ref", Ty::Reference, "The URI of the member.") },
    Attr { mutability: Mutability::ReadOnly, ..attr("display", Ty::String, "The member's display name.") },
    Attr { mutability: Mutability::Immutable, ..attr("type", Ty::String, "'User' or 'Group'.") },
];

pub const GROUP_ATTRS: &[Attr] = &[
    Attr { required: true, unique: true, ..attr("displayName", Ty::String, "A human-readable name for the group.") },
    multi("members", MEMBER, "The members of the group."),
];

/// The two resource types. Groups and users live in the same staging tables, told apart by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "User" => Some(Kind::User),
            "Group" => Some(Kind::Group),
            _ => None,
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    pub fn core_schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
    pub fn core_attrs(self) -> &'static [Attr] {
        match self {
            Kind::User => USER_ATTRS,
            Kind::Group => GROUP_ATTRS,
        }
    }
    /// Extension schemas this kind carries, with their attributes.
    pub fn extensions(self) -> &'static [(&'static str, &'static [Attr])] {
        match self {
            Kind::User => &[(ENTERPRISE_SCHEMA, ENTERPRISE_ATTRS)],
            Kind::Group => &[],
        }
    }
}

pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Where an attribute lives in a stored document: at top level, or inside an extension object.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The extension URN (the key of the object holding the attribute), or None for core attributes.
    pub extension: Option<&'static str>,
    pub attr: &'static Attr,
    pub sub: Option<&'static Attr>,
}

/// A path that names nothing in the resource schemas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown schema {name:?} for {kind} resources")]
    UnknownSchema { name: String, kind: &'static str },
    #[error("unknown attribute {name:?} for {kind} resources")]
    UnknownAttribute { name: String, kind: &'static str },
    #[error("unknown sub-attribute {name:?} of {parent:?}")]
    UnknownSubAttribute { name: String, parent: &'static str },
}

impl From<SchemaError> for ScimError {
    fn from(e: SchemaError) -> Self {
        ScimError::invalid_path(e.to_string())
    }
}

/// Resolves `[schema:]attr[.sub]` case-insensitively for a resource kind. `id`, `externalId` and `meta` are
/// common attributes (RFC 7643 §3.1) and resolve for both kinds.
///
/// # Errors
/// The schema, attribute or sub-attribute is unknown.
pub fn resolve(kind: Kind, schema: Option<&str>, attr_name: &str, sub: Option<&str>) -> Result<Resolved, SchemaError> {
    let (extension, attrs): (Option<&'static str>, &'static [Attr]) = match schema {
        None => (None, kind.core_attrs()),
        Some(s) if s.eq_ignore_ascii_case(kind.core_schema()) => (None, kind.core_attrs()),
        Some(s) => match kind.extensions().iter().find(|(urn, _)| urn.eq_ignore_ascii_case(s)) {
            Some((urn, attrs)) => (Some(*urn), *attrs),
            None => return Err(SchemaError::UnknownSchema { name: s.to_owned(), kind: kind.as_str() }),
        },
    };
    let common = [&ID, &EXTERNAL_ID, &META];
    let attr = find(attrs, attr_name)
        .or_else(|| {
            if extension.is_none() { common.into_iter().find(|a| a.name.eq_ignore_ascii_case(attr_name)) } else { None }
        })
        .ok_or_else(|| SchemaError::UnknownAttribute { name: attr_name.to_owned(), kind: kind.as_str() })?;
    let sub = match sub {
        None => None,
        Some(name) => Some(
            find(attr.sub, name)
                .ok_or_else(|| SchemaError::UnknownSubAttribute { name: name.to_owned(), parent: attr.name })?,
        ),
    };
    Ok(Resolved { extension, attr, sub })
}

/// Whether a key starts with "urn:" (any case). `get` rather than slicing: a multibyte character may
/// straddle byte 4.
pub fn is_urn(key: &str) -> bool {
    key.len() > 4 && key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

/// Splits a key as Entra writes it in path-less PATCH values and we accept in bodies:
/// `name.givenName`, `urn:…:enterprise:2.0:User:department`, `urn:…:User:manager.value`.
/// The schema is everything before the last ':' (URNs contain dots, as in "2.0", before that colon).
pub fn split_key(key: &str) -> (Option<&str>, &str, Option<&str>) {
    let (schema, rest) = if is_urn(key) {
        match key.rfind(':') {
            Some(i) => (Some(&key[..i]), &key[i + 1..]),
            None => (None, key),
        }
    } else {
        (None, key)
    };
    match rest.split_once('.') {
        Some((a, s)) => (schema, a, Some(s)),
        None => (schema, rest, None),
    }
}

/// Normalises one attribute value against its definition: canonical sub-attribute names, booleans sent as
/// strings ("False", Entra) made booleans, a bare string for a complex attribute with a `value` (Entra's
/// manager) made `{"value": …}`, a one-element array for a single-valued complex attribute unwrapped, and
/// nulls, empty strings of complex members, empty arrays and objects dropped (RFC 7643 §2.5: unassigned).
/// Returns None for "unassigned".
pub fn normalize_value(a: &Attr, v: &Value, strict: bool) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    if a.multi {
        let items: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(n) = normalize_single(a, item, strict)? {
                out.push(n);
            }
        }
        return Ok(if out.is_empty() { None } else { Some(Value::Array(out)) });
    }
    match v {
        Value::Array(items) if a.ty == Ty::Complex && items.len() <= 1 => match items.first() {
            Some(first) => normalize_single(a, first, strict),
            None => Ok(None),
        },
        Value::Array(_) => {
            Err(ScimError::invalid_value(format!("attribute {:?} is single-valued but an array was given", a.name)))
        }
        other => normalize_single(a, other, strict),
    }
}

fn normalize_single(a: &Attr, v: &Value, strict: bool) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    let wrong = |what: &str| Err(ScimError::invalid_value(format!("attribute {:?} must be {what}, got {v}", a.name)));
    match a.ty {
        Ty::Complex => match v {
            Value::Object(obj) => {
                let mut out = Map::new();
                for (k, sv) in obj {
                    match find(a.sub, k) {
                        Some(sa) => {
                            if let Some(n) = normalize_value(sa, sv, strict)? {
                                out.insert(sa.name.to_string(), n);
                            }
                        }
                        None if strict => {
                            return Err(ScimError::invalid_value(format!(
                                "unknown sub-attribute {k:?} of {:?}",
                                a.name
                            )));
                        }
                        None => {}
                    }
                }
                Ok(if out.is_empty() { None } else { Some(Value::Object(out)) })
            }
            Value::String(s) if find(a.sub, "value").is_some() => {
                Ok(if s.is_empty() { None } else { Some(json!({ "value": s })) })
            }
            _ => wrong("an object"),
        },
        Ty::Boolean => match v {
            Value::Bool(_) => Ok(Some(v.clone())),
            // Entra ID sends booleans as the strings "True"/"False".
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
            _ => wrong("a boolean"),
        },
        Ty::Integer | Ty::Decimal => match v {
            Value::Number(_) => Ok(Some(v.clone())),
            Value::String(s) => match s.trim().parse::<serde_json::Number>() {
                Ok(n) => Ok(Some(Value::Number(n))),
                Err(_) => wrong("a number"),
            },
            _ => wrong("a number"),
        },
        Ty::String | Ty::Reference | Ty::DateTime | Ty::Binary => match v {
            Value::String(_) => Ok(Some(v.clone())),
            // Some clients send employee numbers and the like as JSON numbers.
            Value::Number(n) => Ok(Some(Value::String(n.to_string()))),
            Value::Bool(b) => Ok(Some(Value::String(b.to_string()))),
            _ => wrong("a string"),
        },
    }
}

/// Whether a client may write this attribute. Read-only attributes (id, meta, groups) in a body are
/// ignored rather than refused: IdPs echo them back in PUT bodies (RFC 7644 §3.5.1 says to ignore them).
/// Write-only ones (password) are dropped because this service never stores credentials.
pub fn is_stored(a: &Attr) -> bool {
    matches!(a.mutability, Mutability::ReadWrite | Mutability::Immutable)
}

/// Normalises a whole resource body (POST, PUT): canonical attribute names and values, the enterprise
/// extension under its URN, read-only and unknown attributes dropped (unknown ones refused in strict mode).
pub fn normalize_resource(kind: Kind, body: &Value, strict: bool) -> Result<Value, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    let mut out = Map::new();
    for (key, v) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some((urn, attrs)) = kind.extensions().iter().find(|(urn, _)| urn.eq_ignore_ascii_case(key)) {
            let Value::Object(ext) = v else {
                if v.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_value(format!("{urn} must be an object")));
            };
            for (ek, ev) in ext {
                match find(attrs, ek) {
                    Some(a) => set_normalized(&mut out, Some(urn), a, ev, strict)?,
                    None if strict => {
                        return Err(ScimError::invalid_value(format!("unknown attribute {ek:?} in {urn}")));
                    }
                    None => {}
                }
            }
            continue;
        }
        let (schema, name, sub) = split_key(key);
        match resolve(kind, schema, name, sub) {
            Ok(r) if r.sub.is_none() => set_normalized(&mut out, r.extension, r.attr, v, strict)?,
            Ok(r) => {
                // A dotted key in a body (`name.givenName`) is the same as the nested form.
                let nested = json!({ r.sub.map(|s| s.name).unwrap_or_default(): v });
                merge_complex(&mut out, r.extension, r.attr, &nested, strict)?;
            }
            Err(_) if is_urn(key) && !strict => {
                // Unknown extension schemas are ignored: Entra sends custom ones for mapped extra attributes.
            }
            Err(e) if strict => return Err(e.into()),
            Err(_) => {}
        }
    }
    Ok(Value::Object(out))
}

/// Sets a normalised attribute (or removes it when the value is unassigned) in a document.
pub fn set_normalized(
    doc: &mut Map<String, Value>,
    extension: Option<&str>,
    a: &Attr,
    v: &Value,
    strict: bool,
) -> Result<(), ScimError> {
    if !is_stored(a) {
        return Ok(());
    }
    let n = normalize_value(a, v, strict)?;
    let target = container(doc, extension);
    match n {
        Some(n) => {
            target.insert(a.name.to_string(), n);
        }
        None => {
            target.remove(a.name);
        }
    }
    prune_extension(doc, extension);
    Ok(())
}

/// Merges sub-attributes into a single-valued complex attribute (`name`, `manager`).
pub fn merge_complex(
    doc: &mut Map<String, Value>,
    extension: Option<&str>,
    a: &Attr,
    v: &Value,
    strict: bool,
) -> Result<(), ScimError> {
    if !is_stored(a) {
        return Ok(());
    }
    let target = container(doc, extension);
    let Some(Value::Object(add)) = normalize_value(a, v, strict)? else {
        // Sub-attributes given as null: remove those that were named.
        if let (Some(Value::Object(existing)), Value::Object(named)) = (target.get_mut(a.name), v) {
            for k in named.keys() {
                if let Some(sa) = find(a.sub, k) {
                    existing.remove(sa.name);
                }
            }
        }
        prune(doc, extension, a.name);
        return Ok(());
    };
    let entry = target.entry(a.name.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(existing) = entry {
        for (k, nv) in add {
            existing.insert(k, nv);
        }
        // Named-but-null sub-attributes clear the stored value.
        if let Value::Object(named) = v {
            for (k, sv) in named {
                if sv.is_null()
                    && let Some(sa) = find(a.sub, k)
                {
                    existing.remove(sa.name);
                }
            }
        }
    }
    prune(doc, extension, a.name);
    Ok(())
}

/// The object that holds an attribute: the document itself or its extension object (created on demand).
pub fn container<'a>(doc: &'a mut Map<String, Value>, extension: Option<&str>) -> &'a mut Map<String, Value> {
    match extension {
        None => doc,
        Some(urn) => {
            let slot = doc.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot {
                Value::Object(m) => m,
                _ => unreachable!("slot was just made an object"),
            }
        }
    }
}

/// Removes an attribute left empty by an edit, and an extension object left empty.
pub fn prune(doc: &mut Map<String, Value>, extension: Option<&str>, name: &str) {
    let target = container(doc, extension);
    let empty = match target.get(name) {
        Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        target.remove(name);
    }
    prune_extension(doc, extension);
}

fn prune_extension(doc: &mut Map<String, Value>, extension: Option<&str>) {
    if let Some(urn) = extension
        && doc.get(urn).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        doc.remove(urn);
    }
}

/// The `/Schemas` representation of one schema (RFC 7643 §7).
pub fn schema_json(id: &str, name: &str, description: &str, attrs: &[Attr], location: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": { "resourceType": "Schema", "location": location },
    })
}

fn attr_json(a: &Attr) -> Value {
    let ty = match a.ty {
        Ty::String => "string",
        Ty::Boolean => "boolean",
        Ty::Decimal => "decimal",
        Ty::Integer => "integer",
        Ty::DateTime => "dateTime",
        Ty::Reference => "reference",
        Ty::Complex => "complex",
        Ty::Binary => "binary",
    };
    let mutability = match a.mutability {
        Mutability::ReadWrite => "readWrite",
        Mutability::ReadOnly => "readOnly",
        Mutability::Immutable => "immutable",
        Mutability::WriteOnly => "writeOnly",
    };
    let returned = match a.returned {
        Returned::Default => "default",
        Returned::Always => "always",
        Returned::Never => "never",
    };
    let mut v = json!({
        "name": a.name,
        "type": ty,
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "caseExact": a.case_exact,
        "mutability": mutability,
        "returned": returned,
        "uniqueness": if a.unique { "server" } else { "none" },
    });
    if !a.sub.is_empty() {
        v["subAttributes"] = Value::Array(a.sub.iter().map(attr_json).collect());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_entra_user_body() {
        let body = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA, "urn:example:custom"],
            "USERNAME": "a@example.com",
            "active": "False",
            "meta": {"resourceType": "User"},
            "roles": [],
            "nickName": null,
            "password": "secret",
            "urn:example:custom": {"x": 1},
            "name": {"GivenName": "Ann", "familyName": null},
            ENTERPRISE_SCHEMA: {"department": "Sales", "manager": "abc"},
        });
        let n = normalize_resource(Kind::User, &body, false).unwrap();
        assert_eq!(
            n,
            json!({
                "userName": "a@example.com",
                "active": false,
                "name": {"givenName": "Ann"},
                ENTERPRISE_SCHEMA: {"department": "Sales", "manager": {"value": "abc"}},
            })
        );
    }

    #[test]
    fn strict_mode_names_unknown_attribute() {
        let e = normalize_resource(Kind::User, &json!({"userName": "a", "favouriteColour": "red"}), true).unwrap_err();
        assert!(e.detail.contains("favouriteColour"), "{}", e.detail);
    }

    #[test]
    fn bad_boolean_names_attribute() {
        let e = normalize_resource(Kind::User, &json!({"userName": "a", "active": "maybe"}), false).unwrap_err();
        assert!(e.detail.contains("active"), "{}", e.detail);
    }

    #[test]
    fn split_key_handles_urn_with_dots() {
        assert_eq!(
            split_key("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            (Some(ENTERPRISE_SCHEMA), "manager", Some("value"))
        );
        assert_eq!(split_key("name.givenName"), (None, "name", Some("givenName")));
        assert_eq!(split_key("active"), (None, "active", None));
        assert_eq!(split_key("abcé"), (None, "abcé", None));
        assert_eq!(split_key("urné:x"), (None, "urné:x", None));
    }

    #[test]
    fn manager_as_array_unwrapped() {
        let n = normalize_resource(
            Kind::User,
            &json!({"userName": "a", ENTERPRISE_SCHEMA: {"manager": [{"value": "m1"}]}}),
            false,
        )
        .unwrap();
        assert_eq!(n[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m1"}));
    }
}
