//! Replays the request sequences Entra ID and Okta send during a provisioning cycle (tests/fixtures/*.json)
//! against the real server over HTTP, checking status codes and response bodies step by step.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed assertion

mod common;

use std::collections::HashMap;

use common::TestServer;
use reqwest::Method;
use serde_json::Value;

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!out.contains("{{"), "unbound variable in {out:?}");
    out
}

fn substitute_json(v: &Value, vars: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_json(x, vars)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), substitute_json(x, vars))).collect()),
        other => other.clone(),
    }
}

async fn replay(fixture: &str) {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let server = TestServer::start().await;
    let mut vars = HashMap::new();
    vars.insert("random_guid".to_owned(), uuid::Uuid::new_v4().to_string());
    vars.insert("run".to_owned(), uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    for step in fixture["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = substitute(step["path"].as_str().unwrap(), &vars);
        let mut req = server.req(method, &path);
        if let Some(body) = step.get("body").filter(|b| !b.is_null()) {
            let ct = step.get("content_type").and_then(Value::as_str).unwrap_or("application/scim+json");
            req = req.header("content-type", ct).body(substitute_json(body, &vars).to_string());
        }
        let resp = req.send().await.unwrap();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let (status, body) = common::decode(resp).await;
        assert_eq!(status, step["status"].as_u64().unwrap() as u16, "step {name:?}: {body}");
        if status != 204 {
            assert_eq!(content_type.as_deref(), Some("application/scim+json"), "step {name:?}");
        }
        for (pointer, expected) in step.get("expect").and_then(Value::as_object).into_iter().flatten() {
            let expected = substitute_json(expected, &vars);
            assert_eq!(body.pointer(pointer), Some(&expected), "step {name:?}, {pointer}: {body}");
        }
        for pointer in step.get("expect_absent").and_then(Value::as_array).into_iter().flatten() {
            let pointer = pointer.as_str().unwrap();
            assert!(body.pointer(pointer).is_none(), "step {name:?}: {pointer} should be absent: {body}");
        }
        for (var, pointer) in step.get("capture").and_then(Value::as_object).into_iter().flatten() {
            let v = body.pointer(pointer.as_str().unwrap()).and_then(Value::as_str);
            vars.insert(var.clone(), v.unwrap_or_else(|| panic!("step {name:?}: nothing at {pointer}")).to_owned());
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_provisioning_cycle() {
    replay("entra_cycle.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_provisioning_cycle() {
    replay("okta_cycle.json").await;
}
