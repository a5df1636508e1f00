//! Turning a response into the result JSON (contract points a-c; d is [`super::Error`]).

use super::error::{redact, scrubbable};
use super::json_scan::{self, NotJson};
use super::transport::Response;
use serde_json::json;

/// Most of a non-JSON body quoted back in `error.body`.
const BODY_EXCERPT: usize = 2048;

/// The UTF-8 byte-order mark some Windows servers put before their JSON.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The result JSON for a response: a JSON body as is (byte for byte, without a leading UTF-8
/// byte-order mark, and with `token` scrubbed from its strings: see [`json_scan`]); for an
/// empty body, `{}` after a 2xx and an `opi_invalid_response` error `empty_body` otherwise;
/// else an `opi_invalid_response` error `not_json` quoting the start of the body. The error
/// objects are ours, so `token` is scrubbed from their excerpt and content type (a proxy's
/// error page may echo the request's headers).
pub fn classify(resp: Response, token: &str) -> String {
    let Response {
        status,
        headers,
        mut body,
        ..
    } = resp;
    // Only an error object quotes it.
    let content_type = || {
        headers
            .get("content-type")
            .map(|v| redact(&String::from_utf8_lossy(v.as_bytes()), token))
    };
    if body.starts_with(BOM) {
        body.drain(..BOM.len());
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        if (200..300).contains(&status) {
            return "{}".to_string();
        }
        return json!({"error": {
            "type": "opi_invalid_response",
            "code": "empty_body",
            "message": format!("the server answered HTTP {status} with an empty body"),
            "status": status,
            "content_type": content_type(),
        }})
        .to_string();
    }
    // One pass: UTF-8, JSON and the token scrub.
    let (body, why) = match json_scan::scrub_json(body, token) {
        Ok(text) => return text,
        Err(not) => not,
    };
    let excerpt = excerpt(&body, token);
    json!({"error": {
        "type": "opi_invalid_response",
        "code": "not_json",
        "message": format!(
            "the server answered HTTP {status} with {} bytes that are not {}",
            body.len(),
            match why {
                NotJson::Utf8 => "UTF-8 text",
                NotJson::TooDeep => "JSON (arrays and objects nested too deep)",
                NotJson::Syntax => "JSON",
            }
        ),
        "status": status,
        "content_type": content_type(),
        "body": excerpt,
    }})
    .to_string()
}

/// The first [`BODY_EXCERPT`] bytes of `body` as lossy UTF-8, with `token` replaced by `***`.
/// The cut never splits an occurrence of the token, which would quote its start.
fn excerpt(body: &[u8], token: &str) -> String {
    let mut cut = body.len().min(BODY_EXCERPT);
    let secret = token.as_bytes();
    // As `redact`: shorter secrets are not scrubbed. An occurrence starting in the last
    // len-1 bytes before the cut crosses it.
    if scrubbable(token) {
        if let Some(start) =
            (cut.saturating_sub(secret.len() - 1)..cut).find(|&i| body[i..].starts_with(secret))
        {
            cut = start;
        }
    }
    redact(&String::from_utf8_lossy(&body[..cut]), token)
}

/// OPI's `adv_response` shape for `response: "full"`: `{"status": N, "headers": {name:
/// value}, "body": <body>}`. `body` must be JSON text (every result is); it is spliced in as
/// is, so a large body is neither parsed again nor changed. Header names are lowercase; a
/// header sent more than once has its values joined with ", " (as HTTP allows). `token` is
/// scrubbed from the headers (the body has been already).
pub fn full(status: u16, headers: &[(String, String)], body: &str, token: &str) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match map.get_mut(&name) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                map.insert(name, serde_json::Value::String(value.clone()));
            }
        }
    }
    let headers = json_scan::scrub_json_text(serde_json::Value::Object(map).to_string(), token);
    let mut out = String::with_capacity(body.len() + headers.len() + 40);
    out.push_str(&format!(
        "{{\"status\":{status},\"headers\":{headers},\"body\":"
    ));
    out.push_str(body.trim());
    out.push('}');
    out
}
