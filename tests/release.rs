//! `scripts/release.sh`, run once into a temporary folder: the add-in zip holds exactly the
//! libraries its MANIFEST.XML names, with OPI's file names; every library in it is what the
//! platform needs (Linux: glibc 2.17 at most, only system libraries; all: the five add-in
//! exports and the C API, undecorated); a C SDK archive per platform built, with header,
//! shared and static library, pkg-config file, README and LICENSE; SHA256SUMS matches; the
//! exit status says whether all four libraries are in the zip. A platform this machine cannot
//! build is reported by the script in one line and skipped here, loudly.
//!
//! Needs what the builds need (see scripts/release.sh), unzip, tar, sha256sum and objdump
//! (binutils, binutils-mingw-w64); `scripts/test.sh` installs them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The four add-in libraries: the zip's name, the manifest's os and arch, the Rust target.
const LIBRARIES: [(&str, &str, &str, &str); 4] = [
    (
        "AddIn_x64_windows.dll",
        "Windows",
        "x86_64",
        "x86_64-pc-windows-gnu",
    ),
    (
        "AddIn_x86_windows.dll",
        "Windows",
        "i386",
        "i686-pc-windows-gnu",
    ),
    (
        "AddIn_x64_linux.so",
        "Linux",
        "x86_64",
        "x86_64-unknown-linux-gnu",
    ),
    (
        "AddIn_x86_linux.so",
        "Linux",
        "i386",
        "i686-unknown-linux-gnu",
    ),
];

struct Release {
    dist: PathBuf,
    stdout: String,
    status: Option<i32>,
    /// The zip's members, extracted.
    unzipped: PathBuf,
    members: Vec<String>,
}

/// Runs scripts/release.sh once per test process (its builds are the ones the windows and
/// glibc tests make, so whichever runs first builds and the other finds them up to date; but
/// x64 Linux's, profile-guided, is built apart, under target/pgo).
fn release() -> &'static Release {
    static RELEASE: OnceLock<Release> = OnceLock::new();
    RELEASE.get_or_init(|| {
        support::require_tool("unzip");
        let base =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("release-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dist = base.join("dist");
        let mut command = Command::new("bash");
        support::as_from_a_shell(&mut command)
            .arg(root().join("scripts/release.sh"))
            .arg("--out")
            .arg(&dist);
        for var in [
            "OPI_ADDIN_X64_LINUX",
            "OPI_ADDIN_X86_LINUX",
            "OPI_ADDIN_X64_WINDOWS",
            "OPI_ADDIN_X86_WINDOWS",
        ] {
            command.env_remove(var);
        }
        let out = command
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run release.sh");
        let stdout = text(&out.stdout);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "release.sh failed ({:?}):\n{stdout}",
            out.status
        );
        let unzipped = base.join("unzipped");
        let unzip = Command::new("unzip")
            .arg("-q")
            .arg(dist.join("OPI_OpenAI.zip"))
            .arg("-d")
            .arg(&unzipped)
            .status()
            .expect("run unzip");
        assert!(unzip.success(), "unzip failed:\n{stdout}");
        let listing = Command::new("unzip")
            .arg("-Z1")
            .arg(dist.join("OPI_OpenAI.zip"))
            .output()
            .expect("run unzip -Z1");
        let members = text(&listing.stdout).lines().map(str::to_string).collect();
        Release {
            dist,
            stdout,
            status: out.status.code(),
            unzipped,
            members,
        }
    })
}

/// The zip's library for `name`, or a loud skip naming the script's reason.
fn zipped(name: &str) -> Result<PathBuf, String> {
    let release = release();
    if release.members.iter().any(|m| m == name) {
        return Ok(release.unzipped.join(name));
    }
    let reason = release
        .stdout
        .lines()
        .find(|l| l.contains(name) && l.contains("not built"))
        .unwrap_or("release.sh did not build it");
    Err(reason.to_string())
}

/// `(os, path, arch)` of each `<component>` of a MANIFEST.XML.
fn components(manifest: &str) -> Vec<(String, String, String)> {
    let attr = |element: &str, name: &str| {
        let start = element
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {element}"))
            + name.len()
            + 2;
        element[start..].split('"').next().unwrap().to_string()
    };
    manifest
        .split("<component ")
        .skip(1)
        .map(|element| {
            assert_eq!(attr(element, "type"), "native", "{element}");
            (
                attr(element, "os"),
                attr(element, "path"),
                attr(element, "arch"),
            )
        })
        .collect()
}

#[test]
fn manifest_names_exactly_the_zipped_libraries() {
    let release = release();
    let mut members = release.members.clone();
    members.sort();
    let manifest = std::fs::read_to_string(release.unzipped.join("MANIFEST.XML")).unwrap();
    assert!(
        manifest.contains(r#"<bundle xmlns="http://v8.1c.ru/8.2/addin/bundle">"#),
        "{manifest}"
    );
    let listed = components(&manifest);
    let mut expected: Vec<String> = listed.iter().map(|(_, path, _)| path.clone()).collect();
    expected.push("MANIFEST.XML".into());
    expected.sort();
    assert_eq!(
        members, expected,
        "zip members vs MANIFEST.XML:\n{manifest}"
    );
    for (os, path, arch) in &listed {
        let known = LIBRARIES
            .iter()
            .find(|(name, ..)| name == path)
            .unwrap_or_else(|| panic!("unknown library {path} in the manifest"));
        assert_eq!((os.as_str(), arch.as_str()), (known.1, known.2), "{path}");
    }
    // Nothing else: no folders, no stray files.
    assert!(members.iter().all(|m| !m.contains('/')), "{members:?}");
}

#[test]
fn exit_status_says_whether_all_four_libraries_are_zipped() {
    let release = release();
    let built = LIBRARIES
        .iter()
        .filter(|(name, ..)| release.members.iter().any(|m| m == name))
        .count();
    assert_eq!(
        release.status,
        Some(if built == 4 { 0 } else { 1 }),
        "{}",
        release.stdout
    );
    // Each missing library is reported in one line.
    for (name, ..) in LIBRARIES {
        if !release.members.iter().any(|m| m == name) {
            let lines = release
                .stdout
                .lines()
                .filter(|l| l.contains(name) && l.contains("not built"))
                .count();
            assert_eq!(
                lines, 1,
                "{name} missing but not reported:\n{}",
                release.stdout
            );
        }
    }
}

fn linux_library_is_fit_for_old_servers(name: &str) {
    let lib = or_skip!(zipped(name));
    support::elf::assert_glibc_2_17(&lib);
    support::elf::assert_system_libraries_and_exports(&lib);
}

#[test]
fn x64_linux_library_needs_glibc_2_17_and_system_libraries_only() {
    linux_library_is_fit_for_old_servers("AddIn_x64_linux.so");
}

#[test]
fn x86_linux_library_needs_glibc_2_17_and_system_libraries_only() {
    linux_library_is_fit_for_old_servers("AddIn_x86_linux.so");
}

/// The `(address, size)` of a section of an ELF file, from `readelf -SW`.
fn section(lib: &Path, name: &str) -> Option<(u64, u64)> {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(lib)
        .output()
        .expect("run readelf");
    text(&out.stdout).lines().find_map(|line| {
        let fields: Vec<&str> = line.split(']').nth(1)?.split_whitespace().collect();
        (fields.first() == Some(&name)).then(|| {
            let hex = |i: usize| u64::from_str_radix(fields[i], 16).unwrap();
            (hex(2), hex(4))
        })
    })
}

/// On x86_64 Linux, AddIn_x64_linux.so is built with the profile of scripts/pgo.sh: the
/// functions the training run kept busy are laid out in their own `.text.hot` section
/// (`opi_free_string`, which every call's result goes through, among them), and the never-run
/// ones in `.text.unlikely` (the 1C add-in's `GetClassObject`: the training calls the C API
/// only). zigbuild keeps no local symbols, so the exports are what can be looked up.
#[test]
fn x64_linux_library_is_profile_guided() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        support::skipped("the PGO profile is made on x86_64 Linux only");
        return;
    }
    let lib = or_skip!(zipped("AddIn_x64_linux.so"));
    support::require_tool("readelf");
    let stdout = &release().stdout;
    assert!(
        stdout.contains("x86_64-unknown-linux-gnu: profile-guided"),
        "release.sh did not build x64 Linux with the profile:\n{stdout}"
    );
    let (hot, hot_size) = section(&lib, ".text.hot").expect("a .text.hot section");
    let (_, text_size) = section(&lib, ".text").expect("a .text section");
    let (cold, cold_size) = section(&lib, ".text.unlikely").expect("a .text.unlikely section");
    assert!(
        hot_size >= 128 * 1024 && hot_size < text_size && hot_size < cold_size,
        "hot code {hot_size} bytes, the rest {text_size}, cold {cold_size}"
    );
    let symbols = Command::new("readelf")
        .arg("-sW")
        .arg("--dyn-syms")
        .arg(&lib)
        .output()
        .expect("run readelf --dyn-syms");
    let symbols = text(&symbols.stdout);
    let address = |name: &str| {
        let line = symbols
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("no {name} export in {}", lib.display()));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let free = address("opi_free_string");
    assert!(
        (hot..hot + hot_size).contains(&free),
        "opi_free_string at {free:#x}, outside .text.hot {hot:#x}+{hot_size:#x}"
    );
    let addin = address("GetClassObject");
    assert!(
        (cold..cold + cold_size).contains(&addin),
        "GetClassObject at {addin:#x}, outside .text.unlikely {cold:#x}+{cold_size:#x}"
    );
}

/// Windows' own DLLs (and the API sets that forward to them): nothing from MinGW.
fn is_system_dll(dll: &str) -> bool {
    let dll = dll.to_ascii_lowercase();
    dll.starts_with("api-ms-win-")
        || [
            "kernel32.dll",
            "ntdll.dll",
            "advapi32.dll",
            "ws2_32.dll",
            "bcrypt.dll",
            "bcryptprimitives.dll",
            "userenv.dll",
            "msvcrt.dll",
            "crypt32.dll",
            "secur32.dll",
            "ole32.dll",
            "oleaut32.dll",
            "shell32.dll",
            "user32.dll",
            "ncrypt.dll",
        ]
        .contains(&dll.as_str())
}

fn windows_library_exports_undecorated(name: &str, mingw: &str) {
    let lib = or_skip!(zipped(name));
    let objdump = format!("{mingw}-objdump");
    or_skip!(support::have_tool(&objdump, "binutils-mingw-w64"));
    let out = Command::new(&objdump)
        .arg("-p")
        .arg(&lib)
        .output()
        .expect("run objdump");
    let dump = text(&out.stdout);
    for export in support::EXPORTS {
        assert!(
            dump.contains(&format!("] {export}\n")),
            "{name}: {export} is not exported undecorated"
        );
    }
    let imports: Vec<&str> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DLL Name: "))
        .collect();
    assert!(!imports.is_empty(), "no imports read: objdump misread");
    for dll in imports {
        assert!(is_system_dll(dll), "{name} needs {dll}, not a Windows DLL");
    }
}

#[test]
fn x64_windows_library_exports_undecorated_and_needs_only_windows_dlls() {
    windows_library_exports_undecorated("AddIn_x64_windows.dll", "x86_64-w64-mingw32");
}

#[test]
fn x86_windows_library_exports_undecorated_and_needs_only_windows_dlls() {
    windows_library_exports_undecorated("AddIn_x86_windows.dll", "i686-w64-mingw32");
}

#[test]
fn every_built_platform_has_a_c_sdk_archive() {
    let release = release();
    let version = env!("CARGO_PKG_VERSION");
    for (name, _, _, triple) in LIBRARIES {
        if !release.members.iter().any(|m| m == name) {
            support::skipped(&format!("no SDK for {triple}: {name} was not built"));
            continue;
        }
        let platform = triple.replace("-pc-", "-").replace("-unknown-", "-");
        let platform = platform.replace("-windows-gnu", "-windows");
        let sdk = format!("opi_openai-{version}-{platform}");
        let windows = triple.contains("windows");
        let archive = release
            .dist
            .join(format!("{sdk}.{}", if windows { "zip" } else { "tar.gz" }));
        assert!(archive.is_file(), "no {}", archive.display());
        let listing = if windows {
            Command::new("unzip").arg("-Z1").arg(&archive).output()
        } else {
            Command::new("tar").arg("-tzf").arg(&archive).output()
        }
        .expect("list the SDK archive");
        let files = text(&listing.stdout);
        let (shared, static_lib) = if windows {
            ("lib/opi_openai.dll", "lib/libopi_openai.a")
        } else {
            ("lib/libopi_openai.so", "lib/libopi_openai.a")
        };
        for file in [
            "include/opi_openai.h",
            shared,
            static_lib,
            "lib/pkgconfig/opi_openai.pc",
            "README.md",
            "LICENSE",
        ] {
            assert!(
                files.lines().any(|l| l == format!("{sdk}/{file}")),
                "{file} missing from {}:\n{files}",
                archive.display()
            );
        }
    }
}

#[test]
fn sha256sums_match_the_files() {
    let release = release();
    or_skip!(support::have_tool("sha256sum", "coreutils"));
    let sums = std::fs::read_to_string(release.dist.join("SHA256SUMS")).unwrap();
    assert!(sums.contains("  OPI_OpenAI.zip\n"), "{sums}");
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&release.dist)
        .output()
        .expect("run sha256sum");
    assert!(check.status.success(), "{}", text(&check.stdout));
    // Every file in dist/ is listed.
    for entry in std::fs::read_dir(&release.dist).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "SHA256SUMS" {
            assert!(
                sums.contains(&format!("  {name}\n")),
                "{name} not in {sums}"
            );
        }
    }
}
