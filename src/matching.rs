//! The match-email rule (contract point 4, Tribe CRM's behaviour): which address links a SCIM user to an
//! existing downstream account. It is also why a user without any usable address is refused up front.

use serde_json::{Map, Value};

/// A pragmatic address check: one `@`, a non-empty local part, a dotted domain, no spaces or control
/// characters. Full RFC 5322 syntax (quoted local parts, comments) is not what IdPs send as a userName.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && s.len() <= 320
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The address used to find an existing downstream account for a user: `userName` when it is an email
/// address, else the primary email, else the `work` email, else the first valid email.
pub fn match_email(doc: &Map<String, Value>) -> Option<String> {
    if let Some(u) = doc.get("userName").and_then(Value::as_str).filter(|u| is_email(u)) {
        return Some(u.to_owned());
    }
    let emails: Vec<&Value> = doc.get("emails").and_then(Value::as_array).into_iter().flatten().collect();
    let value = |e: &&Value| e.get("value").and_then(Value::as_str).filter(|v| is_email(v)).map(str::to_owned);
    let primary = emails.iter().filter(|e| e.get("primary") == Some(&Value::Bool(true))).find_map(value);
    let work = || {
        emails
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("work")))
            .find_map(value)
    };
    primary.or_else(work).or_else(|| emails.iter().find_map(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn email_shapes() {
        assert!(is_email("ann@example.com"));
        assert!(is_email("a.b+tag@sub.example.co.uk"));
        for bad in ["ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@@b.com", "a@b..com", "a@.b.com"]
        {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn order_of_preference() {
        assert_eq!(
            match_email(&doc(json!({"userName": "u@x.com", "emails": [{"value": "p@x.com", "primary": true}]})))
                .as_deref(),
            Some("u@x.com")
        );
        assert_eq!(
            match_email(&doc(json!({"userName": "jdoe", "emails": [{"value": "w@x.com", "type": "work"}, {"value": "p@x.com", "primary": true}]}))).as_deref(),
            Some("p@x.com")
        );
        assert_eq!(match_email(&doc(json!({"userName": "jdoe", "emails": [{"value": "h@x.com", "type": "home"}, {"value": "w@x.com", "type": "work"}]}))).as_deref(), Some("w@x.com"));
        assert_eq!(match_email(&doc(json!({"userName": "jdoe", "emails": [{"value": "not-an-email"}]}))), None);
        assert_eq!(match_email(&doc(json!({"userName": "jdoe"}))), None);
    }
}
