//! The 1C Native API add-in, driven by a host of our own in C++ (tests/addin_host/host.cpp)
//! the way 1C:Enterprise and OneScript drive it, against the local test server; again under
//! valgrind; and the packaging script's zip.
//!
//! Needs g++, valgrind and python3 or zip (CI installs them); a missing tool fails the test
//! with the command to install it.

mod support;

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::addin::{host_server as server, run_tool};
use support::TestServer;

/// The token the host passes (see host.cpp); it must reach the server and nothing else.
const TOKEN: &str = "sk-addin-secret-7f3a9";

/// The host's eight scenarios: two initialisation orders by four teardowns.
const SCENARIOS: [&str; 8] = [
    "1c-destroy",
    "1c-delete",
    "1c-delete-via-ilanguageextender",
    "1c-delete-via-userlanguage",
    "onescript-destroy",
    "onescript-delete",
    "onescript-delete-via-ilanguageextender",
    "onescript-delete-via-userlanguage",
];

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("addin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the host on the library of this test run (optionally under a wrapper such as
/// valgrind); returns its output and the directory it wrote each scenario's results to.
fn run_host(server: &TestServer, wrapper: &[&str], name: &str) -> (Output, PathBuf) {
    let out_dir = scratch(name);
    let output = support::addin::run_host(&library(), server, &out_dir, wrapper);
    (output, out_dir)
}

fn library() -> PathBuf {
    support::cdylib()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_result(dir: &Path, scenario: &str, name: &str) -> serde_json::Value {
    let path = dir.join(format!("{scenario}-{name}.json"));
    let content =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        !content.contains(TOKEN),
        "{} contains the token",
        path.display()
    );
    support::parse(&content)
}

#[test]
fn host_drives_every_entry_in_both_host_orders_and_teardowns() {
    let server = server();
    let (output, dir) = run_host(&server, &[], "plain");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "the host reported failures:\n{}\n{}",
        stdout
            .lines()
            .filter(|l| !l.starts_with("ok"))
            .collect::<Vec<_>>()
            .join("\n"),
        text(&output.stderr)
    );
    assert!(stdout.contains("PASSED: 0 failed check(s)"), "{stdout}");
    for scenario in SCENARIOS {
        assert!(
            stdout.contains(&format!(
                "ok - [{scenario}] every host allocation was freed"
            )),
            "{scenario} did not finish"
        );
    }
    assert!(
        !stdout.contains(TOKEN) && !text(&output.stderr).contains(TOKEN),
        "the token was printed"
    );

    for scenario in SCENARIOS {
        let images = read_result(&dir, scenario, "get_images");
        let b64 = images["data"][0]["b64_json"].as_str().expect("b64_json");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{scenario}: the image is a PNG"
        );
        assert_eq!(images["data"][0]["revised_prompt"], "Yellow alpaca");

        let bad = read_result(&dir, scenario, "bad_description");
        assert_eq!(bad["error"]["type"], "opi_client_error");
        assert_eq!(bad["error"]["param"], "descr");

        let too_large = read_result(&dir, scenario, "too_large");
        assert_eq!(too_large["error"]["code"], "too_large", "{scenario}");

        let big = read_result(&dir, scenario, "big");
        assert_eq!(
            big["data"][0]["b64_json"].as_str().map(str::len),
            Some(3 << 19)
        );

        let description = read_result(&dir, scenario, "description_ru");
        assert_eq!(description["prompt"], "Жёлтая альпака");

        // A refused argument's value (for OneScript): the C API's invalid_argument object.
        let refusal = read_result(&dir, scenario, "refusal");
        assert_eq!(refusal["error"]["type"], "opi_client_error");
        assert_eq!(refusal["error"]["code"], "invalid_argument");
        assert_eq!(refusal["error"]["param"], "descr");
    }
    for line in stdout.lines().filter(|l| l.starts_with("figure")) {
        println!("{line}");
    }

    // Asynchronous jobs: JobResult is what GetImages gives for the same request (apart from
    // `created`, which the test server counts up per request).
    for scenario in ["1c-destroy", "onescript-delete"] {
        let mut job = read_result(&dir, scenario, "job_result");
        let mut sync = read_result(&dir, scenario, "sync_result");
        assert!(job["data"][0]["b64_json"].is_string(), "{scenario}: {job}");
        job.as_object_mut().unwrap().remove("created");
        sync.as_object_mut().unwrap().remove("created");
        assert_eq!(job, sync, "{scenario}: JobResult equals GetImages");

        let batch = read_result(&dir, scenario, "batch");
        let results = batch["results"].as_array().expect("results");
        assert_eq!(results.len(), 3, "{batch}");
        assert_eq!(results[0]["data"].as_array().map(Vec::len), Some(1));
        assert_eq!(results[1]["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            results[2]["error"]["param"], "descr",
            "one bad item: {batch}"
        );
    }
}

/// A panic inside a method (the debug build's panic probe) is caught at the boundary and
/// reported as an `internal` error: the value and LastResult carry it, AddError says it, and
/// the host process goes on.
#[cfg(debug_assertions)]
#[test]
fn a_panic_in_a_method_is_an_internal_error() {
    let server = server();
    let out_dir = scratch("panic");
    let output = std::process::Command::new(support::addin::host())
        .arg(library())
        .arg(server.url())
        .arg(&out_dir)
        .arg(env!("CARGO_PKG_VERSION"))
        .arg("--panic-probe")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("PASSED: 0 failed check(s)"), "{stdout}");
    let result =
        support::parse(&std::fs::read_to_string(out_dir.join("panic-probe-value.json")).unwrap());
    assert_eq!(result["error"]["code"], "internal", "{result}");
}

#[test]
fn host_requests_reach_the_server_as_getimages_sends_them() {
    let server = server();
    let (output, _) = run_host(&server, &[], "requests");
    assert!(output.status.success(), "{}", text(&output.stdout));
    let requests = server.requests();
    let generations: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/images/generations")
        .collect();
    assert!(!generations.is_empty());
    for req in &generations {
        let body = support::parse(&req.body_text());
        assert_eq!(
            body.as_object().unwrap().keys().next().map(String::as_str),
            Some("model"),
            "model goes first"
        );
        assert_eq!(body["model"], "dall-e-3");
        assert_eq!(body["prompt"], "Yellow alpaca");
        match req.header("X-Scenario") {
            // The call with a left-out (EMPTY) token and headers as JSON.
            Some(scenario) => {
                assert!(SCENARIOS.contains(&scenario), "{scenario}");
                assert_eq!(
                    req.header("Authorization"),
                    None,
                    "an EMPTY token sends no Authorization"
                );
            }
            None => assert_eq!(
                req.header("Authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            ),
        }
    }
    let with_headers = generations
        .iter()
        .filter(|r| r.header("X-Scenario").is_some())
        .count();
    assert_eq!(
        with_headers,
        SCENARIOS.len(),
        "one call with additional headers per scenario"
    );
}

#[test]
fn host_runs_clean_under_valgrind() {
    let server = server();
    let (output, _) = run_host(
        &server,
        &[
            "valgrind",
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--quiet",
        ],
        "valgrind",
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "valgrind or the host failed (exit {:?}):\n{stderr}\n{}",
        output.status.code(),
        stdout
            .lines()
            .filter(|l| !l.starts_with("ok"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("PASSED: 0 failed check(s)"), "{stdout}");
    assert!(!stderr.contains("definitely lost"), "{stderr}");
}

// ---- Packaging ---------------------------------------------------------------------------

/// Runs examples/1c/package.sh without building, on the binaries named in `env`, with an
/// empty target dir so nothing else is picked up. Returns the zip's entries.
fn package(name: &str, env: &[(&str, &Path)]) -> Vec<(String, Vec<u8>)> {
    let dir = scratch(name);
    let zip = dir.join("OPI_OpenAI.zip");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/1c/package.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg("--no-build")
        .arg("--out")
        .arg(&zip)
        .env("CARGO_TARGET_DIR", dir.join("empty-target"));
    for var in [
        "OPI_ADDIN_X64_LINUX",
        "OPI_ADDIN_X86_LINUX",
        "OPI_ADDIN_X64_WINDOWS",
        "OPI_ADDIN_X86_WINDOWS",
    ] {
        command.env_remove(var);
    }
    for (var, path) in env {
        command.env(var, path);
    }
    let output = run_tool(&mut command, "bash", "apt-get install bash python3");
    assert!(
        output.status.success(),
        "package.sh failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    read_zip(&std::fs::read(&zip).unwrap())
}

/// The `<component>` elements of a MANIFEST.XML: (os, path, arch), and checks their type.
fn components(manifest: &str) -> Vec<(String, String, String)> {
    assert!(
        manifest.contains(r#"<bundle xmlns="http://v8.1c.ru/8.2/addin/bundle">"#),
        "{manifest}"
    );
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
            assert_eq!(attr(element, "type"), "native");
            (
                attr(element, "os"),
                attr(element, "path"),
                attr(element, "arch"),
            )
        })
        .collect()
}

#[test]
fn package_zip_holds_the_manifest_and_exactly_the_binaries_it_names() {
    let lib = library();
    let entries = package("zip-linux", &[("OPI_ADDIN_X64_LINUX", &lib)]);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["MANIFEST.XML", "AddIn_x64_linux.so"]);
    let manifest = text(&entries[0].1);
    assert_eq!(
        components(&manifest),
        [("Linux".into(), "AddIn_x64_linux.so".into(), "x86_64".into())]
    );
    assert!(
        entries[1].1 == std::fs::read(&lib).unwrap(),
        "the zipped library is the built one"
    );
}

#[test]
fn package_lists_a_windows_dll_only_when_one_is_given() {
    let dir = scratch("fake-dll");
    let dll = dir.join("opi_openai.dll");
    std::fs::write(&dll, b"MZ stand-in for a Windows build").unwrap();
    let lib = library();
    let entries = package(
        "zip-windows",
        &[
            ("OPI_ADDIN_X64_LINUX", &lib),
            ("OPI_ADDIN_X64_WINDOWS", &dll),
        ],
    );
    let mut names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "AddIn_x64_linux.so",
            "AddIn_x64_windows.dll",
            "MANIFEST.XML"
        ]
    );
    let manifest = entries
        .iter()
        .find(|(n, _)| n == "MANIFEST.XML")
        .map(|(_, b)| text(b))
        .unwrap();
    let mut listed = components(&manifest);
    listed.sort();
    assert_eq!(
        listed,
        [
            ("Linux".into(), "AddIn_x64_linux.so".into(), "x86_64".into()),
            (
                "Windows".into(),
                "AddIn_x64_windows.dll".into(),
                "x86_64".into()
            ),
        ]
    );
}

/// Reads a zip's entries (stored or deflated), from its central directory.
fn read_zip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()) as usize;
    let end = (0..=zip.len() - 22)
        .rev()
        .find(|&at| zip[at..at + 4] == *b"PK\x05\x06")
        .expect("end of central directory");
    let (count, mut at) = (u16_at(end + 10), u32_at(end + 16));
    let mut entries = Vec::new();
    for _ in 0..count {
        assert_eq!(&zip[at..at + 4], b"PK\x01\x02", "central directory entry");
        let (method, compressed, name_len) = (u16_at(at + 10), u32_at(at + 20), u16_at(at + 28));
        let (extra_len, comment_len, local) = (u16_at(at + 30), u16_at(at + 32), u32_at(at + 42));
        let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
        assert_eq!(
            &zip[local..local + 4],
            b"PK\x03\x04",
            "local header of {name}"
        );
        let data_at = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        let raw = &zip[data_at..data_at + compressed];
        let data = match method {
            0 => raw.to_vec(),
            8 => {
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            other => panic!("{name}: compression method {other}"),
        };
        entries.push((name, data));
        at += 46 + name_len + extra_len + comment_len;
    }
    entries
}
