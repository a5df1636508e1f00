//! The `oint` binary, spawned as users run it, against the local test server.

mod support;

use base64::Engine;
use std::path::PathBuf;
use std::process::{Command, Output};
use support::server::images_handler;
use support::{Action, Recorded, Reply, TestServer};

/// The token used wherever a test checks that it never shows.
const TOKEN: &str = "sk-test-SECRET-123";

/// The documented example answer (OPI's docs), compact as a server sends it.
const SERVER_JSON: &str = r#"{"created":1750098846,"data":[{"revised_prompt":"A yellow alpaca","url":"https://example.invalid/img.png?sig=1"}]}"#;

/// The same answer as oint prints it.
const SERVER_JSON_PRETTY: &str = r#"{
  "created": 1750098846,
  "data": [
    {
      "revised_prompt": "A yellow alpaca",
      "url": "https://example.invalid/img.png?sig=1"
    }
  ]
}
"#;

/// `oint` with `args`, OPENAI_TOKEN removed from its environment.
fn oint(args: &[&str]) -> Output {
    oint_cmd(args).output().expect("oint runs")
}

fn oint_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oint"));
    cmd.args(args).env_remove("OPENAI_TOKEN");
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("oint exited normally")
}

/// A server answering every request with [`SERVER_JSON`].
fn fixed_server() -> TestServer {
    TestServer::start(|_, _| Action::Reply(Reply::json(200, SERVER_JSON)))
}

/// A fresh scratch directory for one test, removed by the caller's guard.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("oint-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The body of the one request `server` received.
fn body_of(server: &TestServer) -> serde_json::Value {
    let requests: Vec<Recorded> = server.requests();
    assert_eq!(requests.len(), 1, "one request expected");
    support::parse(&requests[0].body_text())
}

#[test]
fn the_documented_command_line_works_word_for_word() {
    let server = fixed_server();
    let url = format!("{}api/v2/openai/", server.url());
    let out = oint(&[
        "openai",
        "GetImages",
        "--url",
        &url,
        "--token",
        "***",
        "--model",
        "dall-e-3",
        "--descr",
        "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), SERVER_JSON_PRETTY);
    assert_eq!(stderr(&out), "");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/api/v2/openai/v1/images/generations");
    assert_eq!(requests[0].header("authorization"), Some("Bearer ***"));
    assert_eq!(
        requests[0].body_text(),
        r#"{"model":"dall-e-3","prompt":"Yellow alpaca","n":1,"size":"1024x1024"}"#
    );
}

#[test]
fn short_options_work_as_in_opi() {
    let server = TestServer::start(images_handler());
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-t",
        TOKEN,
        "-m",
        "dall-e-3",
        "-d",
        "{'prompt':'p','n':2}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let result = support::parse(&stdout(&out));
    assert_eq!(result["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body_of(&server)["model"], "dall-e-3");
}

#[test]
fn descr_is_read_from_a_json_file() {
    let scratch = Scratch::new("descr-file");
    let file = scratch.path("request.json");
    std::fs::write(&file, r#"{"prompt":"Жёлтая альпака","n":1,"quality":"hd"}"#).unwrap();
    let server = TestServer::start(images_handler());
    let out = oint(&[
        "openai",
        "GetImages",
        "--url",
        &server.url(),
        "--descr",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let body = body_of(&server);
    assert_eq!(body["prompt"], "Жёлтая альпака");
    assert_eq!(body["quality"], "hd");
    assert_eq!(body.get("model"), None, "no --model, no model");
}

#[test]
fn headers_are_merged_over_the_defaults_and_authorization_stays() {
    let server = fixed_server();
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-t",
        TOKEN,
        "-d",
        "{'prompt':'p'}",
        "-h",
        "{'X-Trace':'abc','Accept':'application/json','Authorization':'Bearer other'}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let requests = server.requests();
    let req = &requests[0];
    assert_eq!(req.header("x-trace"), Some("abc"));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!(req.header_count("accept"), 1);
    assert_eq!(
        req.header("accept-encoding"),
        Some("gzip"),
        "defaults not overridden stay"
    );
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[test]
fn an_api_error_is_printed_with_exit_0() {
    let answer = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(401, answer)));
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-t",
        "sk-wrong",
        "-d",
        "{'prompt':'p'}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\n  \"error\": {\n    \"message\": \"Incorrect API key provided\",\n    \"type\": \"invalid_request_error\",\n    \"param\": null,\n    \"code\": \"invalid_api_key\"\n  }\n}\n"
    );
}

#[test]
fn a_transport_failure_is_printed_as_a_client_error_with_exit_0() {
    let server = TestServer::start(|_, _| Action::Drop);
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--options-json",
        "{'retries':0}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let result = support::parse(&stdout(&out));
    assert_eq!(result["error"]["type"], "opi_client_error");
    assert_eq!(result["error"]["code"], "io");
}

#[test]
fn non_ascii_is_printed_as_utf8() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(
            200,
            r#"{"data":[{"revised_prompt":"\u0416\u0451\u043b\u0442\u0430\u044f"}]}"#,
        ))
    });
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("\"revised_prompt\": \"Жёлтая\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_library_exits_1() {
    let out = oint(&["anthropic", "GetImages", "--url", "http://127.0.0.1:9/"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("Incorrect command!") && stderr(&out).contains("anthropic"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_method_exits_2() {
    let out = oint(&["openai", "GetPictures", "--url", "http://127.0.0.1:9/"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("Incorrect method!") && stderr(&out).contains("GetPictures"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_url_exits_3_naming_it() {
    let out = oint(&[
        "openai",
        "GetImages",
        "--token",
        TOKEN,
        "--descr",
        "{'prompt':'p'}",
    ]);
    assert_eq!(code(&out), 3);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("SECRET"), "{}", stderr(&out));
}

#[test]
fn an_invalid_descr_exits_3_naming_it_and_sends_nothing() {
    let server = fixed_server();
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'",
    ]);
    assert_eq!(code(&out), 3);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("--descr"), "{}", stderr(&out));
    assert!(server.requests().is_empty());
}

#[test]
fn invalid_headers_exit_3_naming_them() {
    let server = fixed_server();
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "-h",
        "{'Bad Name':'x'}",
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--headers"), "{}", stderr(&out));
    assert!(server.requests().is_empty());
}

#[test]
fn out_writes_what_stdout_would_show_and_says_where() {
    let server = fixed_server();
    let scratch = Scratch::new("out");
    let file = scratch.path("result.json");
    let args = [
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
    ];
    let printed = oint(&args);
    assert_eq!(code(&printed), 0);

    let mut with_out = args.to_vec();
    with_out.extend(["--out", file.to_str().unwrap()]);
    let out = oint(&with_out);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, stdout(&printed));
    assert_eq!(written, SERVER_JSON_PRETTY);
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(&format!("{} bytes", written.len())), "{line}");
    assert!(line.contains(file.to_str().unwrap()), "{line}");
}

#[test]
fn out_in_a_missing_directory_exits_3_naming_it() {
    let server = fixed_server();
    let scratch = Scratch::new("out-missing");
    let file = scratch.path("no/such/dir/result.json");
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--out"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

/// Every form of [`TOKEN`] a leak could take.
fn token_forms() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        TOKEN.to_string(),
        "SECRET".to_string(),
        b64.encode(TOKEN),
        b64.encode(format!("Bearer {TOKEN}")),
        b64.encode(format!(":{TOKEN}")),
        TOKEN.chars().rev().collect(),
    ]
}

fn assert_no_token(out: &Output) {
    let text = format!("{}\n{}", stdout(out), stderr(out));
    for form in token_forms() {
        assert!(!text.contains(&form), "{form:?} leaked in:\n{text}");
    }
}

#[test]
fn debug_shows_the_request_and_attempts_without_the_token() {
    let server = TestServer::start(images_handler());
    let long_prompt = "alpaca ".repeat(100);
    let descr = format!(r#"{{"prompt":"{long_prompt}","n":1}}"#);
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-t",
        TOKEN,
        "-m",
        "dall-e-3",
        "-d",
        &descr,
        "--debug",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_no_token(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("POST {}v1/images/generations", server.url())),
        "{err}"
    );
    assert!(err.contains("Authorization: Bearer ***"), "{err}");
    assert!(err.contains("HTTP 200"), "{err}");
    assert!(err.contains("x-request-id req_local_0"), "{err}");
    assert!(
        err.contains("(700 characters)"),
        "the long prompt is shortened: {err}"
    );
    assert!(!err.contains(&long_prompt), "{err}");
    // stdout is the result alone, in full.
    assert_eq!(
        support::parse(&stdout(&out))["data"][0]["revised_prompt"],
        long_prompt
    );
}

#[test]
fn debug_hides_the_token_from_the_environment_and_from_other_headers() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(503, r#"{"error":{"message":"busy"}}"#))
    });
    let headers = format!("{{'api-key':'{TOKEN}'}}");
    let url = format!("{}?key={TOKEN}", server.url().trim_end_matches('/'));
    let out = oint_cmd(&[
        "openai",
        "GetImages",
        "-u",
        &url,
        "-d",
        "{'prompt':'p'}",
        "-h",
        &headers,
        "--debug",
        "--options-json",
        "{'retries':1}",
    ])
    .env("OPENAI_TOKEN", TOKEN)
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_no_token(&out);
    let err = stderr(&out);
    assert!(
        err.contains("attempt 1: HTTP 503") && err.contains("retrying in"),
        "{err}"
    );
    assert!(err.contains("attempt 2: HTTP 503"), "{err}");
    assert!(err.contains("from OPENAI_TOKEN"), "{err}");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn the_token_comes_from_openai_token_when_not_given() {
    let server = fixed_server();
    let out = oint_cmd(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
    ])
    .env("OPENAI_TOKEN", "sk-from-env")
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer sk-from-env")
    );
}

#[test]
fn token_option_wins_over_openai_token() {
    let server = fixed_server();
    let out = oint_cmd(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--token",
        "sk-from-option",
    ])
    .env("OPENAI_TOKEN", "sk-from-env")
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer sk-from-option")
    );
}

#[test]
fn no_token_sends_no_authorization() {
    let server = fixed_server();
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
    ]);
    assert_eq!(code(&out), 0);
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[test]
fn description_structure_leaves_empty_fields_out() {
    let out = oint(&[
        "openai",
        "GetImageDescriptionStructure",
        "--prompt",
        "Yellow alpaca",
        "--amount",
        "1",
        "--size",
        "1024x1024",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\n  \"prompt\": \"Yellow alpaca\",\n  \"n\": 1,\n  \"size\": \"1024x1024\"\n}\n"
    );
}

#[test]
fn description_structure_merges_options_last() {
    let out = oint(&[
        "openai",
        "GetImageDescriptionStructure",
        "-p",
        "cat",
        "-a",
        "0",
        "-b",
        "transparent",
        "-o",
        "{'quality':'hd','prompt':'dog'}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\n  \"prompt\": \"dog\",\n  \"background\": \"transparent\",\n  \"quality\": \"hd\"\n}\n"
    );
}

#[test]
fn description_structure_with_invalid_options_exits_3_naming_them() {
    let out = oint(&[
        "openai",
        "GetImageDescriptionStructure",
        "-p",
        "cat",
        "-o",
        "{'quality':",
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--options"), "{}", stderr(&out));
}

#[test]
fn the_structure_feeds_get_images_through_a_file() {
    let scratch = Scratch::new("structure-file");
    let file = scratch.path("descr.json");
    let made = oint(&[
        "openai",
        "GetImageDescriptionStructure",
        "-p",
        "Yellow alpaca",
        "-a",
        "2",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&made), 0, "stderr: {}", stderr(&made));
    let server = TestServer::start(images_handler());
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        body_of(&server),
        serde_json::json!({"prompt": "Yellow alpaca", "n": 2})
    );
}

#[test]
fn options_json_is_applied() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(500, r#"{"error":{"message":"boom"}}"#))
    });
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--options-json",
        "{'retries':0}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(server.requests().len(), 1, "retries 0: one attempt");
    assert_eq!(support::parse(&stdout(&out))["error"]["message"], "boom");
}

#[test]
fn options_json_is_read_from_a_file() {
    let scratch = Scratch::new("options-file");
    let file = scratch.path("options.json");
    std::fs::write(&file, r#"{"retries": 0}"#).unwrap();
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(500, r#"{"error":{"message":"boom"}}"#))
    });
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--options-json",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        server.requests().len(),
        1,
        "retries 0 from the file: one attempt"
    );
}

#[test]
fn timeout_flag_limits_the_call() {
    let server = TestServer::start(|_, _| Action::Hang(std::time::Duration::from_secs(20)));
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        support::error_code(&stdout(&out)).as_deref(),
        Some("timeout")
    );
}

#[test]
fn timeout_flag_wins_over_options_json() {
    let server = TestServer::start(|_, _| Action::Hang(std::time::Duration::from_secs(20)));
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--options-json",
        "{'timeout':3000,'retries':0}",
        "--timeout",
        "0.5",
        "--debug",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        support::error_code(&stdout(&out)).as_deref(),
        Some("timeout")
    );
    assert!(stderr(&out).contains("timeout 0.5 s"), "{}", stderr(&out));
}

#[test]
fn save_dir_flag_writes_the_images_and_the_result_names_the_files() {
    let scratch = Scratch::new("save-dir");
    let dir = scratch.path("images");
    let server = TestServer::start(images_handler());
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p','n':2}",
        "--options-json",
        "{'save_dir':'/nonexistent/overridden'}",
        "--save-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let result = support::parse(&stdout(&out));
    let data = result["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for item in data {
        let file = PathBuf::from(item["file"].as_str().expect("file"));
        assert!(file.starts_with(&dir), "{file:?}");
        assert!(
            std::fs::read(&file).unwrap().starts_with(b"\x89PNG"),
            "{file:?}"
        );
    }
}

#[test]
fn tls_verify_off_is_warned_about_without_debug() {
    let server = fixed_server();
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
        "--options-json",
        "{'tls_verify':false}",
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), SERVER_JSON_PRETTY);
    assert!(
        stderr(&out).contains("warning: TLS certificate verification is OFF"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_timeout_exits_3_naming_it() {
    for value in ["0", "soon"] {
        let out = oint(&[
            "openai",
            "GetImages",
            "-u",
            "http://127.0.0.1:9/",
            "-d",
            "{'prompt':'p'}",
            &format!("--timeout={value}"),
        ]);
        assert_eq!(code(&out), 3, "{value}");
        assert!(
            stderr(&out).contains("--timeout"),
            "{value}: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn invalid_options_json_exits_3_naming_it() {
    for value in ["{'retries':", "{'retries':'many'}", "{'no_such_option':1}"] {
        let out = oint(&[
            "openai",
            "GetImages",
            "-u",
            "http://127.0.0.1:9/",
            "-d",
            "{'prompt':'p'}",
            "--options-json",
            value,
        ]);
        assert_eq!(code(&out), 3, "{value}");
        assert!(
            stderr(&out).contains("--options-json"),
            "{value}: {}",
            stderr(&out)
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = oint(args);
    assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn help_at_every_level_lists_options_examples_and_exit_codes() {
    for args in [
        &["--help"][..],
        &["openai", "--help"],
        &["openai", "GetImages", "--help"],
        &["openai", "GetImageDescriptionStructure", "--help"],
    ] {
        let text = help(args);
        assert!(text.contains("Example"), "{args:?}: {text}");
        assert!(
            text.contains("Exit codes") && text.contains("99"),
            "{args:?}: {text}"
        );
    }
    assert!(help(&["--help"]).contains("openai"));
    let methods = help(&["openai", "--help"]);
    assert!(
        methods.contains("GetImages") && methods.contains("GetImageDescriptionStructure"),
        "{methods}"
    );
    let get_images = help(&["openai", "GetImages", "--help"]);
    for option in [
        "-u, --url",
        "-t, --token",
        "-m, --model",
        "-d, --descr",
        "-h, --headers",
        "--out",
        "--debug",
        "--timeout",
        "--options-json",
        "OPENAI_TOKEN",
        "default: 3600",
    ] {
        assert!(get_images.contains(option), "{option}: {get_images}");
    }
    let structure = help(&["openai", "GetImageDescriptionStructure", "--help"]);
    for option in [
        "-p, --prompt",
        "-a, --amount",
        "-b, --bg",
        "-s, --size",
        "-o, --options",
        "default: 1",
    ] {
        assert!(structure.contains(option), "{option}: {structure}");
    }
}

#[test]
fn help_never_shows_the_token_from_the_environment() {
    let out = oint_cmd(&["openai", "GetImages", "--help"])
        .env("OPENAI_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert_no_token(&out);
}

#[test]
fn no_arguments_print_the_help() {
    let out = oint(&[]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: oint"), "{}", stdout(&out));
    let out = oint(&["openai"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("GetImages"), "{}", stdout(&out));
}

#[test]
fn version_is_the_library_version() {
    let out = oint(&["--version"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).trim(), format!("oint {}", opi_openai::VERSION));
}

#[test]
fn a_misspelt_token_option_does_not_echo_the_token() {
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        "http://127.0.0.1:9/",
        "-d",
        "{}",
        &format!("--tokn={TOKEN}"),
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--tokn"), "{}", stderr(&out));
    assert_no_token(&out);
}

// ---- streaming, progress, batches ----

/// A streaming server: three partial images and the completed event, split across writes.
fn stream_server() -> support::sse::SseServer {
    use support::sse::{awkward_writes, completed_json, event, partial_json, sse_head, Step};
    let image = base64::engine::general_purpose::STANDARD.encode(support::server::png(8, 8));
    support::sse::SseServer::start(move |_| {
        let mut body = String::from(": comment\r\n\r\n");
        for k in 0..3 {
            body.push_str(&event(
                "image_generation.partial_image",
                &partial_json(k, &image),
                "\r\n",
            ));
        }
        body.push_str(&event(
            "image_generation.completed",
            &completed_json(&image),
            "\r\n",
        ));
        let mut steps = vec![Step::Write(sse_head())];
        steps.extend(awkward_writes(body.as_bytes()));
        steps
    })
}

#[test]
fn stream_prints_one_line_per_event_on_stderr_and_the_result_on_stdout() {
    let server = stream_server();
    let dir = Scratch::new("stream");
    let save = dir.path("images");
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-t",
        TOKEN,
        "-m",
        "gpt-image-1.5",
        "-d",
        "{'prompt':'Yellow alpaca','partial_images':3}",
        "--stream",
        "--save-dir",
        save.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (k, line) in lines[..3].iter().enumerate() {
        let prefix = format!("event: image_generation.partial_image index={k} bytes=");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.contains(" file="), "{line}");
    }
    assert!(
        lines[3].starts_with("event: image_generation.completed bytes="),
        "{}",
        lines[3]
    );
    assert!(
        !err.contains('\x1b'),
        "no terminal codes in a pipe: {err:?}"
    );
    assert!(!err.contains(TOKEN));
    let result: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let file = result["data"][0]["file"].as_str().unwrap();
    assert!(lines[3].ends_with(&format!("file={file}")), "{}", lines[3]);
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 4);
    let sent: serde_json::Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(200, SERVER_JSON).delayed(std::time::Duration::from_millis(1500)))
    });
    let out = oint(&[
        "openai",
        "GetImages",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'p'}",
    ]);
    assert_eq!(code(&out), 0);
    assert_eq!(stderr(&out), "", "stderr is a pipe: nothing is drawn");
    assert_eq!(stdout(&out), SERVER_JSON_PRETTY);
}

#[test]
fn a_progress_line_on_a_terminal_for_calls_longer_than_a_second() {
    support::require_tool("script");
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(200, SERVER_JSON).delayed(std::time::Duration::from_millis(2000)))
    });
    let dir = Scratch::new("progress");
    let out_file = dir.path("result.json");
    // script(1) runs the command on a pseudo-terminal; the result goes to a file.
    let command = format!(
        "{} openai GetImages -u {} -d \"{{'prompt':'p'}}\" --out {}",
        env!("CARGO_BIN_EXE_oint"),
        server.url(),
        out_file.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("OPENAI_TOKEN")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("GetImages: 1s elapsed"), "{shown:?}");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(result["created"], 1750098846);
}

#[test]
fn batch_prints_results_in_order() {
    let server = TestServer::start(images_handler());
    let dir = Scratch::new("batch");
    let file = dir.path("prompts.json");
    std::fs::write(
        &file,
        r#"[{"prompt": "a"}, "{'prompt':'b'}", {"prompt": "c"}, 42]"#,
    )
    .unwrap();
    let out = oint(&[
        "openai",
        "GetImagesBatch",
        "-u",
        &server.url(),
        "-m",
        "gpt-image-1-mini",
        "-d",
        file.to_str().unwrap(),
        "--parallel",
        "2",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let result: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let r = result["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    for (i, p) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(r[i]["data"][0]["revised_prompt"], *p);
    }
    assert_eq!(r[3]["error"]["param"], "descrs");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn batch_option_errors_name_the_flag() {
    let server = fixed_server();
    let run = |extra: &[&str]| {
        let mut args = vec!["openai", "GetImagesBatch", "-u", "URL", "-d", "[]"];
        let url = server.url();
        args[3] = &url;
        args.extend_from_slice(extra);
        let out = oint(&args);
        (code(&out), stderr(&out))
    };
    let (code3, err) = run(&["--parallel", "17"]);
    assert_eq!(code3, 3);
    assert!(err.contains("--parallel"), "{err}");
    let (code3, err) = run(&["--stream"]);
    assert_eq!(code3, 3);
    assert!(err.contains("--stream"), "{err}");
    let out = oint(&[
        "openai",
        "GetImagesBatch",
        "-u",
        &server.url(),
        "-d",
        "{'prompt':'x'}",
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--descr"), "{}", stderr(&out));
}
