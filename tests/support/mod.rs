//! Shared test support: the local test server and helpers.
#![allow(dead_code)]

pub mod addin;
pub mod elf;
pub mod proxy;
pub mod server;
pub mod socks;
pub mod sse;
pub mod tls;

#[allow(unused_imports)]
pub use server::{Action, Recorded, Reply, TestServer};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The library's calls as the tests make them: each result is checked to be JSON text (the
/// contract: every result is valid JSON, whatever the server sent) before it is returned.
pub fn get_images(url: &str, token: &str, model: &str, descr: &str, headers: &str) -> String {
    valid(opi_openai::get_images(url, token, model, descr, headers))
}

/// [`opi_openai::get_images_ex`], the result checked to be JSON (see [`get_images`]).
pub fn get_images_ex(req: &opi_openai::ImageRequest, options: &str) -> String {
    valid(opi_openai::get_images_ex(req, options))
}

/// [`opi_openai::get_images_traced`], the result checked to be JSON (see [`get_images`]).
pub fn get_images_traced(
    req: &opi_openai::ImageRequest,
    options: &opi_openai::Options,
    trace: &mut dyn FnMut(&opi_openai::TraceEvent),
) -> String {
    valid(opi_openai::get_images_traced(req, options, trace))
}

/// `result`, after failing the test when it is not JSON text that serde_json parses.
pub fn valid(result: String) -> String {
    if let Err(e) = serde_json::from_str::<Value>(&result) {
        let end = result
            .char_indices()
            .nth(600)
            .map_or(result.len(), |(i, _)| i);
        panic!("a result is not JSON ({e}): {}", &result[..end]);
    }
    result
}

/// Parses a result, failing the test with the text when it is not JSON.
pub fn parse(result: &str) -> Value {
    serde_json::from_str(result).unwrap_or_else(|e| panic!("result is not JSON ({e}): {result}"))
}

/// The `error.code` of a result, if it is an error.
pub fn error_code(result: &str) -> Option<String> {
    parse(result)["error"]["code"].as_str().map(str::to_string)
}

/// The built shared library (`libopi_openai.so` / `.dylib` / `.dll`).
///
/// `cargo test` builds the library with all its crate types into `deps/`, next to the test
/// executable, but does not copy the cdylib up to `target/<profile>/`, which may hold a stale
/// one. So the `deps/` copy is used; when it is missing (another runner), a nested
/// `cargo build --lib` (same profile and target directory) builds it, once per test process.
pub fn cdylib() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let name = format!(
            "{}opi_openai{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        let exe = std::env::current_exe().expect("the test executable's path");
        if let Some(found) = exe
            .parent()
            .map(|deps| deps.join(&name))
            .filter(|p| p.is_file())
        {
            return found;
        }
        let mut args = vec!["build", "--lib"];
        if !cfg!(debug_assertions) {
            args.push("--release");
        }
        cargo_cdylib(Path::new(env!("CARGO_MANIFEST_DIR")), "opi_openai", &args)
    })
    .clone()
}

/// Every entry point each build of the library exports: the C API, then the 1C add-in's.
pub const EXPORTS: [&str; 12] = [
    "opi_openai_get_images",
    "opi_openai_get_images_ex",
    "opi_openai_get_images_stream",
    "opi_openai_get_images_batch",
    "opi_openai_get_image_description_structure",
    "opi_free_string",
    "opi_version",
    "GetClassNames",
    "GetClassObject",
    "DestroyObject",
    "SetPlatformCapabilities",
    "GetAttachType",
];

/// Clears from `command` the variables `cargo test` sets (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`,
/// ...): build scripts such as ring's rerun when they change, so a nested build that saw them
/// would be redone by the next build from a shell, and back.
pub fn as_from_a_shell(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&&*name);
        if set_by_cargo_test {
            command.env_remove(&*name);
        }
    }
    command
}

/// Runs a nested `cargo ARGS` in `dir` (see [`as_from_a_shell`]) and returns the shared
/// library (.so, .dylib or .dll) that cargo reports for the crate `crate_name`; fails the test
/// when the build fails.
pub fn cargo_cdylib(dir: &Path, crate_name: &str, args: &[&str]) -> PathBuf {
    let mut command = Command::new(env!("CARGO"));
    as_from_a_shell(&mut command);
    let out = command
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {} failed in {}",
        args.join(" "),
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == crate_name)
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("so" | "dylib" | "dll")
            )
        })
        .unwrap_or_else(|| {
            panic!(
                "cargo {} reported no cdylib for {crate_name}",
                args.join(" ")
            )
        })
}

/// Fails the test with a clear message when an external tool is missing.
pub fn require_tool(name: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is required for this test (CI installs it: see .ci/run)"
    );
}

/// Reports a test that cannot run on this machine: prints `SKIPPED: <test>: <reason>` on the
/// terminal (past `cargo test`'s output capture, so it shows even when the test passes;
/// `scripts/test.sh` lists these lines at the end), or, with `OPI_NO_SKIP=1`, fails the test.
/// The caller returns right after.
pub fn skipped(reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(
        std::env::var_os("OPI_NO_SKIP").is_none_or(|v| v != "1"),
        "{test} cannot run (OPI_NO_SKIP=1): {reason}"
    );
    let line = format!("SKIPPED: {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `Ok(())` when `name` is on PATH, else why not (with the Debian package to install).
pub fn have_tool(name: &str, package: &str) -> Result<(), String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Ok(())
    } else {
        Err(format!(
            "{name} is not installed (Debian: {package}; scripts/test.sh installs it)"
        ))
    }
}

/// `Ok(())` when the Rust target `triple` is installed, else why not.
pub fn have_rust_target(triple: &str) -> Result<(), String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(triple)
        .is_dir()
    {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {triple} is not installed (rustup target add {triple})"
        ))
    }
}

/// Unwraps a `Result<T, String>` whose error says why the test cannot run here: reports the
/// skip (see [`skipped`]) and returns from the test.
#[macro_export]
macro_rules! or_skip {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(reason) => {
                support::skipped(&reason);
                return;
            }
        }
    };
}
