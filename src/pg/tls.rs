//! TLS for both kinds of connection (tokio-postgres sessions and our replication connection),
//! with rustls, following libpq's `sslmode` and `sslrootcert`.
//!
//! ```text
//! conninfo text --split_conninfo--> text without sslmode/sslrootcert --> tokio_postgres::Config
//!                        \--> TlsSettings { mode, root_cert } --remember(config)--> registry
//! connect(config) --settings_for(config)--> TlsSettings --plan()--> TlsPlan { mode, rustls config }
//!     pg::connect:            RustlsConnector (tokio-postgres' MakeTlsConnect), Config.ssl_mode
//!     ReplicationClient:      SSLRequest, 'S' -> TlsPlan::connector() wraps the socket
//! ```
//!
//! tokio-postgres 0.7 only knows `sslmode` disable/prefer/require and rejects `verify-ca`,
//! `verify-full` and `sslrootcert`, so `parse_conninfo` takes both out of the text and keeps
//! them here, keyed by the parsed `Config` (callers pass `tokio_postgres::Config` around).
//!
//! | sslmode | TLS | certificate checked |
//! | --- | --- | --- |
//! | disable | never | - |
//! | prefer (default) | if the server agrees ('S'), else plain | chain only if a root file exists |
//! | require | always | chain only if a root file exists (libpq: then like verify-ca) |
//! | verify-ca | always | chain against the root file (must exist) |
//! | verify-full | always | chain and host name |
//!
//! The root file is `sslrootcert`, else `~/.postgresql/root.crt`. Once the server said 'S', a
//! failed handshake is an error in every mode: `prefer` never falls back to plain text after a
//! certificate was refused. TLS is never used over Unix sockets (as libpq). No channel binding:
//! SCRAM runs as SCRAM-SHA-256 over TLS, not SCRAM-SHA-256-PLUS.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Config;
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode` values (without `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported: use disable, prefer or require".into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres should do: it only knows whether TLS is off, optional or required.
    pub fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as T;
        match self {
            SslMode::Disable => T::Disable,
            SslMode::Prefer => T::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => T::Require,
        }
    }

    fn from_tokio_postgres(mode: tokio_postgres::config::SslMode) -> SslMode {
        use tokio_postgres::config::SslMode as T;
        match mode {
            T::Disable => SslMode::Disable,
            T::Require => SslMode::Require,
            _ => SslMode::Prefer,
        }
    }
}

/// The TLS options of a connection string that tokio-postgres does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`, when given.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a conninfo (URL or `key=value`), returning the rest of
/// the text for tokio-postgres and the settings. Text that does not tokenize is returned as is
/// (tokio-postgres then reports it). Errors name the option, never the text (it may hold a password).
pub fn split_conninfo(text: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings::default();
    let mut apply = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => settings.mode = value.parse()?,
            "sslrootcert" if value == "system" => {
                return Err(
                    "sslrootcert=system is not supported: give the path of a PEM file \
                            holding the CA certificate(s)"
                        .into(),
                );
            }
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let trimmed = text.trim_start();
    let is_url = ["postgresql://", "postgres://"]
        .iter()
        .any(|p| trimmed.starts_with(p));
    let rest = if is_url {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((text.to_string(), settings));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !apply(&percent_decode(k), &percent_decode(v))? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let Some(pairs) = tokenize_key_values(text) else {
            return Ok((text.to_string(), settings));
        };
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for pair in pairs {
            if apply(&pair.key, &pair.value)? {
                out.push_str(&text[last..pair.start]);
                last = pair.end;
            }
        }
        out.push_str(&text[last..]);
        out
    };
    Ok((rest, settings))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(b)) = (bytes[i], hex) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct KeyValue {
    key: String,
    value: String,
    /// Byte span of `key = value` in the text.
    start: usize,
    end: usize,
}

/// libpq's `key = value` syntax: values are bare (backslash escapes) or single-quoted.
fn tokenize_key_values(text: &str) -> Option<Vec<KeyValue>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_string();
        i = skip_ws(i);
        if i >= b.len() || b[i] != b'=' {
            return None;
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            loop {
                match b.get(i)? {
                    b'\\' => {
                        value.push(*b.get(i + 1)?);
                        i += 2;
                    }
                    b'\'' => {
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' {
                    value.push(*b.get(i + 1)?);
                    i += 2;
                } else {
                    value.push(b[i]);
                    i += 1;
                }
            }
        }
        out.push(KeyValue {
            key,
            value: String::from_utf8(value).ok()?,
            start,
            end: i,
        });
    }
}

/// Settings of configs made by `parse_conninfo`, keyed by the config without application name
/// and password (both may be changed or filled in later).
static REGISTRY: Mutex<Vec<(Config, TlsSettings)>> = Mutex::new(Vec::new());

fn registry_key(config: &Config) -> Config {
    let mut key = config.clone();
    key.application_name("");
    key.password("");
    key
}

fn same_servers(a: &Config, b: &Config) -> bool {
    a.get_hosts() == b.get_hosts()
        && a.get_hostaddrs() == b.get_hostaddrs()
        && a.get_ports() == b.get_ports()
}

/// Records the TLS settings of a config that `parse_conninfo` made.
pub fn remember(config: &Config, settings: TlsSettings) {
    let key = registry_key(config);
    let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    registry.retain(|(k, _)| *k != key);
    registry.push((key, settings));
}

/// The TLS settings for `config`: those recorded for it; else the strictest recorded for the same
/// servers (a config derived from a parsed one, e.g. with another dbname, never gets weaker
/// checks); else what tokio-postgres' own `sslmode` says, with no `sslrootcert`.
pub fn settings_for(config: &Config) -> TlsSettings {
    let key = registry_key(config);
    let registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, s)) = registry.iter().find(|(k, _)| *k == key) {
        return s.clone();
    }
    if let Some((_, s)) = registry
        .iter()
        .filter(|(k, _)| same_servers(k, &key))
        .max_by_key(|(_, s)| s.mode)
    {
        return s.clone();
    }
    TlsSettings {
        mode: SslMode::from_tokio_postgres(config.get_ssl_mode()),
        root_cert: None,
    }
}

/// Why TLS could not be set up (before any connection was tried).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "sslmode={mode} needs a root certificate file, but {path} does not exist: set \
         sslrootcert=/path/to/ca.crt (PEM) or use sslmode=require"
    )]
    NoRootCert { mode: &'static str, path: PathBuf },
    #[error("could not read root certificate file {path}: {reason}")]
    BadRootCert { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How a connection does TLS: the mode and, unless disabled, a ready rustls configuration.
#[derive(Clone)]
pub struct TlsPlan {
    pub mode: SslMode,
    /// The root file in use, when the chain is checked.
    pub root_cert: Option<PathBuf>,
    /// Whether the host name is checked too.
    pub check_host: bool,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPlan")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .field("check_host", &self.check_host)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sslrootcert`, else `~/.postgresql/root.crt` (like libpq).
pub fn root_cert_path(settings: &TlsSettings, home: Option<&Path>) -> Option<PathBuf> {
    settings
        .root_cert
        .clone()
        .or_else(|| home.map(|h| h.join(".postgresql").join("root.crt")))
}

impl TlsPlan {
    /// Builds the plan; `home` is where `~/.postgresql/root.crt` is looked for.
    pub fn new(settings: &TlsSettings, home: Option<&Path>) -> Result<TlsPlan, TlsError> {
        let provider = provider();
        let root_path = root_cert_path(settings, home);
        let root_exists = root_path.as_deref().is_some_and(Path::exists);
        let verifying = settings.mode >= SslMode::VerifyCa;
        if verifying && !root_exists {
            return Err(TlsError::NoRootCert {
                mode: settings.mode.as_str(),
                path: root_path.unwrap_or_else(|| PathBuf::from("~/.postgresql/root.crt")),
            });
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let check_chain = settings.mode != SslMode::Disable && root_exists;
        let check_host = settings.mode == SslMode::VerifyFull;
        let verifier: Arc<dyn ServerCertVerifier> = if check_chain {
            let path = root_path.as_deref().expect("exists");
            let roots = load_roots(path)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::BadRootCert {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
            if check_host {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        } else {
            Arc::new(AnyCertificate(provider))
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsPlan {
            mode: settings.mode,
            root_cert: if check_chain { root_path } else { None },
            check_host,
            config: Arc::new(config),
        })
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// tokio-postgres' `MakeTlsConnect` for this plan.
    pub fn make_tls_connect(&self) -> RustlsConnector {
        RustlsConnector {
            config: self.config.clone(),
        }
    }

    /// A sentence for error messages about what was checked.
    pub fn describe(&self) -> String {
        match (&self.root_cert, self.check_host) {
            (Some(p), true) => format!(
                "sslmode={}: certificate checked against {} and the host name",
                self.mode.as_str(),
                p.display()
            ),
            (Some(p), false) => format!(
                "sslmode={}: certificate chain checked against {}",
                self.mode.as_str(),
                p.display()
            ),
            (None, _) => format!("sslmode={}: certificate not checked", self.mode.as_str()),
        }
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |reason: String| TlsError::BadRootCert {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(roots)
}

/// The server name to check / send as SNI: a DNS name or an IP address; `None` for none.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    if host.is_empty() || host.starts_with('/') {
        return None;
    }
    ServerName::try_from(host.to_owned()).ok()
}

/// Whether TLS applies at all: not for Unix sockets (the server never offers it there).
pub fn all_unix_sockets(config: &Config) -> bool {
    !config.get_hosts().is_empty()
        && config.get_hostaddrs().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)))
}

/// A readable reason and hint for a failed TLS handshake, if `err` (or its sources) is one.
pub fn explain_handshake_failure(
    err: &(dyn std::error::Error + 'static),
    plan: &TlsPlan,
    host: &str,
) -> Option<(String, String)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let rustls_err = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = rustls_err {
            let reason = format!("TLS handshake failed ({}): {r}", plan.describe());
            let hint = match r {
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => "the server's certificate is not signed by a CA in sslrootcert: give the CA \
                      that issued it"
                    .to_string(),
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "the server's certificate is not issued for host {host:?}: connect with the \
                     name in the certificate, or use sslmode=verify-ca"
                ),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "the server's certificate has expired: renew it".to_string(),
                _ => "check ssl_cert_file/ssl_key_file on the server and sslmode/sslrootcert here"
                    .to_string(),
            };
            return Some((reason, hint));
        }
        cur = e.source();
    }
    None
}

/// Checks the chain and the handshake signatures but not the host name (sslmode=verify-ca).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate (sslmode=prefer/require without a root file) but still checks that the
/// server holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' `MakeTlsConnect` over tokio-rustls.
#[derive(Clone)]
pub struct RustlsConnector {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // An empty domain (Unix socket) is fine until a handshake is actually attempted.
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: server_name(domain),
        })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no host name to check the server certificate against: set host=...",
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS stream for tokio-postgres (a newtype: neither the trait nor tokio-rustls' type is ours).
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, TlsSettings) {
        split_conninfo(text).unwrap()
    }

    #[test]
    fn the_default_mode_is_prefer_without_a_root_certificate() {
        let (rest, s) = split("host=h user=u");
        assert_eq!(rest, "host=h user=u");
        assert_eq!(s, TlsSettings::default());
        assert_eq!(s.mode, SslMode::Prefer);
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_key_value_text() {
        let (rest, s) =
            split("host=h sslmode=verify-full  sslrootcert = '/a b/ca.crt' password='x y'");
        assert_eq!(rest, "host=h    password='x y'");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/a b/ca.crt")));
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"x y"[..]));
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_url_queries() {
        let (rest, s) = split(
            "postgresql://u:p@h:5/db?sslmode=verify-ca&connect_timeout=3&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u:p@h:5/db?connect_timeout=3");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, s) = split("postgres://h/db?sslmode=require");
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(s.mode, SslMode::Require);
    }

    #[test]
    fn unknown_sslmodes_are_refused_without_echoing_the_text() {
        let err = split_conninfo("host=h password=s3cret sslmode=bogus").unwrap_err();
        assert!(err.contains("bogus") && !err.contains("s3cret"), "{err}");
        assert!(
            split_conninfo("host=h sslmode=allow")
                .unwrap_err()
                .contains("allow")
        );
        assert!(split_conninfo("host=h sslrootcert=system").is_err());
    }

    #[test]
    fn verify_modes_ask_tokio_postgres_for_required_tls() {
        use tokio_postgres::config::SslMode as T;
        assert_eq!(SslMode::VerifyFull.for_tokio_postgres(), T::Require);
        assert_eq!(SslMode::VerifyCa.for_tokio_postgres(), T::Require);
        assert_eq!(SslMode::Prefer.for_tokio_postgres(), T::Prefer);
        assert_eq!(SslMode::Disable.for_tokio_postgres(), T::Disable);
    }

    #[test]
    fn verify_modes_without_a_root_file_are_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: None,
        };
        let err = TlsPlan::new(&settings, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".postgresql/root.crt"), "{err}");
    }

    #[test]
    fn require_checks_nothing_without_a_root_file() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [SslMode::Prefer, SslMode::Require] {
            let plan = TlsPlan::new(
                &TlsSettings {
                    mode,
                    root_cert: None,
                },
                Some(dir.path()),
            )
            .unwrap();
            assert_eq!(plan.root_cert, None);
            assert!(!plan.check_host);
        }
    }

    #[test]
    fn a_root_file_that_is_not_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = TlsPlan::new(
            &TlsSettings {
                mode: SslMode::VerifyCa,
                root_cert: Some(path.clone()),
            },
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn settings_follow_a_parsed_config_and_configs_derived_from_it() {
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/ca.pem".into()),
        };
        let config: Config = "host=registry-test-host port=1 dbname=a user=u"
            .parse()
            .unwrap();
        remember(&config, settings.clone());
        let mut renamed = config.clone();
        renamed.application_name("x");
        renamed.password("filled in");
        assert_eq!(settings_for(&renamed), settings);
        let mut other_db = config.clone();
        other_db.dbname("b");
        assert_eq!(settings_for(&other_db), settings);
        let unrelated: Config = "host=elsewhere sslmode=require".parse().unwrap();
        assert_eq!(settings_for(&unrelated).mode, SslMode::Require);
    }

    #[test]
    fn unix_socket_only_configs_do_not_use_tls() {
        assert!(all_unix_sockets(&"host=/tmp user=u".parse().unwrap()));
        assert!(!all_unix_sockets(&"host=/tmp,h user=u".parse().unwrap()));
        assert!(server_name("").is_none());
        assert!(matches!(
            server_name("127.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("localhost"),
            Some(ServerName::DnsName(_))
        ));
    }
}
