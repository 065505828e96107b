//! Every refused request gets a 4xx with `{ "error": { code, message,
//! parameter } }`, and the server keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_util;

use api_util::*;
use converge_historian::api::{ApiConfig, ClientConfig};

const S: i64 = T0 / 1000;

#[tokio::test]
async fn bad_queries_get_json_errors() {
    let mut config = ApiConfig::default();
    config.max_tags_per_request = 3;
    config.limits.max_intervals = 1_000;
    config.max_points_per_response = 25;
    config.max_body_bytes = 1_024;
    let s = start(config).await;
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("/api/v1/streams/latest?tag=nope".into(), 404, "unknown_tag", Some("tag")),
        ("/api/v1/tags/nope".into(), 404, "unknown_tag", Some("tag")),
        ("/api/v1/streams/latest".into(), 400, "missing_parameter", Some("tag")),
        ("/api/v1/streams/latest?tag=a&tag=b&tag=c&tag=d".into(), 400, "too_many_tags", Some("tag")),
        (format!("/api/v1/streams/recorded?tag=plant1/temp&start={}&end={S}", S + 1), 400, "end_before_start", Some("end")),
        (format!("/api/v1/streams/interpolated?tag=plant1/temp&start={S}&end={}&interval=0s", S + 1), 400, "zero_interval", Some("interval")),
        ("/api/v1/streams/recorded?tag=plant1/temp&start=yesterday".into(), 400, "bad_time", Some("start")),
        ("/api/v1/streams/value?tag=plant1/temp&time=2023-02-30T00:00:00Z".into(), 400, "bad_time", Some("time")),
        ("/api/v1/streams/interpolated?tag=plant1/temp&interval=ten".into(), 400, "bad_parameter", Some("interval")),
        // A range that needs more intervals than allowed, and no paging for it.
        (format!("/api/v1/streams/interpolated?tag=plant1/temp&start={S}&end={}&interval=1ms", S + 60_000), 400, "too_many_intervals", Some("interval")),
        // More points than a response may hold.
        (format!("/api/v1/streams/recorded?tag=plant1/temp&tag=plant2/flow&start={S}&end={}&max_count=20", S + 600_000), 400, "too_many_points", Some("max_count")),
        (format!("/api/v1/streams/interpolated?tag=plant1/temp&tag=plant2/flow&start={S}&end={}&interval=30s", S + 600_000), 400, "too_many_points", Some("tag")),
        ("/api/v1/streams/recorded?tag=plant1/temp&max_count=0".into(), 400, "zero_count", Some("max_count")),
        ("/api/v1/streams/recorded?continuation=AAAA".into(), 400, "bad_continuation", Some("continuation")),
        ("/api/v1/streams/recorded?boundary=sideways&tag=plant1/temp".into(), 400, "bad_parameter", Some("boundary")),
        ("/api/v1/streams/value?tag=plant1/temp&mode=nearest".into(), 400, "bad_parameter", Some("mode")),
        ("/api/v1/streams/summary?tag=plant1/temp&types=median".into(), 400, "bad_parameter", Some("types")),
        ("/api/v1/streams/summary?tag=plant1/state".into(), 422, "wrong_value_type", Some("tag")),
        ("/api/v1/streams/latest?tag=plant1/temp&colour=red".into(), 400, "unknown_parameter", Some("colour")),
        ("/api/v1/streams/latest?tag=plant1/temp&format=xml".into(), 400, "bad_parameter", Some("format")),
        ("/api/v1/streams/latest?tag=plant1/temp&time_format=iso".into(), 400, "bad_parameter", Some("time_format")),
        ("/api/v1/streams/plot?tag=plant1/temp&intervals=0".into(), 400, "zero_interval", Some("interval")),
        ("/api/v1/tags?limit=99999999".into(), 400, "bad_parameter", Some("limit")),
        ("/api/v1/nothing".into(), 404, "not_found", None),
        ("/api/v1/tags/%FF%FE".into(), 400, "bad_parameter", Some("name")),
    ];
    for (path, status, code, parameter) in cases {
        let r = get(s.addr, &path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let j = r.json();
        assert_eq!(j["error"]["code"], code, "{path}: {}", r.body);
        assert_eq!(j["error"]["parameter"].as_str(), parameter, "{path}");
        assert!(!j["error"]["message"].as_str().unwrap().is_empty());
    }

    // A token for one range is refused with another.
    let r = get(
        s.addr,
        &format!(
            "/api/v1/streams/recorded?tag=plant1/temp&start={S}&end={}&max_count=2",
            S + 600_000
        ),
    )
    .await;
    let token = r.json()["items"][0]["next"].as_str().unwrap().to_owned();
    let r = get(
        s.addr,
        &format!(
            "/api/v1/streams/recorded?continuation={token}&start={}&end={}&max_count=2",
            S + 300_000,
            S + 600_000
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "bad_continuation".to_owned()),
        "{}",
        r.body
    );
    // Tag and continuation together are ambiguous.
    let r = get(s.addr, &format!("/api/v1/streams/recorded?tag=plant1/temp&continuation={token}&start={S}&end={}&max_count=2", S + 600_000)).await;
    assert_eq!((r.status, r.code()), (400, "bad_parameter".to_owned()));

    // Bodies: not JSON, wrong shape, wrong method.
    let r = request(s.addr, "POST", "/api/v1/streams/latest", &[], "{nope").await;
    assert_eq!((r.status, r.code()), (400, "bad_body".to_owned()));
    let r = request(s.addr, "POST", "/api/v1/streams/latest", &[], "[1]").await;
    assert_eq!((r.status, r.code()), (400, "bad_body".to_owned()));
    let r = request(
        s.addr,
        "POST",
        "/api/v1/streams/latest",
        &[],
        r#"{"tags": [{"x": 1}]}"#,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "bad_parameter".to_owned()));
    let r = request(s.addr, "DELETE", "/api/v1/streams/latest", &[], "").await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".to_owned()));
    let r = request(
        s.addr,
        "POST",
        "/api/v1/streams/latest",
        &[],
        &format!("{{\"tags\": [\"{}\"]}}", "x".repeat(1_100)),
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "body_too_large".to_owned()));

    // Still serving.
    assert_eq!(
        get(s.addr, "/api/v1/streams/latest?tag=plant1/temp")
            .await
            .status,
        200
    );
    assert_eq!(s.state.metrics().requests("latest", 404), 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn client_reads_only_its_tags() {
    // Over plain HTTP the identity is `local`; give it plant1/* only.
    let mut config = ApiConfig::default();
    config.clients = vec![ClientConfig::new("local", &["plant1/*"])];
    let s = start(config).await;
    assert_eq!(
        get(s.addr, "/api/v1/streams/latest?tag=plant1/temp")
            .await
            .status,
        200
    );
    for path in [
        "/api/v1/streams/latest?tag=plant1/temp&tag=plant2/flow",
        "/api/v1/streams/recorded?tag=plant2/flow",
        "/api/v1/tags/plant2/flow",
        // Forbidden even when the tag does not exist: existence does not leak.
        "/api/v1/streams/latest?tag=plant9/none",
    ] {
        let r = get(s.addr, path).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden".to_owned()),
            "{path}"
        );
        assert_eq!(r.json()["error"]["parameter"], "tag");
    }
    let r = get(s.addr, "/api/v1/tags").await;
    let names: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| n.starts_with("plant1/")));
    // The limit counts only visible tags.
    assert_eq!(
        get(s.addr, "/api/v1/tags?q=*&limit=4").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    s.stop().await.unwrap();

    // Deny by default: no rules, nothing readable, search empty.
    let mut config = ApiConfig::default();
    config.clients.clear();
    let s = start(config).await;
    assert_eq!(
        get(s.addr, "/api/v1/streams/latest?tag=plant1/temp")
            .await
            .status,
        403
    );
    assert_eq!(
        get(s.addr, "/api/v1/tags").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    s.stop().await.unwrap();
}
