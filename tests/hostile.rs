//! Dead and lying servers, and hostile input: each gets a clear error result (the exact code
//! asserted), never a crash, a hang past the timeout, a retry after the request was sent, or a
//! token in a result. Every server here is ours, on 127.0.0.1.

mod support;

use opi_openai::ImageRequest;
use serde_json::Value;
use std::ffi::{c_char, CStr, CString};
use std::io::Write;
use std::time::{Duration, Instant};
use support::{get_images_ex, parse, Action, Reply, TestServer};

const DESCR: &str = "{'prompt':'hostile','n':1}";
const TOKEN: &str = "sk-hostile-SECRET-7f3a9c5e";
const OK: &str = r#"{"created":1,"data":[{"url":"https://x/y.png"}]}"#;
/// Upper bound for a call made with `{"timeout": 2}`: generous, the machine is loaded.
const TIMEOUT_BOUND: Duration = Duration::from_secs(8);

// The C ABI, called from Rust: the test binary links the rlib, which holds these symbols.
extern "C" {
    fn opi_openai_get_images(
        url: *const c_char,
        token: *const c_char,
        model: *const c_char,
        descr_json: *const c_char,
        headers_json: *const c_char,
    ) -> *mut c_char;
    fn opi_openai_get_images_ex(
        url: *const c_char,
        token: *const c_char,
        model: *const c_char,
        descr_json: *const c_char,
        headers_json: *const c_char,
        options_json: *const c_char,
    ) -> *mut c_char;
    fn opi_openai_get_image_description_structure(
        prompt: *const c_char,
        count: i64,
        background: *const c_char,
        size: *const c_char,
        additional_json: *const c_char,
    ) -> *mut c_char;
    fn opi_free_string(s: *mut c_char);
}

/// One call to `server` with the test token and `options`.
fn call(server: &TestServer, options: &str) -> String {
    call_url(&server.url(), options)
}

fn call_url(url: &str, options: &str) -> String {
    let req = ImageRequest {
        url,
        token: TOKEN,
        model: "dall-e-3",
        descr: DESCR,
        headers: "",
    };
    let result = get_images_ex(&req, options);
    assert!(!result.contains(TOKEN), "the token leaked: {result}");
    result
}

/// Asserts `result` is our client error with `code`.
fn assert_code(result: &str, code: &str) {
    let v = parse(result);
    assert_eq!(v["error"]["type"], "opi_client_error", "{result}");
    assert_eq!(v["error"]["code"], code, "{result}");
}

/// Asserts the server got exactly one request: nothing was retried after it was sent.
fn assert_one_request(server: &TestServer) {
    assert_eq!(
        server.requests().len(),
        1,
        "the request reached the server: it must not be repeated"
    );
}

/// A `{"timeout": 2}` call that must end with `timeout` well before `TIMEOUT_BOUND`.
fn assert_times_out(server_url: &str) {
    let started = Instant::now();
    let result = call_url(server_url, r#"{"timeout":2}"#);
    let elapsed = started.elapsed();
    assert_code(&result, "timeout");
    assert!(elapsed < TIMEOUT_BOUND, "took {elapsed:?}");
}

fn head(status_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn raw_server(bytes: Vec<u8>) -> TestServer {
    TestServer::start(move |_, _| Action::Raw(bytes.clone()))
}

// ---- dead servers: the timeout holds ----

#[test]
fn server_that_reads_the_request_and_never_answers_times_out() {
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(30)));
    assert_times_out(&server.url());
    assert_one_request(&server);
}

#[test]
fn listener_that_never_accepts_times_out() {
    // The kernel completes the handshake into the backlog; nobody ever reads or answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    assert_times_out(&url);
    drop(listener);
}

#[test]
fn headers_then_a_stalled_body_times_out() {
    let mut first = head(
        "HTTP/1.1 200 OK",
        &["Content-Type: application/json", "Content-Length: 100"],
    );
    first.extend_from_slice(b"{\"created\":");
    let server = TestServer::start(move |_, _| {
        Action::Pieces(vec![
            (Duration::ZERO, first.clone()),
            (Duration::from_secs(30), b"1}".to_vec()),
        ])
    });
    assert_times_out(&server.url());
    assert_one_request(&server);
}

#[test]
fn slow_loris_body_one_byte_per_100_ms_ends_at_the_timeout() {
    // 300 bytes at one per 100 ms would take 30 s; the 2 s timeout must end the call.
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(290));
    let mut pieces = vec![(
        Duration::ZERO,
        head(
            "HTTP/1.1 200 OK",
            &[
                "Content-Type: application/json",
                &format!("Content-Length: {}", body.len()),
            ],
        ),
    )];
    pieces.extend(body.bytes().map(|b| (Duration::from_millis(100), vec![b])));
    let server = TestServer::start(move |_, _| Action::Pieces(pieces.clone()));
    assert_times_out(&server.url());
    assert_one_request(&server);
}

#[test]
fn slow_loris_headers_one_byte_per_100_ms_end_at_the_timeout() {
    let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..30 {
        text.extend_from_slice(format!("X-Slow-{i}: drip\r\n").as_bytes());
    }
    let pieces: Vec<_> = text
        .into_iter()
        .map(|b| (Duration::from_millis(100), vec![b]))
        .collect();
    let server = TestServer::start(move |_, _| Action::Pieces(pieces.clone()));
    assert_times_out(&server.url());
    assert_one_request(&server);
}

// ---- lying servers: malformed HTTP ----

#[test]
fn endless_response_headers_are_an_io_error() {
    // 1 MiB of header lines and never the blank line that ends them.
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    let mut i = 0;
    while bytes.len() < 1 << 20 {
        bytes.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "h".repeat(100)).as_bytes());
        i += 1;
    }
    let server = raw_server(bytes);
    let started = Instant::now();
    let result = call(&server, r#"{"timeout":20}"#);
    assert_code(&result, "io");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_one_request(&server);
}

#[test]
fn gzip_bomb_over_max_response_mb_is_too_large() {
    // 64 MiB of zeros compress to about 64 KiB; the limit is 2 MiB of decoded body.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb itself is small");
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(200, bomb.clone()).header("Content-Encoding", "gzip"))
    });
    let result = call(&server, r#"{"max_response_mb":2}"#);
    assert_code(&result, "too_large");
    assert_one_request(&server);
}

#[test]
fn content_length_larger_than_the_body_then_close_is_io() {
    let mut bytes = head(
        "HTTP/1.1 200 OK",
        &["Content-Type: application/json", "Content-Length: 500"],
    );
    bytes.extend_from_slice(OK.as_bytes());
    let server = raw_server(bytes);
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

#[test]
fn chunked_answer_cut_mid_chunk_is_io() {
    let mut bytes = head(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        ],
    );
    // A chunk announced as 0x40 bytes, of which 10 arrive before the close.
    bytes.extend_from_slice(b"40\r\n{\"created\"");
    let server = raw_server(bytes);
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

#[test]
fn invalid_chunk_size_is_io() {
    let mut bytes = head(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        ],
    );
    bytes.extend_from_slice(b"zz\r\n{\"created\":1}\r\n0\r\n\r\n");
    let server = raw_server(bytes);
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

#[test]
fn http_1_0_answer_without_content_length_ended_by_close_is_returned_intact() {
    let mut bytes = head("HTTP/1.0 200 OK", &["Content-Type: application/json"]);
    bytes.extend_from_slice(OK.as_bytes());
    let server = raw_server(bytes);
    assert_eq!(call(&server, ""), OK);
    assert_one_request(&server);
}

#[test]
fn status_line_that_is_not_http_is_io_and_not_retried() {
    let answers: [&[u8]; 5] = [
        b"HELLO WORLD\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
        b"\x00\x01\x02\xff\xfe\x80garbage\r\n\r\n\x00",
        b"<html>not even a status line</html>",
    ];
    for answer in answers {
        let server = raw_server(answer.to_vec());
        let result = call(&server, "");
        assert_code(&result, "io");
        assert_one_request(&server);
    }
}

#[test]
fn empty_reply_is_io_and_not_retried() {
    // The connection is closed without a byte, after the request was read.
    let server = TestServer::start(|_, _| Action::Drop);
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

#[test]
fn interim_100_continue_before_the_200_returns_the_200_body() {
    let mut bytes = head("HTTP/1.1 100 Continue", &[]);
    bytes.extend(head(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", OK.len()),
        ],
    ));
    bytes.extend_from_slice(OK.as_bytes());
    let server = raw_server(bytes);
    assert_eq!(call(&server, ""), OK);
    assert_one_request(&server);
}

// ---- bodies ----

#[test]
fn ten_megabyte_text_body_is_not_json_with_an_excerpt_of_at_most_2_kib() {
    let text = "not json at all ".repeat(10 * 1024 * 1024 / 16);
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::with_type(200, "text/plain", text.clone()))
    });
    let result = call(&server, "");
    let v = parse(&result);
    assert_eq!(
        v["error"]["type"],
        "opi_invalid_response",
        "{}",
        &result[..200]
    );
    assert_eq!(v["error"]["code"], "not_json");
    let body = v["error"]["body"].as_str().unwrap();
    assert!(body.len() <= 2048, "excerpt of {} bytes", body.len());
    assert!(body.starts_with("not json at all "));
    assert!(result.len() < 4096, "result of {} bytes", result.len());
}

#[test]
fn escaped_nul_in_a_json_string_is_returned_intact_also_through_the_c_abi() {
    let body = r#"{"data":[{"revised_prompt":"a\u0000b"}],"created":1}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, body)));
    assert_eq!(call(&server, ""), body);

    // Through the C ABI: the text holds the 6-character escape, not a raw NUL that would cut
    // the C string short.
    let url = CString::new(server.url()).unwrap();
    let descr = CString::new(DESCR).unwrap();
    let p = unsafe {
        opi_openai_get_images(
            url.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            descr.as_ptr(),
            std::ptr::null(),
        )
    };
    assert!(!p.is_null());
    let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    unsafe { opi_free_string(p) };
    assert_eq!(text, body);
    assert!(text.contains(r"\u0000"));
    let v = parse(&text);
    assert_eq!(v["data"][0]["revised_prompt"], "a\u{0}b");
}

// ---- odd headers ----

#[test]
fn set_cookie_is_ignored_and_not_sent_back() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(200, OK).header("Set-Cookie", "session=abc; Path=/; HttpOnly"))
    });
    assert_eq!(call(&server, ""), OK);
    assert_eq!(call(&server, ""), OK);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("cookie"), None, "no cookie jar");
}

#[test]
fn location_without_a_3xx_status_is_not_followed() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(200, OK).header("Location", "/elsewhere"))
    });
    assert_eq!(call(&server, ""), OK);
    assert_one_request(&server);
}

#[test]
fn duplicate_equal_content_length_is_accepted() {
    let mut bytes = head(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", OK.len()),
            &format!("Content-Length: {}", OK.len()),
        ],
    );
    bytes.extend_from_slice(OK.as_bytes());
    let server = raw_server(bytes);
    assert_eq!(call(&server, ""), OK);
    assert_one_request(&server);
}

#[test]
fn conflicting_content_lengths_are_io() {
    let mut bytes = head(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", OK.len()),
            "Content-Length: 5",
        ],
    );
    bytes.extend_from_slice(OK.as_bytes());
    let server = raw_server(bytes);
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

#[test]
fn a_32_kib_header_value_is_fine() {
    let value = "v".repeat(32 * 1024);
    let server =
        TestServer::start(move |_, _| Action::Reply(Reply::json(200, OK).header("X-Big", &value)));
    assert_eq!(call(&server, ""), OK);
}

#[test]
fn a_1_mib_header_value_is_io() {
    let value = "v".repeat(1 << 20);
    let server =
        TestServer::start(move |_, _| Action::Reply(Reply::json(200, OK).header("X-Huge", &value)));
    assert_code(&call(&server, ""), "io");
    assert_one_request(&server);
}

// ---- redirects ----

#[test]
fn redirect_to_a_file_url_is_refused() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(307, "").header("Location", "file:///etc/passwd"))
    });
    let result = call(&server, "");
    assert_code(&result, "redirects");
    assert!(!result.contains("root:"), "{result}");
    assert_one_request(&server);
}

#[test]
fn redirect_to_an_ftp_url_is_refused() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(302, "").header("Location", "ftp://127.0.0.1/pub/x.json"))
    });
    assert_code(&call(&server, ""), "redirects");
    assert_one_request(&server);
}

#[test]
fn redirect_loop_between_two_paths_is_redirects() {
    let server = TestServer::start(|req, _| {
        let to = if req.path.starts_with("/a") {
            "/b"
        } else {
            "/a"
        };
        Action::Reply(Reply::json(308, "").header("Location", to))
    });
    assert_code(&call(&server, ""), "redirects");
    // The first request and 5 redirects followed, then no more.
    assert_eq!(server.requests().len(), 6);
}

// ---- hostile input through the C ABI ----

/// xorshift64*: deterministic, no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random string without NUL (C strings end at the first): raw bytes (often invalid
    /// UTF-8), printable ASCII, or UTF-8 text with quotes, controls and non-ASCII; sometimes
    /// 1 MiB long.
    fn bytes(&mut self) -> Vec<u8> {
        let len = match self.below(100) {
            0..=1 => 1 << 20,
            2..=9 => self.below(8192) as usize,
            _ => self.below(80) as usize,
        };
        match self.below(3) {
            0 => (0..len).map(|_| 1 + self.below(255) as u8).collect(),
            1 => (0..len).map(|_| 0x20 + self.below(95) as u8).collect(),
            _ => {
                const PARTS: [&str; 16] = [
                    "a", "{", "}", "'", "\"", "\\", ":", ",", "\r", "\n", " ", "é", "€", "😀",
                    "\u{7f}", "\u{1}",
                ];
                let mut s = String::new();
                while s.len() < len {
                    s.push_str(PARTS[self.below(16) as usize]);
                }
                s.into_bytes()
            }
        }
    }
}

/// Calls `opi_openai_get_images_ex` with each argument (`None`: NULL); returns the result,
/// checked to be non-NULL UTF-8 and freed.
fn c_get_images(args: [Option<&[u8]>; 6]) -> String {
    let owned: Vec<Option<CString>> = args
        .iter()
        .map(|a| a.map(|b| CString::new(b).expect("no NUL in test strings")))
        .collect();
    let ptr = |i: usize| owned[i].as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let p = unsafe { opi_openai_get_images_ex(ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5)) };
    assert!(!p.is_null(), "a result is never NULL");
    let text = unsafe { CStr::from_ptr(p) }
        .to_str()
        .expect("a result is UTF-8")
        .to_owned();
    unsafe { opi_free_string(p) };
    support::valid(text)
}

fn c_description(prompt: &[u8], count: i64, bg: &[u8], size: &[u8], add: &[u8]) -> String {
    let c = |b: &[u8]| CString::new(b).unwrap();
    let (prompt, bg, size, add) = (c(prompt), c(bg), c(size), c(add));
    let p = unsafe {
        opi_openai_get_image_description_structure(
            prompt.as_ptr(),
            count,
            bg.as_ptr(),
            size.as_ptr(),
            add.as_ptr(),
        )
    };
    assert!(!p.is_null());
    let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    unsafe { opi_free_string(p) };
    text
}

/// A server that answers every other request with the request's headers as plain text (as
/// some proxies do in error pages), so a token that is echoed must be kept out of the excerpt.
fn echo_server() -> TestServer {
    TestServer::start(|req, index| {
        if index % 2 == 1 {
            return Action::Reply(Reply::json(200, OK));
        }
        let mut text = String::from("upstream error; your request was:\n");
        for (n, v) in &req.headers {
            text.push_str(&format!("{n}: {v}\n"));
        }
        Action::Reply(Reply::with_type(502, "text/plain", text))
    })
}

/// The C arguments of `opi_openai_get_images_ex`, as results name them.
const NAMES: [&str; 6] = ["url", "token", "model", "descr", "headers", "options"];

#[test]
fn c_abi_1000_random_strings_per_argument_give_json_results_without_the_token() {
    let server = echo_server();
    let url = server.url();
    let options = r#"{"timeout":10,"retries":0}"#;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // 1000 random strings for each of the 6 arguments, the others valid.
    for i in 0..6000 {
        let random = rng.bytes();
        let position = i % 6;
        // Half of the URL cases keep a valid prefix, so the random tail reaches the sender.
        let random = if position == 0 && i % 12 == 0 {
            let mut v = url.clone().into_bytes();
            v.extend_from_slice(&random);
            v
        } else {
            random
        };
        let mut args: [Option<&[u8]>; 6] = [
            Some(url.as_bytes()),
            Some(TOKEN.as_bytes()),
            Some(b"dall-e-3"),
            Some(DESCR.as_bytes()),
            Some(b""),
            Some(options.as_bytes()),
        ];
        args[position] = Some(&random);
        let mut nulled = None;
        if i % 97 == 0 {
            args[(position + 1) % 6] = None;
            nulled = Some(NAMES[(position + 1) % 6]);
        }
        let result = c_get_images(args);
        let v: Value = serde_json::from_str(&result)
            .unwrap_or_else(|e| panic!("case {i}: not JSON ({e}): {result:.300}"));
        assert!(v.is_object(), "case {i}: {result:.300}");
        // A refused argument is named: the random one, or a required one given as NULL.
        if v["error"]["code"] == "invalid_argument" {
            let param = v["error"]["param"].as_str().unwrap_or("");
            assert!(
                param == NAMES[position]
                    || (nulled == Some(param) && matches!(param, "url" | "descr")),
                "case {i}: {} refused as {param}: {result:.300}",
                NAMES[position]
            );
        }
        assert!(
            !result.contains(TOKEN),
            "case {i}: the token leaked: {result:.300}"
        );
        if position == 1 && random.len() >= 8 {
            if let Ok(token) = std::str::from_utf8(&random) {
                let quoted = v.to_string();
                assert!(
                    !result.contains(token) && !quoted.contains(token),
                    "case {i}: the random token leaked: {result:.300}"
                );
                let excerpt = v["error"]["body"].as_str().unwrap_or("");
                assert!(!excerpt.contains(token), "case {i}: {excerpt:.300}");
            }
        }

        // The description builder gets the same string as each of its arguments.
        let count = rng.next() as i64;
        let d = match i % 4 {
            0 => c_description(&random, count, b"", b"", b""),
            1 => c_description(b"p", count, &random, b"", b""),
            2 => c_description(b"p", count, b"", &random, b""),
            _ => c_description(b"p", count, b"", b"", &random),
        };
        serde_json::from_str::<Value>(&d)
            .unwrap_or_else(|e| panic!("case {i}: description not JSON ({e}): {d:.300}"));
    }
    let sent = server
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_some_and(|a| a.contains(TOKEN)))
        .count();
    assert!(sent > 0, "the token was sent to the server at least once");
}

#[test]
fn c_abi_1_mib_url_is_invalid_argument_naming_url_and_sends_nothing() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)));
    let mut url = server.url().into_bytes();
    url.extend(std::iter::repeat_n(b'a', 1 << 20));
    let result = c_get_images([
        Some(&url),
        Some(TOKEN.as_bytes()),
        None,
        Some(DESCR.as_bytes()),
        None,
        None,
    ]);
    let v = parse(&result);
    assert_eq!(v["error"]["code"], "invalid_argument", "{result:.300}");
    assert_eq!(v["error"]["param"], "url", "{result:.300}");
    assert!(result.len() < 4096, "the URL is not quoted back whole");
    assert_eq!(server.requests().len(), 0);
    assert_eq!(server.connections(), 0);
}

#[test]
fn url_with_cr_lf_or_space_is_invalid_argument_naming_url_and_sends_nothing() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)));
    let base = server.url();
    for bad in [
        format!("{base}v1\r\nX-Injected: 1"),
        format!("{base}a\nb"),
        format!("{base}a b"),
        format!("{base}a\rb"),
        format!("http://127.0.0.1 :{}/", server.addr.port()),
    ] {
        let c_url = bad.as_bytes();
        let result = c_get_images([
            Some(c_url),
            Some(TOKEN.as_bytes()),
            None,
            Some(DESCR.as_bytes()),
            None,
            None,
        ]);
        let v = parse(&result);
        assert_eq!(v["error"]["code"], "invalid_argument", "{bad:?}: {result}");
        assert_eq!(v["error"]["param"], "url", "{bad:?}: {result}");
    }
    assert_eq!(server.requests().len(), 0);
    assert_eq!(server.connections(), 0);
}

#[test]
fn url_with_characters_the_sender_refuses_is_invalid_argument_naming_url() {
    // Found by the random-argument test: these were refused by the HTTP layer and reported
    // as a `headers` problem.
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)));
    let base = server.url();
    for tail in ["a<b", "a>b", "a`b", "v1?q=<x>"] {
        let url = format!("{base}{tail}");
        let v = parse(&call_url(&url, ""));
        assert_eq!(v["error"]["code"], "invalid_argument", "{url}: {v}");
        assert_eq!(v["error"]["param"], "url", "{url}: {v}");
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn token_the_sender_refuses_is_invalid_argument_naming_token_and_sends_nothing() {
    // Found by the random-argument test: a non-ASCII token was refused by the HTTP layer and
    // reported as `io`, "the server's answer is not valid HTTP"; a control character and a
    // 1 MiB token were reported as `headers` problems.
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)));
    let huge = "k".repeat(1 << 20);
    for token in [
        "sk-ключ-123",
        "sk-\u{1}-123",
        "sk-\u{7f}-123",
        "sk-😀-1234",
        &huge,
    ] {
        let req = ImageRequest {
            url: &server.url(),
            token,
            descr: DESCR,
            ..Default::default()
        };
        let result = get_images_ex(&req, "");
        let v = parse(&result);
        assert_eq!(v["error"]["code"], "invalid_argument", "{result:.300}");
        assert_eq!(v["error"]["param"], "token", "{result:.300}");
        assert!(!result.contains(token), "{result:.300}");
    }
    // The same in headers_json (no token given): named `headers`, nothing sent.
    let req = ImageRequest {
        url: &server.url(),
        descr: DESCR,
        headers: r#"{"Authorization":"Bearer ключ"}"#,
        ..Default::default()
    };
    let v = parse(&get_images_ex(&req, ""));
    assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
    assert_eq!(v["error"]["param"], "headers", "{v}");
    assert_eq!(server.connections(), 0);
}

// ---- the token in a hostile spot ----

#[test]
fn a_json_body_echoing_the_token_is_returned_with_the_token_replaced() {
    // A JSON body comes back byte for byte, with one exception: the token, when the server
    // (or a proxy) echoes it, is replaced by *** so that the host never logs it.
    let server = TestServer::start(|req, _| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        Action::Reply(Reply::json(
            400,
            serde_json::json!({"error": {"message": format!("bad key: {auth}")}}).to_string(),
        ))
    });
    let req = ImageRequest {
        url: &server.url(),
        token: TOKEN,
        descr: DESCR,
        ..Default::default()
    };
    let result = get_images_ex(&req, "");
    assert!(!result.contains(TOKEN), "{result}");
    assert_eq!(parse(&result)["error"]["message"], "bad key: Bearer ***");
}

/// The JSON result of a call with `token` to a server that answers `answer(authorization
/// header value)` as a JSON body.
fn echoed(token: &str, answer: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    let server = TestServer::start(move |req, _| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        Action::Reply(Reply::json(400, answer(&auth)))
    });
    let req = ImageRequest {
        url: &server.url(),
        token,
        descr: DESCR,
        ..Default::default()
    };
    get_images_ex(&req, "")
}

#[test]
fn a_token_that_also_occurs_in_a_number_leaves_the_json_valid() {
    // The substring scrub turned {"created":1712345678} into {"created":17***}.
    let result = echoed("12345678", |auth| {
        format!(r#"{{"created":1712345678,"error":{{"message":"bad key: {auth}"}}}}"#)
    });
    assert_eq!(
        result,
        r#"{"created":1712345678,"error":{"message":"bad key: Bearer ***"}}"#
    );
}

#[test]
fn tokens_with_any_printable_characters_are_scrubbed_in_escaped_forms_too() {
    // The old rule left tokens with characters outside [A-Za-z0-9-_.~+/=:] verbatim, and a
    // token written with JSON escapes (`\/` for `/`, serde_json's `\"`) was never found.
    for token in [
        "pa$$w0rd!",
        "sk-abc/def+123",
        r#"key"with\quote"#,
        "sk-abcd efgh",
    ] {
        let result = echoed(token, |auth| {
            // serde_json escapes `"` and `\`; `/` is escaped by hand, as PHP servers do.
            serde_json::json!({"error": {"message": format!("bad key: {auth}")}})
                .to_string()
                .replace('/', "\\/")
        });
        assert!(!result.contains(token), "{token}: {result}");
        assert_eq!(
            parse(&result)["error"]["message"],
            "bad key: Bearer ***",
            "{token}: {result}"
        );
    }
}

#[test]
fn tokens_shorter_than_8_bytes_are_not_scrubbed() {
    // The documented limit of the rule: below 8 bytes a token is left (it cannot be told from
    // ordinary words); from 8 bytes on it is replaced.
    let short = echoed("sk-abcd", |auth| {
        format!(r#"{{"error":{{"message":"{auth}"}}}}"#)
    });
    assert_eq!(parse(&short)["error"]["message"], "Bearer sk-abcd");
    let long = echoed("sk-abcde", |auth| {
        format!(r#"{{"error":{{"message":"{auth}"}}}}"#)
    });
    assert_eq!(parse(&long)["error"]["message"], "Bearer ***");
}

#[test]
fn a_non_json_body_echoing_the_token_is_redacted_from_our_excerpt() {
    // Our not_json error is our result: its excerpt and content_type never carry the token.
    let server = TestServer::start(|req, _| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        Action::Reply(
            Reply::with_type(502, "text/html", format!("<p>proxy error for {auth}</p>"))
                .header("X-Echo", &auth),
        )
    });
    let result = call(&server, "");
    let v = parse(&result);
    assert_eq!(v["error"]["code"], "not_json", "{result}");
    assert_eq!(v["error"]["body"], "<p>proxy error for Bearer ***</p>");

    // In the full response shape our error object inside is still redacted.
    let full = get_images_ex(
        &ImageRequest {
            url: &server.url(),
            token: TOKEN,
            descr: DESCR,
            ..Default::default()
        },
        r#"{"response":"full"}"#,
    );
    let v = parse(&full);
    assert_eq!(
        v["body"]["error"]["body"],
        "<p>proxy error for Bearer ***</p>"
    );
    // Echoed in a response header, the token is replaced in the full shape too.
    assert_eq!(v["headers"]["x-echo"], "Bearer ***");
    assert!(!full.contains(TOKEN));
}

#[test]
fn a_token_echoed_in_the_content_type_is_redacted() {
    let server = TestServer::start(|req, _| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        Action::Reply(Reply::with_type(
            500,
            &format!("text/plain; echo={auth}"),
            "oops",
        ))
    });
    let v = parse(&call(&server, ""));
    assert_eq!(v["error"]["code"], "not_json");
    assert_eq!(v["error"]["content_type"], "text/plain; echo=Bearer ***");
}

#[test]
fn a_token_across_the_2_kib_excerpt_boundary_leaves_no_prefix() {
    // The token starts 10 bytes before the excerpt's end: quoting its first 10 bytes would
    // leak part of it, so the excerpt ends before it.
    for offset in [2048 - 10, 2048 - TOKEN.len(), 2048 - 1, 2048] {
        let server = TestServer::start(move |_, _| {
            let mut text = "x".repeat(offset);
            text.push_str(TOKEN);
            text.push_str(&"y".repeat(4000));
            Action::Reply(Reply::with_type(500, "text/plain", text))
        });
        let v = parse(&call(&server, ""));
        let excerpt = v["error"]["body"].as_str().unwrap();
        assert!(
            excerpt.len() <= 2048,
            "offset {offset}: {} bytes",
            excerpt.len()
        );
        assert!(
            !excerpt.contains(&TOKEN[..4]),
            "offset {offset}: part of the token quoted: {excerpt}"
        );
        assert!(excerpt.starts_with(&"x".repeat(offset.min(2048) - 1)));
    }
}

#[test]
fn the_trace_never_carries_the_token_wherever_the_caller_put_it() {
    // The token in another header, in the URL's query and in the description: the trace
    // (what --debug and hosts' loggers see) shows *** for each, under the same rule.
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)));
    let url = format!("{}?key={TOKEN}", server.url());
    let headers = format!("{{'x-api-key':'{TOKEN}'}}");
    let descr = format!("{{'prompt':'my key is {TOKEN}'}}");
    let req = ImageRequest {
        url: &url,
        token: TOKEN,
        descr: &descr,
        headers: &headers,
        ..Default::default()
    };
    let options = opi_openai::Options::parse("").unwrap();
    let mut seen = Vec::new();
    let result =
        support::get_images_traced(&req, &options, &mut |event| seen.push(format!("{event:?}")));
    assert_eq!(result, OK);
    assert!(seen.len() >= 2, "{seen:?}");
    for line in &seen {
        assert!(!line.contains(TOKEN), "the trace holds the token: {line}");
    }
    assert!(seen[0].contains("***"), "{}", seen[0]);
}
