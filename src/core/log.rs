//! The `log_file` option: one line appended per attempt, for the people who run the server.
//!
//! A line holds the time, method, URL, attempt, status, bytes, duration, retry wait, request
//! id and error; never a header value or a body. The token is scrubbed from every line as well
//! (defence in depth: it could only get there inside a URL the caller wrote).

use super::error::redact;
use super::TraceEvent;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The log of one call: the file opened for appending, and what each line needs.
pub(crate) struct CallLog<'a> {
    file: File,
    url: &'a str,
    token: &'a str,
}

impl<'a> CallLog<'a> {
    /// Opens (creating when missing) `path` for appending; `url` is the call's endpoint.
    pub fn open(path: &Path, url: &'a str, token: &'a str) -> std::io::Result<CallLog<'a>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(CallLog { file, url, token })
    }

    /// Appends the line for `event`, if it is one that is logged. A failing write is ignored:
    /// the log must never turn a good call into a failed one.
    pub fn record(&mut self, event: &TraceEvent) {
        let line = match event {
            TraceEvent::Attempt {
                attempt,
                status,
                elapsed,
                bytes,
                request_id,
                error,
                retry_in,
            } => attempt_line(
                "POST",
                self.url,
                *attempt,
                *status,
                *elapsed,
                *bytes,
                *request_id,
                *error,
                *retry_in,
            ),
            TraceEvent::Download {
                url,
                attempt,
                status,
                elapsed,
                bytes,
                error,
            } => attempt_line(
                "GET", url, *attempt, *status, *elapsed, *bytes, None, *error, None,
            ),
            TraceEvent::Notice(text) => format!("NOTICE {text}"),
            _ => return,
        };
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        // One write per line: with O_APPEND, lines of concurrent calls do not interleave.
        let line = format!(
            "{time} {}\n",
            redact(&line, self.token).replace(['\r', '\n'], " ")
        );
        let _ = self.file.write_all(line.as_bytes());
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt_line(
    method: &str,
    url: &str,
    attempt: u32,
    status: Option<u16>,
    elapsed: Duration,
    bytes: u64,
    request_id: Option<&str>,
    error: Option<&str>,
    retry_in: Option<Duration>,
) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    format!(
        "{method} {url} attempt={attempt} status={} bytes={bytes} duration_ms={} retry_in_ms={} request_id={} error={}",
        or_dash(status.map(|s| s.to_string())),
        elapsed.as_millis(),
        or_dash(retry_in.map(|d| d.as_millis().to_string())),
        or_dash(request_id.map(|r| r.replace(char::is_whitespace, "_"))),
        or_dash(error.map(|e| format!("{e:?}"))),
    )
}
