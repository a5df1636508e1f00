//! Call options: one object shared by every front end (C, CLI, 1C add-in).

use super::error::Error;
use super::input::{kind_of, parse_optional_object};
use serde_json::Value;
use std::time::Duration;

/// How a call is made. Built from defaults, or from an options JSON with [`Options::parse`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Limit for the whole call, retries and waits included. Defaults to 3600 s (OPI's).
    pub timeout: Duration,
    /// Limit for setting up one connection (TCP, proxy, TLS). Defaults to 30 s.
    pub connect_timeout: Duration,
    /// Retries after a retryable failure; 0 disables. Defaults to 2.
    pub retries: u32,
    /// Largest response body accepted, in bytes. Defaults to 1 GiB.
    pub max_response_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(30),
            retries: 2,
            max_response_bytes: 1 << 30,
        }
    }
}

/// The keys an options object may hold.
pub const OPTION_KEYS: &[&str] = &["timeout", "connect_timeout", "retries", "max_response_mb"];

impl Options {
    /// Parses an options JSON (object text, single-quoted, or `.json` path; empty means
    /// defaults). Unknown keys and values of the wrong type are errors naming the key.
    pub fn parse(text: &str) -> Result<Options, Error> {
        let mut options = Options::default();
        let Some(map) = parse_optional_object(text, "options")? else {
            return Ok(options);
        };
        for (key, value) in &map {
            match key.as_str() {
                "timeout" => options.timeout = seconds(key, value)?,
                "connect_timeout" => options.connect_timeout = seconds(key, value)?,
                "retries" => options.retries = count(key, value, 10)? as u32,
                "max_response_mb" => {
                    options.max_response_bytes = count(key, value, 1 << 20)?.max(1) << 20
                }
                _ => {
                    return Err(Error::invalid(
                        "options",
                        format!("options: unknown key {key:?} (known: {})", OPTION_KEYS.join(", ")),
                    ))
                }
            }
        }
        Ok(options)
    }
}

fn seconds(key: &str, value: &Value) -> Result<Duration, Error> {
    match value.as_f64() {
        Some(s) if s > 0.0 && s <= 7.0 * 86400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::invalid(
            "options",
            format!("options: {key} must be a number of seconds above 0, not {}", shown(value)),
        )),
    }
}

fn count(key: &str, value: &Value, max: u64) -> Result<u64, Error> {
    match value.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(Error::invalid(
            "options",
            format!("options: {key} must be a whole number from 0 to {max}, not {}", shown(value)),
        )),
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => kind_of(other).to_string(),
    }
}
