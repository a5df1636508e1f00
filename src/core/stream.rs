//! Streamed answers (`"stream": true`): the Server-Sent Events of a GPT image model read as
//! they arrive, each handed to the caller, partial and final images written to `save_dir`,
//! and the final result assembled in the shape of the non-streaming answer.

use super::cancel::Cancel;
use super::error::Error;
use super::options::Options;
use super::save;
use super::sse::{SseEvent, SseParser};
use super::transport::{self, EventStream};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One event of a streamed call, as handed to the caller's callback (valid only during it).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StreamEvent<'a> {
    /// The event's type: the data's `type` (`image_generation.partial_image`,
    /// `image_generation.completed`, `error`, ...), else the SSE `event:` name.
    pub kind: &'a str,
    /// `partial_image_index` of a partial image.
    pub index: Option<u32>,
    /// The event as JSON: the event's own fields, plus `"file"` when `save_dir` wrote its
    /// image (and without `b64_json` then, when `drop_b64` is set).
    pub json: &'a str,
    /// The file `save_dir` wrote for this event's image.
    pub file: Option<&'a Path>,
    /// Length of the event's `b64_json` string (0 when none).
    pub b64_bytes: usize,
}

/// The fields of the last `completed` event copied to the result, after `created` and `data`.
const RESULT_FIELDS: [&str; 5] = ["usage", "size", "quality", "background", "output_format"];

/// What the stream gave so far.
#[derive(Default)]
struct Collected {
    created: Option<u64>,
    data: Vec<Value>,
    last: Map<String, Value>,
    partials: u32,
    not_json: u32,
}

enum Flow {
    Continue,
    /// `[DONE]`: the stream is over.
    Done,
    /// An error event: its error object is the result.
    Failed(String),
}

/// Reads the event stream to its end, calling `on_event` for each event, and returns the final
/// result JSON. `token` is scrubbed from read errors.
pub(super) fn consume(
    mut body: EventStream,
    options: &Options,
    token: &str,
    on_event: &mut dyn FnMut(&StreamEvent) -> bool,
) -> Result<String, Error> {
    let cancel = Cancel::current();
    let cancelled = || cancel.as_ref().is_some_and(Cancel::is_cancelled);
    let mut parser = SseParser::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    let mut got = Collected::default();
    loop {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) if cancelled() => return Err(Error::Cancelled),
            // Whatever broke the stream after the images arrived does not lose them.
            Err(_) if !got.data.is_empty() => break,
            Err(e) => {
                let broken = matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                );
                let err = transport::map_error(ureq::Error::from(e), options, token);
                return Err(if broken {
                    Error::IncompleteStream(format!(
                        "the connection broke off after {} partial image(s) ({err})",
                        got.partials
                    ))
                } else {
                    err
                });
            }
        };
        parser.feed(&buf[..n], &mut events);
        for event in events.drain(..) {
            match handle(event, options, &mut got, on_event)? {
                Flow::Continue => {}
                Flow::Done => return finish(got),
                Flow::Failed(result) => return Ok(result),
            }
            if cancelled() {
                return Err(Error::Cancelled);
            }
        }
    }
    finish(got)
}

fn handle(
    event: SseEvent,
    options: &Options,
    got: &mut Collected,
    on_event: &mut dyn FnMut(&StreamEvent) -> bool,
) -> Result<Flow, Error> {
    if event.data.trim() == "[DONE]" {
        return Ok(Flow::Done);
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&event.data) else {
        got.not_json += 1;
        return Ok(Flow::Continue);
    };
    let kind = match fields.get("type").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => event.event.clone(),
    };
    let failed = kind == "error" || kind.ends_with(".failed") || fields.contains_key("error");
    let partial = !failed && kind.ends_with("partial_image");
    let completed = !failed && kind.ends_with(".completed");
    let index = fields
        .get("partial_image_index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok());
    let b64 = fields.get("b64_json").and_then(Value::as_str);
    let b64_bytes = b64.map_or(0, str::len);
    let event_created = fields.get("created_at").and_then(Value::as_u64);
    let mut file: Option<PathBuf> = None;
    if let (Some(dir), Some(b64), true) = (&options.save_dir, b64, partial || completed) {
        let created = *got
            .created
            .get_or_insert_with(|| event_created.unwrap_or_else(now));
        // The image being generated: partial images belong to the next completed one.
        let image = got.data.len();
        let stem = match (partial, index) {
            (true, Some(k)) => format!("{created}_{image}.partial{k}"),
            (true, None) => format!("{created}_{image}.partial"),
            _ => format!("{created}_{image}"),
        };
        let format = fields.get("output_format").and_then(Value::as_str);
        file = Some(save::save_b64(dir, &stem, b64, format)?);
    }
    let drop_b64 = options.drop_b64 && file.is_some();
    let changed_json;
    let json: &str = match &file {
        Some(path) => {
            // Shown with "file" (and without the base64 with drop_b64), without copying the
            // megabytes of base64 the fields hold.
            let aside = if drop_b64 {
                fields.remove("b64_json")
            } else {
                None
            };
            fields.insert("file".into(), Value::String(path_text(path)));
            changed_json = serde_json::to_string(&fields).unwrap_or_default();
            fields.remove("file");
            if let Some(b64) = aside {
                fields.insert("b64_json".into(), b64);
            }
            &changed_json
        }
        None => &event.data,
    };
    let keep_going = on_event(&StreamEvent {
        kind: &kind,
        index,
        json,
        file: file.as_deref(),
        b64_bytes,
    });
    if !keep_going {
        return Err(Error::Cancelled);
    }
    if failed {
        let error = match fields.remove("error") {
            Some(error @ Value::Object(_)) => error,
            _ => Value::Object(fields),
        };
        let mut result = Map::new();
        result.insert("error".into(), error);
        return Ok(Flow::Failed(Value::Object(result).to_string()));
    }
    if partial {
        got.partials += 1;
    }
    if completed {
        if got.created.is_none() {
            got.created = event_created;
        }
        let mut item = Map::new();
        if let Some(b64) = fields.remove("b64_json") {
            if !drop_b64 {
                item.insert("b64_json".into(), b64);
            }
        }
        if let Some(prompt) = fields.remove("revised_prompt") {
            item.insert("revised_prompt".into(), prompt);
        }
        if let Some(path) = &file {
            item.insert("file".into(), Value::String(path_text(path)));
        }
        got.data.push(Value::Object(item));
        got.last = fields;
    }
    Ok(Flow::Continue)
}

/// The result: `created`, `data` (one item per completed event), then the last completed
/// event's `usage`, `size`, `quality`, `background`, `output_format`.
fn finish(mut got: Collected) -> Result<String, Error> {
    if got.data.is_empty() {
        let mut message = format!(
            "the server closed the stream after {} partial image(s) and no completed event",
            got.partials
        );
        if got.not_json > 0 {
            message.push_str(&format!(
                " ({} event(s) were not JSON objects)",
                got.not_json
            ));
        }
        return Err(Error::IncompleteStream(message));
    }
    let mut result = Map::new();
    result.insert(
        "created".into(),
        Value::from(got.created.unwrap_or_else(now)),
    );
    result.insert("data".into(), Value::Array(got.data));
    for key in RESULT_FIELDS {
        if let Some(value) = got.last.remove(key) {
            result.insert(key.into(), value);
        }
    }
    Ok(Value::Object(result).to_string())
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
