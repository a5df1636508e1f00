//! Turning a response into the result JSON (contract points a-c; d is [`super::Error`]).

use super::transport::Response;
use serde::de::IgnoredAny;
use serde_json::json;

/// Most of a non-JSON body quoted back in `error.body`.
const BODY_EXCERPT: usize = 2048;

/// The result JSON for a response: a JSON body as is (byte for byte), `{}` for an empty body,
/// else an `opi_invalid_response` error object quoting the start of the body.
pub fn classify(resp: Response) -> String {
    let Response {
        status,
        headers,
        body,
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
        .map(|(_, v)| v.clone());
    let utf8 = std::str::from_utf8(&body).is_ok();
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]).into_owned();
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
