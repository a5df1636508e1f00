//! TLS on direct connections, inside our socket transport ([`super::connect`]).
//!
//! ureq's own TLS layer (kept for connections through a proxy) reads the socket through our
//! transport's buffers into rustls, and hands plaintext over through a buffer of its own: two
//! more copies of every byte and two more layers per call. Here rustls reads and writes the
//! socket itself and its plaintext goes straight into the buffers ureq reads.
//!
//! The trust is ours to build as well, which is what lets `ca_file` cost nothing on the first
//! call: the file's roots are tried first, and the system's store (plus the file) is loaded
//! only for a server the file does not vouch for ([`CaFileFirst`]).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// How many times a `ca_file` trust read the system's store (see [`CaFileFirst`]).
static SYSTEM_STORE_LOADS: AtomicU64 = AtomicU64::new(0);

/// Test hook: how many times a `ca_file` trust has read the system's store in this process.
#[doc(hidden)]
pub fn ca_file_system_store_loads() -> u64 {
    SYSTEM_STORE_LOADS.load(Ordering::SeqCst)
}

/// Whom a direct TLS connection trusts.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// The platform's verifier (the system's store; on Windows and macOS, the system's own
    /// verification).
    Platform,
    /// The roots of a `ca_file`, then the platform's store plus those roots.
    CaFile(Vec<CertificateDer<'static>>),
    /// Nothing is checked (`tls_verify: false`).
    Off,
}

/// The rustls configuration of an agent's direct TLS connections, built at its first TLS
/// connection (an agent that only ever calls `http://` URLs never builds it).
#[derive(Debug)]
pub(crate) struct TlsSettings {
    trust: Trust,
    config: OnceLock<Arc<ClientConfig>>,
}

impl TlsSettings {
    /// Settings for `trust`; nothing is built yet.
    pub(crate) fn new(trust: Trust) -> TlsSettings {
        TlsSettings {
            trust,
            config: OnceLock::new(),
        }
    }

    /// The rustls configuration, built at the first call.
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, rustls::Error> {
        if let Some(config) = self.config.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(build_config(&self.trust)?);
        // Two threads may race to build it; both results are equal and one is kept.
        Ok(self.config.get_or_init(|| config).clone())
    }
}

/// The crypto provider: the process default when the host installed one, else ring (as ureq).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn build_config(trust: &Trust) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Platform => Arc::new(rustls_platform_verifier::Verifier::new(provider)?),
        Trust::CaFile(roots) => Arc::new(CaFileFirst::new(roots.clone(), provider)?),
        Trust::Off => Arc::new(NoVerification(provider)),
    };
    Ok(builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `ca_file`'s trust: the file's roots and the system's. The file's roots are tried first,
/// so that a server signed by them (the reason to give a `ca_file`: a corporate CA, a
/// TLS-inspecting firewall) is accepted without reading the system's store; any other
/// server is checked against the platform's store plus the file's roots, loaded at the first
/// such server. The answer is always the second's whenever the first refuses, so nothing is
/// accepted that the platform's store plus the file would refuse, and nothing refused that it
/// would accept.
#[derive(Debug)]
struct CaFileFirst {
    file: Arc<WebPkiServerVerifier>,
    roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    system: OnceLock<Arc<dyn ServerCertVerifier>>,
}

impl CaFileFirst {
    fn new(
        roots: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CaFileFirst, rustls::Error> {
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
        if added == 0 {
            return Err(rustls::Error::General(
                "ca_file holds no certificate usable as a root".to_string(),
            ));
        }
        let file = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(CaFileFirst {
            file,
            roots,
            provider,
            system: OnceLock::new(),
        })
    }

    /// The platform's verifier with the file's roots added, built at the first need.
    fn system(&self) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
        if let Some(v) = self.system.get() {
            return Ok(v.clone());
        }
        SYSTEM_STORE_LOADS.fetch_add(1, Ordering::SeqCst);
        let built: Arc<dyn ServerCertVerifier> =
            Arc::new(rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.roots.iter().cloned(),
                self.provider.clone(),
            )?);
        Ok(self.system.get_or_init(|| built).clone())
    }
}

impl ServerCertVerifier for CaFileFirst {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.file.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_) => self.system()?.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.file.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.file.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.file.supported_verify_schemes()
    }
}

/// `tls_verify: false`: every certificate and handshake signature is accepted, as ureq's own
/// TLS layer does with verification off.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a certificate must be valid for: the URL's host (an IP address or a DNS name).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, rustls::Error> {
    ServerName::try_from(host.to_string())
        .map_err(|_| rustls::Error::General(format!("{host} is not a valid TLS server name")))
}
