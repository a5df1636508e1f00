//! Shared test support: the local test server and helpers.
#![allow(dead_code)]

pub mod proxy;
pub mod server;
pub mod socks;
pub mod tls;

#[allow(unused_imports)]
pub use server::{Action, Recorded, Reply, TestServer};

use serde_json::Value;

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
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--lib", "--message-format=json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run cargo build --lib");
        assert!(out.status.success(), "cargo build --lib failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "opi_openai")
            .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(std::path::PathBuf::from))
            .find(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("so" | "dylib" | "dll")
                )
            })
            .expect("cargo reported no cdylib for opi_openai")
    })
    .clone()
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
