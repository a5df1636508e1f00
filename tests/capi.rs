//! The C ABI as C programs see it: real programs compiled with gcc -Wall -Wextra -Werror
//! against the committed header, linked to the built library, run against the local test
//! server, and run again under valgrind (0 errors, 0 bytes definitely lost).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Action, Reply, TestServer};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `source` against include/opi_openai.h and the built library.
fn compile(source: &str, name: &str) -> PathBuf {
    support::require_tool("gcc");
    let lib = support::cdylib();
    let out_dir = std::env::temp_dir().join(format!("opi-capi-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let status = Command::new("gcc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-g",
            "-pthread",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(source))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib.parent().unwrap())
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .arg("-lopi_openai")
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed on {source}");
    exe
}

fn run(exe: &Path, args: &[&str], valgrind: bool) -> Output {
    let mut cmd = if valgrind {
        support::require_tool("valgrind");
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--track-origins=yes",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // cargo test's LD_LIBRARY_PATH lists target/debug, whose libopi_openai.so is whatever
    // `cargo build` made last (possibly stale): the rpath to the library under test decides.
    cmd.args(args)
        .env_remove("OPENAI_TOKEN")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run the C program")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn image_server() -> TestServer {
    TestServer::start(support::server::images_handler())
}

#[test]
fn get_images_example_prints_the_servers_json() {
    let server = image_server();
    let exe = compile("examples/get_images.c", "get_images");
    let out = run(
        &exe,
        &[&server.url(), "gpt-image-1-mini", "A yellow alpaca"],
        false,
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let json_line = stdout.lines().nth(1).expect("the result line");
    let v = support::parse(json_line);
    assert_eq!(v["data"][0]["revised_prompt"], "A yellow alpaca");
    assert!(v["data"][0]["b64_json"].as_str().unwrap().len() > 100);
    let req = &server.requests()[0];
    assert_eq!(req.header("x-client"), Some("opi_openai C example"));
    assert_eq!(
        req.body_text(),
        r#"{"model":"gpt-image-1-mini","prompt":"A yellow alpaca","n":1,"size":"1024x1024","quality":"medium"}"#
    );
}

#[test]
fn get_images_example_reports_api_errors_with_exit_1() {
    let server = TestServer::start(|_, _| {
        Action::Reply(Reply::json(
            401,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        ))
    });
    let exe = compile("examples/get_images.c", "get_images_err");
    let out = run(&exe, &[&server.url()], false);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("invalid_api_key"));
}

#[test]
fn get_images_example_under_valgrind_is_clean() {
    let server = image_server();
    let exe = compile("examples/get_images.c", "get_images_vg");
    let out = run(&exe, &[&server.url()], true);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "valgrind reported errors (exit {:?}):\n{stderr}",
        out.status
    );
    assert!(stdout.contains("b64_json"), "{stdout}");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    assert!(
        !stderr.contains("definitely lost: ") || stderr.contains("definitely lost: 0 bytes"),
        "{stderr}"
    );
}

#[test]
fn c_abi_edge_cases_give_error_results_never_crashes() {
    let server = image_server();
    let exe = compile("tests/c/capi_edges.c", "capi_edges");
    let out = run(&exe, &[&server.url()], false);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn c_abi_edge_cases_under_valgrind_are_clean() {
    let server = image_server();
    let exe = compile("tests/c/capi_edges.c", "capi_edges_vg");
    let out = run(&exe, &[&server.url()], true);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// The streaming server for tests/c/stream.c: prompt "slow" gets one partial image and then
/// silence; any other prompt three partial images and the completed event.
fn stream_server() -> support::sse::SseServer {
    use base64::Engine;
    use support::sse::{completed_json, event, partial_json, sse_head, Step};
    let image = base64::engine::general_purpose::STANDARD.encode(support::server::png(8, 8));
    support::sse::SseServer::start(move |req| {
        let mut steps = vec![Step::Write(sse_head())];
        let partials = if req.body_text().contains("slow") {
            1
        } else {
            3
        };
        for k in 0..partials {
            let e = event(
                "image_generation.partial_image",
                &partial_json(k, &image),
                "\r\n",
            );
            steps.push(Step::Write(e.into_bytes()));
        }
        if partials == 1 {
            steps.push(Step::Sleep(std::time::Duration::from_secs(10)));
        } else {
            let e = event(
                "image_generation.completed",
                &completed_json(&image),
                "\r\n",
            );
            steps.push(Step::Write(e.into_bytes()));
        }
        steps
    })
}

#[test]
fn stream_and_batch_from_c() {
    let (stream, batch) = (stream_server(), image_server());
    let exe = compile("tests/c/stream.c", "stream");
    let out = run(&exe, &[&stream.url(), &batch.url()], false);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{stdout}");
}

#[test]
fn stream_and_batch_from_c_under_valgrind_are_clean() {
    let (stream, batch) = (stream_server(), image_server());
    let exe = compile("tests/c/stream.c", "stream_vg");
    let out = run(&exe, &[&stream.url(), &batch.url()], true);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL OK"), "{stdout}");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// A panic inside a C export is caught at the one boundary and reported as an `internal`
/// error result (not `io`), and the process goes on. The library of a debug build panics on
/// purpose when `OPI_OPENAI_PANIC_PROBE` names the point (release builds have no probe).
#[cfg(debug_assertions)]
#[test]
fn a_panic_in_a_c_export_is_an_internal_error_result() {
    let server = image_server();
    let exe = compile("examples/get_images.c", "get_images_panic");
    let out = Command::new(&exe)
        .arg(server.url())
        .env_remove("OPENAI_TOKEN")
        // As `run`: the rpath to the library under test decides, not a stale target/debug one.
        .env_remove("LD_LIBRARY_PATH")
        .env("OPI_OPENAI_PANIC_PROBE", "capi")
        .output()
        .expect("run the C program");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let v = support::parse(stdout.lines().nth(1).expect("the result line"));
    assert_eq!(v["error"]["code"], "internal", "{stdout}");
    assert_eq!(v["error"]["type"], "opi_client_error");
    assert!(
        stderr.contains("panic probe"),
        "the panic hook ran: {stderr}"
    );
    assert!(server.requests().is_empty(), "nothing was sent");
}
