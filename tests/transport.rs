//! The transport under ureq: cancelling a blocked call, Happy Eyeballs, the request phase that
//! decides retries, bounded body buffers, what a redirect to another origin carries, and the
//! headers the library keeps for itself. Every server is ours, on 127.0.0.x.

mod support;

use opi_openai::{get_images_ex, resolve_for_tests, Cancel, ImageRequest};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{error_code, parse, Action, Reply, TestServer};

const TOKEN: &str = "sk-transport-SECRET-0c4d2b19";
const OK: &str = r#"{"created":1,"data":[{"url":"https://x/y.png"}]}"#;

fn call_with(url: &str, headers: &str, options: &str) -> String {
    let req = ImageRequest {
        url,
        token: TOKEN,
        model: "dall-e-3",
        descr: "{'prompt':'transport','n':1}",
        headers,
    };
    let result = get_images_ex(&req, options);
    assert!(!result.contains(TOKEN), "the token leaked: {result}");
    parse(&result);
    result
}

fn ok_server() -> TestServer {
    TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)))
}

// ---- cancel ----

/// What streaming and add-in jobs rely on: `token.scope(|| call)` on one thread,
/// `token.cancel()` on another, and the blocked read returns at once as `cancelled`.
#[test]
fn cancel_from_another_thread_ends_a_blocked_call_as_cancelled() {
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(30)));
    let token = Cancel::new();
    let canceller = token.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        canceller.cancel();
    });
    let result = token.scope(|| call_with(&server.url(), "", r#"{"timeout": 20}"#));
    let took = started.elapsed();
    t.join().unwrap();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(took < Duration::from_secs(1), "returned after {took:?}");
    assert_eq!(server.requests().len(), 1);
}

/// A pooled connection is registered with each call that uses it, not only the first.
#[test]
fn cancel_reaches_a_pooled_connection_reused_by_a_later_call() {
    let server = TestServer::start(|_, i| {
        if i == 0 {
            Action::Reply(Reply::json(200, OK))
        } else {
            Action::Hang(Duration::from_secs(30))
        }
    });
    assert_eq!(call_with(&server.url(), "", "{}"), OK);
    let token = Cancel::new();
    let canceller = token.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        canceller.cancel();
    });
    let result = token.scope(|| call_with(&server.url(), "", r#"{"timeout": 20}"#));
    t.join().unwrap();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        server.connections(),
        1,
        "the second call reused the connection"
    );
}

/// A retry's wait ends at once on cancel.
#[test]
fn cancel_ends_a_retry_wait_at_once() {
    let server =
        TestServer::start(|_, _| Action::Reply(Reply::json(429, "{}").header("retry-after", "10")));
    let token = Cancel::new();
    let canceller = token.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceller.cancel();
    });
    let result = token.scope(|| call_with(&server.url(), "", r#"{"retries": 2, "timeout": 60}"#));
    t.join().unwrap();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.requests().len(), 1);
}

// ---- Happy Eyeballs ----

/// A listener on `addr` whose accept queue is full (listen(1), never accepted, two
/// connections queued): further connection attempts get no answer at all.
fn silent_listener(addr: SocketAddr) -> (socket2::Socket, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1).unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(_) => break,
        }
    }
    // Proof that it is silent: one more attempt gets no answer.
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "{addr} still accepts connections");
    (socket, queued)
}

#[test]
fn happy_eyeballs_a_silent_first_address_costs_250_ms_not_the_connect_timeout() {
    let server = ok_server();
    let port = server.addr.port();
    let silent: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let _silent = silent_listener(silent);
    let host = "happy-eyeballs.test";
    assert!(resolve_for_tests(host, &[silent, server.addr]));
    assert!(!resolve_for_tests(
        "outside.test",
        &["192.0.2.1:80".parse().unwrap()]
    ));
    // Warm up: the agent exists before the timed call.
    assert_eq!(call_with(&server.url(), "", "{}"), OK);
    let started = Instant::now();
    let result = call_with(
        &format!("http://{host}:{port}/"),
        "",
        r#"{"connect_timeout": 30, "retries": 0}"#,
    );
    let took = started.elapsed();
    assert_eq!(result, OK);
    assert!(took < Duration::from_secs(1), "connected after {took:?}");
    eprintln!("happy eyeballs: connected through the second address in {took:?}");
    resolve_for_tests(host, &[]);
}

// ---- retries by phase ----

/// A failure after the request was written is never retried, whatever its kind: here the
/// POST's 307 leads to an address that refuses the connection (a retryable kind before the
/// request was written), and the first server still sees one POST.
#[test]
fn a_failure_after_the_request_was_written_never_resends_it() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(307, "").header("location", &format!("http://{dead}/")))
    });
    let result = call_with(&server.url(), "", r#"{"retries": 2}"#);
    assert_eq!(error_code(&result).as_deref(), Some("connect"), "{result}");
    assert_eq!(server.requests().len(), 1, "the POST was sent again");
}

/// A server that reads the request and resets the connection: one POST, an `io` error.
#[test]
fn a_reset_after_the_request_was_read_is_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("\"transport\"") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Close sends a reset.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
    });
    let result = call_with(&url, "", r#"{"retries": 3}"#);
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---- body buffer ----

/// Runs this test binary's `name` test alone in a child process with `OPI_CHILD=1` (a call
/// that aborts or reserves memory must not take the test runner with it) and returns its
/// stdout; fails when the child does not exit cleanly.
fn run_child(name: &str, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("OPI_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the child died ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn child_value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        .trim()
}

/// A server declaring `declared` bytes and sending one, then closing.
fn lying_length_server(declared: u64) -> TestServer {
    TestServer::start(move |_, _| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{"
            )
            .into_bytes(),
        )
    })
}

fn vm_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn child_body_call() {
    let Ok(url) = std::env::var("OPI_CHILD_URL") else {
        return; // only meaningful as a child of the tests below
    };
    let options = std::env::var("OPI_CHILD_OPTIONS").unwrap();
    let before = vm_peak_kib();
    let result = call_with(&url, "", &options);
    let after = vm_peak_kib();
    println!("CODE={}", error_code(&result).unwrap_or_default());
    println!("VMPEAK_GROWTH_KIB={}", after.saturating_sub(before));
}

#[test]
fn a_declared_length_of_1_tib_within_max_response_mb_does_not_abort_the_process() {
    let server = lying_length_server(1 << 40);
    let out = run_child(
        "child_body_call",
        &[
            ("OPI_CHILD_URL", server.url()),
            (
                "OPI_CHILD_OPTIONS",
                r#"{"max_response_mb": 1048576}"#.into(),
            ),
        ],
    );
    assert_eq!(child_value(&out, "CODE="), "io", "{out}");
}

#[test]
fn a_declared_800_mb_with_one_byte_sent_reserves_no_800_mb() {
    let server = lying_length_server(800_000_000);
    let out = run_child(
        "child_body_call",
        &[
            ("OPI_CHILD_URL", server.url()),
            ("OPI_CHILD_OPTIONS", "{}".into()),
        ],
    );
    assert_eq!(child_value(&out, "CODE="), "io", "{out}");
    let growth: u64 = child_value(&out, "VMPEAK_GROWTH_KIB=").parse().unwrap();
    assert!(growth < 200 * 1024, "the call reserved {growth} KiB");
}

#[test]
fn a_declared_length_over_max_response_mb_is_too_large_before_reading() {
    let server = lying_length_server(3 * 1024 * 1024);
    let result = call_with(&server.url(), "", r#"{"max_response_mb": 1}"#);
    assert_eq!(
        error_code(&result).as_deref(),
        Some("too_large"),
        "{result}"
    );
}

// ---- redirects across origins ----

#[test]
fn a_redirect_to_another_origin_carries_only_the_librarys_own_headers() {
    let other = ok_server();
    let target = other.url();
    let first = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(307, "").header("location", &target))
    });
    let headers = r#"{"api-key":"azure-SECRET","x-api-key":"x-SECRET","cookie":"session=SECRET","X-Org":"org-1","Accept":"application/json"}"#;
    let result = call_with(&first.url(), headers, "{}");
    assert_eq!(result, OK);
    let sent = &first.requests()[0];
    assert_eq!(sent.header("api-key"), Some("azure-SECRET"));
    let req = &other.requests()[0];
    assert_eq!(req.method, "POST");
    for name in ["authorization", "api-key", "x-api-key", "cookie", "x-org"] {
        assert_eq!(req.header(name), None, "{name} followed the redirect");
    }
    assert!(req
        .header("user-agent")
        .is_some_and(|v| v.starts_with("opi_openai/")));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert!(req.body_text().contains("transport"));
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let plain = ok_server();
    let target = plain.url();
    let https = support::tls::TlsServer::start(move |_, _| {
        Action::Reply(Reply::json(307, "").header("location", &target))
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = https.ca.write_ca(dir.path(), "root.pem");
    let options = serde_json::json!({"ca_file": ca.to_str().unwrap()}).to_string();
    let result = call_with(&https.url(), "", &options);
    assert_eq!(
        error_code(&result).as_deref(),
        Some("redirects"),
        "{result}"
    );
    let message = parse(&result)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("https") && message.contains("http URL"),
        "{message}"
    );
    assert!(plain.requests().is_empty());
}

// ---- headers the library keeps ----

#[test]
fn framing_and_hop_by_hop_headers_are_refused_before_sending() {
    let server = ok_server();
    for name in [
        "Content-Length",
        "transfer-encoding",
        "Host",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Upgrade",
    ] {
        let headers = serde_json::json!({ name: "2" }).to_string();
        let result = call_with(&server.url(), &headers, "{}");
        let v = parse(&result);
        assert_eq!(v["error"]["code"], "invalid_argument", "{name}: {result}");
        assert_eq!(v["error"]["param"], "headers", "{name}: {result}");
    }
    assert!(server.requests().is_empty(), "something was sent");
    // Our own Connection: keep-alive still goes.
    assert_eq!(call_with(&server.url(), r#"{"X-Ok":"1"}"#, "{}"), OK);
    assert_eq!(
        server.requests()[0].header("connection"),
        Some("keep-alive")
    );
}

/// Through a SOCKS5 or an HTTP CONNECT proxy too: the sockets those connectors open are
/// registered with the call's token.
#[test]
fn cancel_ends_a_blocked_call_through_socks5_and_connect_proxies() {
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(30)));
    let socks = support::socks::Socks5Proxy::start(None);
    let connect = support::proxy::ConnectProxy::start(None);
    for proxy in [socks.url("socks5"), connect.url()] {
        let token = Cancel::new();
        let canceller = token.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            canceller.cancel();
        });
        let options = serde_json::json!({"proxy": proxy, "timeout": 20}).to_string();
        let result = token.scope(|| call_with(&server.url(), "", &options));
        t.join().unwrap();
        assert_eq!(
            error_code(&result).as_deref(),
            Some("cancelled"),
            "{proxy}: {result}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "{proxy}");
    }
}

// ---- large reads that wait for more (SO_RCVLOWAT) ----

/// A 1 MiB answer then a small one, alternately, on the same kept-alive connection: reads of
/// a large body wait for 128 KiB at a time; the small answers after them must not wait.
#[test]
fn a_small_answer_after_a_large_one_on_the_same_connection_does_not_wait() {
    let big = format!(
        r#"{{"created":1,"data":[{{"b64_json":"{}"}}]}}"#,
        "A".repeat(1 << 20)
    );
    let big_len = big.len();
    let server = TestServer::start(move |_, i| {
        if i % 2 == 0 {
            Action::Reply(Reply::json(200, big.clone()))
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    let started = Instant::now();
    for i in 0..6 {
        let result = call_with(&server.url(), "", r#"{"timeout": 10, "retries": 0}"#);
        if i % 2 == 0 {
            assert_eq!(
                result.len(),
                big_len,
                "{}",
                &result[..200.min(result.len())]
            );
        } else {
            assert_eq!(result, OK);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 6);
}

/// A large body that stops arriving ends in the timeout, and the next call (its reads no
/// longer waiting for a large body) answers at once.
#[test]
fn a_large_body_that_stops_times_out_and_the_next_call_does_not_wait() {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    let mut first = head.into_bytes();
    first.extend(std::iter::repeat_n(b' ', 1 << 20));
    let server = TestServer::start(move |_, i| {
        if i == 0 {
            Action::Pieces(vec![
                (Duration::ZERO, first.clone()),
                (Duration::from_secs(5), Vec::new()),
            ])
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    let result = call_with(&server.url(), "", r#"{"timeout": 1, "retries": 0}"#);
    assert_eq!(error_code(&result).as_deref(), Some("timeout"), "{result}");
    let started = Instant::now();
    let result = call_with(&server.url(), "", r#"{"timeout": 10, "retries": 0}"#);
    assert_eq!(result, OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
