//! The one error type of the core, and its single mapping to the result JSON.

use serde_json::{json, Value};

/// Everything that can go wrong on our side of a call (the server's own answers, errors
/// included, are results, not errors).
///
/// Each variant becomes `{"error": {"type": "opi_client_error", "code": ..., "param": ...,
/// "message": ...}}` through [`Error::to_result_json`]; no message ever contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is missing, not valid UTF-8, or not in an accepted form.
    #[error("{message}")]
    InvalidArgument {
        /// The argument at fault (`url`, `descr`, `headers`, `options`, ...).
        param: &'static str,
        /// One sentence saying what is wrong with it.
        message: String,
    },
    /// The server's name could not be resolved.
    #[error("could not resolve the server's name: {0}")]
    Dns(String),
    /// No connection could be made (refused, unreachable, proxy refused).
    #[error("could not connect to the server: {0}")]
    Connect(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// A time limit ran out (which one is in the message).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The response was larger than the configured limit.
    #[error("the response is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Too many redirects, or a redirect that could not be followed.
    #[error("redirects failed: {0}")]
    Redirects(String),
    /// Any other input/output failure, for example a connection closed mid-answer.
    #[error("input/output failed: {0}")]
    Io(String),
    /// A streamed answer ended (or broke off) before its `completed` event.
    #[error("incomplete stream: {0}")]
    IncompleteStream(String),
    /// The call was cancelled by its caller (a stream callback's nonzero return, `CancelJob`).
    #[error("the call was cancelled")]
    Cancelled,
    /// A defect of the library itself, for example a caught panic.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            param,
            message: message.into(),
        }
    }

    /// The stable code of the result JSON's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Dns(_) => "dns",
            Error::Connect(_) => "connect",
            Error::Tls(_) => "tls",
            Error::Timeout(_) => "timeout",
            Error::TooLarge { .. } => "too_large",
            Error::Redirects(_) => "redirects",
            Error::Io(_) => "io",
            Error::IncompleteStream(_) => "incomplete_stream",
            Error::Cancelled => "cancelled",
            Error::Internal(_) => "internal",
        }
    }

    /// The argument at fault, if any.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Error::InvalidArgument { param, .. } => Some(param),
            _ => None,
        }
    }

    /// The result JSON value for this error (the one place errors become JSON).
    pub fn to_value(&self) -> Value {
        json!({"error": {
            "type": "opi_client_error",
            "code": self.code(),
            "param": self.param(),
            "message": self.to_string(),
        }})
    }

    /// The result JSON text for this error.
    pub fn to_result_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// The shortest token that is scrubbed. A shorter one cannot be told from ordinary words
/// (`test`, `1234567`): replacing it would mangle results, and it is no secret worth the name.
pub const MIN_SCRUBBED_TOKEN: usize = 8;

/// The one redaction rule, for everything the library and `oint` produce (results, messages,
/// excerpts, `full` headers, traces, the log, `--debug`): a token of at least
/// [`MIN_SCRUBBED_TOKEN`] bytes is replaced by `***` wherever it occurs; a shorter one is
/// left. In a JSON text, "wherever" means inside one JSON string, with escapes decoded (see
/// [`super::json_scan`]); in plain text, every literal occurrence.
pub fn scrubbable(token: &str) -> bool {
    token.len() >= MIN_SCRUBBED_TOKEN
}

/// Plain text (a message, a header value, a log line) with every occurrence of `secret`
/// replaced by `***`, under the rule of [`scrubbable`].
pub fn redact(text: &str, secret: &str) -> String {
    if !scrubbable(secret) || !text.contains(secret) {
        return text.to_string();
    }
    // A secret holding `*` can be formed again by a `***` and its neighbours: until none is
    // left (each round shrinks the text).
    let mut text = text.replace(secret, "***");
    while text.contains(secret) {
        text = text.replace(secret, "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_has_two_sides_at_8_bytes() {
        assert_eq!(redact("key pa$$w0rd! sent", "pa$$w0rd!"), "key *** sent");
        assert_eq!(redact("abcdefgh abcdefgh", "abcdefgh"), "*** ***");
        assert_eq!(redact("key abcdefg sent", "abcdefg"), "key abcdefg sent");
        assert_eq!(redact("anything", ""), "anything");
    }
}
