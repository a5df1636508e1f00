//! The Linux library for old glibc: built with cargo-zigbuild for
//! x86_64-unknown-linux-gnu.2.17 (what `examples/1c/package.sh` puts in the zip), it requires
//! no glibc symbol version above 2.17 and no library beyond libc's own family, and it works:
//! the 1C add-in host (tests/addin_host/host.cpp), the C example and an HTTPS call (ring,
//! compiled by zig cc) run against it and the local test servers.
//!
//! Needs cargo-zigbuild and zig (`pip install ziglang`), objdump and readelf (binutils), g++,
//! gcc and unzip; `.ci/run` installs them. A missing tool fails the test with the command to
//! install it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::tls::TlsServer;
use support::{server::images_handler, TestServer};

const TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// cargo-zigbuild's target: the triple with the oldest glibc to link against.
const ZIG_TARGET: &str = "x86_64-unknown-linux-gnu.2.17";
const OLDEST_GLIBC: (u32, u32) = (2, 17);
const INSTALL: &str = "python3 -m pip install --user ziglang==0.15.2 (or into a venv) and \
                       cargo install cargo-zigbuild --version 0.24.1 --locked (.ci/run does both)";

/// What a glibc 2.17 system provides itself: a library beyond these may be missing there.
const SYSTEM_LIBRARIES: [&str; 7] = [
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "libgcc_s.so.1",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("glibc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Fails with the install commands unless cargo-zigbuild and a zig it finds are present. It
/// looks for zig as `python3 -m ziglang` (pip's ziglang), then as `zig`; both can be named by
/// environment variables, which are honoured here too.
fn require_zigbuild() {
    assert!(
        succeeds("cargo-zigbuild", &["--version"]),
        "cargo-zigbuild is required for this test and is not installed: {INSTALL}"
    );
    let python = std::env::var("CARGO_ZIGBUILD_PYTHON_PATH").unwrap_or("python3".into());
    let zig = std::env::var("CARGO_ZIGBUILD_ZIG_PATH").unwrap_or("zig".into());
    assert!(
        succeeds(&python, &["-m", "ziglang", "version"]) || succeeds(&zig, &["version"]),
        "zig is required for this test and is not installed \
         (neither `{python} -m ziglang` nor `{zig}` works): {INSTALL}"
    );
}

/// Runs `cargo zigbuild` with `args` for `--target ZIG_TARGET` in `dir`; returns the path of
/// the cdylib named `crate_name` that cargo reports.
fn zigbuild(dir: &Path, crate_name: &str, args: &[&str]) -> PathBuf {
    require_zigbuild();
    let mut all = vec!["zigbuild", "--release", "--target", ZIG_TARGET];
    all.extend_from_slice(args);
    support::cargo_cdylib(dir, crate_name, &all)
}

/// The library as `package.sh` builds it: release, the library alone, glibc 2.17. Built once.
fn zig_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = zigbuild(root(), "opi_openai", &["--lib", "--no-default-features"]);
        assert!(
            lib.starts_with(Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap())
                && lib.ends_with(format!("{TRIPLE}/release/libopi_openai.so")),
            "unexpected output path {}",
            lib.display()
        );
        lib
    })
}

/// What the dynamic section and the version references of an ELF file say (`objdump -p`):
/// the libraries it needs, and each symbol version it requires, as "GLIBC_2.14".
struct Needs {
    libraries: Vec<String>,
    versions: Vec<String>,
}

fn needs(lib: &Path) -> Needs {
    let out = Command::new("objdump")
        .arg("-p")
        .arg(lib)
        .output()
        .unwrap_or_else(|e| panic!("objdump is required (apt-get install binutils): {e}"));
    assert!(out.status.success(), "objdump -p {}", lib.display());
    let dump = text(&out.stdout);
    let libraries = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|name| name.trim().to_string())
        .collect();
    // "Version References:\n  required from libc.so.6:\n    0x09691a75 0x00 02 GLIBC_2.2.5"
    let versions = dump
        .split("Version References:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| l.trim_start().starts_with("0x"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(str::to_string)
        .collect();
    Needs {
        libraries,
        versions,
    }
}

/// "GLIBC_2.2.5" -> (2, 2); None for anything else (GLIBC_ABI_DT_RELR, GCC_3.0, ...).
fn glibc_version(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.strip_prefix("GLIBC_")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The newest glibc the library requires: the highest GLIBC_x.y it references.
fn newest_glibc(needs: &Needs) -> (u32, u32) {
    needs
        .versions
        .iter()
        .filter_map(|v| glibc_version(v))
        .max()
        .expect("the library requires no GLIBC_ version at all: objdump -p was misread")
}

#[test]
fn version_names_are_read_as_glibc_releases() {
    assert_eq!(glibc_version("GLIBC_2.2.5"), Some((2, 2)));
    assert_eq!(glibc_version("GLIBC_2.17"), Some((2, 17)));
    assert_eq!(glibc_version("GLIBC_2.34"), Some((2, 34)));
    assert!(glibc_version("GLIBC_2.34") > Some(OLDEST_GLIBC));
    assert!(glibc_version("GLIBC_2.3.4") < Some(OLDEST_GLIBC));
    assert_eq!(glibc_version("GLIBC_ABI_DT_RELR"), None);
    assert_eq!(glibc_version("GCC_3.0"), None);
}

#[test]
fn zigbuild_library_requires_nothing_newer_than_glibc_2_17() {
    let needs = needs(zig_library());
    let newest = newest_glibc(&needs);
    assert!(
        newest <= OLDEST_GLIBC,
        "the library requires glibc {}.{}: {:?}",
        newest.0,
        newest.1,
        needs.versions
    );
    for version in &needs.versions {
        // Anything not GLIBC_x.y (GLIBC_ABI_DT_RELR needs 2.36; GLIBCXX_ would need libstdc++).
        assert!(
            glibc_version(version).is_some() || version.starts_with("GCC_"),
            "the library requires {version}, which glibc 2.17 does not provide"
        );
    }
}

#[test]
fn zigbuild_library_needs_only_libraries_every_glibc_system_has() {
    let needs = needs(zig_library());
    assert!(
        needs.libraries.iter().any(|l| l == "libc.so.6"),
        "libc.so.6 is not among the needed libraries: objdump -p was misread: {:?}",
        needs.libraries
    );
    for library in &needs.libraries {
        assert!(
            SYSTEM_LIBRARIES.contains(&library.as_str()),
            "the library needs {library}, which an old 1C server may not have"
        );
    }
    // And it still exports every entry point (a stripped or mislinked build would not).
    let out = Command::new("objdump")
        .arg("-T")
        .arg(zig_library())
        .output()
        .expect("run objdump -T");
    let symbols = text(&out.stdout);
    for name in support::EXPORTS {
        assert!(
            symbols
                .lines()
                .any(|l| l.contains(" .text") && l.ends_with(&format!(" {name}"))),
            "{name} is not exported"
        );
    }
}

// ---- The library at work -------------------------------------------------------------------

fn compile(compiler: &str, flags: &[&str], sources: &[&Path], out: &Path, link: &[&str]) {
    support::require_tool(compiler);
    let output = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .args(sources)
        .arg("-o")
        .arg(out)
        .args(link)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed on {sources:?}:\n{}",
        text(&output.stderr)
    );
}

/// A folder holding the zigbuild library as libopi_openai.so and `program` compiled from C
/// and linked to it (rpath: the folder), so nothing else named libopi_openai.so is loaded.
fn linked_program(name: &str, source: &Path) -> PathBuf {
    let dir = scratch(name);
    std::fs::copy(zig_library(), dir.join("libopi_openai.so")).unwrap();
    let exe = dir.join(name);
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let libdir = format!("-L{}", dir.display());
    compile(
        "gcc",
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"],
        &[source],
        &exe,
        &[&libdir, &rpath, "-lopi_openai"],
    );
    exe
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .env_remove("OPENAI_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

#[test]
fn add_in_host_drives_the_zigbuild_library() {
    let server = support::addin::host_server();
    let results = scratch("host").join("results");
    std::fs::create_dir_all(&results).unwrap();
    let out = support::addin::run_host(zig_library(), &server, &results, &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the host failed with the zigbuild library:\n{}\n{}",
        stdout
            .lines()
            .filter(|l| !l.starts_with("ok"))
            .collect::<Vec<_>>()
            .join("\n"),
        text(&out.stderr)
    );
    assert!(stdout.contains("PASSED: 0 failed check(s)"), "{stdout}");
    let images = support::parse(
        &std::fs::read_to_string(results.join("1c-destroy-get_images.json")).unwrap(),
    );
    assert_eq!(images["data"][0]["revised_prompt"], "Yellow alpaca");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/v1/images/generations"),
        "the host's calls reached the server"
    );
}

#[test]
fn get_images_example_works_against_the_zigbuild_library() {
    let server = TestServer::start(images_handler());
    let exe = linked_program("get_images", &root().join("examples/get_images.c"));
    let out = run(&exe, &[&server.url(), "dall-e-3", "Old glibc alpaca"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        stdout.lines().next(),
        Some(format!("opi_openai {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let v = support::parse(stdout.lines().nth(1).expect("the result line"));
    assert_eq!(v["data"][0]["revised_prompt"], "Old glibc alpaca");
    assert_eq!(server.requests()[0].path, "/v1/images/generations");
}

/// A call over HTTPS: the TLS handshake and record encryption run ring's C and assembly,
/// which cargo-zigbuild compiled with zig cc.
const HTTPS_PROGRAM: &str = r#"#include <stdio.h>
#include <string.h>
#include "opi_openai.h"
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    char *r = opi_openai_get_images_ex(argv[1], "sk-glibc", "dall-e-3",
                                       "{\"prompt\": \"TLS alpaca\"}", NULL, argv[2]);
    puts(r);
    int failed = strstr(r, "\"error\"") != NULL;
    opi_free_string(r);
    return failed;
}
"#;

#[test]
fn https_works_in_the_zigbuild_library() {
    let server = TlsServer::start(images_handler());
    let dir = scratch("https-src");
    let source = dir.join("https.c");
    std::fs::write(&source, HTTPS_PROGRAM).unwrap();
    let ca = server.ca.write_ca(&dir, "ca.pem");
    let exe = linked_program("https", &source);
    let options = serde_json::json!({ "ca_file": ca.to_str().unwrap() }).to_string();
    let out = run(&exe, &[&server.url(), &options]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    let v = support::parse(stdout.trim());
    assert_eq!(v["data"][0]["revised_prompt"], "TLS alpaca");
    assert_eq!(server.handshakes(), 1);
    assert_eq!(
        server.requests()[0].header("Authorization"),
        Some("Bearer sk-glibc")
    );
}

/// A cdylib whose exported function panics three frames down inside `catch_unwind`, built by
/// the same toolchain (cargo-zigbuild, glibc 2.17 target, panic = "unwind"); and a C++ host
/// that calls it, then throws and catches an exception of its own.
const PROBE_MANIFEST: &str = r#"[package]
name = "unwind_probe"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]
path = "lib.rs"

[profile.release]
panic = "unwind"

[workspace]
"#;

const PROBE_LIB: &str = r#"use std::sync::atomic::{AtomicU32, Ordering};

static DROPPED: AtomicU32 = AtomicU32::new(0);

struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

#[inline(never)]
fn down(n: u32) -> u32 {
    let _guard = Guard;
    if n == 0 {
        panic!("a deliberate panic");
    }
    std::hint::black_box(down(n - 1)) + 1
}

/// Frames dropped while unwinding from `depth` levels down, or 0 when nothing was caught.
#[no_mangle]
pub extern "C" fn caught_after(depth: u32) -> u32 {
    std::panic::set_hook(Box::new(|_| {}));
    match std::panic::catch_unwind(|| down(depth)) {
        Ok(_) => 0,
        Err(_) => DROPPED.load(Ordering::SeqCst),
    }
}
"#;

const PROBE_HOST: &str = r#"#include <dlfcn.h>
#include <cstdio>
#include <stdexcept>
int main(int, char **argv) {
    void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!so) { std::printf("dlopen: %s\n", dlerror()); return 2; }
    auto caught_after = reinterpret_cast<unsigned (*)(unsigned)>(dlsym(so, "caught_after"));
    unsigned dropped = caught_after(3);
    int own = 0;
    try { throw std::runtime_error("the host's own"); } catch (const std::exception &) { own = 1; }
    std::printf("dropped=%u own=%d\n", dropped, own);
    return dropped == 4 && own ? 0 : 1;
}
"#;

#[test]
fn panics_unwind_and_are_caught_in_a_zig_linked_cdylib() {
    let dir = scratch("unwind-probe");
    std::fs::write(dir.join("Cargo.toml"), PROBE_MANIFEST).unwrap();
    std::fs::write(dir.join("lib.rs"), PROBE_LIB).unwrap();
    std::fs::write(dir.join("host.cpp"), PROBE_HOST).unwrap();
    let probe = zigbuild(&dir, "unwind_probe", &[]);
    let host = dir.join("host");
    compile(
        "g++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror"],
        &[&dir.join("host.cpp")],
        &host,
        &["-ldl"],
    );
    let out = run(&host, &[probe.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the panic was not caught with every frame dropped: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "dropped=4 own=1\n");
    // The probe is linked as the library is: then it too needs no newer glibc.
    assert!(newest_glibc(&needs(&probe)) <= OLDEST_GLIBC);
}

// ---- Packaging -----------------------------------------------------------------------------

/// Runs examples/1c/package.sh with `args` and `env`, the OPI_ADDIN_* variables otherwise
/// cleared; returns (stdout, stderr, the zip's AddIn_x64_linux.so).
fn package(name: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String, Vec<u8>) {
    support::require_tool("unzip");
    let zip = scratch(name).join("OPI_OpenAI.zip");
    let mut command = Command::new("bash");
    support::as_from_a_shell(&mut command)
        .arg(root().join("examples/1c/package.sh"))
        .args(args)
        .arg("--out")
        .arg(&zip);
    for var in [
        "OPI_ADDIN_X64_LINUX",
        "OPI_ADDIN_X86_LINUX",
        "OPI_ADDIN_X64_WINDOWS",
        "OPI_ADDIN_X86_WINDOWS",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("run package.sh");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "package.sh failed:\n{stdout}{stderr}");
    let so = Command::new("unzip")
        .arg("-p")
        .arg(&zip)
        .arg("AddIn_x64_linux.so")
        .output()
        .expect("run unzip");
    assert!(so.status.success(), "no AddIn_x64_linux.so in the zip");
    (stdout, stderr, so.stdout)
}

#[test]
fn package_script_builds_and_zips_the_glibc_2_17_library() {
    // The library is built first, so the script's own `cargo zigbuild` finds it up to date.
    let lib = std::fs::read(zig_library()).unwrap();
    let (stdout, stderr, zipped) = package("zip-default", &[], &[]);
    assert!(
        stdout.contains("AddIn_x64_linux.so needs glibc 2.17 or newer"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("warning"),
        "no warning for a 2.17 library: {stderr}"
    );
    assert!(
        zipped == lib,
        "the zipped AddIn_x64_linux.so is not the zigbuild library"
    );
}

#[test]
fn package_script_names_the_glibc_a_native_library_needs() {
    // The library cargo test built natively, for this machine's glibc.
    let native = support::cdylib();
    let newest = newest_glibc(&needs(&native));
    let newest = format!("{}.{}", newest.0, newest.1);
    let (stdout, stderr, zipped) = package(
        "zip-native",
        &["--no-build"],
        &[
            ("OPI_ADDIN_X64_LINUX", native.to_str().unwrap()),
            (
                "CARGO_TARGET_DIR",
                scratch("empty-target").to_str().unwrap(),
            ),
        ],
    );
    assert!(zipped == std::fs::read(&native).unwrap());
    if glibc_version(&format!("GLIBC_{newest}")) > Some(OLDEST_GLIBC) {
        assert!(
            stderr.contains(&format!(
                "warning: AddIn_x64_linux.so needs glibc {newest} or newer, not 2.17"
            )),
            "{stderr}"
        );
    } else {
        // A build machine with glibc 2.17 itself: no warning is due.
        assert!(
            stdout.contains(&format!("AddIn_x64_linux.so needs glibc {newest} or newer")),
            "{stdout}"
        );
    }
}
