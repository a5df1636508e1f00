//! The command tree, as clap parses it: `oint <LIBRARY> <METHOD> [OPTIONS]`.
//!
//! OPI uses `-h` for `--headers`, so clap's own `-h` is turned off at every level and help is
//! `--help` only. Unknown libraries and methods are caught as external subcommands, so that
//! they get OPI's exit codes (1, 2) rather than clap's usage error.

use clap::{ArgAction, Args, Parser, Subcommand};
use serde_json::Value;
use std::ffi::OsString;
use std::path::PathBuf;

/// The methods of the `openai` library, as typed.
pub const METHODS: &[&str] = &[
    "GetImages",
    "GetImagesBatch",
    "GetImageDescriptionStructure",
];

/// The individual option flags of GetImages and the options key each one sets.
pub const OPTION_FLAGS: &[(&str, &str)] = &[
    ("--timeout", "timeout"),
    ("--proxy", "proxy"),
    ("--save-dir", "save_dir"),
    ("--ca-file", "ca_file"),
    ("--parallel", "parallel"),
];

const EXAMPLE_GET_IMAGES: &str = "\
Example:
  oint openai GetImages --url \"https://bothub.chat/api/v2/openai/\" --token \"***\" \\
    --model \"gpt-image-1.5\" --descr \"{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}\"
  # better: keep the token out of the process list
  OPENAI_TOKEN=sk-... oint openai GetImages -u https://api.openai.com/ -m gpt-image-1.5 \\
    -d request.json --timeout 600 --out result.json
  # partial images as they arrive, saved to a folder
  OPENAI_TOKEN=sk-... oint openai GetImages -u https://api.openai.com/ -m gpt-image-1.5 \\
    -d \"{'prompt':'Yellow alpaca','partial_images':2}\" --stream --save-dir images";

const EXAMPLE_BATCH: &str = "\
Example:
  # prompts.json: [{\"prompt\": \"Yellow alpaca\"}, {\"prompt\": \"Green alpaca\"}]
  OPENAI_TOKEN=sk-... oint openai GetImagesBatch -u https://api.openai.com/ \\
    -m gpt-image-1-mini -d prompts.json --parallel 4 --save-dir images
  # prints {\"results\": [...]}: one result per description, in order";

const EXAMPLE_STRUCTURE: &str = "\
Example:
  oint openai GetImageDescriptionStructure -p \"Yellow alpaca\" -a 1 -s 1024x1024
  # prints {\"prompt\": \"Yellow alpaca\", \"n\": 1, \"size\": \"1024x1024\"} (pretty)";

const EXAMPLE_TOP: &str = "\
Example:
  oint openai GetImages --url \"https://api.openai.com/\" --token \"$OPENAI_TOKEN\" \\
    --model \"gpt-image-1.5\" --descr \"{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}\"";

fn after_help(example: &str) -> String {
    format!("{example}\n\n{}", crate::EXIT_CODES)
}

fn options_json_help() -> String {
    format!(
        "Call options, a JSON object (JSON text, OPI's single-quoted JSON, or a .json file), \
         e.g. \"{{'timeout':600,'retries':0}}\"; keys: {}. The flags below override it \
         [default: none]",
        opi_openai::OPTION_KEYS.join(", ")
    )
}

fn timeout_help() -> String {
    format!(
        "Limit in seconds for the whole call, retries included; overrides --options-json \
         [default: {}]",
        opi_openai::Options::default().timeout.as_secs_f64()
    )
}

/// `oint`: the libraries.
#[derive(Debug, Parser)]
#[command(
    name = "oint",
    version = opi_openai::VERSION,
    about = "OPI's command line, natively: generate images through any OpenAI-compatible server",
    disable_help_flag = true,
    disable_help_subcommand = true,
    subcommand_value_name = "LIBRARY",
    subcommand_help_heading = "Libraries",
    override_usage = "oint <LIBRARY> <METHOD> [OPTIONS]",
    after_help = after_help(EXAMPLE_TOP),
)]
pub struct Cli {
    /// The library (OPI's module); without one, this help is printed.
    #[command(subcommand)]
    pub library: Option<Library>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// The libraries.
#[derive(Debug, Subcommand)]
pub enum Library {
    /// OpenAI-compatible image generation (OPI's OpenAI module)
    #[command(
        name = "openai",
        disable_help_flag = true,
        subcommand_value_name = "METHOD",
        subcommand_help_heading = "Methods",
        override_usage = "oint openai <METHOD> [OPTIONS]",
        after_help = after_help(EXAMPLE_TOP),
    )]
    Openai(OpenAi),
    /// Any other word: exit 1.
    #[command(external_subcommand)]
    Unknown(Vec<OsString>),
}

/// `oint openai`: the methods.
#[derive(Debug, Args)]
pub struct OpenAi {
    /// The method; without one, this help is printed.
    #[command(subcommand)]
    pub method: Option<Method>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// The methods of `openai`.
#[derive(Debug, Subcommand)]
pub enum Method {
    /// Generate images: POST the description to <url>/v1/images/generations, print the answer
    #[command(
        name = "GetImages",
        disable_help_flag = true,
        after_help = after_help(EXAMPLE_GET_IMAGES),
    )]
    GetImages(Box<GetImagesArgs>),
    /// Generate images for many descriptions at once (--descr: a JSON array), --parallel at a
    /// time; print {"results": [...]} in order
    #[command(
        name = "GetImagesBatch",
        disable_help_flag = true,
        after_help = after_help(EXAMPLE_BATCH),
    )]
    GetImagesBatch(Box<GetImagesArgs>),
    /// Build an image description: {prompt, n, background, size}, empty fields left out
    #[command(
        name = "GetImageDescriptionStructure",
        disable_help_flag = true,
        after_help = after_help(EXAMPLE_STRUCTURE),
    )]
    GetImageDescriptionStructure(StructureArgs),
    /// Any other word: exit 2.
    #[command(external_subcommand)]
    Unknown(Vec<OsString>),
}

/// Options every method takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Write the result (UTF-8, pretty JSON) to this file instead of stdout, and print one
    /// line with its size and full path
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Print to stderr what is sent and received: the final URL, the headers (the token
    /// shown as ***), the body (long strings shortened), each attempt's status, timing and
    /// retries. Notices (TLS verification off, the proxy used) are printed without it too
    #[arg(long)]
    pub debug: bool,
    /// Print help (this text)
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// `oint openai GetImages`: OPI's `GetImages(URL, Token, Model, Description, AdditionalHeaders)`.
#[derive(Debug, Args)]
pub struct GetImagesArgs {
    /// Base URL of the server; "/v1/images/generations" is appended (after one "/"), e.g.
    /// https://api.openai.com/
    #[arg(short = 'u', long, value_name = "URL")]
    pub url: String,
    /// API key, sent as "Authorization: Bearer <token>"; OPENAI_TOKEN keeps it out of the
    /// process list, and --token wins over it [default: none, no Authorization]
    #[arg(
        short = 't',
        long,
        value_name = "TOKEN",
        env = "OPENAI_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Model, sent first in the body; a "model" in --descr wins [default: none]
    #[arg(short = 'm', long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Image description, a JSON object: JSON text, OPI's single-quoted JSON
    /// ("{'prompt':'Yellow alpaca','n':1}"), or a .json file; for GetImagesBatch a JSON array
    /// of descriptions in the same forms
    #[arg(short = 'd', long, value_name = "JSON")]
    pub descr: String,
    /// Additional headers, a JSON object in the same three forms; they override the default
    /// headers, Authorization excepted [default: none]
    #[arg(short = 'h', long, value_name = "JSON")]
    pub headers: Option<String>,
    /// (see options_json_help)
    #[arg(long, value_name = "JSON", help = options_json_help())]
    pub options_json: Option<String>,
    /// (see timeout_help)
    #[arg(long, value_name = "SECONDS", help = timeout_help())]
    pub timeout: Option<f64>,
    /// Proxy URL (http://, https://, socks5://); overrides --options-json [default: none]
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Directory to save the images in; overrides --options-json [default: none]
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<String>,
    /// File of extra CA certificates (PEM) to trust; overrides --options-json [default: none]
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<String>,
    /// GetImages: stream the answer ("stream": true; "partial_images" 1..3 in --descr asks
    /// for partial images) and print one line per event on stderr
    #[arg(long)]
    pub stream: bool,
    /// GetImagesBatch: how many calls run at once, 1 to 16; overrides --options-json
    /// [default: 4]
    #[arg(long, value_name = "N")]
    pub parallel: Option<u64>,
    /// --out, --debug, --help.
    #[command(flatten)]
    pub common: Common,
}

impl GetImagesArgs {
    /// The JSON value an individual option flag gives its options key, when the flag is given.
    pub fn flag_value(&self, key: &str) -> Option<Value> {
        match key {
            "timeout" => self.timeout.map(Value::from),
            "proxy" => self.proxy.clone().map(Value::from),
            "save_dir" => self.save_dir.clone().map(Value::from),
            "ca_file" => self.ca_file.clone().map(Value::from),
            "parallel" => self.parallel.map(Value::from),
            _ => None,
        }
    }
}

/// `oint openai GetImageDescriptionStructure`: OPI's `GetImageDescriptionStructure(Prompt,
/// Count, Background, Size, AdditionalParameters)`.
#[derive(Debug, Args)]
pub struct StructureArgs {
    /// The prompt: what to draw
    #[arg(short = 'p', long, value_name = "TEXT")]
    pub prompt: String,
    /// How many images ("n"); 0 leaves it out
    #[arg(short = 'a', long, value_name = "N", default_value_t = 1)]
    pub amount: i64,
    /// Background ("background"), e.g. transparent; empty leaves it out
    #[arg(short = 'b', long, value_name = "TEXT", default_value = "")]
    pub bg: String,
    /// Size ("size"), e.g. 1024x1024; empty leaves it out
    #[arg(short = 's', long, value_name = "WxH", default_value = "")]
    pub size: String,
    /// Additional fields, a JSON object (JSON text, single-quoted JSON, or a .json file),
    /// merged last and winning [default: none]
    #[arg(short = 'o', long, value_name = "JSON")]
    pub options: Option<String>,
    /// --out, --debug, --help.
    #[command(flatten)]
    pub common: Common,
}

/// Token values on the command line (`--token X`, `--token=X`, `-t X`, `-tX`) and in
/// `OPENAI_TOKEN`, to hide from clap's error messages, which may quote arguments.
pub fn secrets_in(args: &[OsString]) -> Vec<String> {
    let mut secrets: Vec<String> = std::env::var("OPENAI_TOKEN").into_iter().collect();
    let mut words = args.iter().map(|a| a.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--token" || word == "-t" {
            secrets.extend(words.next().map(|w| w.into_owned()));
        } else if let Some(value) = word.strip_prefix("--token=") {
            secrets.push(value.to_string());
        } else if let Some(value) = word
            .strip_prefix("-t")
            .filter(|v| !v.is_empty() && !word.starts_with("--"))
        {
            secrets.push(value.trim_start_matches('=').to_string());
        }
    }
    // Short values would hide ordinary words: the library's one rule (`opi_openai::redact`).
    secrets.retain(|s| s.len() >= opi_openai::MIN_SCRUBBED_TOKEN);
    secrets
}
