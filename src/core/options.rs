//! Call options: one object shared by every front end (C, CLI, 1C add-in).
//!
//! Every key is checked here, once, when the options are parsed: an unknown key or a value of
//! the wrong type is an error naming the key, so a typo never silently means "default".

use super::error::Error;
use super::input::{kind_of, parse_optional_object};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a call returns for a response: the body alone, or OPI's `adv_response` shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResponseShape {
    /// The body (the server's JSON, or an error object). The default.
    #[default]
    Body,
    /// `{"status": N, "headers": {name: value}, "body": <the body>}`.
    Full,
}

/// How a call is made. Built from defaults, or from an options JSON with [`Options::parse`].
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Limit for the whole call, retries, waits and image downloads included. Defaults to
    /// 3600 s (OPI's).
    pub timeout: Duration,
    /// Limit for setting up one connection (TCP, proxy, TLS). Defaults to 30 s.
    pub connect_timeout: Duration,
    /// Retries after a retryable failure; 0 disables. Defaults to 2.
    pub retries: u32,
    /// Largest response body accepted, in bytes (also per downloaded image). Defaults to 1 GiB.
    pub max_response_bytes: u64,
    /// The proxy URL (`http://`, `https://`, `socks5://`, `socks5h://`, with optional
    /// `user:password@`). `Some("")` means a direct connection whatever the environment says.
    /// Defaults to `None`: the `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` environment
    /// variables decide.
    pub proxy: Option<String>,
    /// A PEM bundle of extra trusted roots (absolute path), trusted in addition to the system
    /// store: the root of a TLS-inspecting firewall. Defaults to `None` (the system store).
    pub ca_file: Option<PathBuf>,
    /// Whether server certificates are verified. Defaults to `true`; `false` is never implied
    /// by another key, and is reported by a [`super::TraceEvent::Notice`] and in `log_file`.
    pub tls_verify: bool,
    /// What a response becomes. Defaults to [`ResponseShape::Body`].
    pub response: ResponseShape,
    /// A folder (absolute path) where every returned image is written, decoded from
    /// `b64_json` or downloaded from `url`; each data item gains `"file"`. Defaults to `None`.
    pub save_dir: Option<PathBuf>,
    /// With `save_dir`, remove the `b64_json` strings from the result. Defaults to `false`.
    pub drop_b64: bool,
    /// A file (absolute path) that gets one line per attempt appended: time, method, URL,
    /// status, bytes, duration, retry wait, request id; never the token or a body. Defaults
    /// to `None`.
    pub log_file: Option<PathBuf>,
    /// How many calls of a batch run at once, 1 to 16. Defaults to 4.
    pub parallel: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(30),
            retries: 2,
            max_response_bytes: 1 << 30,
            proxy: None,
            ca_file: None,
            tls_verify: true,
            response: ResponseShape::Body,
            save_dir: None,
            drop_b64: false,
            log_file: None,
            parallel: 4,
        }
    }
}

// By hand: a proxy password must not reach `{:?}` output (the CLI's --debug prints options).
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("proxy", &self.proxy.as_deref().map(redact_proxy))
            .field("ca_file", &self.ca_file)
            .field("tls_verify", &self.tls_verify)
            .field("response", &self.response)
            .field("save_dir", &self.save_dir)
            .field("drop_b64", &self.drop_b64)
            .field("log_file", &self.log_file)
            .field("parallel", &self.parallel)
            .finish()
    }
}

/// Most calls of a batch at once (`parallel`).
const MAX_PARALLEL: u64 = 16;

/// The keys an options object may hold (`adv_response` is OPI's name for `response`).
pub const OPTION_KEYS: &[&str] = &[
    "timeout",
    "connect_timeout",
    "retries",
    "max_response_mb",
    "proxy",
    "ca_file",
    "tls_verify",
    "response",
    "adv_response",
    "save_dir",
    "drop_b64",
    "log_file",
    "parallel",
];

impl Options {
    /// Parses an options JSON (object text, single-quoted, or `.json` path; empty means
    /// defaults). Unknown keys and values of the wrong type are errors naming the key; `null`
    /// leaves a key at its default. Relative paths are made absolute against the current
    /// folder now, so a later change of folder does not move the files.
    pub fn parse(text: &str) -> Result<Options, Error> {
        let mut options = Options::default();
        let Some(map) = parse_optional_object(text, "options")? else {
            return Ok(options);
        };
        for (key, value) in &map {
            if value.is_null() {
                if !OPTION_KEYS.contains(&key.as_str()) {
                    return Err(unknown_key(key));
                }
                continue;
            }
            match key.as_str() {
                "timeout" => options.timeout = seconds(key, value)?,
                "connect_timeout" => options.connect_timeout = seconds(key, value)?,
                "retries" => options.retries = count(key, value, 10)? as u32,
                "max_response_mb" => {
                    options.max_response_bytes = count(key, value, 1 << 20)?.max(1) << 20
                }
                "proxy" => options.proxy = Some(proxy(value)?),
                "ca_file" => {
                    let path = absolute(key, value)?;
                    check_ca_file(&path)?;
                    options.ca_file = Some(path);
                }
                "tls_verify" => options.tls_verify = boolean(key, value)?,
                "response" => options.response = response(value)?,
                "adv_response" => {
                    options.response = if boolean(key, value)? {
                        ResponseShape::Full
                    } else {
                        ResponseShape::Body
                    }
                }
                "save_dir" => {
                    let path = absolute(key, value)?;
                    if path.exists() && !path.is_dir() {
                        return Err(invalid(format!(
                            "options: save_dir {} is a file, not a folder",
                            path.display()
                        )));
                    }
                    options.save_dir = Some(path);
                }
                "drop_b64" => options.drop_b64 = boolean(key, value)?,
                "log_file" => {
                    let path = absolute(key, value)?;
                    if path.is_dir() {
                        return Err(invalid(format!(
                            "options: log_file {} is a folder, not a file",
                            path.display()
                        )));
                    }
                    options.log_file = Some(path);
                }
                "parallel" => match value.as_u64() {
                    Some(n @ 1..=MAX_PARALLEL) => options.parallel = n as usize,
                    _ => {
                        return Err(invalid(format!(
                        "options: parallel must be a whole number from 1 to {MAX_PARALLEL}, not {}",
                        shown(value)
                    )))
                    }
                },
                _ => return Err(unknown_key(key)),
            }
        }
        if map.contains_key("response") && map.contains_key("adv_response") {
            return Err(invalid(
                "options: give response or adv_response (OPI's name for it), not both",
            ));
        }
        // Dropping the strings without saving them would throw the paid-for images away.
        if options.drop_b64 && options.save_dir.is_none() {
            return Err(invalid(
                "options: drop_b64 needs save_dir (without it the images would be lost)",
            ));
        }
        Ok(options)
    }
}

/// One version of a file: its size and modification time.
pub(crate) type FileVersion = (u64, Option<std::time::SystemTime>);

/// How long a checked `ca_file` is taken as unchanged without looking at it again.
const CA_FILE_RECHECK: Duration = Duration::from_secs(1);

/// Checked `ca_file`s: path -> (the version found valid, when it was last looked at).
static CHECKED: Mutex<Option<HashMap<PathBuf, (FileVersion, Instant)>>> = Mutex::new(None);

/// Checks that `path` is a readable PEM file with a certificate, as [`load_ca_file`] does,
/// once per version of the file, and looks at the file at most once a second: a call with
/// `ca_file` parses its options every time, and reading and decoding the file cost more than
/// the rest of a small call's set-up (a `stat` per call was one more system call than a call
/// without it). A file whose size or modification time changed is read again; its version
/// is part of the agent's key, so its new roots are what the next call trusts.
fn check_ca_file(path: &Path) -> Result<(), Error> {
    ca_file_version(path).map(|_| ())
}

/// The version of `path` found valid (see [`check_ca_file`]).
pub(crate) fn ca_file_version(path: &Path) -> Result<FileVersion, Error> {
    let cached = CHECKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|c| c.get(path).copied());
    if let Some((version, at)) = cached {
        if at.elapsed() < CA_FILE_RECHECK {
            return Ok(version);
        }
    }
    let version = std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()));
    let unchanged = version.is_some() && cached.map(|(v, _)| v) == version;
    if !unchanged {
        load_ca_file(path)?;
    }
    // A file that could be read but not stat'ed (rare) is checked at every call.
    let Some(version) = version else {
        return Ok((0, None));
    };
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    let map = checked.get_or_insert_with(HashMap::new);
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(path.to_path_buf(), (version, Instant::now()));
    Ok(version)
}

/// Reads a PEM bundle: every certificate in it, at least one.
pub(crate) fn load_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, Error> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        invalid(format!(
            "options: ca_file {shown} could not be read: {reason}"
        ))
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => {
                return Err(invalid(format!(
                    "options: ca_file {shown} is not a valid PEM file: {e}"
                )))
            }
        }
    }
    if certs.is_empty() {
        return Err(invalid(format!(
            "options: ca_file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// A proxy URL with its password replaced by `***`, for output.
pub(crate) fn redact_proxy(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[rest_at..].find('/').map_or(url.len(), |i| rest_at + i);
    let Some(at) = url[rest_at..authority_end].rfind('@').map(|i| rest_at + i) else {
        return url.to_string();
    };
    match url[rest_at..at].find(':').map(|i| rest_at + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_string(),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("options", message)
}

fn unknown_key(key: &str) -> Error {
    invalid(format!(
        "options: unknown key {key:?} (known: {})",
        OPTION_KEYS.join(", ")
    ))
}

/// The proxy schemes accepted (ureq also knows SOCKS4, which sends no password and resolves
/// names locally: not offered).
const PROXY_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

fn proxy(value: &Value) -> Result<String, Error> {
    match value {
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(String::new());
            }
            check_proxy_url(text)?;
            Ok(text.to_string())
        }
        Value::Object(map) => proxy_from_map(map),
        other => Err(invalid(format!(
            "options: proxy must be a URL string or an object {{\"Protocol\", \"Host\", \"Port\", \"User\", \"Password\"}}, not {}",
            kind_of(other)
        ))),
    }
}

fn check_proxy_url(text: &str) -> Result<(), Error> {
    let scheme = text
        .split_once("://")
        .map_or("http", |(s, _)| s)
        .to_ascii_lowercase();
    let shown = redact_proxy(text);
    if !PROXY_SCHEMES.contains(&scheme.as_str()) {
        return Err(invalid(format!(
            "options: proxy {shown} has the scheme {scheme:?}; use http, https, socks5 or socks5h"
        )));
    }
    match ureq::Proxy::new(text) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(format!(
            "options: proxy {shown} is not a valid proxy URL"
        ))),
    }
}

/// OPI's proxy structure: `{"Protocol", "Host", "Port", "User", "Password"}` (names in any
/// case), turned into a URL through ureq's builder, which percent-encodes the credentials.
fn proxy_from_map(map: &Map<String, Value>) -> Result<String, Error> {
    let (mut protocol, mut host, mut port, mut user, mut password) = (None, None, None, None, None);
    for (key, value) in map {
        let text = || -> Result<String, Error> {
            match value {
                Value::String(s) => Ok(s.trim().to_string()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(invalid(format!(
                    "options: proxy.{key} must be a string, not {}",
                    kind_of(other)
                ))),
            }
        };
        match key.to_ascii_lowercase().as_str() {
            "protocol" => protocol = Some(text()?),
            "host" => host = Some(text()?),
            "port" => {
                let port_text = text()?;
                port = Some(port_text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    invalid(format!("options: proxy.{key} must be a port number from 1 to 65535"))
                })?)
            }
            "user" => user = Some(text()?),
            "password" => password = Some(text()?),
            _ => {
                return Err(invalid(format!(
                    "options: unknown key \"proxy.{key}\" (known: Protocol, Host, Port, User, Password)"
                )))
            }
        }
    }
    let host = host
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("options: proxy.Host is required"))?;
    let protocol = protocol
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "http".to_string())
        .to_ascii_lowercase();
    // OPI writes the protocol as "http" or "http://"; both are accepted.
    let protocol = protocol.trim_end_matches("://").to_string();
    if !PROXY_SCHEMES.contains(&protocol.as_str()) {
        return Err(invalid(format!(
            "options: proxy.Protocol {protocol:?} is not supported; use http, https, socks5 or socks5h"
        )));
    }
    let kind = match protocol.as_str() {
        "https" => ureq::ProxyProtocol::Https,
        "socks5" => ureq::ProxyProtocol::Socks5,
        "socks5h" => ureq::ProxyProtocol::Socks5h,
        _ => ureq::ProxyProtocol::Http,
    };
    let mut builder = ureq::Proxy::builder(kind).host(&host);
    if let Some(port) = port {
        builder = builder.port(port);
    }
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        builder = builder.username(&user);
        if let Some(password) = password {
            builder = builder.password(&password);
        }
    }
    let built = builder.build().map_err(|_| {
        invalid(format!(
            "options: proxy.Host {host:?} is not a valid host name"
        ))
    })?;
    // The builder writes the scheme in capitals ("HTTP://"); the URL is ours to show.
    let uri = built.uri().to_string();
    let rest = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r);
    Ok(format!("{protocol}://{}", rest.trim_end_matches('/')))
}

fn response(value: &Value) -> Result<ResponseShape, Error> {
    match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("body") => Ok(ResponseShape::Body),
        Some("full") => Ok(ResponseShape::Full),
        _ => Err(invalid(format!(
            "options: response must be \"body\" or \"full\", not {}",
            match value {
                Value::String(s) => format!("{s:?}"),
                other => kind_of(other).to_string(),
            }
        ))),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, Error> {
    value.as_bool().ok_or_else(|| {
        invalid(format!(
            "options: {key} must be true or false, not {}",
            shown(value)
        ))
    })
}

fn absolute(key: &str, value: &Value) -> Result<PathBuf, Error> {
    match value {
        Value::String(s) if !s.trim().is_empty() => std::path::absolute(s.trim())
            .map_err(|e| invalid(format!("options: {key} {s:?} is not a usable path: {e}"))),
        other => Err(invalid(format!(
            "options: {key} must be a non-empty path string, not {}",
            match other {
                Value::String(_) => "an empty string",
                other => kind_of(other),
            }
        ))),
    }
}

fn seconds(key: &str, value: &Value) -> Result<Duration, Error> {
    match value.as_f64() {
        Some(s) if s > 0.0 && s <= 7.0 * 86400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(invalid(format!(
            "options: {key} must be a number of seconds above 0, not {}",
            shown(value)
        ))),
    }
}

fn count(key: &str, value: &Value, max: u64) -> Result<u64, Error> {
    match value.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(invalid(format!(
            "options: {key} must be a whole number from 0 to {max}, not {}",
            shown(value)
        ))),
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => kind_of(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_password_is_redacted() {
        assert_eq!(redact_proxy("http://u:secret@h:1"), "http://u:***@h:1");
        assert_eq!(
            redact_proxy("socks5://u:p@ss@h:1/x@y"),
            "socks5://u:***@h:1/x@y"
        );
        assert_eq!(redact_proxy("http://h:3128"), "http://h:3128");
        assert_eq!(redact_proxy("u:pw@h:1"), "u:***@h:1");
        let options = Options::parse(r#"{"proxy": "http://u:hunter22@127.0.0.1:9"}"#).unwrap();
        assert!(!format!("{options:?}").contains("hunter22"));
    }

    #[test]
    fn opi_proxy_map_becomes_a_url() {
        let options = Options::parse(
            r#"{"proxy": {"Protocol": "http", "Host": "proxy.local", "Port": 3128, "User": "me", "Password": "p@ss:w"}}"#,
        )
        .unwrap();
        let url = options.proxy.unwrap();
        assert_eq!(url, "http://me:p%40ss%3Aw@proxy.local:3128");
        let parsed = ureq::Proxy::new(&url).unwrap();
        assert_eq!(parsed.password(), Some("p@ss:w"));
        assert_eq!(parsed.port(), 3128);
    }

    #[test]
    fn wrong_proxy_forms_name_the_key() {
        for text in [
            r#"{"proxy": 5}"#,
            r#"{"proxy": "ftp://h:1"}"#,
            r#"{"proxy": {"Host": "h", "Colour": "red"}}"#,
            r#"{"proxy": {"Port": 1}}"#,
        ] {
            let err = Options::parse(text).unwrap_err();
            assert_eq!(err.param(), Some("options"));
            assert!(err.to_string().contains("proxy"), "{text}: {err}");
        }
    }

    #[test]
    fn null_keeps_the_default_and_adv_response_is_opis_name() {
        let options = Options::parse(r#"{"timeout": null, "adv_response": true}"#).unwrap();
        assert_eq!(options.timeout, Duration::from_secs(3600));
        assert_eq!(options.response, ResponseShape::Full);
    }
}
