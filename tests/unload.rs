//! A host that loads, calls and unloads the library 100 times (tests/c/unload.c): the
//! library leaves the process at every dlclose (also after resolving a host name), and under
//! valgrind no byte is definitely lost (the process-wide caches are freed at unload) but
//! ureq's own 10-byte static per load, suppressed by name (tests/c/unload.supp) and counted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Action, Reply, TestServer};

const ROUNDS: &str = "100";

fn compile(name: &str) -> PathBuf {
    support::require_tool("gcc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::temp_dir().join(format!("opi-unload-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let status = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(root.join("tests/c/unload.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed on tests/c/unload.c");
    exe
}

fn server() -> TestServer {
    TestServer::start(|_, _| {
        Action::Reply(Reply::json(
            200,
            r#"{"created":1,"data":[{"url":"https://x/y.png"}]}"#,
        ))
    })
}

fn run(valgrind: bool) -> Output {
    let exe = compile(if valgrind {
        "unload-valgrind"
    } else {
        "unload"
    });
    let server = server();
    let lib = support::cdylib();
    let by_ip = server.url();
    let by_name = format!("http://localhost:{}/", server.addr.port());
    let mut cmd = if valgrind {
        support::require_tool("valgrind");
        let mut c = Command::new("valgrind");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        c.args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            // The library is gone when the leaks are listed: keep its symbols for the
            // suppression and for a readable report.
            "--keep-debuginfo=yes",
        ])
        .arg(format!(
            "--suppressions={}",
            root.join("tests/c/unload.supp").display()
        ))
        .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.arg(&lib)
        .args([&by_ip, &by_name, ROUNDS])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run the unload host")
}

fn check(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the host failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("unloaded {ROUNDS} times")),
        "{stdout}"
    );
    stderr
}

#[test]
fn the_library_leaves_the_process_at_every_dlclose() {
    check(&run(false));
}

#[test]
fn loading_calling_and_unloading_100_times_loses_no_memory_under_valgrind() {
    let stderr = check(&run(true));
    assert!(
        stderr.contains("definitely lost: 0 bytes") || !stderr.contains("definitely lost"),
        "{stderr}"
    );
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    // What the suppression hides is ureq's 10 bytes per load, and nothing more.
    let rounds: u64 = ROUNDS.parse().unwrap();
    let suppressed: u64 = stderr
        .lines()
        .find_map(|l| l.split_once("suppressed: ").map(|(_, v)| v))
        .and_then(|v| v.split(' ').next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap_or(0);
    assert!(
        suppressed <= 10 * rounds,
        "suppressed {suppressed} bytes: {stderr}"
    );
}
