//! The core's behaviour, seen from a real HTTP server on 127.0.0.1: what is sent, and what
//! comes back for every kind of answer.

mod support;

use opi_openai::ImageRequest;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{error_code, get_images, get_images_ex, parse, Action, Reply, TestServer};

const OK: &str =
    r#"{"created":1750098846,"data":[{"revised_prompt":"r","url":"https://x/y.png"}]}"#;
const SEED_DESCR: &str = "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}";

fn ok_server() -> TestServer {
    TestServer::start(|_, _| Action::Reply(Reply::json(200, OK)))
}

fn one_request(server: &TestServer) -> support::Recorded {
    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        1,
        "expected exactly one request, got {}",
        reqs.len()
    );
    reqs.into_iter().next().unwrap()
}

// ---- the endpoint rule, end to end ----

#[test]
fn endpoint_table_paths_reach_the_server() {
    let server = ok_server();
    let base = format!("http://{}", server.addr);
    let cases = [
        (
            format!("{base}/api/v2/openai/"),
            "/api/v2/openai/v1/images/generations",
        ),
        (
            format!("{base}/api/v2/openai"),
            "/api/v2/openai/v1/images/generations",
        ),
        (format!("{base}/"), "/v1/images/generations"),
        (base.clone(), "/v1/images/generations"),
        (format!("{base}/v1"), "/v1/images/generations"),
        (format!("{base}/v1/"), "/v1/images/generations"),
        (
            format!("{base}/proxy/v1/images/generations"),
            "/proxy/v1/images/generations",
        ),
        (
            format!("{base}/openai?api-version=2024-02"),
            "/openai/v1/images/generations?api-version=2024-02",
        ),
    ];
    for (url, _) in &cases {
        assert_eq!(get_images(url, "", "", SEED_DESCR, ""), OK, "url {url}");
    }
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    let want: Vec<&str> = cases.iter().map(|(_, p)| *p).collect();
    assert_eq!(paths, want);
}

// ---- what the server receives ----

#[test]
fn request_method_path_headers_and_body() {
    let server = ok_server();
    let result = get_images(&server.url(), "sk-test-123", "dall-e-3", SEED_DESCR, "");
    assert_eq!(result, OK);
    let req = one_request(&server);
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/images/generations");
    assert_eq!(req.header("accept"), Some("*/*"));
    assert_eq!(req.header("accept-charset"), Some("utf-8"));
    assert_eq!(req.header("accept-encoding"), Some("gzip"));
    assert_eq!(req.header("connection"), Some("keep-alive"));
    assert_eq!(
        req.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(req.header("user-agent"), Some(opi_openai::USER_AGENT));
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-123"));
    assert_eq!(req.header_count("authorization"), 1);
    assert_eq!(
        req.header("content-length"),
        Some(req.body.len().to_string().as_str())
    );
    assert_eq!(
        req.body_text(),
        r#"{"model":"dall-e-3","prompt":"Yellow alpaca","n":1,"size":"1024x1024"}"#
    );
}

#[test]
fn body_keeps_description_field_order() {
    let server = ok_server();
    let descr = r#"{"size":"1024x1024","prompt":"p","zeta":true,"alpha":[1,2],"n":2}"#;
    get_images(&server.url(), "", "gpt-image-1", descr, "");
    assert_eq!(
        one_request(&server).body_text(),
        r#"{"model":"gpt-image-1","size":"1024x1024","prompt":"p","zeta":true,"alpha":[1,2],"n":2}"#
    );
}

#[test]
fn model_in_description_wins_over_model_argument() {
    let server = ok_server();
    get_images(
        &server.url(),
        "",
        "dall-e-3",
        r#"{"prompt":"p","model":"gpt-image-2"}"#,
        "",
    );
    let body: Value = serde_json::from_slice(&one_request(&server).body).unwrap();
    assert_eq!(body["model"], "gpt-image-2");
    assert_eq!(body.as_object().unwrap().len(), 2);
}

#[test]
fn empty_model_sends_no_model() {
    let server = ok_server();
    get_images(&server.url(), "", "", r#"{"prompt":"p"}"#, "");
    assert_eq!(one_request(&server).body_text(), r#"{"prompt":"p"}"#);
}

#[test]
fn unknown_fields_and_values_pass_through_untouched() {
    let server = ok_server();
    let descr = r#"{"prompt":"p","size":"3840x2160","quality":"ultra","future_param":{"x":[1,null]},"n":1.5}"#;
    get_images(&server.url(), "", "gpt-image-9", descr, "");
    let body: Value = serde_json::from_slice(&one_request(&server).body).unwrap();
    let want: Value = serde_json::from_str(descr).unwrap();
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&body[k], v, "field {k}");
    }
}

#[test]
fn empty_token_sends_no_authorization() {
    let server = ok_server();
    get_images(&server.url(), "", "m", SEED_DESCR, r#"{"X-Extra":"1"}"#);
    let req = one_request(&server);
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("x-extra"), Some("1"));
}

#[test]
fn token_overrides_authorization_given_in_headers() {
    let server = ok_server();
    get_images(
        &server.url(),
        "sk-real",
        "",
        SEED_DESCR,
        r#"{"authorization":"Bearer other"}"#,
    );
    let req = one_request(&server);
    assert_eq!(req.header_count("authorization"), 1);
    assert_eq!(req.header("authorization"), Some("Bearer sk-real"));
}

#[test]
fn authorization_in_headers_is_kept_when_token_is_empty() {
    let server = ok_server();
    get_images(
        &server.url(),
        "",
        "",
        SEED_DESCR,
        r#"{"Authorization":"Api-Key abc"}"#,
    );
    assert_eq!(
        one_request(&server).header("authorization"),
        Some("Api-Key abc")
    );
}

#[test]
fn additional_headers_override_defaults_in_all_forms() {
    let dir = tempdir();
    let file = dir.join("headers.json");
    std::fs::write(&file, r#"{"Accept":"application/json","X-Org":"org-1"}"#).unwrap();
    let forms = [
        r#"{"Accept":"application/json","X-Org":"org-1"}"#.to_string(),
        "{'Accept':'application/json','X-Org':'org-1'}".to_string(),
        file.to_str().unwrap().to_string(),
    ];
    for form in &forms {
        let server = ok_server();
        assert_eq!(
            get_images(&server.url(), "", "", SEED_DESCR, form),
            OK,
            "form {form}"
        );
        let req = one_request(&server);
        assert_eq!(
            req.header("accept"),
            Some("application/json"),
            "form {form}"
        );
        assert_eq!(req.header_count("accept"), 1);
        assert_eq!(req.header("x-org"), Some("org-1"));
        assert_eq!(
            req.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
}

#[test]
fn user_agent_can_be_overridden() {
    let server = ok_server();
    get_images(
        &server.url(),
        "",
        "",
        SEED_DESCR,
        r#"{"user-agent":"1C/8.3"}"#,
    );
    let req = one_request(&server);
    assert_eq!(req.header("user-agent"), Some("1C/8.3"));
    assert_eq!(req.header_count("user-agent"), 1);
}

// ---- description forms ----

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "opi-core-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn description_forms_json_single_quoted_and_file() {
    let dir = tempdir();
    let file = dir.join("descr.json");
    std::fs::write(&file, "\u{feff}{'prompt':'Жёлтая альпака','n':1}").unwrap();
    let forms = [
        (r#"{"prompt":"Жёлтая альпака","n":1}"#.to_string(), "json"),
        (
            "{'prompt':'Жёлтая альпака','n':1}".to_string(),
            "single-quoted",
        ),
        (file.to_str().unwrap().to_string(), "file"),
    ];
    for (form, name) in &forms {
        let server = ok_server();
        assert_eq!(get_images(&server.url(), "", "", form, ""), OK, "{name}");
        assert_eq!(
            one_request(&server).body_text(),
            r#"{"prompt":"Жёлтая альпака","n":1}"#,
            "{name}"
        );
    }
}

#[test]
fn single_quoted_description_with_escaped_quotes() {
    let server = ok_server();
    get_images(
        &server.url(),
        "",
        "",
        r#"{'prompt':'It\'s a "fox" — лиса','n':1}"#,
        "",
    );
    let body: Value = serde_json::from_slice(&one_request(&server).body).unwrap();
    assert_eq!(body["prompt"], r#"It's a "fox" — лиса"#);
}

#[test]
fn bad_descriptions_are_errors_naming_descr_and_send_nothing() {
    let server = ok_server();
    let missing = tempdir().join("no-such-file.json");
    for bad in [
        "",
        "   ",
        "[1,2]",
        "\"text\"",
        "42",
        "{prompt: yellow",
        "{'prompt':'open",
        "not json at all",
        missing.to_str().unwrap(),
    ] {
        let result = get_images(&server.url(), "", "", bad, "");
        let v = parse(&result);
        assert_eq!(v["error"]["type"], "opi_client_error", "{bad:?}: {result}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{bad:?}");
        assert_eq!(v["error"]["param"], "descr", "{bad:?}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("descr"),
            "{result}"
        );
    }
    assert!(server.requests().is_empty());
}

#[test]
fn unreadable_description_file_names_descr() {
    let dir = tempdir().join("a-dir.json");
    std::fs::create_dir_all(&dir).unwrap();
    let result = get_images("http://127.0.0.1:9/", "", "", dir.to_str().unwrap(), "");
    assert_eq!(parse(&result)["error"]["param"], "descr", "{result}");
}

// ---- header forms and injection ----

#[test]
fn hostile_headers_are_refused_before_anything_is_sent() {
    let server = ok_server();
    for bad in [
        r#"{"X-A":"a\r\nX-Injected: 1"}"#,
        r#"{"X-A":"a\nb"}"#,
        r#"{"X-A":"a\u0000b"}"#,
        r#"{"X-A\r\nX-B":"v"}"#,
        r#"{"X A":"v"}"#,
        r#"{"":"v"}"#,
        r#"{"Ключ":"v"}"#,
        r#"{"X-A":{"nested":1}}"#,
        r#"{"X-A":null}"#,
        r#"["X-A"]"#,
        "{'X-A':'open",
    ] {
        let result = get_images(&server.url(), "sk-secret-token", "", SEED_DESCR, bad);
        let v = parse(&result);
        assert_eq!(v["error"]["code"], "invalid_argument", "{bad}: {result}");
        assert_eq!(v["error"]["param"], "headers", "{bad}");
        assert!(!result.contains("sk-secret-token"));
    }
    assert!(server.requests().is_empty(), "nothing may be sent");
}

#[test]
fn oversized_headers_are_refused_before_sending() {
    let server = ok_server();
    let big = format!(r#"{{"X-Big":"{}"}}"#, "a".repeat(400 * 1024));
    let result = get_images(&server.url(), "", "", SEED_DESCR, &big);
    assert_eq!(
        parse(&result)["error"]["param"],
        "headers",
        "{}",
        &result[..200.min(result.len())]
    );
    assert!(server.requests().is_empty());
}

// ---- the result contract ----

#[test]
fn contract_a_json_body_returned_byte_for_byte_whatever_the_status() {
    // Odd spacing, key order and escapes must survive: the body is not re-serialised.
    let body = "{ \"error\" : {\"message\":\"Incorrect API key \\u00e9\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"} }\n";
    for status in [200u16, 400, 401, 403, 404] {
        let server = TestServer::start(move |_, _| Action::Reply(Reply::json(status, body)));
        assert_eq!(
            get_images(&server.url(), "sk-x", "", SEED_DESCR, ""),
            body,
            "status {status}"
        );
    }
}

#[test]
fn contract_b_empty_body_is_empty_object() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, "")));
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), "{}");
}

#[test]
fn contract_b_empty_body_after_an_error_status_is_an_empty_body_error() {
    // A 2xx empty body is `{}`; any other status with an empty body must not look like
    // success to a caller that checks `error`.
    for (status, body) in [
        (500u16, ""),
        (401, ""),
        (404, "  \r\n"),
        (302, ""),
        (429, ""),
    ] {
        let server = TestServer::start(move |_, _| Action::Reply(Reply::json(status, body)));
        let result = get_images_ex(
            &ImageRequest {
                url: &server.url(),
                token: "sk-empty-body-SECRET",
                descr: SEED_DESCR,
                ..Default::default()
            },
            r#"{"retries":0}"#,
        );
        let v = parse(&result);
        assert_eq!(
            v["error"]["type"], "opi_invalid_response",
            "{status}: {result}"
        );
        assert_eq!(v["error"]["code"], "empty_body", "{status}: {result}");
        assert_eq!(v["error"]["status"], status, "{result}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&status.to_string()),
            "{result}"
        );
    }
    for status in [201u16, 204] {
        let server = TestServer::start(move |_, _| Action::Reply(Reply::json(status, "")));
        assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), "{}");
    }
}

#[test]
fn a_body_that_starts_with_a_utf8_bom_is_json_returned_without_it() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(OK.as_bytes());
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, body.clone())));
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    // Only at the start: a BOM anywhere else is not JSON whitespace.
    let server =
        TestServer::start(move |_, _| Action::Reply(Reply::json(200, format!("{OK}\u{feff}"))));
    assert_eq!(
        error_code(&get_images(&server.url(), "", "", SEED_DESCR, "")).as_deref(),
        Some("not_json")
    );
}

#[test]
fn contract_c_non_json_body_is_invalid_response_error() {
    let html = "<html><body>502 Bad Gateway from nginx</body></html>";
    let server =
        TestServer::start(move |_, _| Action::Reply(Reply::with_type(404, "text/html", html)));
    let result = get_images(&server.url(), "sk-x", "", SEED_DESCR, "");
    let v = parse(&result);
    assert_eq!(v["error"]["type"], "opi_invalid_response");
    assert_eq!(v["error"]["code"], "not_json");
    assert_eq!(v["error"]["status"], 404);
    assert_eq!(v["error"]["content_type"], "text/html");
    assert_eq!(v["error"]["body"], html);
    assert!(v["error"]["message"].as_str().unwrap().contains("404"));
}

#[test]
fn contract_c_non_utf8_body_is_quoted_lossily_and_at_most_2k() {
    let mut bytes = vec![0xff, 0xfe, b'{'];
    bytes.extend(std::iter::repeat_n(b'x', 10_000));
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::with_type(
            200,
            "application/octet-stream",
            bytes.clone(),
        ))
    });
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    let v = parse(&result);
    assert_eq!(v["error"]["code"], "not_json");
    let quoted = v["error"]["body"].as_str().unwrap();
    assert!(quoted.starts_with('\u{fffd}'));
    assert!(quoted.len() <= 2048 + 8, "quoted {} bytes", quoted.len());
    assert!(v["error"]["message"].as_str().unwrap().contains("UTF-8"));
}

#[test]
fn contract_d_local_failure_is_client_error_with_code() {
    // A port nobody listens on: connection refused (after the retries).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let result = get_images_ex(
        &ImageRequest {
            url: &format!("http://127.0.0.1:{port}/"),
            descr: SEED_DESCR,
            token: "sk-secret-value",
            ..Default::default()
        },
        r#"{"retries":0}"#,
    );
    let v = parse(&result);
    assert_eq!(v["error"]["type"], "opi_client_error", "{result}");
    assert_eq!(v["error"]["code"], "connect");
    assert_eq!(v["error"]["param"], Value::Null);
    assert!(!result.contains("sk-secret-value"));
}

#[test]
fn contract_d_unresolvable_host_is_dns() {
    let result = get_images_ex(
        &ImageRequest {
            url: "http://no-such-host.invalid/",
            descr: SEED_DESCR,
            ..Default::default()
        },
        r#"{"retries":0}"#,
    );
    assert_eq!(error_code(&result).as_deref(), Some("dns"), "{result}");
}

#[test]
fn contract_d_bad_url_is_invalid_argument_naming_url() {
    for url in ["", "ftp://x/", "api.openai.com"] {
        let v = parse(&get_images(url, "", "", SEED_DESCR, ""));
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert_eq!(v["error"]["param"], "url");
    }
}

#[test]
fn contract_d_too_many_redirects() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(307, "").header("Location", "/v1/images/generations"))
    });
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(
        error_code(&result).as_deref(),
        Some("redirects"),
        "{result}"
    );
    assert_eq!(
        server.requests().len(),
        6,
        "the first request and 5 redirects"
    );
}

#[test]
fn redirect_307_and_308_repeat_the_post_with_its_body() {
    for status in [307u16, 308] {
        let server = TestServer::start(move |req, _| {
            if req.path.starts_with("/old/") {
                Action::Reply(
                    Reply::json(status, "").header("Location", "/new/v1/images/generations?x=1"),
                )
            } else {
                Action::Reply(Reply::json(200, OK))
            }
        });
        let url = format!("http://{}/old/", server.addr);
        assert_eq!(get_images(&url, "sk-a", "m", SEED_DESCR, ""), OK);
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].method, "POST");
        assert_eq!(reqs[1].path, "/new/v1/images/generations?x=1");
        assert_eq!(reqs[1].body, reqs[0].body);
        assert_eq!(
            reqs[1].header("authorization"),
            Some("Bearer sk-a"),
            "same origin keeps it"
        );
    }
}

#[test]
fn redirect_to_another_origin_drops_authorization() {
    let target = ok_server();
    let location = format!(
        "http://localhost:{}/v1/images/generations",
        target.addr.port()
    );
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(308, "").header("Location", &location))
    });
    assert_eq!(
        get_images(&server.url(), "sk-secret", "", SEED_DESCR, ""),
        OK
    );
    let req = one_request(&target);
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.method, "POST");
}

#[test]
fn redirect_303_continues_with_a_get() {
    let server = TestServer::start(|req, _| {
        if req.method == "POST" {
            Action::Reply(Reply::json(303, "").header("Location", "/result/1"))
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    let reqs = server.requests();
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].path.as_str()),
        ("GET", "/result/1")
    );
    assert!(reqs[1].body.is_empty());
}

#[test]
fn contract_d_response_over_limit_is_too_large() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, vec![b' '; 3 << 20])));
    let req = ImageRequest {
        url: &server.url(),
        descr: SEED_DESCR,
        ..Default::default()
    };
    let result = get_images_ex(&req, r#"{"max_response_mb":2}"#);
    assert_eq!(
        error_code(&result).as_deref(),
        Some("too_large"),
        "{result}"
    );
}

#[test]
fn large_b64_json_body_of_48_mib_comes_back_intact() {
    let b64: String = (0..48 * 1024 * 1024)
        .map(|i| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64] as char
        })
        .collect();
    let body = format!(r#"{{"created":1,"data":[{{"b64_json":"{b64}"}}]}}"#);
    let sent = body.clone();
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, sent.clone())));
    let result = get_images(&server.url(), "", "gpt-image-1", SEED_DESCR, "");
    assert_eq!(result.len(), body.len());
    assert!(result == body, "the 48 MiB body differs");
}

#[test]
fn gzip_encoded_answer_is_decoded() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(200, OK).gzipped()));
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
}

#[test]
fn broken_gzip_is_an_io_error() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(200, "this is not gzip").header("Content-Encoding", "gzip"))
    });
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
}

#[test]
fn lying_content_length_is_an_io_error_not_a_partial_result() {
    let server = TestServer::start(|_, _| {
        Action::Raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"created\":1}".to_vec())
    });
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
    assert_eq!(
        server.requests().len(),
        1,
        "a dropped answer is not retried"
    );
}

#[test]
fn garbage_instead_of_http_is_an_io_error() {
    let server = TestServer::start(|_, _| Action::Raw(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()));
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
}

// ---- retries ----

#[test]
fn retry_429_with_retry_after_then_200_succeeds_after_the_wait() {
    let server = TestServer::start(|_, i| {
        if i == 0 {
            Action::Reply(
                Reply::json(429, r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
                    .header("Retry-After", "1"),
            )
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    let start = Instant::now();
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn retry_500_twice_then_200_succeeds() {
    let server = TestServer::start(|_, i| {
        if i < 2 {
            Action::Reply(Reply::json(
                500,
                r#"{"error":{"message":"oops","type":"server_error","param":null,"code":null}}"#,
            ))
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "the same body each time"
    );
}

#[test]
fn after_two_retries_the_last_error_json_is_returned() {
    let err = r#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#;
    let server = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(503, err).header("retry-after-ms", "10"))
    });
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), err);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn x_should_retry_false_stops_retries_and_true_forces_them() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(503, "{}").header("x-should-retry", "false"))
    });
    get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(server.requests().len(), 1);

    let server = TestServer::start(|_, i| {
        if i == 0 {
            Action::Reply(
                Reply::json(400, "{}")
                    .header("x-should-retry", "true")
                    .header("retry-after-ms", "1"),
            )
        } else {
            Action::Reply(Reply::json(200, OK))
        }
    });
    assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn client_errors_are_not_retried() {
    for status in [400u16, 401, 403, 404, 422] {
        let server = TestServer::start(move |_, _| Action::Reply(Reply::json(status, "{}")));
        get_images(&server.url(), "", "", SEED_DESCR, "");
        assert_eq!(server.requests().len(), 1, "status {status}");
    }
}

#[test]
fn connection_dropped_after_the_request_was_sent_is_not_retried() {
    let server = TestServer::start(|_, _| Action::Drop);
    let result = get_images(&server.url(), "", "", SEED_DESCR, "");
    assert_eq!(error_code(&result).as_deref(), Some("io"), "{result}");
    assert_eq!(
        server.requests().len(),
        1,
        "the server may be generating (and billing)"
    );
}

#[test]
fn retries_zero_disables_retries() {
    let server = TestServer::start(|_, _| Action::Reply(Reply::json(500, "{}")));
    let req = ImageRequest {
        url: &server.url(),
        descr: SEED_DESCR,
        ..Default::default()
    };
    get_images_ex(&req, "{'retries':0}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn connect_failures_are_retried() {
    // Reserve a port, answer nothing at first; start listening while the client backs off.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/");
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        TestServer::start_on(&addr.to_string(), |_, _| {
            Action::Reply(Reply::json(200, OK))
        })
    });
    let result = get_images(&url, "", "", SEED_DESCR, "");
    let server = starter.join().unwrap();
    assert_eq!(result, OK);
    assert_eq!(server.requests().len(), 1);
}

// ---- keep-alive and threads ----

#[test]
fn connections_are_reused_across_calls() {
    let server = ok_server();
    for _ in 0..10 {
        assert_eq!(get_images(&server.url(), "", "", SEED_DESCR, ""), OK);
    }
    assert_eq!(server.requests().len(), 10);
    assert_eq!(
        server.connections(),
        1,
        "keep-alive: one connection for ten sequential calls"
    );
}

#[test]
fn sixteen_threads_twenty_calls_each_all_correct() {
    let server = TestServer::start(|req, _| {
        // Echo the prompt so each result proves it answers its own request.
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let answer =
            serde_json::json!({"created": 1, "data": [{"revised_prompt": body["prompt"]}]});
        Action::Reply(Reply::json(200, answer.to_string()))
    });
    let url = server.url();
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for c in 0..20 {
                    let prompt = format!("thread {t} call {c}");
                    let descr = serde_json::json!({"prompt": prompt}).to_string();
                    let result = get_images(&url, "sk-t", "m", &descr, "");
                    let v = parse(&result);
                    assert_eq!(v["data"][0]["revised_prompt"], prompt.as_str(), "{result}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a calling thread failed");
    }
    assert_eq!(server.requests().len(), 320);
    assert!(
        server.connections() <= 16 * 2,
        "connections were pooled: {}",
        server.connections()
    );
}

// ---- the token never leaks ----

#[test]
fn token_appears_in_no_result() {
    let token = "sk-proj-VERYSECRET-0123456789";
    let server =
        TestServer::start(|_, _| Action::Reply(Reply::with_type(500, "text/plain", "boom")));
    let results = [
        get_images(&server.url(), token, "", SEED_DESCR, ""),
        get_images(&server.url(), token, "", "{bad", ""),
        get_images(&server.url(), token, "", SEED_DESCR, r#"{"X":"a\nb"}"#),
        get_images("http://no-such-host.invalid/", token, "", SEED_DESCR, ""),
        get_images("nope", token, "", SEED_DESCR, ""),
    ];
    for r in &results {
        assert!(!r.contains("VERYSECRET"), "{r}");
    }
}

#[test]
fn image_description_structure_leaves_out_empty_fields_and_merges_last() {
    assert_eq!(
        opi_openai::image_description_structure("Yellow alpaca", 1, "", "1024x1024", ""),
        r#"{"prompt":"Yellow alpaca","n":1,"size":"1024x1024"}"#
    );
    assert_eq!(
        opi_openai::image_description_structure("", 0, "", "", ""),
        "{}"
    );
    assert_eq!(
        opi_openai::image_description_structure(
            "p",
            2,
            "transparent",
            "",
            "{'n':3,'quality':'high'}"
        ),
        r#"{"prompt":"p","n":3,"background":"transparent","quality":"high"}"#
    );
    let bad = opi_openai::image_description_structure("p", 1, "", "", "[1]");
    assert_eq!(parse(&bad)["error"]["param"], "additional");
}
