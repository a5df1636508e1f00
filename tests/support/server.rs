//! A local HTTP/1.1 server of our own, with scripted answers and fault modes, for tests, the
//! demo and the benchmark. Listens on 127.0.0.1 only; every connection gets a thread.
//!
//! Shared by `tests/*.rs` (`mod support;`) and examples (`#[path = ...] mod server;`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query as sent on the request line.
    pub path: String,
    /// Headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// Which connection (0-based, in accept order) carried it.
    pub connection: usize,
}

impl Recorded {
    /// The first value of a header, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many times a header (any case) was sent.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An ordinary HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Length is added).
    pub headers: Vec<(String, String)>,
    /// The body as sent (before gzip, when `gzip` is set).
    pub body: Vec<u8>,
    /// Send the body gzip-encoded with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }

    /// An answer with the given content type.
    pub fn with_type(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        let mut r = Reply::json(status, body);
        r.headers[0].1 = content_type.into();
        r
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the body gzip-encoded.
    pub fn gzipped(mut self) -> Reply {
        self.gzip = true;
        self
    }

    /// Waits before answering.
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer.
    Reply(Reply),
    /// Close the connection after reading the request, without answering.
    Drop,
    /// Keep the connection open without answering for this long, then close it.
    Hang(Duration),
    /// Write these bytes as they are, then close.
    Raw(Vec<u8>),
    /// Write each piece after waiting its delay (a slow, trickling or stalling answer), then
    /// close. Stops early when the client has gone.
    Pieces(Vec<(Duration, Vec<u8>)>),
}

type Handler = dyn Fn(&Recorded, usize) -> Action + Send + Sync;

/// A running server; stops when dropped.
pub struct TestServer {
    /// The bound address (127.0.0.1, a free port).
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    /// Starts a server that answers every request with `handler(request, index)`, where
    /// `index` counts requests from 0 across all connections.
    pub fn start(
        handler: impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static,
    ) -> TestServer {
        Self::start_on("127.0.0.1:0", handler)
    }

    /// As [`TestServer::start`], on a given address (port 0 picks a free one).
    pub fn start_on(
        addr: &str,
        handler: impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind(addr).expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        {
            let (requests, connections, stop) =
                (requests.clone(), connections.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn = connections.fetch_add(1, Ordering::SeqCst);
                    let (handler, requests, counter, stop) = (
                        handler.clone(),
                        requests.clone(),
                        counter.clone(),
                        stop.clone(),
                    );
                    thread::spawn(move || {
                        serve(stream, conn, &*handler, &requests, &counter, &stop)
                    });
                }
            });
        }
        TestServer {
            addr,
            requests,
            connections,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(
    stream: TcpStream,
    conn: usize,
    handler: &Handler,
    requests: &Mutex<Vec<Recorded>>,
    counter: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    // The head and the body are written separately: without this, Nagle holds a small body
    // back until the client's delayed ACK (~40 ms a call), which the benchmark would measure.
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while !stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader, conn) else {
            return;
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let index = counter.fetch_add(1, Ordering::SeqCst);
        requests.lock().unwrap().push(req.clone());
        match handler(&req, index) {
            Action::Reply(reply) => {
                if !reply.delay.is_zero() {
                    thread::sleep(reply.delay);
                }
                if write_reply(&mut writer, reply).is_err() || close {
                    return;
                }
            }
            Action::Drop => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Action::Hang(d) => {
                thread::sleep(d);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Action::Raw(bytes) => {
                let _ = writer.write_all(&bytes);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Action::Pieces(pieces) => {
                for (delay, bytes) in pieces {
                    thread::sleep(delay);
                    if writer
                        .write_all(&bytes)
                        .and_then(|_| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Reads one request (head and body) from a connection; `None` when it closes first.
pub fn read_request(reader: &mut BufReader<TcpStream>, conn: usize) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
        connection: conn,
    })
}

fn write_reply(w: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    let body = if reply.gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&reply.body)?;
        enc.finish()?
    } else {
        reply.body
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if reply.gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    w.write_all(head.as_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A small real PNG (a `w`×`h` colour gradient), for answers that carry an image.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((w * 3 + 1) * h) as usize);
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend_from_slice(&[(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 160]);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc_input);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The answer an image server gives: `{"created", "data": [{"b64_json", "revised_prompt"}]}`
/// with `n` images (the request's `n`, default 1), each a small PNG. Sends `x-request-id`.
pub fn images_handler() -> impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static {
    use base64::Engine;
    let image = base64::engine::general_purpose::STANDARD.encode(png(64, 64));
    move |req, index| {
        if req.method != "POST"
            || !req
                .path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/images/generations")
        {
            return Action::Reply(Reply::json(
                404,
                r#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#,
            ));
        }
        let body: serde_json::Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => {
                return Action::Reply(Reply::json(
                    400,
                    r#"{"error":{"message":"body is not JSON","type":"invalid_request_error","param":null,"code":null}}"#,
                ))
            }
        };
        let n = body
            .get("n")
            .and_then(|v| v.as_u64())
            .unwrap_or(1)
            .clamp(1, 10);
        let prompt = body.get("prompt").and_then(|v| v.as_str()).unwrap_or("");
        let data: Vec<_> = (0..n)
            .map(|_| serde_json::json!({"b64_json": image, "revised_prompt": prompt}))
            .collect();
        let answer = serde_json::json!({"created": 1750098846u64 + index as u64, "data": data});
        Action::Reply(
            Reply::json(200, answer.to_string())
                .header("x-request-id", &format!("req_local_{index}")),
        )
    }
}
