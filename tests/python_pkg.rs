//! The Python package (bindings/python): installed with pip from the repository into a fresh
//! venv (no download: `--no-index --no-build-isolation`, the venv sees this Python's
//! setuptools and pytest), then its pytest tests run against the local test server, with the
//! built library named by OPI_OPENAI_LIB. A second check installs it with the library copied
//! beside the package, and imports it with OPI_OPENAI_LIB unset.
//!
//! Needs python3 with venv, setuptools and pytest (`scripts/test.sh` installs pytest; a
//! different Python can be named by OPI_PYTHON); what is missing skips the test, loudly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Action, Recorded, Reply, TestServer};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    std::env::var("OPI_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run python")
}

/// A venv under the test's scratch folder with the package installed from `source`, or why
/// there can be none here.
fn venv_with_package(name: &str, source: &Path) -> Result<PathBuf, String> {
    let python = python();
    // wheel: setuptools before 70.1 needs it to build the package.
    for module in ["venv", "pytest", "setuptools", "wheel"] {
        let probe = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "{python} cannot import {module} (scripts/test.sh installs pytest, setuptools \
                 and wheel; Debian: python3-venv)"
            ));
        }
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("python-pkg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    let out = run(Command::new(&python)
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&venv));
    if !out.status.success() {
        return Err(format!("python3 -m venv failed: {}", describe(&out)));
    }
    let out = run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(source)
        .env("PIP_NO_CACHE_DIR", "1"));
    assert!(
        out.status.success(),
        "pip install failed: {}",
        describe(&out)
    );
    Ok(venv)
}

/// An image API, and under `/err/` a 401 API error.
fn server() -> TestServer {
    let images = support::server::images_handler();
    TestServer::start(move |req: &Recorded, index| {
        if req.path.starts_with("/err/") {
            return Action::Reply(Reply::json(
                401,
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            ));
        }
        images(req, index)
    })
}

#[test]
fn python_package_passes_its_tests_against_the_local_server() {
    let venv = or_skip!(venv_with_package("env", &root().join("bindings/python")));
    let server = server();
    // The tests run from a copy, so the package imported is the installed one, not the source.
    let tests = venv.join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::copy(
        root().join("bindings/python/tests/test_get_images.py"),
        tests.join("test_get_images.py"),
    )
    .unwrap();
    let out = run(Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .current_dir(&venv)
        .env("OPI_OPENAI_LIB", support::cdylib())
        .env("OPI_TEST_URL", server.url())
        .env("OPI_EXPECTED_VERSION", env!("CARGO_PKG_VERSION")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pytest failed: {}", describe(&out));
    assert!(stdout.contains("7 passed"), "{stdout}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some("Bearer sk-python")),
        "the package's call reached the server"
    );
}

#[test]
fn python_package_finds_a_library_installed_beside_it() {
    // A copy of the package with the library put in it before installing.
    let source = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("python-pkg-src-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&source);
    std::fs::create_dir_all(source.join("opi_openai")).unwrap();
    for file in ["pyproject.toml", "README.md", "opi_openai/__init__.py"] {
        std::fs::copy(root().join("bindings/python").join(file), source.join(file)).unwrap();
    }
    std::fs::copy(
        support::cdylib(),
        source.join("opi_openai/libopi_openai.so"),
    )
    .unwrap();
    let venv = or_skip!(venv_with_package("beside", &source));
    let server = server();
    let script = "import opi_openai, sys\n\
                  r = opi_openai.get_images(sys.argv[1], 't', 'm', {'prompt': 'Beside alpaca'})\n\
                  print(opi_openai.library_path())\n\
                  print(r['data'][0]['revised_prompt'])\n";
    let out = run(Command::new(venv.join("bin/python"))
        .args(["-c", script, &server.url()])
        .current_dir(&venv)
        .env_remove("OPI_OPENAI_LIB"));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let loaded = lines.next().unwrap_or("");
    assert!(
        loaded.starts_with(venv.to_str().unwrap())
            && loaded.ends_with("opi_openai/libopi_openai.so"),
        "loaded {loaded}, not the installed copy"
    );
    assert_eq!(lines.next(), Some("Beside alpaca"));
}
