//! # opi_openai
//!
//! OPI's `GetImages`, natively: generate images through any OpenAI-compatible server with one
//! call, from Rust, C (see `include/opi_openai.h`), 1C:Enterprise, OneScript or any FFI.
//!
//! ```no_run
//! let json = opi_openai::get_images(
//!     "https://api.openai.com/v1", "sk-...", "gpt-image-1.5",
//!     "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}", "");
//! assert!(json.starts_with('{'));
//! ```
//!
//! ## The result contract
//! Every call returns JSON text; a caller checks one key, `error`:
//! - a JSON body, whatever the HTTP status: that body byte for byte (after gzip decoding,
//!   without a leading byte-order mark, an echoed token replaced by `***` inside its strings),
//!   so API errors come back as the server's `{"error": {...}}`, as in OPI;
//! - an empty body: `{}` after a 2xx, else `{"error": {"type": "opi_invalid_response",
//!   "code": "empty_body", "message", "status", "content_type"}}`;
//! - a body that is not JSON or not UTF-8: `{"error": {"type": "opi_invalid_response", "code":
//!   "not_json", "message", "status", "content_type", "body": <at most 2 KiB, lossy UTF-8>}}`;
//! - a local failure: `{"error": {"type": "opi_client_error", "code": invalid_argument | dns |
//!   connect | tls | timeout | too_large | redirects | io, "param": <argument or null>,
//!   "message": <one sentence>}}`.
//!
//! Every result is valid JSON. A token of at least [`MIN_SCRUBBED_TOKEN`] bytes never appears
//! in a result's strings (see [`redact`] and the README for the rule and its limits).

#![warn(missing_docs)]

// The 1C Native API add-in: its exports and vtables are for 1C hosts, not the C header.
/// cbindgen:ignore
mod addin;
mod boundary;
mod capi;
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod heap;

/// Blocks of 4 KiB and more aligned to 64 bytes (see `heap.rs`: a slow `memcpy` case).
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
#[global_allocator]
static HEAP: heap::Heap = heap::Heap;
mod core;
// Internals for the fuzz targets in fuzz/ (and their properties); not part of the API. The
// streaming parser's target goes here too.
#[doc(hidden)]
pub mod fuzzing;

#[doc(hidden)]
pub use crate::core::connect::resolve_for_tests;
pub use crate::core::options::OPTION_KEYS;
#[doc(hidden)]
pub use crate::core::tls::ca_file_system_store_loads;
pub use crate::core::{
    get_images_batch, get_images_stream, get_images_traced, Cancel, Endpoint, Error, Headers,
    ImageRequest, Options, StreamEvent, TraceEvent, USER_AGENT, VERSION,
};
pub use crate::core::{ResponseShape, TLS_VERIFY_OFF};

/// The library's one redaction rule applied to plain text (a message, a header, a log line):
/// when `token` has at least [`MIN_SCRUBBED_TOKEN`] bytes, every occurrence is replaced by
/// `***`; a shorter token is left (it cannot be told from ordinary words). Results get the
/// same rule inside their JSON strings, escapes decoded. Front ends (`oint --debug`) use it.
pub fn redact(text: &str, token: &str) -> String {
    crate::core::error::redact(text, token)
}

/// See [`redact`].
pub use crate::core::error::MIN_SCRUBBED_TOKEN;

/// OPI's `GetImages(URL, Token, Model, Description, AdditionalHeaders)` with default options:
/// the result JSON (see the crate docs for the contract).
pub fn get_images(url: &str, token: &str, model: &str, descr: &str, headers: &str) -> String {
    let req = ImageRequest {
        url,
        token,
        model,
        descr,
        headers,
    };
    crate::core::get_images(&req, &Options::default())
}

/// [`get_images`] with an options JSON (object text, single-quoted JSON, or `.json` path;
/// empty means defaults). Bad options are an error result naming `options`.
pub fn get_images_ex(req: &ImageRequest, options: &str) -> String {
    match Options::parse(options) {
        Ok(options) => crate::core::get_images(req, &options),
        Err(err) => err.to_result_json(),
    }
}

/// OPI's `GetImageDescriptionStructure`: `{"prompt", "n", "background", "size"}` with empty
/// values (empty string, 0) left out, then `additional` (a JSON object in any of the three
/// forms) merged last and winning. Returns the JSON text, or an error result naming
/// `additional`.
pub fn image_description_structure(
    prompt: &str,
    count: i64,
    background: &str,
    size: &str,
    additional: &str,
) -> String {
    crate::core::request::image_description_structure(prompt, count, background, size, additional)
        .unwrap_or_else(|e| e.to_result_json())
}

/// Parses a JSON-object argument in any of the three accepted forms (JSON text, OPI's
/// single-quoted JSON, path of a `.json` file); used by front ends that print or merge JSON.
/// The error names `param`.
pub fn parse_json_object(
    text: &str,
    param: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    crate::core::input::parse_object(text, param)
}

/// Frees the process-wide caches (agents, pooled connections, name caches) when the library
/// is unloaded (`dlclose`) or the process exits: an entry in the ELF `.fini_array`, run by
/// the dynamic loader. Without it a host that loads and unloads the library leaks them each
/// time. Thread-locals with destructors are avoided on the call path for the same reason:
/// they would keep the library loaded.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
#[used]
#[link_section = ".fini_array"]
static RELEASE_ON_UNLOAD: extern "C" fn() = release_on_unload;

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
extern "C" fn release_on_unload() {
    // Nothing may unwind out of a loader callback.
    let _ = std::panic::catch_unwind(|| {
        crate::core::release_process_state();
        crate::capi::boundary::release();
    });
}
