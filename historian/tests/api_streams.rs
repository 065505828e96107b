//! Every endpoint over a real socket, for several tags, JSON and CSV, with
//! RFC 3339 and epoch-millisecond times; recorded paged to the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_util;

use api_util::*;
use converge_historian::api::ApiConfig;
use serde_json::{json, Value};

const START_MS: i64 = T0 / 1000;
const END_MS: i64 = (T0 + 9 * MIN) / 1000;
const START_RFC: &str = "2023-11-14T22:13:20Z";
const END_RFC: &str = "2023-11-14T22:22:20Z";

fn values(item: &Value) -> Vec<Value> {
    item["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].clone())
        .collect()
}

#[tokio::test]
async fn latest_many_tags_json_and_csv() {
    let s = start(ApiConfig::default()).await;
    let r = get(
        s.addr,
        "/api/v1/streams/latest?tag=plant1/temp&tag=plant2/flow&tag=plant1/empty",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let items = j["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["tag"], "plant1/temp");
    assert_eq!(items[0]["point"]["value"], 9.0);
    assert_eq!(items[0]["point"]["time"], END_RFC);
    assert_eq!(items[0]["point"]["time_ms"], END_MS);
    assert_eq!(items[0]["point"]["quality"], "good");
    assert_eq!(items[0]["point"]["substatus"], 0);
    assert_eq!(items[1]["point"]["value"], 109.0);
    assert!(items[2]["point"].is_null());

    let r = request(
        s.addr,
        "GET",
        "/api/v1/streams/latest?tag=plant1/state&tag=plant1/count",
        &[("Accept", "text/csv")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(
        r.body,
        format!("tag,time,value,quality,substatus\r\nplant1/state,2023-11-14T22:20:20Z,stop,good,0\r\nplant1/count,{END_RFC},90,good,0\r\n")
    );
    let r = get(
        s.addr,
        "/api/v1/streams/latest?tag=plant1/count&format=csv&time_format=epoch_ms",
    )
    .await;
    assert_eq!(
        r.body,
        format!("tag,time,value,quality,substatus\r\nplant1/count,{END_MS},90,good,0\r\n")
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn recorded_rfc3339_and_epoch_ms_agree_and_post_body_works() {
    let s = start(ApiConfig::default()).await;
    let a = get(
        s.addr,
        &format!(
            "/api/v1/streams/recorded?tag=plant1/temp&tag=plant1/count&start={}&end={}",
            enc(START_RFC),
            enc(END_RFC)
        ),
    )
    .await;
    let b = get(s.addr, &format!("/api/v1/streams/recorded?tag=plant1/temp&tag=plant1/count&start={START_MS}&end={END_MS}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json(), b.json());
    let j = a.json();
    assert_eq!(values(&j["items"][0]).len(), 10);
    assert_eq!(j["items"][0]["points"][5]["quality"], "uncertain");
    assert_eq!(values(&j["items"][1])[3], 30);
    assert!(j["items"][0]["next"].is_null());

    let body = json!({"tags": ["plant1/temp", "plant1/count"], "start": START_MS, "end": END_RFC})
        .to_string();
    let c = request(
        s.addr,
        "POST",
        "/api/v1/streams/recorded",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.json(), j);

    // Boundary outside over an inner range adds the neighbours.
    let r = get(
        s.addr,
        &format!(
            "/api/v1/streams/recorded?tag=plant1/count&start={}&end={}&boundary=outside",
            START_MS + 90_000,
            START_MS + 150_000
        ),
    )
    .await;
    assert_eq!(
        values(&r.json()["items"][0]),
        [json!(10), json!(20), json!(30)]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn recorded_pages_concatenate_to_one_read() {
    let s = start(ApiConfig::default()).await;
    let q = format!("start={START_MS}&end={END_MS}&boundary=interpolated");
    let whole = get(
        s.addr,
        &format!("/api/v1/streams/recorded?tag=plant1/temp&tag=plant2/flow&{q}"),
    )
    .await
    .json();
    let mut pages: Vec<Vec<Value>> = vec![Vec::new(), Vec::new()];
    let mut url =
        format!("/api/v1/streams/recorded?tag=plant1/temp&tag=plant2/flow&{q}&max_count=3");
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20);
        let r = get(s.addr, &url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        let mut tokens = Vec::new();
        for item in j["items"].as_array().unwrap() {
            let k = if item["tag"] == "plant1/temp" { 0 } else { 1 };
            pages[k].extend(item["points"].as_array().unwrap().iter().cloned());
            if let Some(t) = item["next"].as_str() {
                tokens.push(t.to_owned());
            }
        }
        if tokens.is_empty() {
            break;
        }
        url = format!("/api/v1/streams/recorded?{q}&max_count=3");
        for t in tokens {
            url.push_str(&format!("&continuation={t}"));
        }
    }
    assert_eq!(
        pages[0],
        whole["items"][0]["points"].as_array().unwrap().clone()
    );
    assert_eq!(
        pages[1],
        whole["items"][1]["points"].as_array().unwrap().clone()
    );
    assert_eq!(rounds, 4);

    // CSV carries the tokens in headers.
    let r = get(
        s.addr,
        &format!(
            "/api/v1/streams/recorded?tag=plant1/temp&tag=plant2/flow&{q}&max_count=3&format=csv"
        ),
    )
    .await;
    assert_eq!(r.headers_named("converge-continuation").len(), 2);
    assert_eq!(r.body.lines().count(), 7);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn value_interpolated_summary_plot() {
    let s = start(ApiConfig::default()).await;
    // 90 s after T0: at_or_before gives the 1-minute point, interpolated 1.5.
    let t = START_MS + 90_000;
    let r = get(
        s.addr,
        &format!("/api/v1/streams/value?tag=plant1/temp&tag=plant1/state&time={t}"),
    )
    .await;
    let j = r.json();
    assert_eq!(j["items"][0]["point"]["value"], 1.0);
    assert_eq!(j["items"][1]["point"]["value"], "idle");
    let r = get(
        s.addr,
        &format!("/api/v1/streams/value?tag=plant1/temp&time={t}&mode=interpolated"),
    )
    .await;
    assert_eq!(r.json()["items"][0]["point"]["value"], 1.5);
    let r = get(
        s.addr,
        &format!("/api/v1/streams/value?tag=plant1/temp&time={t}&mode=AtOrAfter"),
    )
    .await;
    assert_eq!(r.json()["items"][0]["point"]["value"], 2.0);

    let r = get(s.addr, &format!("/api/v1/streams/interpolated?tag=plant1/temp&tag=plant1/state&start={}&end={}&interval=90s", enc(START_RFC), START_MS + 180_000)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(values(&j["items"][0]), [json!(0.0), json!(1.5), json!(3.0)]);
    // A step tag holds its value.
    assert_eq!(
        values(&j["items"][1]),
        [json!("idle"), json!("idle"), json!("run, fast")]
    );
    let r = get(s.addr, &format!("/api/v1/streams/interpolated?tag=plant1/state&start={START_MS}&end={}&interval=3m&format=csv", START_MS + 180_000)).await;
    assert!(r.body.contains("\"run, fast\""), "{}", r.body);

    let r = get(s.addr, &format!("/api/v1/streams/summary?tag=plant1/count&tag=plant2/flow&start={START_MS}&end={}&interval=5m&types=count,min,max,average", END_MS + 60_000)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let rows = j["items"][0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["start"], START_RFC);
    assert_eq!(
        rows[0]["values"][0],
        json!({"type": "count", "value": 5.0, "time": null, "time_ms": null})
    );
    assert_eq!(rows[0]["values"][2]["value"], 40.0);
    assert_eq!(rows[1]["values"][3]["value"], 70.0);
    assert_eq!(j["items"][1]["rows"][1]["values"][1]["value"], 105.0);
    let r = get(s.addr, &format!("/api/v1/streams/summary?tag=plant1/count&start={START_MS}&end={}&types=count&format=csv", END_MS + 60_000)).await;
    assert_eq!(
        r.body,
        "tag,start,end,percent_good,type,value,time\r\nplant1/count,2023-11-14T22:13:20Z,2023-11-14T22:23:20Z,100,count,10,\r\n"
    );

    let r = get(s.addr, &format!("/api/v1/streams/plot?tag=plant1/temp&tag=plant2/flow&start={START_MS}&end={END_MS}&intervals=2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let temp = values(&j["items"][0]);
    assert!(
        temp.contains(&json!(0.0)) && temp.contains(&json!(9.0)) && temp.contains(&json!(5.0)),
        "{temp:?}"
    );
    assert!(temp.len() <= 10);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn tag_search_and_metadata() {
    let s = start(ApiConfig::default()).await;
    let r = get(s.addr, "/api/v1/tags?q=plant1/*").await;
    let names: Vec<Value> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("plant1/count"),
            json!("plant1/empty"),
            json!("plant1/state"),
            json!("plant1/temp")
        ]
    );
    let r = get(s.addr, "/api/v1/tags?q=*t?mp&limit=5").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = get(s.addr, "/api/v1/tags?limit=2").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
    let r = get(s.addr, "/api/v1/tags/plant1/temp").await;
    assert_eq!(
        r.json(),
        json!({"name": "plant1/temp", "value_type": "f64", "unit": "°C", "description": "reactor temperature",
               "retention_seconds": 2592000, "step": false, "exception": null, "compression": null})
    );
    let r = get(s.addr, "/api/v1/tags/plant2/flow").await;
    assert_eq!(
        r.json()["compression"],
        json!({"deviation": 0.5, "max_seconds": 28800})
    );
    let r = get(s.addr, "/api/v1/tags?q=plant2*&format=csv").await;
    assert_eq!(
        r.body,
        "name,value_type,unit,description,retention_seconds,step,exc_dev,exc_max_seconds,comp_dev,comp_max_seconds\r\n\
         plant2/flow,f64,m³/h,Feed to the Reactor,,false,,,0.5,28800\r\n"
    );

    // Metrics counted the requests.
    assert_eq!(s.state.metrics().requests("tags", 200), 4);
    assert_eq!(s.state.metrics().requests("tag", 200), 2);
    assert_eq!(s.state.metrics().latency("tags").count, 4);
    let m = get(s.addr, "/api/v1/metrics").await;
    assert!(
        m.body
            .contains("historian_api_requests_total{endpoint=\"tags\",status=\"200\"} 4"),
        "{}",
        m.body
    );
    s.stop().await.unwrap();
}

/// Names in a search answer.
fn found(r: &Resp) -> Vec<String> {
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tag_search_by_unit_description_and_value_type() {
    let s = start(ApiConfig::default()).await;
    let cases: [(&str, &[&str]); 11] = [
        // Unit: whole, ignoring case; empty = no unit.
        ("unit=%C2%B0C", &["plant1/temp"]),
        ("unit=%C2%B0c", &["plant1/temp"]),
        ("unit=C", &[]),
        (
            "unit=&q=plant1/*",
            &["plant1/count", "plant1/empty", "plant1/state"],
        ),
        // Description: a substring, ignoring case.
        ("description=reactor", &["plant1/temp", "plant2/flow"]),
        ("description=FEED", &["plant2/flow"]),
        // Value type, repeatable, PI-style names too.
        ("value_type=str", &["plant1/state"]),
        (
            "value_type=I64&value_type=string",
            &["plant1/count", "plant1/state"],
        ),
        // Everything together, with the name pattern.
        (
            "q=plant1/*&value_type=f64",
            &["plant1/empty", "plant1/temp"],
        ),
        (
            "q=plant1/*&value_type=f64&description=reactor",
            &["plant1/temp"],
        ),
        (
            "q=plant2/*&unit=m%C2%B3/h&description=reactor&value_type=f64",
            &["plant2/flow"],
        ),
    ];
    for (query, want) in cases {
        let r = get(s.addr, &format!("/api/v1/tags?{query}")).await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        assert_eq!(found(&r), want, "{query}");
    }
    let r = get(s.addr, "/api/v1/tags?value_type=text").await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_parameter"));
    assert_eq!(r.json()["error"]["parameter"], "value_type");
    let r = get(s.addr, "/api/v1/tags?unit=a&unit=b").await;
    assert_eq!(r.status, 400, "a filter given twice");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn tag_search_filters_leave_hidden_tags_hidden() {
    let mut config = ApiConfig::default();
    config.clients = vec![converge_historian::api::ClientConfig::new(
        converge_historian::api::LOCAL_IDENTITY,
        &["plant2/*"],
    )];
    let s = start(config).await;
    let r = get(s.addr, "/api/v1/tags?description=reactor").await;
    assert_eq!(found(&r), ["plant2/flow"]);
    let r = get(s.addr, "/api/v1/tags?description=reactor&limit=1").await;
    assert_eq!(found(&r), ["plant2/flow"], "hidden tags use up no limit");
    s.stop().await.unwrap();
}
