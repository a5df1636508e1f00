//! The Windows builds: the library cross-compiled for x86_64-pc-windows-gnu and
//! i686-pc-windows-gnu, C programs compiled against the header with mingw-w64, run under wine
//! (64-bit, and 32-bit wine for x86) against the local test server; and the 1C add-in driven
//! by a C host that lays the interfaces out as MSVC does (on x86: `__stdcall` methods with
//! `this` on the stack, a `__thiscall` destructor).
//! Needs the Rust targets, Debian's gcc-mingw-w64-x86-64 / gcc-mingw-w64-i686 and wine64 /
//! wine32:i386 (`scripts/test.sh` installs them); what is missing skips that architecture's
//! tests, loudly.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use support::TestServer;

/// One Windows architecture: its Rust target, mingw-w64 prefix and wine loader.
struct Arch {
    name: &'static str,
    target: &'static str,
    mingw: &'static str,
    wine: &'static str,
    /// The wine package, for the skip message.
    wine_package: &'static str,
    /// WINEARCH for a fresh prefix.
    winearch: &'static str,
    dir: OnceLock<Result<PathBuf, String>>,
}

static X64: Arch = Arch {
    name: "x64",
    target: "x86_64-pc-windows-gnu",
    mingw: "x86_64-w64-mingw32",
    wine: "/usr/lib/wine/wine64",
    wine_package: "wine64",
    winearch: "win64",
    dir: OnceLock::new(),
};

static X86: Arch = Arch {
    name: "x86",
    target: "i686-pc-windows-gnu",
    mingw: "i686-w64-mingw32",
    wine: "/usr/lib/wine/wine",
    wine_package: "wine32:i386 (dpkg --add-architecture i386)",
    winearch: "win32",
    dir: OnceLock::new(),
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Arch {
    fn gcc(&self) -> String {
        format!("{}-gcc", self.mingw)
    }

    /// A folder holding opi_openai.dll, the wine shim and the compiled programs, built once;
    /// or why this architecture cannot be tested here.
    fn dir(&self) -> Result<&Path, String> {
        self.dir
            .get_or_init(|| self.build())
            .as_deref()
            .map_err(Clone::clone)
    }

    fn build(&self) -> Result<PathBuf, String> {
        support::have_tool(
            &self.gcc(),
            &format!(
                "gcc-mingw-w64-{}",
                self.mingw.split('-').next().unwrap().replace('_', "-")
            ),
        )?;
        if !Path::new(self.wine).is_file() {
            return Err(format!(
                "{} is not installed (Debian: {}; scripts/test.sh installs it)",
                self.wine, self.wine_package
            ));
        }
        support::have_rust_target(self.target)?;
        let dll = support::cargo_cdylib(
            root(),
            "opi_openai",
            &[
                "build",
                "--lib",
                "--release",
                "--no-default-features",
                "--target",
                self.target,
            ],
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "windows-{}-{}",
            self.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&dll, dir.join("opi_openai.dll")).unwrap();
        // --kill-at: ProcessPrng undecorated on x86 too (it is __stdcall there).
        self.mingw_cc(
            &["-shared", "-O2", "-Wl,--kill-at"],
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
            self.mingw_cc(
                &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"],
                source,
                &dir.join(exe),
                &link,
            );
        }
        self.mingw_cc(
            &["-std=c11", "-Wall", "-Wextra", "-Werror"],
            "tests/c/addin_win_host.c",
            &dir.join("addin_win_host.exe"),
            &["-static"],
        );
        Ok(dir)
    }

    fn mingw_cc(&self, flags: &[&str], source: &str, out: &Path, link: &[&str]) {
        let output = Command::new(self.gcc())
            .args(flags)
            .arg("-I")
            .arg(root().join("include"))
            .arg(root().join(source))
            .arg("-o")
            .arg(out)
            .args(link)
            .output()
            .expect("run mingw gcc");
        assert!(
            output.status.success(),
            "{} failed on {source}:\n{}",
            self.gcc(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn wine(&self, exe: &str, args: &[&str]) -> Output {
        // The first run creates the wine prefix; two tests creating it at once break each other.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir().unwrap();
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "wineprefix-{}-{}",
            self.name,
            std::process::id()
        ));
        Command::new(self.wine)
            .arg(dir.join(exe))
            .args(args)
            .current_dir(dir)
            .env("WINEPREFIX", prefix)
            .env("WINEARCH", self.winearch)
            .env("WINEDEBUG", "-all")
            .env_remove("OPENAI_TOKEN")
            .output()
            .expect("run wine")
    }
}

/// Builds tests/happy_eyeballs (the probe: a Rust program on the library's Rust API) for
/// `arch` into its folder. A package of its own: no dev-dependencies built for Windows.
fn build_probe(arch: &Arch, dir: &Path) -> PathBuf {
    let package = root().join("tests/happy_eyeballs");
    // The same versions as the library's build (its artifacts are reused).
    std::fs::copy(root().join("Cargo.lock"), package.join("Cargo.lock")).unwrap();
    let status = support::as_from_a_shell(&mut Command::new(env!("CARGO")))
        .args([
            "build",
            "--release",
            "--target",
            arch.target,
            "--manifest-path",
        ])
        .arg(package.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(root().join("target"))
        .current_dir(root())
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the probe for {} failed",
        arch.target
    );
    let exe = dir.join("happy_eyeballs_probe.exe");
    std::fs::copy(
        root()
            .join("target")
            .join(arch.target)
            .join("release/happy_eyeballs_probe.exe"),
        &exe,
    )
    .unwrap();
    exe
}

/// A listener on `addr` whose accept queue is full (backlog 1, never accepted, connections
/// queued until one gets no answer): further connection attempts get no answer at all.
fn silent_listener(addr: SocketAddr) -> (socket2::Socket, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1).unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(_) => break,
        }
    }
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "{addr} still accepts connections");
    (socket, queued)
}

/// The Windows code path of Happy Eyeballs (socket2 + select), under wine: the name resolves
/// to a silent 127.0.0.2 first and the server on 127.0.0.1 second; the call gets through the
/// second address 250 ms later (256 ms measured). Trying addresses one after the other, as the
/// library did on Windows before, gave the silent one half the 30 s: this failed at 15003 ms.
fn happy_eyeballs_races_addresses(arch: &Arch) {
    let dir = or_skip!(arch.dir());
    let probe = build_probe(arch, dir);
    let server = TestServer::start(support::server::images_handler());
    let silent: SocketAddr = format!("127.0.0.2:{}", server.addr.port()).parse().unwrap();
    let _silent = silent_listener(silent);
    let out = arch.wine(
        probe.file_name().unwrap().to_str().unwrap(),
        &[&silent.to_string(), &server.addr.to_string()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let ms: u64 = lines.next().expect("the time line").trim().parse().unwrap();
    let v = support::parse(lines.next().expect("the result line"));
    assert_eq!(
        v["data"][0]["revised_prompt"], "Windows eyeballs",
        "{stdout}"
    );
    // Generous (a loaded machine, wine): far below the 30 s connect timeout.
    assert!(ms < 10_000, "connected after {ms} ms");
    println!("figure: happy eyeballs under wine ({}): {ms} ms", arch.name);
}

fn exports_the_c_api_and_the_add_in(arch: &Arch) {
    let dir = or_skip!(arch.dir());
    let out = Command::new(format!("{}-objdump", arch.mingw))
        .arg("-p")
        .arg(dir.join("opi_openai.dll"))
        .output()
        .expect("run objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    // "[   3] GetClassObject": undecorated (no _name, no name@8).
    for name in support::EXPORTS {
        assert!(
            text.contains(&format!("] {name}\n")),
            "{name} is not exported undecorated:\n{text}"
        );
    }
    assert!(
        !text.contains("libgcc_s") && !text.contains("libwinpthread"),
        "no MinGW runtime DLLs needed:\n{text}"
    );
}

fn get_images_example_works(arch: &Arch) {
    or_skip!(arch.dir());
    let server = TestServer::start(support::server::images_handler());
    let out = arch.wine(
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

fn c_abi_edge_cases_work(arch: &Arch) {
    or_skip!(arch.dir());
    let server = TestServer::start(support::server::images_handler());
    let out = arch.wine("capi_edges.exe", &[&server.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("ok   threads"), "{stdout}");
}

fn add_in_works_with_msvc_vtables(arch: &Arch) {
    or_skip!(arch.dir());
    let server = support::addin::host_server();
    let out = arch.wine("addin_win_host.exe", &["opi_openai.dll", &server.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("0 failures"), "{stdout}");
    assert!(
        stdout.contains("OneScript: host allocations back to zero")
            && stdout.contains("1C: host allocations back to zero"),
        "{stdout}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("figure")) {
        println!("{line}");
    }
    let plain = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/images/generations")
        .count();
    assert_eq!(plain, 2, "one GetImages per host order");
}

#[test]
fn x64_dll_exports_the_c_api_and_the_add_in_undecorated() {
    exports_the_c_api_and_the_add_in(&X64);
}

#[test]
fn x86_dll_exports_the_c_api_and_the_add_in_undecorated() {
    exports_the_c_api_and_the_add_in(&X86);
}

#[test]
fn x64_get_images_example_works() {
    get_images_example_works(&X64);
}

#[test]
fn x86_get_images_example_works() {
    get_images_example_works(&X86);
}

#[test]
fn x64_c_abi_edge_cases_work() {
    c_abi_edge_cases_work(&X64);
}

#[test]
fn x86_c_abi_edge_cases_work() {
    c_abi_edge_cases_work(&X86);
}

#[test]
fn x64_add_in_works_in_a_host_with_msvc_vtables() {
    add_in_works_with_msvc_vtables(&X64);
}

#[test]
fn x86_add_in_works_in_a_host_with_msvc_stdcall_and_thiscall_vtables() {
    add_in_works_with_msvc_vtables(&X86);
}

#[test]
fn x64_happy_eyeballs_gets_past_a_silent_address_in_well_under_the_connect_timeout() {
    happy_eyeballs_races_addresses(&X64);
}
