//! Connection limits, the connect timeout, graceful shutdown and the metrics endpoint.

mod common;

use common::{read_to_close, Client5, Env};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let env = Env::new();
    let server = env.start_with(|c| c.limits.max_connections = 1).await;
    let addr = server.tls_addr.unwrap();
    let _held = Client5::connect(env.v5("first", addr)).await.unwrap();
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        read_to_close(&mut extra).await.is_empty(),
        "closed before any TLS byte"
    );
    let metrics = server.broker.metrics.render();
    assert!(
        metrics.contains("converge_connections_rejected_total{reason=\"max_connections\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_socket_that_says_nothing_is_closed_after_the_connect_timeout() {
    let env = Env::new();
    let server = env.start_plain(|c| c.limits.connect_timeout_secs = 1).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(server.tcp_addr.unwrap()).await.unwrap();
    assert!(read_to_close(&mut silent).await.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // The same on the TLS listener, where the handshake itself never starts.
    let mut silent = TcpStream::connect(server.tls_addr.unwrap()).await.unwrap();
    assert!(read_to_close(&mut silent).await.is_empty());
    let metrics = server.broker.metrics.render();
    assert!(
        metrics.contains("converge_connections_rejected_total{reason=\"connect_timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("converge_tls_handshake_failures_total{reason=\"timeout\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_clients_with_0x8b() {
    let env = Env::new();
    let server = env.start().await;
    let mut c = Client5::connect(env.v5("staying", server.tls_addr.unwrap()))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
    let (_, error) = c.closed().await;
    assert!(error.contains("ServerShuttingDown"), "{error}");
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text() {
    let env = Env::new();
    let server = env.start().await;
    let c = Client5::connect(env.v5("counted", server.tls_addr.unwrap()))
        .await
        .unwrap();
    let mut http = TcpStream::connect(server.metrics_addr.unwrap())
        .await
        .unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let body = String::from_utf8(read_to_close(&mut http).await).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("converge_connections 1"), "{body}");
    assert!(
        body.contains("converge_packets_received_total{type=\"connect\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("converge_connections_total{listener=\"tls\"} 1"),
        "{body}"
    );
    drop(c);
    server.shutdown().await.unwrap();
}
