//! TLS vs QUIC, side by side in one run, against a running Converge server: what QUIC is for.
//!
//! `transport_bench latency|connect|storm --tls HOST:PORT --quic HOST:PORT --ca CA --cert CERT
//! --key KEY [options]` (the server must have `require_client_id_match = false`, since every
//! bench client uses the same certificate under its own client id).
//!
//! * `latency`: one subscriber and one publisher per transport, `--topics` topics at `--rate`
//!   QoS 0 messages/s each for `--seconds`. Over TLS each client has one TCP connection for
//!   all topics; over QUIC each topic has its own stream (multi-stream mode). Prints p50/p99/max
//!   delivery latency (publisher to subscriber through the broker, one process, one clock).
//! * `connect`: `--samples` sequential new connections, each subscribing to a retained topic:
//!   time from starting to connect until the retained message arrives.
//! * `storm`: `--devices` clients connect at the same moment; time until every one has its
//!   CONNACK, and each client's own connect time.
//!
//! MQTT is encoded with rumqttc's `mqttbytes` (3.1.1), not Converge's codec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use converge_benches::mqtt_stream::{send, Reader};
use hdrhistogram::Histogram;
use quinn::crypto::rustls::QuicClientConfig;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Upper bound on any one wait, so a run never hangs.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    test: Test,
    #[arg(long, global = true, default_value = "127.0.0.1:8883")]
    tls: SocketAddr,
    #[arg(long, global = true, default_value = "127.0.0.1:14567")]
    quic: SocketAddr,
    #[arg(long, global = true, default_value = "converge-data/pki/ca.pem")]
    ca: String,
    #[arg(
        long,
        global = true,
        default_value = "converge-data/pki/devices/demo-device.pem"
    )]
    cert: String,
    #[arg(
        long,
        global = true,
        default_value = "converge-data/pki/devices/demo-device.key"
    )]
    key: String,
    /// Label printed with the results (e.g. the loss setting).
    #[arg(long, global = true, default_value = "")]
    label: String,
}

#[derive(Subcommand)]
enum Test {
    Latency {
        #[arg(long, default_value_t = 8)]
        topics: usize,
        #[arg(long, default_value_t = 50)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    Connect {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    Storm {
        #[arg(long, default_value_t = 2000)]
        devices: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tls,
    Quic,
}

struct Ctx {
    tls_addr: SocketAddr,
    quic_addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    quic: quinn::ClientConfig,
}

fn client_tls(args: &Args) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&args.ca).expect("CA file");
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&args.cert)
        .expect("cert file")
        .map(|c| c.expect("cert PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&args.key).expect("key file");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate")
}

/// One MQTT stream: a reader and a writer half.
struct Stream {
    reader: Reader<Box<dyn AsyncRead + Send + Unpin>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

/// A connected client: its control stream, and for QUIC the connection to open more streams.
struct Client {
    control: Stream,
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
}

async fn connect(ctx: &Ctx, transport: Transport, id: &str) -> std::io::Result<Client> {
    let (mut control, quic) = match transport {
        Transport::Tls => {
            let tcp = tokio::net::TcpStream::connect(ctx.tls_addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(ctx.tls.clone())
                .connect(name, tcp)
                .await?;
            let (r, w) = tokio::io::split(tls);
            (
                Stream {
                    reader: Reader::new(Box::new(r), 4096),
                    writer: Box::new(w),
                },
                None,
            )
        }
        Transport::Quic => {
            let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
            let conn = endpoint
                .connect_with(ctx.quic.clone(), ctx.quic_addr, "localhost")
                .map_err(std::io::Error::other)?
                .await
                .map_err(std::io::Error::other)?;
            let (w, r) = conn.open_bi().await.map_err(std::io::Error::other)?;
            (
                Stream {
                    reader: Reader::new(Box::new(r), 4096),
                    writer: Box::new(w),
                },
                Some((endpoint, conn)),
            )
        }
    };
    let mut c = Connect::new(id);
    c.keep_alive = 60;
    send(&mut control.writer, Packet::Connect(c)).await?;
    match control.reader.next().await? {
        Packet::ConnAck(a) if a.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success => {}
        other => return Err(std::io::Error::other(format!("CONNACK: {other:?}"))),
    }
    Ok(Client { control, quic })
}

/// A further bidirectional stream on a QUIC connection (multi-stream mode).
async fn open_stream(conn: &quinn::Connection) -> std::io::Result<Stream> {
    let (w, r) = conn.open_bi().await.map_err(std::io::Error::other)?;
    Ok(Stream {
        reader: Reader::new(Box::new(r), 4096),
        writer: Box::new(w),
    })
}

async fn subscribe(s: &mut Stream, filter: &str, pkid: u16) -> std::io::Result<()> {
    let mut sub = Subscribe::new(filter, QoS::AtMostOnce);
    sub.pkid = pkid;
    send(&mut s.writer, Packet::Subscribe(sub)).await?;
    loop {
        if let Packet::SubAck(_) = s.reader.next().await? {
            return Ok(());
        }
    }
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report(label: &str, test: &str, t: Transport, h: &Histogram<u64>, extra: &str) {
    println!(
        "{label:>8} {test:<8} {t:<5} n={:<7} p50={:>9.2} ms  p99={:>9.2} ms  max={:>9.2} ms {extra}",
        h.len(),
        pct(h, 0.5),
        pct(h, 0.99),
        h.max() as f64 / 1000.0,
        t = format!("{t:?}"),
    );
}

async fn latency(ctx: &Ctx, label: &str, t: Transport, topics: usize, rate: u64, secs: u64) {
    let tag = format!("{t:?}").to_lowercase();
    let sub = connect(ctx, t, &format!("bench-{tag}-sub"))
        .await
        .expect("subscriber");
    let publisher = connect(ctx, t, &format!("bench-{tag}-pub"))
        .await
        .expect("publisher");
    let epoch = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let mut sub_streams = Vec::new();
    match &sub.quic {
        // QUIC: one stream per topic, so a loss on one topic's stream holds up only that topic.
        Some((_, conn)) => {
            for i in 0..topics {
                let mut s = open_stream(conn).await.expect("stream");
                subscribe(&mut s, &format!("lat/{i}"), (i + 1) as u16)
                    .await
                    .expect("subscribe");
                sub_streams.push(s);
            }
        }
        None => {
            let mut s = sub.control;
            subscribe(&mut s, "lat/#", 1).await.expect("subscribe");
            sub_streams.push(s);
        }
    }
    for s in sub_streams {
        let tx = tx.clone();
        let Stream { mut reader, writer } = s;
        tokio::spawn(async move {
            // Held, not used: dropping a QUIC send half finishes the stream.
            let _writer = writer;
            loop {
                let p = match reader.next().await {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("subscriber stream ended: {e}");
                        break;
                    }
                };
                if let Packet::Publish(p) = p {
                    if let Some(b) = p.payload.get(..8) {
                        let sent = u64::from_be_bytes(b.try_into().unwrap_or_default());
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ = tx.send(now.saturating_sub(sent));
                    }
                }
            }
        });
    }
    drop(tx);
    // Publishers: one task per topic, on its own stream over QUIC, sharing the connection's
    // single stream over TLS.
    let total = topics as u64 * rate * secs;
    let shared = Arc::new(tokio::sync::Mutex::new(publisher.control));
    let mut tasks = Vec::new();
    for i in 0..topics {
        let own = match &publisher.quic {
            Some((_, conn)) => Some(open_stream(conn).await.expect("stream")),
            None => None,
        };
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut own = own;
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for seq in 0..rate * secs {
                tick.tick().await;
                let mut payload = (epoch.elapsed().as_micros() as u64).to_be_bytes().to_vec();
                payload.extend_from_slice(&seq.to_be_bytes());
                payload.resize(64, 0);
                let p = Packet::Publish(Publish::new(format!("lat/{i}"), QoS::AtMostOnce, payload));
                let r = match own.as_mut() {
                    Some(s) => send(&mut s.writer, p).await,
                    None => send(&mut shared.lock().await.writer, p).await,
                };
                if r.is_err() {
                    return;
                }
            }
        }));
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(secs) + Duration::from_secs(10);
    while (h.len()) < total {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(us)) => {
                let _ = h.record(us.max(1));
            }
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    let lost = total.saturating_sub(h.len());
    report(
        label,
        "latency",
        t,
        &h,
        &format!("topics={topics} rate={rate}/s undelivered={lost}"),
    );
}

async fn first_message(ctx: &Ctx, t: Transport, n: usize) -> std::io::Result<Duration> {
    let start = Instant::now();
    let c = connect(ctx, t, &format!("bench-first-{n}")).await?;
    let mut s = c.control;
    subscribe(&mut s, "bench/retained", 1).await?;
    loop {
        if let Packet::Publish(_) = s.reader.next().await? {
            break;
        }
    }
    let elapsed = start.elapsed();
    let _ = send(&mut s.writer, Packet::Disconnect).await;
    if let Some((endpoint, conn)) = c.quic {
        conn.close(0u32.into(), b"");
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    Ok(elapsed)
}

async fn connect_time(ctx: &Ctx, label: &str, t: Transport, samples: usize) {
    // One retained message to subscribe to.
    let mut p = connect(ctx, t, "bench-retainer").await.expect("connect");
    let mut publish = Publish::new("bench/retained", QoS::AtMostOnce, b"x".to_vec());
    publish.retain = true;
    send(&mut p.control.writer, Packet::Publish(publish))
        .await
        .expect("publish");
    send(&mut p.control.writer, Packet::Disconnect)
        .await
        .expect("disconnect");
    let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut failed = 0;
    for n in 0..samples {
        match tokio::time::timeout(WAIT, first_message(ctx, t, n)).await {
            Ok(Ok(d)) => {
                let _ = h.record((d.as_micros() as u64).max(1));
            }
            _ => failed += 1,
        }
    }
    report(label, "connect", t, &h, &format!("failed={failed}"));
}

async fn storm(ctx: Arc<Ctx>, label: &str, t: Transport, devices: usize) {
    let start_gate = Arc::new(tokio::sync::Barrier::new(devices + 1));
    let mut tasks = Vec::with_capacity(devices);
    for n in 0..devices {
        let (ctx, gate) = (ctx.clone(), start_gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let started = Instant::now();
            // A device retries until it is back, as a real one would.
            loop {
                match tokio::time::timeout(WAIT, connect(&ctx, t, &format!("storm-{n}"))).await {
                    Ok(Ok(c)) => return Some((started.elapsed(), c)),
                    _ if started.elapsed() > WAIT => return None,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }
    start_gate.wait().await;
    let started = Instant::now();
    let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut clients = Vec::with_capacity(devices);
    let mut failed = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some((d, c)) => {
                let _ = h.record((d.as_micros() as u64).max(1));
                clients.push(c);
            }
            None => failed += 1,
        }
    }
    let all = started.elapsed();
    report(
        label,
        "storm",
        t,
        &h,
        &format!(
            "devices={devices} all_back={:.2} s failed={failed}",
            all.as_secs_f64()
        ),
    );
    for mut c in clients {
        let _ = send(&mut c.control.writer, Packet::Disconnect).await;
        if let Some((_, conn)) = &c.quic {
            conn.close(0u32.into(), b"");
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let tls = client_tls(&args);
    let mut quic_tls = tls.clone();
    quic_tls.alpn_protocols = vec![b"mqtt".to_vec()];
    let mut quic = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(quic_tls).expect("QUIC TLS"),
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(None);
    quic.transport_config(Arc::new(transport));
    let ctx = Arc::new(Ctx {
        tls_addr: args.tls,
        quic_addr: args.quic,
        tls: Arc::new(tls),
        quic,
    });
    for t in [Transport::Tls, Transport::Quic] {
        match args.test {
            Test::Latency {
                topics,
                rate,
                seconds,
            } => latency(&ctx, &args.label, t, topics, rate, seconds).await,
            Test::Connect { samples } => connect_time(&ctx, &args.label, t, samples).await,
            Test::Storm { devices } => storm(ctx.clone(), &args.label, t, devices).await,
        }
    }
}
