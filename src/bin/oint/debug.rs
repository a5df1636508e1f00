//! `--debug`: what is sent and received, on stderr, from the library's trace events.
//!
//! The library already shows `Authorization` as `Bearer ***`; every line is also scrubbed of
//! the token itself, in case the caller put it in another header or in the URL.

use opi_openai::{Options, TraceEvent};
use serde_json::{Map, Value};
use std::time::Duration;

/// Strings longer than this are shortened in the printed body (base64 images, long prompts).
const LONG_STRING: usize = 200;
/// How much of a shortened string is kept.
const KEPT: usize = 60;

/// The `--debug` printer; prints nothing when off.
pub struct Log<'a> {
    on: bool,
    token: &'a str,
}

impl<'a> Log<'a> {
    /// A log that prints when `on`, hiding `token`.
    pub fn new(on: bool, token: &'a str) -> Log<'a> {
        Log { on, token }
    }

    /// Prints one line, prefixed `oint: `, with the token hidden.
    pub fn line(&self, text: &str) {
        if !self.on {
            return;
        }
        eprintln!("oint: {}", self.hide(text));
    }

    /// `text` with the token shown as `***`, under the library's one redaction rule
    /// ([`opi_openai::redact`]: tokens under 8 bytes are left).
    fn hide(&self, text: &str) -> String {
        opi_openai::redact(text, self.token)
    }

    /// The options in force: the merged options object as given, and the effective limits.
    pub fn options(&self, given: &Map<String, Value>, options: &Options) {
        let mut shown = given.clone();
        if let Some(Value::String(proxy)) = shown.get_mut("proxy") {
            *proxy = without_userinfo(proxy);
        }
        self.line(&format!("options given: {}", Value::Object(shown)));
        self.line(&format!(
            "options in force: timeout {} s, connect timeout {} s, retries {}, max response {} MiB",
            options.timeout.as_secs_f64(),
            options.connect_timeout.as_secs_f64(),
            options.retries,
            options.max_response_bytes >> 20
        ));
    }

    /// Prints one trace event.
    pub fn event(&self, event: &TraceEvent) {
        match event {
            TraceEvent::Request { url, headers, body } => {
                self.line(&format!("POST {url}"));
                for (name, value) in headers {
                    self.line(&format!("  {name}: {value}"));
                }
                self.line(&format!("body: {}", shorten_json(body)));
            }
            TraceEvent::Attempt {
                attempt,
                status,
                elapsed,
                bytes,
                request_id,
                error,
                retry_in,
            } => {
                let mut text = format!("attempt {attempt}: ");
                match (status, error) {
                    (Some(status), _) => text.push_str(&format!("HTTP {status}, {bytes} bytes")),
                    (None, Some(error)) => text.push_str(&format!("failed: {error}")),
                    (None, None) => text.push_str("no answer"),
                }
                text.push_str(&format!(", in {}", millis(*elapsed)));
                if let Some(id) = request_id {
                    text.push_str(&format!(", x-request-id {id}"));
                }
                if let Some(wait) = retry_in {
                    text.push_str(&format!("; retrying in {}", millis(*wait)));
                }
                self.line(&text);
            }
            TraceEvent::Download {
                url,
                attempt,
                status,
                elapsed,
                bytes,
                error,
            } => {
                let outcome = match (status, error) {
                    (_, Some(error)) => format!("failed: {error}"),
                    (Some(status), None) => format!("HTTP {status}, {bytes} bytes"),
                    (None, None) => "no answer".to_string(),
                };
                self.line(&format!(
                    "download {url}, attempt {attempt}: {outcome}, in {}",
                    millis(*elapsed)
                ));
            }
            // Notices are for everyone, --debug or not: TLS verification off, the proxy in
            // use, a log file that cannot be opened.
            TraceEvent::Notice(text) => {
                let kind = if *text == opi_openai::TLS_VERIFY_OFF {
                    "warning"
                } else {
                    "notice"
                };
                eprintln!("oint: {kind}: {}", self.hide(text));
            }
            _ => self.line(&format!("{event:?}")),
        }
    }

    /// The end of the call: total time and what the result is.
    pub fn finished(&self, elapsed: Duration, result: &str) {
        let kind = match serde_json::from_str::<Value>(result) {
            Ok(v) => match v.get("error") {
                Some(e) => format!(
                    "an error ({}: {})",
                    e.get("type").and_then(Value::as_str).unwrap_or("?"),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ),
                None => "a result".to_string(),
            },
            Err(_) => "text that is not JSON".to_string(),
        };
        self.line(&format!(
            "done in {}: {} bytes, {kind}",
            millis(elapsed),
            result.len()
        ));
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `scheme://user:pass@host` → `scheme://***@host` (proxy credentials are secrets too).
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The body with every string longer than [`LONG_STRING`] characters shortened.
pub fn shorten_json(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut value) => {
            shorten(&mut value);
            value.to_string()
        }
        Err(_) => shorten_str(body).unwrap_or_else(|| body.to_string()),
    }
}

fn shorten(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Some(short) = shorten_str(s) {
                *s = short;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(shorten),
        Value::Object(map) => map.values_mut().for_each(shorten),
        _ => {}
    }
}

fn shorten_str(s: &str) -> Option<String> {
    let count = s.chars().count();
    (count > LONG_STRING).then(|| {
        let kept: String = s.chars().take(KEPT).collect();
        format!("{kept}... ({count} characters)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_shortened_short_ones_kept() {
        let long = "x".repeat(500);
        let body = format!(r#"{{"prompt":"short","data":[{{"b64_json":"{long}"}}]}}"#);
        let shown = shorten_json(&body);
        assert!(shown.contains(r#""prompt":"short""#));
        assert!(shown.contains("(500 characters)"));
        assert!(!shown.contains(&"x".repeat(61)));
    }

    #[test]
    fn proxy_credentials_are_hidden() {
        assert_eq!(
            without_userinfo("http://u:p@proxy:8080/x"),
            "http://***@proxy:8080/x"
        );
        assert_eq!(
            without_userinfo("socks5://proxy:1080"),
            "socks5://proxy:1080"
        );
    }
}
