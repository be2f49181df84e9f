//! Mutual TLS for the gRPC link between the deduplicator and the gatherers (DESIGN.md, mTLS).
//!
//! Both sides verify the other against a configured CA; a gatherer also accepts only clients
//! whose certificate names (DNS subject alternative names) are on its allow-list. The files are
//! re-read when they change (checked at every handshake, by size and modification time), so
//! certificates rotate by replacing their files: open connections keep going, the next
//! handshake uses the new ones, nothing restarts. Files that do not load are refused (logged,
//! `tls_reloads_total{side,result="error"}`) and the running configuration is kept.
//!
//! Handshakes run in their own tasks, bounded in number and time, so a client that connects and
//! says nothing (slowloris) holds one slot for at most the handshake timeout and never blocks
//! the accept loop. Every refused handshake is counted by reason in
//! `api_tls_rejections_total{reason}` and logged with the peer's address and rustls's error.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// `tls_reloads_total{side,result}`: certificate files re-read after a change.
pub const RELOADS: &str = "tls_reloads_total";
/// `tls_certificate_expiry_timestamp_seconds{side,cert}`: when this side's own certificate
/// (`cert="own"`) and its CA (`cert="ca"`: the latest-ending one of a bundle) end, set at start
/// and at every reload; the alert `TlsCertificateExpiresSoon` fires 30 days ahead.
pub const EXPIRY: &str = "tls_certificate_expiry_timestamp_seconds";

/// The descriptions of the TLS metrics both services export.
pub const HELP: &[crate::telemetry::Help] = &[
    (
        crate::telemetry::MetricKind::Counter,
        RELOADS,
        None,
        "TLS certificate files re-read after they changed, by side and result (error: the new files did not load; the running certificates stay)",
    ),
    (
        crate::telemetry::MetricKind::Gauge,
        EXPIRY,
        None,
        "When this side's TLS certificate (cert=own) and its CA (cert=ca, the latest-ending of the bundle) end, Unix seconds",
    ),
];
/// `api_tls_rejections_total{reason}`: handshakes a gatherer refused.
pub const REJECTIONS: &str = "api_tls_rejections_total";
/// Every reason `api_tls_rejections_total` is counted under.
pub const REJECTION_REASONS: &[&str] = &[
    "no_client_certificate",
    "unknown_ca",
    "expired",
    "not_yet_valid",
    "revoked_or_invalid",
    "name_not_allowed",
    "peer_refused",
    "handshake_timeout",
    "too_many_handshakes",
    "protocol",
    "io",
];

/// The three files of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA (PEM, one or more certificates) the other side's certificate must chain to.
    pub ca_file: PathBuf,
    /// This side's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// This side's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS material did not load, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("{path}: {what}")]
    Bad { path: String, what: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Bad {
            path: shown.clone(),
            what: format!("not PEM certificates ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            path: shown,
            what: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    // The error never quotes the file: it is a private key.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Bad {
        path: shown,
        what: "holds no PEM private key".into(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in read_certs(path)? {
        store.add(c).map_err(|e| TlsError::Bad {
            path: path.display().to_string(),
            what: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Sets `tls_certificate_expiry_timestamp_seconds` from the files a configuration was just
/// built from (they loaded, so they hold certificates; one whose validity cannot be read is
/// logged and left out, never a reason to refuse a configuration rustls accepted).
fn report_expiry(side: &'static str, files: &TlsFiles) {
    let ends = |path: &Path| -> Vec<i64> {
        read_certs(path)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| match crate::x509::validity(c) {
                Ok((_, not_after)) => Some(not_after),
                Err(e) => {
                    tracing::warn!(side, file = %path.display(), error = %e, "cannot read a certificate's validity");
                    None
                }
            })
            .collect()
    };
    if let Some(own) = ends(&files.cert_file).first() {
        metrics::gauge!(EXPIRY, "side" => side, "cert" => "own").set(*own as f64);
    }
    if let Some(ca) = ends(&files.ca_file).into_iter().max() {
        metrics::gauge!(EXPIRY, "side" => side, "cert" => "ca").set(ca as f64);
    }
}

/// Size and modification time of each file: what "changed" means.
type Stamp = Vec<(u64, Option<SystemTime>)>;

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.ca_file, &files.cert_file, &files.key_file]
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (0, None),
        })
        .collect()
}

/// A configuration built from files, rebuilt when they change.
struct Reloading<T> {
    side: &'static str,
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<T, TlsError>,
    current: RwLock<(Stamp, T)>,
}

impl<T: Clone> Reloading<T> {
    fn new(
        side: &'static str,
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let s = stamp(&files);
        let value = build(&files)?;
        Ok(Self {
            side,
            files,
            build,
            current: RwLock::new((s, value)),
        })
    }

    fn get(&self) -> T {
        let now = stamp(&self.files);
        {
            let g = match self.current.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if g.0 == now {
                return g.1.clone();
            }
        }
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.0 != now {
            // Remember the stamp either way: a bad file is reported once, not at every
            // handshake, and a fixed one (a new stamp) is tried again.
            g.0 = now;
            match (self.build)(&self.files) {
                Ok(v) => {
                    g.1 = v;
                    report_expiry(self.side, &self.files);
                    metrics::counter!(RELOADS, "side" => self.side, "result" => "ok").increment(1);
                    tracing::info!(side = self.side, cert = %self.files.cert_file.display(), "TLS certificates reloaded");
                }
                Err(e) => {
                    metrics::counter!(RELOADS, "side" => self.side, "result" => "error")
                        .increment(1);
                    tracing::error!(side = self.side, error = %e, "changed TLS files do not load: keeping the running certificates");
                }
            }
        }
        g.1.clone()
    }
}

fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca_file)?), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&files.cert_file)?, read_key(&files.key_file)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&files.ca_file)?)
        .with_client_auth_cert(read_certs(&files.cert_file)?, read_key(&files.key_file)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A gatherer's side: its certificate, the clients' CA, the names it accepts.
pub struct ServerTls {
    config: Reloading<Arc<ServerConfig>>,
    allowed_clients: Vec<String>,
}

impl ServerTls {
    /// Loads the files (an error here is a configuration error: the service does not start).
    pub fn load(files: TlsFiles, allowed_clients: Vec<String>) -> Result<Self, TlsError> {
        for n in &allowed_clients {
            ServerName::try_from(n.as_str()).map_err(|_| TlsError::Bad {
                path: "allowed_clients".into(),
                what: format!("{n:?} is not a DNS name"),
            })?;
        }
        Ok(Self {
            config: Reloading::new("server", files, server_config)?,
            allowed_clients,
        })
    }

    /// Sets `tls_certificate_expiry_timestamp_seconds` (called once the metrics recorder is
    /// installed; every reload sets it again).
    pub fn report_expiry(&self) {
        report_expiry(self.config.side, &self.config.files);
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.get()
    }

    /// The allowed name the client's certificate carries, if any.
    pub fn allowed(&self, leaf: &CertificateDer<'_>) -> Option<&str> {
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        self.allowed_clients
            .iter()
            .find(|n| {
                ServerName::try_from(n.as_str())
                    .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .map(String::as_str)
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.files)
            .field("allowed_clients", &self.allowed_clients)
            .finish()
    }
}

/// The deduplicator's side: its client certificate and the gatherers' CA.
pub struct ClientTls {
    config: Reloading<Arc<ClientConfig>>,
}

impl ClientTls {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            config: Reloading::new("client", files, client_config)?,
        })
    }

    /// Sets `tls_certificate_expiry_timestamp_seconds` (called once the metrics recorder is
    /// installed; every reload sets it again).
    pub fn report_expiry(&self) {
        report_expiry(self.config.side, &self.config.files);
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.get()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files)
            .finish()
    }
}

/// The `api_tls_rejections_total` reason of a failed server handshake.
pub fn rejection_reason(e: &io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no_client_certificate",
        Some(E::InvalidCertificate(c)) => match c {
            C::UnknownIssuer | C::BadSignature => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            _ => "revoked_or_invalid",
        },
        Some(E::AlertReceived(_)) => "peer_refused",
        Some(_) => "protocol",
        None => "io",
    }
}

/// Limits on handshakes.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; more connections wait in the kernel's backlog.
    pub max_handshakes: usize,
}

/// Accepts TCP connections, runs the TLS handshakes (bounded) and the allow-list check, and
/// sends the accepted streams to `tx` until `stop`. Handshakes run on `tasks`.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: AcceptLimits,
    tx: mpsc::Sender<Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>>,
    tasks: tokio_util::task::TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    metrics::counter!(REJECTIONS, "reason" => "io").increment(1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (tls, tx, stop) = (tls.clone(), tx.clone(), stop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => r,
            };
            let stream = match stream {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = rejection_reason(&e);
                    metrics::counter!(REJECTIONS, "reason" => reason).increment(1);
                    tracing::warn!(%peer, reason, error = %e, "gRPC TLS handshake refused");
                    return;
                }
                Err(_) => {
                    metrics::counter!(REJECTIONS, "reason" => "handshake_timeout").increment(1);
                    tracing::warn!(%peer, timeout = ?limits.handshake_timeout, "gRPC TLS handshake not finished in time: connection dropped");
                    return;
                }
            };
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned();
            let name = leaf.as_ref().and_then(|l| tls.allowed(l)).map(str::to_owned);
            match name {
                Some(name) => {
                    tracing::debug!(%peer, client = %name, "gRPC client accepted");
                    let _ = tx.send(Ok(stream)).await;
                }
                None => {
                    metrics::counter!(REJECTIONS, "reason" => "name_not_allowed").increment(1);
                    tracing::warn!(%peer, allowed = ?tls.allowed_clients, "gRPC client certificate names no allowed client: connection dropped");
                }
            }
        });
    }
}

/// A tonic connector for the deduplicator: TCP, then TLS with the current client
/// configuration, verifying the gatherer's certificate for `server_name`.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<ClientTls>,
    server_name: ServerName<'static>,
}

impl Connector {
    pub fn new(tls: Arc<ClientTls>, server_name: &str) -> Result<Self, TlsError> {
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|_| TlsError::Bad {
                path: "server_name".into(),
                what: format!("{server_name:?} is not a DNS name or IP address"),
            })?;
        Ok(Self { tls, server_name })
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, name) = (self.tls.clone(), self.server_name.clone());
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(tls.config())
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
