//! Shared by the `api_*` tests: a fixture of tags, a server on
//! `127.0.0.1:0`, and a tiny HTTP/1.1 client over any byte stream (so the
//! same code speaks plain HTTP and HTTPS) that reads to EOF.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;

use converge_historian::api::{serve_on, ApiConfig, ApiError, ApiState, MemCatalog, TagInfo};
use converge_historian::encoding::lossy::CompressionConfig;
use converge_historian::encoding::{Point, Quality, Timestamp, Value, ValueType};
use converge_historian::query::MemSource;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2023-11-14T22:13:20Z in µs: the fixture's first point.
pub const T0: i64 = 1_700_000_000_000_000;
/// One minute in µs: the fixture's spacing.
pub const MIN: i64 = 60_000_000;

/// Tags: plant1/temp (f64, 0..10 at T0 + k min, the 5th Uncertain),
/// plant1/count (i64, k*10), plant1/state (str, step, 3 points),
/// plant2/flow (f64, 100 + k, m³/h, "Feed to the Reactor", compressed),
/// plant1/empty (no points).
pub fn fixture() -> (MemSource, MemCatalog) {
    let mut src = MemSource::new();
    let mut cat = MemCatalog::new();
    for k in 0..10i64 {
        let ts = Timestamp::from_micros(T0 + k * MIN);
        let mut p = Point::good(ts, Value::F64(k as f64));
        if k == 5 {
            p.quality = Quality::UNCERTAIN;
        }
        src.insert("plant1/temp", p);
        src.insert("plant1/count", Point::good(ts, Value::I64(k * 10)));
        src.insert("plant2/flow", Point::good(ts, Value::F64(100.0 + k as f64)));
    }
    for (k, s) in [(0, "idle"), (3, "run, fast"), (7, "stop")] {
        src.insert(
            "plant1/state",
            Point::good(Timestamp::from_micros(T0 + k * MIN), Value::Str(s.into())),
        );
    }
    src.add_tag("plant1/empty");
    let mut temp = TagInfo::new("plant1/temp", ValueType::F64);
    temp.unit = Some("°C".into());
    temp.description = Some("reactor temperature".into());
    temp.retention = Some(std::time::Duration::from_secs(86_400 * 30));
    cat.insert(temp);
    cat.insert(TagInfo::new("plant1/count", ValueType::I64));
    let mut state = TagInfo::new("plant1/state", ValueType::Str);
    state.step = true;
    cat.insert(state);
    cat.insert(TagInfo::new("plant1/empty", ValueType::F64));
    let mut flow = TagInfo::new("plant2/flow", ValueType::F64);
    flow.unit = Some("m³/h".into());
    flow.description = Some("Feed to the Reactor".into());
    flow.compression = Some(CompressionConfig {
        deviation: 0.5,
        max_interval: std::time::Duration::from_secs(28_800),
    });
    cat.insert(flow);
    (src, cat)
}

/// A running server; `stop` shuts it down and returns `serve`'s result.
pub struct Server {
    pub addr: SocketAddr,
    pub state: ApiState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl Server {
    pub async fn stop(mut self) -> Result<(), ApiError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// The fixture served with `config` (bind is ignored: 127.0.0.1:0).
pub async fn start(config: ApiConfig) -> Server {
    let (src, cat) = fixture();
    start_with(config, ApiState::new(Arc::new(src), Arc::new(cat))).await
}

pub async fn start_with(config: ApiConfig, state: ApiState) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let st = state.clone();
    let task = tokio::spawn(serve_on(listener, config, st, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        state,
        stop: Some(tx),
        task,
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `GET path` over plain HTTP.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], "").await
}

/// Any request over plain HTTP.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    exchange(stream, method, path, headers, body).await.unwrap()
}

/// Writes one request with `Connection: close` and reads the response to EOF.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Resp> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
