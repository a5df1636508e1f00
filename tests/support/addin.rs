//! The C++ add-in host (`tests/addin_host/host.cpp`) as the tests drive it: compiled once per
//! test process, run against a library and a server.
#![allow(dead_code)]

use super::server::{images_handler, Recorded};
use super::{Action, Reply, TestServer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The server the host expects: an image API, plus `/big/`, which answers a JSON body over
/// 1 MiB (to show the Options limits and LastResult carrying a large result), `/slow/`, which
/// answers after 1 s (asynchronous jobs), `/hang/`, which does not answer for 20 s
/// (cancelling, teardown with jobs in flight), `/stream/`, which streams three partial images
/// 100 ms apart and then the completed one (Server-Sent Events), and `/stream-stall/`, which
/// streams one partial image and then nothing for 20 s.
pub fn host_server() -> TestServer {
    use super::sse::{completed_json, event, partial_json, sse_head};
    use base64::Engine;
    let images = images_handler();
    let png = base64::engine::general_purpose::STANDARD.encode(super::server::png(8, 8));
    TestServer::start(move |req: &Recorded, index| {
        let stall = req.path.starts_with("/stream-stall/");
        if req.path.starts_with("/stream/") || stall {
            let pause = std::time::Duration::from_millis(100);
            let mut pieces = vec![(std::time::Duration::ZERO, sse_head())];
            for k in 0..if stall { 1 } else { 3 } {
                let e = event(
                    "image_generation.partial_image",
                    &partial_json(k, &png),
                    "\n",
                );
                pieces.push((pause, e.into_bytes()));
            }
            let last = if stall {
                (std::time::Duration::from_secs(20), Vec::new())
            } else {
                let e = event("image_generation.completed", &completed_json(&png), "\n");
                (pause, e.into_bytes())
            };
            pieces.push(last);
            return Action::Pieces(pieces);
        }
        if req.path.starts_with("/slow/") {
            std::thread::sleep(std::time::Duration::from_secs(1));
            return images(req, index);
        }
        if req.path.starts_with("/hang/") {
            return Action::Hang(std::time::Duration::from_secs(20));
        }
        if req.path.starts_with("/big/") {
            let body = format!(
                r#"{{"created":1750098846,"data":[{{"b64_json":"{}"}}]}}"#,
                "A".repeat(3 << 19)
            );
            return Action::Reply(Reply::json(200, body));
        }
        images(req, index)
    })
}

/// Runs `command`, failing the test with how to install `tool` when it is missing.
pub fn run_tool(command: &mut Command, tool: &str, install: &str) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{tool} is required by the add-in tests and is not installed: {install}")
        }
        Err(e) => panic!("could not run {tool}: {e}"),
    }
}

/// The host, compiled once per test process by g++ with warnings as errors.
pub fn host() -> &'static Path {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    HOST.get_or_init(|| compile_host(&[], "addin_host").expect("g++ failed"))
}

/// The host compiled by `g++ -m32`, for the 32-bit Linux library (once per test process); or
/// why it cannot be built here (no g++-multilib).
pub fn host32() -> Result<&'static Path, String> {
    static HOST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HOST.get_or_init(|| compile_host(&["-m32"], "addin_host32"))
        .as_deref()
        .map_err(Clone::clone)
}

/// Compiles host.cpp with `flags`; a missing g++ fails the test, a failed 32-bit compile is
/// an `Err` (the multilib packages are missing).
fn compile_host(flags: &[&str], name: &str) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/addin_host/host.cpp");
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("addin-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let output = run_tool(
        Command::new("g++")
            .args(flags)
            .args([
                "-std=c++17",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-g",
                "-O1",
                "-o",
            ])
            .arg(&exe)
            .arg(&source)
            .arg("-ldl"),
        "g++",
        "apt-get install g++",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && !flags.is_empty() {
        return Err(format!(
            "g++ {} cannot build the host (Debian: g++-multilib; scripts/test.sh installs it): {}",
            flags.join(" "),
            stderr.lines().next().unwrap_or("")
        ));
    }
    assert!(
        output.status.success(),
        "g++ failed on {}:\n{stderr}",
        source.display()
    );
    Ok(exe)
}

/// Runs the host on `library` against `server`, writing each scenario's results to
/// `out_dir`, optionally under a `wrapper` such as valgrind (which runs 100
/// create/Init/Done/destroy cycles instead of 1000, for time).
pub fn run_host(library: &Path, server: &TestServer, out_dir: &Path, wrapper: &[&str]) -> Output {
    run_host_exe(host(), library, server, out_dir, wrapper)
}

/// [`run_host`] with a given host executable (such as [`host32`]'s).
pub fn run_host_exe(
    host: &Path,
    library: &Path,
    server: &TestServer,
    out_dir: &Path,
    wrapper: &[&str],
) -> Output {
    let (program, mut args): (&str, Vec<String>) = match wrapper.split_first() {
        Some((first, rest)) => (
            first,
            rest.iter()
                .map(|s| s.to_string())
                .chain([host.display().to_string()])
                .collect(),
        ),
        None => (host.to_str().unwrap(), Vec::new()),
    };
    args.extend([
        library.display().to_string(),
        server.url(),
        out_dir.display().to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    ]);
    // Under a wrapper (valgrind) the library stays loaded: its process-wide caches live in
    // statics, which valgrind counts as lost once the library is unmapped (see host.cpp).
    if !wrapper.is_empty() {
        args.push("--keep-loaded".to_string());
        args.extend(["--cycles".to_string(), "100".to_string()]);
    }
    let tool = if wrapper.is_empty() {
        "the add-in host"
    } else {
        program
    };
    run_tool(
        Command::new(program).args(&args),
        tool,
        "apt-get install valgrind",
    )
}
