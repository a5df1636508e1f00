//! Shared test support: the local test server and helpers.
#![allow(dead_code)]

pub mod server;

pub use server::{Action, Recorded, Reply, TestServer};

use serde_json::Value;

/// Parses a result, failing the test with the text when it is not JSON.
pub fn parse(result: &str) -> Value {
    serde_json::from_str(result).unwrap_or_else(|e| panic!("result is not JSON ({e}): {result}"))
}

/// The `error.code` of a result, if it is an error.
pub fn error_code(result: &str) -> Option<String> {
    parse(result)["error"]["code"].as_str().map(str::to_string)
}
