//! Call options (issue 5), each against servers these tests start on 127.0.0.1: an HTTPS
//! server with a certificate from a CA made at test time, a CONNECT proxy, and the plain
//! scripted server. The environment-variable proxy is in `tests/options_env_proxy.rs` (its
//! own process: the environment is process-wide).

mod support;

use base64::Engine;
use opi_openai::{ImageRequest, Options, ResponseShape, TraceEvent, TLS_VERIFY_OFF};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::proxy::ConnectProxy;
use support::server::{images_handler, png};
use support::tls::{TestCa, TlsServer};
use support::{error_code, get_images_ex, get_images_traced, parse, Action, Reply, TestServer};

const TOKEN: &str = "sk-test-options-SECRET-7f3a9c21";
const DESCR: &str = "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}";

fn request(url: &str) -> ImageRequest<'_> {
    ImageRequest {
        url,
        token: TOKEN,
        model: "gpt-image-1",
        descr: DESCR,
        headers: "",
    }
}

/// One call with `options` (a JSON value), the result parsed.
fn call(url: &str, options: Value) -> Value {
    let result = get_images_ex(&request(url), &options.to_string());
    assert!(
        !result.contains(TOKEN),
        "the token leaked into a result: {result}"
    );
    parse(&result)
}

/// One call, also collecting the notices it traced.
fn call_traced(url: &str, options: Value) -> (Value, Vec<String>) {
    let options = Options::parse(&options.to_string()).expect("valid options");
    let mut notices = Vec::new();
    let result = get_images_traced(&request(url), &options, &mut |event| {
        if let TraceEvent::Notice(text) = event {
            notices.push(text.to_string());
        }
    });
    assert!(
        !result.contains(TOKEN),
        "the token leaked into a result: {result}"
    );
    (parse(&result), notices)
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn assert_images(result: &Value) {
    assert!(
        result["data"][0]["b64_json"].is_string(),
        "expected images, got {result}"
    );
}

// --- validation -------------------------------------------------------------------------

#[test]
fn unknown_option_key_is_an_error_naming_the_key() {
    let server = TestServer::start(images_handler());
    let result = call(
        &server.url(),
        json!({"timeout": 30, "proxi": "http://127.0.0.1:1"}),
    );
    assert_eq!(result["error"]["code"], "invalid_argument");
    assert_eq!(result["error"]["param"], "options");
    assert!(
        result["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"proxi\""),
        "{result}"
    );
    assert!(
        server.requests().is_empty(),
        "a call with bad options must not be sent"
    );
}

#[test]
fn wrong_value_types_are_errors_naming_the_key() {
    for (key, value) in [
        ("timeout", json!("10")),
        ("connect_timeout", json!(0)),
        ("retries", json!(-1)),
        ("max_response_mb", json!(1.5)),
        ("proxy", json!(true)),
        ("tls_verify", json!("false")),
        ("response", json!("headers")),
        ("save_dir", json!(1)),
        ("drop_b64", json!(1)),
        ("log_file", json!("")),
        ("ca_file", json!(["a.pem"])),
        ("parallel", json!(17)),
    ] {
        let err = Options::parse(&json!({ key: value }).to_string()).unwrap_err();
        assert_eq!(err.param(), Some("options"), "{key}");
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn options_take_the_single_quoted_and_file_forms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("options.json");
    std::fs::write(&file, r#"{"timeout": 5, "retries": 0, "response": "full"}"#).unwrap();
    let from_file = Options::parse(file.to_str().unwrap()).unwrap();
    let quoted = Options::parse("{'timeout':5,'retries':0,'response':'full'}").unwrap();
    assert_eq!(from_file, quoted);
    assert_eq!(quoted.timeout, Duration::from_secs(5));
    assert_eq!(quoted.retries, 0);
    assert_eq!(quoted.response, ResponseShape::Full);
}

#[test]
fn drop_b64_without_save_dir_is_refused() {
    let err = Options::parse(r#"{"drop_b64": true}"#).unwrap_err();
    assert!(err.to_string().contains("save_dir"), "{err}");
}

#[test]
fn ca_file_that_holds_no_certificate_is_refused_when_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.pem");
    std::fs::write(&file, "not a certificate\n").unwrap();
    let err = Options::parse(&json!({"ca_file": path_text(&file)}).to_string()).unwrap_err();
    assert!(err.to_string().contains("ca_file"), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = Options::parse(&json!({"ca_file": path_text(&missing)}).to_string()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

// --- timeouts -----------------------------------------------------------------------------

#[test]
fn timeout_one_second_against_a_silent_server_returns_timeout_long_before_it_would_answer() {
    // The server would hold the call for 60 s. The bound is generous (the suite runs in
    // parallel on a loaded machine) yet far below the server's hang, so only the 1 s timeout
    // can have ended the call; and the call did wait for it.
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(60)));
    let started = Instant::now();
    let result = call(&server.url(), json!({"timeout": 1}));
    let elapsed = started.elapsed();
    assert_eq!(result["error"]["code"], "timeout", "{result}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "took only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert_eq!(server.requests().len(), 1, "a sent request is not repeated");
}

// --- TLS ----------------------------------------------------------------------------------

#[test]
fn https_with_an_unknown_ca_fails_with_code_tls() {
    let server = TlsServer::start(images_handler());
    let result = call(&server.url(), json!({}));
    assert_eq!(result["error"]["code"], "tls", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ca_file"),
        "the message tells the way out: {message}"
    );
    assert_eq!(server.handshakes(), 0);
    assert!(server.requests().is_empty());
}

#[test]
fn ca_file_makes_the_https_call_succeed() {
    let server = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let ca = server.ca.write_ca(dir.path(), "firewall-root.pem");
    let result = call(&server.url(), json!({"ca_file": path_text(&ca)}));
    assert_images(&result);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn ca_file_of_another_ca_still_fails_with_code_tls() {
    let server = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new().write_ca(dir.path(), "other.pem");
    let result = call(&server.url(), json!({"ca_file": path_text(&other)}));
    assert_eq!(result["error"]["code"], "tls", "{result}");
}

#[test]
fn a_replaced_ca_file_is_trusted_within_a_second() {
    // The file is looked at once a second at most; a changed one gets an agent of its own.
    let server = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corporate.pem");
    std::fs::write(&path, TestCa::new().ca_pem).unwrap();
    let options = json!({"ca_file": path_text(&path)});
    assert_eq!(call(&server.url(), options.clone())["error"]["code"], "tls");
    std::fs::write(&path, format!("{}\n", server.ca.ca_pem)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_images(&call(&server.url(), options.clone()));
    // And back: the old file's agent is not reused for the new version.
    std::fs::write(&path, TestCa::new().ca_pem).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(call(&server.url(), options)["error"]["code"], "tls");
}

#[test]
fn tls_verify_false_succeeds_and_says_so_in_trace_and_log() {
    let server = TlsServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let (result, notices) = call_traced(
        &server.url(),
        json!({"tls_verify": false, "log_file": path_text(&log)}),
    );
    assert_images(&result);
    assert_eq!(notices.first().map(String::as_str), Some(TLS_VERIFY_OFF));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(TLS_VERIFY_OFF), "{text}");
}

#[test]
fn verification_stays_on_unless_tls_verify_is_false() {
    // A real HTTPS server whose certificate comes from a CA made at test time. No other key
    // turns verification off: with a proxy setting, a timeout and retries, the call without
    // ca_file fails with `tls`; with ca_file the same call succeeds; neither says "OFF".
    let server = TlsServer::start(images_handler());
    let others = json!({"proxy": "", "timeout": 5, "retries": 0, "max_response_mb": 8});
    let (result, notices) = call_traced(&server.url(), others.clone());
    assert_eq!(result["error"]["code"], "tls", "{result}");
    assert!(!notices.iter().any(|n| n == TLS_VERIFY_OFF), "{notices:?}");
    assert!(server.requests().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let mut with_ca = others;
    with_ca["ca_file"] = json!(path_text(&server.ca.write_ca(dir.path(), "root.pem")));
    let (result, notices) = call_traced(&server.url(), with_ca);
    assert_images(&result);
    assert!(!notices.iter().any(|n| n == TLS_VERIFY_OFF), "{notices:?}");
    assert_eq!(server.requests().len(), 1);
}

// --- proxy --------------------------------------------------------------------------------

#[test]
fn proxy_option_carries_the_call_through_a_connect_tunnel() {
    let server = TestServer::start(images_handler());
    let proxy = ConnectProxy::start(None);
    let (result, notices) = call_traced(&server.url(), json!({"proxy": proxy.url()}));
    assert_images(&result);
    assert_eq!(proxy.tunnels(), 1);
    let connects = proxy.requests();
    assert_eq!(connects[0].target, server.addr.to_string());
    assert!(proxy.bytes() > 1000, "the image went through the tunnel");
    assert!(
        notices.iter().any(|n| n.contains(&proxy.url())),
        "{notices:?}"
    );
}

#[test]
fn proxy_carries_https_with_ca_file_end_to_end() {
    let server = TlsServer::start(images_handler());
    let proxy = ConnectProxy::start(None);
    let dir = tempfile::tempdir().unwrap();
    let ca = server.ca.write_ca(dir.path(), "root.pem");
    let result = call(
        &server.url(),
        json!({"proxy": proxy.url(), "ca_file": path_text(&ca)}),
    );
    assert_images(&result);
    assert_eq!(proxy.tunnels(), 1);
    assert_eq!(server.handshakes(), 1);
}

#[test]
fn proxy_credentials_are_sent_and_required() {
    let server = TestServer::start(images_handler());
    let proxy = ConnectProxy::start(Some(("alice", "pa ss:wörd")));

    let refused = call(&server.url(), json!({"proxy": proxy.url(), "retries": 0}));
    assert_eq!(refused["error"]["code"], "connect", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("407"),
        "{refused}"
    );
    assert!(server.requests().is_empty());

    let with_url = call(
        &server.url(),
        json!({"proxy": proxy.url_with("alice", "pa%20ss%3Aw%C3%B6rd")}),
    );
    assert_images(&with_url);

    // OPI's map form (another server, so that no pooled tunnel is reused).
    let second = TestServer::start(images_handler());
    let port = proxy.addr.port();
    let opi_map = json!({"proxy": {"Protocol": "http", "Host": "127.0.0.1", "Port": port, "User": "alice", "Password": "pa ss:wörd"}});
    assert_images(&call(&second.url(), opi_map));

    assert_eq!(proxy.tunnels(), 2);
    let expected = format!("Basic {}", b64("alice:pa ss:wörd".as_bytes()));
    let sent: Vec<_> = proxy
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(sent, vec![None, Some(expected.clone()), Some(expected)]);
}

#[test]
fn proxy_password_never_appears_in_an_error() {
    let proxy = ConnectProxy::start(Some(("bob", "right")));
    let server = TestServer::start(images_handler());
    let result = call(
        &server.url(),
        json!({"proxy": proxy.url_with("bob", "wrong-secret-42"), "retries": 0}),
    );
    assert_eq!(result["error"]["code"], "connect");
    assert!(!result.to_string().contains("wrong-secret-42"), "{result}");
}

// --- response: full -----------------------------------------------------------------------

#[test]
fn response_full_returns_status_headers_and_body() {
    let body =
        r#"{"created":1750098846,"data":[{"b64_json":"iVBORw0KGgo=","revised_prompt":"a"}]}"#;
    let server = TestServer::start(move |_, _| {
        Action::Reply(
            Reply::json(200, body)
                .header("x-request-id", "req_full_1")
                .header("x-ratelimit-remaining-requests", "49")
                .header("x-ratelimit-reset-requests", "1.2s")
                .header("Vary", "Accept")
                .header("Vary", "Origin"),
        )
    });
    let result = call(&server.url(), json!({"response": "full"}));
    assert_eq!(result["status"], 200);
    assert_eq!(result["headers"]["x-request-id"], "req_full_1");
    assert_eq!(result["headers"]["x-ratelimit-remaining-requests"], "49");
    assert_eq!(result["headers"]["x-ratelimit-reset-requests"], "1.2s");
    assert_eq!(result["headers"]["content-type"], "application/json");
    assert_eq!(
        result["headers"]["vary"], "Accept, Origin",
        "repeated headers are joined"
    );
    assert_eq!(result["body"], serde_json::from_str::<Value>(body).unwrap());
}

#[test]
fn response_full_carries_an_api_error_with_its_status() {
    let error = r#"{"error":{"message":"Your request was rejected","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(400, error).header("x-request-id", "req_400"))
    });
    let result = call(&server.url(), json!({"adv_response": true}));
    assert_eq!(result["status"], 400);
    assert_eq!(result["headers"]["x-request-id"], "req_400");
    assert_eq!(result["body"]["error"]["code"], "content_policy_violation");
}

#[test]
fn response_full_without_any_response_is_the_plain_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let result = call(
        &format!("http://{closed}/"),
        json!({"response": "full", "retries": 0}),
    );
    assert_eq!(result["error"]["code"], "connect", "{result}");
    assert!(result.get("status").is_none());
}

// --- save_dir -----------------------------------------------------------------------------

fn jpeg_bytes() -> Vec<u8> {
    let mut b = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01,
    ];
    b.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
    b.extend([0xFF, 0xD9]);
    b
}

fn webp_bytes() -> Vec<u8> {
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 13 % 241) as u8).collect();
    let mut b = b"RIFF".to_vec();
    b.extend(((payload.len() + 8) as u32).to_le_bytes());
    b.extend(b"WEBPVP8L");
    b.extend(payload);
    b
}

/// A server answering with one image of each format as `b64_json`, `created` fixed.
fn three_formats_server(created: u64) -> TestServer {
    let items = [png(32, 32), jpeg_bytes(), webp_bytes()];
    let answer = json!({
        "created": created,
        "data": items.iter().map(|i| json!({"b64_json": b64(i), "revised_prompt": "x"})).collect::<Vec<_>>(),
    })
    .to_string();
    TestServer::start(move |_, _| Action::Reply(Reply::json(200, answer.clone())))
}

#[test]
fn save_dir_writes_png_jpeg_and_webp_files_equal_to_the_payload() {
    let server = three_formats_server(1750000001);
    let dir = tempfile::tempdir().unwrap();
    let result = call(&server.url(), json!({"save_dir": path_text(dir.path())}));
    let expected = [
        (png(32, 32), "png"),
        (jpeg_bytes(), "jpeg"),
        (webp_bytes(), "webp"),
    ];
    for (index, (bytes, ext)) in expected.iter().enumerate() {
        let item = &result["data"][index];
        let file = Path::new(item["file"].as_str().expect("a file path"));
        assert!(file.is_absolute());
        assert_eq!(file, dir.path().join(format!("1750000001_{index}.{ext}")));
        assert_eq!(&std::fs::read(file).unwrap(), bytes);
        assert_eq!(
            item["b64_json"],
            b64(bytes),
            "b64_json is kept without drop_b64"
        );
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
}

#[test]
fn drop_b64_removes_the_strings_and_keeps_the_paths() {
    let server = three_formats_server(1750000002);
    let dir = tempfile::tempdir().unwrap();
    let text = get_images_ex(
        &request(&server.url()),
        &json!({"save_dir": path_text(dir.path()), "drop_b64": true}).to_string(),
    );
    assert!(
        !text.contains(&b64(&jpeg_bytes())),
        "a base64 string survived"
    );
    let result = parse(&text);
    for item in result["data"].as_array().unwrap() {
        assert!(item.get("b64_json").is_none(), "{item}");
        assert!(Path::new(item["file"].as_str().unwrap()).is_file());
        assert_eq!(item["revised_prompt"], "x");
    }
}

/// An answer written by hand: spaces around the colons, numbers serde_json would write
/// differently, and a `b64_json` with the escapes JSON allows (`\/`, `\n` line breaks).
#[test]
fn save_dir_keeps_the_rest_of_the_answer_byte_for_byte() {
    let plain = b64(&png(16, 16));
    let escaped = b64(&jpeg_bytes()).replace('/', "\\/");
    let escaped = format!("{}\\n{}", &escaped[..40], &escaped[40..]);
    let answer = format!(
        r#"{{"created" : 1750000003, "usage": {{"total": 1.50e2}},
  "data": [ {{ "b64_json" : "{plain}", "revised_prompt": "a\u00e9b" }},
            {{"revised_prompt":"c", "b64_json":"{escaped}"}} ] }}"#
    );
    let served = answer.clone();
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, served.clone())));
    for drop_b64 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let text = get_images_ex(
            &request(&server.url()),
            &json!({"save_dir": path_text(dir.path()), "drop_b64": drop_b64}).to_string(),
        );
        let files = [
            dir.path().join("1750000003_0.png"),
            dir.path().join("1750000003_1.jpeg"),
        ];
        assert_eq!(std::fs::read(&files[0]).unwrap(), png(16, 16), "{text}");
        assert_eq!(std::fs::read(&files[1]).unwrap(), jpeg_bytes());
        let file = |i: usize| serde_json::to_string(&path_text(&files[i])).unwrap();
        let expected = if drop_b64 {
            answer
                .replace(
                    &format!(r#""b64_json" : "{plain}""#),
                    &format!(r#""file":{}"#, file(0)),
                )
                .replace(
                    &format!(r#""b64_json":"{escaped}""#),
                    &format!(r#""file":{}"#, file(1)),
                )
        } else {
            answer
                .replace(
                    &format!(r#""{plain}""#),
                    &format!(r#""{plain}","file":{}"#, file(0)),
                )
                .replace(
                    &format!(r#""{escaped}""#),
                    &format!(r#""{escaped}","file":{}"#, file(1)),
                )
        };
        assert_eq!(text, expected, "drop_b64 {drop_b64}");
    }
}

#[test]
fn save_dir_uses_output_format_when_the_bytes_are_not_recognised() {
    let answer = json!({"created": 1750000003u64, "output_format": "webp", "data": [{"b64_json": b64(b"opaque")}]});
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, answer.to_string())));
    let dir = tempfile::tempdir().unwrap();
    let result = call(&server.url(), json!({"save_dir": path_text(dir.path())}));
    assert!(
        result["data"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("1750000003_0.webp"),
        "{result}"
    );
}

#[test]
fn save_dir_downloads_url_items_without_the_token() {
    let image = png(48, 40);
    let server = TestServer::start({
        let image = image.clone();
        move |req, _| {
            if req.method == "GET" && req.path.starts_with("/files/img-0.png") {
                return Action::Reply(Reply::with_type(200, "image/png", image.clone()));
            }
            let host = req.header("host").unwrap_or_default().to_string();
            let url = format!("http://{host}/files/img-0.png?se=2025-06-16&sig=SIGNATURE123");
            Action::Reply(Reply::json(
                200,
                json!({"created": 1750000004u64, "data": [{"url": url, "revised_prompt": "r"}]})
                    .to_string(),
            ))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let result = call(
        &server.url(),
        json!({"save_dir": path_text(dir.path()), "log_file": path_text(&log)}),
    );
    let file = result["data"][0]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no file in {result}"));
    assert_eq!(std::fs::read(file).unwrap(), image);
    assert!(file.ends_with("1750000004_0.png"));
    assert!(
        result["data"][0]["url"].is_string(),
        "the URL stays in the result"
    );
    let get = server
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .expect("the image was downloaded");
    assert!(
        get.header("authorization").is_none(),
        "the token must not go to the image host"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("GET http://") && !text.contains("SIGNATURE123"),
        "{text}"
    );
}

#[test]
fn save_dir_goes_through_the_proxy_for_downloads_too() {
    let image = png(8, 8);
    let server = TestServer::start({
        let image = image.clone();
        move |req, _| {
            if req.method == "GET" {
                return Action::Reply(Reply::with_type(200, "image/png", image.clone()));
            }
            let host = req.header("host").unwrap_or_default().to_string();
            Action::Reply(Reply::json(
                200,
                json!({"created": 1, "data": [{"url": format!("http://{host}/i.png")}]})
                    .to_string(),
            ))
        }
    });
    let proxy = ConnectProxy::start(None);
    let dir = tempfile::tempdir().unwrap();
    let result = call(
        &server.url(),
        json!({"proxy": proxy.url(), "save_dir": path_text(dir.path())}),
    );
    assert_eq!(
        std::fs::read(result["data"][0]["file"].as_str().unwrap()).unwrap(),
        image
    );
    assert_eq!(server.requests().len(), 2);
    // One tunnel for both requests (kept alive), or one each: never a direct connection.
    assert!(proxy.tunnels() >= 1 && proxy.requests().len() == proxy.tunnels());
    assert_eq!(server.connections(), proxy.tunnels());
}

#[test]
fn a_failed_download_keeps_the_other_images_and_the_servers_json() {
    // One item's URL answers 404: the other items are still saved, the failed one keeps its
    // URL and gets an error of its own, and the server's JSON (created, other fields) stays.
    let server = TestServer::start(|req, _| {
        if req.method == "GET" {
            return if req.path == "/gone.png" {
                Action::Reply(Reply::json(404, r#"{"error":"expired"}"#))
            } else {
                Action::Reply(Reply::with_type(200, "image/png", png(2, 2)))
            };
        }
        let host = req.header("host").unwrap_or_default().to_string();
        let data = json!([
            {"b64_json": b64(&png(4, 4))},
            {"url": format!("http://{host}/gone.png")},
            {"url": format!("http://{host}/fine.png")},
            {"b64_json": "not base64!"},
        ]);
        Action::Reply(Reply::json(
            200,
            json!({"created": 5, "usage": {"total_tokens": 7}, "data": data}).to_string(),
        ))
    });
    let dir = tempfile::tempdir().unwrap();
    let result = call(
        &server.url(),
        json!({"save_dir": path_text(dir.path()), "retries": 0}),
    );
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(result["created"], 5);
    assert_eq!(result["usage"]["total_tokens"], 7);
    let data = result["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    for saved in [0, 2] {
        let file = data[saved]["file"].as_str().unwrap();
        assert!(
            std::fs::read(file).unwrap().starts_with(b"\x89PNG"),
            "{file}"
        );
        assert!(data[saved].get("error").is_none());
    }
    assert!(data[1]["url"].as_str().unwrap().ends_with("/gone.png"));
    assert!(data[1].get("file").is_none());
    assert_eq!(data[1]["error"]["code"], "io", "{result}");
    assert!(
        data[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{result}"
    );
    assert_eq!(data[3]["b64_json"], "not base64!");
    assert_eq!(data[3]["error"]["code"], "io", "{result}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// With drop_b64 an image is decoded into the answer's own buffer: when it cannot be written,
/// or is not base64, the server's text must come back as it was.
#[test]
fn with_drop_b64_unsaved_images_keep_their_base64() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("images");
    let moved = target.clone();
    let images = [
        b64(&png(4, 4)),
        b64(&png(3, 3)).trim_end_matches('=').to_string(),
    ];
    let served = images.clone();
    let server = TestServer::start(move |req, _| {
        if req.body_text().contains("unwritable") {
            let _ = std::fs::remove_dir_all(&moved);
            std::fs::write(&moved, "not a folder").unwrap();
        }
        let data = json!([{"b64_json": served[0]}, {"b64_json": "QUJD!"}, {"b64_json": served[1]}]);
        Action::Reply(Reply::json(
            200,
            json!({"created": 11, "data": data}).to_string(),
        ))
    });
    let options = json!({"save_dir": path_text(&target), "drop_b64": true}).to_string();
    let url = server.url();
    let mut req = request(&url);
    let result = parse(&get_images_ex(&req, &options));
    let data = result["data"].as_array().unwrap();
    assert!(
        data[0].get("b64_json").is_none() && data[0]["file"].is_string(),
        "{result}"
    );
    assert_eq!(data[1]["b64_json"], "QUJD!", "{result}");
    assert_eq!(data[1]["error"]["code"], "io");
    assert!(data[2].get("b64_json").is_none() && data[2]["file"].is_string());
    req.descr = r#"{"prompt": "unwritable"}"#;
    let result = parse(&get_images_ex(&req, &options));
    assert_eq!(result["error"]["code"], "io", "{result}");
    let response = &result["error"]["response"]["data"];
    assert_eq!(response[0]["b64_json"], images[0], "{result}");
    assert_eq!(response[2]["b64_json"], images[1]);
}

#[test]
fn a_folder_that_cannot_be_written_fails_the_call_with_the_servers_json() {
    // The folder exists when the call starts (it is made before the request is sent) and is
    // replaced by a file while the server answers: no image can be written.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("images");
    let moved = target.clone();
    let server = TestServer::start(move |_, _| {
        let _ = std::fs::remove_dir_all(&moved);
        std::fs::write(&moved, "not a folder").unwrap();
        Action::Reply(Reply::json(
            200,
            json!({"created": 9, "data": [{"b64_json": b64(&png(4, 4))}, {"b64_json": b64(&png(2, 2))}]})
                .to_string(),
        ))
    });
    let result = call(&server.url(), json!({"save_dir": path_text(&target)}));
    assert_eq!(result["error"]["code"], "io", "{result}");
    assert_eq!(result["error"]["type"], "opi_client_error");
    assert_eq!(result["error"]["response"]["created"], 9, "{result}");
    assert_eq!(
        result["error"]["response"]["data"][1]["b64_json"],
        b64(&png(2, 2)),
        "the images are still in the result"
    );
}

#[test]
fn same_second_calls_do_not_overwrite_each_other() {
    let server = three_formats_server(1750000005);
    let dir = tempfile::tempdir().unwrap();
    let first = call(&server.url(), json!({"save_dir": path_text(dir.path())}));
    let second = call(&server.url(), json!({"save_dir": path_text(dir.path())}));
    let (a, b) = (
        first["data"][0]["file"].as_str().unwrap(),
        second["data"][0]["file"].as_str().unwrap(),
    );
    assert!(
        a.ends_with("1750000005_0.png") && b.ends_with("1750000005_0_2.png"),
        "{a} {b}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
}

#[test]
fn save_dir_leaves_error_answers_unchanged() {
    let error = r#"{"error":{"message":"bad size","type":"invalid_request_error","param":"size","code":null}}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(400, error)));
    let dir = tempfile::tempdir().unwrap();
    let text = get_images_ex(
        &request(&server.url()),
        &json!({"save_dir": path_text(dir.path())}).to_string(),
    );
    assert_eq!(text, error);
}

#[test]
fn a_save_dir_that_cannot_be_made_fails_before_the_request() {
    let server = TestServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let result = call(
        &server.url(),
        json!({"save_dir": path_text(&blocker.join("sub"))}),
    );
    assert_eq!(result["error"]["param"], "options", "{result}");
    assert!(server.requests().is_empty());
}

// --- log_file -----------------------------------------------------------------------------

#[test]
fn log_file_has_one_line_per_attempt_and_never_the_token() {
    let server = TestServer::start(|req, index| match index {
        0 => Action::Reply(
            Reply::json(503, r#"{"error":{"message":"busy"}}"#)
                .header("retry-after-ms", "10")
                .header("x-request-id", "req_a"),
        ),
        _ => images_handler()(req, index),
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("opi.log");
    let result = call(&server.url(), json!({"log_file": path_text(&log)}));
    assert_images(&result);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("POST http://") && lines[0].contains("/v1/images/generations"),
        "{text}"
    );
    assert!(
        lines[0].contains("attempt=1") && lines[0].contains("status=503"),
        "{text}"
    );
    assert!(
        lines[0].contains("request_id=req_a") && lines[0].contains("retry_in_ms=10"),
        "{text}"
    );
    assert!(
        lines[1].contains("attempt=2")
            && lines[1].contains("status=200")
            && lines[1].contains("request_id=req_local_1")
    );
    assert!(lines
        .iter()
        .all(|l| l.contains("bytes=") && l.contains("duration_ms=")));
    assert!(
        lines[0].starts_with("20"),
        "a timestamp first: {}",
        lines[0]
    );
    assert!(
        !text.contains(TOKEN) && !text.contains("Yellow alpaca"),
        "no token, no body: {text}"
    );
    assert!(!text.contains("b64_json"));

    // Appended, not replaced.
    call(&server.url(), json!({"log_file": path_text(&log)}));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
}

#[test]
fn log_file_records_failed_attempts_with_their_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("opi.log");
    let result = call(
        &format!("http://{closed}/"),
        json!({"log_file": path_text(&log), "retries": 0}),
    );
    assert_eq!(error_code(&result.to_string()).as_deref(), Some("connect"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("status=-") && text.contains("error=\""),
        "{text}"
    );
}

// --- SOCKS5 ---------------------------------------------------------------------------------

#[test]
fn socks5_proxy_carries_the_call() {
    let server = TestServer::start(images_handler());
    let proxy = support::socks::Socks5Proxy::start(None);
    let result = call(&server.url(), json!({"proxy": proxy.url("socks5")}));
    assert_images(&result);
    let connects = proxy.requests();
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0].target, server.addr.to_string());
    assert!(proxy.bytes() > 1000, "the image went through the proxy");
}

#[test]
fn socks5h_leaves_name_resolution_to_the_proxy() {
    let server = TestServer::start(images_handler());
    let proxy = support::socks::Socks5Proxy::start(None);
    let url = format!("http://localhost:{}/", server.addr.port());
    let result = call(&url, json!({"proxy": proxy.url("socks5h")}));
    assert_images(&result);
    assert_eq!(
        proxy.requests()[0].target,
        format!("localhost:{}", server.addr.port())
    );
}

#[test]
fn socks5_credentials_are_sent_and_required() {
    let server = TestServer::start(images_handler());
    let proxy = support::socks::Socks5Proxy::start(Some(("bob", "s3cret")));
    let refused = call(
        &server.url(),
        json!({"proxy": proxy.url("socks5"), "retries": 0}),
    );
    assert!(refused["error"].is_object(), "{refused}");
    assert!(!refused.to_string().contains("s3cret"));
    let addr = proxy.addr;
    let result = call(
        &server.url(),
        json!({"proxy": format!("socks5://bob:s3cret@{addr}")}),
    );
    assert_images(&result);
    let last = proxy.requests().pop().unwrap();
    assert_eq!(last.user.as_deref(), Some("bob"));
}
