//! An HTTPS test server: a test CA made at run time (rcgen), a server certificate for
//! 127.0.0.1 and localhost signed by it, and a TLS front (rustls) that terminates each
//! connection and pipes the plain bytes to a [`TestServer`], so the scripted answers, fault
//! modes and request records are the plain server's own.
#![allow(dead_code)]

use super::server::{Action, Recorded, TestServer};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A certificate authority made for one test, and a server identity it signed.
pub struct TestCa {
    /// The CA certificate, PEM: what a `ca_file` holds.
    pub ca_pem: String,
    /// A ready server configuration presenting the leaf (and the CA) certificate.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A new CA and a leaf for `127.0.0.1`, `::1` and `localhost`.
    pub fn new() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "opi_openai test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
            .unwrap();
        TestCa {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(server_config),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

/// A running HTTPS server; stops when dropped.
pub struct TlsServer {
    /// The TLS address (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The CA that signed the server's certificate.
    pub ca: TestCa,
    /// The plain server behind the TLS front, which answers and records.
    pub plain: TestServer,
    handshakes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    /// Starts an HTTPS server answering with `handler`, as [`TestServer::start`] does.
    pub fn start(
        handler: impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static,
    ) -> TlsServer {
        let plain = TestServer::start(handler);
        let ca = TestCa::new();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS test server");
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (config, inner, handshakes, stop) = (
                ca.server_config.clone(),
                plain.addr,
                handshakes.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (config, handshakes) = (config.clone(), handshakes.clone());
                    thread::spawn(move || terminate(stream, config, inner, &handshakes));
                }
            });
        }
        TlsServer {
            addr,
            ca,
            plain,
            handshakes,
            stop,
        }
    }

    /// `https://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    /// Every request the server answered, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.plain.requests()
    }

    /// TLS handshakes completed (a client that rejects the certificate completes none).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn is_wait(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Completes the handshake, then pumps bytes both ways between the TLS client and the plain
/// server until either side closes. rustls' stream is one object for both directions, so the
/// pump alternates with short read timeouts instead of using two threads.
fn terminate(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    inner: SocketAddr,
    handshakes: &AtomicUsize,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let Ok(mut plain) = TcpStream::connect(inner) else {
        return;
    };
    let tick = Some(Duration::from_millis(5));
    let _ = tls.sock.set_read_timeout(tick);
    let _ = plain.set_read_timeout(tick);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_wait(&e) => {}
            Err(_) => break,
        }
        match plain.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                break;
            }
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if is_wait(&e) => {}
            Err(_) => break,
        }
    }
    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
}
