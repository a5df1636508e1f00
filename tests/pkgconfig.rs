//! The C library as a C user installs it: `cargo cinstall` (cargo-c, configured under
//! `[package.metadata.capi]` in Cargo.toml) into a temporary prefix, then
//! examples/get_images.c compiled and linked with `pkg-config --cflags --libs opi_openai`
//! alone, and run against the local test server.
//!
//! Needs cargo-c (`cargo install cargo-c --version 0.10.24 --locked`), pkg-config and gcc;
//! `scripts/test.sh` installs them; what is missing skips the test, loudly.

mod support;

use std::path::Path;
use std::process::Command;
use support::TestServer;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cargo_c_ready() -> Result<(), String> {
    let out = Command::new(env!("CARGO"))
        .args(["cinstall", "--version"])
        .output();
    if out.is_ok_and(|o| o.status.success()) {
        Ok(())
    } else {
        Err("cargo-c is not installed \
             (cargo install cargo-c --version 0.10.24 --locked; scripts/test.sh does it)"
            .into())
    }
}

#[test]
fn get_images_builds_with_pkg_config_after_cargo_cinstall() {
    or_skip!(cargo_c_ready());
    or_skip!(support::have_tool("pkg-config", "pkg-config"));
    or_skip!(support::have_tool("gcc", "gcc"));
    let base =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pkgconfig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let prefix = base.join("prefix");
    let libdir = prefix.join("lib");
    // Its own target folder: cargo-c builds with its own flags (soname, crate types).
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("cargo-c");
    let mut cinstall = Command::new(env!("CARGO"));
    support::as_from_a_shell(&mut cinstall)
        .args(["cinstall", "--release", "--locked", "--no-default-features"])
        .arg("--prefix")
        .arg(&prefix)
        .arg("--libdir")
        .arg(&libdir)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root());
    let out = cinstall.output().expect("run cargo cinstall");
    assert!(
        out.status.success(),
        "cargo cinstall failed:\n{}",
        text(&out.stderr)
    );
    // The committed header, installed as it is.
    assert_eq!(
        std::fs::read(prefix.join("include/opi_openai.h")).unwrap(),
        std::fs::read(root().join("include/opi_openai.h")).unwrap()
    );
    let pkg_config = |args: &[&str]| {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("opi_openai")
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"))
            .output()
            .expect("run pkg-config");
        assert!(
            out.status.success(),
            "pkg-config {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    assert_eq!(
        pkg_config(&["--modversion"]).trim(),
        env!("CARGO_PKG_VERSION")
    );
    let flags = pkg_config(&["--cflags", "--libs"]);
    assert!(flags.contains("-lopi_openai"), "{flags}");
    let exe = base.join("get_images");
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(root().join("examples/get_images.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run gcc");
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
    let server = TestServer::start(support::server::images_handler());
    let out = Command::new(&exe)
        .args([&server.url(), "dall-e-3", "pkg-config alpaca"])
        .env_remove("OPENAI_TOKEN")
        .output()
        .expect("run get_images");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let v = support::parse(stdout.lines().nth(1).expect("the result line"));
    assert_eq!(v["data"][0]["revised_prompt"], "pkg-config alpaca");
    // The program runs on the installed library, not another one.
    let ldd = Command::new("ldd").arg(&exe).output().expect("run ldd");
    assert!(
        text(&ldd.stdout).contains(libdir.to_str().unwrap()),
        "{}",
        text(&ldd.stdout)
    );
}
