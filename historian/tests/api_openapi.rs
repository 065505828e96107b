//! The OpenAPI description parses and lists every route the router serves
//! with every method, and the server hands it out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_util;

use api_util::*;
use converge_historian::api::{ApiConfig, OPENAPI_JSON, ROUTES};

#[test]
fn openapi_lists_every_route() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for route in ROUTES {
        let path = &paths
            .get(route)
            .unwrap_or_else(|| panic!("{route} missing from openapi.json"));
        assert!(path.get("get").is_some(), "{route} has no GET");
        if route.starts_with("/api/v1/streams/") {
            assert!(path.get("post").is_some(), "{route} has no POST");
        }
        for op in path.as_object().unwrap().values() {
            assert!(op["responses"]["200"].is_object(), "{route}");
        }
    }
    assert_eq!(
        paths.len(),
        ROUTES.len(),
        "openapi.json lists routes the router does not serve"
    );
    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    let name = r.strip_prefix("#/components/schemas/").unwrap();
                    assert!(schemas.contains_key(name), "dangling {r}");
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
}

/// Every query parameter the description lists is one the server takes
/// (unknown parameters are refused, so a stale description would show),
/// and the tag search lists its filters.
#[tokio::test]
async fn documented_parameters_are_accepted() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let s = start(ApiConfig::default()).await;
    for route in ROUTES {
        let get_op = &doc["paths"][route]["get"];
        let Some(params) = get_op["parameters"].as_array() else {
            continue;
        };
        let names: Vec<&str> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if route == "/api/v1/tags" {
            for filter in ["q", "limit", "unit", "description", "value_type"] {
                assert!(names.contains(&filter), "{route}: {filter} undocumented");
            }
        }
        let path = route.replace("{name}", "plant1/temp");
        let takes_tags = names.contains(&"tag");
        for name in names {
            let extra = if takes_tags && name != "tag" {
                "&tag=plant1/temp"
            } else {
                ""
            };
            let r = get(s.addr, &format!("{path}?{name}=x{extra}")).await;
            assert_ne!(
                r.code(),
                "unknown_parameter",
                "{route}: documented {name} refused: {}",
                r.body
            );
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn router_serves_exactly_the_documented_routes() {
    let s = start(ApiConfig::default()).await;
    let r = get(s.addr, "/api/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, OPENAPI_JSON);
    // Each documented route answers something other than the 404 fallback.
    for route in ROUTES {
        let path = route.replace("{name}", "plant1/temp");
        let r = get(s.addr, &format!("{path}?tag=plant1/temp")).await;
        assert_ne!(r.header("content-type"), None, "{route}");
        assert!(
            !(r.status == 404 && r.code() == "not_found"),
            "{route} is not routed"
        );
    }
    s.stop().await.unwrap();
}
