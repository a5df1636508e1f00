//! The core: pure safe Rust with no knowledge of C or 1C. Every front end calls [`get_images`].

pub mod endpoint;
pub mod error;
pub mod input;
pub mod options;
pub mod request;
pub mod result;
pub mod transport;

use std::time::Duration;

pub use endpoint::Endpoint;
pub use error::Error;
pub use options::Options;
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
}

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

fn call(req: &ImageRequest, options: &Options, trace: &mut dyn FnMut(&TraceEvent)) -> Result<String, Error> {
    let endpoint = Endpoint::from_base(req.url)?;
    let body = request::build_body(req.model, req.descr)?;
    let headers = request::build_headers(req.token, req.headers)?;
    trace(&TraceEvent::Request {
        url: endpoint.as_str(),
        headers: headers.redacted(),
        body: &body,
    });
    let resp = transport::post(endpoint.as_str(), &headers, &body, req.token, options, trace)?;
    Ok(result::classify(resp))
}
