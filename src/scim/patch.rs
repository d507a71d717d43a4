//! PATCH (RFC 7644 §3.5.2): parsing a PatchOp request and applying its operations to a stored document,
//! including the dialects Entra ID and Okta actually send. Operations are applied to a copy by the caller, so
//! a request is atomic: every operation applies, or none does.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{self, CompareOp, Filter, PatchPath};
use super::schema::{self, Attr, Kind, Mutability, Resolved, Ty};

pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub raw_path: Option<String>,
    pub value: Option<Value>,
}

/// Parses a PatchOp body. Op names are matched case-insensitively because Entra ID sends `"Replace"`.
pub fn parse_request(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the PATCH body must be a JSON object"));
    };
    if let Some(schemas) = filter::get_ci(body, "schemas") {
        let ok = schemas
            .as_array()
            .is_some_and(|s| s.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_SCHEMA))));
        if !ok {
            return Err(ScimError::invalid_syntax(format!("a PATCH body must list the schema {PATCH_OP_SCHEMA}")));
        }
    }
    let ops = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .map(|(_, v)| v)
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH body needs an \"Operations\" array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("\"Operations\" is empty"));
    }
    ops.iter().enumerate().map(|(i, op)| parse_op(i, op)).collect()
}

fn parse_op(i: usize, op: &Value) -> Result<PatchOp, ScimError> {
    let name = filter::get_ci(op, "op")
        .and_then(Value::as_str)
        .ok_or_else(|| ScimError::invalid_syntax(format!("operation {i} has no \"op\"")))?;
    let kind = match name.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "replace" => OpKind::Replace,
        "remove" => OpKind::Remove,
        other => {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i}: unknown op {other:?} (expected add, replace or remove)"
            )));
        }
    };
    let raw_path = match filter::get_ci(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ScimError::invalid_path(format!("operation {i}: path must be a string, got {other}")));
        }
    };
    let mut value = filter::get_ci(op, "value").cloned();
    // A path that is a whole extension schema (`urn:…:enterprise:2.0:User`) addresses its attributes; it is
    // the same as a path-less operation whose value is keyed by that URN.
    if raw_path.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(schema::ENTERPRISE_SCHEMA)) {
        if kind == OpKind::Remove {
            // Removes every attribute of the extension (applied by `apply_op`, which sees no path).
            return Ok(PatchOp { op: kind, path: None, raw_path, value: None });
        }
        let mut wrapped = Map::new();
        wrapped.insert(schema::ENTERPRISE_SCHEMA.to_owned(), value.take().unwrap_or(Value::Null));
        return Ok(PatchOp { op: kind, path: None, raw_path, value: Some(Value::Object(wrapped)) });
    }
    let path = match &raw_path {
        None => None,
        Some(p) => Some(
            filter::parse_path(p)
                .map_err(|e| ScimError::invalid_path(format!("operation {i}: invalid path {p:?}: {e}")))?,
        ),
    };
    if kind != OpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_syntax(format!("operation {i} ({name}) needs a \"value\"")));
    }
    Ok(PatchOp { op: kind, path, raw_path, value })
}

/// One membership change named by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEdit {
    Add(String),
    Remove(String),
}

fn is_members(p: &PatchPath) -> bool {
    p.attr.attr.eq_ignore_ascii_case("members")
        && p.attr.sub.is_none()
        && p.attr.schema.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(schema::GROUP_SCHEMA))
}

fn member_ids(v: &Value) -> Option<Vec<String>> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return None,
    };
    items.into_iter().map(|m| filter::get_ci(m, "value").and_then(Value::as_str).map(str::to_owned)).collect()
}

/// Splits a group PATCH into membership edits by id and the remaining operations, when every operation
/// that touches `members` adds listed members or removes listed ones (`members[value eq "…"]`, or
/// `path: "members"` with a value list). The writer then changes only those rows instead of reading and
/// rewriting the whole membership, which matters for groups of many thousands. Returns None when an
/// operation needs the whole set (replace members, remove all members, other filters).
pub fn split_member_edits(ops: &[PatchOp]) -> Option<(Vec<PatchOp>, Vec<MemberEdit>)> {
    let mut rest = Vec::new();
    let mut edits = Vec::new();
    for op in ops {
        match &op.path {
            Some(p) if is_members(p) => match (&p.filter, op.op, &p.sub_after_filter) {
                (None, OpKind::Add, _) => {
                    edits.extend(member_ids(op.value.as_ref()?)?.into_iter().map(MemberEdit::Add))
                }
                (None, OpKind::Remove, _) => {
                    let v = op.value.as_ref().filter(|v| !v.is_null())?;
                    edits.extend(member_ids(v)?.into_iter().map(MemberEdit::Remove));
                }
                (Some(Filter::Compare(a, CompareOp::Eq, Value::String(id))), OpKind::Remove, None)
                    if a.schema.is_none() && a.sub.is_none() && a.attr.eq_ignore_ascii_case("value") =>
                {
                    edits.push(MemberEdit::Remove(id.clone()));
                }
                _ => return None,
            },
            Some(_) => rest.push(op.clone()),
            None => {
                let touches = op.value.as_ref().and_then(Value::as_object).is_some_and(|o| {
                    o.keys().any(|k| {
                        let (_, name, _) = schema::split_key(k);
                        name.eq_ignore_ascii_case("members")
                    })
                });
                if touches {
                    return None;
                }
                rest.push(op.clone());
            }
        }
    }
    Some((rest, edits))
}

/// Applies operations in order to `doc` (a normalised stored document; for groups including `members`).
/// The caller applies to a copy and keeps it only on success.
pub fn apply(kind: Kind, doc: &mut Map<String, Value>, ops: &[PatchOp], strict: bool) -> Result<(), ScimError> {
    for (i, op) in ops.iter().enumerate() {
        apply_op(kind, doc, op, strict).map_err(|mut e| {
            e.detail = format!("operation {i}: {}", e.detail);
            e
        })?;
    }
    Ok(())
}

fn apply_op(kind: Kind, doc: &mut Map<String, Value>, op: &PatchOp, strict: bool) -> Result<(), ScimError> {
    let value = op.value.as_ref().unwrap_or(&Value::Null);
    let Some(path) = &op.path else {
        if op.op == OpKind::Remove {
            if let Some((urn, _)) = kind
                .extensions()
                .iter()
                .find(|(urn, _)| op.raw_path.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(urn)))
            {
                doc.remove(*urn);
                return Ok(());
            }
            // RFC 7644 §3.5.2.2: remove without a path fails with noTarget.
            return Err(ScimError::no_target("remove requires a path"));
        }
        return apply_pathless(kind, doc, op.op, value, strict);
    };
    let a = &path.attr;
    let r = match schema::resolve(kind, a.schema.as_deref(), &a.attr, a.sub.as_deref()) {
        Ok(r) => r,
        // Outside strict mode an attribute this service does not know is ignored, as in POST and PUT:
        // Entra sends mapped custom extension attributes in the same PATCH as `active`, and refusing the
        // whole request would lose the deactivation with it.
        Err(e) if !strict => {
            tracing::debug!(path = op.raw_path.as_deref().unwrap_or_default(), reason = %e, "PATCH operation on an unknown attribute ignored");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if matches!(r.attr.mutability, Mutability::ReadOnly) || r.sub.is_some_and(|s| s.mutability == Mutability::ReadOnly)
    {
        return Err(ScimError::mutability(format!("attribute {:?} is read-only", r.attr.name)));
    }
    match &path.filter {
        None if op.op == OpKind::Remove => remove_attr(doc, r, op.value.as_ref(), strict),
        None => set_attr(doc, r, op.op, value, strict),
        Some(f) => apply_filtered(doc, r, f, path.sub_after_filter.as_deref(), op.op, value, strict),
    }
}

/// Path-less add/replace: the value is an object of attributes. Keys may be plain, dotted
/// (`name.givenName`) or URN-prefixed, as Entra ID sends them; read-only keys such as `id` (sent by Okta in
/// group renames) are ignored.
fn apply_pathless(
    kind: Kind,
    doc: &mut Map<String, Value>,
    op: OpKind,
    value: &Value,
    strict: bool,
) -> Result<(), ScimError> {
    let Value::Object(obj) = value else {
        return Err(ScimError::invalid_value("an add or replace without a path needs an object value"));
    };
    for (key, v) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some((urn, attrs)) = kind.extensions().iter().find(|(urn, _)| urn.eq_ignore_ascii_case(key)) {
            let Value::Object(ext) = v else {
                return Err(ScimError::invalid_value(format!("{urn} must be an object")));
            };
            for (ek, ev) in ext {
                match schema::find(attrs, ek) {
                    Some(a) => set_attr(doc, Resolved { extension: Some(urn), attr: a, sub: None }, op, ev, strict)?,
                    None if strict => {
                        return Err(ScimError::invalid_path(format!("unknown attribute {ek:?} in {urn}")));
                    }
                    None => {}
                }
            }
            continue;
        }
        let (schema_urn, name, sub) = schema::split_key(key);
        let r = match schema::resolve(kind, schema_urn, name, sub) {
            Ok(r) => r,
            Err(e) if strict => return Err(e.into()),
            Err(_) => continue,
        };
        if r.attr.mutability == Mutability::ReadOnly {
            continue;
        }
        set_attr(doc, r, op, v, strict)?;
    }
    Ok(())
}

fn set_attr(doc: &mut Map<String, Value>, r: Resolved, op: OpKind, v: &Value, strict: bool) -> Result<(), ScimError> {
    let a = r.attr;
    if let Some(sub) = r.sub {
        if a.multi {
            return Err(ScimError::invalid_path(format!(
                "{}.{} names a sub-attribute of a multi-valued attribute; select values with a filter, e.g. {}[type eq \"work\"].{}",
                a.name, sub.name, a.name, sub.name
            )));
        }
        let mut nested = Map::new();
        nested.insert(sub.name.to_string(), v.clone());
        return schema::merge_complex(doc, r.extension, a, &Value::Object(nested), strict);
    }
    if a.multi && op == OpKind::Add {
        let Some(Value::Array(new)) = schema::normalize_value(a, v, strict)? else {
            return Ok(());
        };
        let target = schema::container(doc, r.extension);
        let slot = target.entry(a.name.to_string()).or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        if let Value::Array(existing) = slot {
            for item in new {
                // Adding a value that is already there is not an error (RFC 7644 §3.5.2.1), nor a duplicate.
                if let Some(pos) = existing.iter().position(|e| same_value(a, e, &item)) {
                    existing[pos] = item;
                } else {
                    existing.push(item);
                }
            }
            keep_one_primary(existing);
        }
        return Ok(());
    }
    if !a.multi && a.ty == Ty::Complex && v.is_object() {
        // RFC 7644 §3.5.2.3: sub-attributes not named in the value are left unchanged.
        return schema::merge_complex(doc, r.extension, a, v, strict);
    }
    schema::set_normalized(doc, r.extension, a, v, strict)?;
    if a.multi
        && let Some(Value::Array(items)) = schema::container(doc, r.extension).get_mut(a.name)
    {
        keep_one_primary(items);
    }
    Ok(())
}

fn remove_attr(
    doc: &mut Map<String, Value>,
    r: Resolved,
    value: Option<&Value>,
    strict: bool,
) -> Result<(), ScimError> {
    let a = r.attr;
    let target = schema::container(doc, r.extension);
    match r.sub {
        Some(sub) => match target.get_mut(a.name) {
            Some(Value::Object(o)) => {
                o.remove(sub.name);
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    if let Value::Object(o) = item {
                        o.remove(sub.name);
                    }
                }
            }
            _ => {}
        },
        None => match value {
            // Entra removes members with `path: "members"` and the members to remove as the value.
            Some(v) if a.multi && !v.is_null() => {
                let Some(Value::Array(gone)) = schema::normalize_value(a, v, strict)? else {
                    return Ok(());
                };
                if let Some(Value::Array(items)) = target.get_mut(a.name) {
                    items.retain(|e| !gone.iter().any(|g| same_value(a, e, g)));
                }
            }
            _ => {
                target.remove(a.name);
            }
        },
    }
    schema::prune(doc, r.extension, a.name);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    doc: &mut Map<String, Value>,
    r: Resolved,
    f: &Filter,
    sub_name: Option<&str>,
    op: OpKind,
    value: &Value,
    strict: bool,
) -> Result<(), ScimError> {
    let a = r.attr;
    if !a.multi {
        return Err(ScimError::invalid_path(format!(
            "a value filter needs a multi-valued attribute; {:?} is single-valued",
            a.name
        )));
    }
    let sub: Option<&Attr> = match sub_name {
        None => None,
        Some(n) => Some(
            schema::find(a.sub, n)
                .ok_or_else(|| ScimError::invalid_path(format!("unknown sub-attribute {n:?} of {:?}", a.name)))?,
        ),
    };
    if sub.is_some_and(|s| s.mutability == Mutability::ReadOnly) {
        return Err(ScimError::mutability(format!("sub-attribute {:?} is read-only", sub_name.unwrap_or_default())));
    }
    let target = schema::container(doc, r.extension);
    let mut items = match target.remove(a.name) {
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    let hits: Vec<usize> = (0..items.len()).filter(|&i| filter::matches(f, &items[i])).collect();
    match op {
        OpKind::Remove => {
            if let Some(s) = sub {
                for &i in &hits {
                    if let Value::Object(o) = &mut items[i] {
                        o.remove(s.name);
                    }
                }
            } else {
                let hit: std::collections::HashSet<usize> = hits.iter().copied().collect();
                let mut i = 0;
                items.retain(|_| {
                    let keep = !hit.contains(&i);
                    i += 1;
                    keep
                });
            }
        }
        OpKind::Add | OpKind::Replace => {
            let patch = match sub {
                Some(s) => {
                    let mut m = Map::new();
                    m.insert(s.name.to_string(), value.clone());
                    Value::Object(m)
                }
                None => value.clone(),
            };
            let Value::Object(patch) = patch else {
                return Err(ScimError::invalid_value(format!(
                    "the value for a filtered {:?} path must be an object of sub-attributes",
                    a.name
                )));
            };
            if hits.is_empty() {
                // Entra adds a first work email as `emails[type eq "work"].value`: when the filter is a plain
                // equality (or a conjunction of them) the element it describes is created. Anything else has
                // no target (RFC 7644 §3.5.2.3).
                let Some(mut element) = template(f) else {
                    target.insert(a.name.to_string(), Value::Array(items));
                    return Err(ScimError::no_target(format!("no value of {:?} matches the filter", a.name)));
                };
                element.extend(patch);
                items.push(Value::Object(element));
            } else {
                for &i in &hits {
                    if let Value::Object(o) = &mut items[i] {
                        for (k, v) in &patch {
                            o.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }
    let items = Value::Array(items);
    schema::set_normalized(doc, r.extension, a, &items, strict)?;
    if let Some(Value::Array(items)) = schema::container(doc, r.extension).get_mut(a.name) {
        keep_one_primary(items);
    }
    Ok(())
}

/// The element a filter of `eq` comparisons joined by `and` describes: `type eq "work"` → {"type": "work"}.
fn template(f: &Filter) -> Option<Map<String, Value>> {
    match f {
        Filter::Compare(p, CompareOp::Eq, v) if p.schema.is_none() && p.sub.is_none() => {
            let mut m = Map::new();
            m.insert(p.attr.clone(), v.clone());
            Some(m)
        }
        Filter::And(l, r) => {
            let mut m = template(l)?;
            m.extend(template(r)?);
            Some(m)
        }
        _ => None,
    }
}

/// Two values of a multi-valued attribute are the same when their `value` sub-attributes are (members,
/// emails), or when they are equal as a whole (attributes without `value`).
fn same_value(a: &Attr, x: &Value, y: &Value) -> bool {
    let value_attr = schema::find(a.sub, "value");
    match (value_attr, x.get("value"), y.get("value")) {
        (Some(va), Some(Value::String(p)), Some(Value::String(q))) => {
            if va.case_exact {
                p == q
            } else {
                p.to_lowercase() == q.to_lowercase()
            }
        }
        _ => x == y,
    }
}

/// RFC 7643 §2.4: at most one value of a multi-valued attribute is primary; the last one set wins.
fn keep_one_primary(items: &mut [Value]) {
    let Some(last) = items.iter().rposition(|e| e.get("primary") == Some(&Value::Bool(true))) else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        if i != last
            && let Value::Object(o) = item
            && o.get("primary") == Some(&Value::Bool(true))
        {
            o.insert("primary".into(), Value::Bool(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::ENTERPRISE_SCHEMA;
    use serde_json::json;

    fn run(kind: Kind, doc: Value, body: Value) -> Result<Value, ScimError> {
        let ops = parse_request(&body)?;
        let Value::Object(mut m) = doc else { panic!("doc must be an object") };
        apply(kind, &mut m, &ops, false)?;
        Ok(Value::Object(m))
    }

    fn ops(list: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": list})
    }

    #[test]
    fn entra_replace_active_string() {
        let d = run(
            Kind::User,
            json!({"userName": "a", "active": true}),
            ops(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .unwrap();
        assert_eq!(d["active"], json!(false));
    }

    #[test]
    fn pathless_dotted_and_urn_keys() {
        let d = run(
            Kind::User,
            json!({"userName": "a", "name": {"givenName": "A", "familyName": "B"}}),
            ops(json!([{"op": "Replace", "value": {
                "name.givenName": "Ann",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
                "id": "ignored"
            }}])),
        )
        .unwrap();
        assert_eq!(d["name"], json!({"givenName": "Ann", "familyName": "B"}));
        assert_eq!(d[ENTERPRISE_SCHEMA]["department"], json!("Sales"));
        assert!(d.get("id").is_none());
    }

    #[test]
    fn members_add_and_remove_dialects() {
        let g = json!({"displayName": "G"});
        let g = run(
            Kind::Group,
            g,
            ops(
                json!([{"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}]}]),
            ),
        )
        .unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), 3);
        let g = run(Kind::Group, g, ops(json!([{"op": "Remove", "path": "members[value eq \"u2\"]"}]))).unwrap();
        let g =
            run(Kind::Group, g, ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}]))).unwrap();
        assert_eq!(g["members"], json!([{"value": "u3"}]));
        let g = run(Kind::Group, g, ops(json!([{"op": "Remove", "path": "members"}]))).unwrap();
        assert!(g.get("members").is_none());
    }

    #[test]
    fn filtered_add_creates_missing_element() {
        let d = run(
            Kind::User,
            json!({"userName": "a"}),
            ops(json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@x.com"}])),
        )
        .unwrap();
        assert_eq!(d["emails"], json!([{"type": "work", "value": "a@x.com"}]));
        let d = run(
            Kind::User,
            d,
            ops(json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.com"}])),
        )
        .unwrap();
        assert_eq!(d["emails"], json!([{"type": "work", "value": "b@x.com"}]));
    }

    #[test]
    fn remove_without_path_is_no_target() {
        let e = run(Kind::User, json!({"userName": "a"}), ops(json!([{"op": "remove"}]))).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::NoTarget));
    }

    #[test]
    fn unknown_op_and_readonly_path_rejected() {
        let e = run(Kind::User, json!({"userName": "a"}), ops(json!([{"op": "merge", "path": "title", "value": "x"}])))
            .unwrap_err();
        assert!(e.detail.contains("merge"));
        let e = run(Kind::User, json!({"userName": "a"}), ops(json!([{"op": "replace", "path": "id", "value": "x"}])))
            .unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::Mutability));
    }

    #[test]
    fn manager_bare_string_and_array() {
        let d = run(Kind::User, json!({"userName": "a"}), ops(json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m1"}]))).unwrap();
        assert_eq!(d[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m1"}));
        let d = run(Kind::User, d, ops(json!([{"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": [{"value": "m2"}]}]))).unwrap();
        assert_eq!(d[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m2"}));
        let d = run(
            Kind::User,
            d,
            ops(
                json!([{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]),
            ),
        )
        .unwrap();
        assert!(d.get(ENTERPRISE_SCHEMA).is_none());
    }

    #[test]
    fn member_edits_split_off() {
        let parsed = parse_request(&ops(json!([
            {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "Remove", "path": "members[value eq \"u3\"]"},
            {"op": "remove", "path": "members", "value": [{"value": "u4"}]},
            {"op": "replace", "path": "displayName", "value": "New"},
        ])))
        .unwrap();
        let (rest, edits) = split_member_edits(&parsed).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            edits,
            ["u1", "u2"]
                .map(|s| MemberEdit::Add(s.into()))
                .into_iter()
                .chain(["u3", "u4"].map(|s| MemberEdit::Remove(s.into())))
                .collect::<Vec<_>>()
        );
        for needs_whole_set in [
            json!([{"op": "replace", "path": "members", "value": [{"value": "u1"}]}]),
            json!([{"op": "remove", "path": "members"}]),
            json!([{"op": "replace", "value": {"members": [{"value": "u1"}]}}]),
            json!([{"op": "remove", "path": "members[display eq \"x\"]"}]),
        ] {
            assert!(split_member_edits(&parse_request(&ops(needs_whole_set)).unwrap()).is_none());
        }
    }

    #[test]
    fn unknown_paths_ignored_unless_strict() {
        let body = ops(json!([
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:custom:2.0:User:worksiteId", "value": "W1"},
            {"op": "Replace", "path": "active", "value": "False"},
        ]));
        let d = run(Kind::User, json!({"userName": "a", "active": true}), body.clone()).unwrap();
        assert_eq!(d["active"], json!(false));
        let parsed = parse_request(&body).unwrap();
        let Value::Object(mut m) = json!({"userName": "a"}) else { unreachable!() };
        let e = apply(Kind::User, &mut m, &parsed, true).unwrap_err();
        assert!(e.detail.contains("custom"), "{}", e.detail);
    }

    #[test]
    fn whole_extension_path() {
        let d = run(
            Kind::User,
            json!({"userName": "a"}),
            ops(json!([{"op": "add", "path": ENTERPRISE_SCHEMA, "value": {"department": "Ops"}}])),
        )
        .unwrap();
        assert_eq!(d[ENTERPRISE_SCHEMA]["department"], json!("Ops"));
    }

    #[test]
    fn remove_a_whole_extension() {
        let d = run(
            Kind::User,
            json!({"userName": "a", ENTERPRISE_SCHEMA: {"department": "Ops", "manager": {"value": "m"}}}),
            ops(json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}])),
        )
        .unwrap();
        assert_eq!(d, json!({"userName": "a"}));
        let e =
            run(Kind::Group, json!({"displayName": "g"}), ops(json!([{"op": "remove", "path": ENTERPRISE_SCHEMA}])));
        assert!(e.is_err(), "groups have no enterprise extension");
    }

    #[test]
    fn primary_stays_unique() {
        let d = run(
            Kind::User,
            json!({"userName": "a", "emails": [{"value": "a@x.com", "primary": true}]}),
            ops(json!([{"op": "add", "path": "emails", "value": [{"value": "b@x.com", "primary": true}]}])),
        )
        .unwrap();
        assert_eq!(d["emails"][0]["primary"], json!(false));
        assert_eq!(d["emails"][1]["primary"], json!(true));
    }
}
