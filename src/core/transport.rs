//! Sending: the process-wide agent, name resolution, timeouts, retries.

use super::agent;
use super::cancel::Cancel;
use super::connect::{self, DnsCache, HappyConnector, Outer};
use super::endpoint::Endpoint;
use super::error::{redact, Error};
use super::options::Options;
use super::request::{is_default_header, Headers};
use super::tls::TlsSettings;
use super::TraceEvent;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::http::{header::HeaderName, HeaderValue, Method, Request, Uri};
use ureq::unversioned::transport::{
    ConnectProxyConnector, Connector, RustlsConnector, SocksConnector,
};

/// Room for the request line and headers. ureq fails with part of the request written when
/// they do not fit its output buffer, so larger header sets are refused before sending.
const OUTPUT_BUFFER: usize = 512 * 1024;
const MAX_HEADER_BYTES: usize = 256 * 1024;
/// Idle connections kept per host: 1C servers run hundreds of sessions in one process.
const IDLE_PER_HOST: usize = 64;
/// Longest server-requested wait honoured (as openai-python).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Redirects followed per attempt (OPI's limit).
const MAX_REDIRECTS: u32 = 5;
/// The most reserved for a body before its bytes arrive, whatever its Content-Length says;
/// the buffer then grows with the bytes that actually arrive.
const UPFRONT_RESERVE: u64 = 8 * 1024 * 1024;
/// How much of the body's buffer is zeroed ahead of the bytes read into it (see [`read_body`]).
const ZERO_AHEAD: usize = 256 * 1024;

/// A response as received: status, headers in order, and the decoded body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers as ureq parsed them (names lowercase; see [`Response::header_pairs`]).
    pub headers: ureq::http::HeaderMap,
    /// The body after gzip decoding (empty when `stream` holds it).
    pub body: Vec<u8>,
    /// The unread body of a 2xx `text/event-stream` answer to a request sent with
    /// `stream: true` (see [`post`]); `None` otherwise.
    pub stream: Option<EventStream>,
}

/// The body of a streamed answer, read as it arrives (gzip decoded, `max_response_bytes` and
/// the call's timeout still applying). Dropping it closes the connection.
pub struct EventStream(ureq::BodyReader<'static>);

impl Read for EventStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

impl Response {
    /// The first value of header `name` (lowercase), as lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }

    /// Every header as (name, value) in the order ureq keeps them (a name's values together,
    /// names in order of arrival), values as lossy UTF-8.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

/// A new agent with our settings, going through `proxy` (`None`: direct) with `tls`. Which
/// agent a call uses (one per proxy and TLS setting, cached) is decided in [`super::agent`].
///
/// `direct_tls`: TLS for `https://` URLs done on our socket transport (see `super::tls`);
/// given for direct agents only. ureq's TLS layer, configured by `tls`, serves connections
/// through a proxy (and stands unused behind a direct agent's own TLS).
pub(super) fn build_agent(
    proxy: Option<ureq::Proxy>,
    tls: ureq::tls::TlsConfig,
    direct_tls: Option<Arc<TlsSettings>>,
) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are followed by `exchange`: ureq turns a 307/308 after a POST into
        // an error and a 301/302 into a GET that keeps no body.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .output_buffer_size(OUTPUT_BUFFER)
        .max_idle_connections(IDLE_PER_HOST * 4)
        .max_idle_connections_per_host(IDLE_PER_HOST)
        .user_agent(ureq::config::AutoHeaderValue::None)
        .accept(ureq::config::AutoHeaderValue::None)
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .tls_config(tls)
        // Always set: ureq's default reads the proxy environment its own way; ours
        // (scheme-aware, curl's NO_PROXY rules) is applied in `super::agent`.
        .proxy(proxy)
        .build();
    // ureq's default chain (SOCKS, CONNECT proxy, TCP, rustls) with our TCP connector and
    // the whole chain wrapped for cancel and the request phase: see `connect`.
    let cache = Arc::new(DnsCache::default());
    let chain = ()
        .chain(SocksConnector::default())
        .chain(ConnectProxyConnector::default())
        .chain(HappyConnector {
            cache: cache.clone(),
            tls: direct_tls,
        })
        .chain(RustlsConnector::default());
    ureq::Agent::with_parts(config, Outer(chain), connect::Resolver { cache })
}

/// Whether a failed attempt may be repeated: only when nothing reached the server.
pub(super) fn retryable_error(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

fn retryable_status(status: u16, should_retry: Option<&str>) -> bool {
    match should_retry {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504),
    }
}

/// The wait the server asked for: `retry-after-ms`, else `retry-after` (seconds or HTTP
/// date), when above 0 and at most 120 s.
fn server_wait(resp: &Response) -> Option<Duration> {
    let wait = if let Some(ms) = resp
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        Duration::try_from_secs_f64(ms / 1000.0).ok()?
    } else {
        let v = resp.header("retry-after")?;
        let v = v.trim();
        match v.parse::<f64>() {
            Ok(s) => Duration::try_from_secs_f64(s).ok()?,
            Err(_) => httpdate::parse_http_date(v)
                .ok()?
                .duration_since(std::time::SystemTime::now())
                .ok()?,
        }
    };
    (wait > Duration::ZERO && wait <= MAX_RETRY_AFTER).then_some(wait)
}

/// Exponential backoff with jitter: min(0.5 s · 2^k, 8 s) times a random 0.75..1.
pub(super) fn backoff(retry: u32) -> Duration {
    let base = (0.5 * 2f64.powi(retry.min(16) as i32)).min(8.0);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let jitter = 1.0 - 0.25 * (random as f64 / u64::MAX as f64);
    Duration::from_secs_f64(base * jitter)
}

/// Maps a ureq error to ours; `token` is scrubbed from every message.
pub(super) fn map_error(err: ureq::Error, options: &Options, token: &str) -> Error {
    use ureq::Error as U;
    let text = |e: &dyn std::fmt::Display| redact(&e.to_string(), token);
    match err {
        U::Timeout(t) => Error::Timeout(match t {
            ureq::Timeout::Connect => format!(
                "no connection within the connect timeout of {} s",
                options.connect_timeout.as_secs_f64()
            ),
            ureq::Timeout::Resolve => "the server's name was not resolved in time".to_string(),
            _ => format!(
                "the call did not finish within the timeout of {} s",
                options.timeout.as_secs_f64()
            ),
        }),
        U::HostNotFound => Error::Dns("no address found for the host".to_string()),
        U::ConnectionFailed => Error::Connect("no address of the host accepted a connection".to_string()),
        // ureq words a refusal as "proxy server responded 407/407": name the usual cause.
        U::ConnectProxyFailed(m) if m.contains("407") => Error::Connect(
            "the proxy requires authentication (HTTP 407): give user:password in the proxy URL or the proxy's User and Password"
                .to_string(),
        ),
        U::ConnectProxyFailed(m) => Error::Connect(format!("the proxy refused the tunnel: {}", redact(&m, token))),
        U::BodyExceedsLimit(_) => Error::TooLarge { limit: options.max_response_bytes },
        U::TooManyRedirects => Error::Redirects("more than 5 redirects".to_string()),
        U::RedirectFailed => Error::Redirects("a redirect could not be followed".to_string()),
        U::Tls(m) => Error::Tls(m.to_string()),
        U::Rustls(e) => Error::Tls(with_trust_hint(text(&e))),
        U::Pem(e) => Error::Tls(text(&e)),
        U::BadUri(m) => Error::invalid("url", format!("url is not a valid URL: {}", redact(&m, token))),
        U::Http(e) => Error::invalid("headers", format!("the request could not be built: {}", text(&e))),
        U::InvalidProxyUrl => Error::invalid("options", "options: the proxy URL is not valid"),
        U::Io(e) => {
            let msg = text(&e);
            if msg.contains("failed to lookup address") || msg.contains("Name or service not known") {
                Error::Dns(msg)
            } else {
                match e.kind() {
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable => Error::Connect(msg),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout(msg),
                    io::ErrorKind::InvalidData if msg.to_ascii_lowercase().contains("certificate") => {
                        Error::Tls(with_trust_hint(msg))
                    }
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                        Error::Io(format!("the connection was closed before the answer was complete ({msg})"))
                    }
                    _ => Error::Io(msg),
                }
            }
        }
        U::Protocol(e) => Error::Io(format!("the server's answer is not valid HTTP: {}", text(&e))),
        U::LargeResponseHeader(n, limit) => {
            Error::Io(format!("the response headers take {n} bytes, more than the limit of {limit}"))
        }
        U::Decompress(kind, e) => Error::Io(format!("the {kind} answer could not be decoded: {}", text(&e))),
        other => Error::Io(text(&other)),
    }
}

/// An unknown issuer is what a TLS-inspecting firewall causes: say how to trust its root.
fn with_trust_hint(message: String) -> String {
    if message.contains("UnknownIssuer") {
        format!("{message} (the certificate's issuer is not trusted; behind a TLS-inspecting firewall, give its root certificate in the ca_file option)")
    } else {
        message
    }
}

/// Sends one POST of `body` to `url` with `headers` through `agent` (the one for the call's
/// route), retrying as the options allow.
///
/// Retries (up to `options.retries`) follow connect failures and statuses 408, 409, 429, 500,
/// 502, 503, 504 (or `x-should-retry: true`). Once any byte of the request was written, no
/// failure of any kind sends it again (a status answer still may be retried). A call whose
/// [`Cancel`] token is cancelled fails with [`Error::Cancelled`], also during a retry's wait.
///
/// With `stream`, a 2xx `text/event-stream` answer comes back unread in
/// [`Response::stream`]; nothing retries it once it is handed over.
#[allow(clippy::too_many_arguments)]
pub fn post(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    headers: &Headers,
    body: &str,
    token: &str,
    options: &Options,
    stream: bool,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<Response, Error> {
    let url = endpoint.as_str();
    let header_bytes = headers.wire_len() + url.len() + 64;
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Error::invalid(
            "headers",
            format!("the request headers take {header_bytes} bytes, more than the limit of {MAX_HEADER_BYTES}"),
        ));
    }
    let deadline = Instant::now() + options.timeout;
    with_retries(
        options,
        deadline,
        token,
        |remaining| {
            exchange_with(
                agent,
                (url, Some(endpoint.uri())),
                headers,
                Some(body.as_bytes()),
                options,
                token,
                remaining,
                stream,
            )
        },
        |a| {
            let request_id = a.response.and_then(|r| r.header("x-request-id"));
            trace(&TraceEvent::Attempt {
                attempt: a.attempt,
                status: a.response.map(|r| r.status),
                elapsed: a.elapsed,
                bytes: a.response.map_or(0, |r| r.body.len() as u64),
                request_id: request_id.as_deref(),
                error: a.error,
                retry_in: a.retry_in,
            })
        },
    )
}

/// A failed attempt: our error, and whether trying again is allowed.
#[derive(Debug)]
pub(super) struct Fail {
    /// What went wrong (the token scrubbed).
    pub error: Error,
    /// Nothing of a POST reached the connection and the failure may pass (a connect failure).
    pub retryable: bool,
}

impl From<Error> for Fail {
    fn from(error: Error) -> Self {
        Fail {
            error,
            retryable: false,
        }
    }
}

/// One finished attempt, as [`with_retries`] reports it.
pub(super) struct AttemptReport<'a> {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The response, when one arrived.
    pub response: Option<&'a Response>,
    /// Why the attempt failed, when it did (the token scrubbed).
    pub error: Option<&'a str>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The wait before the next attempt, when one follows.
    pub retry_in: Option<Duration>,
}

/// Runs `attempt(time left)` until it gives a final answer, retrying as the options allow
/// (see [`post`]) while the wait still ends before `deadline`, and reports every attempt.
pub(super) fn with_retries(
    options: &Options,
    deadline: Instant,
    token: &str,
    mut attempt: impl FnMut(Duration) -> Result<Response, Fail>,
    mut report: impl FnMut(&AttemptReport),
) -> Result<Response, Error> {
    for n in 1.. {
        if Cancel::current_cancelled() {
            return Err(Error::Cancelled);
        }
        let began = Instant::now();
        let remaining = deadline.saturating_duration_since(began);
        if remaining.is_zero() {
            let timeout = ureq::Error::Timeout(ureq::Timeout::Global);
            return Err(map_error(timeout, options, token));
        }
        let outcome = attempt(remaining);
        let elapsed = began.elapsed();
        let wait = match &outcome {
            Ok(resp) if retryable_status(resp.status, resp.header("x-should-retry").as_deref()) => {
                Some(server_wait(resp).unwrap_or_else(|| backoff(n - 1)))
            }
            Err(f) if f.retryable => Some(backoff(n - 1)),
            _ => None,
        };
        let retry_in = wait.filter(|w| n <= options.retries && Instant::now() + *w < deadline);
        let message = outcome.as_ref().err().map(|f| f.error.to_string());
        report(&AttemptReport {
            attempt: n,
            response: outcome.as_ref().ok(),
            error: message.as_deref(),
            elapsed,
            retry_in,
        });
        match retry_in {
            Some(wait) => {
                let cancelled = Cancel::with_current(|c| match c {
                    Some(c) => c.wait(wait),
                    None => {
                        std::thread::sleep(wait);
                        false
                    }
                });
                if cancelled {
                    return Err(Error::Cancelled);
                }
            }
            None => return outcome.map_err(|f| f.error),
        }
    }
    unreachable!("attempts are counted in u32")
}

/// One attempt: a POST of `body` (a GET when `None`) and the redirects it leads to. 307 and
/// 308 repeat the request with its body; 301, 302 and 303 continue with a GET (as browsers,
/// curl and the SDKs do). Each hop takes its own proxy route (`NO_PROXY` applies to the new
/// host). Across origins only the library's own headers go (no `Authorization`, no other
/// header of the caller's); a redirect from https to http is refused.
pub(super) fn exchange(
    agent: &ureq::Agent,
    url: &str,
    headers: &Headers,
    body: Option<&[u8]>,
    options: &Options,
    token: &str,
    remaining: Duration,
) -> Result<Response, Fail> {
    exchange_with(
        agent,
        (url, None),
        headers,
        body,
        options,
        token,
        remaining,
        false,
    )
}

/// [`exchange`], handing a 2xx event stream over unread when `stream` is set.
#[allow(clippy::too_many_arguments)]
fn exchange_with(
    agent: &ureq::Agent,
    (url, parsed): (&str, Option<&Uri>),
    headers: &Headers,
    mut body: Option<&[u8]>,
    options: &Options,
    token: &str,
    remaining: Duration,
    stream: bool,
) -> Result<Response, Fail> {
    let idempotent = body.is_none();
    let started = Instant::now();
    // Parsed at the first redirect only: most calls have none.
    let mut origin = None;
    let mut current = url.to_string();
    let mut hop_agent = None;
    let mut same_origin = true;
    connect::begin_request();
    for hop in 0..=MAX_REDIRECTS {
        let left = remaining.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(fail(
                ureq::Error::Timeout(ureq::Timeout::Global),
                options,
                token,
                idempotent,
            ));
        }
        let resp = send_once(
            hop_agent.as_ref().unwrap_or(agent),
            (&current, parsed.filter(|_| hop == 0)),
            headers,
            body,
            same_origin,
            options,
            left,
            stream,
        )
        .map_err(|e| fail(e, options, token, idempotent))?;
        let location = match resp.status {
            301 | 302 | 303 | 307 | 308 => resp.header("location"),
            _ => None,
        };
        let Some(location) = location else {
            return Ok(resp);
        };
        if hop == MAX_REDIRECTS {
            return Err(fail(
                ureq::Error::TooManyRedirects,
                options,
                token,
                idempotent,
            ));
        }
        let followed = url::Url::parse(&current)
            .and_then(|base| base.join(location.trim()))
            .ok()
            .filter(|next| matches!(next.scheme(), "http" | "https"));
        let Some(next) = followed else {
            return Err(fail(
                ureq::Error::RedirectFailed,
                options,
                token,
                idempotent,
            ));
        };
        if current.starts_with("https:") && next.scheme() == "http" {
            return Err(Error::Redirects(
                "the server redirected an https request to an http URL, where it would travel unencrypted: not followed".to_string(),
            )
            .into());
        }
        let origin = origin.get_or_insert_with(|| url::Url::parse(url).ok().map(|u| u.origin()));
        same_origin &= origin.as_ref() == Some(&next.origin());
        if matches!(resp.status, 301..=303) {
            body = None;
        }
        current = next.into();
        hop_agent = Some(agent::for_url(&current, options)?);
    }
    unreachable!("the loop returns by its last hop")
}

/// Maps a ureq failure of an attempt; see [`Fail`].
fn fail(err: ureq::Error, options: &Options, token: &str, idempotent: bool) -> Fail {
    if Cancel::current_cancelled() {
        return Error::Cancelled.into();
    }
    let retryable = retryable_error(&err) && (idempotent || !connect::request_sent());
    Fail {
        error: map_error(err, options, token),
        retryable,
    }
}

/// The `http` constant for one of the library's own header names (no parsing per call).
fn known_name(name: &str) -> Option<HeaderName> {
    use ureq::http::header;
    Some(match name {
        "Accept" => header::ACCEPT,
        "Accept-Charset" => header::ACCEPT_CHARSET,
        "Accept-Encoding" => header::ACCEPT_ENCODING,
        "Connection" => header::CONNECTION,
        "Content-Type" => header::CONTENT_TYPE,
        "User-Agent" => header::USER_AGENT,
        "Authorization" => header::AUTHORIZATION,
        _ => return None,
    })
}

/// Sends one request and waits for the response head. The request is built directly (a
/// request builder moves its parts at every header); default header names are recognised by
/// `http` without allocating. An invalid header is an `http` error, as the builder gives.
#[allow(clippy::too_many_arguments)]
fn run<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    method: Method,
    (url, parsed): (&str, Option<&Uri>),
    body: B,
    headers: &Headers,
    same_origin: bool,
    options: &Options,
    remaining: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let http = |e: ureq::http::Error| ureq::Error::Http(e);
    let with_body = method == Method::POST;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = match parsed {
        Some(uri) => uri.clone(),
        None => url.parse::<Uri>().map_err(|e| http(e.into()))?,
    };
    let map = request.headers_mut();
    map.reserve(headers.len());
    for (name, value) in headers.entries() {
        let skip = (!same_origin && !is_default_header(name))
            || (!with_body && name.eq_ignore_ascii_case("content-type"));
        if !skip {
            let value = match value {
                // The library's defaults: valid constants, used without a copy.
                Cow::Borrowed(text) => HeaderValue::from_static(text),
                Cow::Owned(text) => HeaderValue::from_str(text).map_err(|e| http(e.into()))?,
            };
            // The library's own names are constants; a caller's name is parsed.
            let known = match name {
                Cow::Borrowed(text) => known_name(text),
                Cow::Owned(_) => None,
            };
            let name = match known {
                Some(known) => known,
                None => HeaderName::from_bytes(name.as_bytes()).map_err(|e| http(e.into()))?,
            };
            map.append(name, value);
        }
    }
    let request = agent
        .configure_request(request)
        .timeout_global(Some(remaining))
        .timeout_connect(Some(options.connect_timeout))
        .build();
    agent.run(request)
}

#[allow(clippy::too_many_arguments)]
fn send_once(
    agent: &ureq::Agent,
    url: (&str, Option<&Uri>),
    headers: &Headers,
    body: Option<&[u8]>,
    same_origin: bool,
    options: &Options,
    remaining: Duration,
    stream: bool,
) -> Result<Response, ureq::Error> {
    let mut resp = match body {
        Some(body) => run(
            agent,
            Method::POST,
            url,
            body,
            headers,
            same_origin,
            options,
            remaining,
        )?,
        None => run(
            agent,
            Method::GET,
            url,
            (),
            headers,
            same_origin,
            options,
            remaining,
        )?,
    };
    let status = resp.status().as_u16();
    // Kept as ureq parsed them: most calls look at one or two (copied only for `full`).
    let resp_headers = std::mem::take(resp.headers_mut());
    let event_stream = stream
        && (200..300).contains(&status)
        && resp_headers.get_all("content-type").iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    if event_stream {
        let reader = resp
            .into_body()
            .into_with_config()
            .limit(options.max_response_bytes)
            .reader();
        return Ok(Response {
            status,
            headers: resp_headers,
            body: Vec::new(),
            stream: Some(EventStream(reader)),
        });
    }
    let body = read_body(&mut resp, options.max_response_bytes)?;
    Ok(Response {
        status,
        headers: resp_headers,
        body,
        stream: None,
    })
}

/// Maps the pages of `body`'s spare room up to length `end` before bytes are written there:
/// one system call (Linux's `MADV_POPULATE_WRITE`) instead of a page fault for every 4 KiB.
/// On this project's virtual machine, zeroing 48 MiB of fresh pages 256 KiB at a time took
/// 34 ms with a fault per page and 22 ms with each 256 KiB mapped first. Windows under 64 KiB
/// are left to faults. Returns whether the pages were mapped (false also on kernels before
/// 5.14, which refuse the advice: faults as before).
fn prefault(body: &mut Vec<u8>, end: usize) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let len = body.len();
        let spare = body.spare_capacity_mut();
        let want = end.saturating_sub(len).min(spare.len());
        if want < 64 * 1024 {
            return false;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        if !page.is_power_of_two() {
            return false;
        }
        let from = spare.as_mut_ptr() as usize;
        let first = from.next_multiple_of(page);
        let last = (from + want) & !(page - 1);
        if last <= first {
            return false;
        }
        // SAFETY: whole pages inside `body`'s allocation (its spare capacity), which this
        // function borrows mutably; the advice maps them writable without changing a byte.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_POPULATE_WRITE,
            )
        };
        rc == 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (body, end);
        false
    }
}

/// Reads the body, at most `limit` bytes. Content-Length never decides an allocation: a
/// declared length over the limit is refused before reading, at most [`UPFRONT_RESERVE`] is
/// reserved before bytes arrive, and the buffer grows (with `try_reserve`: a failed
/// reservation is `too_large`, not an abort) as bytes arrive, up to the declared length. The
/// buffer keeps one byte of room past the body, for the NUL the C API appends. Its room is
/// zeroed [`ZERO_AHEAD`] bytes at a time, just before the bytes land there.
fn read_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<Vec<u8>, ureq::Error> {
    let too_large = || ureq::Error::BodyExceedsLimit(limit);
    // For a gzip body ureq reports no length (it is the encoded size).
    let declared = resp.body().content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let cap = declared.unwrap_or(limit).min(limit);
    let mut reader = resp.body_mut().with_config().limit(limit).reader();
    // The hints below describe this body only: cleared however the reading ends.
    struct ClearHints;
    impl Drop for ClearHints {
        fn drop(&mut self) {
            connect::align_next_read_with(std::ptr::null());
            connect::expect_at_least(0);
        }
    }
    let _clear = ClearHints;
    let mut body: Vec<u8> = Vec::new();
    let first = usize::try_from(declared.unwrap_or(0).min(UPFRONT_RESERVE)).unwrap_or(0);
    body.try_reserve_exact(first + 1).map_err(|_| too_large())?;
    // `body[..filled]` holds what arrived; `body[filled..]` is zeroed room to read into, at
    // most ZERO_AHEAD bytes; `room` bytes are reserved (and one more, for the NUL).
    let mut room = first;
    let mut filled = 0;
    loop {
        if filled == room {
            if filled as u64 >= cap {
                // All that was declared arrived: one more read sees the end (and hands the
                // connection back to the pool) without growing the buffer.
                let mut probe = [0u8; 1];
                match read_some(&mut reader, &mut probe)? {
                    0 => break,
                    _ => {
                        body.try_reserve(2).map_err(|_| too_large())?;
                        body.push(probe[0]);
                        filled += 1;
                        room = filled;
                        continue;
                    }
                }
            }
            // Double, but never past the declared length (or the limit): a truthful server's
            // body ends in a buffer of exactly its size.
            let len = filled as u64;
            let grow = len.max(64 * 1024).min(cap.saturating_sub(len)).max(1);
            let grow = usize::try_from(grow).map_err(|_| too_large())?;
            room = room.checked_add(grow).ok_or_else(too_large)?;
            body.try_reserve_exact(room + 1 - body.len())
                .map_err(|_| too_large())?;
        }
        if filled == body.len() {
            // Mapped and zeroed just ahead of the bytes that will overwrite it: the zeroing
            // and the copy that follows meet in the cache, instead of two passes over the
            // whole buffer.
            let end = room.min(filled + ZERO_AHEAD);
            prefault(&mut body, end);
            body.resize(end, 0);
        }
        connect::align_next_read_with(body[filled..].as_ptr());
        if let Some(declared) = declared {
            connect::expect_at_least(declared.saturating_sub(filled as u64));
        }
        match read_some(&mut reader, &mut body[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    body.truncate(filled);
    Ok(body)
}

/// One read from a body reader, retried when interrupted; its error as ureq's.
fn read_some(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, ureq::Error> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result.map_err(into_ureq),
        }
    }
}

/// The ureq error inside an I/O error from a body reader, when there is one.
fn into_ureq(e: io::Error) -> ureq::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
        match e.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
            Some(Ok(err)) => *err,
            Some(Err(other)) => ureq::Error::Io(io::Error::other(other)),
            None => ureq::Error::Io(io::Error::other("read failed")),
        }
    } else {
        ureq::Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps_with_jitter() {
        for k in 0..8 {
            let want = (0.5 * 2f64.powi(k)).min(8.0);
            let got = backoff(k as u32).as_secs_f64();
            assert!(got <= want && got >= want * 0.75, "k={k} got={got}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let r = |h: Vec<(&'static str, &str)>| Response {
            status: 429,
            headers: h
                .into_iter()
                .map(|(a, b)| {
                    (
                        ureq::http::HeaderName::from_static(a),
                        ureq::http::HeaderValue::from_str(b).unwrap(),
                    )
                })
                .collect(),
            body: vec![],
            stream: None,
        };
        assert_eq!(
            server_wait(&r(vec![("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            server_wait(&r(vec![("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(server_wait(&r(vec![("retry-after", "500")])), None);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let got = server_wait(&r(vec![("retry-after", &date)])).unwrap();
        assert!(got > Duration::from_secs(25) && got <= Duration::from_secs(30));
        assert_eq!(server_wait(&r(vec![])), None);
    }

    fn body_of(bytes: Vec<u8>, declared: bool) -> ureq::http::Response<ureq::Body> {
        let body = if declared {
            ureq::Body::builder().data(bytes)
        } else {
            ureq::Body::builder().reader(io::Cursor::new(bytes))
        };
        ureq::http::Response::new(body)
    }

    #[test]
    fn read_body_returns_every_byte_in_a_buffer_of_the_declared_size_plus_the_nul() {
        // Sizes around the zeroed window and the up-front reserve, which the buffer crosses.
        let sizes = [
            0,
            1,
            ZERO_AHEAD - 1,
            ZERO_AHEAD,
            ZERO_AHEAD + 1,
            3 * ZERO_AHEAD + 17,
            UPFRONT_RESERVE as usize + 5,
        ];
        for size in sizes {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
            let got = read_body(&mut body_of(bytes.clone(), true), u64::MAX).unwrap();
            assert!(got == bytes, "declared {size}: the bytes differ");
            assert_eq!(got.capacity(), size + 1, "declared {size}: capacity");
            let got = read_body(&mut body_of(bytes.clone(), false), u64::MAX).unwrap();
            assert!(got == bytes, "undeclared {size}: the bytes differ");
            assert!(
                got.capacity() > size,
                "undeclared {size}: no room for the NUL"
            );
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn prefault_maps_the_window_ahead_and_keeps_the_bytes() {
        // 64 MiB of capacity: fresh pages from the kernel (above glibc's mmap threshold).
        let mut body: Vec<u8> = Vec::with_capacity(64 << 20);
        body.extend((0..100_000u32).map(|i| i as u8));
        let window = 1 << 20;
        let end = body.len() + window;
        if !prefault(&mut body, end) {
            // A kernel before 5.14: the advice is refused and pages fault in as before.
            eprintln!("skipped: MADV_POPULATE_WRITE refused by this kernel");
            return;
        }
        let spare = body.spare_capacity_mut().as_ptr().cast::<u8>();
        let ahead = crate::core::resident_pages(spare, window);
        let beyond = crate::core::resident_pages(spare.wrapping_add(window + 4096), 8 << 20);
        assert!(
            ahead >= window / 4096 - 1,
            "{ahead} pages of the window resident"
        );
        assert!(beyond <= 1, "{beyond} pages past the window resident");
        assert!(body.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Small windows are left to page faults.
        assert!(!prefault(&mut body, 100_000 + 4096));
    }

    #[test]
    fn read_body_refuses_a_body_over_the_limit_declared_or_not() {
        let bytes = vec![b'x'; 3 * ZERO_AHEAD];
        let limit = 2 * ZERO_AHEAD as u64;
        for declared in [true, false] {
            let got = read_body(&mut body_of(bytes.clone(), declared), limit);
            assert!(
                matches!(got, Err(ureq::Error::BodyExceedsLimit(_))),
                "declared {declared}: {got:?}"
            );
        }
        let exact = read_body(&mut body_of(bytes.clone(), false), bytes.len() as u64).unwrap();
        assert_eq!(exact.len(), bytes.len());
    }
}
