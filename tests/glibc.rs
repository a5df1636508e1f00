//! The Linux libraries for old glibc: built with cargo-zigbuild for
//! x86_64-unknown-linux-gnu.2.17 and i686-unknown-linux-gnu.2.17 (what `scripts/release.sh`
//! puts in the zip), they require no glibc symbol version above 2.17 and no library beyond
//! libc's own family, and they work: the 1C add-in host (tests/addin_host/host.cpp, built by
//! g++, and by g++ -m32 for x86), the C example, the C ABI's edge cases and an HTTPS call
//! (ring, compiled by zig cc) run against them and the local test servers.
//!
//! Needs cargo-zigbuild and zig (`pip install ziglang`), the Rust targets, objdump (binutils),
//! g++ and gcc, and for x86 gcc-multilib and g++-multilib; `scripts/test.sh` installs them.
//! What is missing skips the tests that need it, loudly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::elf::{glibc_version, needs, newest_glibc, OLDEST_GLIBC};
use support::tls::TlsServer;
use support::{server::images_handler, TestServer};

const INSTALL: &str = "python3 -m pip install --user ziglang==0.15.2 (or into a venv) and \
                       cargo install cargo-zigbuild --version 0.24.1 --locked (scripts/test.sh does both)";

/// One Linux architecture: the Rust target, cargo-zigbuild's target (the triple with the
/// oldest glibc to link against), and the flags gcc and g++ need for it.
struct Arch {
    triple: &'static str,
    zig_target: &'static str,
    cflags: &'static [&'static str],
    lib: OnceLock<Result<PathBuf, String>>,
}

static X64: Arch = Arch {
    triple: "x86_64-unknown-linux-gnu",
    zig_target: "x86_64-unknown-linux-gnu.2.17",
    cflags: &[],
    lib: OnceLock::new(),
};

static X86: Arch = Arch {
    triple: "i686-unknown-linux-gnu",
    zig_target: "i686-unknown-linux-gnu.2.17",
    cflags: &["-m32"],
    lib: OnceLock::new(),
};

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

/// `Ok(())` when cargo-zigbuild and a zig it finds are present, else why not. It looks for
/// zig as `python3 -m ziglang` (pip's ziglang), then as `zig`; both can be named by
/// environment variables, which are honoured here too.
fn zigbuild_ready() -> Result<(), String> {
    if !succeeds("cargo-zigbuild", &["--version"]) {
        return Err(format!("cargo-zigbuild is not installed: {INSTALL}"));
    }
    let python = std::env::var("CARGO_ZIGBUILD_PYTHON_PATH").unwrap_or("python3".into());
    let zig = std::env::var("CARGO_ZIGBUILD_ZIG_PATH").unwrap_or("zig".into());
    if succeeds(&python, &["-m", "ziglang", "version"]) || succeeds(&zig, &["version"]) {
        Ok(())
    } else {
        Err(format!(
            "zig is not installed (neither `{python} -m ziglang` nor `{zig}` works): {INSTALL}"
        ))
    }
}

impl Arch {
    /// Runs `cargo zigbuild` with `args` for this architecture in `dir`; returns the path of
    /// the cdylib named `crate_name` that cargo reports, or why it cannot be built here.
    fn zigbuild(&self, dir: &Path, crate_name: &str, args: &[&str]) -> Result<PathBuf, String> {
        zigbuild_ready()?;
        support::have_rust_target(self.triple)?;
        let mut all = vec!["zigbuild", "--release", "--target", self.zig_target];
        all.extend_from_slice(args);
        Ok(support::cargo_cdylib(dir, crate_name, &all))
    }

    /// The library as `scripts/release.sh` builds it: release, the library alone, glibc 2.17.
    /// Built once per test process.
    fn library(&self) -> Result<&Path, String> {
        self.lib
            .get_or_init(|| {
                let lib =
                    self.zigbuild(root(), "opi_openai", &["--lib", "--no-default-features"])?;
                assert!(
                    lib.starts_with(Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap())
                        && lib.ends_with(format!("{}/release/libopi_openai.so", self.triple)),
                    "unexpected output path {}",
                    lib.display()
                );
                Ok(lib)
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// `Ok(())` when gcc can build and link programs for this architecture.
    fn c_ready(&self) -> Result<(), String> {
        support::have_tool("gcc", "gcc")?;
        if self.cflags.is_empty() {
            return Ok(());
        }
        let dir = scratch(&format!("cc-probe-{}", self.triple));
        std::fs::write(dir.join("probe.c"), "int main(void) { return 0; }\n").unwrap();
        let out = Command::new("gcc")
            .args(self.cflags)
            .arg(dir.join("probe.c"))
            .arg("-o")
            .arg(dir.join("probe"))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "gcc {} cannot link (Debian: gcc-multilib; scripts/test.sh installs it)",
                self.cflags.join(" ")
            ))
        }
    }
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
fn x64_library_requires_nothing_newer_than_glibc_2_17() {
    support::elf::assert_glibc_2_17(or_skip!(X64.library()));
}

#[test]
fn x86_library_requires_nothing_newer_than_glibc_2_17() {
    support::elf::assert_glibc_2_17(or_skip!(X86.library()));
}

#[test]
fn x64_library_needs_only_system_libraries_and_exports_every_entry_point() {
    support::elf::assert_system_libraries_and_exports(or_skip!(X64.library()));
}

#[test]
fn x86_library_needs_only_system_libraries_and_exports_every_entry_point() {
    support::elf::assert_system_libraries_and_exports(or_skip!(X86.library()));
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

impl Arch {
    /// A folder holding the zigbuild library as libopi_openai.so and `program` compiled from
    /// C for this architecture and linked to it (rpath: the folder), so nothing else named
    /// libopi_openai.so is loaded. `Err`: why it cannot be built here.
    fn linked_program(&self, name: &str, source: &Path) -> Result<PathBuf, String> {
        let lib = self.library()?;
        self.c_ready()?;
        let dir = scratch(&format!("{name}-{}", self.triple));
        std::fs::copy(lib, dir.join("libopi_openai.so")).unwrap();
        let exe = dir.join(name);
        let rpath = format!("-Wl,-rpath,{}", dir.display());
        let libdir = format!("-L{}", dir.display());
        let mut flags = self.cflags.to_vec();
        flags.extend(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"]);
        compile(
            "gcc",
            &flags,
            &[source],
            &exe,
            &[&libdir, &rpath, "-lopi_openai"],
        );
        Ok(exe)
    }
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .env_remove("OPENAI_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

fn add_in_host_drives_the_library(arch: &Arch, host: &Path) {
    let lib = or_skip!(arch.library());
    let server = support::addin::host_server();
    let results = scratch(&format!("host-{}", arch.triple)).join("results");
    std::fs::create_dir_all(&results).unwrap();
    let out = support::addin::run_host_exe(host, lib, &server, &results, &[]);
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
fn x64_add_in_host_drives_the_library() {
    add_in_host_drives_the_library(&X64, support::addin::host());
}

#[test]
fn x86_add_in_host_built_with_g_plus_plus_m32_drives_the_library() {
    let host = or_skip!(support::addin::host32());
    add_in_host_drives_the_library(&X86, host);
}

fn get_images_example_works(arch: &Arch) {
    let exe = or_skip!(arch.linked_program("get_images", &root().join("examples/get_images.c")));
    let server = TestServer::start(images_handler());
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

#[test]
fn x64_get_images_example_works() {
    get_images_example_works(&X64);
}

#[test]
fn x86_get_images_example_built_with_gcc_m32_works() {
    get_images_example_works(&X86);
}

/// tests/c/capi_edges.c: NULL and invalid arguments, int64_t counts at their limits, freeing,
/// threads; on x86, int64_t arguments travel as two stack words and size_t is 32 bits.
fn c_abi_edge_cases_work(arch: &Arch) {
    let exe = or_skip!(arch.linked_program("capi_edges", &root().join("tests/c/capi_edges.c")));
    let server = TestServer::start(images_handler());
    let out = run(&exe, &[&server.url()]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("ok   threads"), "{stdout}");
}

#[test]
fn x64_c_abi_edge_cases_work() {
    c_abi_edge_cases_work(&X64);
}

#[test]
fn x86_c_abi_edge_cases_built_with_gcc_m32_work() {
    c_abi_edge_cases_work(&X86);
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

fn https_works(arch: &Arch) {
    let dir = scratch(&format!("https-src-{}", arch.triple));
    let source = dir.join("https.c");
    std::fs::write(&source, HTTPS_PROGRAM).unwrap();
    let exe = or_skip!(arch.linked_program("https", &source));
    let server = TlsServer::start(images_handler());
    let ca = server.ca.write_ca(&dir, "ca.pem");
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

#[test]
fn x64_https_works() {
    https_works(&X64);
}

#[test]
fn x86_https_works() {
    https_works(&X86);
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
    let probe = or_skip!(X64.zigbuild(&dir, "unwind_probe", &[]));
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
