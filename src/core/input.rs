//! The three forms a JSON argument takes: a JSON object text, OPI's single-quoted JSON (as its
//! CLI prints it), or the path of an existing `.json` file holding either.

use super::error::Error;
use serde_json::{Map, Value};

/// A JSON object in the order its fields were given.
pub type JsonObject = Map<String, Value>;

/// Parses an optional JSON-object argument: empty (or only whitespace) is `None`.
pub fn parse_optional_object(text: &str, param: &'static str) -> Result<Option<JsonObject>, Error> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_object(text, param).map(Some)
}

/// Parses a required JSON-object argument in any of the three forms.
///
/// The error names `param` and says which form was tried and why it failed.
pub fn parse_object(text: &str, param: &'static str) -> Result<JsonObject, Error> {
    match parse_value(text, param, "object")? {
        Value::Object(map) => Ok(map),
        other => Err(Error::invalid(
            param,
            format!("{param} must be a JSON object, not {}", kind_of(&other)),
        )),
    }
}

/// Parses a required JSON-array argument (a batch's descriptions) in any of the three forms.
pub fn parse_array(text: &str, param: &'static str) -> Result<Vec<Value>, Error> {
    match parse_value(text, param, "array")? {
        Value::Array(items) => Ok(items),
        other => Err(Error::invalid(
            param,
            format!("{param} must be a JSON array, not {}", kind_of(&other)),
        )),
    }
}

/// A JSON value given as text, single-quoted text, or the path of a `.json` file; `what` is
/// the kind expected, for the message about an empty argument.
fn parse_value(text: &str, param: &'static str, what: &str) -> Result<Value, Error> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(
            param,
            format!("{param} is empty: a JSON {what} is required"),
        ));
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') || !looks_like_path(trimmed) {
        return parse_text(trimmed, param);
    }
    let path = std::path::Path::new(trimmed);
    match std::fs::read(path) {
        Ok(bytes) => {
            let content = String::from_utf8(bytes).map_err(|_| {
                Error::invalid(
                    param,
                    format!("{param}: the file {trimmed} is not UTF-8 text"),
                )
            })?;
            // A UTF-8 byte order mark is common in files written on Windows.
            let content = content.strip_prefix('\u{feff}').unwrap_or(&content);
            parse_text(content.trim(), param).map_err(|e| match e {
                Error::InvalidArgument { message, .. } => {
                    Error::invalid(param, format!("{message} (in the file {trimmed})"))
                }
                other => other,
            })
        }
        Err(err) => Err(Error::invalid(
            param,
            format!(
                "{param}: the file {trimmed} could not be read: {}",
                io_reason(&err)
            ),
        )),
    }
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    }
}

/// A value is taken for a file path when it names a `.json` file, or names any existing file.
fn looks_like_path(text: &str) -> bool {
    text.to_ascii_lowercase().ends_with(".json") || std::path::Path::new(text).is_file()
}

fn parse_text(text: &str, param: &'static str) -> Result<Value, Error> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(strict_err) => match single_quoted_to_json(text) {
            Some(converted) => serde_json::from_str::<Value>(&converted).map_err(|_| {
                Error::invalid(param, format!("{param} is not valid JSON: {strict_err}"))
            }),
            None => Err(Error::invalid(
                param,
                format!("{param} is not valid JSON: {strict_err}"),
            )),
        },
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rewrites OPI's single-quoted JSON (`{'prompt':'It\'s "here"'}`) as standard JSON.
///
/// Inside a single-quoted string, `\'` is a quote and a bare `"` is escaped; other escapes are
/// kept. Double-quoted strings pass through unchanged. Returns `None` when no single quote is
/// present (nothing to convert) or a string is left open.
pub fn single_quoted_to_json(text: &str) -> Option<String> {
    if !text.contains('\'') {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                loop {
                    let c = chars.next()?;
                    out.push(c);
                    if c == '\\' {
                        out.push(chars.next()?);
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '\'' => {
                out.push('"');
                loop {
                    match chars.next()? {
                        '\\' => match chars.next()? {
                            '\'' => out.push('\''),
                            other => {
                                out.push('\\');
                                out.push(other);
                            }
                        },
                        '\'' => break,
                        '"' => out.push_str("\\\""),
                        other => out.push(other),
                    }
                }
                out.push('"');
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_quoted_with_escapes_and_cyrillic() {
        let text = r#"{'prompt':'It\'s a "cat" — кот','n':1}"#;
        let map = parse_object(text, "descr").unwrap();
        assert_eq!(map["prompt"], r#"It's a "cat" — кот"#);
        assert_eq!(map["n"], 1);
    }

    #[test]
    fn arrays_are_not_objects() {
        let err = parse_object("[1,2]", "descr").unwrap_err();
        assert_eq!(err.param(), Some("descr"));
    }
}
