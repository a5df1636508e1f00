//! A local image server for demos, the bindings examples and the benchmark: the test suite's
//! own HTTP/1.1 server (`tests/support/server.rs`) answering as an OpenAI-compatible
//! `POST .../v1/images/generations` would, on 127.0.0.1 only.
//!
//! ```text
//! cargo run --example local_server -- [--port N] [--big-mb N] [--delay-ms N]
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
//! - Serves until killed, or until its standard input closes when that is a pipe or a socket
//!   (so a parent that dies takes the server with it). A terminal, `/dev/null` or a file on
//!   standard input is not watched.

#[path = "../tests/support/server.rs"]
mod server;

use server::{images_handler, Action, Reply, TestServer};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

struct Args {
    port: u16,
    big_mb: usize,
    delay_ms: u64,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "local_server: {problem}\nusage: local_server [--port N] [--big-mb N] [--delay-ms N]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 0,
        big_mb: 0,
        delay_ms: 0,
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
            "-h" | "--help" => {
                println!("usage: local_server [--port N] [--big-mb N] [--delay-ms N]");
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

fn main() {
    let args = parse_args();
    let big: Option<Arc<Vec<u8>>> =
        (args.big_mb > 0).then(|| Arc::new(big_images_response(args.big_mb)));
    let small = images_handler();
    let delay = Duration::from_millis(args.delay_ms);
    let server =
        TestServer::start_on(
            &format!("127.0.0.1:{}", args.port),
            move |req, index| match &big {
                Some(body) if req.path.starts_with("/big/") => {
                    Action::Reply(Reply::json(200, body.as_slice()))
                }
                _ if delay > Duration::ZERO && req.path.starts_with("/slow/") => {
                    match small(req, index) {
                        Action::Reply(reply) => Action::Reply(reply.delayed(delay)),
                        other => other,
                    }
                }
                _ => small(req, index),
            },
        );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {}", server.url());
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
