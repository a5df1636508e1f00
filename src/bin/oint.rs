//! `oint`: OPI's command line, natively. Accepts OPI's commands as written
//! (`oint openai GetImages --url ... --token ... --model ... --descr ...`) and prints the result
//! JSON, pretty, on stdout. Built on the library's Rust API (not the C ABI).
//!
//! Exit codes are OPI's, plus 3 for options: see [`EXIT_CODES`].
#![forbid(unsafe_code)]
// The doc comments of the options double as their --help text, which is plain text: URLs and
// <placeholders> there are meant as written, not as links or HTML.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

// A binary's root file finds modules beside it (src/bin/), so the paths are spelled out.
#[path = "oint/cli.rs"]
mod cli;
#[path = "oint/debug.rs"]
mod debug;
#[path = "oint/output.rs"]
mod output;
#[path = "oint/progress.rs"]
mod progress;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, GetImagesArgs, Library, Method, StructureArgs};
use opi_openai::{
    get_images_batch, get_images_stream, get_images_traced, image_description_structure,
    ImageRequest, Options, StreamEvent, TraceEvent,
};
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::process::ExitCode;

/// The exit codes, as `--help` and the README list them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0   a result was printed (an API error JSON too, as in OPI), or help
  1   unknown library (Incorrect command!)
  2   unknown method (Incorrect method!)
  3   a missing or invalid option, named on stderr (including a --descr, --headers, --url,
      --token or options value the library refuses, and an --out file that cannot be
      written); nothing is printed on stdout
  99  unexpected error (a bug, or stdout closed)";

/// A way the command ends other than printing a result.
#[derive(Debug)]
enum Failure {
    /// Exit 1: the first word is not a library.
    UnknownLibrary(String),
    /// Exit 2: the second word is not a method of the library.
    UnknownMethod(String),
    /// Exit 3: an option (named) is missing or invalid.
    Option { option: String, message: String },
    /// Exit 3: clap refused the command line; its rendered message (naming the option).
    Usage(String),
    /// Exit 99: anything else.
    Unexpected(String),
}

impl Failure {
    fn option(option: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::Option {
            option: option.into(),
            message: message.into(),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::UnknownLibrary(_) => 1,
            Failure::UnknownMethod(_) => 2,
            Failure::Option { .. } | Failure::Usage(_) => 3,
            Failure::Unexpected(_) => 99,
        }
    }
}

fn main() -> ExitCode {
    // A panic is a bug: say so in one line and exit 99 (OPI's "unexpected error").
    std::panic::set_hook(Box::new(|info| {
        eprintln!("oint: unexpected error (a bug, please report it): {info}");
    }));
    let args: Vec<OsString> = std::env::args_os().collect();
    match std::panic::catch_unwind(|| run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            match &failure {
                Failure::UnknownLibrary(name) => eprintln!(
                    "oint: Incorrect command! Unknown library {name:?}{}; known: openai. See 'oint --help'.",
                    hint(name, &["openai"])
                ),
                Failure::UnknownMethod(name) => eprintln!(
                    "oint: Incorrect method! Unknown method {name:?} of openai{}; known: {}. See 'oint openai --help'.",
                    hint(name, cli::METHODS),
                    cli::METHODS.join(", ")
                ),
                Failure::Option { option, message } => {
                    // "options: " says where the library looked; a flag names it better.
                    let message = match option.as_str() {
                        "--options-json" => message.as_str(),
                        _ => message.strip_prefix("options: ").unwrap_or(message),
                    };
                    eprintln!("oint: {option}: {message}")
                }
                Failure::Usage(text) => eprint!("{text}"),
                Failure::Unexpected(message) => eprintln!("oint: unexpected error: {message}"),
            }
            ExitCode::from(failure.exit_code())
        }
        Err(_) => ExitCode::from(99),
    }
}

/// " (did you mean X?)" when `name` differs from a known name only in case.
fn hint(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

fn run(args: Vec<OsString>) -> Result<(), Failure> {
    let secrets = cli::secrets_in(&args);
    let mut command = Cli::command();
    let matches = match command.try_get_matches_from_mut(&args) {
        Ok(m) => m,
        Err(err) => return clap_failure(err, &secrets),
    };
    let parsed = match Cli::from_arg_matches(&matches) {
        Ok(p) => p,
        Err(err) => return clap_failure(err, &secrets),
    };
    let Some(library) = parsed.library else {
        return print_help(&mut command, &[]);
    };
    let openai = match library {
        Library::Openai(openai) => openai,
        Library::Unknown(words) => return Err(Failure::UnknownLibrary(first_word(&words))),
    };
    let method_matches = matches
        .subcommand_matches("openai")
        .and_then(|m| m.subcommand());
    match openai.method {
        None => print_help(&mut command, &["openai"]),
        Some(Method::Unknown(words)) => Err(Failure::UnknownMethod(first_word(&words))),
        Some(Method::GetImages(args)) => {
            let token_from_env = method_matches
                .and_then(|(_, m)| m.value_source("token"))
                .is_some_and(|s| s == clap::parser::ValueSource::EnvVariable);
            get_images(&args, token_from_env, false)
        }
        Some(Method::GetImagesBatch(args)) => {
            let token_from_env = method_matches
                .and_then(|(_, m)| m.value_source("token"))
                .is_some_and(|s| s == clap::parser::ValueSource::EnvVariable);
            get_images(&args, token_from_env, true)
        }
        Some(Method::GetImageDescriptionStructure(args)) => structure(&args),
    }
}

fn first_word(words: &[OsString]) -> String {
    words
        .first()
        .map(|w| w.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Help and version go to stdout with exit 0; every other parse error is a missing or invalid
/// option (exit 3), shown as clap renders it (it names the option), with any token hidden.
fn clap_failure(err: clap::Error, secrets: &[String]) -> Result<(), Failure> {
    use clap::error::ErrorKind;
    let mut text = err.render().to_string();
    for secret in secrets {
        text = opi_openai::redact(&text, secret);
    }
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => output::print_text(&text),
        _ => Err(Failure::Usage(text)),
    }
}

fn print_help(command: &mut clap::Command, path: &[&str]) -> Result<(), Failure> {
    let mut target = command;
    for name in path {
        target = target
            .find_subcommand_mut(name)
            .ok_or_else(|| Failure::Unexpected(format!("no subcommand {name}")))?;
    }
    let help = target.render_help().to_string();
    output::print_text(&help)
}

/// `oint openai GetImages` (`--stream`: with one line per event on stderr), and
/// `GetImagesBatch` when `batch`.
fn get_images(args: &GetImagesArgs, token_from_env: bool, batch: bool) -> Result<(), Failure> {
    let method = if batch { "GetImagesBatch" } else { "GetImages" };
    if batch && args.stream {
        return Err(Failure::option(
            "--stream",
            "GetImagesBatch does not stream; use GetImages --stream for one description",
        ));
    }
    let token = args.token.as_deref().unwrap_or("");
    let token_option = if token_from_env {
        "--token (from OPENAI_TOKEN)"
    } else {
        "--token"
    };
    let (options_text, options) = call_options(args)?;
    let log = debug::Log::new(args.common.debug, token);
    log.line(&format!(
        "oint {} (opi_openai {}): openai {method}",
        env!("CARGO_PKG_VERSION"),
        opi_openai::VERSION
    ));
    log.line(&format!(
        "token: {}",
        match (token.is_empty(), token_from_env) {
            (true, _) => "none (no Authorization header is sent)",
            (false, true) => "from OPENAI_TOKEN",
            (false, false) => "from --token",
        }
    ));
    log.options(&options_text, &options);
    let req = ImageRequest {
        url: &args.url,
        token,
        model: args.model.as_deref().unwrap_or(""),
        descr: &args.descr,
        headers: args.headers.as_deref().unwrap_or(""),
    };
    let started = std::time::Instant::now();
    let mut progress = progress::Progress::start(method);
    let result = if batch {
        // A batch's calls run on worker threads and are not traced.
        get_images_batch(&req, &args.descr, &options)
    } else if args.stream {
        let progress = std::cell::RefCell::new(&mut progress);
        get_images_stream(
            &req,
            &options,
            &mut |event: &StreamEvent| {
                let mut progress = progress.borrow_mut();
                if event.index.is_some() {
                    progress.partial_image();
                }
                progress.suspend(|| eprintln!("{}", event_line(event)));
                true
            },
            &mut |event: &TraceEvent| progress.borrow().suspend(|| log.event(event)),
        )
    } else {
        get_images_traced(&req, &options, &mut |event: &TraceEvent| {
            progress.suspend(|| log.event(event))
        })
    };
    progress.finish();
    log.finished(started.elapsed(), &result);
    // Invalid arguments the library found are the CLI's options: exit 3 naming them.
    if let Some((param, message)) = invalid_argument(&result) {
        let option = match param.as_str() {
            "url" => Some("--url"),
            "token" => Some(token_option),
            "model" => Some("--model"),
            "descr" | "descrs" => Some("--descr"),
            "headers" => Some("--headers"),
            "options" => Some(options_option(args, &message)),
            _ => None,
        };
        if let Some(option) = option {
            return Err(Failure::option(option, message));
        }
    }
    output::emit(&result, args.common.out.as_deref())
}

/// One stream event as printed on stderr: `event: <type> index=<k> bytes=<b64 length>
/// file=<path>` (index and file when present).
fn event_line(event: &StreamEvent) -> String {
    let mut line = format!("event: {}", event.kind);
    if let Some(index) = event.index {
        line.push_str(&format!(" index={index}"));
    }
    line.push_str(&format!(" bytes={}", event.b64_bytes));
    if let Some(file) = event.file {
        line.push_str(&format!(" file={}", file.display()));
    }
    line
}

/// `oint openai GetImageDescriptionStructure`.
fn structure(args: &StructureArgs) -> Result<(), Failure> {
    let log = debug::Log::new(args.common.debug, "");
    log.line(&format!(
        "GetImageDescriptionStructure: prompt {:?}, amount {}, bg {:?}, size {:?}, options {:?}",
        args.prompt,
        args.amount,
        args.bg,
        args.size,
        args.options.as_deref().unwrap_or("")
    ));
    let result = image_description_structure(
        &args.prompt,
        args.amount,
        &args.bg,
        &args.size,
        args.options.as_deref().unwrap_or(""),
    );
    if let Some((param, message)) = invalid_argument(&result) {
        if param == "additional" {
            return Err(Failure::option("--options", message));
        }
    }
    output::emit(&result, args.common.out.as_deref())
}

/// `(param, message)` when the result is our client's invalid-argument error.
fn invalid_argument(result: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(result).ok()?;
    let error = value.get("error")?;
    if error.get("type")? != "opi_client_error" || error.get("code")? != "invalid_argument" {
        return None;
    }
    let param = error.get("param")?.as_str()?.to_string();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("invalid")
        .to_string();
    Some((param, message))
}

/// Which option to blame for an options error found after each flag passed alone (say a
/// `--save-dir` that cannot be created): the given flag whose key the message names, else
/// `--options-json` when given, else the first flag given.
fn options_option(args: &GetImagesArgs, message: &str) -> &'static str {
    let given = || {
        cli::OPTION_FLAGS
            .iter()
            .filter(|(_, key)| args.flag_value(key).is_some())
    };
    if let Some((flag, _)) = given().find(|(_, key)| message.contains(key)) {
        return flag;
    }
    if args.options_json.is_some() {
        return "--options-json";
    }
    given()
        .map(|(flag, _)| *flag)
        .next()
        .unwrap_or("--options-json")
}

/// The call options: `--options-json`, then each individual flag over it. Returns the merged
/// object (for `--debug`) and the parsed [`Options`].
///
/// Each flag is checked alone first, so an error names the flag rather than the object.
fn call_options(args: &GetImagesArgs) -> Result<(Map<String, Value>, Options), Failure> {
    let mut merged = match args.options_json.as_deref() {
        Some(text) if !text.trim().is_empty() => opi_openai::parse_json_object(text, "options")
            .map_err(|e| Failure::option("--options-json", e.to_string()))?,
        _ => Map::new(),
    };
    for (flag, key) in cli::OPTION_FLAGS {
        let Some(value) = args.flag_value(key) else {
            continue;
        };
        let alone = Value::Object(Map::from_iter([(key.to_string(), value.clone())])).to_string();
        if let Err(e) = Options::parse(&alone) {
            return Err(Failure::option(*flag, e.to_string()));
        }
        merged.insert(key.to_string(), value);
    }
    let options = Options::parse(&Value::Object(merged.clone()).to_string()).map_err(|e| {
        let message = e.to_string();
        Failure::option(options_option(args, &message), message)
    })?;
    Ok((merged, options))
}
