//! TLS on direct connections, done inside the library's socket transport (src/core/tls.rs),
//! against HTTPS servers these tests start on 127.0.0.1 with a CA made at test time. The
//! options' TLS behaviour (ca_file, tls_verify, proxies) is in tests/options.rs.

mod support;

use opi_openai::{ca_file_system_store_loads, Cancel, ImageRequest};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::server::images_handler;
use support::tls::TlsServer;
use support::{error_code, get_images_ex, parse, Action, TestServer};

const TOKEN: &str = "sk-test-tls-SECRET-4d2b8e11";
const DESCR: &str = "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}";

fn call(url: &str, options: Value) -> String {
    let req = ImageRequest {
        url,
        token: TOKEN,
        model: "gpt-image-1",
        descr: DESCR,
        headers: "",
    };
    let result = get_images_ex(&req, &options.to_string());
    assert!(!result.contains(TOKEN), "the token leaked: {result}");
    result
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

#[test]
fn keep_alive_over_tls_reuses_one_connection_and_one_handshake() {
    let server = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    for _ in 0..5 {
        let result = parse(&call(&server.url(), json!({ "ca_file": ca })));
        assert!(result["data"][0]["b64_json"].is_string(), "{result}");
    }
    assert_eq!(server.requests().len(), 5);
    // TLS 1.3 session tickets that arrive after the handshake must not make the pooled
    // connection look dead (a new handshake per call).
    assert_eq!(server.handshakes(), 1);
}

#[test]
fn a_large_answer_arrives_whole_over_tls() {
    // 6 MiB of base64: hundreds of TLS records, several socket reads of the staged buffer.
    let b64 = "A".repeat(6 << 20);
    let body = format!(r#"{{"created":1,"data":[{{"b64_json":"{b64}"}}]}}"#);
    let expected = body.clone();
    let server =
        TlsServer::start(move |_, _| Action::Reply(support::Reply::json(200, body.clone())));
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    let result = call(&server.url(), json!({ "ca_file": ca }));
    assert_eq!(result.len(), expected.len());
    assert!(result == expected, "the answer changed on its way");
}

#[test]
fn ca_file_reads_the_system_store_only_for_a_server_it_does_not_vouch_for() {
    // Only this test of this file (its own process) gives a ca_file that does not vouch for
    // the server, so the process-wide count moves for it alone.
    let vouched = TlsServer::start(images_handler());
    let other = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&vouched.ca.write_ca(dir.path(), "ca.pem"));
    let before = ca_file_system_store_loads();

    // The file's CA signed this server: the first call (a new agent, a new trust) and the
    // next ones never read the system's store.
    for _ in 0..2 {
        let result = parse(&call(&vouched.url(), json!({ "ca_file": ca })));
        assert!(result["data"][0]["b64_json"].is_string(), "{result}");
    }
    assert_eq!(ca_file_system_store_loads(), before);

    // Another CA signed this one: the system's store (plus the file) is consulted, and
    // refuses it as before.
    let result = call(&other.url(), json!({ "ca_file": ca }));
    assert_eq!(error_code(&result).as_deref(), Some("tls"), "{result}");
    assert_eq!(ca_file_system_store_loads(), before + 1);
    assert_eq!(other.handshakes(), 0);

    // Loaded once: later calls to either server do not read it again.
    let result = call(&other.url(), json!({ "ca_file": ca }));
    assert_eq!(error_code(&result).as_deref(), Some("tls"), "{result}");
    let result = parse(&call(&vouched.url(), json!({ "ca_file": ca })));
    assert!(result["data"][0]["b64_json"].is_string(), "{result}");
    assert_eq!(ca_file_system_store_loads(), before + 1);
}

#[test]
fn an_answer_cut_by_the_server_is_an_io_error_not_a_short_result() {
    // The plain server declares 1000 bytes, sends 10 and closes; the TLS front then closes
    // the TLS session.
    let server = TlsServer::start(|_, _| {
        Action::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"created\""
                .to_vec(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    let result = call(&server.url(), json!({ "ca_file": ca, "retries": 0 }));
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
}

#[test]
fn https_to_a_server_that_does_not_speak_tls_is_a_tls_error() {
    let plain = TestServer::start(images_handler());
    let url = format!("https://{}/", plain.addr);
    let result = call(&url, json!({ "retries": 0, "timeout": 10 }));
    assert_eq!(error_code(&result).as_deref(), Some("tls"), "{result}");
}

#[test]
fn tls_verify_false_talks_to_a_server_no_trust_vouches_for() {
    let server = TlsServer::start(images_handler());
    let result = parse(&call(&server.url(), json!({ "tls_verify": false })));
    assert!(result["data"][0]["b64_json"].is_string(), "{result}");
    assert_eq!(server.handshakes(), 1);
}

/// A TCP listener that accepts and never speaks: a TLS handshake with it waits.
fn silent_tls_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    (listener, url)
}

fn cancelled_within_a_second(url: &str, options: Value) {
    let token = Cancel::new();
    let canceller = token.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        canceller.cancel();
    });
    let result = token.scope(|| call(url, options));
    let took = started.elapsed();
    t.join().unwrap();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(took < Duration::from_secs(1), "returned after {took:?}");
}

#[test]
fn cancel_ends_a_call_waiting_in_the_tls_handshake() {
    let (_listener, url) = silent_tls_server();
    cancelled_within_a_second(&url, json!({ "timeout": 20, "connect_timeout": 20 }));
}

#[test]
fn the_connect_timeout_bounds_a_tls_handshake_that_never_ends() {
    let (_listener, url) = silent_tls_server();
    let started = Instant::now();
    let result = call(
        &url,
        json!({ "timeout": 20, "connect_timeout": 1, "retries": 0 }),
    );
    assert_eq!(error_code(&result).as_deref(), Some("timeout"), "{result}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cancel_ends_a_call_waiting_for_the_answer_over_tls() {
    let server = TlsServer::start(|_, _| Action::Hang(Duration::from_secs(30)));
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    cancelled_within_a_second(&server.url(), json!({ "ca_file": ca, "timeout": 20 }));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_stream_over_tls_delivers_its_events_as_they_arrive() {
    use support::sse::{completed_json, event, partial_json, sse_head};
    let mut pieces = vec![(Duration::ZERO, sse_head())];
    for k in 0..3 {
        let e = event(
            "image_generation.partial_image",
            &partial_json(k, "UEFSVElBTA=="),
            "\n",
        );
        pieces.push((Duration::from_millis(30), e.into_bytes()));
    }
    let done = event(
        "image_generation.completed",
        &completed_json("RklOQUw="),
        "\n",
    );
    pieces.push((Duration::from_millis(30), done.into_bytes()));
    let server = TlsServer::start(move |_, _| Action::Pieces(pieces.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    let options = opi_openai::Options::parse(&json!({ "ca_file": ca }).to_string()).unwrap();
    let req = ImageRequest {
        url: &server.url(),
        token: TOKEN,
        model: "gpt-image-1.5",
        descr: "{'prompt':'p','partial_images':3}",
        headers: "",
    };
    let mut kinds = Vec::new();
    let result = opi_openai::get_images_stream(
        &req,
        &options,
        &mut |e: &opi_openai::StreamEvent| {
            kinds.push(e.kind.to_string());
            true
        },
        &mut |_| {},
    );
    let result = parse(&result);
    assert_eq!(result["data"][0]["b64_json"], "RklOQUw=", "{result}");
    assert_eq!(
        kinds,
        [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed"
        ]
    );
}

#[test]
fn a_small_answer_after_a_large_one_over_tls_does_not_wait() {
    let big = format!(
        r#"{{"created":1,"data":[{{"b64_json":"{}"}}]}}"#,
        "A".repeat(1 << 20)
    );
    let small = r#"{"created":2,"data":[{"b64_json":"QQ=="}]}"#;
    let big_len = big.len();
    let server = TlsServer::start(move |_, i| {
        let body = if i % 2 == 0 {
            big.clone()
        } else {
            small.to_string()
        };
        Action::Reply(support::Reply::json(200, body))
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = path_text(&server.ca.write_ca(dir.path(), "ca.pem"));
    let started = Instant::now();
    for i in 0..6 {
        let result = call(
            &server.url(),
            json!({ "ca_file": ca, "timeout": 10, "retries": 0 }),
        );
        assert_eq!(result.len(), if i % 2 == 0 { big_len } else { small.len() });
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.handshakes(), 1);
}
