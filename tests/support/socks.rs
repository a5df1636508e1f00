//! A SOCKS5 proxy for tests (RFC 1928, with RFC 1929 username/password): records each
//! CONNECT's target and user, and tunnels to loopback targets only.
#![allow(dead_code)]

use super::proxy::copy_counting;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One CONNECT as the SOCKS5 proxy received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    /// `host:port` asked for: an IP address, or a name when the client left resolving to the
    /// proxy (`socks5h://`).
    pub target: String,
    /// The user name, when the client authenticated.
    pub user: Option<String>,
}

/// A running SOCKS5 proxy on 127.0.0.1; stops when dropped.
pub struct Socks5Proxy {
    /// The bound address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SocksRequest>>>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Socks5Proxy {
    /// Starts a proxy; with `credentials`, only username/password authentication with exactly
    /// those is accepted.
    pub fn start(credentials: Option<(&str, &str)>) -> Socks5Proxy {
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind SOCKS5 proxy");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (requests, bytes, stop) = (requests.clone(), bytes.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, bytes, credentials) =
                        (requests.clone(), bytes.clone(), credentials.clone());
                    thread::spawn(move || {
                        let _ = handle(stream, credentials, &requests, bytes);
                    });
                }
            });
        }
        Socks5Proxy {
            addr,
            requests,
            bytes,
            stop,
        }
    }

    /// `socks5://127.0.0.1:PORT` (or another scheme, e.g. `socks5h`).
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Every CONNECT received, in arrival order.
    pub fn requests(&self) -> Vec<SocksRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Bytes carried through tunnels, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn read_vec(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

fn handle(
    mut client: TcpStream,
    credentials: Option<(String, String)>,
    requests: &Mutex<Vec<SocksRequest>>,
    bytes: Arc<AtomicU64>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_vec(&mut client, 2)?;
    if head[0] != 5 {
        return Ok(());
    }
    let methods = read_vec(&mut client, head[1] as usize)?;
    let mut user = None;
    match &credentials {
        Some((want_user, want_pass)) => {
            if !methods.contains(&2) {
                return client.write_all(&[5, 0xff]);
            }
            client.write_all(&[5, 2])?;
            let version = read_vec(&mut client, 2)?;
            let name = read_vec(&mut client, version[1] as usize)?;
            let len = read_vec(&mut client, 1)?;
            let pass = read_vec(&mut client, len[0] as usize)?;
            let ok = name == want_user.as_bytes() && pass == want_pass.as_bytes();
            client.write_all(&[1, if ok { 0 } else { 1 }])?;
            if !ok {
                return Ok(());
            }
            user = Some(String::from_utf8_lossy(&name).into_owned());
        }
        None => client.write_all(&[5, 0])?,
    }
    let request = read_vec(&mut client, 4)?;
    let host = match request[3] {
        1 => Ipv4Addr::from(<[u8; 4]>::try_from(read_vec(&mut client, 4)?).unwrap()).to_string(),
        4 => format!(
            "[{}]",
            Ipv6Addr::from(<[u8; 16]>::try_from(read_vec(&mut client, 16)?).unwrap())
        ),
        3 => {
            let len = read_vec(&mut client, 1)?;
            String::from_utf8_lossy(&read_vec(&mut client, len[0] as usize)?).into_owned()
        }
        _ => return Ok(()),
    };
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(read_vec(&mut client, 2)?).unwrap());
    let target = format!("{host}:{port}");
    requests.lock().unwrap().push(SocksRequest {
        target: target.clone(),
        user,
    });
    // Tests stay on this machine: only loopback targets are tunnelled (reply 2: not allowed).
    let upstream = match host.as_str() {
        "127.0.0.1" | "localhost" | "[::1]" => TcpStream::connect(("127.0.0.1", port)).ok(),
        _ => None,
    };
    let Some(upstream) = upstream else {
        return client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    };
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    client.set_read_timeout(None)?;
    let mut up_writer = upstream.try_clone()?;
    let counted = bytes.clone();
    let down = thread::spawn({
        let mut upstream = upstream;
        let mut client = client.try_clone()?;
        move || {
            let _ = copy_counting(&mut upstream, &mut client, &counted);
            let _ = client.shutdown(Shutdown::Both);
        }
    });
    let _ = copy_counting(&mut client, &mut up_writer, &bytes);
    let _ = up_writer.shutdown(Shutdown::Both);
    let _ = down.join();
    Ok(())
}
