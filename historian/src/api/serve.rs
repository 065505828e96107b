//! Serving: one small accept loop for plain HTTP (loopback only, identity
//! `local`) and HTTPS (client certificate required, identity = its CN).
//! The loop caps open connections with a semaphore, bounds the TLS
//! handshake and header read with `handshake_timeout_ms`, backs off on
//! accept errors, and on shutdown stops accepting and lets open
//! connections finish their current request.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::Instrument;

use crate::api::auth::ClientIdentity;
use crate::api::config::{validate, ApiConfig, TlsConfig, LOCAL_IDENTITY};
use crate::api::error::ApiError;
use crate::api::metrics::ApiMetrics;
use crate::api::observe::{PeerAddr, QueryObserver};
use crate::api::{router, ApiState};

/// Longest pause after a failed accept (file descriptors exhausted, say):
/// retrying at once would spin.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Binds `config.bind` and serves until `shutdown` completes.
pub async fn serve(
    config: ApiConfig,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    check(&config, config.bind)?;
    let listener = TcpListener::bind(config.bind).await?;
    serve_on(listener, config, state, shutdown).await
}

/// Serves on a bound listener (tests bind `127.0.0.1:0` and read the
/// address first). The TLS rule applies to the listener's address.
pub async fn serve_on(
    listener: TcpListener,
    config: ApiConfig,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    prepare(listener, config, state)?.run(shutdown).await
}

/// An API ready to serve: configuration checked, TLS files loaded, routes
/// built. A server that embeds the API calls `prepare` at start-up so that
/// a bad `[historian.api]` stops the start instead of a background task.
pub struct Prepared {
    listener: TcpListener,
    config: ApiConfig,
    tls: Option<TlsAcceptor>,
    app: Router,
    local: SocketAddr,
    refusals: Refusals,
}

/// Where refused HTTPS clients are counted and reported.
#[derive(Clone)]
struct Refusals {
    metrics: Arc<ApiMetrics>,
    observer: Option<Arc<dyn QueryObserver>>,
}

impl Refusals {
    fn refused(&self, peer: SocketAddr, reason: &'static str, detail: &str) {
        tracing::info!(%peer, reason, detail, "HTTPS client refused");
        self.metrics.record_handshake_refused(reason);
        if let Some(o) = &self.observer {
            o.handshake_refused(peer, reason, detail);
        }
    }
}

/// The metrics label of a failed handshake: the client's certificate was refused (missing,
/// expired, revoked, foreign, not a valid end-entity certificate), or something else went
/// wrong (protocol error, the peer went away).
fn refusal_reason(e: &std::io::Error) -> &'static str {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
            )
        });
    if certificate {
        "certificate"
    } else {
        "other"
    }
}

/// Checks `config` against the listener's address and builds the service.
pub fn prepare(
    listener: TcpListener,
    config: ApiConfig,
    state: ApiState,
) -> Result<Prepared, ApiError> {
    let local = listener.local_addr()?;
    check(&config, local)?;
    let verifier = state.client_verifier.clone();
    let tls = config
        .tls
        .as_ref()
        .map(|tls| acceptor(tls, verifier))
        .transpose()?;
    let refusals = Refusals {
        metrics: state.metrics().clone(),
        observer: state.observer.clone(),
    };
    let app = router(&config, state)?;
    Ok(Prepared {
        listener,
        config,
        tls,
        app,
        local,
        refusals,
    })
}

impl Prepared {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes, then lets open connections finish
    /// their current request.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ApiError> {
        let Prepared {
            listener,
            config,
            tls,
            app,
            local,
            refusals,
        } = self;
        accept_loop(listener, config, tls, app, local, refusals, shutdown).await
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ApiConfig,
    tls: Option<TlsAcceptor>,
    app: Router,
    local: SocketAddr,
    refusals: Refusals,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let timeout = config.handshake_timeout();
    tracing::info!(%local, tls = tls.is_some(), "historian API listening");
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let refusals = refusals.clone();
        let span = tracing::info_span!("api_conn", %peer, tls = tls.is_some(), identity = tracing::field::Empty);
        tokio::spawn(
            async move {
                let _permit = permit;
                connection(stream, peer, tls, app, timeout, stop, &refusals).await;
            }
            .instrument(span),
        );
    }
    // Tell open connections to finish, then wait for them to go.
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(all).await;
    Ok(())
}

/// Refuses plain HTTP off loopback and unusable limits.
fn check(config: &ApiConfig, addr: SocketAddr) -> Result<(), ApiError> {
    if config.tls.is_none() && !addr.ip().is_loopback() {
        return Err(ApiError::TlsRequired(addr));
    }
    validate(config)
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    timeout: Duration,
    stop: watch::Receiver<bool>,
    refusals: &Refusals,
) {
    match tls {
        None => {
            let identity = ClientIdentity::new(LOCAL_IDENTITY);
            http(stream, identity, peer, app, timeout, stop).await;
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    refusals.refused(peer, refusal_reason(&e), &e.to_string());
                    return;
                }
                Err(_) => {
                    refusals.refused(
                        peer,
                        "timeout",
                        "the TLS handshake did not complete in time",
                    );
                    return;
                }
            };
            let cn = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| common_name(leaf.as_ref()));
            // `local` is the loopback pseudo-identity: a certificate must
            // not borrow its rights.
            let Some(cn) = cn.filter(|cn| cn != LOCAL_IDENTITY && !cn.is_empty()) else {
                refusals.refused(
                    peer,
                    "no_identity",
                    "the client certificate has no usable Common Name (none, empty or `local`)",
                );
                return;
            };
            tracing::Span::current().record("identity", cn.as_str());
            http(stream, ClientIdentity::new(&cn), peer, app, timeout, stop).await;
        }
    }
}

/// Serves HTTP/1.1 on one connection, every request tagged with `identity`.
async fn http<S>(
    stream: S,
    identity: ClientIdentity,
    peer: SocketAddr,
    app: Router,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(identity.clone());
        req.extensions_mut().insert(PeerAddr(peer));
        let mut app = app.clone();
        // Router is always ready (axum docs), so `call` needs no poll_ready.
        async move { app.call(req.map(axum::body::Body::new)).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Only `true` is ever sent; a dropped sender means stop too.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The CN of a DER certificate (the first, if several).
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

/// The rustls acceptor: our chain and key, client certificates required
/// and verified against `ca_file`.
fn acceptor(
    tls: &TlsConfig,
    shared_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<TlsAcceptor, ApiError> {
    let file_err = |key: &'static str, path: &Path, reason: String| ApiError::TlsFile {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs =
        |key: &'static str, path: &Path| -> Result<Vec<CertificateDer<'static>>, ApiError> {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_err(key, path, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(key, path, e.to_string()))?;
            if certs.is_empty() {
                return Err(file_err(
                    key,
                    path,
                    "no PEM certificate in the file".to_owned(),
                ));
            }
            Ok(certs)
        };
    let mut roots = RootCertStore::empty();
    for ca in certs("ca_file", &tls.ca_file)? {
        roots
            .add(ca)
            .map_err(|e| file_err("ca_file", &tls.ca_file, e.to_string()))?;
    }
    let chain = certs("cert_file", &tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| file_err("key_file", &tls.key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match shared_verifier {
        Some(v) => v,
        None => WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ApiError::Tls(e.to_string()))?,
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
