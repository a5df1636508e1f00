//! Turning a response into the result JSON (contract points a-c; d is [`super::Error`]).

use super::error::redact;
use super::transport::Response;
use serde::de::IgnoredAny;
use serde_json::json;

/// Most of a non-JSON body quoted back in `error.body`.
const BODY_EXCERPT: usize = 2048;

/// The result JSON for a response: a JSON body as is (byte for byte), `{}` for an empty body,
/// else an `opi_invalid_response` error object quoting the start of the body. That object is
/// ours, so `token` is scrubbed from its excerpt and content type (a proxy's error page may
/// echo the request's headers).
pub fn classify(resp: Response, token: &str) -> String {
    let Response {
        status,
        headers,
        body,
        ..
    } = resp;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return "{}".to_string();
    }
    // One UTF-8 pass (fast), then a validating parse that builds nothing.
    let body = match String::from_utf8(body) {
        Ok(text) if serde_json::from_str::<IgnoredAny>(&text).is_ok() => return text,
        Ok(text) => text.into_bytes(),
        Err(e) => e.into_bytes(),
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| redact(v, token));
    let utf8 = std::str::from_utf8(&body).is_ok();
    let excerpt = excerpt(&body, token);
    json!({"error": {
        "type": "opi_invalid_response",
        "code": "not_json",
        "message": format!(
            "the server answered HTTP {status} with {} bytes that are not {}",
            body.len(),
            if utf8 { "JSON" } else { "UTF-8 text" }
        ),
        "status": status,
        "content_type": content_type,
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
    if secret.len() >= 4 {
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
/// header sent more than once has its values joined with ", " (as HTTP allows).
pub fn full(status: u16, headers: &[(String, String)], body: &str) -> String {
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
    let headers = serde_json::Value::Object(map).to_string();
    let mut out = String::with_capacity(body.len() + headers.len() + 40);
    out.push_str(&format!(
        "{{\"status\":{status},\"headers\":{headers},\"body\":"
    ));
    out.push_str(body.trim());
    out.push('}');
    out
}
