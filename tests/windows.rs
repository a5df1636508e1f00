//! The Windows build: the library cross-compiled for x86_64-pc-windows-gnu, C programs
//! compiled against the header with mingw-w64, run under wine against the local test server;
//! and the 1C add-in driven by a C host that lays the interfaces out as MSVC does.
//! Needs `rustup target add x86_64-pc-windows-gnu` and Debian's gcc-mingw-w64-x86-64 and
//! wine64 (`.ci/run` installs them).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::TestServer;

const TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW: &str = "x86_64-w64-mingw32-gcc";
const WINE: &str = "/usr/lib/wine/wine64";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder holding opi_openai.dll, the wine shim and the compiled programs, built once.
fn windows_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        support::require_tool(MINGW);
        assert!(
            Path::new(WINE).is_file(),
            "wine64 is required for this test (Debian: wine64)"
        );
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(TARGET))
            .unwrap_or(false);
        assert!(
            installed,
            "the Rust target is required: rustup target add {TARGET}"
        );
        let dll = support::cargo_cdylib(
            root(),
            "opi_openai",
            &[
                "build",
                "--lib",
                "--release",
                "--no-default-features",
                "--target",
                TARGET,
            ],
        );
        let dir = std::env::temp_dir().join(format!("opi-windows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&dll, dir.join("opi_openai.dll")).unwrap();
        mingw(
            &["-shared", "-O2"],
            "tests/c/wine_bcryptprimitives.c",
            &dir.join("bcryptprimitives.dll"),
            &["-ladvapi32"],
        );
        for (source, exe) in [
            ("examples/get_images.c", "get_images.exe"),
            ("tests/c/capi_edges.c", "capi_edges.exe"),
        ] {
            let link = [
                "-L",
                dir.to_str().unwrap(),
                "-l:opi_openai.dll",
                "-static",
                "-pthread",
            ];
            mingw(
                &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"],
                source,
                &dir.join(exe),
                &link,
            );
        }
        mingw(
            &["-std=c11", "-Wall", "-Wextra", "-Werror"],
            "tests/c/addin_win_host.c",
            &dir.join("addin_win_host.exe"),
            &["-static"],
        );
        dir
    })
}

fn mingw(flags: &[&str], source: &str, out: &Path, link: &[&str]) {
    let status = Command::new(MINGW)
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(source))
        .arg("-o")
        .arg(out)
        .args(link)
        .status()
        .expect("run mingw gcc");
    assert!(status.success(), "{MINGW} failed on {source}");
}

fn wine(exe: &str, args: &[&str]) -> Output {
    // The first run creates the wine prefix; two tests creating it at once break each other.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = windows_dir();
    let prefix = std::env::temp_dir().join(format!("opi-wineprefix-{}", std::process::id()));
    Command::new(WINE)
        .arg(dir.join(exe))
        .args(args)
        .current_dir(dir)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env_remove("OPENAI_TOKEN")
        .output()
        .expect("run wine")
}

#[test]
fn windows_dll_exports_the_c_api_and_the_add_in() {
    let out = Command::new("x86_64-w64-mingw32-objdump")
        .arg("-p")
        .arg(windows_dir().join("opi_openai.dll"))
        .output()
        .expect("run objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in support::EXPORTS {
        assert!(
            text.contains(&format!("] {name}\n")),
            "{name} is not exported"
        );
    }
    assert!(
        !text.contains("libgcc_s") && !text.contains("libwinpthread"),
        "no MinGW runtime DLLs needed"
    );
}

#[test]
fn get_images_example_works_on_windows() {
    let server = TestServer::start(support::server::images_handler());
    let out = wine(
        "get_images.exe",
        &[&server.url(), "dall-e-3", "Windows alpaca"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = support::parse(stdout.lines().nth(1).expect("the result line"));
    assert_eq!(v["data"][0]["revised_prompt"], "Windows alpaca");
    assert_eq!(server.requests()[0].path, "/v1/images/generations");
}

#[test]
fn c_abi_edge_cases_work_on_windows() {
    let server = TestServer::start(support::server::images_handler());
    let out = wine("capi_edges.exe", &[&server.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("ok   threads"), "{stdout}");
}

#[test]
fn add_in_works_in_a_windows_host_with_msvc_vtables() {
    let server = TestServer::start(support::server::images_handler());
    let out = wine("addin_win_host.exe", &["opi_openai.dll", &server.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("0 failures"), "{stdout}");
    assert_eq!(server.requests().len(), 2, "one GetImages per host order");
}
