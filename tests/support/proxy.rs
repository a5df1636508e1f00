//! An HTTP CONNECT proxy for tests: records each CONNECT (target and Proxy-Authorization),
//! optionally demands Basic credentials (407 otherwise), and tunnels to loopback targets only.
#![allow(dead_code)]

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One CONNECT request as the proxy received it.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// `host:port` asked for.
    pub target: String,
    /// The `Proxy-Authorization` header, if sent.
    pub authorization: Option<String>,
}

/// A running CONNECT proxy on 127.0.0.1; stops when dropped.
pub struct ConnectProxy {
    /// The bound address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<ProxyRequest>>>,
    tunnels: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// Starts a proxy; with `credentials`, a CONNECT without `Proxy-Authorization: Basic`
    /// of exactly those gets 407.
    pub fn start(credentials: Option<(&str, &str)>) -> ConnectProxy {
        let expected = credentials.map(|(user, password)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test proxy");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let tunnels = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (requests, tunnels, bytes, stop) = (
                requests.clone(),
                tunnels.clone(),
                bytes.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, tunnels, bytes, expected) = (
                        requests.clone(),
                        tunnels.clone(),
                        bytes.clone(),
                        expected.clone(),
                    );
                    thread::spawn(move || {
                        handle(stream, expected.as_deref(), &requests, &tunnels, bytes)
                    });
                }
            });
        }
        ConnectProxy {
            addr,
            requests,
            tunnels,
            bytes,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT`
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Every CONNECT received, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Tunnels opened (CONNECTs accepted and connected).
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// Bytes carried through tunnels, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn handle(
    client: TcpStream,
    expected: Option<&str>,
    requests: &Mutex<Vec<ProxyRequest>>,
    tunnels: &AtomicUsize,
    bytes: Arc<AtomicU64>,
) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut writer = client;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.trim().eq_ignore_ascii_case("proxy-authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let answer = |w: &mut TcpStream, status: &str, extra: &str| {
        let _ = w
            .write_all(format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n").as_bytes());
        let _ = w.shutdown(Shutdown::Both);
    };
    if method != "CONNECT" {
        return answer(&mut writer, "405 Method Not Allowed", "");
    }
    requests.lock().unwrap().push(ProxyRequest {
        target: target.clone(),
        authorization: authorization.clone(),
    });
    if let Some(expected) = expected {
        if authorization.as_deref() != Some(expected) {
            return answer(
                &mut writer,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Basic realm=\"test\"\r\n",
            );
        }
    }
    // Tests stay on this machine: only loopback targets are tunnelled.
    let host = target.rsplit_once(':').map_or("", |(h, _)| h);
    let loopback_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if !(loopback_ip || host == "localhost") {
        return answer(&mut writer, "403 Forbidden", "");
    }
    let Ok(upstream) = TcpStream::connect(&target) else {
        return answer(&mut writer, "502 Bad Gateway", "");
    };
    if writer
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    tunnels.fetch_add(1, Ordering::SeqCst);
    let _ = writer.set_read_timeout(None);
    // Whatever the client sent early is already in the reader's buffer: forward it first.
    let early = reader.buffer().to_vec();
    let mut up_writer = upstream.try_clone().unwrap();
    if up_writer.write_all(&early).is_err() {
        return;
    }
    let counted = bytes.clone();
    let down = thread::spawn({
        let mut upstream = upstream;
        let mut writer = writer;
        move || {
            let _ = copy_counting(&mut upstream, &mut writer, &counted);
            let _ = writer.shutdown(Shutdown::Both);
        }
    });
    let mut client = reader.into_inner();
    let _ = copy_counting(&mut client, &mut up_writer, &bytes);
    let _ = up_writer.shutdown(Shutdown::Both);
    let _ = down.join();
}

pub fn copy_counting(
    from: &mut TcpStream,
    to: &mut TcpStream,
    bytes: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        // Counted before it is passed on: once the client has the bytes, a test may read the
        // count.
        bytes.fetch_add(n as u64, Ordering::SeqCst);
        to.write_all(&buf[..n])?;
    }
}
