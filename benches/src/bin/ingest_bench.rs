//! End-to-end load: QoS 1 PUBLISHes over mutual TLS into a running broker, as fast as each
//! client's window of unacknowledged messages allows, for a fixed time. Any MQTT broker that
//! takes client certificates can be measured (Converge, Mosquitto), so both are measured by
//! the same tool in the same run.
//!
//! `ingest_bench --addr 127.0.0.1:8883 --ca CA.pem --ca-key CA.key [--clients 8] [--window 64]
//! [--seconds 20] [--topics 100] [--batch 1] [--subscribe]`
//!
//! * Each client gets its own certificate, made here from the CA (CN = client id =
//!   `load-N`), so per-device identities and policies apply as they would in a plant.
//! * Topics `plant/load/<client>/telemetry/t<k>`, `--topics` per client, in turn.
//! * `--batch 1`: the payload is one number (a historian `plain` rule makes it one point).
//!   `--batch N`: a JSON array of N `{"value", "ts"}` points (a `json` rule makes N points).
//! * `--subscribe`: one more client subscribes to `plant/#` and counts what it receives.
//!
//! Prints acknowledged messages/s, points/s and PUBACK latency (p50, p99, max). MQTT is
//! encoded with rumqttc's `mqttbytes` (3.1.1), not Converge's codec.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use converge_benches::mqtt_stream::{send, Reader, MAX_PACKET};
use hdrhistogram::Histogram;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Upper bound on draining the last acknowledgements and on connecting.
const WAIT: Duration = Duration::from_secs(30);
/// PUBLISHes written in one go at most (fewer syscalls when the window has room).
const WRITE_BATCH: usize = 32;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8883")]
    addr: SocketAddr,
    /// Server name to verify the broker's certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[arg(long, default_value = "converge-data/pki/ca.pem")]
    ca: String,
    /// The CA's key, to make one client certificate per connection.
    #[arg(long, default_value = "converge-data/pki/ca.key")]
    ca_key: String,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Unacknowledged QoS 1 messages per client.
    #[arg(long, default_value_t = 64)]
    window: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 100)]
    topics: usize,
    /// Points per message (1: a plain number; more: a JSON array).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long)]
    subscribe: bool,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
}

struct Identity {
    id: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn identities(args: &Args, n: usize, prefix: &str) -> Vec<Identity> {
    let ca_pem = std::fs::read_to_string(&args.ca).expect("CA certificate");
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&args.ca_key).expect("CA key"))
        .expect("CA key PEM");
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("CA certificate PEM");
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, id.as_str());
            params.distinguished_name = dn;
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            Identity {
                id,
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
            }
        })
        .collect()
}

fn roots(args: &Args) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&args.ca).expect("CA file");
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    Arc::new(roots)
}

async fn connect(
    args: &Args,
    roots: Arc<rustls::RootCertStore>,
    who: Identity,
) -> std::io::Result<(
    Reader<Box<dyn AsyncRead + Send + Unpin>>,
    Box<dyn AsyncWrite + Send + Unpin>,
)> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_client_auth_cert(who.chain, who.key)
    .map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(args.server_name.clone()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (r, w) = tokio::io::split(tls);
    let mut reader = Reader::new(Box::new(r) as Box<dyn AsyncRead + Send + Unpin>, 64 * 1024);
    let mut writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(w);
    let mut c = Connect::new(who.id);
    c.keep_alive = 60;
    send(&mut writer, Packet::Connect(c)).await?;
    match reader.next().await? {
        Packet::ConnAck(a) if a.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success => {}
        other => return Err(std::io::Error::other(format!("CONNACK: {other:?}"))),
    }
    Ok((reader, writer))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The payload of message `n`: one number, or a JSON batch of points with distinct times.
fn payload(n: u64, batch: usize, base_ms: i64) -> Bytes {
    let value = (n as f64 * 0.01).sin() * 100.0;
    if batch <= 1 {
        return Bytes::from(format!("{value:.3}"));
    }
    let mut s = String::from("[");
    for k in 0..batch {
        if k > 0 {
            s.push(',');
        }
        let ts = base_ms + (n as i64) * batch as i64 + k as i64;
        s.push_str(&format!(r#"{{"value":{:.3},"ts":{ts}}}"#, value + k as f64));
    }
    s.push(']');
    Bytes::from(s)
}

#[derive(Default)]
struct Totals {
    acked: AtomicU64,
    received: AtomicU64,
}

/// One publishing client until `stop`, then until its window is acknowledged.
async fn publisher(
    args: Arc<Args>,
    roots: Arc<rustls::RootCertStore>,
    who: Identity,
    start: Instant,
    stop: Instant,
    totals: Arc<Totals>,
) -> std::io::Result<Histogram<u64>> {
    let topics: Vec<String> = (0..args.topics)
        .map(|k| format!("plant/load/{}/telemetry/t{k}", who.id))
        .collect();
    let (mut reader, mut writer) = connect(&args, roots, who).await?;
    // Packet ids 1..=window are reused in turn; the window bounds what is in flight.
    let window = args.window.clamp(1, 65_535);
    let sent_at = Arc::new(Mutex::new(vec![start; window + 1]));
    let permits = Arc::new(Semaphore::new(window));
    let base_ms = now_ms();
    let writer_task = {
        let (sent_at, permits, args) = (sent_at.clone(), permits.clone(), args.clone());
        tokio::spawn(async move {
            let mut n: u64 = 0;
            let mut buf = BytesMut::new();
            while Instant::now() < stop {
                let Ok(p) = permits.acquire_many(1).await else {
                    break;
                };
                p.forget();
                let mut count = 1;
                while count < WRITE_BATCH {
                    match permits.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            count += 1;
                        }
                        Err(_) => break,
                    }
                }
                buf.clear();
                for _ in 0..count {
                    // QoS 1 acknowledgements come in order (MQTT-4.6.0-2) and at most
                    // `window` are outstanding, so message n's id was freed by message
                    // n - window's PUBACK.
                    let pkid = (n % window as u64) as u16 + 1;
                    let topic = &topics[(n as usize) % topics.len()];
                    let mut p = Publish::new(
                        topic.as_str(),
                        QoS::AtLeastOnce,
                        payload(n, args.batch, base_ms).to_vec(),
                    );
                    p.pkid = pkid;
                    if let Ok(mut at) = sent_at.lock() {
                        if let Some(slot) = at.get_mut(usize::from(pkid)) {
                            *slot = Instant::now();
                        }
                    }
                    Packet::Publish(p)
                        .write(&mut buf, MAX_PACKET)
                        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                    n += 1;
                }
                writer.write_all(&buf).await?;
            }
            Ok::<_, std::io::Error>((writer, n))
        })
    };
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut acked = 0u64;
    let mut sent_total: Option<u64> = None;
    let mut writer_task = Some(writer_task);
    let mut writer_half = None;
    loop {
        if let Some(total) = sent_total {
            if acked >= total {
                break;
            }
        }
        let next = tokio::select! {
            p = tokio::time::timeout(WAIT, reader.next()) => p,
            done = async { writer_task.as_mut().expect("writer").await }, if writer_task.is_some() => {
                writer_task = None;
                let (w, n) = done.map_err(std::io::Error::other)??;
                writer_half = Some(w);
                sent_total = Some(n);
                continue;
            }
        };
        match next {
            Err(_) => return Err(std::io::Error::other("no PUBACK within 30 s")),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Packet::PubAck(PubAck { pkid, .. }))) => {
                let at = sent_at
                    .lock()
                    .ok()
                    .and_then(|at| at.get(usize::from(pkid)).copied());
                if let Some(at) = at {
                    let _ = hist.record(at.elapsed().as_micros() as u64);
                }
                acked += 1;
                totals.acked.fetch_add(1, Ordering::Relaxed);
                permits.add_permits(1);
            }
            Ok(Ok(_)) => {}
        }
    }
    if let Some(mut w) = writer_half {
        let _ = send(&mut w, Packet::Disconnect).await;
    }
    Ok(hist)
}

async fn subscriber(
    args: Arc<Args>,
    roots: Arc<rustls::RootCertStore>,
    who: Identity,
    totals: Arc<Totals>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<()> {
    let (mut reader, mut writer) = connect(&args, roots, who).await?;
    let mut sub = Subscribe::new("plant/#", QoS::AtMostOnce);
    sub.pkid = 1;
    send(&mut writer, Packet::Subscribe(sub)).await?;
    loop {
        match reader.next().await? {
            Packet::SubAck(_) => {
                let _ = ready.send(());
                break;
            }
            _ => continue,
        }
    }
    loop {
        if let Packet::Publish(_) = reader.next().await? {
            totals.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let roots = roots(&args);
    let totals = Arc::new(Totals::default());
    if args.subscribe {
        let who = identities(&args, 1, "load-sub")
            .pop()
            .expect("one identity");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(subscriber(
            args.clone(),
            roots.clone(),
            who,
            totals.clone(),
            tx,
        ));
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("subscriber ready in time")
            .expect("subscriber connected");
    }
    let start = Instant::now();
    let stop = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for who in identities(&args, args.clients, "load") {
        tasks.spawn(publisher(
            args.clone(),
            roots.clone(),
            who,
            start,
            stop,
            totals.clone(),
        ));
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(h)) => hist.add(h).expect("same histogram bounds"),
            Ok(Err(e)) => {
                failures += 1;
                eprintln!("client failed: {e}");
            }
            Err(e) => {
                failures += 1;
                eprintln!("client task failed: {e}");
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let acked = totals.acked.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{:>10} clients={} window={} batch={} acked={} in {:.1} s: {:.0} msg/s, {:.0} points/s, PUBACK p50={:.2} ms p99={:.2} ms max={:.2} ms{}{}",
        args.label,
        args.clients,
        args.window,
        args.batch,
        acked,
        elapsed,
        acked as f64 / elapsed,
        (acked * args.batch as u64) as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0,
        if args.subscribe {
            format!(", subscriber received {}", totals.received.load(Ordering::Relaxed))
        } else {
            String::new()
        },
        if failures > 0 {
            format!(", {failures} clients FAILED")
        } else {
            String::new()
        },
    );
}
