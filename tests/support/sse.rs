//! A streaming test server of our own: answers each request with a scripted sequence of writes
//! and pauses (Server-Sent Events split across TCP writes wherever the test says), and records
//! when the client closed the connection.
#![allow(dead_code)]

use super::server::{read_request, Recorded};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One step of an answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes (one `write` call, TCP_NODELAY set, flushed).
    Write(Vec<u8>),
    /// Wait.
    Sleep(Duration),
}

type Script = dyn Fn(&Recorded) -> Vec<Step> + Send + Sync;

/// A running streaming server; stops accepting when dropped.
pub struct SseServer {
    /// 127.0.0.1 and a free port.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    closed: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl SseServer {
    /// Answers every request with the steps `script(request)` gives, then closes.
    pub fn start(script: impl Fn(&Recorded) -> Vec<Step> + Send + Sync + 'static) -> SseServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let (requests, closed, stop) = (requests.clone(), closed.clone(), stop.clone());
            thread::spawn(move || {
                for (conn, stream) in listener.incoming().enumerate() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, closed, script) =
                        (requests.clone(), closed.clone(), script.clone());
                    thread::spawn(move || serve(stream, conn, &*script, &requests, &closed));
                }
            });
        }
        SseServer {
            addr,
            requests,
            closed,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// When the client closed each connection (in the order seen), while the answer was
    /// still being written.
    pub fn closed(&self) -> Vec<Instant> {
        self.closed.lock().unwrap().clone()
    }
}

impl Drop for SseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(
    stream: TcpStream,
    conn: usize,
    script: &Script,
    requests: &Mutex<Vec<Recorded>>,
    closed: &Arc<Mutex<Vec<Instant>>>,
) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(req) = read_request(&mut reader, conn) else {
        return;
    };
    requests.lock().unwrap().push(req.clone());
    let steps = script(&req);
    // A reader thread notices the client's close at once (a write may not fail for a while).
    let done = Arc::new(AtomicBool::new(false));
    {
        let (closed, done) = (closed.clone(), done.clone());
        let mut watch = stream.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                match watch.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if !done.load(Ordering::SeqCst) {
                closed.lock().unwrap().push(Instant::now());
            }
        });
    }
    let mut writer = stream;
    for step in steps {
        match step {
            Step::Write(bytes) => {
                if writer
                    .write_all(&bytes)
                    .and_then(|_| writer.flush())
                    .is_err()
                {
                    break;
                }
            }
            Step::Sleep(d) => thread::sleep(d),
        }
    }
    done.store(true, Ordering::SeqCst);
    let _ = writer.shutdown(Shutdown::Both);
}

/// The head of a 200 `text/event-stream` answer whose body ends when the connection closes.
pub fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n".to_vec()
}

/// The head of a 200 `text/event-stream` answer sent with chunked transfer encoding.
pub fn sse_chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec()
}

/// One HTTP chunk holding `bytes`.
pub fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// One SSE event: `event: <name>` and `data: <json>`, lines ended by `eol`, then a blank line.
pub fn event(name: &str, data: &str, eol: &str) -> String {
    format!("event: {name}{eol}data: {data}{eol}{eol}")
}

/// The spec's `image_generation.partial_image` example with index `k` and image `b64`.
pub fn partial_json(k: u32, b64: &str) -> String {
    serde_json::json!({
        "type": "image_generation.partial_image",
        "b64_json": b64,
        "created_at": 1620000000u64,
        "size": "1024x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "png",
        "partial_image_index": k,
    })
    .to_string()
}

/// The spec's `image_generation.completed` example with image `b64`.
pub fn completed_json(b64: &str) -> String {
    serde_json::json!({
        "type": "image_generation.completed",
        "b64_json": b64,
        "created_at": 1620000000u64,
        "size": "1024x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "png",
        "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                  "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}},
    })
    .to_string()
}

/// `bytes` cut into writes of 1, 2, 3, 7, 50, 200, 1, 2, ... bytes with a short pause
/// between them, so that the client's reads end at awkward places (inside `data:`, between CR
/// and LF, inside base64 and JSON).
pub fn awkward_writes(bytes: &[u8]) -> Vec<Step> {
    const SIZES: [usize; 6] = [1, 2, 3, 7, 50, 200];
    let mut steps = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < bytes.len() {
        let end = (at + SIZES[k % SIZES.len()]).min(bytes.len());
        steps.push(Step::Write(bytes[at..end].to_vec()));
        steps.push(Step::Sleep(Duration::from_millis(1)));
        at = end;
        k += 1;
    }
    steps
}
