//! The `save_dir` option: every returned image written to a file, so a host carries paths,
//! not megabytes of base64 or URLs that expire after an hour.

use super::error::Error;
use super::options::Options;
use super::request::Headers;
use super::transport;
use super::{agent, TraceEvent};
use base64::Engine;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

/// Creates `dir` when missing. Called before the request is sent, so a folder that cannot be
/// made fails the call before the images are paid for.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::invalid(
            "options",
            format!(
                "options: save_dir {} could not be created: {e}",
                dir.display()
            ),
        )
    })
}

/// Writes the images of a successful answer into `dir` and returns the result with `"file"`
/// added to each data item (and `b64_json` removed with `drop_b64`). Answers that are not a
/// 2xx with a `data` array are returned unchanged.
///
/// Nothing paid for is thrown away: an item that cannot be saved (a download that fails, data
/// that is not base64) keeps its data and gets `"error": {"code", "message"}` of its own; the
/// others are saved. Only a folder that cannot be written at all (the first write of the
/// call fails) fails the call: the result is then an `io` error whose `response` is the
/// server's JSON.
pub(crate) fn save_images(
    json: String,
    status: u16,
    dir: &Path,
    options: &Options,
    deadline: Instant,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<String, Error> {
    if !(200..300).contains(&status) {
        return Ok(json);
    }
    let Ok(mut value) = serde_json::from_str::<Value>(&json) else {
        return Ok(json);
    };
    let created = value
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let declared = value
        .get("output_format")
        .and_then(Value::as_str)
        .and_then(extension_of_format);
    let Some(data) = value.get_mut("data").and_then(Value::as_array_mut) else {
        return Ok(json);
    };
    drop(json);
    let mut written = 0usize;
    let mut folder_failure = None;
    for (index, item) in data.iter_mut().enumerate() {
        match save_item(
            item, index, created, declared, dir, options, deadline, trace,
        ) {
            Ok(Some(_)) => written += 1,
            Ok(None) => {}
            Err(ItemError::Item(Error::Cancelled)) => return Err(Error::Cancelled),
            // Nothing could be written here yet: the folder itself is at fault, and the
            // remaining images would fail the same way.
            Err(ItemError::Write(err)) if written == 0 => {
                folder_failure = Some(err);
                break;
            }
            Err(ItemError::Write(err) | ItemError::Item(err)) => {
                if let Some(fields) = item.as_object_mut() {
                    fields.insert(
                        "error".to_string(),
                        serde_json::json!({"code": err.code(), "message": err.to_string()}),
                    );
                }
            }
        }
    }
    if let Some(err) = folder_failure {
        let mut result = err.to_value();
        result["error"]["response"] = value;
        return Ok(result.to_string());
    }
    Ok(value.to_string())
}

/// Why one item was not saved: its own data or download, or the write into the folder.
enum ItemError {
    Item(Error),
    Write(Error),
}

impl From<Error> for ItemError {
    fn from(err: Error) -> Self {
        ItemError::Item(err)
    }
}

#[allow(clippy::too_many_arguments)]
fn save_item(
    item: &mut Value,
    index: usize,
    created: u64,
    declared: Option<&'static str>,
    dir: &Path,
    options: &Options,
    deadline: Instant,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<Option<PathBuf>, ItemError> {
    let Some(fields) = item.as_object_mut() else {
        return Ok(None);
    };
    let bytes = if let Some(b64) = fields.get("b64_json").and_then(Value::as_str) {
        decode(b64)
            .map_err(|e| Error::Io(format!("image {index}: b64_json is not valid base64: {e}")))?
    } else if let Some(url) = fields.get("url").and_then(Value::as_str) {
        match url.strip_prefix("data:") {
            Some(data_url) => decode_data_url(data_url).ok_or_else(|| {
                Error::Io(format!(
                    "image {index}: the data: URL is not valid base64 data"
                ))
            })?,
            None => download(url, index, options, deadline, trace)?,
        }
    } else {
        return Ok(None);
    };
    // The bytes decide; the declared output_format only when they are not recognised.
    let ext = sniff(&bytes).or(declared).unwrap_or("bin");
    let path = write_new(dir, &format!("{created}_{index}"), ext, &bytes).map_err(|e| {
        ItemError::Write(Error::Io(format!(
            "image {index} could not be written in {}: {e}",
            dir.display()
        )))
    })?;
    if options.drop_b64 {
        fields.remove("b64_json");
    }
    fields.insert(
        "file".to_string(),
        Value::String(path.to_string_lossy().into_owned()),
    );
    Ok(Some(path))
}

/// Writes one base64 image of a stream (a partial image or a completed one) as
/// `dir/<stem>.<ext>` (a free variant of the name when taken), the extension from the bytes,
/// else from `output_format`. Returns the path.
pub(crate) fn save_b64(
    dir: &Path,
    stem: &str,
    b64: &str,
    output_format: Option<&str>,
) -> Result<PathBuf, Error> {
    let bytes =
        decode(b64).map_err(|e| Error::Io(format!("{stem}: b64_json is not valid base64: {e}")))?;
    let ext = sniff(&bytes)
        .or_else(|| output_format.and_then(extension_of_format))
        .unwrap_or("bin");
    write_new(dir, stem, ext, &bytes).map_err(|e| {
        Error::Io(format!(
            "{stem} could not be written in {}: {e}",
            dir.display()
        ))
    })
}

/// Base64 as servers send it: standard alphabet, padding optional, line breaks tolerated.
fn decode(b64: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    if b64.contains(['\r', '\n']) {
        ENGINE.decode(b64.replace(['\r', '\n'], ""))
    } else {
        ENGINE.decode(b64)
    }
}

/// `image/png;base64,AAAA` (what follows `data:`); only base64 data URLs carry images.
fn decode_data_url(rest: &str) -> Option<Vec<u8>> {
    let (meta, data) = rest.split_once(',')?;
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return None;
    }
    decode(data).ok()
}

/// The extension for an API `output_format`.
fn extension_of_format(format: &str) -> Option<&'static str> {
    match format.to_ascii_lowercase().as_str() {
        "png" => Some("png"),
        "jpeg" | "jpg" => Some("jpeg"),
        "webp" => Some("webp"),
        _ => None,
    }
}

/// The extension for an image's magic bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else {
        None
    }
}

/// Writes `bytes` to `dir/<stem>.<ext>`, or `<stem>_2.<ext>`, ... when the name is taken
/// (concurrent calls in one second share `created`). The bytes go to a temporary file first,
/// synced, then get their name by a hard link that fails instead of replacing (a rename would
/// silently overwrite another call's image); readers never see a partial file.
fn write_new(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{stem}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        for n in 1..=1000u32 {
            let name = if n == 1 {
                format!("{stem}.{ext}")
            } else {
                format!("{stem}_{n}.{ext}")
            };
            let path = dir.join(name);
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // No hard links on this file system (FAT, some network shares): rename,
                // after checking the name is free.
                Err(_) if !path.exists() => {
                    std::fs::rename(&tmp, &path)?;
                    return Ok(path);
                }
                Err(_) => continue,
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{stem}.{ext} and 999 variants exist"),
        ))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Downloads an image URL through the agent for its route (same proxy and TLS settings),
/// within the call's deadline and `max_response_bytes`, retrying as the POST does. The token
/// is never sent: image URLs are pre-signed and usually on another host.
fn download(
    url: &str,
    index: usize,
    options: &Options,
    deadline: Instant,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<Vec<u8>, Error> {
    let agent = agent::for_url(url, options)?;
    // The query of a pre-signed URL is its signature: kept out of traces and logs.
    let shown = url.split(['?', '#']).next().unwrap_or(url);
    let mut headers = Headers::default();
    headers.set("Accept", "image/*, */*");
    let resp = transport::with_retries(
        options,
        deadline,
        "",
        |remaining| transport::exchange(&agent, url, &headers, None, options, "", remaining),
        |a| {
            trace(&TraceEvent::Download {
                url: shown,
                attempt: a.attempt,
                status: a.response.map(|r| r.status),
                elapsed: a.elapsed,
                bytes: a.response.map_or(0, |r| r.body.len() as u64),
                error: a.error,
            })
        },
    )?;
    if (200..300).contains(&resp.status) {
        Ok(resp.body)
    } else {
        Err(Error::Io(format!(
            "image {index} could not be downloaded from {shown}: HTTP {}",
            resp.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("jpeg"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(sniff(b"hello"), None);
    }

    #[test]
    fn base64_with_line_breaks_and_without_padding() {
        assert_eq!(decode("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(
            decode_data_url("image/png;base64,aGVsbG8=").unwrap(),
            b"hello"
        );
        assert!(decode_data_url("text/plain,hello").is_none());
    }
}
