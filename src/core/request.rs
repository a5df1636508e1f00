//! Building what is sent: the JSON body and the header list.

use super::error::Error;
use super::input::{kind_of, parse_object, parse_optional_object, JsonObject};
use serde_json::Value;
use std::borrow::Cow;

/// The library's version, as sent in `User-Agent` and returned by `opi_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `User-Agent` sent unless the caller overrides it.
pub const USER_AGENT: &str = concat!("opi_openai/", env!("CARGO_PKG_VERSION"));

/// Longest token accepted: far beyond any real key (JWTs included), and well inside the
/// request-header limit, so that an oversized token is named as the argument at fault.
const MAX_TOKEN: usize = 64 * 1024;

/// The headers OPI sends by default (before the caller's and before Authorization).
const DEFAULT_HEADERS: [(&str, &str); 6] = [
    ("Accept", "*/*"),
    ("Accept-Charset", "utf-8"),
    ("Accept-Encoding", "gzip"),
    ("Connection", "keep-alive"),
    ("Content-Type", "application/json; charset=utf-8"),
    ("User-Agent", USER_AGENT),
];

/// Header names the library sends itself and a caller may not set: the message's framing
/// (`Content-Length`, `Transfer-Encoding`), `Host`, and the hop-by-hop names of RFC 9110
/// section 7.6.1 (plus `Keep-Alive` and `Proxy-Connection`). Sent by a caller they would
/// contradict the request ureq writes, and the failure would be blamed on the server.
/// (`Connection: keep-alive` is one of our defaults, never a caller's.)
const RESERVED_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Whether `name` is one of the library's own default headers (any case): across origins,
/// a redirect carries only these.
pub(crate) fn is_default_header(name: &str) -> bool {
    DEFAULT_HEADERS
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Builds the request body: `model` first when `model` is non-empty, then every field of the
/// description in its order; a `model` inside the description wins (and keeps the first place).
pub fn build_body(model: &str, descr: &str) -> Result<String, Error> {
    body_with(model, descr, None)
}

/// [`build_body`] with `"stream": true` (replacing a `stream` the description gives, in its
/// place; else last).
pub fn build_stream_body(model: &str, descr: &str) -> Result<String, Error> {
    body_with(model, descr, Some(("stream", "true")))
}

fn body_with(model: &str, descr: &str, set: Option<(&str, &str)>) -> Result<String, Error> {
    match plain_fields(descr) {
        Some(fields) => write_body(model, &fields, set),
        None => general_body(model, descr, set),
    }
}

/// The body through a parsed object: any description [`parse_object`] accepts. (The fuzz
/// target holds [`build_body`] to it.)
pub(crate) fn general_body(
    model: &str,
    descr: &str,
    set: Option<(&str, &str)>,
) -> Result<String, Error> {
    let map = parse_object(descr, "descr")?;
    let texts: Vec<String> = map.values().map(Value::to_string).collect();
    let fields: Vec<(&str, &str)> = map
        .keys()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    write_body(model, &fields, set)
}

/// Most fields a description may have for [`plain_fields`] (a repeated key is looked for
/// among those before it); a longer one takes the general path.
const PLAIN_FIELDS_MAX: usize = 32;

/// The description's fields as written, when it is a JSON object whose keys have no escapes
/// and whose values are all ones serde_json would write back byte for byte: `true`, `false`,
/// `null`, an integer of at most 18 digits (not `-0`), or a string without escapes. Such a
/// description (every one OPI's examples give) needs no tree of values: its body is the same
/// text [`parse_object`] and a re-serialisation would give. `None` sends everything else down
/// that general path (single quotes, files, floats, nested values, escapes, errors).
///
/// A repeated key keeps its first place and takes the last value, as in a parsed object.
fn plain_fields(descr: &str) -> Option<Vec<(&str, &str)>> {
    use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
    use serde_json::value::RawValue;

    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(&'de str, &'de str)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields: Vec<(&'de str, &'de str)> = Vec::with_capacity(8);
            while let Some((key, value)) = map.next_entry::<&'de str, &'de RawValue>()? {
                let value = value.get();
                if !writes_back_unchanged(value) {
                    return Err(A::Error::custom("not plain"));
                }
                if let Some(field) = fields.iter_mut().find(|(k, _)| *k == key) {
                    field.1 = value;
                } else if fields.len() < PLAIN_FIELDS_MAX {
                    fields.push((key, value));
                } else {
                    return Err(A::Error::custom("too many fields"));
                }
            }
            Ok(fields)
        }
    }

    let text = descr.trim();
    if !text.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de).deserialize_map(Fields).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// Whether serde_json, parsing the JSON text `raw` into a value and writing it, gives `raw`.
fn writes_back_unchanged(raw: &str) -> bool {
    match raw.as_bytes() {
        b"true" | b"false" | b"null" | b"0" => true,
        // A string without escapes: serde_json escapes only `"`, `\` and control characters,
        // and a string written without escapes has none of them.
        [b'"', inner @ .., b'"'] => !inner.contains(&b'\\'),
        // An integer fits u64 or i64 up to 18 digits; `-0` would come back as `-0.0`.
        [b'-', digits @ ..] | digits => {
            matches!(digits.first(), Some(b'1'..=b'9'))
                && digits.len() <= 18
                && digits.iter().all(u8::is_ascii_digit)
        }
    }
}

/// Writes the body from the description's fields, each value as JSON text. `set` replaces a
/// field in its place, or comes last.
fn write_body(
    model: &str,
    fields: &[(&str, &str)],
    set: Option<(&str, &str)>,
) -> Result<String, Error> {
    let size = fields
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size + model.len() + 32);
    out.push(b'{');
    // Each value is JSON text; the key is written as a JSON string.
    let field = |out: &mut Vec<u8>, key: &str, json: &str| {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).map_err(body_error)?;
        out.push(b':');
        out.extend_from_slice(json.as_bytes());
        Ok::<(), Error>(())
    };
    if !model.is_empty() {
        match fields.iter().find(|(k, _)| *k == "model") {
            Some((_, value)) => field(&mut out, "model", value)?,
            None => field(
                &mut out,
                "model",
                &serde_json::to_string(model).map_err(body_error)?,
            )?,
        }
    }
    let mut pending = set;
    for &(key, value) in fields {
        if !model.is_empty() && key == "model" {
            continue;
        }
        let value = match pending {
            Some((name, replacement)) if name == key => {
                pending = None;
                replacement
            }
            _ => value,
        };
        field(&mut out, key, value)?;
    }
    if let Some((name, value)) = pending {
        field(&mut out, name, value)?;
    }
    out.push(b'}');
    // serde_json writes UTF-8 only, and the rest is the description's own text.
    String::from_utf8(out).map_err(|e| body_error(e.to_string()))
}

/// Writing a parsed value into a buffer cannot fail; if it ever does, the call says so.
fn body_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("descr", format!("descr could not be written as JSON: {e}"))
}

/// An ordered list of request headers; names compare case-insensitively. The library's own
/// defaults are kept as static text (nothing copied per call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, Cow<'static, str>)>);

impl Headers {
    /// Sets `name` to `value`, replacing an earlier value of the same name (any case) in place.
    pub fn set(&mut self, name: &str, value: &str) {
        self.put(Cow::Owned(name.to_string()), Cow::Owned(value.to_string()));
    }

    fn put(&mut self, name: Cow<'static, str>, value: Cow<'static, str>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(slot) => *slot = (name, value),
            None => self.0.push((name, value)),
        }
    }

    /// The headers in sending order, static text told apart (for `http`'s static values).
    pub(crate) fn entries(&self) -> &[(Cow<'static, str>, Cow<'static, str>)] {
        &self.0
    }

    /// The value of `name` (any case), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers in sending order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The headers with `Authorization`'s credentials shown as `***` (for `--debug` and logs).
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(n, v)| {
                if n.eq_ignore_ascii_case("authorization")
                    || n.eq_ignore_ascii_case("proxy-authorization")
                {
                    let scheme = v.split_once(' ').map_or("", |(s, _)| s);
                    let shown = if scheme.is_empty() {
                        "***".to_string()
                    } else {
                        format!("{scheme} ***")
                    };
                    (n.to_string(), shown)
                } else {
                    (n.to_string(), v.to_string())
                }
            })
            .collect()
    }

    /// Bytes the header block takes on the wire (`Name: value\r\n` each).
    pub fn wire_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
    }
}

/// Builds the final header list: OPI's defaults, then the caller's `headers` (JSON object of
/// string values, in any of the three forms; NULL/empty means none), then
/// `Authorization: Bearer <token>` when the token is non-empty.
pub fn build_headers(token: &str, headers: &str) -> Result<Headers, Error> {
    let mut out = Headers(Vec::with_capacity(DEFAULT_HEADERS.len() + 1));
    out.0.extend(
        DEFAULT_HEADERS
            .iter()
            .map(|&(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v))),
    );
    if let Some(extra) = parse_optional_object(headers, "headers")? {
        for (name, value) in &extra {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(Error::invalid(
                        "headers",
                        format!(
                            "headers: the value of {name} must be a string, not {}",
                            kind_of(other)
                        ),
                    ))
                }
            };
            check_header(name, &value)?;
            out.set(name, &value);
        }
    }
    if !token.is_empty() {
        if token.len() > MAX_TOKEN {
            return Err(Error::invalid(
                "token",
                format!(
                    "token is {} bytes long, more than the limit of {MAX_TOKEN}",
                    token.len()
                ),
            ));
        }
        if token.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::invalid("token", "token contains CR, LF or NUL"));
        }
        // The sender refuses an Authorization value that is not visible ASCII (and would
        // blame the server): say here that the token is at fault.
        if !token.bytes().all(visible_ascii) {
            return Err(Error::invalid(
                "token",
                "token must be printable ASCII: it contains a control character or a non-ASCII letter",
            ));
        }
        // Concatenated, not `format!`: the formatting machinery cost about 900 instructions
        // of every call, a copy of the token costs a few dozen.
        let mut value = String::with_capacity("Bearer ".len() + token.len());
        value.push_str("Bearer ");
        value.push_str(token);
        out.put(Cow::Borrowed("Authorization"), Cow::Owned(value));
    }
    Ok(out)
}

/// A header name must be an HTTP token (RFC 9110); a value must not hold CR, LF or NUL.
fn check_header(name: &str, value: &str) -> Result<(), Error> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b));
    if !valid_name {
        return Err(Error::invalid(
            "headers",
            format!(
                "headers: {:?} is not a valid header name",
                name.escape_debug().to_string()
            ),
        ));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(Error::invalid(
            "headers",
            format!(
                "headers: {name} is set by the library itself (message framing and connection handling) and cannot be given"
            ),
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Error::invalid(
            "headers",
            format!("headers: the value of {name} contains CR, LF or NUL"),
        ));
    }
    if name.eq_ignore_ascii_case("authorization") && !value.bytes().all(visible_ascii) {
        return Err(Error::invalid(
            "headers",
            "headers: the value of Authorization must be printable ASCII",
        ));
    }
    Ok(())
}

/// What an `Authorization` value may hold (`http::HeaderValue::to_str`): printable ASCII,
/// space and tab.
fn visible_ascii(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b)
}

/// OPI's GetImageDescriptionStructure: `prompt`, `n`, `background`, `size`, each left out when
/// empty (empty string, 0), then the additional parameters merged last and winning.
pub fn image_description_structure(
    prompt: &str,
    count: i64,
    background: &str,
    size: &str,
    additional: &str,
) -> Result<String, Error> {
    let mut map = JsonObject::new();
    if !prompt.is_empty() {
        map.insert("prompt".into(), Value::String(prompt.into()));
    }
    if count != 0 {
        map.insert("n".into(), Value::from(count));
    }
    if !background.is_empty() {
        map.insert("background".into(), Value::String(background.into()));
    }
    if !size.is_empty() {
        map.insert("size".into(), Value::String(size.into()));
    }
    if let Some(extra) = parse_optional_object(additional, "additional")? {
        for (k, v) in extra {
            map.insert(k, v);
        }
    }
    Ok(Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_in_description_wins_and_stays_first() {
        let b = build_body("dall-e-3", r#"{"prompt":"p","model":"gpt-image-1","n":1}"#).unwrap();
        assert_eq!(b, r#"{"model":"gpt-image-1","prompt":"p","n":1}"#);
    }

    /// The plain path gives the general path's bytes, and declines what it cannot give so.
    #[test]
    fn plain_descriptions_give_the_parsed_objects_body() {
        let plain = [
            r#"{"prompt":"Yellow alpaca","n":1,"size":"1024x1024"}"#,
            r#" { "prompt" : "Жёлтая альпака 🦙" , "n" : 10 , "quality":"hd" } "#,
            r#"{"prompt":"p","model":"gpt-image-1","n":1}"#,
            r#"{"model":null,"stream":false,"n":-12,"big":123456789012345678}"#,
            r#"{"n":1,"prompt":"a","n":2,"stream":true}"#,
            "{\"a\":\"\u{7f}\",\"\":\"\"}",
            "{}",
        ];
        for descr in plain {
            assert!(plain_fields(descr).is_some(), "{descr}");
        }
        let general = [
            r#"{"prompt":"say \"hi\"","n":1}"#,
            r#"{"pr\u006fmpt":"p"}"#,
            r#"{"n":1.0}"#,
            r#"{"n":1e3}"#,
            r#"{"n":-0}"#,
            r#"{"n":1234567890123456789}"#,
            r#"{"n":[1,2]}"#,
            r#"{"n":{"a":1}}"#,
            "{'prompt':'single'}",
            r#"{"n":1}x"#,
            "[1]",
            "",
        ];
        for descr in general {
            assert!(plain_fields(descr).is_none(), "{descr}");
        }
        for descr in plain.iter().chain(&general) {
            for model in ["", "dall-e-3", "a\"b"] {
                for set in [None, Some(("stream", "true")), Some(("n", "true"))] {
                    let fast = body_with(model, descr, set).map_err(|e| e.to_string());
                    let slow = general_body(model, descr, set).map_err(|e| e.to_string());
                    assert_eq!(fast, slow, "{descr} {model} {set:?}");
                }
            }
        }
        let many: String = (0..40).map(|i| format!(",\"k{i}\":{i}")).collect();
        let many = format!("{{\"a\":0{many}}}");
        assert!(plain_fields(&many).is_none());
        assert_eq!(
            build_body("m", &many).unwrap(),
            general_body("m", &many, None).unwrap()
        );
    }

    #[test]
    fn header_injection_is_refused() {
        for h in [
            r#"{"X-A":"a\r\nX-B: b"}"#,
            r#"{"X A":"a"}"#,
            r#"{"":"a"}"#,
            r#"{"X-A":"a\u0000"}"#,
        ] {
            assert_eq!(
                build_headers("", h).unwrap_err().param(),
                Some("headers"),
                "{h}"
            );
        }
    }
}
