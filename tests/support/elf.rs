//! What a Linux library asks of the system it loads on (`objdump -p`, `objdump -T`), checked
//! against glibc 2.17, the oldest glibc the released libraries support; shared by the glibc
//! and release tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The oldest glibc the Linux libraries must load on (CentOS 7).
pub const OLDEST_GLIBC: (u32, u32) = (2, 17);

/// What a glibc 2.17 system provides itself: a library beyond these may be missing there.
pub const SYSTEM_LIBRARIES: [&str; 8] = [
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux.so.2",
    "libgcc_s.so.1",
];

/// What the dynamic section and the version references of an ELF file say (`objdump -p`):
/// the libraries it needs, and each symbol version it requires, as "GLIBC_2.14".
pub struct Needs {
    pub libraries: Vec<String>,
    pub versions: Vec<String>,
}

pub fn needs(lib: &Path) -> Needs {
    let out = Command::new("objdump")
        .arg("-p")
        .arg(lib)
        .output()
        .unwrap_or_else(|e| panic!("objdump is required (apt-get install binutils): {e}"));
    assert!(out.status.success(), "objdump -p {}", lib.display());
    let dump = String::from_utf8_lossy(&out.stdout);
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
pub fn glibc_version(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.strip_prefix("GLIBC_")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The newest glibc the library requires: the highest GLIBC_x.y it references.
pub fn newest_glibc(needs: &Needs) -> (u32, u32) {
    needs
        .versions
        .iter()
        .filter_map(|v| glibc_version(v))
        .max()
        .expect("the library requires no GLIBC_ version at all: objdump -p was misread")
}

/// Fails unless `lib` requires no glibc newer than 2.17 and no symbol version glibc 2.17 lacks.
pub fn assert_glibc_2_17(lib: &Path) {
    let needs = needs(lib);
    let newest = newest_glibc(&needs);
    assert!(
        newest <= OLDEST_GLIBC,
        "{} requires glibc {}.{}: {:?}",
        lib.display(),
        newest.0,
        newest.1,
        needs.versions
    );
    for version in &needs.versions {
        // Anything not GLIBC_x.y (GLIBC_ABI_DT_RELR needs 2.36; GLIBCXX_ would need libstdc++).
        assert!(
            glibc_version(version).is_some() || version.starts_with("GCC_"),
            "{} requires {version}, which glibc 2.17 does not provide",
            lib.display()
        );
    }
}

/// Fails unless `lib` needs only libraries every glibc system has and exports every entry
/// point undecorated (a stripped or mislinked build would not).
pub fn assert_system_libraries_and_exports(lib: &Path) {
    let needs = needs(lib);
    assert!(
        needs.libraries.iter().any(|l| l == "libc.so.6"),
        "libc.so.6 is not among the needed libraries: objdump -p was misread: {:?}",
        needs.libraries
    );
    for library in &needs.libraries {
        assert!(
            SYSTEM_LIBRARIES.contains(&library.as_str()),
            "{} needs {library}, which an old 1C server may not have",
            lib.display()
        );
    }
    let out = Command::new("objdump")
        .arg("-T")
        .arg(lib)
        .output()
        .expect("run objdump -T");
    let symbols = String::from_utf8_lossy(&out.stdout);
    for name in super::EXPORTS {
        assert!(
            symbols
                .lines()
                .any(|l| l.contains(" .text") && l.ends_with(&format!(" {name}"))),
            "{name} is not exported by {}",
            lib.display()
        );
    }
}
