//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes the
//! fuzzer's bytes, drives one internal part of the library, and asserts that part's
//! properties (a failed assertion is a crash the fuzzer reports). Not part of the API: hidden
//! from the docs, and free to change. Nothing here touches the network or writes files.

use crate::core::error::scrubbable;
use crate::core::json_scan;
use crate::core::transport::Response;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Splits fuzz input into a token (printable ASCII, as the library requires, 0-23 bytes: below
/// and above the scrub's minimum) and the rest.
fn token_and_rest(data: &[u8]) -> (String, &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return (String::new(), data);
    };
    let len = usize::from(len % 24).min(rest.len());
    let token = rest[..len]
        .iter()
        .map(|b| char::from(0x20 + b % 95))
        .collect();
    (token, &rest[len..])
}

/// The reference JSON validator: std's UTF-8 check, serde_json skipping the value, and
/// serde_json's nesting limit for a `Value`.
fn reference_is_json(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| {
        serde_json::from_str::<IgnoredAny>(s).is_ok()
            && !serde_json::from_str::<Value>(s)
                .is_err_and(|e| e.to_string().starts_with("recursion limit"))
    })
}

/// Every string of a JSON document, keys included, in document order: duplicate keys are
/// kept (a `Value` keeps only the last), so a token in a shadowed member is still seen.
#[derive(Default)]
struct Strings(Vec<String>);

impl<'de> serde::Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringsVisitor)
    }
}

struct StringsVisitor;

impl<'de> serde::de::Visitor<'de> for StringsVisitor {
    type Value = Strings;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_str<E>(self, v: &str) -> Result<Strings, E> {
        Ok(Strings(vec![v.to_string()]))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strings, E> {
        Ok(Strings::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strings, E> {
        Ok(Strings::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strings, E> {
        Ok(Strings::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strings, E> {
        Ok(Strings::default())
    }

    fn visit_unit<E>(self) -> Result<Strings, E> {
        Ok(Strings::default())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
        let mut all = Vec::new();
        while let Some(Strings(more)) = seq.next_element()? {
            all.extend(more);
        }
        Ok(Strings(all))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strings, A::Error> {
        let mut all = Vec::new();
        while let Some(Strings(key)) = map.next_key()? {
            all.extend(key);
            let Strings(value) = map.next_value()?;
            all.extend(value);
        }
        Ok(Strings(all))
    }
}

/// The strings of `json`, or `None` when serde_json cannot decode them all (a lone surrogate
/// escape is JSON, but not a Rust string).
fn strings(json: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice::<Strings>(json).ok().map(|s| s.0)
}

/// Target `json_scan`: the one-pass validator agrees with serde_json on every input; an
/// accepted body comes back as JSON that is the input with the token replaced inside its
/// strings and nothing else (byte for byte when the token is not there).
pub fn json_scan(data: &[u8]) {
    let (token, body) = token_and_rest(data);
    let expected = reference_is_json(body);
    assert_eq!(json_scan::is_json(body), expected, "validators disagree");
    match json_scan::scrub_json(body.to_vec(), &token) {
        Ok(out) => {
            assert!(expected);
            assert!(
                reference_is_json(out.as_bytes()),
                "the scrub broke the JSON"
            );
            let (Some(before), Some(after)) = (strings(body), strings(out.as_bytes())) else {
                return;
            };
            if scrubbable(&token) {
                assert!(
                    !after.iter().any(|s| s.contains(&token)),
                    "the token survived in a string"
                );
                let expected: Vec<String> = before
                    .iter()
                    .map(|s| crate::core::error::redact(s, &token))
                    .collect();
                assert_eq!(after, expected, "more than the token changed");
                if !before.iter().any(|s| s.contains(&token)) {
                    assert_eq!(out.as_bytes(), body, "a body without the token changed");
                }
            } else {
                assert_eq!(out.as_bytes(), body, "a short token must not be scrubbed");
            }
        }
        Err((back, _)) => {
            assert!(!expected);
            assert_eq!(back, body, "a refused body must come back as it was");
        }
    }
}

/// Target `classify`: whatever the status, headers and body, the result is JSON; a JSON body
/// (after an optional byte-order mark) is returned as the scrub leaves it; our own error
/// objects never hold the token.
pub fn classify(data: &[u8]) {
    let (token, rest) = token_and_rest(data);
    let (status, rest) = match rest {
        [a, b, rest @ ..] => (100 + u16::from_le_bytes([*a, *b]) % 500, rest),
        _ => (200, rest),
    };
    // A content type up to the first NUL, if any; the body after it.
    let (content_type, body) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (
            String::from_utf8_lossy(&rest[..nul]).into_owned(),
            &rest[nul + 1..],
        ),
        None => (String::new(), rest),
    };
    let resp = Response {
        status,
        // A value no HTTP parser would hand over (control characters) arrives as no header.
        headers: ureq::http::HeaderValue::from_str(&content_type)
            .map(|v| {
                [(ureq::http::header::CONTENT_TYPE, v)]
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default(),
        body: body.to_vec(),
        stream: None,
    };
    let result = crate::core::result::classify(resp, &token);
    // Saving reads the same from the answer through its skeleton as from the answer itself.
    assert!(crate::core::save::skeleton_agrees(&result), "{result}");
    assert!(
        reference_is_json(result.as_bytes()),
        "the result is not JSON: {result}"
    );
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        if (200..300).contains(&status) {
            assert_eq!(result, "{}");
        } else {
            assert!(result.contains("\"empty_body\""), "{result}");
        }
    } else if reference_is_json(body) {
        let expected = json_scan::scrub_json(body.to_vec(), &token).expect("JSON");
        assert_eq!(result, expected);
    } else {
        let value: Value = serde_json::from_str(&result).expect("our error object parses");
        assert_eq!(value["error"]["code"], "not_json");
        if scrubbable(&token) {
            let all = strings(result.as_bytes()).expect("our object decodes");
            assert!(
                !all.iter().any(|s| s.contains(&token)),
                "the token is in our error object: {result}"
            );
        }
        // At most 2 KiB of the body, each invalid byte shown as one U+FFFD.
        assert!(value["error"]["body"]
            .as_str()
            .is_some_and(|b| b.chars().count() <= 2048));
    }
}

/// Target `inputs`: the three input forms (description, headers, options), the request body
/// and the description builder, on arbitrary text: an error names its argument and becomes a
/// JSON result; a built body is a JSON object; nothing panics.
pub fn inputs(data: &[u8]) {
    use crate::core::{input, request, Options};
    let (token, rest) = token_and_rest(data);
    let text = String::from_utf8_lossy(rest);
    // Never a file: the path form reads `.json` files, and fuzzed paths are not for reading.
    if text.trim_end().ends_with(".json") {
        return;
    }
    let check_error = |err: crate::Error, param: &str| {
        assert_eq!(err.param(), Some(param), "{err}");
        assert!(reference_is_json(err.to_result_json().as_bytes()));
    };
    match input::parse_object(&text, "descr") {
        Ok(map) => {
            let _ = Value::Object(map).to_string();
        }
        Err(e) => check_error(e, "descr"),
    }
    let body = request::build_body(&token, &text);
    match &body {
        Ok(body) => assert!(serde_json::from_str::<Value>(body).is_ok_and(|v| v.is_object())),
        Err(e) => assert!(matches!(e.param(), Some("descr" | "model")), "{e}"),
    }
    // The plain path's body is the parsed object's, byte for byte.
    assert_eq!(
        body.map_err(|e| e.to_string()),
        request::general_body(&token, &text, None).map_err(|e| e.to_string())
    );
    match request::build_headers(&token, &text) {
        Ok(headers) => {
            for (name, value) in headers.iter() {
                assert!(
                    !name.is_empty() && !name.contains([':', '\r', '\n']),
                    "{name}"
                );
                assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
            }
        }
        Err(e) => assert!(matches!(e.param(), Some("headers" | "token")), "{e}"),
    }
    if let Err(e) = Options::parse(&text) {
        check_error(e, "options");
    }
    let count = rest.len() as i64 - 3;
    let built = crate::image_description_structure(&token, count, &text, &text, &text);
    assert!(reference_is_json(built.as_bytes()));
}

/// Target `addin_variant`: parameters as a 1C host could pass them (any type code, any value,
/// strings of any UTF-16 or bytes, a NULL string pointer with a length), converted and given
/// to the add-in's GetImageDescriptionStructure (the method that sends nothing): a result is
/// JSON, a refusal is a refusal, nothing panics.
pub fn addin_variant(data: &[u8]) {
    let Some(result) = crate::addin::fuzz_description(data) else {
        return;
    };
    assert!(reference_is_json(result.as_bytes()), "{result}");
}

/// Target `sse`: parses `bytes` as a Server-Sent Events stream whole and cut at the points
/// `cuts` names; panics when the events differ (or the parser panics).
pub fn sse(bytes: &[u8], cuts: &[u8]) {
    crate::core::sse::check_split_invariance(bytes, cuts);
}
