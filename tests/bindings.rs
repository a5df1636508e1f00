//! The bindings examples work as documented: `examples/python/get_images.py` (ctypes) and
//! `examples/node/get_images.mjs` (koffi) load the built library, call
//! `opi_openai_get_images` against a local server and print the server's answer.
//!
//! Python is always run. Node runs when `node` and `npm` are present and koffi installs (`npm
//! install` in a temporary copy of `examples/node`); when it cannot, the test fails under CI
//! (`CI` set, as CI services do: scripts/test.sh installs them there) and elsewhere prints
//! "SKIPPED" with the reason (support::skipped).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Action, Recorded, Reply, TestServer};

/// The server's answer in these tests: an image answer of fixed bytes, so that what the
/// example prints can be compared byte for byte.
fn answer() -> String {
    use base64::Engine;
    let image = base64::engine::general_purpose::STANDARD.encode(support::server::png(8, 8));
    format!(
        r#"{{"created":1750098846,"data":[{{"b64_json":"{image}","revised_prompt":"A yellow alpaca, from the bindings test"}}]}}"#
    )
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn has_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("the example prints UTF-8")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs an example program with the library path and token in the environment.
fn run_example(program: &str, script: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .env("OPI_LIB", support::cdylib())
        .env("OPENAI_TOKEN", "sk-bindings")
        .output()
        .unwrap_or_else(|e| panic!("run {program} {}: {e}", script.display()))
}

fn only_request(server: &TestServer) -> Recorded {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one request expected: {requests:?}");
    requests.into_iter().next().unwrap()
}

fn json_of(req: &Recorded) -> serde_json::Value {
    serde_json::from_slice(&req.body).expect("the request body is JSON")
}

#[test]
fn python_example_prints_the_server_answer() {
    let body = answer();
    let reply = body.clone();
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, reply.clone())));
    let script = root().join("examples/python/get_images.py");
    let out = run_example("python3", &script, &[&server.url()], &root());
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_of(&out), format!("{body}\n"), "{}", describe(&out));

    let req = only_request(&server);
    assert_eq!(req.path, "/v1/images/generations");
    assert_eq!(req.header("authorization"), Some("Bearer sk-bindings"));
    assert_eq!(
        json_of(&req),
        serde_json::json!({"model": "gpt-image-1.5", "prompt": "Yellow alpaca", "n": 1, "size": "1024x1024"})
    );
}

#[test]
fn python_example_passes_model_description_and_headers() {
    let server = TestServer::start(support::server::images_handler());
    let script = root().join("examples/python/get_images.py");
    let args = [
        server.url(),
        "gpt-image-1".to_string(),
        "{'prompt':'A lighthouse','n':2}".to_string(),
        r#"{"X-Client":"python example"}"#.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_example("python3", &script, &args, &root());
    assert!(out.status.success(), "{}", describe(&out));
    let printed = support::parse(stdout_of(&out).trim_end());
    assert_eq!(
        printed["data"].as_array().map(Vec::len),
        Some(2),
        "{printed}"
    );

    let req = only_request(&server);
    assert_eq!(req.header("x-client"), Some("python example"));
    assert_eq!(
        json_of(&req),
        serde_json::json!({"model": "gpt-image-1", "prompt": "A lighthouse", "n": 2})
    );
}

#[test]
fn python_example_prints_an_api_error_and_exits_1() {
    let error = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(401, error)));
    let script = root().join("examples/python/get_images.py");
    let out = run_example("python3", &script, &[&server.url()], &root());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout_of(&out), format!("{error}\n"));
}

/// Whether this is a CI run (`CI` set, and not to `false` or `0`, as CI services set it).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A temporary copy of examples/node with koffi installed, or why there is none.
fn node_example() -> Result<tempfile::TempDir, String> {
    if !has_tool("node") || !has_tool("npm") {
        return Err("node or npm is not installed".into());
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    for file in ["package.json", "get_images.mjs"] {
        std::fs::copy(
            root().join("examples/node").join(file),
            dir.path().join(file),
        )
        .expect("copy the Node example");
    }
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--fetch-retries=1",
            "--fetch-timeout=30000",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run npm install");
    if !out.status.success() {
        let msg = format!(
            "`npm install` of koffi failed (no npm registry access?): {}",
            describe(&out)
        );
        return Err(msg);
    }
    Ok(dir)
}

#[test]
fn node_example_prints_the_server_answer() {
    let dir = match node_example() {
        Ok(dir) => dir,
        Err(why) => {
            // CI installs node, npm and koffi (scripts/test.sh): there, not running is a failure.
            assert!(!under_ci(), "the Node example cannot run under CI: {why}");
            support::skipped(&why);
            return;
        }
    };
    let body = answer();
    let reply = body.clone();
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, reply.clone())));
    let script = dir.path().join("get_images.mjs");
    let out = run_example("node", &script, &[&server.url()], dir.path());
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_of(&out), format!("{body}\n"), "{}", describe(&out));

    let req = only_request(&server);
    assert_eq!(req.header("authorization"), Some("Bearer sk-bindings"));
    assert_eq!(json_of(&req)["prompt"], "Yellow alpaca");

    // An API error is printed as is and the exit status is 1.
    let error = r#"{"error":{"message":"Unknown parameter: 'colour'.","type":"invalid_request_error","param":"colour","code":"unknown_parameter"}}"#;
    let failing = TestServer::start(move |_, _| Action::Reply(Reply::json(400, error)));
    let out = run_example(
        "node",
        &script,
        &[&failing.url(), "dall-e-3", "{'prompt':'x'}"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout_of(&out), format!("{error}\n"));
}
