//! The core: pure safe Rust with no knowledge of C or 1C. Every front end calls [`get_images`].

pub mod agent;
pub mod batch;
pub mod cancel;
pub(crate) mod connect;
pub mod endpoint;
pub mod error;
pub mod input;
pub mod json_scan;
mod log;
pub mod options;
pub mod request;
pub mod result;
pub(crate) mod save;
pub mod sse;
pub mod stream;
pub(crate) mod tls;
pub mod transport;

use std::time::{Duration, Instant};

pub use batch::get_images_batch;
pub use cancel::Cancel;
pub use endpoint::Endpoint;
pub use error::Error;
pub use options::{Options, ResponseShape};
pub use request::{Headers, USER_AGENT, VERSION};
pub use stream::StreamEvent;

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
    match call(req, options, None, Some(trace)) {
        Ok(json) => json,
        Err(err) => err.to_result_json(),
    }
}

/// [`get_images_traced`] without a trace: no trace event is built (unless `log_file` asks).
pub(crate) fn get_images(req: &ImageRequest, options: &Options) -> String {
    match call(req, options, None, None) {
        Ok(json) => json,
        Err(err) => err.to_result_json(),
    }
}

/// Runs one GetImages call with `"stream": true` and returns the result JSON, in the shape of
/// the non-streaming answer (`created`, `data` from the completed event(s), `usage`, `size`,
/// `quality`, `background`, `output_format`).
///
/// `on_event` is called on the calling thread for each event as it arrives; returning `false`
/// closes the connection at once and the result is the error `cancelled`. With `save_dir`,
/// partial images (`<created>_<image>.partial<k>.<ext>`) and final images are written as they
/// arrive and the event carries the path. A stream that ends without a completed event is the
/// error `incomplete_stream`; an `error` event's error object is the result; a plain JSON
/// answer (a server without streaming, an error status) is handled as by
/// [`get_images_traced`]. A call inside [`Cancel::scope`] stops when the token is cancelled.
pub fn get_images_stream(
    req: &ImageRequest,
    options: &Options,
    on_event: &mut dyn FnMut(&StreamEvent) -> bool,
    trace: &mut dyn FnMut(&TraceEvent),
) -> String {
    let result = call(req, options, Some(on_event), Some(trace));
    let cancelled = Cancel::current().is_some_and(|c| c.is_cancelled());
    match result {
        Err(_) if cancelled => Error::Cancelled.to_result_json(),
        Ok(json) => json,
        // Our messages never quote the token; scrubbed all the same (small texts).
        Err(err) => json_scan::scrub_json_text(err.to_result_json(), req.token),
    }
}

/// One call; `trace: None` (and no `log_file`) builds no trace events at all.
fn call(
    req: &ImageRequest,
    options: &Options,
    on_event: Option<&mut dyn FnMut(&StreamEvent) -> bool>,
    mut trace: Option<&mut dyn FnMut(&TraceEvent)>,
) -> Result<String, Error> {
    let started = Instant::now();
    let endpoint = Endpoint::from_base(req.url)?;
    let body = if on_event.is_some() {
        request::build_stream_body(req.model, req.descr)?
    } else {
        request::build_body(req.model, req.descr)?
    };
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
    let tracing = trace.is_some() || log.is_some();
    let mut trace = |event: &TraceEvent| {
        if let Some(log) = log.as_mut() {
            log.record(event);
        }
        if let Some(trace) = trace.as_mut() {
            trace(event);
        }
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
    if tracing {
        // The one redaction rule for the trace too: Authorization is shown as `Bearer ***`, and
        // the token anywhere else the caller put it (another header, the URL, the description).
        let shown_body = if json_scan::may_hold(&body, req.token) {
            json_scan::scrub_json_text(body.clone(), req.token)
        } else {
            String::new()
        };
        trace(&TraceEvent::Request {
            url: &error::redact(endpoint.as_str(), req.token),
            headers: headers
                .redacted()
                .into_iter()
                .map(|(name, value)| (name, error::redact(&value, req.token)))
                .collect(),
            body: if shown_body.is_empty() {
                &body
            } else {
                &shown_body
            },
        });
    }
    let resp = transport::post(
        &agent,
        &endpoint,
        &headers,
        &body,
        req.token,
        options,
        on_event.is_some(),
        &mut trace,
    )?;
    let status = resp.status;
    let full_headers = (options.response == ResponseShape::Full).then(|| resp.header_pairs());
    let mut resp = resp;
    if let (Some(events), Some(on_event)) = (resp.stream.take(), on_event) {
        let mut on_event = |event: &StreamEvent| {
            let scrubbed;
            let mut event = *event;
            if json_scan::may_hold(event.json, req.token) {
                scrubbed = json_scan::scrub_json_text(event.json.to_string(), req.token);
                event.json = &scrubbed;
            }
            on_event(&event)
        };
        let mut json = stream::consume(events, options, req.token, &mut on_event)?;
        if let Some(headers) = full_headers {
            json = result::full(status, &headers, &json, req.token);
        }
        return Ok(json_scan::scrub_json_text(json, req.token));
    }
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
        json = result::full(status, &headers, &json, req.token);
    }
    Ok(json)
}

/// Frees the process-wide state (cached agents with their pooled connections and name caches,
/// the test resolver's map). Run when the library is unloaded (see `unload` in lib.rs); a
/// later call simply builds what it needs again.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
    allow(dead_code)
)]
pub(crate) fn release_process_state() {
    agent::release();
    connect::release();
}

/// For tests of what the library leaves untouched: how many whole pages of the `len` bytes
/// from `from` are resident (Linux's `mincore`).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn resident_pages(from: *const u8, len: usize) -> usize {
    let page = 4096;
    let first = (from as usize).next_multiple_of(page);
    let pages = (from as usize + len).saturating_sub(first) / page;
    let mut resident = vec![0u8; pages];
    // SAFETY: the range lies inside the caller's allocation; one byte per page.
    let rc = unsafe {
        libc::mincore(
            first as *mut libc::c_void,
            pages * page,
            resident.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    resident.iter().filter(|&&r| r & 1 != 0).count()
}
