//! A local image server for demos, the bindings examples and the benchmark: the test suite's
//! own HTTP/1.1 server (`tests/support/server.rs`) answering as an OpenAI-compatible
//! `POST .../v1/images/generations` would, on 127.0.0.1 only.
//!
//! ```text
//! cargo run --example local_server -- [--port N] [--big-mb N] [--delay-ms N] [--tls-ca FILE]
//! ```
//!
//! - Prints `listening http://127.0.0.1:PORT/` on stdout once it accepts connections.
//! - `--port N`: the port to bind (default 0: a free one).
//! - Every request whose path does not start with `/big/` gets the image answer of the tests
//!   (`images_handler`: `{"created", "data": [{"b64_json", "revised_prompt"}]}`, `n` small
//!   PNGs), or their 404/400 errors.
//! - `--big-mb N`: requests whose path starts with `/big/` (base URL
//!   `http://127.0.0.1:PORT/big/`) get one fixed ImagesResponse whose `b64_json` is N MiB of
//!   base64, built once at startup (pseudo-random bytes, so gzip would not shrink it; it is
//!   not a decodable image).
//! - `--delay-ms N`: requests whose path starts with `/slow/` get the image answer after
//!   waiting N ms (a server that takes time to generate, for concurrency figures).
//! - Requests whose path starts with `/gzip/` get the image answer gzip-encoded
//!   (`Content-Encoding: gzip`), as OpenAI's servers send it to a client that accepts it.
//! - A request whose JSON body has `"stream": true` (outside `/big/`) gets the spec's
//!   `text/event-stream` answer: `partial_images` (0-3) `image_generation.partial_image`
//!   events, then `image_generation.completed`, each carrying the small PNG.
//! - `--tls-ca FILE`: also serve HTTPS (a TLS front made with a CA created at startup, as the
//!   tests' HTTPS server) with the same answers, write that CA's certificate (PEM) to FILE, and
//!   print a second line, `listening https://127.0.0.1:PORT/`. Clients trust it through the
//!   `ca_file` option (libcurl: `CURLOPT_CAINFO`).
//! - Serves until killed, or until its standard input closes when that is a pipe or a socket
//!   (so a parent that dies takes the server with it). A terminal, `/dev/null` or a file on
//!   standard input is not watched.

#[path = "../tests/support/server.rs"]
mod server;
#[path = "../tests/support/sse.rs"]
mod sse;
#[path = "../tests/support/tls.rs"]
mod tls;

use server::{images_handler, Action, Recorded, Reply, TestServer};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

struct Args {
    port: u16,
    big_mb: usize,
    delay_ms: u64,
    tls_ca: Option<String>,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "local_server: {problem}\nusage: local_server [--port N] [--big-mb N] [--delay-ms N] [--tls-ca FILE]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 0,
        big_mb: 0,
        delay_ms: 0,
        tls_ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match name.as_str() {
            "--port" => args.port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--big-mb" => args.big_mb = value().parse().unwrap_or_else(|_| usage("bad --big-mb")),
            "--delay-ms" => {
                args.delay_ms = value().parse().unwrap_or_else(|_| usage("bad --delay-ms"))
            }
            "--tls-ca" => args.tls_ca = Some(value()),
            "-h" | "--help" => {
                println!(
                    "usage: local_server [--port N] [--big-mb N] [--delay-ms N] [--tls-ca FILE]"
                );
                std::process::exit(0);
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

/// `{"created":1750098846,"data":[{"b64_json":"<mb MiB of base64>"}]}`.
fn big_images_response(mb: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let len = mb * 1024 * 1024 / 4 * 4; // whole base64 quanta
    let head = br#"{"created":1750098846,"data":[{"b64_json":""#;
    let tail = br#""}]}"#;
    let mut body = Vec::with_capacity(head.len() + len + tail.len());
    body.extend_from_slice(head);
    // xorshift64: cheap, reproducible, incompressible enough for gzip not to matter.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(ALPHABET[(x >> 58) as usize]);
    }
    body.extend_from_slice(tail);
    body
}

/// Whether standard input is a pipe or a socket, whose end means the parent is gone.
fn stdin_is_pipe() -> bool {
    // SAFETY: fstat on fd 0 writes into a zeroed stat struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 {
            return false;
        }
        let kind = st.st_mode & libc::S_IFMT;
        kind == libc::S_IFIFO || kind == libc::S_IFSOCK
    }
}

/// The answers of one listener (HTTP, or the HTTPS front): see the module documentation.
fn handler(
    big: Option<Arc<Vec<u8>>>,
    delay: Duration,
) -> impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static {
    let small = images_handler();
    let png = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(server::png(64, 64))
    };
    move |req, index| match &big {
        Some(body) if req.path.starts_with("/big/") => {
            Action::Reply(Reply::json(200, body.as_slice()))
        }
        _ if req.path.starts_with("/gzip/") => with_reply(small(req, index), Reply::gzipped),
        _ if delay > Duration::ZERO && req.path.starts_with("/slow/") => {
            with_reply(small(req, index), |reply| reply.delayed(delay))
        }
        _ => match stream_request(&req.body) {
            Some(partials) => Action::Reply(stream_answer(partials, &png)),
            None => small(req, index),
        },
    }
}

/// `action` with its reply changed by `change` (any other action as it is).
fn with_reply(action: Action, change: impl FnOnce(Reply) -> Reply) -> Action {
    match action {
        Action::Reply(reply) => Action::Reply(change(reply)),
        other => other,
    }
}

/// `Some(partial_images)` (at most 3) when a request body is a JSON object with
/// `"stream": true`.
fn stream_request(body: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    (v.get("stream")? == true).then(|| {
        let n = v
            .get("partial_images")
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        n.min(3) as u32
    })
}

/// The spec's event stream: `partials` partial images, then the completed event.
fn stream_answer(partials: u32, b64: &str) -> Reply {
    let mut text = String::new();
    for k in 0..partials {
        let data = sse::partial_json(k, b64);
        text += &sse::event("image_generation.partial_image", &data, "\n");
    }
    let data = sse::completed_json(b64);
    text += &sse::event("image_generation.completed", &data, "\n");
    Reply::with_type(200, "text/event-stream", text)
}

fn main() {
    let args = parse_args();
    let big: Option<Arc<Vec<u8>>> =
        (args.big_mb > 0).then(|| Arc::new(big_images_response(args.big_mb)));
    let delay = Duration::from_millis(args.delay_ms);
    let server = TestServer::start_on(
        &format!("127.0.0.1:{}", args.port),
        handler(big.clone(), delay),
    );
    let https = args.tls_ca.as_ref().map(|file| {
        let front = tls::TlsServer::start(handler(big, delay));
        if let Err(e) = std::fs::write(file, &front.ca.ca_pem) {
            usage(&format!("cannot write --tls-ca {file}: {e}"));
        }
        front
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {}", server.url());
    if let Some(front) = &https {
        let _ = writeln!(out, "listening {}", front.url());
    }
    let _ = out.flush();
    drop(out);
    if stdin_is_pipe() {
        // Read and discard until end of input, then stop.
        let mut sink = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        eprintln!("local_server: standard input closed, stopping");
    } else {
        loop {
            std::thread::park();
        }
    }
}
