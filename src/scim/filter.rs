//! The SCIM filter and PATCH-path language (RFC 7644 §3.4.2.2, §3.5.2): parsing and evaluation
//! against stored JSON documents.
//!
//! The scanner is driven by the recursive-descent parser rather than run ahead of it, because the
//! language is context-sensitive: Microsoft Entra ID sends unquoted values
//! (`userName eq alice@contoso.com`) that can only be read once the parser knows a value is next.
//! `FilterError::position` is a 1-based character (not byte) index into the input.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// Bounds that keep a hostile filter from exhausting the stack or the CPU.
const MAX_DEPTH: usize = 32;
const MAX_ATTR_EXPRS: usize = 256;

const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// An attribute reference: optional schema URN, attribute name, optional sub-attribute. Names as
/// written by the client (case preserved).
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    pub schema: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

const OPERATORS: [(&str, CompareOp); 9] = [
    ("eq", CompareOp::Eq),
    ("ne", CompareOp::Ne),
    ("co", CompareOp::Co),
    ("sw", CompareOp::Sw),
    ("ew", CompareOp::Ew),
    ("gt", CompareOp::Gt),
    ("ge", CompareOp::Ge),
    ("lt", CompareOp::Lt),
    ("le", CompareOp::Le),
];

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    /// The value is a String, Number, Bool or Null.
    Compare(AttrPath, CompareOp, Value),
    /// `emails[type eq "work"]`; `then` holds a trailing `.value eq "x"` / `.value pr`, which must
    /// hold for the same element. Paths in `filter` and `then` are relative to the element.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
        then: Option<Box<Filter>>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at character {position} of the filter)")]
pub struct FilterError {
    pub message: String,
    /// 1-based character index of the offending input.
    pub position: usize,
}

/// PATCH operation path: attrPath ["[" valFilter "]"] ["." subAttr] (RFC 7644 §3.5.2 PATH grammar).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// `attr.sub` is the sub-attribute when there is no filter, e.g. `name.givenName`.
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub_after_filter: Option<String>,
}

/// Parses a `filter` query parameter or `/.search` filter.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser::start(input, "filter")?;
    let filter = parser.parse_or()?;
    parser.finish("expected \"and\", \"or\" or the end of the filter")?;
    Ok(filter)
}

/// Parses the `path` of a PATCH operation.
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut parser = Parser::start(input, "path")?;
    let attr = parser.parse_attr_path()?;
    let (mut filter, mut sub_after_filter) = (None, None);
    if parser.peek() == Some('[') {
        filter = Some(parser.parse_bracket(&attr)?);
        if parser.eat_char('.') {
            sub_after_filter = Some(parser.parse_sub_name()?);
        }
    }
    parser.finish("expected the end of the path")?;
    Ok(PatchPath { attr, filter, sub_after_filter })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Characters that may appear anywhere in `[URI ":"] ATTRNAME ["." subAttr]`.
fn is_path_char(c: char) -> bool {
    is_name_char(c) || matches!(c, '.' | ':' | '$')
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    exprs: usize,
    in_value_filter: bool,
}

impl Parser {
    /// A parser positioned at the first non-blank character; `what` names empty input's error.
    fn start(input: &str, what: &str) -> Result<Self, FilterError> {
        let mut parser = Self { chars: input.chars().collect(), pos: 0, depth: 0, exprs: 0, in_value_filter: false };
        parser.skip_ws();
        match parser.peek() {
            None => parser.fail(0, format!("empty {what}")),
            Some(_) => Ok(parser),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat_char(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        self.pos += usize::from(found);
        found
    }

    fn skip_ws(&mut self) {
        self.eat_while(char::is_whitespace);
    }

    /// Advances over the characters matching `pred` and returns them.
    fn eat_while(&mut self, pred: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.text(start)
    }

    fn fail<T>(&self, at: usize, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError { message: message.into(), position: at + 1 })
    }

    fn text(&self, from: usize) -> String {
        self.chars[from..self.pos].iter().collect()
    }

    /// The alphanumeric run at the cursor, not consumed; keywords and operators are read this
    /// way so that `eqq` is reported whole. It is ASCII, so its length is its character count.
    fn peek_word(&mut self) -> String {
        let start = self.pos;
        let word = self.eat_while(|c| c.is_ascii_alphanumeric());
        self.pos = start;
        word
    }

    /// Names the token at `at` so that error messages show the client what was rejected.
    fn describe(&self, at: usize) -> String {
        let delimiter = |c: &char| c.is_whitespace() || "()[]".contains(*c);
        match self.chars.get(at) {
            None => "the end of the input".to_string(),
            Some('"') => "a string".to_string(),
            Some(c) if delimiter(c) => format!("\"{c}\""),
            Some(_) => {
                let rest = self.chars[at..].iter().take_while(|c| !delimiter(c)).take(40);
                format!("\"{}\"", rest.collect::<String>())
            }
        }
    }

    fn finish(&mut self, expectation: &str) -> Result<(), FilterError> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => {
                let found = self.describe(self.pos);
                self.fail(self.pos, format!("unexpected {found}; {expectation}"))
            }
        }
    }

    /// Consumes the logical keyword `kw` (case-insensitive) if it is next.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let found = self.peek_word().eq_ignore_ascii_case(kw);
        self.pos += if found { kw.len() } else { 0 };
        found
    }

    /// Parses the contents of a `(...)` or `[...]` whose opening character is at `open`, which
    /// the cursor has just passed. Each group is one nesting level against `MAX_DEPTH`.
    fn parse_group(&mut self, open: usize, close: char) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(open, format!("filter is nested more than {MAX_DEPTH} levels deep"));
        }
        let inner = self.parse_or()?;
        self.skip_ws();
        if !self.eat_char(close) {
            let opener = self.chars[open];
            let message = match self.peek() {
                None => format!(
                    "expected \"{close}\" to close the \"{opener}\" at character {}, but the input ended",
                    open + 1
                ),
                Some(_) => format!("expected \"and\", \"or\" or \"{close}\" but found {}", self.describe(self.pos)),
            };
            return self.fail(self.pos, message);
        }
        self.depth -= 1;
        Ok(inner)
    }

    // Precedence (RFC 7644 §3.4.2.2, table 4): not > and > or; both binary operators associate left.
    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        while self.eat_keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.parse_and()?));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        while self.eat_keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.parse_unary()?));
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek().is_none() {
            return self.fail(start, "expected an attribute expression, \"not\" or \"(\" but the input ended");
        }
        if self.eat_char('(') {
            return self.parse_group(start, ')');
        }
        // `not` is the keyword only as a whole word, not as the start of `notes` or `not.x`.
        let whole = !self.chars.get(start + 3).is_some_and(|&c| is_path_char(c));
        if !(whole && self.peek_word().eq_ignore_ascii_case("not")) {
            return self.parse_attr_expr();
        }
        self.pos += 3;
        self.skip_ws();
        let open = self.pos;
        if !self.eat_char('(') {
            let found = self.describe(open);
            return self.fail(open, format!("\"not\" must be followed by a parenthesised filter, found {found}"));
        }
        Ok(Filter::Not(Box::new(self.parse_group(open, ')')?)))
    }

    fn parse_attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        let text = self.eat_while(is_path_char);
        if text.is_empty() {
            let found = self.describe(start);
            return self.fail(start, format!("expected an attribute name but found {found}"));
        }
        split_attr_path(&text).or_else(|message| self.fail(start, message))
    }

    /// The sub-attribute after `]` in `emails[type eq "work"].value`.
    fn parse_sub_name(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let name = self.eat_while(|c| is_name_char(c) || c == '$');
        check_name(&name, &format!("].{name}")).or_else(|message| self.fail(start, message))?;
        Ok(name)
    }

    fn parse_attr_expr(&mut self) -> Result<Filter, FilterError> {
        let start = self.pos;
        let path = self.parse_attr_path()?;
        if self.peek() != Some('[') {
            return self.parse_comparison(path, start);
        }
        let filter = Box::new(self.parse_bracket(&path)?);
        let mut then = None;
        if self.eat_char('.') {
            let sub_at = self.pos;
            let relative = AttrPath { schema: None, attr: self.parse_sub_name()?, sub: None };
            then = Some(Box::new(self.parse_comparison(relative, sub_at)?));
        }
        Ok(Filter::ValuePath { path, filter, then })
    }

    /// `"[" valFilter "]"`, with the cursor on the `[`.
    fn parse_bracket(&mut self, path: &AttrPath) -> Result<Filter, FilterError> {
        let open = self.pos;
        if self.in_value_filter {
            return self.fail(open, "value filters cannot be nested (RFC 7644 §3.4.2.2)");
        }
        if let Some(sub) = &path.sub {
            let message = format!("a value filter must follow an attribute, not the sub-attribute \"{sub}\"");
            return self.fail(open, message);
        }
        self.pos += 1;
        self.in_value_filter = true;
        let inner = self.parse_group(open, ']')?;
        self.in_value_filter = false;
        Ok(inner)
    }

    /// The operator and value after the attribute path written at `path_at`: `pr`, or
    /// `compareOp compValue`. Each call is one attribute expression against `MAX_ATTR_EXPRS`.
    fn parse_comparison(&mut self, path: AttrPath, path_at: usize) -> Result<Filter, FilterError> {
        self.exprs += 1;
        if self.exprs > MAX_ATTR_EXPRS {
            return self.fail(path_at, format!("filter has more than {MAX_ATTR_EXPRS} attribute expressions"));
        }
        let written = self.text(path_at);
        self.skip_ws();
        let op_at = self.pos;
        let word = self.peek_word();
        if word.is_empty() {
            let found = self.describe(op_at);
            return self.fail(op_at, format!("expected an operator after \"{written}\" but found {found}"));
        }
        self.pos += word.len();
        if word.eq_ignore_ascii_case("pr") {
            self.skip_ws();
            let next = self.peek_word();
            let ends = matches!(self.peek(), None | Some(')' | ']'));
            if !ends && !next.eq_ignore_ascii_case("and") && !next.eq_ignore_ascii_case("or") {
                let found = self.describe(self.pos);
                return self.fail(self.pos, format!("\"pr\" takes no value, but found {found}"));
            }
            return Ok(Filter::Present(path));
        }
        // Operators are case-insensitive (RFC 7644 §3.4.2.2).
        let Some(&(_, op)) = OPERATORS.iter().find(|(name, _)| name.eq_ignore_ascii_case(&word)) else {
            return self.fail(op_at, format!("unknown operator \"{word}\""));
        };
        let word = word.to_ascii_lowercase();
        let value = self.parse_value(&word)?;
        // RFC 7644 §3.4.2.2: gt/ge/lt/le with a boolean or null value is invalidFilter.
        let ordering = matches!(op, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le);
        if ordering && matches!(value, Value::Bool(_) | Value::Null) {
            return self.fail(op_at, format!("\"{word}\" cannot compare a boolean or null value"));
        }
        Ok(Filter::Compare(path, op, value))
    }

    fn parse_value(&mut self, op: &str) -> Result<Value, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None | Some(')' | ']') => self.fail(start, format!("expected a value after \"{op}\"")),
            Some('"') => self.parse_string(),
            Some(_) => Ok(bare_value(&self.eat_while(|c| !c.is_whitespace() && c != ')' && c != ']'))),
        }
    }

    fn parse_string(&mut self) -> Result<Value, FilterError> {
        let start = self.pos;
        let mut i = start + 1;
        loop {
            match self.chars.get(i) {
                None => return self.fail(start, "unterminated string"),
                Some('\\') => i += 2,
                Some('"') => break,
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        let literal = self.text(start);
        // compValue strings are JSON strings (RFC 7644 §3.4.2.2), so serde_json decodes exactly
        // the right escape set, including \uXXXX surrogate pairs.
        match serde_json::from_str::<String>(&literal) {
            Ok(s) => Ok(Value::String(s)),
            Err(e) => self.fail(start, format!("invalid string {literal}: {e}")),
        }
    }
}

/// Splits `[URI ":"] ATTRNAME ["." subAttr]`. A schema URN may itself contain dots
/// (`...:enterprise:2.0:User`), so the attribute starts after the last colon.
fn split_attr_path(text: &str) -> Result<AttrPath, String> {
    let (schema, rest) = match text.rfind(':') {
        Some(i) => (Some(&text[..i]), &text[i + 1..]),
        None => (None, text),
    };
    if schema.is_some_and(str::is_empty) {
        return Err(format!("missing schema URN before \":\" in \"{text}\""));
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub)),
        None => (rest, None),
    };
    check_name(attr, text)?;
    if let Some(sub) = sub {
        check_name(sub, text)?;
    }
    let schema = schema.map(str::to_string);
    Ok(AttrPath { schema, attr: attr.to_string(), sub: sub.map(str::to_string) })
}

/// ATTRNAME = ALPHA *(nameChar), plus the reserved `$ref` (RFC 7643 §2.1, §2.3.7).
fn check_name(name: &str, whole: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.eq_ignore_ascii_case("$ref") || (starts_alpha && chars.all(is_name_char)) {
        Ok(())
    } else if name.is_empty() {
        Err(format!("missing attribute name in \"{whole}\""))
    } else {
        Err(format!("invalid attribute name \"{name}\" in \"{whole}\""))
    }
}

/// Classifies an unquoted value token. JSON literals are case-insensitive (RFC 7644 §3.4.2.2);
/// anything that is neither a literal nor a JSON number is the legacy unquoted string Microsoft
/// Entra ID still sends (`externalId eq jyoung`), so it is accepted as a string.
fn bare_value(word: &str) -> Value {
    match word.to_ascii_lowercase().as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        // A number only when it reads back exactly as written: `1e3`, `1.50` or a 25-digit employee id
        // would otherwise be rewritten and never match the string the IdP means.
        _ => match serde_json::from_str::<Value>(word) {
            Ok(Value::Number(n)) if n.to_string() == word => Value::Number(n),
            _ => Value::String(word.to_string()),
        },
    }
}

/// Does `doc` (a JSON object, a SCIM resource) match the filter?
pub fn matches(filter: &Filter, doc: &Value) -> bool {
    eval(filter, doc, None)
}

/// Case-insensitive lookup of an attribute in a JSON object (RFC 7643 §2.1: attribute names are
/// case-insensitive). ASCII folding suffices because ATTRNAME and schema URNs are ASCII.
pub fn get_ci<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    let folded = || map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    map.get(name).or_else(folded)
}

/// `parent` names the multi-valued attribute whose element `doc` is while evaluating inside a
/// value path, so that case-exactness of relative paths (`members[value eq ...]`) is known.
fn eval(filter: &Filter, doc: &Value, parent: Option<&str>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, doc, parent) && eval(b, doc, parent),
        Filter::Or(a, b) => eval(a, doc, parent) || eval(b, doc, parent),
        Filter::Not(inner) => !eval(inner, doc, parent),
        Filter::Present(path) => is_present(doc, path),
        Filter::Compare(path, op, value) => {
            let exact = case_exact(parent, path);
            match op {
                // `ne` is the negation of `eq`, so an absent attribute is "not equal" to anything.
                CompareOp::Ne => !compare(doc, path, CompareOp::Eq, value, exact),
                _ => compare(doc, path, *op, value, exact),
            }
        }
        Filter::ValuePath { path, filter, then } => {
            let Some(target) = lookup(doc, path) else { return false };
            let attr = Some(path.attr.as_str());
            // Both parts must hold for the same element, not for two different ones.
            let both = |el: &Value| eval(filter, el, attr) && then.as_deref().is_none_or(|t| eval(t, el, attr));
            elements(target).iter().any(both)
        }
    }
}

/// The attribute named by `path` (ignoring `sub`). Extension attributes live in the object stored
/// under their schema URN (RFC 7643 §3.3); core-schema URN prefixes address the top level.
fn lookup<'a>(doc: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    let base = match &path.schema {
        Some(urn) if !urn.eq_ignore_ascii_case(CORE_USER) && !urn.eq_ignore_ascii_case(CORE_GROUP) => get_ci(doc, urn)?,
        _ => doc,
    };
    get_ci(base, &path.attr).filter(|v| !v.is_null())
}

/// A multi-valued attribute's elements, or a single value as a one-element slice.
fn elements(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    }
}

/// RFC 7643 §2.5: null, empty strings and empty arrays or objects count as unassigned.
fn has_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(has_value),
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

fn is_present(doc: &Value, path: &AttrPath) -> bool {
    match (lookup(doc, path), &path.sub) {
        (None, _) => false,
        (Some(target), None) => has_value(target),
        (Some(target), Some(sub)) => elements(target).iter().any(|el| get_ci(el, sub).is_some_and(has_value)),
    }
}

/// The values a comparison is made against. Multi-valued attributes contribute every element; an
/// element of a multi-valued complex attribute named without a sub-attribute contributes its
/// `value` (RFC 7644 §3.4.2.2), so `emails co "@example.com"` searches the addresses.
fn candidates<'a>(doc: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(target) = lookup(doc, path) else { return Vec::new() };
    let found: Vec<&Value> = match (&path.sub, target) {
        (Some(sub), _) => elements(target).iter().filter_map(|el| get_ci(el, sub)).flat_map(elements).collect(),
        (None, Value::Array(items)) => {
            let value_of = |el: &'a Value| if el.is_object() { get_ci(el, "value") } else { Some(el) };
            items.iter().filter_map(value_of).collect()
        }
        (None, single) => vec![single],
    };
    found.into_iter().filter(|v| !v.is_null()).collect()
}

/// Attributes whose strings compare case-sensitively: `id`, `externalId` and `meta.version` are
/// caseExact (RFC 7643 §3.1), and `members.value` holds a resource `id` (§4.2). Everything else
/// in the core User and Group schemas (§4.1, §4.2) is caseExact=false.
fn case_exact(parent: Option<&str>, path: &AttrPath) -> bool {
    let (attr, sub) = match parent {
        Some(parent) => (parent, Some(path.attr.as_str())),
        None => (path.attr.as_str(), path.sub.as_deref()),
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match sub {
        // A bare `members` compares against `members.value` (see `candidates`).
        None => is(attr, "id") || is(attr, "externalId") || is(attr, "members"),
        Some(sub) => (is(attr, "meta") && is(sub, "version")) || (is(attr, "members") && is(sub, "value")),
    }
}

fn compare(doc: &Value, path: &AttrPath, op: CompareOp, want: &Value, exact: bool) -> bool {
    if want.is_null() {
        // RFC 7643 §2.5: null and unassigned are the same state, so `eq null` asks "absent?".
        return op == CompareOp::Eq && !is_present(doc, path);
    }
    candidates(doc, path).into_iter().any(|actual| compare_one(actual, op, want, exact))
}

/// One stored value against the filter's value. Mismatched types never match (no coercion:
/// stored documents are already normalised to their schema types).
fn compare_one(actual: &Value, op: CompareOp, want: &Value, exact: bool) -> bool {
    let ord = match (actual, want) {
        (Value::String(a), Value::String(b)) => {
            let fold = |s: &str| if exact { s.to_string() } else { s.to_lowercase() };
            let (a, b) = (fold(a.as_str()), fold(b.as_str()));
            match op {
                CompareOp::Co => return a.contains(b.as_str()),
                CompareOp::Sw => return a.starts_with(b.as_str()),
                CompareOp::Ew => return a.ends_with(b.as_str()),
                // Lexicographic order also orders ISO 8601 UTC dateTimes correctly.
                _ => a.cmp(&b),
            }
        }
        (Value::Number(a), Value::Number(b)) => match num_cmp(a, b) {
            Some(ord) => ord,
            None => return false,
        },
        (Value::Bool(a), Value::Bool(b)) => return op == CompareOp::Eq && a == b,
        // Entra's unquoted legacy form (`externalId eq 12345`) reads as a number; against a string
        // attribute it means the digits as written.
        (Value::String(_), Value::Number(n)) => {
            return compare_one(actual, op, &Value::String(n.to_string()), exact);
        }
        _ => return false,
    };
    match op {
        CompareOp::Eq => ord.is_eq(),
        CompareOp::Gt => ord.is_gt(),
        CompareOp::Ge => ord.is_ge(),
        CompareOp::Lt => ord.is_lt(),
        CompareOp::Le => ord.is_le(),
        // `ne` reaches here only as `not eq` (see `eval`); co/sw/ew apply to strings only.
        CompareOp::Ne | CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    // Integers exactly, so that large integers are not rounded through f64.
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn p(input: &str) -> Filter {
        parse_filter(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn path(schema: Option<&str>, attr: &str, sub: Option<&str>) -> AttrPath {
        AttrPath { schema: schema.map(str::to_string), attr: attr.to_string(), sub: sub.map(str::to_string) }
    }

    fn eq(attr: &str, value: Value) -> Filter {
        Filter::Compare(path(None, attr, None), CompareOp::Eq, value)
    }

    fn user() -> Value {
        json!({
            "schemas": [CORE_USER, ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "jyoung",
            "userName": "bjensen",
            "displayName": "Émilie Ångström",
            "active": true,
            "title": "",
            "nickName": null,
            "phoneNumbers": [],
            "loginCount": 42,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"lastModified": "2011-05-13T04:42:34Z", "version": "W/\"a330bc54f0671c9\""},
            ENTERPRISE: {"department": "Sales", "manager": {"value": "26118915-6090"}}
        })
    }

    #[test]
    fn parse_shapes() {
        let and = Filter::And(Box::new(eq("b", json!(2))), Box::new(eq("c", json!(3))));
        assert_eq!(p("a eq 1 or b eq 2 and c eq 3"), Filter::Or(Box::new(eq("a", json!(1))), Box::new(and)));
        assert!(matches!(p("(a eq 1 or b eq 2) and c eq 3"), Filter::And(..)));
        assert_eq!(p("NOT (a pr)"), Filter::Not(Box::new(Filter::Present(path(None, "a", None)))));
        let dept = Filter::Compare(path(Some(ENTERPRISE), "department", None), CompareOp::Eq, json!("Sales"));
        assert_eq!(p(&format!(r#"{ENTERPRISE}:department eq "Sales""#)), dept);
        let then = Some(Box::new(eq("value", json!("a@b"))));
        let emails =
            Filter::ValuePath { path: path(None, "emails", None), filter: Box::new(eq("type", json!("work"))), then };
        assert_eq!(p(r#"emails[type eq "work"].value eq "a@b""#), emails);
        // Microsoft Entra ID's unquoted legacy values are read as strings.
        assert_eq!(p("externalId eq jyoung"), eq("externalId", json!("jyoung")));
        assert_eq!(p("userName eq alice@contoso.com"), eq("userName", json!("alice@contoso.com")));
        assert_eq!(p(r#"a eq "\u00e9\n\"""#), eq("a", json!("é\n\"")));
        assert_eq!(p("a ge -1.5"), Filter::Compare(path(None, "a", None), CompareOp::Ge, json!(-1.5)));
    }

    #[test]
    fn evaluation() {
        let hits = [
            r#"userName eq "bjensen" or active eq false and userName eq "x""#,
            r#"not (userName eq "x") and nickName ne "x" and missing ne "x""#,
            r#"userName co "jen" and userName sw "bje" and userName ew "sen""#,
            "loginCount gt 41 and loginCount ge 42 and loginCount lt 42.5 and loginCount le 42",
            r#"meta.lastModified gt "2011-05-13T04:42:33Z" and active eq true and nickName eq null"#,
            r#"USERNAME EQ "BJENSEN" and userName eq "Bjensen" and displayName sw "émilie å""#,
            r#"userName Eq "x" Or Active eq TRUE"#,
            "externalId eq jyoung",
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Sales""#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen""#,
            r#"emails co "jensen.org" and emails eq "babs@jensen.org" and emails.type eq "home""#,
            r#"emails.primary eq true and schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"emails[type eq "work" and value co "@example.com"] and emails[TYPE eq "WORK"] and emails[type eq work]"#,
            r#"emails[type eq "work"].value eq "bjensen@example.com" and emails[type eq "work"].value pr"#,
            "emails pr and name.givenName pr and not (title pr)",
        ];
        let misses = [
            r#"(userName eq "bjensen" or active eq false) and userName eq "x""#,
            r#"NOT(userName eq "bjensen") or userName ne "bjensen" or userName ew "bje""#,
            "loginCount gt 42 or loginCount le 41 or loginCount co 4 or active eq false or userName eq null",
            r#"meta.lastModified lt "2011-01-01T00:00:00Z" or loginCount eq "42" or userName eq 42"#,
            r#"externalId eq "JYOUNG" or id eq "2819C223-7F76-453A-919D-413861904646""#,
            r#"department eq "Sales""#,
            r#"emails[type eq "home" and value co "@example.com"] or emails[type eq "home"].value co "@example""#,
            "title pr or phoneNumbers pr or nickName pr or missing pr",
        ];
        let doc = user();
        for filter in hits {
            assert!(matches(&p(filter), &doc), "should match: {filter}");
        }
        for filter in misses {
            assert!(!matches(&p(filter), &doc), "should not match: {filter}");
        }
        let group = json!({"members": [{"value": "2819c223", "display": "Babs"}]});
        assert!(matches(&p(r#"members eq "2819c223" and members[display eq "BABS"]"#), &group));
        assert!(!matches(&p(r#"members[value eq "2819C223"]"#), &group));
    }

    #[test]
    fn parse_errors() {
        let bomb = format!("{}a pr{}", "not (".repeat(100), ")".repeat(100));
        let wide = ["a pr"; 300].join(" or ");
        let cases = [
            ("", "empty filter"),
            ("   ", "empty filter"),
            ("userName eq", r#"expected a value after "eq""#),
            (r#"userName eqq "x""#, r#"unknown operator "eqq""#),
            (r#"userName eq "x" extra"#, r#"unexpected "extra""#),
            (r#"userName eq "x"#, "unterminated string"),
            (r#"(userName eq "x""#, r#"expected ")" to close the "(" at character 1"#),
            ("active gt true", "boolean or null"),
            (r#"title pr "x""#, r#""pr" takes no value"#),
            ("not a pr", "parenthesised"),
            (r#"emails[type[value eq "x"] eq "y"]"#, "cannot be nested"),
            (r#"userName = "x""#, r#"expected an operator after "userName""#),
            (bomb.as_str(), "nested more than 32"),
            (wide.as_str(), "more than 256"),
        ];
        for (input, want) in cases {
            let err = parse_filter(input).expect_err(input);
            assert!(err.message.contains(want), "{input}: {err}");
        }
        let err = parse_filter(r#"userName eqq "x""#).expect_err("bad operator");
        assert_eq!(err.to_string(), r#"unknown operator "eqq" (at character 10 of the filter)"#);
    }

    #[test]
    fn patch_paths() {
        let plain = PatchPath { attr: path(None, "members", None), filter: None, sub_after_filter: None };
        assert_eq!(parse_path("members").unwrap(), plain);
        assert_eq!(parse_path("name.givenName").unwrap().attr, path(None, "name", Some("givenName")));
        let member = parse_path(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(member.filter, Some(eq("value", json!("2819c223"))));
        let email = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!((email.attr, email.sub_after_filter.as_deref()), (path(None, "emails", None), Some("value")));
        let manager = parse_path(&format!("{ENTERPRISE}:manager")).unwrap();
        assert_eq!(manager.attr, path(Some(ENTERPRISE), "manager", None));
        let family = parse_path("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").unwrap();
        assert_eq!(family.attr, path(Some(CORE_USER), "name", Some("familyName")));
        let unclosed = parse_path(r#"emails[type eq "work""#).unwrap_err();
        assert!(unclosed.message.contains(r#"expected "]""#), "{unclosed}");
        assert!(parse_path("").unwrap_err().message.contains("empty path"));
        assert!(parse_path("name.givenName extra").is_err() && parse_path(r#"name.givenName[type eq "x"]"#).is_err());
    }
}
