//! The core: pure safe Rust with no knowledge of C or 1C. Every front end calls [`get_images`].

pub mod agent;
pub mod cancel;
pub mod endpoint;
pub mod error;
pub mod input;
mod log;
pub mod options;
pub mod request;
pub mod result;
mod save;
pub mod transport;

use std::time::{Duration, Instant};

pub use cancel::Cancel;
pub use endpoint::Endpoint;
pub use error::Error;
pub use options::{Options, ResponseShape};
pub use request::{Headers, USER_AGENT, VERSION};

/// One GetImages call's arguments, as OPI names them. Empty strings mean "not given".
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageRequest<'a> {
    /// The server's base URL (see [`Endpoint`]). Required.
    pub url: &'a str,
    /// The API key; empty sends no `Authorization`.
    pub token: &'a str,
    /// The model; empty sends no `model` (unless the description has one).
    pub model: &'a str,
    /// The description: JSON object text, single-quoted JSON, or a `.json` path. Required.
    pub descr: &'a str,
    /// Additional headers in the same forms; empty means none.
    pub headers: &'a str,
}

/// What happens during a call, for `--debug` output and logs. Never carries the token.
#[derive(Debug)]
#[non_exhaustive]
pub enum TraceEvent<'a> {
    /// The request about to be sent (Authorization shown as `Bearer ***`).
    Request {
        /// The final URL.
        url: &'a str,
        /// Headers in sending order, credentials redacted.
        headers: Vec<(String, String)>,
        /// The JSON body.
        body: &'a str,
    },
    /// One attempt finished.
    Attempt {
        /// 1 for the first attempt.
        attempt: u32,
        /// The HTTP status, when a response arrived.
        status: Option<u16>,
        /// How long the attempt took.
        elapsed: Duration,
        /// Bytes of (decoded) response body.
        bytes: u64,
        /// The server's `x-request-id`.
        request_id: Option<&'a str>,
        /// Why the attempt failed, when it did.
        error: Option<&'a str>,
        /// The wait before the next attempt, when one follows.
        retry_in: Option<Duration>,
    },
    /// One attempt to download an image `url` item for `save_dir`.
    Download {
        /// The image URL without its query (a pre-signed URL's query is its signature).
        url: &'a str,
        /// 1 for the first attempt.
        attempt: u32,
        /// The HTTP status, when a response arrived.
        status: Option<u16>,
        /// How long the attempt took.
        elapsed: Duration,
        /// Bytes of image received.
        bytes: u64,
        /// Why the attempt failed, when it did.
        error: Option<&'a str>,
    },
    /// Something the person running the call should know, as one sentence: that TLS
    /// verification is off (always sent then, first), which proxy carries the call.
    Notice(&'a str),
}

/// The notice sent (and logged) on every call made with `tls_verify: false`.
pub const TLS_VERIFY_OFF: &str =
    "TLS certificate verification is OFF (options: tls_verify false): the server's identity is not checked";

/// Runs one GetImages call and returns the result JSON (never fails: errors are results).
///
/// `trace` sees the request and each attempt. See the crate docs for the result contract.
pub fn get_images_traced(
    req: &ImageRequest,
    options: &Options,
    trace: &mut dyn FnMut(&TraceEvent),
) -> String {
    match call(req, options, trace) {
        Ok(json) => json,
        Err(err) => err.to_result_json(),
    }
}

fn call(
    req: &ImageRequest,
    options: &Options,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<String, Error> {
    let started = Instant::now();
    let endpoint = Endpoint::from_base(req.url)?;
    let body = request::build_body(req.model, req.descr)?;
    let headers = request::build_headers(req.token, req.headers)?;
    let route = agent::route(endpoint.as_str(), options)?;
    let agent = agent::for_route(&route, options)?;
    if let Some(dir) = &options.save_dir {
        save::prepare_dir(dir)?;
    }
    // With log_file, every event also goes to the log (a log that cannot be opened is a
    // notice, never a failed call).
    let mut log_failure = None;
    let mut log = options.log_file.as_deref().and_then(|path| {
        log::CallLog::open(path, endpoint.as_str(), req.token)
            .map_err(|e| {
                log_failure = Some(format!(
                    "log_file {} could not be opened: {e}",
                    path.display()
                ))
            })
            .ok()
    });
    let mut trace = |event: &TraceEvent| {
        if let Some(log) = log.as_mut() {
            log.record(event);
        }
        trace(event);
    };
    if !options.tls_verify {
        trace(&TraceEvent::Notice(TLS_VERIFY_OFF));
    }
    if let Some(failure) = &log_failure {
        trace(&TraceEvent::Notice(failure));
    }
    if let Some(line) = route.describe() {
        trace(&TraceEvent::Notice(&line));
    }
    trace(&TraceEvent::Request {
        url: endpoint.as_str(),
        headers: headers.redacted(),
        body: &body,
    });
    let resp = transport::post(
        &agent,
        endpoint.as_str(),
        &headers,
        &body,
        req.token,
        options,
        &mut trace,
    )?;
    let status = resp.status;
    let full_headers = (options.response == ResponseShape::Full).then(|| resp.headers.clone());
    let mut json = result::classify(resp, req.token);
    if let Some(dir) = &options.save_dir {
        json = save::save_images(
            json,
            status,
            dir,
            options,
            started + options.timeout,
            &mut trace,
        )?;
    }
    if let Some(headers) = full_headers {
        json = result::full(status, &headers, &json);
    }
    Ok(scrub_echoed_token(json, req.token))
}

/// A server (or a proxy's error page) that echoes the request's headers would hand the token
/// back to the host, which logs results: it is replaced by `***`. Only tokens made of
/// characters that JSON never escapes and that cannot span JSON syntax are replaced, so the
/// result stays valid JSON; real API keys are such tokens. One substring search otherwise.
fn scrub_echoed_token(json: String, token: &str) -> String {
    let replaceable = token.len() >= 8
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=:".contains(&b));
    if replaceable && json.contains(token) {
        json.replace(token, "***")
    } else {
        json
    }
}
